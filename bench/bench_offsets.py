#!/usr/bin/env python
"""Where the arrays start: what NumPy's 16-byte offset costs, per function.

    python bench/bench_offsets.py            # about half a minute
    python bench/bench_offsets.py --quick    # 1024 x 1000 only
    python bench/bench_offsets.py --reps 15  # rounds (7 by default)

NumPy's arrays past glibc's mmap threshold (128 KiB at first) start 16 bytes
past a 64-byte cache line (the mmap'd chunk's header), while csoftmax's own
outputs start on one. A vector access across two lines costs more than one
within a line, and which operand's splits cost depends on the function
(docs/design.md, "Stores on cache-line boundaries"). For each function, shape,
instruction set this machine runs (the vector ones) and thread count, this
prints the best time per call, float32 `out=`, with the inputs (x, or y and g)
and the output starting 0 / 0, 16 / 16, 0 / 16, 16 / 0 and 32 / 32 bytes past
a line, and each time's ratio to 0 / 0. Every layout is a slice of the same
buffers, so that none has other pages (or huge pages) than another, and the
layouts take turns in every round, so that all see the same machine.
logsumexp writes one value per row: its output's offset is the input's.
"""
import _timing
import numpy as np

import csoftmax
from csoftmax import _engine

FUNCS = ["softmax", "log_softmax", "logsumexp", "softmax_backward", "log_softmax_backward"]
SHAPES = [(4096, 128), (1024, 1000), (8, 1 << 20)]
QUICK = [(1024, 1000)]
# (inputs, output) bytes past a 64-byte line: both on one, both at NumPy's
# offset, one of them there, and both half a line past (where a 32-byte
# access never splits).
OFFSETS = [(0, 0), (16, 16), (0, 16), (16, 0), (32, 32)]
LINE = 64


def _at(buf, offset, shape):
    """A float32 array of shape in buf, `offset` bytes past a line."""
    start = (-buf.ctypes.data) % LINE + offset
    n = int(np.prod(shape)) * 4
    return buf[start:start + n].view(np.float32).reshape(shape)


def _calls(fn_name, shape, threads, rng):
    """{(inputs, output) offsets: the call} over one set of buffers."""
    n = int(np.prod(shape)) * 4 + 2 * LINE
    ops = _timing.operands(fn_name, shape, rng)
    bufs = [np.zeros(n, np.uint8) for _ in range(len(ops) + 1)]
    fn = getattr(csoftmax, fn_name)
    calls = {}
    for oin, oout in OFFSETS:
        if fn_name == "logsumexp" and oin != oout:
            continue
        args = [_at(b, oin, shape) for b in bufs[:-1]]
        out = _at(bufs[-1], oout, shape)

        def call(args=args, out=out):
            if fn_name == "logsumexp":
                return fn(*args, num_threads=threads)
            return fn(*args, out=out, num_threads=threads)

        def setup(args=args):
            # The layouts share the buffers: each writes its operands
            # where it starts before its turn.
            for a, v in zip(args, ops):
                a[...] = v
        calls[(oin, oout)] = (setup, call)
    return calls


def main():
    a = _timing.args(__doc__)
    shapes = QUICK if a.quick else SHAPES
    isas = [i for i in _engine.supported_isas() if i != "baseline"] or ["baseline"]
    was = _engine.isa()
    _timing.machine("inputs / output bytes past a 64-byte line")
    rng = np.random.default_rng(0)
    head = " | ".join(f"{i} / {o}" for i, o in OFFSETS)
    print(f"{'function':22s} {'shape':>12s} {'isa':7s} thr | {head}  (us, ratio to 0 / 0)")
    for fn_name in FUNCS:
        for shape in shapes:
            for isa in isas:
                _engine.select_isa(isa)
                try:
                    for threads in (1, 2):
                        calls = _calls(fn_name, shape, threads, rng)
                        size = int(np.prod(shape))
                        reps = max(3, min(200, 2_000_000 // size))
                        times = {k: float("inf") for k in calls}
                        for _ in range(a.reps):
                            for k, (setup, call) in calls.items():
                                setup()
                                times[k] = min(times[k], _timing.best(call, 1, reps))
                        ref = times[(0, 0)]
                        cells = " | ".join(
                            f"{times[k] * 1e6:8.1f} ({times[k] / ref:4.2f}x)" if k in times else " " * 17
                            for k in OFFSETS)
                        print(f"{fn_name:22s} {shape[0]:>5d} x {shape[1]:<6d} {isa:7s} {threads:>3d} | {cells}",
                              flush=True)
                finally:
                    _engine.select_isa(was)


if __name__ == "__main__":
    main()
