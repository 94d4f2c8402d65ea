"""Dask arrays: lazy graphs whose blocks run csoftmax's own kernels.

A public function given a dask.array.Array returns a lazy dask.array.Array;
nothing is computed until the caller asks. Each block is computed by the
public function itself (so NumPy blocks take the C-level path and CuPy blocks
the CUDA kernels), on whole rows:

* the softmax axes in one chunk: one map_blocks (blockwise) call, with the
  result's dtype, chunks and meta set, no data moved;
* an axis split across chunks: the array is rechunked so that every row lies
  in one block. The other axes keep their chunks while a block stays within
  dask's `array.chunk-size` (128 MiB by default) and are split further
  ("auto") when it would not. Each row is then computed by the same kernel
  as a NumPy call on the whole array, so the result is bitwise the NumPy
  path's, whatever the chunking (a row's bits depend only on its values).

Why rechunk rather than a two-stage (max, then sum of exp) reduction across
chunks: the two-stage form cannot reproduce the kernels' canonical sum order
and exp, so it is not bitwise, and it reads the data twice. Rechunking moves
each byte once. Only when a single row is larger than the chunk-size limit
(rows of tens of millions of classes) do softmax, log_softmax and their
backward passes fall back to the two-stage form, which is exact to rounding
(float64 sums) but not bitwise; any other function rechunks regardless.

The Jacobian needs its axis in one chunk (its blocks are (..., K, K));
otherwise it raises and says how to rechunk. softmax_cross_entropy is lazy
with reduction="none" (the per-row losses); its "sum" and "mean" would need a
cross-block sum whose order differs from the NumPy path's, so they raise and
say so. `out=` cannot be a Dask array (they are immutable).
"""
import functools
import math
import string

import numpy as np

from . import _semantics
from ._interop import OUTPUT_KEYWORDS

# The shape of each function's result, relative to its first input.
SHAPES = {
    "softmax": "same",
    "log_softmax": "same",
    "softmax_backward": "same",
    "log_softmax_backward": "same",
    "softmax_jacobian": "jacobian",
    "logsumexp": "reduce",
    "softmax_cross_entropy": "cross_entropy",
}

# Functions with an exact (not bitwise) two-stage form for rows too large for one chunk.
_TWO_STAGE = ("softmax", "log_softmax", "softmax_backward", "log_softmax_backward")


def _block(fname, names, kwargs, *blocks):
    """One block: the public function on whole rows. A module-level function,
    looked up by name on the worker, so that graphs pickle by reference."""
    import csoftmax
    fn = getattr(csoftmax, fname)
    pos = []
    kw = dict(kwargs)
    for name, b in zip(names, blocks):
        if name in ("where", "weight"):
            kw[name] = b
        else:
            pos.append(b)
    r = fn(*pos, **kw)
    if isinstance(r, np.generic):
        r = np.asarray(r)
    return r


def _block_part(fname, names, kwargs, part, *blocks):
    return _block(fname, names, kwargs, *blocks)[part]


def _chunk_limit():
    import dask
    from dask.utils import parse_bytes
    return parse_bytes(dask.config.get("array.chunk-size"))


def call(fname, c):
    import dask.array as da

    for name in OUTPUT_KEYWORDS:
        if c.arrays.get(name) is not None:
            raise TypeError(f"{fname}: {name}= cannot be used with Dask arrays: the "
                            "result is lazy and Dask arrays are immutable; leave "
                            f"{name}=None and store the result (e.g. dask.array.store)")
    rule = SHAPES.get(fname)
    if rule is None:
        raise TypeError(f"{fname}: Dask arrays are not supported by this function")
    first = c.names[0]
    if c.arrays.get(first) is None:
        raise TypeError(f"{fname}: {first} must be an array, not None")
    kw = {k: v for k, v in c.kwargs.items() if k != "axis"}
    if rule == "same":
        return _same_shape(fname, c, kw, da)
    if rule == "jacobian":
        return _jacobian(fname, c, kw, da)
    if rule == "reduce":
        return _reduce(fname, c, kw, da)
    return _cross_entropy(fname, c, kw, da)


# ---- helpers -----------------------------------------------------------------------

def _as_dask(a, da):
    return a if isinstance(a, da.Array) else da.asarray(a)


