"""Compile the kernels with NVRTC the way CuPy does, with no GPU.

Uses the public ``cuda.bindings.nvrtc`` API and the pip wheel of NVRTC.
CuPy compiles RawModule code with ``-arch=sm_XX -ftz=true
--device-as-default-execution-space`` plus the module's own options; the
ptxas flags make spills, local memory and any ptxas warning fatal, and
``-Xptxas -v`` reports registers and shared memory per kernel.

``python tests/cuda_emu/nvrtc.py`` rewrites cuda/RESOURCES.md.
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

ARCHS = ("75", "80", "86", "89", "90", "100")
STRICT = ("-Xptxas", "-warn-spills", "-Xptxas", "-warn-lmem-usage", "-Xptxas", "-Werror", "-Xptxas", "-v")
CUPY_OPTIONS = ("-ftz=true", "--device-as-default-execution-space")

ROOT = Path(__file__).resolve().parents[2]
TABLE = ROOT / "cuda" / "RESOURCES.md"


def import_nvrtc():
    """``cuda.bindings.nvrtc``, also when the repository root is on sys.path.

    The repository's top-level ``cuda/`` (the kernel sources, a regular
    package) shadows NVIDIA's ``cuda`` namespace package (cuda.bindings,
    cuda.pathfinder) from any sys.path entry, e.g. under ``python -m pytest``.
    """
    try:
        from cuda.bindings import nvrtc

        return nvrtc
    except ModuleNotFoundError:
        pass
    shadow = sys.modules.pop("cuda", None)
    saved = list(sys.path)
    try:
        sys.path[:] = [p for p in sys.path if not (Path(p or os.getcwd()) / "cuda" / "__init__.py").is_file()]
        from cuda.bindings import nvrtc

        return nvrtc
    except ModuleNotFoundError:
        if shadow is not None:
            sys.modules["cuda"] = shadow
        raise
    finally:
        sys.path[:] = saved


class CompileResult:
    def __init__(self, ok, log, lowered, resources, cubin=None):
        self.ok = ok
        self.log = log  # the compiler's messages, less ptxas's -v report
        self.lowered = lowered  # name expression -> mangled name
        self.resources = resources  # name expression -> {"registers", "smem", "stack", "spill"}
        # The cubin (None where the compile failed): STRICT's options only
        # report, so it is compile_cubin's code for the same names and arch.
        self.cubin = cubin


def _check(result, what):
    err = result[0]
    if int(err) != 0:
        raise RuntimeError(f"{what}: {err!r}")
    return result[1:] if len(result) > 2 else (result[1] if len(result) == 2 else None)


_FUNC = re.compile(r"Compiling entry function '(\w+)'")
_USED = re.compile(r"Used (\d+) registers(?:, used \d+ barriers)?(?:, (\d+) bytes smem)?")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")


def _split_log(log: str):
    """Separate ptxas's -v report (parsed) from everything else (returned as text)."""
    resources, current, rest = {}, None, []
    for line in log.splitlines():
        m = _FUNC.search(line)
        if m:
            current = m.group(1)
            resources[current] = {"registers": 0, "smem": 0, "stack": 0, "spill": 0}
            continue
        if line.startswith("ptxas info") or line.startswith("ptxas         ."):
            if current:
                m = _USED.search(line)
                if m:
                    resources[current]["registers"] = int(m.group(1))
                    resources[current]["smem"] = int(m.group(2) or 0)
                m = _FRAME.search(line)
                if m:
                    resources[current]["stack"] = int(m.group(1))
                    resources[current]["spill"] = int(m.group(2)) + int(m.group(3))
            continue
        if line.strip():
            rest.append(line)
    return resources, "\n".join(rest)


def compile_cubin(source: str, names, arch: str, options=("--std=c++17",)):
    """(cubin bytes, {name expression: mangled name}) for ``names`` on sm_``arch``."""
    return Compiler().compile(source, names, (f"-arch=sm_{arch}", *CUPY_OPTIONS, *options))


class Compiler:
    """csoftmax._gpu_cache's NVRTC front end over ``cuda.bindings.nvrtc``
    (the test-gpu extra), for the disk-cache tests and bench: the same calls
    as CuPy's binding, options given in full (-arch and CuPy's flags too)."""

    def __init__(self):
        self.nvrtc = import_nvrtc()
        self.compiled = []  # names of every compilation

    def version(self):
        return tuple(_check(self.nvrtc.nvrtcVersion(), "nvrtcVersion"))

    def supports(self, arch):
        return arch in _check(self.nvrtc.nvrtcGetSupportedArchs(), "nvrtcGetSupportedArchs")

    def compile(self, source, names, options):
        nvrtc = self.nvrtc
        names = tuple(names)
        self.compiled.append(names)
        prog = _check(nvrtc.nvrtcCreateProgram(source.encode(), b"softmax.cu", 0, [], []), "nvrtcCreateProgram")
        try:
            for name in names:
                _check(nvrtc.nvrtcAddNameExpression(prog, name.encode()), "nvrtcAddNameExpression")
            opts = [o.encode() for o in options]
            (err,) = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
            if int(err) != 0:
                arch = next((o[len("-arch="):] for o in options if o.startswith("-arch=")), "?")
                raise RuntimeError(f"{arch}: compile failed: {err!r}")
            size = _check(nvrtc.nvrtcGetCUBINSize(prog), "nvrtcGetCUBINSize")
            buf = b" " * size
            _check(nvrtc.nvrtcGetCUBIN(prog, buf), "nvrtcGetCUBIN")
            lowered = {}
            for name in names:
                mangled = _check(nvrtc.nvrtcGetLoweredName(prog, name.encode()), "nvrtcGetLoweredName")
                lowered[name] = mangled.decode() if isinstance(mangled, bytes) else mangled
            return buf, lowered
        finally:
            nvrtc.nvrtcDestroyProgram(prog)


