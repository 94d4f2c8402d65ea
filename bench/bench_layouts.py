#!/usr/bin/env python
"""Every memory layout against C order: the price of a layout, per function.

    python bench/bench_layouts.py            # about a minute
    python bench/bench_layouts.py --quick    # the small shapes only

Activations out of einsum/tensordot are often Fortran-ordered; transposed views
with axis=0 and column-strided views are common. csoftmax computes every layout
at C level (the engine takes element strides), so each should cost about what
C order costs. For each function (and the tutorials' names in csoftmax.compat)
and shape, this prints the best time per call (minimum over repeats of a batch
of calls, all layouts interleaved so that they see the same machine) of:

  C          C-contiguous float32, axis=-1 (the reference)
  F          Fortran-ordered
  T axis=0   the C-contiguous transpose with axis=0
  strided    every other row and every third column of a larger array
  negative   reversed rows and columns
  float16    C-contiguous float16 (computed in float32)
  int64      C-contiguous int64 (computed in float64)

with each time's ratio to C order. Targets: at (32, 10) and (64, 10), F and
strided within 1.5x of C, float16 and int64 under 3 us; at 16384 x 1000, F
within 1.5x of C. 256 x 50000 (a vocabulary-sized K, whose Fortran-ordered
rows are staged sixteen at a time into contiguous rows) and 64 x 300000
(rows past L2) have no target: their other layouts pay for a transposing
read, as np.ascontiguousarray does. logsumexp and softmax(where=) (the mask
in the same layout as x) take the masked family's paths.
"""
import argparse
import platform
import time

import numpy as np

import csoftmax
from csoftmax import compat, kernels

SMALL = [(32, 10), (64, 10)]
LARGE = [(4096, 128), (16384, 1000)]
# Rows longer than a lane group of sixteen: staged where they interleave.
MID = [(256, 50_000)]
# Rows past L2: read a group of rows and a chunk of columns at a time where
# they interleave (softmax, log_softmax, logsumexp), else staged.
LONG = [(64, 300_000)]
FUNCS = ["softmax", "log_softmax", "softmax_backward", "log_softmax_backward",
         "softmax_jacobian", "compat.Softmax", "compat.Softmax_grad", "logsumexp",
         "softmax where="]
TARGET = 1.5


def _layouts(x):
    n, k = x.shape
    big = np.zeros((2 * n, 3 * k), x.dtype)
    big[::2, ::3] = x
    return {
        "C": (np.ascontiguousarray(x), -1),
        "F": (np.asfortranarray(x), -1),
        "T axis=0": (np.ascontiguousarray(x.T), 0),
        "strided": (big[::2, ::3], -1),
        "negative": (np.ascontiguousarray(x[::-1, ::-1])[::-1, ::-1], -1),
        "float16": (x.astype(np.float16), -1),
        "int64": ((x * 10).astype(np.int64), -1),
    }


def _call(name, x, axis, mask=None):
    if name == "softmax where=":
        return lambda: csoftmax.softmax(x, axis=axis, where=mask)
    if name.startswith("compat."):
        f = getattr(compat, name.split(".")[1])
        return lambda: f(x if axis == -1 else x.T)  # the tutorials take rows
    f = getattr(csoftmax, name)
    if "backward" in name:
        g = np.ones_like(x)
        return lambda: f(x, g, axis=axis)
    return lambda: f(x, axis=axis)


def _best(fns, budget):
    for f in fns.values():
        f()
    t0 = time.perf_counter()
    for f in fns.values():
        f()
    once = max((time.perf_counter() - t0) / len(fns), 1e-7)
    number = max(1, int(2e-3 / once))
    best = {k: float("inf") for k in fns}
    deadline = time.perf_counter() + budget
    reps = 0
    while reps < 5 or (time.perf_counter() < deadline and reps < 200):
        for k, f in fns.items():
            t0 = time.perf_counter()
            for _ in range(number):
                f()
            best[k] = min(best[k], (time.perf_counter() - t0) / number)
        reps += 1
    return best


def _fmt(t):
    return f"{t * 1e6:.2f} us" if t < 1e-3 else f"{t * 1e3:.2f} ms"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small shapes only")
    args = ap.parse_args()
    shapes = SMALL if args.quick else SMALL + LARGE + MID + LONG
    print(f"csoftmax {csoftmax.__version__}, ISA {kernels.isa()}, "
          f"{kernels.max_threads()} threads, NumPy {np.__version__}, {platform.machine()}")
    print("best time per call; ratio to C order in brackets; float32 unless named\n")
    names = list(_layouts(np.zeros((2, 2), np.float32)))
    print("| function | shape | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    misses = []
    for fn in FUNCS:
        for shape in shapes:
            if "jacobian" in fn.lower() or "grad" in fn:
                if shape[0] * shape[1] * shape[1] > 2**24:
                    continue
            if shape in MID + LONG and fn.startswith("compat."):
                continue
            rng = np.random.default_rng(0)
            x = (rng.standard_normal(shape) * 3).astype(np.float32)
            if "backward" in fn:
                x = csoftmax.softmax(x) if fn == "softmax_backward" else csoftmax.log_softmax(x)
            lays = _layouts(x)
            # The mask in x's layout (C order beside the dtype columns).
            masks = _layouts(rng.random(shape) > 0.2)
            best = _best({k: _call(fn, a, ax, masks["C" if k in ("float16", "int64") else k][0])
                          for k, (a, ax) in lays.items()},
                         budget=0.3 if shape in SMALL else 1.5)
            cells = []
            for k in names:
                ratio = best[k] / best["C"]
                cells.append(_fmt(best[k]) + ("" if k == "C" else f" ({ratio:.2f})"))
                small = shape in SMALL
                if (k in ("F", "strided") and small and ratio > TARGET) or \
                   (k == "F" and shape == (16384, 1000) and ratio > TARGET) or \
                   (k in ("float16", "int64") and shape == (64, 10) and best[k] > 3e-6):
                    misses.append(f"{fn} {shape} {k}: {_fmt(best[k])}, {ratio:.2f}x C")
            print(f"| {fn} | {shape[0]}x{shape[1]} | " + " | ".join(cells) + " |")
    print("\ntargets missed: " + ("none" if not misses else "\n  " + "\n  ".join(misses)))


if __name__ == "__main__":
    main()