def _axis_arg(axes, axis):
    # A single int where the caller gave one: 1-D/2-D blocks take the C-level path.
    if axis is not None and not isinstance(axis, tuple) and len(axes) == 1:
        return axes[0]
    return axes


def _probe(fname, arrays, kwargs):
    """The public function on empty arrays of the inputs' dtypes: the result's
    dtype, and the NumPy path's argument errors raised now, not at compute."""
    import csoftmax
    empties = []
    for a in arrays:
        empties.append(np.empty((0,) * a.ndim, dtype=a.dtype))
    return getattr(csoftmax, fname)(*empties, **kwargs)


def _where(c, x, fname, da):
    w = c.arrays.get("where")
    if w is None:
        return None
    w = _as_dask(w, da)
    try:
        shape = np.broadcast_shapes(w.shape, x.shape)
    except ValueError:
        shape = None
    if shape != x.shape:
        raise ValueError(f"{fname}: where has shape {w.shape}, which does not broadcast "
                         f"to x's shape {x.shape}")
    return da.broadcast_to(w, x.shape)


def _meta(x, ndim, dtype):
    from dask.array.utils import meta_from_array
    return meta_from_array(x, ndim=ndim, dtype=dtype)


def _whole_rows(arrays, axes, itemsize):
    """arrays (all of arrays[0]'s shape) rechunked so that the axes are in
    one chunk; the other axes keep their chunks while a block fits dask's
    chunk-size limit and are split ('auto') when it would not."""
    x = arrays[0]
    if any(len(x.chunks[a]) > 1 for a in axes):
        if any(math.isnan(x.shape[a]) for a in axes):
            raise ValueError("csoftmax: a Dask array split along the softmax axis must have "
                             "known chunk sizes to be rechunked; call x.compute_chunk_sizes() "
                             "first")
        others = [d for d in range(x.ndim) if d not in axes]
        row = math.prod(x.shape[a] for a in axes) * itemsize
        band = row * math.prod(max(x.chunks[d], default=0) for d in others)
        target = {a: -1 for a in axes}
        if band > _chunk_limit():
            target.update({d: "auto" for d in others})
        x = x.rechunk(target)
    return [x] + [a if a.chunks == x.chunks else a.rechunk(x.chunks) for a in arrays[1:]]


def _row_too_large(x, axes, itemsize):
    return math.prod(x.shape[a] for a in axes) * itemsize > _chunk_limit()


# ---- softmax, log_softmax and the backward passes -------------------------------------

def _same_shape(fname, c, kw, da):
    names = [n for n in c.names if n in c.arrays]
    arrays = [_as_dask(c.arrays[n], da) for n in names]
    x = arrays[0]
    if len(arrays) == 2:
        if arrays[1] is None or arrays[0].shape != arrays[1].shape:
            raise ValueError(f"{fname}: {names[0]} has shape {x.shape} but {names[1]} has "
                             f"shape {getattr(arrays[1], 'shape', None)}; they must match")
    axes = _semantics._axes(c.axis, x.ndim, fname)
    axis = _axis_arg(axes, c.axis)
    where = _where(c, x, fname, da)
    probe_kw = dict(kw, axis=axis)
    if where is not None:
        probe_kw["where"] = np.empty((0,) * x.ndim, dtype=where.dtype)
    rdtype = _probe(fname, arrays, probe_kw).dtype
    itemsize = max([rdtype.itemsize] + [a.dtype.itemsize for a in arrays] + [4])
    if (where is None and fname in _TWO_STAGE and kw.get("dtype") is None
            and any(len(x.chunks[a]) > 1 for a in axes) and _row_too_large(x, axes, itemsize)):
        return _two_stage(fname, arrays, axes, rdtype, da)
    if where is not None:
        arrays.append(where)
        names.append("where")
    arrays = _whole_rows(arrays, axes, itemsize)
    f = functools.partial(_block, fname, tuple(names), dict(kw, axis=axis))
    return da.map_blocks(f, *arrays, dtype=rdtype, meta=_meta(arrays[0], x.ndim, rdtype),
                         token=f"csoftmax-{fname}")


