"""Host time per GPU call, measured on the CPU with the CuPy stand-in.

    python bench/gpu_host_overhead.py [--calls 20000]

The stand-in of tests/cuda_emu/fake_cupy.py plays CuPy (device arrays are
NumPy arrays); its kernels do nothing here, so what is timed is csoftmax's own
Python per call: argument checks, the device scope, planning, kernel lookup,
argument packing -- the part of a call the GPU cannot hide. CuPy's own launch
cost (a few microseconds) comes on top on a real GPU. Best of 5 runs.
"""
from __future__ import annotations

import argparse
import sys
import time
import types
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def _stand_in():
    from cuda_emu import devices
    from cuda_emu.fake_cupy import FakeCuPy

    fake = FakeCuPy([devices.REAL["H100"]])

    class _NoKernel:
        max_dynamic_shared_size_bytes = 0

        def __call__(self, grid, block, args, shared_mem=0, stream=None):
            pass

    fake.RawModule = lambda code, options=(), name_expressions=(): types.SimpleNamespace(
        get_function=lambda name: _NoKernel())
    sys.modules["cupy"] = fake
    return fake


def _best(func, calls):
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(calls):
            func()
        best = min(best, (time.perf_counter() - t) / calls)
    return best * 1e6


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000)
    args = parser.parse_args(argv)
    cp = _stand_in()
    import csoftmax
    from csoftmax import _gpu

    x = cp.asarray(np.random.default_rng(0).standard_normal((1, 10)).astype(np.float32))
    out = cp.empty((1, 10), np.float32)
    csoftmax.softmax(x)  # plan, module and kernel caches warm
    rows = [
        ("_gpu.run (backend: plan, lookup, launch)", lambda: _gpu.run("softmax", x, None, out)),
        ("csoftmax.softmax(x)", lambda: csoftmax.softmax(x)),
        ("csoftmax.softmax(x, out=out)", lambda: csoftmax.softmax(x, out=out)),
    ]
    print("| call, 1 x 10 float32 | host us per call |")
    print("|---|---|")
    for name, func in rows:
        print(f"| {name} | {_best(func, args.calls):.1f} |")


if __name__ == "__main__":
    main()
