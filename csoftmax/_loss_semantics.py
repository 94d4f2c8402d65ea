"""softmax_cross_entropy in full: the general path and every error message.

_loss.pyx computes C-contiguous 2-D float32/float64 calls at C level and
hands everything else here: N-D logits with any axis and layout, float16 and
integer logits, dtype=, where= and np.ma.MaskedArray logits, array-likes,
and every call with a wrong argument. Everything is checked before anything
is written; the call is then reduced to C-contiguous rows (N, K) in the
compute dtype and comes back to _loss.run_arrays, the same kernels.
"""
import math
import numbers
import operator

import numpy as np

from . import _semantics

FNAME = "softmax_cross_entropy"
_REDUCTIONS = ("mean", "sum", "none")


def _err(msg):
    return f"{FNAME}: {msg}"


def _is_gpu(a):
    return a is not None and _semantics._is_gpu(a)


def _compute_dtype(rdtype):
    # float16 (and any other narrow float) is computed in float32.
    return rdtype if rdtype in (np.dtype(np.float32), np.dtype(np.float64)) else np.dtype(np.float32)


def _result_dtype(logits, dtype):
    if dtype is not None:
        return _semantics._requested_dtype(dtype, FNAME)  # float16, bfloat16, float32, float64
    return _semantics._result_dtype(logits.dtype, "logits", FNAME)


def _label_smoothing(v):
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
        raise TypeError(_err(f"label_smoothing must be a real number in [0, 1], "
                             f"not {type(v).__name__}"))
    v = float(v)
    if not 0.0 <= v <= 1.0:
        raise ValueError(_err(f"label_smoothing must be in [0, 1], got {v}"))
    return v


def _ignore_index(v):
    if v is None:
        return None
    if isinstance(v, (bool, np.bool_)):
        raise TypeError(_err("ignore_index must be None or an int, not bool"))
    try:
        return operator.index(v)
    except TypeError:
        raise TypeError(_err(f"ignore_index must be None or an int, "
                             f"not {type(v).__name__}")) from None


def _reduction(v):
    if not isinstance(v, str):
        raise TypeError(_err(f"reduction must be one of {_REDUCTIONS}, not {type(v).__name__}"))
    if v not in _REDUCTIONS:
        raise ValueError(_err(f"reduction must be one of {_REDUCTIONS}, got {v!r}"))
    return v


def _check_out(arr, name, shape, dtype):
    if not isinstance(arr, np.ndarray):
        raise TypeError(_err(f"{name} must be a NumPy array, not {type(arr).__name__}"))
    if arr.shape != tuple(shape):
        raise ValueError(_err(f"{name} has shape {arr.shape}, expected {tuple(shape)}"))
    if arr.dtype != dtype:
        raise ValueError(_err(f"{name} has dtype {arr.dtype}, expected {dtype}"))
    if not arr.flags.writeable:
        raise ValueError(_err(f"{name} is read-only"))


