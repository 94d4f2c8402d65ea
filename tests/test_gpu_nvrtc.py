"""Every kernel instantiation compiles with NVRTC, as CuPy compiles it, for
every supported architecture, with no warning, spill or local memory.

No GPU is needed: NVRTC comes from the nvidia-cuda-nvrtc wheel and is driven
through cuda.bindings (tests/cuda_emu/nvrtc.py); both are in the test-gpu
extra, not in test, and without them these tests skip (CSOFTMAX_REQUIRE_NVRTC=1
makes their absence an error: .ci/run sets it). Register counts differ
between NVRTC versions, so the version is pinned and the committed table
cuda/RESOURCES.md must match what this NVRTC produces.
"""
import os
import re
from concurrent.futures import ThreadPoolExecutor

import pytest

from csoftmax import _gpu, _gpu_loss
from cuda_emu import nvrtc


def _require_nvrtc():
    try:
        nvrtc.import_nvrtc()
    except ImportError as exc:
        if os.environ.get("CSOFTMAX_REQUIRE_NVRTC", "").strip().lower() in ("1", "true", "yes", "on"):
            # .ci/run's GPU-less GPU step installs the test-gpu extra: it must have them.
            raise
        pytest.skip("NVRTC is not installed (the test-gpu extra: "
                    f"pip install -e \".[test-gpu]\"): {type(exc).__name__}: {exc}")


@pytest.fixture(scope="module")
def compiled():
    _require_nvrtc()
    # NVRTC releases the GIL: one thread per core halves the wall time here.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        results = pool.map(
            lambda arch: nvrtc.compile_source(_gpu.source(), _gpu.name_expressions(), arch, _gpu._OPTIONS),
            nvrtc.ARCHS,
        )
        return dict(zip(nvrtc.ARCHS, results))


@pytest.fixture(scope="module")
def compiled_xent():
    # cuda/cross_entropy.cu, compiled as _gpu_loss loads it: after softmax.cu.
    _require_nvrtc()
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        results = pool.map(
            lambda arch: nvrtc.compile_source(_gpu_loss.source(), _gpu_loss.name_expressions(), arch,
                                              _gpu._OPTIONS),
            nvrtc.ARCHS,
        )
        return dict(zip(nvrtc.ARCHS, results))


def test_source_has_no_include_directive():
    # NVRTC has no <math.h>, and the emulator compiles the text as is.
    assert not re.search(r"^\s*#\s*include", _gpu.source(), re.M)
    assert not re.search(r"^\s*#\s*include", _gpu_loss.own_source(), re.M)
    # the emulator defines softmax.cu's one shared array; cross_entropy.cu uses it
    assert "__shared__" not in _gpu_loss.own_source()


@pytest.mark.parametrize("arch", nvrtc.ARCHS)
def test_every_kernel_compiles_without_any_warning(compiled, arch):
    result = compiled[arch]
    assert result.ok and result.log == "", f"sm_{arch}:\n{result.log}"
    assert set(result.lowered) == set(_gpu.name_expressions())


@pytest.mark.parametrize("arch", nvrtc.ARCHS)
def test_no_kernel_spills_or_uses_a_stack_frame(compiled, arch):
    bad = {name: r for name, r in compiled[arch].resources.items() if r is None or r["stack"] or r["spill"]}
    assert not bad, bad


@pytest.mark.parametrize("arch", nvrtc.ARCHS)
def test_registers_allow_the_largest_block_the_planner_launches(compiled, arch):
    # 64K 32-bit registers per block on every architecture from sm_75 on.
    c = _gpu.constants()
    for name, r in compiled[arch].resources.items():
        if name.startswith("csm_rows_warp") or name.startswith("csm_jacobian_warp"):
            block = c["CSM_WARP_THREADS"]
        elif name.startswith(("csm_rows_block", "csm_rows_split")) and _vec(name) > 1:
            block = c["CSM_MAX_THREADS_VEC"]
        else:
            block = c["CSM_MAX_THREADS"]
        assert r["registers"] * block <= 65536, (name, r)


@pytest.mark.parametrize("arch", nvrtc.ARCHS)
def test_every_cross_entropy_kernel_compiles_without_warning_spill_or_stack(compiled_xent, arch):
    result = compiled_xent[arch]
    assert result.ok and result.log == "", f"sm_{arch}:\n{result.log}"
    assert set(result.lowered) == set(_gpu_loss.name_expressions())
    bad = {name: r for name, r in result.resources.items() if r is None or r["stack"] or r["spill"]}
    assert not bad, bad
    c = _gpu_loss.constants()
    for name, r in result.resources.items():  # the largest block the planner launches
        block = (c["CSM_WARP_THREADS"] if name.startswith("csm_xent_warp") else
                 c["CSM_MAX_THREADS_VEC"] if name.startswith("csm_xent_block") else
                 c["CSM_XENT_REDUCE_THREADS"])
        assert r["registers"] * block <= 65536, (name, r)


