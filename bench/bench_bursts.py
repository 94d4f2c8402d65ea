#!/usr/bin/env python
"""Calls apart: the time of one csoftmax call that comes a gap after the one
before it, on two threads against one.

    python bench/bench_bursts.py            # a few seconds
    python bench/bench_bursts.py --quick    # fewer samples per median

Benchmarks call a function back to back; a training loop calls softmax, then
a matrix product, then the backward pass. Between two csoftmax calls the
OpenMP threads spin for a short while and then sleep, and a parallel call
that finds them asleep waits for one to wake up. The engine therefore runs a
mid-size call (work between its parallel grain and its wake grain) on two
threads only within a burst of calls, and an isolated one on the calling
thread (docs/design.md, "Which calls take the team").

For each case and each gap (0, 0.1, 0.3, 1 and 3 ms of busy waiting, as other
work would take) it times the call after the gap, with num_threads=2 and with
num_threads=1 (10 x --reps samples each), and prints the medians in
microseconds and the engine's plan for an isolated call. Two threads should
never cost much more than one at any gap; back to back (gap 0) they should
gain where the plan says so.
"""
import statistics
import time

import numpy as np

import _timing
import csoftmax
from csoftmax import _engine

GAPS_MS = (0.0, 0.1, 0.3, 1.0, 3.0)
CASES = [("softmax", 1024, 10), ("log_softmax_backward", 1024, 10), ("softmax", 256, 64),
         ("softmax_backward", 256, 64), ("softmax", 4096, 128), ("softmax_backward", 4096, 128)]


def call_for(op, n, k, threads):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, k)).astype(np.float32)
    out = np.empty_like(x)
    f = getattr(csoftmax, op)
    if op.endswith("backward"):
        y = (csoftmax.log_softmax if op.startswith("log") else csoftmax.softmax)(x)
        g = rng.standard_normal((n, k)).astype(np.float32)
        return lambda: f(y, g, out=out, num_threads=threads)
    return lambda: f(x, out=out, num_threads=threads)


def after_gap(f, gap_s, reps):
    """Median time of f called gap_s after the end of a previous call of f."""
    times = []
    for _ in range(reps):
        f()
        t = time.perf_counter()
        while time.perf_counter() - t < gap_s:
            pass
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    a = _timing.args(__doc__)
    reps = 9 if a.quick else 10 * a.reps
    print(f"csoftmax {csoftmax.__version__}, ISA {_engine.isa()}, float32, out=; "
          f"median us of the call after the gap, 2 threads / 1 thread")
    print(f"{'case':32} {'isolated plan':>14} " + " ".join(f"{g:>6g} ms gap" for g in GAPS_MS))
    for op, n, k in CASES:
        two, one = call_for(op, n, k, 2), call_for(op, n, k, 1)
        for _ in range(50):
            two()
            one()
        plan = _engine.plan(op, n, k, num_threads=2, burst=False)["threads"]
        cells = []
        for gap in GAPS_MS:
            t2 = after_gap(two, gap * 1e-3, reps)
            t1 = after_gap(one, gap * 1e-3, reps)
            cells.append(f"{t2 * 1e6:6.1f}/{t1 * 1e6:<6.1f}")
        print(f"{op + f' {n}x{k}':32} {plan:>12}T  " + " ".join(f"{c:>13}" for c in cells))


if __name__ == "__main__":
    main()
