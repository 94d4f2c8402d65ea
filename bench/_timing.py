"""What the small benches share: best-of timing and their command line."""
import argparse
import time


def best(f, reps, n=3):
    """The best time per call of f (seconds) over reps runs of n calls, after
    one warm-up call."""
    f()
    return _best_of(f, reps, n)


def calibrated(f, seconds, rounds):
    """The best time per call of f over `rounds` loops of about `seconds`
    each, the loop's length sized by one timed call after a warm-up call."""
    f()
    t = time.perf_counter()
    f()
    once = max(time.perf_counter() - t, 1e-7)
    return _best_of(f, rounds, max(1, int(seconds / once)))


def _best_of(f, reps, n):
    t_best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        for _ in range(n):
            f()
        t_best = min(t_best, (time.perf_counter() - t) / n)
    return t_best


def args(doc):
    """--quick and --reps, described by the first paragraph of doc."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--reps", type=int, default=7)
    return ap.parse_args()
