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

# Measured with bench/bench_contention.py (2 cores, AVX-512, with the
# engine's busy-machine check): every value from 1000 to 300000 kept the
# default thread count within 1.5x of one thread under each load, and the
# 2-thread speed-up on a quiet machine (0.5-0.65x of one thread at 4096 x 128
# and 16384 x 1000); without the check, 300000 alone gave 25-55x at
# 4096 x 128 under load. 10000 (about 0.1-0.5 ms of spinning) sits between
# keeping threads warm for back-to-back calls and freeing the core.
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


def setting():
    """What the OpenMP runtime was loaded with, for show_config()."""
    user = {k: os.environ[k] for k in _USER_KNOBS if k in os.environ}
    return user or {"GOMP_SPINCOUNT": SPINCOUNT + " (csoftmax's, at load)"}