def test_committed_resource_table_is_current(compiled, compiled_xent):
    if not nvrtc.TABLE.parent.joinpath("softmax.cu").exists():
        pytest.skip("no source tree beside these tests (an installed wheel): the "
                    "table is checked by the repository's own run")
    expected = nvrtc.resource_table(compiled) + nvrtc.cross_entropy_table(compiled_xent)
    committed = nvrtc.TABLE.read_text() if nvrtc.TABLE.exists() else ""
    assert committed == expected, (
        f"{nvrtc.TABLE} is stale: run `python tests/cuda_emu/nvrtc.py` and commit it "
        "(or install the pinned NVRTC)"
    )


# ---- SASS gate: vector memory access survives code generation

# sm_75 and sm_90 are where NVVM split 16-byte struct stores into scalar
# stores (4 x STG.E for float32, 8 x STG.E.U16 for float16, 2 x STG.E.64 for
# float64); the explicit st.global.v4.b32 of csm_store keeps them STG.E.128.
SASS_ARCHS = ("75", "90")
_GLOBAL = re.compile(r"^(?:@!?U?P\w+\s+)?(LDG|STG)(\.[\w.]+)?\s")


def _require_nvdisasm():
    _require_nvrtc()
    if nvrtc.nvdisasm_path() is None:
        if os.environ.get("CSOFTMAX_REQUIRE_NVRTC", "").strip().lower() in ("1", "true", "yes", "on"):
            raise FileNotFoundError("nvdisasm: pip install nvidia-cuda-nvdisasm (the test-gpu extra)")
        pytest.skip("nvdisasm is not installed (the test-gpu extra: pip install -e \".[test-gpu]\")")


def _vec(name):
    """VEC of a csm_rows_* kernel: its third template argument, the split
    tier's partials' second."""
    args = name[name.index("<") + 1:-1].split(", ")
    return int(args[1] if name.startswith("csm_rows_split_partial") else args[2])


def _vectorised():
    return [name for name in _gpu.name_expressions() if name.startswith("csm_rows_") and _vec(name) > 1]


@pytest.fixture(scope="module")
def disassembled(compiled):
    # The cubins of `compiled` (every kernel; its extra options only report):
    # a second compile of the vectorised kernels took 18 s of CI's NVRTC step.
    _require_nvdisasm()
    names = _vectorised()

    def one(arch):
        result = compiled[arch]
        assert result.ok, f"sm_{arch}:\n{result.log}"
        code = nvrtc.sass(result.cubin)
        return {name: code[result.lowered[name]] for name in names}

    with ThreadPoolExecutor(max_workers=len(SASS_ARCHS)) as pool:
        return dict(zip(SASS_ARCHS, pool.map(one, SASS_ARCHS)))


@pytest.mark.parametrize("arch", SASS_ARCHS)
def test_every_global_access_of_the_vectorised_kernels_is_128_bit(disassembled, arch):
    # Allowed besides .128: the mask's bytes (LDG.E.U8), logsumexp's one
    # result per row (a scalar store of the row's dtype) and the split
    # tier's partials (one (max, sum) pair stored per chunk, read back by
    # the finishing kernel).
    bad = {}
    for name, code in disassembled[arch].items():
        for ins in code:
            m = _GLOBAL.match(ins)
            width = (m.group(2) or "").split(".") if m else []  # e.g. E, 128, SYS (sm_75)
            if not m or "128" in width:
                continue
            if m.group(1) == "LDG" and "U8" in width:
                continue
            if m.group(1) == "STG" and name.split(", ")[1] == str(_gpu._ROW_CODES["logsumexp"]):
                continue
            if (m.group(1) == "STG") == name.startswith("csm_rows_split_partial") and "csm_rows_split" in name:
                continue
            bad.setdefault(name, []).append(ins)
    assert not bad, f"sm_{arch}: scalar global accesses in vectorised kernels: {bad}"
    assert len(disassembled[arch]) == len(_vectorised())


