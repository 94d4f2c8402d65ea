"""First-call compile and disk-cache load of the CUDA kernel groups, without a GPU.

    python bench/gpu_compile_cache.py [--arch 90] [--dtype float32]

Needs the test-gpu extra (cuda-bindings and the NVRTC wheel). A fresh cache
directory; then, per operation, csoftmax/_gpu.py's _load_module in a new
process with the CuPy stand-in (tests/cuda_emu/fake_cupy.py, whose
RawModule(path=) reads a real cubin and finds its kernels' symbols) and
NVRTC through cuda.bindings in place of CuPy's binding:

- cold: the group is not cached: NVRTC compiles it, the entry is written;
- hit: a second new process loads the same group from the cache.

Each operation's time covers all of _load_module: the key, reading and
checking the entry (or compiling and storing it), and the module load; the
NVRTC library's set-up (loading it, asking its version for the key), paid
once per process, is its own row; CuPy pays it anyway at its first
JIT-compiled kernel of the process (its own cache key holds the NVRTC
version). A real GPU adds the driver's cuModuleLoad of the cubin.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent("""
    import json, sys, time
    sys.path[:0] = [{tests!r}, {root!r}]
    from cuda_emu import devices, nvrtc
    from cuda_emu.fake_cupy import FakeCuPy
    props = dict(devices.REAL["H100"], major={arch} // 10, minor={arch} % 10)
    sys.modules["cupy"] = FakeCuPy([props])
    from csoftmax import _gpu, _gpu_cache
    t, c = time.perf_counter(), time.process_time()
    compiler = nvrtc.Compiler()  # NVRTC through cuda.bindings: loads the library
    compiler.version()
    times = {{"NVRTC set-up": (time.perf_counter() - t, time.process_time() - c)}}
    _gpu_cache.compiler = lambda: compiler
    for op in {ops!r}:
        t, c = time.perf_counter(), time.process_time()
        module = _gpu._load_module(0, (op, {dtype!r}))
        times[op] = (time.perf_counter() - t, time.process_time() - c)
        assert len(module.lowered) == len(_gpu.group_names(op, {dtype!r}))
    print(json.dumps(times))
""")


def _child(ops, arch, dtype, cache):
    script = CHILD.format(tests=str(ROOT / "tests"), root=str(ROOT), arch=arch, ops=list(ops), dtype=dtype)
    env = dict(os.environ, CSOFTMAX_CACHE_DIR=cache)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=ROOT)
    if out.returncode != 0:
        sys.exit(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=90)
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from csoftmax import _gpu

    ops = _gpu.OPS
    with tempfile.TemporaryDirectory() as cache:
        cold = _child(ops, args.arch, args.dtype, cache)
        hit = _child(ops, args.arch, args.dtype, cache)
        size = sum(p.stat().st_size for p in Path(cache).glob("*.cubin"))
    print(f"sm_{args.arch}, {args.dtype}, cache entries {size / 1e6:.1f} MB of cubin\n")
    print("Wall and CPU seconds (CPU: this process's, which a busy machine does not inflate).\n")
    print("| operation (group) | kernels | cold: compile + store, wall / CPU s | "
          "hit: load from cache, wall / CPU ms |")
    print("|---|---|---|---|")
    for op in ("NVRTC set-up",) + tuple(ops):
        kernels = len(_gpu.group_names(op, args.dtype)) if op in ops else ""
        print(f"| {op} | {kernels} | {cold[op][0]:.2f} / {cold[op][1]:.2f} | "
              f"{1e3 * hit[op][0]:.1f} / {1e3 * hit[op][1]:.1f} |")


if __name__ == "__main__":
    main()
