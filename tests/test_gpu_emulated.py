"""The CUDA kernels, run on the CPU by the emulator, match the float64 reference.

The unchanged cuda/softmax.cu is compiled with g++ (tests/cuda_emu) and
driven through the unchanged csoftmax._gpu.run: tier choice, grid, block,
shared memory and argument packing are the ones a GPU would get, for the
small emulated device of tests/cuda_emu/devices.py. Cases are sized in
blocks (about 5 ms per 128-thread block and 100 ms per 1024-thread block
here), not in elements.
"""
import numpy as np
import pytest

from csoftmax import _gpu
from cuda_emu import EmuModule, devices, install
from cuda_emu.reference import DTYPES, HUGE, MASK_KINDS, OPS, ROW_OPS, check, inputs, masked_inputs, reference
from cuda_emu.runner import emulate
from conftest import DOMINANT_GAPS, ref_jacobian_diagonal

pytestmark = pytest.mark.skipif(
    not __import__("shutil").which("g++"), reason="the CUDA emulator needs g++ with OpenMP"
)

# K around every tier boundary: sub-warp groups (1..32), one warp (33..1024),
# the block tiers (1025, 4097) and, on the emulated device, the L2 tier
# (9000; float16 rows are cached as float16, so they leave shared memory
# above 16256 elements: 17000).
WARP_KS = (1, 2, 3, 31, 32, 33, 64, 127)
WIDE_KS = (1000, 1024)
BLOCK_KS = (1025, 4097, 9000)
L2_K_FLOAT16 = 17000


def _cases():
    cases = []
    for op in OPS:
        for dtype in DTYPES:
            if op == "logsumexp":
                # softmax's passes without the last: one case per tier and dtype
                ks = (3, 33, 1000) + BLOCK_KS[:-1] + ((L2_K_FLOAT16,) if dtype == np.float16 else BLOCK_KS[-1:])
                cases += [(op, dtype, 7, k) for k in ks]
                continue
            for k in WARP_KS:
                cases += [(op, dtype, 64 if k > 3 else 300, k)] + [(op, dtype, n, k) for n in (1, 7)]
            for k in WIDE_KS:
                ns = (1,) if op == "softmax_jacobian" else (1, 7, 64)
                cases += [(op, dtype, n, k) for n in ns]
            if op == "softmax_jacobian":
                cases.append((op, dtype, 1, 1025))  # two column chunks and two row tiles
            else:
                ks = [L2_K_FLOAT16 if k == 9000 and dtype == np.float16 else k for k in BLOCK_KS]
                cases += [(op, dtype, n, k) for k in ks for n in ((1, 7) if k == 1025 else (7,))]
    return cases


CASES = _cases()
_results = {}


@pytest.fixture(scope="module")
def emulated():
    module = EmuModule(_gpu.source(), _gpu.name_expressions(), devices.EMULATED)
    with pytest.MonkeyPatch.context() as mp:
        install(mp, module, devices.EMULATED)
        yield module


def _run(op, dtype, n, k):
    key = (op, np.dtype(dtype).name, n, k)
    if key not in _results:
        a, b = inputs(op, n, k, dtype)
        _results[key] = (a, b, emulate(op, a, b))
    return _results[key]


def _id(case):
    op, dtype, n, k = case
    return f"{op}-{np.dtype(dtype).name}-N{n}-K{k}"


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_matches_float64_reference(emulated, case):
    op, dtype, n, k = case
    a, b, out = _run(op, dtype, n, k)
    check(op, out, a, b)


def test_cases_cover_every_tier_of_every_op_and_dtype():
    seen = set()
    for op, dtype, n, k in CASES:
        seen.add((op, np.dtype(dtype).name, _gpu.plan(op, n, k, dtype, True, devices.EMULATED).tier))
    for op in ROW_OPS:
        for dtype in DTYPES:
            for tier in ("warp", "block-smem", "block-l2"):
                assert (op, dtype.name, tier) in seen
    for dtype in DTYPES:
        for tier in ("jacobian-warp", "jacobian-block"):
            assert ("softmax_jacobian", dtype.name, tier) in seen


