"""The OpenMP runtime's spin time, set while csoftmax's extensions load.

GNU libgomp keeps idle threads spinning for GOMP_SPINCOUNT iterations before
they sleep: by default 300000, several milliseconds. On a busy machine a
spinning thread takes the core that another of our threads, or the caller,
needs (measured, 4096 x 128 float32 softmax on 2 cores with one busy-loop
process: 17.5 ms per call on the default two threads against 0.49 ms on
one). A short spin keeps the speed of back-to-back calls on a quiet machine
(threads still spin between them) and gives the core back quickly otherwise.

libgomp reads its environment once, when it is loaded, which happens when
the first csoftmax extension is imported. So the variable is set just for
that import and removed again: neither child processes nor libraries loaded
later see it. A user's own OMP_WAIT_POLICY or GOMP_SPINCOUNT wins, and a
libgomp that another library loaded earlier keeps its settings.
"""
import os

# Measured with bench/bench_contention.py: see docs/design.md.
SPINCOUNT = "10000"
_USER_KNOBS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def import_with_short_spin(load):
    """Call load() (the first import of an extension) with the short spin."""
    if any(k in os.environ for k in _USER_KNOBS):
        return load()
    os.environ["GOMP_SPINCOUNT"] = SPINCOUNT
    try:
        return load()
    finally:
        os.environ.pop("GOMP_SPINCOUNT", None)
