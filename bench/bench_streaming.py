#!/usr/bin/env python
"""Streaming against regular stores for outputs past the last-level cache.

    python bench/bench_streaming.py            # about a minute
    python bench/bench_streaming.py --quick    # the two smallest outputs

The engine writes an output with streaming (non-temporal) stores only where
it is at least stream_bytes() (one LLC, counted at most 64 MiB; twice that
on an AMD CPU with AVX-512) and stream_threads() (1; there 2) or more threads
write it, and only for the ops that are not bound by an exp per element
(softmax_backward, the Jacobian but on an AMD Zen 4: set_stream_jacobian;
softmax's and log_softmax's rows past
CSM_LONG_ROW) or that write their rows from the registers (rows that follow
one another in the output, or whole registers)
(log_softmax, log_softmax_backward past its short rows, softmax from 2 KiB up to its
ring of exps: CSM_SOFTMAX_NT_ROWS) unless set_stream_exp_ops says so
(_engine.pyx). This bench
checks that rule on the machine at hand: for each op and output size (in LLCs) it times the same out= call with the
threshold forced to 0 (every reused output streams) and to 2^40 (none does)
(and the least thread count that streams to 1), interleaved, best of
several repeats, at 1 and 2 threads, with a fill of the
output (ndarray.fill) beside them. The last column says which the rule picks
and whether that is the faster one here.

softmax's long rows (past CSM_LONG_ROW: rows of 4 MiB here) have three
ways: keep their exps in the output with regular stores, stream with the
exps computed again from x, or (float32 on two threads or more, where the
rows in flight fit under the threshold) stream from a scratch row of their
exps. Their table times the engine's own choice against the first two.
"""
import numpy as np

import _timing
import csoftmax
from csoftmax import _engine


def cases(llc, quick):
    """(op, x shape, output bytes): outputs of about 1.2, 2 and 4 LLCs (as
    the streaming rule counts them)."""
    out = []
    for llcs in ((1.2, 2.4) if quick else (1.2, 2.4, 4.5)):
        nbytes = int(llcs * llc)
        out.append(("softmax", (max(nbytes // 4000, 1), 1000)))
        out.append(("log_softmax_backward", (max(nbytes // 4000, 1), 1000)))
        out.append(("softmax_backward", (max(nbytes // 4000, 1), 1000)))
        out.append(("softmax_jacobian", (max(nbytes // 40000, 1), 100)))
    return out


def _forced(nbytes):
    """Streaming from nbytes on, at any thread count, for every op (the ops
    bound by their exps included: set_stream_exp_ops)."""
    def apply():
        old_bytes, old_threads = _engine.set_stream_bytes(nbytes), _engine.set_stream_threads(1)
        old_exp, old_jac = _engine.set_stream_exp_ops(True), _engine.set_stream_jacobian(True)
        return lambda: (_engine.set_stream_bytes(old_bytes), _engine.set_stream_threads(old_threads),
                        _engine.set_stream_exp_ops(old_exp), _engine.set_stream_jacobian(old_jac))
    return apply


def main():
    args = _timing.args(__doc__)
    llc = _timing.machine(f"stream_bytes {_engine.stream_bytes() >> 20} MiB", streaming=True)
    print(f"{'op':18} {'x':>14} {'out MiB':>8} {'thr':>3} {'stream':>10} {'regular':>10} "
          f"{'fill':>10}  rule")
    rng = np.random.default_rng(0)
    for op, shape in cases(llc, args.quick):
        f = getattr(csoftmax, op)
        operands = _timing.operands(op, shape, rng)
        out = np.empty(shape + shape[1:] if op == "softmax_jacobian" else shape, np.float32)
        for threads in (1, 2):
            def call():
                f(*operands, out=out, num_threads=threads)

            times = _timing.interleaved(call, {"stream": _forced(0), "regular": _forced(1 << 40)},
                                        args.reps, rounds=2)
            fill = _timing.best(lambda: out.fill(1.0), args.reps)
            picks = _engine.plan(op, shape[0], shape[1], num_threads=threads)["stream"]
            rule = _timing.verdict("stream" if picks else "regular", times)
            print(f"{op:18} {'x'.join(map(str, shape)):>14} {out.nbytes / 2**20:8.0f} {threads:3d} "
                  f"{times['stream'] * 1e6:8.0f}us {times['regular'] * 1e6:8.0f}us "
                  f"{fill * 1e6:8.0f}us  {rule}")
    long_rows(llc, args, rng)


def long_rows(llc, args, rng):
    """softmax's rows of 4 MiB, an output of about 1.2 LLCs (the smallest
    that streams where one LLC does), float32 and float64: the
    engine's choice against regular stores and against exps computed again."""
    print(f"\n{'softmax long rows':18} {'x':>14} {'out MiB':>8} {'thr':>3} {'engine':>10} "
          f"{'regular':>10} {'again':>10}  engine's choice")
    for dtype in (np.float32, np.float64):
        k = (4 << 20) // np.dtype(dtype).itemsize
        shape = (max(int(1.2 * llc) // (4 << 20), 2), k)
        x = _timing.operands("softmax", shape, rng)[0].astype(dtype)
        out = np.empty_like(x)
        for threads in (1, 2):
            def call():
                csoftmax.softmax(x, out=out, num_threads=threads)

            times = _timing.interleaved(call, {"engine": lambda: lambda: None, "regular": _forced(1 << 40),
                                               "again": _forced(0)}, args.reps, rounds=2)
            p = _engine.plan("softmax", shape[0], k, np.dtype(dtype).name, num_threads=threads)
            # Where the engine keeps regular stores or computes the exps again,
            # its column times the same path as that setting's.
            ways = {"regular": times["regular"], "exps again": times["again"]}
            if p["keep"]:
                ways["scratch row"] = times["engine"]
            choice = "scratch row" if p["keep"] else "exps again" if p["stream"] else "regular"
            print(f"{np.dtype(dtype).name:18} {'x'.join(map(str, shape)):>14} {out.nbytes / 2**20:8.0f} "
                  f"{threads:3d} {times['engine'] * 1e6:8.0f}us {times['regular'] * 1e6:8.0f}us "
                  f"{times['again'] * 1e6:8.0f}us  {_timing.verdict(choice, ways)}")


if __name__ == "__main__":
    main()
