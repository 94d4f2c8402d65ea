"""Host time per GPU call, measured on the CPU with the CuPy stand-in.

    python bench/gpu_host_overhead.py [--calls 20000]

The stand-in of tests/cuda_emu/fake_cupy.py plays CuPy (device arrays are
NumPy arrays); its kernels do nothing here, so what is timed is the Python of
a call: csoftmax's checks, planning, kernel lookup and argument packing, plus
the stand-in's own work for the CuPy operations the call makes (an array's
``device`` and ``data``, entering a device, allocating, launching). The
stand-in is Python where CuPy is Cython, so its share is counted and
subtracted: each stand-in operation is timed alone, counted in one call,
and the column "csoftmax's own" is the total less count x cost. CuPy's own
cost for the same operations (a few microseconds, most of it the launch)
comes on top on a real GPU; bench/device_check.py measures the whole on one.
Times are the process's CPU time (a busy machine stretches the wall clock of
a Python loop, not its work), best of 5 runs of --calls calls each.
"""
from __future__ import annotations

import argparse
import sys
import time
import types
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


class _NoKernel:
    max_dynamic_shared_size_bytes = 0

    def __call__(self, grid, block, args, shared_mem=0, stream=None):
        pass


def _stand_in():
    from cuda_emu import devices
    from cuda_emu.fake_cupy import FakeCuPy

    fake = FakeCuPy([devices.REAL["H100"]])
    kernel = _NoKernel()
    fake.RawModule = lambda code=None, options=(), name_expressions=(), path=None: types.SimpleNamespace(
        get_function=lambda name: kernel)
    sys.modules["cupy"] = fake
    return fake, kernel


def _best(func, calls):
    # CPU time of this process: on a shared machine other processes stretch
    # the wall clock of a Python loop, not the work it does.
    best = float("inf")
    for _ in range(5):
        t = time.process_time()
        for _ in range(calls):
            func()
        best = min(best, (time.process_time() - t) / calls)
    return best * 1e6


class _Counter:
    """Counts the stand-in operations of one call, by wrapping them."""

    def __init__(self, cp, kernel):
        self.cp, self.kernel = cp, kernel
        self.counts = dict.fromkeys(PRIMITIVES, 0)

    def __enter__(self):
        cp, counts = self.cp, self.counts
        nd, dev = cp.ndarray, cp.cuda.Device
        self.saved = (nd.device, nd.data, dev.__enter__, cp.empty, type(self.kernel).__call__)

        def counted(name, fget):
            def get(self_):
                counts[name] += 1
                return fget(self_)
            return property(get)

        nd.device = counted("array.device", self.saved[0].fget)
        nd.data = counted("array.data.ptr", self.saved[1].fget)
        enter = self.saved[2]

        def enter_counted(self_):
            counts["with device"] += 1
            return enter(self_)

        dev.__enter__ = enter_counted
        empty = self.saved[3]

        def empty_counted(*a, **k):
            counts["cupy.empty"] += 1
            return empty(*a, **k)

        cp.empty = empty_counted
        call = self.saved[4]

        def call_counted(self_, *a, **k):
            counts["kernel launch"] += 1
            return call(self_, *a, **k)

        type(self.kernel).__call__ = call_counted
        return counts

    def __exit__(self, *exc):
        nd, dev = self.cp.ndarray, self.cp.cuda.Device
        nd.device, nd.data, dev.__enter__, self.cp.empty, type(self.kernel).__call__ = self.saved
        return False


PRIMITIVES = ("array.device", "array.data.ptr", "with device", "cupy.empty", "kernel launch")


def _unit_costs(cp, kernel, calls):
    """Microseconds of each stand-in operation alone."""
    x = cp.empty((1, 10), np.float32)
    dev = x.device

    def with_device():
        with dev:
            pass

    return {
        "array.device": _best(lambda: x.device, calls),
        "array.data.ptr": _best(lambda: x.data.ptr, calls),
        "with device": _best(with_device, calls),
        "cupy.empty": _best(lambda: cp.empty((1, 10), np.float32), calls),
        "kernel launch": _best(lambda: kernel((1,), (32,), (x, x)), calls),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000)
    args = parser.parse_args(argv)
    cp, kernel = _stand_in()
    import csoftmax
    from csoftmax import _gpu

    rng = np.random.default_rng(0)
    x = cp.asarray(rng.standard_normal((1, 10)).astype(np.float32))
    g = cp.asarray(rng.standard_normal((1, 10)).astype(np.float32))
    out = cp.empty((1, 10), np.float32)
    rows = [
        ("_gpu.run (backend: plan, lookup, launch)", lambda: _gpu.run("softmax", x, None, out)),
        ("csoftmax.softmax(x)", lambda: csoftmax.softmax(x)),
        ("csoftmax.softmax(x, out=out)", lambda: csoftmax.softmax(x, out=out)),
        ("csoftmax.softmax(x, out=x) (in place)", lambda: csoftmax.softmax(x, out=x)),
        ("csoftmax.softmax_backward(y, g)", lambda: csoftmax.softmax_backward(x, g)),
        ("general path: csoftmax.softmax(x, num_threads=1)", lambda: csoftmax.softmax(x, num_threads=1)),
    ]
    for _, func in rows:
        func()  # plan, module and kernel caches warm
    units = _unit_costs(cp, kernel, args.calls)
    print("Stand-in operations alone (us): "
          + ", ".join(f"{name} {cost:.2f}" for name, cost in units.items()) + "\n")
    print("| call, 1 x 10 float32 | host us per call | stand-in operations in it | stand-in us | "
          "csoftmax's own us |")
    print("|---|---|---|---|---|")
    for name, func in rows:
        total = _best(func, args.calls)
        with _Counter(cp, kernel) as counts:
            func()
        share = sum(counts[p] * units[p] for p in PRIMITIVES)
        what = ", ".join(f"{counts[p]} {p}" for p in PRIMITIVES if counts[p])
        print(f"| {name} | {total:.1f} | {what} | {share:.1f} | {total - share:.1f} |")


if __name__ == "__main__":
    main()