# ---- SASS gate: loads in flight in the block passes
#
# The check, on nvdisasm's listing of each vectorised csm_rows_block kernel,
# walked in program order: every LDG.E.128 opens an "in-flight" load, whose
# four destination registers Rd..Rd+3 it records (a .128 load always fills an
# aligned quad). Any later instruction that names one of them (reads it, or
# overwrites it) ends that load: its value has been used. A branch, call,
# return or exit ends every load in flight (the walk does not follow control
# flow, so nothing is counted across one). A "burst" is a moment at which the
# number of loads in flight reaches CSM_BLOCK_UNROLL (4): that many 128-bit
# loads were issued before the first of them was used. The kernel passes when
# it has at least one burst for each pass over the row that reads global
# memory: 3 for softmax and log_softmax from L2 (max, sum, normalise), 2 for
# logsumexp from L2 and for the backward ops from L2 (a step loads two packs
# of y and two of grad), 1 for every shared memory tier (only the first pass
# loads; log_softmax_backward's first pass from L2 reads grad alone, four
# packs a step).
# A one-pack-per-iteration loop (the code before csm_block_pass) never has
# more than 1 (forward) or 2 (backward: y and grad) 128-bit loads in flight.
_BRANCH = {"BRA", "BRX", "JMP", "JMX", "CALL", "RET", "EXIT", "BREAK", "KILL"}
_REGISTER = re.compile(r"\bR(\d+)\b")


def load_bursts(code, depth):
    """The number of moments at which ``depth`` 128-bit loads are in flight (see above)."""
    in_flight, bursts = [], 0
    for ins in code:
        text = re.sub(r"^@!?U?P\w+\s+", "", ins)
        opcode, _, operands = text.partition(" ")
        if opcode.split(".")[0] in _BRANCH:
            in_flight = []
            continue
        named = {int(r) for r in _REGISTER.findall(operands)}
        is_load = opcode.startswith("LDG") and "128" in opcode.split(".")
        if is_load:
            dest = int(_REGISTER.search(operands).group(1))
            named.discard(dest)  # the destination is written, not read
        in_flight = [regs for regs in in_flight if not regs & named]
        if is_load:
            in_flight.append({dest, dest + 1, dest + 2, dest + 3})
            if len(in_flight) == depth:
                bursts += 1
    return bursts


def global_passes(name):
    """Passes of a csm_rows_block kernel (or the split tier's) that read the
    row from global memory: the partials read their chunk twice (max, sum),
    the finishing kernel once."""
    if name.startswith("csm_rows_split"):
        return 2 if name.startswith("csm_rows_split_partial") else 1
    _, op, _, cache = name[:-1].split(", ")
    if cache == "true":
        return 1
    codes = _gpu._ROW_CODES
    if int(op) == codes["logsumexp"] or int(op) in (codes["softmax_backward"], codes["log_softmax_backward"]):
        return 2
    return 3


@pytest.mark.parametrize("arch", SASS_ARCHS)
def test_block_passes_keep_four_128_bit_loads_in_flight(disassembled, arch):
    depth = _gpu.constants()["CSM_BLOCK_UNROLL"]
    assert depth >= 4
    codes = {name: code for name, code in disassembled[arch].items()
             if name.startswith(("csm_rows_block", "csm_rows_split"))}
    assert len(codes) == len([n for n in _vectorised() if n.startswith(("csm_rows_block", "csm_rows_split"))]) > 0
    bad = {name: (load_bursts(code, depth), global_passes(name)) for name, code in codes.items()
           if load_bursts(code, depth) < global_passes(name)}
    assert not bad, f"sm_{arch}: (bursts of {depth} loads in flight, passes reading global memory): {bad}"


def test_load_bursts_counts_loads_issued_before_the_first_use():
    four = ["LDG.E.128 R4, desc[UR4][R2.64]", "LDG.E.128 R8, desc[UR4][R2.64+0x800]",
            "LDG.E.128 R12, desc[UR4][R2.64+0x1000]", "@P0 LDG.E.128 R16, desc[UR4][R2.64+0x1800]",
            "FMNMX R4, R4, R5, !PT"]
    assert load_bursts(four, 4) == 1
    used_early = four[:2] + ["FMNMX R20, R9, R20, !PT"] + four[2:]
    assert load_bursts(used_early, 4) == 0  # R8..R11 used before the 4th load
    across_branch = four[:2] + ["@P1 BRA 0x200"] + four[2:]
    assert load_bursts(across_branch, 4) == 0
    sm75 = ["LDG.E.128.SYS R4, [R2]", "LDG.E.128.SYS R8, [R2+0x800]", "LDG.E.128.SYS R12, [R2+0x1000]",
            "LDG.E.128.SYS R16, [R2+0x1800]"]
    assert load_bursts(sm75, 4) == 1