def _two_stage(fname, arrays, axes, rdtype, da):
    """Rows larger than a chunk: a cross-chunk reduction in float64, exact to
    rounding but not bitwise the kernels' result. NaN and +inf in a row make
    it NaN, as in the kernels (+inf - max is NaN there)."""
    cdtype = np.float64 if rdtype == np.float64 else np.float32
    token = f"csoftmax-{fname}-two-stage"
    if fname in ("softmax", "log_softmax"):
        x = arrays[0].astype(cdtype)
        m = x.max(axis=axes, keepdims=True)
        s = da.map_blocks(_shifted_exp, x, m, dtype=np.float64).sum(axis=axes, keepdims=True)
        part = _ts_softmax if fname == "softmax" else _ts_log_softmax
        return da.map_blocks(part, x, m, s, rdtype, dtype=rdtype, token=token)
    y, g = arrays
    if fname == "softmax_backward":
        s = da.map_blocks(_product, y, g, dtype=np.float64).sum(axis=axes, keepdims=True)
        return da.map_blocks(_ts_softmax_backward, y, g, s, rdtype, dtype=rdtype, token=token)
    s = g.astype(np.float64).sum(axis=axes, keepdims=True)
    return da.map_blocks(_ts_log_softmax_backward, y, g, s, rdtype, dtype=rdtype, token=token)


# The two-stage blocks, in float64. inf - inf is NaN by design (a row with
# +inf, or all -inf, is NaN), so NumPy's "invalid value" warning is not passed on.

def _shifted_exp(x, m):
    with np.errstate(invalid="ignore", over="ignore"):
        return np.exp(x.astype(np.float64) - m)


def _ts_softmax(x, m, s, rdtype):
    with np.errstate(invalid="ignore", over="ignore"):
        return (np.exp(x.astype(np.float64) - m) / s).astype(rdtype)


def _ts_log_softmax(x, m, s, rdtype):
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        return (x.astype(np.float64) - m - np.log(s)).astype(rdtype)


def _product(y, g):
    with np.errstate(invalid="ignore", over="ignore"):
        return y.astype(np.float64) * g


def _ts_softmax_backward(y, g, s, rdtype):
    with np.errstate(invalid="ignore", over="ignore"):
        y = y.astype(np.float64)
        return (y * (g - s)).astype(rdtype)


def _ts_log_softmax_backward(y, g, s, rdtype):
    with np.errstate(invalid="ignore", over="ignore"):
        return (g - np.exp(y.astype(np.float64)) * s).astype(rdtype)


# ---- the Jacobian -------------------------------------------------------------------

def _jacobian(fname, c, kw, da):
    x = _as_dask(c.arrays[c.names[0]], da)
    (ax,) = _semantics._axes(c.axis, x.ndim, fname, single=True)
    if len(x.chunks[ax]) > 1:
        raise ValueError(f"{fname}: x is a Dask array split into {len(x.chunks[ax])} chunks "
                         f"along axis {ax}; the Jacobian needs each row in one chunk: "
                         f"rechunk it first, x.rechunk({{{ax}: -1}})")
    where = _where(c, x, fname, da)
    probe_kw = dict(kw, axis=-1)
    if where is not None:
        probe_kw["where"] = np.empty((0,) * x.ndim, dtype=where.dtype)
    rdtype = _probe(fname, [x], probe_kw).dtype
    arrays = [da.moveaxis(x, ax, -1)]
    names = ["x"]
    if where is not None:
        arrays.append(da.moveaxis(where, ax, -1).rechunk(arrays[0].chunks))
        names.append("where")
    xt = arrays[0]
    k = x.shape[ax]
    f = functools.partial(_block, fname, tuple(names), dict(kw, axis=-1))
    return da.map_blocks(f, *arrays, dtype=rdtype, new_axis=[xt.ndim],
                         chunks=xt.chunks + ((k,),), meta=_meta(xt, xt.ndim + 1, rdtype),
                         token=f"csoftmax-{fname}")


# ---- logsumexp ------------------------------------------------------------------------

