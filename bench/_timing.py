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


def machine(rule, streaming=False):
    """Print the machine's line with the rule's threshold (text); return the
    LLC's size in bytes (8 MiB where the system does not say), or with
    streaming, the size the streaming rule takes (at most 64 MiB)."""
    import platform

    from csoftmax import _engine

    llc = _engine._llc_bytes() or (8 << 20)
    print(f"# {platform.processor() or platform.machine()}, LLC {llc >> 20} MiB, {rule}, "
          f"ISA {_engine.isa()}")
    return _engine._stream_llc_bytes() if streaming else llc


def operands(op, shape, rng):
    """Standard normal float32 operands of op: x, or for a backward op the
    forward output and a gradient."""
    import numpy as np

    import csoftmax

    x = rng.standard_normal(shape).astype(np.float32)
    if op.endswith("_backward"):
        forward = getattr(csoftmax, op[:-len("_backward")])
        return forward(x), rng.standard_normal(shape).astype(np.float32)
    return (x,)


def interleaved(call, settings, reps, rounds):
    """{name: best time per call of call()} under each of the settings, the
    settings taken in turn in every round so that all see the same machine.
    settings: {name: apply}, where apply() sets the engine up and returns
    the function that puts it back."""
    times = {name: float("inf") for name in settings}
    for _ in range(rounds):
        for name, apply in settings.items():
            restore = apply()
            try:
                times[name] = min(times[name], best(call, reps))
            finally:
                restore()
    return times


def verdict(picked, times):
    """The rule's pick, and whether it is the faster setting here."""
    return picked + (" (faster)" if min(times, key=times.get) == picked else " (slower)")


def args(doc):
    """--quick and --reps, described by the first paragraph of doc."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--reps", type=int, default=7)
    return ap.parse_args()
