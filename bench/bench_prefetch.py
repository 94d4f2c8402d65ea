#!/usr/bin/env python
"""Software prefetches against none, for calls whose operands sit in L3.

    python bench/bench_prefetch.py            # about a minute
    python bench/bench_prefetch.py --quick    # the two smallest sizes

The engine asks the row kernels to prefetch the rows ahead only where the
call's operands and output exceed prefetch_bytes() (the L2 cache), and
softmax_backward only past half the LLC, and never where the L1d holds 32 KiB:
its dot product's pass is bound by loads, and a prefetch takes a load's slot
(_engine.pyx). The Jacobian, whose prefetches fetch its output's next block
for ownership, takes no prefetches either where the L1d holds 32 KiB.
softmax's rows past 1 MiB that keep their exps in the output take the L2
threshold with any L1d, which they always pass. This bench checks that rule on
the machine at hand: for each op and size of operands plus output (in LLCs) it
times the same out= call, on the same arrays (so that they stay in L3 where
they fit), with the threshold forced to 0 (every call prefetches) and to 2^62
(none does), interleaved, best of several repeats, at 1 and 2 threads. The
last column says which the rule picks and whether that is the faster one here.
"""
import numpy as np

import _timing
import csoftmax
from csoftmax import _engine


def cases(llc, quick):
    """(op, x shape): operands and output of about 0.2, 0.4, 0.75 and 1.5
    LLCs, rows of 128 and 1000 float32 elements; softmax's rows past 1 MiB
    too (300000 and 2^20 elements)."""
    out = []
    for llcs in ((0.2, 0.75) if quick else (0.2, 0.4, 0.75, 1.5)):
        nbytes = int(llcs * llc)
        for op, arrays in (("softmax_backward", 3), ("log_softmax_backward", 3), ("softmax", 2)):
            for k in (128, 1000):
                out.append((op, (max(nbytes // (arrays * 4 * k), 1), k)))
        for k in (300000, 1 << 20):  # softmax's long rows, their exps kept in the output
            out.append(("softmax", (max(nbytes // (2 * 4 * k), 1), k)))
        for k in (32, 100):  # the Jacobian: its (n, k, k) output
            out.append(("softmax_jacobian", (max(nbytes // (4 * k * k), 1), k)))
    return out


def _forced(nbytes):
    """Prefetches in every call past nbytes."""
    def apply():
        old = _engine.set_prefetch_bytes(nbytes)
        return lambda: _engine.set_prefetch_bytes(old)
    return apply


def main():
    args = _timing.args(__doc__)
    llc = _timing.machine(f"prefetch_bytes {_engine.prefetch_bytes() >> 10} KiB")
    print(f"{'op':21} {'x':>11} {'MiB':>5} {'thr':>3} {'prefetch':>10} {'none':>10}  rule")
    rng = np.random.default_rng(0)
    for op, shape in cases(llc, args.quick):
        f = getattr(csoftmax, op)
        operands = _timing.operands(op, shape, rng)
        out = np.empty(shape + shape[1:] if op == "softmax_jacobian" else shape, np.float32)
        mib = (sum(a.nbytes for a in operands) + out.nbytes) / 2**20
        for threads in (1, 2):
            def call():
                f(*operands, out=out, num_threads=threads)

            times = _timing.interleaved(call, {"prefetch": _forced(0), "none": _forced(1 << 62)},
                                        args.reps, rounds=3)
            picks = _engine.plan(op, shape[0], shape[1], num_threads=threads)["prefetch"]
            rule = _timing.verdict("prefetch" if picks else "none", times)
            print(f"{op:21} {'x'.join(map(str, shape)):>11} {mib:5.0f} {threads:3d} "
                  f"{times['prefetch'] * 1e6:8.0f}us {times['none'] * 1e6:8.0f}us  {rule}", flush=True)


if __name__ == "__main__":
    main()