def _reduce(fname, c, kw, da):
    x = _as_dask(c.arrays[c.names[0]], da)
    axes = _semantics._axes(c.axis, x.ndim, fname)
    axis = _axis_arg(axes, c.axis)
    keepdims = bool(kw.get("keepdims", False))
    where = _where(c, x, fname, da)
    probe_kw = dict(kw, axis=axis)
    names = ["x"]
    arrays = [x]
    if where is not None:
        probe_kw["where"] = np.empty((0,) * x.ndim, dtype=where.dtype)
        arrays.append(where)
        names.append("where")
    rdtype = np.asarray(_probe(fname, [x], probe_kw)).dtype
    arrays = _whole_rows(arrays, axes, max(rdtype.itemsize, x.dtype.itemsize, 4))
    f = functools.partial(_block, fname, tuple(names), dict(kw, axis=axis))
    xr = arrays[0]
    if keepdims:
        chunks = tuple((1,) if d in axes else xr.chunks[d] for d in range(x.ndim))
        return da.map_blocks(f, *arrays, dtype=rdtype, chunks=chunks,
                             meta=_meta(xr, x.ndim, rdtype), token=f"csoftmax-{fname}")
    return da.map_blocks(f, *arrays, dtype=rdtype, drop_axis=list(axes),
                         meta=_meta(xr, x.ndim - len(axes), rdtype), token=f"csoftmax-{fname}")


# ---- softmax_cross_entropy ----------------------------------------------------------------

def _cross_entropy(fname, c, kw, da):
    if kw.get("reduction", "mean") != "none":
        raise ValueError(f"{fname}: with Dask arrays, only reduction='none' is computed "
                         "lazily and bitwise as the NumPy path; take .sum() or .mean() of "
                         "its per-row losses (the cross-block sum is in another order)")
    logits = _as_dask(c.arrays["logits"], da)
    target = _as_dask(c.arrays["target"], da)
    (ax,) = _semantics._axes(c.axis, logits.ndim, fname, single=True)
    nd = logits.ndim
    letters = string.ascii_letters[:nd]
    row_letters = letters[:ax] + letters[ax + 1:]
    if target.ndim == nd:
        t_ind = letters
    elif target.ndim == nd - 1:
        t_ind = row_letters
    else:
        raise ValueError(f"{fname}: target has shape {target.shape}; expected logits' "
                         f"shape {logits.shape} (probabilities) or it without axis {ax} "
                         "(class indices)")
    # The probe: no rows, but K classes, so that weight (K,) fits.
    k = logits.shape[ax]
    row0 = tuple(k if d == ax else 0 for d in range(nd))
    probe_kw = dict(kw, axis=ax)
    args = [logits, target]
    names = ["logits", "target"]
    inds = [letters, t_ind]
    weight = c.arrays.get("weight")
    if weight is not None:
        weight = _as_dask(weight, da).rechunk(-1)
        probe_kw["weight"] = np.ones(weight.shape, weight.dtype)
        args.append(weight)
        names.append("weight")
        inds.append(letters[ax])
    where = _where(c, logits, fname, da)
    if where is not None:
        probe_kw["where"] = np.ones(row0, dtype=where.dtype)
        args.append(where)
        names.append("where")
        inds.append(letters)
    empties = [np.zeros(row0, logits.dtype),
               np.zeros(row0 if target.ndim == nd else (0,) * (nd - 1), target.dtype)]
    import csoftmax
    probe = getattr(csoftmax, fname)(*empties, **probe_kw)
    # Every row in one block: logits rechunked, the others to match.
    lg = _whole_rows([logits], (ax,), max(logits.dtype.itemsize, 4))[0]
    args[0] = lg
    row_chunks = lg.chunks[:ax] + lg.chunks[ax + 1:]
    args[1] = target.rechunk(lg.chunks if target.ndim == nd else row_chunks)
    if where is not None:
        args[-1] = args[-1].rechunk(lg.chunks)
    pairs = [p for a, i in zip(args, inds) for p in (a, i)]
    kw = dict(kw, axis=ax)
    if kw.get("return_grad"):
        loss_dtype, grad_dtype = probe[0].dtype, probe[1].dtype
        loss = da.blockwise(functools.partial(_block_part, fname, tuple(names), kw, 0),
                            row_letters, *pairs, dtype=loss_dtype, concatenate=True,
                            meta=_meta(lg, nd - 1, loss_dtype))
        grad = da.blockwise(functools.partial(_block_part, fname, tuple(names), kw, 1),
                            letters, *pairs, dtype=grad_dtype, concatenate=True,
                            meta=_meta(lg, nd, grad_dtype))
        return loss, grad
    rdtype = probe.dtype
    return da.blockwise(functools.partial(_block, fname, tuple(names), kw), row_letters,
                        *pairs, dtype=rdtype, concatenate=True, meta=_meta(lg, nd - 1, rdtype))
