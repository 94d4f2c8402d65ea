#!/usr/bin/env python
"""Two builds of csoftmax side by side: has a change kept the speed?

    python bench/bench_versions.py OLD_TREE NEW_TREE [--isa avx2]

OLD_TREE and NEW_TREE are source trees with compiled modules (for example a
`git worktree` of the previous release, built with
`python setup.py build_ext --inplace`). Each is timed in its own processes,
alternately, three rounds; the best time per call of each entry is kept:
float32 C-order rows into a preallocated `out=` on one thread, the four row
operations at small, mid-size and large shapes. Prints new/old per entry.
"""
import argparse
import json
import os
import subprocess
import sys
import time

SHAPES = [(1, 10), (64, 10), (4096, 128), (100000, 64), (16384, 1000)]
OPS = ["softmax", "log_softmax", "softmax_backward", "log_softmax_backward"]


def child():
    import numpy as np
    import csoftmax
    res = {}
    for shape in SHAPES:
        x = (np.random.default_rng(0).standard_normal(shape) * 3).astype(np.float32)
        g = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
        o = np.empty_like(x)
        n = max(1, int(3e6 / x.size))
        for op in OPS:
            f = getattr(csoftmax, op)
            call = (lambda: f(x, g, out=o, num_threads=1)) if "backward" in op else \
                (lambda: f(x, out=o, num_threads=1))
            call()
            best = float("inf")
            for _ in range(7):
                t0 = time.perf_counter()
                for _ in range(n):
                    call()
                best = min(best, (time.perf_counter() - t0) / n)
            res[f"{op} {shape[0]}x{shape[1]}"] = best
    print(json.dumps(res))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--isa", default="", help="CSOFTMAX_ISA for both (default: the best)")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    best = {}
    for _ in range(args.rounds):
        for name, tree in (("old", args.old), ("new", args.new)):
            env = dict(os.environ, PYTHONPATH=os.path.abspath(tree), CSOFTMAX_ISA=args.isa)
            out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child"],
                                 env=env, capture_output=True, text=True, check=True,
                                 cwd=os.path.dirname(os.path.abspath(tree)) or ".")
            for k, v in json.loads(out.stdout.strip().splitlines()[-1]).items():
                best.setdefault(k, {})[name] = min(best.get(k, {}).get(name, v), v)
    print(f"new/old, best of {args.rounds} processes x 7 repeats each; 1 thread, out=, "
          f"float32 C order, ISA {args.isa or 'best'}")
    print("| entry | old | new | new/old |\n|---|---|---|---|")
    for k, v in best.items():
        print(f"| {k} | {v['old'] * 1e6:.2f} us | {v['new'] * 1e6:.2f} us | "
              f"{v['new'] / v['old']:.3f} |")


if __name__ == "__main__":
    child() if sys.argv[1:] == ["--child"] else main()