def nvdisasm_path():
    """The nvdisasm of the nvidia-cuda-nvdisasm wheel (test-gpu extra), or None."""
    import glob
    import sysconfig

    for root in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}:
        for found in sorted(glob.glob(os.path.join(root, "nvidia", "*", "bin", "nvdisasm"))):
            return found
    return None


def sass(cubin: bytes) -> dict:
    """{mangled kernel name: [SASS instruction text, ...]} of a cubin, by nvdisasm."""
    import subprocess
    import tempfile

    tool = nvdisasm_path()
    if tool is None:
        raise FileNotFoundError("nvdisasm (pip install nvidia-cuda-nvdisasm, in the test-gpu extra)")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        text = subprocess.run([tool, "-c", f.name], capture_output=True, text=True, check=True).stdout
    kernels, current = {}, None
    for line in text.splitlines():
        m = re.match(r"\s*\.text\.(\w+):", line)
        if m:
            current = kernels.setdefault(m.group(1), [])
            continue
        m = re.search(r"/\*[0-9a-f]{4,}\*/\s+(.*?);", line)
        if m and current is not None:
            current.append(m.group(1).strip())
    return kernels


def compile_source(source: str, names, arch: str, options=("--std=c++17",)) -> CompileResult:
    nvrtc = import_nvrtc()

    prog = _check(nvrtc.nvrtcCreateProgram(source.encode(), b"softmax.cu", 0, [], []), "nvrtcCreateProgram")
    try:
        for name in names:
            _check(nvrtc.nvrtcAddNameExpression(prog, name.encode()), "nvrtcAddNameExpression")
        opts = [o.encode() for o in (f"-arch=sm_{arch}", *CUPY_OPTIONS, *options, *STRICT)]
        (err,) = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
        size = _check(nvrtc.nvrtcGetProgramLogSize(prog), "nvrtcGetProgramLogSize")
        buf = b" " * size
        _check(nvrtc.nvrtcGetProgramLog(prog, buf), "nvrtcGetProgramLog")
        log = buf.decode(errors="replace").rstrip("\x00")
        raw, rest = _split_log(log)
        lowered, resources, cubin = {}, {}, None
        if int(err) == 0:
            for name in names:
                mangled = _check(nvrtc.nvrtcGetLoweredName(prog, name.encode()), "nvrtcGetLoweredName")
                mangled = mangled.decode() if isinstance(mangled, bytes) else mangled
                lowered[name] = mangled
                resources[name] = raw.get(mangled)
            cubin = b" " * _check(nvrtc.nvrtcGetCUBINSize(prog), "nvrtcGetCUBINSize")
            _check(nvrtc.nvrtcGetCUBIN(prog, cubin), "nvrtcGetCUBIN")
        return CompileResult(int(err) == 0, rest, lowered, resources, cubin)
    finally:
        nvrtc.nvrtcDestroyProgram(prog)


def version() -> str:
    nvrtc = import_nvrtc()

    major, minor = _check(nvrtc.nvrtcVersion(), "nvrtcVersion")
    return f"{major}.{minor}"


def resource_table(results: dict) -> str:
    """Markdown table: one row per kernel, registers / static smem per arch."""
    archs = list(results)
    names = list(next(iter(results.values())).resources)
    lines = [
        "# Kernel resources",
        "",
        f"Generated by `python tests/cuda_emu/nvrtc.py` with NVRTC {version()}; "
        "tests/test_gpu_nvrtc.py fails when it is stale.",
        "Each cell: registers per thread / static shared memory in bytes (dynamic shared memory",
        "is sized at launch by csoftmax/_gpu.py). No kernel spills or uses local memory:",
        "the build treats either as an error.",
        "",
        "| kernel | " + " | ".join(f"sm_{a}" for a in archs) + " |",
        "|---|" + "---|" * len(archs),
    ]
    for name in names:
        cells = []
        for a in archs:
            r = results[a].resources[name]
            cells.append(f"{r['registers']} / {r['smem']}")
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def cross_entropy_table(results: dict) -> str:
    """The section of RESOURCES.md for cuda/cross_entropy.cu's kernels."""
    archs = list(results)
    lines = [
        "",
        "## Cross-entropy kernels (cuda/cross_entropy.cu, compiled after softmax.cu)",
        "",
        "| kernel | " + " | ".join(f"sm_{a}" for a in archs) + " |",
        "|---|" + "---|" * len(archs),
    ]
    for name in next(iter(results.values())).resources:
        cells = [f"{results[a].resources[name]['registers']} / {results[a].resources[name]['smem']}" for a in archs]
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main():
    sys.path.insert(0, str(ROOT))
    from csoftmax import _gpu, _gpu_loss

    tables = []
    for source, names in ((_gpu.source(), _gpu.name_expressions()),
                          (_gpu_loss.source(), _gpu_loss.name_expressions())):
        results = {}
        for arch in ARCHS:
            res = compile_source(source, names, arch, _gpu._OPTIONS)
            if not res.ok or res.log:
                raise SystemExit(f"sm_{arch}:\n{res.log}")
            results[arch] = res
        tables.append(results)
    TABLE.write_text(resource_table(tables[0]) + cross_entropy_table(tables[1]))
    print(f"wrote {TABLE}")


if __name__ == "__main__":
    main()
