"""Float64 NumPy reference of every operation, test inputs, and the comparison.

The reference is the package's own (csoftmax/_reference.py): float64 from the
same (rounded) inputs the kernel gets.
"""
from __future__ import annotations

import numpy as np

from csoftmax import _reference

ROW_OPS = ("softmax", "log_softmax", "softmax_backward", "log_softmax_backward", "logsumexp")
OPS = ROW_OPS + ("softmax_jacobian",)
DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))

# A value whose exp overflows in every dtype but stays finite there.
HUGE = {np.dtype(np.float16): 6.0e4, np.dtype(np.float32): 1.0e30, np.dtype(np.float64): 1.0e30}


def _logsumexp(x):
    """scipy.special.logsumexp of each row, by its rules: NaN among the
    elements -> NaN; else any +inf -> +inf; no element or all -inf -> -inf."""
    x = np.asarray(x, np.float64)
    out = np.empty(x.shape[0])
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        for r, row in enumerate(x):
            if row.size == 0 or np.all(row == -np.inf):
                out[r] = -np.inf
            elif np.isnan(row).any():
                out[r] = np.nan
            elif np.isposinf(row).any():
                out[r] = np.inf
            else:
                m = row.max()
                out[r] = m + np.log(np.exp(row - m).sum())
    return out


def reference(op, a, b=None, mask=None):
    """Float64 result of ``op`` for inputs in their own dtype; ``mask`` (bool
    or uint8, (K,) or (N, K)) as where= (MASKS semantics: each row computed
    on its unmasked subset, masked entries 0, or -inf for log_softmax; the
    Jacobian from the masked softmax)."""
    if mask is None:
        if op == "logsumexp":
            return _logsumexp(a)
        return _reference.reference(op, a, b)
    a64 = np.asarray(a, np.float64)
    b64 = None if b is None else np.asarray(b, np.float64)
    keep = np.broadcast_to(np.asarray(mask) != 0, a64.shape)
    n, k = a64.shape
    if op == "logsumexp":
        return np.array([_logsumexp(a64[r, keep[r]][None])[0] for r in range(n)])
    if op == "softmax_jacobian":
        s = reference("softmax", a, None, mask)
        with np.errstate(invalid="ignore", over="ignore"):
            jac = -(s[:, :, None] * s[:, None, :])
            idx = np.arange(k)
            jac[:, idx, idx] = s - s * s
        # rows and columns of masked entries: exactly 0, also next to NaN
        jac[~keep] = 0.0
        jac.transpose(0, 2, 1)[~keep] = 0.0
        return jac
    out = np.full((n, k), -np.inf if op == "log_softmax" else 0.0)
    for r in range(n):
        cols = keep[r]
        if cols.any():
            sub_b = None if b64 is None else b64[r, cols][None]
            out[r, cols] = _reference.reference(op, a64[r, cols][None], sub_b)[0]
    return out


def inputs(op, n, k, dtype, seed=0):
    """(a, b) for ``op``: random rows, and in rows 1..6 (when present) one
    -inf, +inf, NaN, an all -inf row, +-HUGE and a wide spread of values.

    For the backward ops ``a`` is a genuine softmax / log_softmax output and
    ``b`` a gradient, with a NaN gradient in row 3.
    """
    dtype = np.dtype(dtype)
    rng = np.random.default_rng([seed, n, k, dtype.itemsize, OPS.index(op)])
    x = rng.standard_normal((n, k)) * 3.0
    cols = rng.integers(0, k, size=8)
    cols[1] = k - 1  # a special value in the last column, where tails live
    if n > 1:
        x[1, cols[1]] = -np.inf
    if n > 2:
        x[2, cols[2]] = np.inf
    if n > 3:
        x[3, cols[3]] = np.nan
    if n > 4:
        x[4, :] = -np.inf
    if n > 5:
        x[5, cols[5]] = HUGE[dtype]
        x[5, cols[6]] = -HUGE[dtype]
    if n > 6:
        x[6, :] = rng.uniform(-100.0, 100.0, k)
    if op in ("softmax", "log_softmax", "softmax_jacobian", "logsumexp"):
        return x.astype(dtype), None
    finite = np.where(np.isfinite(x), x, 0.0)
    if n > 1:
        finite[1, cols[1]] = -np.inf  # a zero probability: y = 0, or -inf for log_softmax
    y = _reference.softmax(finite) if op == "softmax_backward" else reference("log_softmax", finite)
    g = rng.standard_normal((n, k))
    if n > 3:
        g[3, cols[3]] = np.nan
    with np.errstate(over="ignore"):  # float16 log_softmax of a spread row reaches -inf
        return y.astype(dtype), g.astype(dtype)


