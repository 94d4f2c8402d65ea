#!/usr/bin/env python
"""Allocating calls against out= calls, with and without the output cache.

    python bench/bench_alloc.py            # about half a minute
    python bench/bench_alloc.py --quick    # the Jacobian only

Outputs of 1 MiB or more that csoftmax allocates come from a cache of freed
outputs (csoftmax/_alloc.pyx). For each large case this times, interleaved,
best of several repeats, at 1 and 2 threads: the allocating call with the
cache (the default), the same call with the cache off
(set_output_cache(0): NumPy's allocator, fresh pages past glibc's mmap
threshold), the call with out=, and np.empty + fill of the output as what
any allocating call must at least pay without a cache.
"""
import platform

import numpy as np

import _timing
import csoftmax



def cases(quick):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1000, 100)).astype(np.float32)
    out = [("softmax_jacobian 1000x100 f32", lambda o=None, t=1: csoftmax.softmax_jacobian(
        x, out=o, num_threads=t), (1000, 100, 100), np.float32)]
    if quick:
        return out
    xl = rng.standard_normal((8, 1 << 20)).astype(np.float32)
    out.append(("softmax 8x2^20 f32", lambda o=None, t=1: csoftmax.softmax(
        xl, out=o, num_threads=t), xl.shape, np.float32))
    xb = rng.standard_normal((16384, 1000)).astype(np.float32)
    yb, gb = csoftmax.softmax(xb), rng.standard_normal(xb.shape).astype(np.float32)
    out.append(("softmax_backward 16384x1000 f32", lambda o=None, t=1: csoftmax.softmax_backward(
        yb, gb, out=o, num_threads=t), xb.shape, np.float32))
    xm = rng.standard_normal((4096, 256)).astype(np.float32)
    out.append(("softmax 4096x256 f32 (4 MiB)", lambda o=None, t=1: csoftmax.softmax(
        xm, out=o, num_threads=t), xm.shape, np.float32))
    return out


def main():
    args = _timing.args(__doc__)
    limit = csoftmax.output_cache()["limit"]
    print(f"# {platform.processor() or platform.machine()}, output cache limit {limit >> 20} MiB")
    print(f"{'case':34} {'thr':>3} {'cached':>9} {'no cache':>9} {'out=':>9} {'empty+fill':>11}")
    for name, call, shape, dtype in cases(args.quick):
        o = np.empty(shape, dtype)
        for threads in (1, 2):
            times = dict.fromkeys(("cached", "no cache", "out=", "empty+fill"), float("inf"))
            for _ in range(2):  # interleaved: all four see the same machine
                for key, limit_now in (("cached", limit), ("no cache", 0)):
                    old = csoftmax.set_output_cache(limit_now)
                    try:
                        times[key] = min(times[key], _timing.best(lambda: call(t=threads), args.reps))
                    finally:
                        csoftmax.set_output_cache(old)
                times["out="] = min(times["out="], _timing.best(lambda: call(o, threads), args.reps))
                times["empty+fill"] = min(times["empty+fill"],
                                          _timing.best(lambda: np.empty(shape, dtype).fill(0), args.reps))
            print(f"{name:34} {threads:3d} " + " ".join(
                f"{times[k] * 1e3:7.2f}ms" for k in ("cached", "no cache", "out=")) +
                f" {times['empty+fill'] * 1e3:9.2f}ms")


if __name__ == "__main__":
    main()