@pytest.mark.parametrize("k", (33, 255, 1000, 4097))
@pytest.mark.parametrize("op", OPS)
def test_unaligned_rows_take_the_scalar_path_and_match(emulated, op, k):
    if op == "softmax_jacobian" and k > 255:
        pytest.skip("the Jacobian has no vector path")
    a, b = inputs(op, 7, k, np.float32, seed=1)
    launch = _gpu.plan(op, 7, k, np.float32, False, devices.EMULATED)
    if op != "softmax_jacobian":
        assert launch.kernel.split(", ")[2] == "1", launch.kernel  # VEC = 1
    check(op, emulate(op, a, b, misalign=1), a, b)


@pytest.mark.parametrize("k", (33, 1000, 4097, 9000))
@pytest.mark.parametrize("op", ("softmax", "log_softmax"))
def test_in_place_forward_matches(emulated, op, k):
    a, _ = inputs(op, 7, k, np.float32, seed=2)
    check(op, emulate(op, a, in_place="a"), a, None)


@pytest.mark.parametrize("k", (33, 1000, 4097))
@pytest.mark.parametrize("op", ("softmax_backward", "log_softmax_backward"))
@pytest.mark.parametrize("into", ("a", "b"))
def test_in_place_backward_matches(emulated, op, k, into):
    a, b = inputs(op, 7, k, np.float32, seed=3)
    check(op, emulate(op, a, b, in_place=into), a, b)


@pytest.mark.parametrize(
    "op, k, dtype, n",
    [
        ("softmax", 3, np.float32, 1100),  # sub-warp groups of 4: 32 rows per block
        ("log_softmax", 33, np.float16, 140),  # one row per warp: 4 rows per block
        ("softmax_backward", 300, np.float64, 40),  # block-smem with 128 threads
        ("softmax_jacobian", 5, np.float32, 1100),
    ],
)
def test_rows_beyond_one_grid_are_covered_by_grid_stride(op, k, dtype, n):
    # On the one-SM device the grid is capped at 32 blocks, fewer than the rows.
    props = devices.EMULATED_TINY
    launch = _gpu.plan(op, n, k, dtype, True, props)
    rows_per_block = launch.block // launch.width if launch.width else 1
    assert launch.grid * rows_per_block < n
    module = EmuModule(_gpu.source(), _gpu.name_expressions(), props)
    with pytest.MonkeyPatch.context() as mp:
        install(mp, module, props)
        a, b = inputs(op, n, k, dtype, seed=4)
        check(op, emulate(op, a, b), a, b)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
@pytest.mark.parametrize("k", (2, 33, 300, 1000, 1025, 9000))
def test_log_softmax_of_1000_and_1_is_exactly_0_and_minus_999(emulated, dtype, k):
    if dtype == np.float16 and k == 9000:
        pytest.skip("K=9000 is the L2 tier for float32 already")
    x = np.full((2, k), -np.inf, dtype)
    x[:, 0], x[:, 1] = 1000.0, 1.0
    x[1] = x[1, ::-1]  # and with the large value in the last column
    out = emulate("log_softmax", x)
    expected = np.full((2, k), -np.inf)
    expected[0, :2] = [0.0, -999.0]
    expected[1, -2:] = [-999.0, 0.0]
    assert np.array_equal(out.astype(np.float64), expected)
    soft = emulate("softmax", x)
    assert np.array_equal(soft.astype(np.float64), (expected == 0.0).astype(np.float64))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
