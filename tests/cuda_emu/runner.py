"""Run one operation through csoftmax._gpu.run on guarded NumPy buffers.

Inputs sit between NaN guard zones (an out-of-bounds read that matters shows
up as NaN); the output starts as a sentinel no result can equal, so unwritten
elements show up, and its guard zones must survive the launch.
"""
from __future__ import annotations

import numpy as np

from . import check_guards, guarded

SENTINEL = 4097.0  # exact in float16 too; softmax <= 1, and reference checks catch the rest


def out_shape(op, a):
    from csoftmax import _gpu

    return _gpu.out_shape(op, *a.shape)


def emulate(op, a, b=None, misalign=0, in_place=None, mask=None, pad=0, out_pad=None):
    """Result of ``op`` from the emulated kernels. ``in_place`` = "a" or "b"
    makes ``out`` the very array passed as that input; ``mask`` (uint8, (K,)
    or (N, K), any row stride) goes to the kernels as it is. ``pad``: the
    inputs are row-sliced views with a row stride of K + pad elements (the
    gaps NaN), and so is a 2-D ``out`` with ``out_pad`` (default ``pad``;
    its gaps must keep the sentinel)."""
    from csoftmax import _gpu

    a_buf, a_view = guarded(a.shape, a.dtype, np.nan, misalign, pad)
    a_view[...] = a
    b_buf = b_view = None
    if b is not None:
        b_buf, b_view = guarded(b.shape, b.dtype, np.nan, misalign, pad)
        b_view[...] = b
    if in_place == "a":
        out_buf, out_view, fill = a_buf, a_view, np.nan
    elif in_place == "b":
        out_buf, out_view, fill = b_buf, b_view, np.nan
    else:
        fill = SENTINEL
        shape = out_shape(op, a)
        out_buf, out_view = guarded(shape, a.dtype, fill, misalign,
                                    (pad if out_pad is None else out_pad) if len(shape) == 2 else 0)
    _gpu.run(op, a_view, b_view, out_view, mask=mask)
    check_guards(out_buf, out_view, fill)
    if in_place != "a":
        check_guards(a_buf, a_view, np.nan)
        assert np.array_equal(a_view, a, equal_nan=True), "the kernel wrote its input"
    if b is not None and in_place != "b":
        assert np.array_equal(b_view, b, equal_nan=True), "the kernel wrote its gradient input"
    return out_view.copy()