def allowed_error(op, a, b, ref, dtype):
    """Per-element error bound: a few ulps of the dtype, scaled per row by the
    magnitudes the result is computed from (cancellation in the backward ops
    and in x - max is absolute, not relative)."""
    eps = float(np.finfo(dtype).eps)
    a64 = np.asarray(a, np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        if op == "softmax":
            scale = np.nanmax(np.abs(ref), axis=-1, keepdims=True, initial=0.0)
        elif op == "logsumexp":
            # max + log(sum): the rounding of the max's magnitude, plus a few
            # ulps of log(sum) <= log(K)
            finite = np.where(np.isfinite(a64), np.abs(a64), 0.0)
            scale = 1.0 + finite.max(axis=-1)
        elif op == "log_softmax":
            finite = np.where(np.isfinite(a64), np.abs(a64), 0.0)
            scale = 1.0 + 2.0 * finite.max(axis=-1, keepdims=True)
        elif op == "softmax_backward":
            b64 = np.abs(np.nan_to_num(np.asarray(b, np.float64)))
            y = np.abs(a64)
            scale = y.max(axis=-1, keepdims=True) * (b64.max(axis=-1, keepdims=True) + (b64 * y).sum(axis=-1, keepdims=True))
        elif op == "log_softmax_backward":
            b64 = np.abs(np.nan_to_num(np.asarray(b, np.float64)))
            scale = b64.max(axis=-1, keepdims=True) + np.exp(a64).max(axis=-1, keepdims=True) * b64.sum(axis=-1, keepdims=True)
        else:
            s = np.nan_to_num(_reference.softmax(a64))
            scale = s.max(axis=-1, keepdims=True)[:, :, None]
    scale = np.nan_to_num(scale)
    # 16 ulps of the result plus 16 of the row's scale: the reductions add at
    # most log2(1024) tree levels and K / blockDim serial terms per thread.
    return 16 * eps * (np.abs(np.nan_to_num(ref, posinf=0.0, neginf=0.0)) + scale)


def check(op, out, a, b, ref=None, mask=None):
    """Assert ``out`` (of a's dtype) matches the float64 reference."""
    dtype = np.asarray(a).dtype
    if ref is None:
        ref = reference(op, a, b, mask)
    if dtype == np.float16:
        # computed in float32 and rounded once: compare with the rounded reference
        with np.errstate(over="ignore", invalid="ignore"):
            ref = ref.astype(np.float16).astype(np.float64)
    got = np.asarray(out, np.float64)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    nan_ref, nan_got = np.isnan(ref), np.isnan(got)
    bad = np.argwhere(nan_ref != nan_got)
    assert bad.size == 0, f"{op}: NaN mismatch at {bad[:5].tolist()} (reference NaN: {nan_ref[tuple(bad[0])]})"
    inf_ref = np.isinf(ref)
    assert np.array_equal(got[inf_ref], ref[inf_ref]), f"{op}: infinities differ"
    if op == "softmax":
        zeros = np.isneginf(np.asarray(a, np.float64)) & ~nan_ref
        assert np.all(got[zeros] == 0.0), f"{op}: -inf did not give an exact 0"
    if mask is not None and op not in ("logsumexp", "softmax_jacobian"):
        masked = ~np.broadcast_to(np.asarray(mask) != 0, got.shape)
        exact = -np.inf if op == "log_softmax" else 0.0
        assert np.all(got[masked] == exact), f"{op}: a masked entry is not exactly {exact}"
    finite = ~(nan_ref | inf_ref)
    with np.errstate(invalid="ignore"):
        err = np.abs(got - ref)
    if mask is not None:
        # the error scale comes from the unmasked entries only (NaN sits under the mask)
        keep = np.broadcast_to(np.asarray(mask) != 0, np.shape(a))
        a = np.where(keep, np.asarray(a, np.float64), 0.0)
        b = None if b is None else np.where(keep, np.asarray(b, np.float64), 0.0)
    tol = allowed_error(op, a, b, ref, dtype)
    if dtype == np.float16:
        tol = np.maximum(tol, np.abs(ref) * 2.0**-10 + 2.0**-24)
    # Results below the smallest normal number: the GPU flushes float32
    # subnormals (-ftz=true); elsewhere they carry a few bits only.
    tol = np.maximum(tol, float(np.finfo(np.float32).tiny) if dtype == np.float32
                     else 2 * float(np.finfo(dtype).smallest_subnormal))
    over = finite & ~(err <= tol)
    if over.any():
        where = tuple(np.argwhere(over)[0])
        raise AssertionError(f"{op} {dtype}: {over.sum()} elements off, first at {where}: "
                             f"got {got[where]!r}, reference {ref[where]!r}, allowed {tol[where]:.3g}")


MASK_KINDS = ("rows", "broadcast", "strided")


def masked_inputs(op, n, k, dtype, kind="rows", seed=0):
    """(a, b, mask) for ``op`` with a where= mask (uint8, unit column stride).

    ``kind``: "rows" an (n, k) mask; "broadcast" one (k,) mask for every row
    (row stride 0); "strided" an (n, k) view of a wider mask (row stride
    k + 3). Row 0 is fully masked; NaN and +inf sit under the mask in every
    row (x and, for the backward ops, y and grad); in row 2 every unmasked x
    is -inf (the unmasked entries are NaN, the masked ones still exact);
    row 3 keeps a single element.
    """
    a, b = inputs(op, n, k, dtype, seed)
    rng = np.random.default_rng([seed, n, k, 99])
    keep = rng.random((n, k)) < 0.6
    if kind == "broadcast":
        keep[:] = keep[min(1, n - 1)]
        if k > 1:
            keep[:, 0] = False
    else:
        keep[0] = False
        if n > 3:
            keep[3] = False
            keep[3, k // 2] = True
    hidden = ~keep & (rng.random((n, k)) < 0.5)
    a = a.copy()
    with np.errstate(invalid="ignore"):
        a[hidden] = np.nan
        a[~keep & ~hidden] = np.inf if op in ("softmax", "log_softmax", "logsumexp", "softmax_jacobian") else a[~keep & ~hidden]
        if b is not None:
            b = b.copy()
            b[hidden] = np.nan
    if n > 2 and op in ("softmax", "log_softmax", "logsumexp", "softmax_jacobian") and kind != "broadcast":
        a[2, keep[2]] = -np.inf
    mask = keep.astype(np.uint8)
    if kind == "broadcast":
        mask = np.broadcast_to(mask[0], (n, k)) if n > 1 and rng.random() < 0.5 else mask[0].copy()
    elif kind == "strided":
        wide = np.zeros((n, k + 3), np.uint8)
        wide[:, :k] = mask
        mask = wide[:, :k]
    return a, b, mask