@pytest.mark.parametrize("k", (1, 4, 64, 1000, 4097, 9000))
def test_special_rows_follow_the_cpu_semantics(emulated, dtype, k):
    huge = HUGE[np.dtype(dtype)]
    rows = np.zeros((5, k), np.float64)
    rows[0, -1] = np.nan  # NaN anywhere: NaN row
    rows[1, 0] = np.inf  # +inf anywhere: NaN row
    rows[2, :] = -np.inf  # all -inf: NaN row
    rows[3, :] = -huge
    rows[3, k // 2] = huge  # +-huge: exact one-hot, by max subtraction
    rows[4, :] = 1.0
    rows[4, 0] = -np.inf  # -inf in a finite row: exactly 0
    x = rows.astype(dtype)
    out = emulate("softmax", x).astype(np.float64)
    assert np.isnan(out[:3]).all()
    one_hot = np.zeros(k)
    one_hot[k // 2] = 1.0
    assert np.array_equal(out[3], one_hot)
    if k > 1:
        assert out[4, 0] == 0.0 and np.isfinite(out[4]).all()
    log = emulate("log_softmax", x).astype(np.float64)
    assert np.isnan(log[:3]).all()
    if k > 1:
        assert log[4, 0] == -np.inf
    if k <= 64:  # both Jacobian tiers; larger K costs seconds per row here
        jac = emulate("softmax_jacobian", x).astype(np.float64)
        assert np.isnan(jac[:3]).all()
        assert np.array_equal(jac[3], np.diag(one_hot) - np.outer(one_hot, one_hot))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
@pytest.mark.parametrize("k", (3, 32, 33, 1025))
def test_jacobian_is_symmetric_bit_for_bit(emulated, dtype, k):
    a, _ = inputs("softmax_jacobian", 1 if k > 1000 else 7, k, dtype, seed=5)
    jac = emulate("softmax_jacobian", a)
    assert np.array_equal(jac, np.swapaxes(jac, 1, 2), equal_nan=True)
    # and the diagonal is s (1 - s) of the very s used off the diagonal, 1 - s_i
    # as the sum of the other s_j where s_i > 1/2
    s = np.asarray(emulate("softmax", a), np.float64)
    finite = np.isfinite(s).all(axis=1)
    diag = np.diagonal(jac, axis1=1, axis2=2).astype(np.float64)
    others = np.where(s > 0.5, s.sum(axis=1, keepdims=True) - s, 1 - s)
    np.testing.assert_allclose(diag[finite], (s * others)[finite], rtol=1e-2 if dtype == np.float16 else 1e-5,
                               atol=1e-3 if dtype == np.float16 else 1e-7)


@pytest.mark.parametrize("dtype", (np.float32, np.float64), ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("k", (10, 32, 33, 64))
def test_jacobian_diagonal_keeps_its_relative_accuracy_where_one_class_dominates(emulated, dtype, k):
    # Both tiers (a warp's group up to 32, a block from 33). s_i - s_i^2 would
    # lose 1 - s_i to the rounding of s_i near 1 (float32: 0.22 off at s_i =
    # 0.99998); s_i times the sum of the other s_j keeps the accuracy of s.
    gaps = DOMINANT_GAPS[np.dtype(dtype)]
    rng = np.random.default_rng(k)
    x = rng.standard_normal((len(gaps), k))
    x[np.arange(len(gaps)), rng.integers(0, k, len(gaps))] += gaps
    x = x.astype(dtype)
    want = ref_jacobian_diagonal(x)
    got = np.diagonal(emulate("softmax_jacobian", x), axis1=1, axis2=2).astype(np.float64)
    assert np.max(np.abs(got - want) / want) <= (1e-5 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("k", (7, 1000, 4097))
def test_every_softmax_row_sums_to_one_within_k_eps(emulated, k):
    x = np.random.default_rng(k).standard_normal((7, k)).astype(np.float32) * 5
    out = emulate("softmax", x).astype(np.float64)
    assert np.all(np.abs(out.sum(axis=1) - 1.0) <= k * np.finfo(np.float32).eps)


def test_launches_above_the_default_shared_memory_opt_in(emulated):
    # K = 7000 float32 needs 28 KiB of shared memory, above the emulated
    # device's 16 KiB default: run() must raise the kernel's limit first.
    n, k = 2, 7000
    launch = _gpu.plan("softmax", n, k, np.float32, True, devices.EMULATED)
    assert launch.tier == "block-smem" and launch.shared_mem > devices.EMULATED["sharedMemPerBlock"]
    a, _ = inputs("softmax", n, k, np.float32, seed=6)
    check("softmax", emulate("softmax", a), a, None)
    assert emulated.get_function(launch.kernel).max_dynamic_shared_size_bytes >= launch.shared_mem


def test_float16_conversions_match_numpy_exactly():
    # The emulator runs the kernels' host path for float16 <-> float32; it
    # must round exactly as the GPU's cvt.rn.f16.f32 (and NumPy) do.
    extra = """
extern "C" void emu_h2f(const unsigned short* h, float* f, long n) {
    for (long i = 0; i < n; ++i) { csm_half x; x.bits = h[i]; f[i] = csm_to_acc(x); }
}
extern "C" void emu_f2h(const float* f, unsigned short* h, long n) {
    for (long i = 0; i < n; ++i) h[i] = csm_from_acc<csm_half>(f[i]).bits;
}
"""
    import ctypes

    module = EmuModule(_gpu.source(), ["csm_rows_warp<csm_half, 0, 1, 1>"], devices.EMULATED, "half", extra)
    lib = module.lib
    halves = np.arange(65536, dtype=np.uint16)
    floats = np.empty(65536, np.float32)
    lib.emu_h2f(halves.ctypes.data_as(ctypes.c_void_p), floats.ctypes.data_as(ctypes.c_void_p), ctypes.c_long(65536))
    expected = halves.view(np.float16).astype(np.float32)
    assert np.array_equal(floats, expected, equal_nan=True)

    rng = np.random.default_rng(7)
    below = halves.view(np.float16)[np.isfinite(halves.view(np.float16))].astype(np.float32)
    ties = (below[:-1].astype(np.float64) + np.diff(below.astype(np.float64)) / 2).astype(np.float32)
    samples = np.concatenate([
        below, ties, np.nextafter(ties, np.float32(np.inf)), np.nextafter(ties, np.float32(-np.inf)),
        rng.standard_normal(200000).astype(np.float32) * np.float32(10.0) ** rng.integers(-9, 6, 200000),
        np.array([65504, 65519.99, 65520, 1e30, -1e30, np.inf, -np.inf, 2.0**-25, 2.0**-24, 3 * 2.0**-26], np.float32),
    ]).astype(np.float32)
    got = np.empty(samples.size, np.uint16)
    lib.emu_f2h(samples.ctypes.data_as(ctypes.c_void_p), got.ctypes.data_as(ctypes.c_void_p), ctypes.c_long(samples.size))
    with np.errstate(over="ignore"):
        want = samples.astype(np.float16)
    assert np.array_equal(got.view(np.float16), want, equal_nan=True)
    nan = np.empty(1, np.uint16)
    lib.emu_f2h(np.array([np.nan], np.float32).ctypes.data_as(ctypes.c_void_p), nan.ctypes.data_as(ctypes.c_void_p), ctypes.c_long(1))
    assert np.isnan(nan.view(np.float16)[0])


_CPU_CASES = [c for c in CASES if c[2] in (1, 7)][::3]


@pytest.mark.parametrize("case", _CPU_CASES, ids=[_id(c) for c in _CPU_CASES])
def test_emulated_results_match_the_cpu_backend(emulated, case):
    import csoftmax

    op, dtype, n, k = case
    if not hasattr(csoftmax, op):
        pytest.skip(f"the CPU backend has no {op} yet")
    a, b, out = _run(op, dtype, n, k)
    cpu = getattr(csoftmax, op)(a) if b is None else getattr(csoftmax, op)(a, b)
    assert cpu.dtype == out.dtype
    ref = reference(op, a, b)
    check(op, out, a, b, ref)
    check(op, cpu, a, b, ref)
    # both within a few ulps of the same reference, and NaN in the same places
    assert np.array_equal(np.isnan(cpu), np.isnan(out))


# ---- where= masks (the mask contract: masked entries take no part, come out
# exactly 0 / -inf, fully masked rows give no NaN) and logsumexp

# Every mask kind in the warp tier (sub-warp groups, scalar and vector loads);
# the block tiers (block-smem at 1025 with scalar loads, 4096 with vector
# loads; block-l2 at 9000 on the emulated device) with four rows: 1024-thread
# blocks cost ~0.1 s each on the emulator.
MASK_CASES = ([(k, kind) for k in (3, 33, 1000) for kind in MASK_KINDS]
              + [(1025, "strided"), (4096, "broadcast"), (9000, "rows")])


@pytest.mark.parametrize("k, kind", MASK_CASES, ids=[f"K{k}-{kind}" for k, kind in MASK_CASES])
@pytest.mark.parametrize("op", ROW_OPS)
def test_masked_rows_match_the_masked_reference(emulated, op, k, kind):
    n = 4 if k > 1000 else 7
    a, b, mask = masked_inputs(op, n, k, np.float32, kind, seed=12)
    check(op, emulate(op, a, b, mask=mask), a, b, mask=mask)


@pytest.mark.parametrize("dtype", (np.float16, np.float64), ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("k", (33,))
@pytest.mark.parametrize("op", ROW_OPS)
def test_masked_rows_match_in_float16_and_float64(emulated, op, k, dtype):
    a, b, mask = masked_inputs(op, 4, k, dtype, "rows", seed=13)
    check(op, emulate(op, a, b, mask=mask), a, b, mask=mask)


@pytest.mark.parametrize("kind", MASK_KINDS)
@pytest.mark.parametrize("k", (5, 40))
def test_masked_jacobian_has_zero_rows_and_columns_at_masked_entries(emulated, k, kind):
    a, _, mask = masked_inputs("softmax_jacobian", 4, k, np.float32, kind, seed=14)
    jac = emulate("softmax_jacobian", a, mask=mask)
    check("softmax_jacobian", jac, a, None, mask=mask)
    masked = ~np.broadcast_to(mask != 0, a.shape)
    assert np.all(jac[np.nonzero(masked)[0], np.nonzero(masked)[1], :] == 0)
    assert np.all(np.swapaxes(jac, 1, 2)[np.nonzero(masked)[0], np.nonzero(masked)[1], :] == 0)
    assert not np.isnan(jac[0]).any()  # row 0 is fully masked


@pytest.mark.parametrize("k", (1, 4, 33, 1000, 4096))
def test_fully_masked_rows_give_zeros_and_minus_inf_without_nan(emulated, k):
    x = np.full((2, k), np.nan, np.float32)
    x[1, ::2] = np.inf
    mask = np.zeros((2, k), np.uint8)
    for op, value in (("softmax", 0.0), ("log_softmax", -np.inf), ("logsumexp", -np.inf)):
        out = emulate(op, x, mask=mask)
        assert np.all(out == value), (op, out)
    g = np.full((2, k), np.nan, np.float32)
    for op in ("softmax_backward", "log_softmax_backward"):
        assert np.all(emulate(op, x, g, mask=mask) == 0.0)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
@pytest.mark.parametrize("k", (1, 5, 64, 1000, 4096, 9000))
def test_logsumexp_special_rows_follow_scipy(emulated, dtype, k):
    rows = np.zeros((6, k), np.float64)
    rows[0, -1] = np.nan  # NaN -> NaN
    rows[1, 0] = np.inf  # +inf -> +inf
    rows[2, :] = -np.inf  # all -inf -> -inf
    rows[3, 0], rows[3, -1] = np.inf, np.nan  # NaN wins over +inf
    rows[4, :] = HUGE[np.dtype(dtype)]  # no overflow: huge + log(k)
    rows[5, :] = np.linspace(-30.0, 5.0, k)
    x = rows.astype(dtype)
    out = emulate("logsumexp", x).astype(np.float64)
    assert np.isnan(out[0]) and out[1] == np.inf and out[2] == -np.inf and np.isnan(out[3])
    check("logsumexp", out[4:].astype(dtype), x[4:], None)


def test_logsumexp_float32_is_within_2e_6_relative(emulated):
    x = np.random.default_rng(15).standard_normal((64, 1000)).astype(np.float32) * 4
    out = emulate("logsumexp", x).astype(np.float64)
    ref = reference("logsumexp", x)
    assert np.all(np.abs(out - ref) <= 2e-6 * np.abs(ref))


@pytest.mark.parametrize("masked", (False, True), ids=("plain", "masked"))
@pytest.mark.parametrize("op", ROW_OPS)
def test_float16_rows_cached_as_float16_fit_twice_the_k(emulated, op, masked):
    # 32 KiB of shared memory per block on the emulated device: these rows
    # fit as float16 (2 bytes an element), not as float (4).
    k = 6000 if op.endswith("backward") else 12000
    plan16 = _gpu.plan(op, 4, k, np.float16, True, devices.EMULATED)
    assert plan16.tier == "block-smem", plan16
    assert _gpu.plan(op, 4, k, np.float32, True, devices.EMULATED).tier == "block-l2"
    if masked:
        a, b, mask = masked_inputs(op, 4, k, np.float16, "rows", seed=23)
    else:
        (a, b), mask = inputs(op, 4, k, np.float16, seed=23), None
    check(op, emulate(op, a, b, mask=mask), a, b, mask=mask)