def softmax_cross_entropy(logits, target, axis=-1, *, label_smoothing=0.0, ignore_index=None,
                          weight=None, reduction="mean", return_grad=False, where=None,
                          dtype=None, out=None, grad_out=None, num_threads=None):
    from . import _loss

    nt = _semantics._threads(num_threads, FNAME)
    if any(_is_gpu(a) for a in (logits, target, weight, where, out, grad_out)):
        # CuPy arrays: the CUDA kernels (csoftmax/_gpu_loss.py, cuda/cross_entropy.cu).
        from . import _gpu_loss
        return _gpu_loss.softmax_cross_entropy(logits, target, axis, label_smoothing, ignore_index,
                                               weight, reduction, return_grad, where, dtype, out,
                                               grad_out, num_threads)
    # ---- logits, where -------------------------------------------------------
    if isinstance(logits, np.ma.MaskedArray):
        lmask = ~np.ma.getmaskarray(logits)
        logits = np.ma.getdata(logits)
        if where is None:
            where = lmask
        elif isinstance(where, np.ndarray) and where.dtype == np.bool_:
            where = np.logical_and(where, lmask)
    logits = _semantics._as_array(logits, "logits", FNAME, np)
    if logits.ndim == 0:
        raise ValueError(_err("logits must have at least one dimension (the classes)"))
    rdtype = _result_dtype(logits, dtype)
    cdtype = _compute_dtype(rdtype)
    ax = _semantics._axes(axis, logits.ndim, FNAME, single=True)[0]
    shape = logits.shape
    k = shape[ax]
    batch_shape = shape[:ax] + shape[ax + 1:]
    n = math.prod(batch_shape)
    if where is not None:
        if not isinstance(where, np.ndarray) or where.dtype != np.bool_:
            raise TypeError(_err(f"where must be a NumPy array of dtype bool, not "
                                 f"{type(where).__name__}"
                                 + (f" of dtype {where.dtype}" if hasattr(where, "dtype") else "")))
        try:
            where = np.broadcast_to(where, shape)
        except ValueError:
            raise ValueError(_err(f"where has shape {where.shape}, which does not broadcast "
                                  f"to the logits' shape {shape}")) from None
    # ---- options --------------------------------------------------------------
    eps = _label_smoothing(label_smoothing)
    ignore = _ignore_index(ignore_index)
    reduction = _reduction(reduction)
    if not isinstance(return_grad, (bool, np.bool_)):
        raise TypeError(_err(f"return_grad must be a bool, not {type(return_grad).__name__}"))
    want_grad = bool(return_grad)
    # ---- target ---------------------------------------------------------------
    target = _semantics._as_array(target, "target", FNAME, np)
    if target.dtype.kind in "iu":
        soft = False
        if target.shape != batch_shape:
            raise ValueError(_err(f"target has shape {target.shape}; integer labels must have "
                                  f"the logits' shape without axis {ax}, {batch_shape}"))
        if n and k >= 0:
            flat = target.reshape(-1)
            bad = (flat < 0) | (flat >= k)
            if ignore is not None:
                bad &= flat != ignore
            if bad.any():
                i = int(np.argmax(bad))
                ign = "" if ignore is None else f" and is not ignore_index ({ignore})"
                raise ValueError(_err(f"target has the label {flat[i]} at flat index {i}, "
                                      f"which is outside [0, {k}) (the number of classes){ign}"))
    elif target.dtype.kind == "f" or _semantics._is_bfloat16(target.dtype):
        soft = True
        if target.shape != shape:
            raise ValueError(_err(f"target has shape {target.shape}; class probabilities must "
                                  f"have the logits' shape {shape}"))
        if ignore is not None:
            raise ValueError(_err("ignore_index applies to integer labels only; target holds "
                                  "class probabilities"))
    else:
        raise TypeError(_err(f"target has dtype {target.dtype}; expected integer class labels "
                             "or floating point class probabilities"))
    # ---- weight -----------------------------------------------------------------
    if weight is not None:
        weight = _semantics._as_array(weight, "weight", FNAME, np)
        if weight.dtype.kind not in "iuf" and not _semantics._is_bfloat16(weight.dtype):
            raise TypeError(_err(f"weight has dtype {weight.dtype}; expected real numbers"))
        if weight.shape != (k,):
            raise ValueError(_err(f"weight has shape {weight.shape}, expected ({k},) "
                                  "(one weight per class)"))
        if not (weight >= 0).all():
            raise ValueError(_err("weight must be non-negative (and not NaN)"))
        weight = np.ascontiguousarray(weight, dtype=cdtype)
    # ---- out, grad_out ---------------------------------------------------------------
    if out is not None:
        if reduction != "none":
            raise ValueError(_err(f"out is for reduction='none' (the per-row losses); "
                                  f"reduction={reduction!r} returns a scalar"))
        _check_out(out, "out", batch_shape, rdtype)
    if grad_out is not None:
        if not want_grad:
            raise ValueError(_err("grad_out is given but return_grad is False"))
        _check_out(grad_out, "grad_out", shape, rdtype)
    if out is not None and grad_out is not None and np.shares_memory(out, grad_out):
        raise ValueError(_err("out and grad_out share memory"))

    # ---- reduce to C-contiguous rows (N, K) and compute ---------------------------------
    def rows(a, dt):
        a = np.moveaxis(a, ax, -1) if ax != a.ndim - 1 else a
        return np.ascontiguousarray(a.reshape(n, k), dtype=dt)

    with np.errstate(over="ignore", invalid="ignore"):
        x2 = rows(logits, cdtype)
    labels2 = np.ascontiguousarray(target.reshape(n), dtype=np.int64) if not soft else None
    target2 = rows(target, cdtype) if soft else None
    mask2 = rows(where, np.bool_).view(np.uint8) if where is not None else None
    res = _loss.run_arrays(x2, labels2, target2, weight, mask2, k, eps, ignore, reduction,
                           want_grad, None, None, nt)
    loss, grad = res if want_grad else (res, None)

    with np.errstate(over="ignore"):
        if reduction == "none":
            loss = loss.reshape(batch_shape)
            if out is not None:
                out[...] = loss
                loss = out
            else:
                loss = loss.astype(rdtype, copy=False)
        else:
            loss = rdtype.type(loss)
        if not want_grad:
            return loss
        g = grad.reshape(batch_shape + (k,))
        g = np.moveaxis(g, -1, ax) if ax != len(shape) - 1 else g
        if grad_out is not None:
            grad_out[...] = g
            g = grad_out
        else:
            g = g.astype(rdtype, copy=False)
    return loss, g


# Other array libraries (torch, JAX, array API, pandas/xarray, Dask): the
# public function wrapped once, as _semantics' are (see _interop).
from . import _interop  # noqa: E402

_interop.install(globals())
