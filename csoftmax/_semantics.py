"""The semantics of every public function, in full: the general path.

csoftmax's public functions (_entry.pyx) compute NumPy 1-D/2-D calls at C
level and hand everything else here: N-D arrays and tuple axes, array-likes,
CuPy arrays, and every call with a wrong argument, whose error this module
raises with a message that names the argument. It reduces the input to the
core contract of the kernels, a batch of rows (N, K), and maps the result back:

* array type picks the backend: CuPy arrays go to the GPU (_gpu), everything
  else becomes a NumPy array for the CPU (_cpu);
* dtype: float32/float64 compute natively, float16 in float32 (returned as
  float16) unless the backend takes it natively, ints and bools as float64;
  anything else is a TypeError;
* axis (int, tuple of ints, or None for all axes) is moved last and flattened
  into K; the other axes flatten into N;
* out= is checked completely before anything is written.

Nothing here computes softmax; the kernels never validate.
"""
import contextlib
import math
import operator
import os

import numpy as np
from numpy.lib.array_utils import normalize_axis_tuple

from . import _cpu

# ---- argument checks --------------------------------------------------------

def _threads(num_threads, fname):
    """None -> 0 (the OpenMP default); otherwise a positive int."""
    if num_threads is None:
        return 0
    if isinstance(num_threads, (bool, np.bool_)):
        raise TypeError(f"{fname}: num_threads must be None or a positive int, not bool")
    try:
        nt = operator.index(num_threads)
    except TypeError:
        raise TypeError(f"{fname}: num_threads must be None or a positive int, "
                        f"not {type(num_threads).__name__}") from None
    if nt < 1:
        raise ValueError(f"{fname}: num_threads must be >= 1, got {nt}")
    # The engine caps the team (_engine._plan); this keeps it a C int.
    return min(nt, 2**31 - 1)


def _is_gpu(a):
    # CuPy is optional: recognise its arrays without importing it.
    return type(a).__module__.split(".", 1)[0] == "cupy"


def _backend(arrays, fname, names):
    gpu = [_is_gpu(a) for a in arrays]
    if any(gpu):
        if not all(gpu):
            raise TypeError(f"{fname}: {' and '.join(names)} must all be CuPy arrays "
                            "or all be NumPy arrays, not a mix")
        from . import _gpu
        import cupy
        return _gpu, cupy
    return _cpu, np


def _as_array(a, name, fname, xp):
    if xp is np and not isinstance(a, np.ndarray):
        try:
            a = np.asarray(a)
        except (ValueError, TypeError) as exc:
            if "bfloat16" in str(getattr(a, "dtype", "")):
                raise TypeError(f"{fname}: {name} is bfloat16: {_BF16_HINT}") from None
            raise TypeError(f"{fname}: {name} cannot be converted to an array: {exc}") from None
    return a


# ---- where= and masked arrays -------------------------------------------------

def _unmask(arrays, where, fname):
    """np.ma.MaskedArray inputs: their data, and their mask folded into where
    (where=~mask, AND-ed with an explicit where). Returns (arrays, where,
    mask): mask is the first input's full mask for the result, or None when
    no input is a masked array."""
    if not any(isinstance(a, np.ma.MaskedArray) for a in arrays):
        return arrays, where, None
    masks = [np.ma.getmaskarray(a) for a in arrays if isinstance(a, np.ma.MaskedArray)]
    mask = masks[0]
    for m in masks[1:]:
        mask = mask | m
    keep = ~mask
    if where is not None:
        w = _where_array(where, np.shape(arrays[0]), fname, np)
        keep = keep & w
    return [np.ma.getdata(a) for a in arrays], keep, mask


def _where_array(where, shape, fname, xp):
    """where= checked: a boolean array that broadcasts to `shape` without
    changing it; returned broadcast to it (a view)."""
    if xp is np:
        try:
            w = np.asarray(where)
        except (ValueError, TypeError) as exc:
            raise TypeError(f"{fname}: where cannot be converted to an array: {exc}") from None
    else:
        w = where if isinstance(where, xp.ndarray) else xp.asarray(where)
    if w.dtype != np.bool_:
        raise TypeError(f"{fname}: where must be a boolean array, not dtype {w.dtype}; "
                        "use a comparison such as lengths[:, None] > positions")
    try:
        full = np.broadcast_shapes(w.shape, tuple(shape))
    except ValueError:
        full = None
    if full != tuple(shape):
        raise ValueError(f"{fname}: where has shape {w.shape}, which does not broadcast "
                         f"to the shape of the input {tuple(shape)}")
    return xp.broadcast_to(w, tuple(shape))


def _masked_result(res, mask):
    return res if mask is None else np.ma.MaskedArray(res, mask=mask.copy())


_BF16_HINT = ("bfloat16 needs the ml_dtypes package (pip install ml_dtypes), "
              "which gives NumPy its bfloat16 dtype")


def _is_bfloat16(dtype):
    return getattr(dtype, "name", None) == "bfloat16"


def _requested_dtype(dtype, fname):
    """dtype= as a NumPy dtype: float16, bfloat16, float32 or float64."""
    if isinstance(dtype, str) and dtype.lower() == "bfloat16":
        try:
            import ml_dtypes
        except ImportError:
            raise TypeError(f"{fname}: dtype={dtype!r}: {_BF16_HINT}") from None
        return np.dtype(ml_dtypes.bfloat16)
    if getattr(dtype, "__module__", "").split(".", 1)[0] == "torch":
        dtype = str(dtype).rsplit(".", 1)[-1]  # torch.float32 -> "float32"
        if dtype == "bfloat16":
            return _requested_dtype(dtype, fname)
    # JAX's scalar types (jnp.float32, jnp.bfloat16) carry a NumPy .dtype,
    # which np.dtype() reads.
    try:
        d = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{fname}: dtype={dtype!r} is not a dtype; expected float16, "
                        "bfloat16, float32 or float64") from None
    if _is_bfloat16(d) or (d.kind == "f" and d.itemsize in (2, 4, 8)):
        return d if _is_bfloat16(d) else np.dtype(d.type)
    raise TypeError(f"{fname}: dtype={d} is not supported; expected float16, bfloat16, "
                    "float32 or float64")


def _result_dtype(dtype, name, fname):
    """The dtype a result has for an input of `dtype`."""
    dtype = np.dtype(dtype)
    if _is_bfloat16(dtype):
        return dtype
    if dtype.kind == "f" and dtype.itemsize in (2, 4, 8):
        return np.dtype(dtype.type)  # native byte order
    if dtype.kind in "iub":
        return np.dtype(np.float64)
    if dtype.kind == "f":
        raise TypeError(f"{fname}: {name} has dtype {dtype}, which is not supported; "
                        "convert it to float64")
    raise TypeError(f"{fname}: {name} has dtype {dtype}; expected a real floating "
                    "point, integer or bool array")


_F32 = np.dtype(np.float32)


def _compute_dtype(result_dtype, backend):
    # float16 and bfloat16 are computed in float32 where the backend has no
    # kernels of their own.
    return result_dtype if result_dtype in backend.NATIVE_DTYPES else _F32


def _axes(axis, ndim, fname, single=False):
    if single:
        try:
            operator.index(axis)
        except TypeError:
            raise TypeError(f"{fname}: axis must be a single int, not {axis!r}") from None
        if isinstance(axis, (bool, np.bool_)):
            raise TypeError(f"{fname}: axis must be a single int, not bool")
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, (bool, np.bool_)):
        raise TypeError(f"{fname}: axis must be an int, a tuple of ints or None, not bool")
    try:
        return normalize_axis_tuple(axis, ndim, argname="axis")
    except TypeError:
        raise TypeError(f"{fname}: axis must be an int, a tuple of ints or None, "
                        f"not {axis!r}") from None
    except np.exceptions.AxisError as exc:
        raise np.exceptions.AxisError(f"{fname}: {exc}") from None
    except OverflowError:
        raise np.exceptions.AxisError(f"{fname}: axis {axis!r} is out of bounds for "
                                      f"an array of dimension {ndim}") from None
    except ValueError as exc:  # repeated axes
        raise ValueError(f"{fname}: axis {axis!r}: {exc}") from None


# ---- reduction to rows -------------------------------------------------------

class _Rows:
    """How an N-D array maps onto a batch of rows (N, K) and back."""

    def __init__(self, shape, axes):
        # Plain Python: NumPy's argsort/prod cost microseconds on tiny tuples.
        ndim = len(shape)
        axes = tuple(sorted(axes))
        self.batch_axes = tuple(d for d in range(ndim) if d not in axes)
        self.perm = self.batch_axes + axes
        inverse = [0] * ndim
        for i, d in enumerate(self.perm):
            inverse[d] = i
        self.inverse = tuple(inverse)
        self.batch_shape = tuple(shape[d] for d in self.batch_axes)
        self.row_shape = tuple(shape[d] for d in axes)
        self.n = math.prod(self.batch_shape)
        self.k = math.prod(self.row_shape)
        self.identity = self.perm == tuple(range(ndim))

    def to_rows(self, a):
        a = a if self.identity else a.transpose(self.perm)
        return a.reshape(self.n, self.k)

    def from_rows(self, r):
        r = r.reshape(self.batch_shape + self.row_shape)
        return r if self.identity else r.transpose(self.inverse)


def _kernel_ready(a, dtype, xp, row_strides=True):
    """`a` (2-D) as the kernels take it: dtype, aligned, native byte order,
    strides that are whole numbers of elements (the CPU kernels take any
    such strides; the CUDA row kernels a unit column stride and any
    non-negative row stride, csoftmax._gpu.row_stride, and the CUDA Jacobian
    C order: `row_strides` False). Copies only when `a` is not already so."""
    if xp is not np:
        from . import _gpu
        if a.dtype == dtype and (a.flags.c_contiguous or (row_strides and _gpu.row_stride(a) is not None)):
            return a
        return xp.ascontiguousarray(a, dtype=dtype)
    if a.dtype == dtype and a.flags.aligned and a.dtype.isnative and _whole_strides(a):
        return a
    return np.ascontiguousarray(a, dtype=dtype)


def _whole_strides(a):
    return all(n <= 1 or s % a.itemsize == 0 for n, s in zip(a.shape, a.strides))


def _rows_view(out, rows):
    """`out` (NumPy) seen as the (N, K) rows of the result, or None when its
    memory cannot be seen so (then the result is copied into it)."""
    v = out if rows.identity else out.transpose(rows.perm)
    try:
        return np.reshape(v, (rows.n, rows.k), copy=False)
    except ValueError:
        return None


def _check_out(out, shape, dtype, fname, xp):
    kind = "NumPy" if xp is np else "CuPy"
    if not isinstance(out, xp.ndarray):
        raise TypeError(f"{fname}: out must be a {kind} array, not {type(out).__name__}")
    if out.shape != tuple(shape):
        raise ValueError(f"{fname}: out has shape {out.shape}, expected {tuple(shape)}")
    if out.dtype != dtype:
        raise ValueError(f"{fname}: out has dtype {out.dtype}, expected {dtype}")
    if xp is np and not out.flags.writeable:
        raise ValueError(f"{fname}: out is read-only")


# ---- the operations ----------------------------------------------------------

def _deliver(res, out, rdtype):
    """A result computed in a buffer of our own: copied into `out`, or
    returned in the result dtype (float16 inputs were computed in float32).
    Rounding to float16 overflows to +-inf where the result is out of its
    range (a log-probability below -65504): that is the right value, so
    NumPy's overflow warning is not passed on."""
    with np.errstate(over="ignore"):
        if out is not None:
            out[...] = res
            return out
        return res.astype(rdtype, copy=False)


def _on_device(inputs, names, out, fname, where=None):
    """CuPy calls run under the device of their arrays, which must be one
    (csoftmax._gpu.device_scope); NumPy calls, and mixes that _backend
    refuses, under nothing."""
    if not all(_is_gpu(a) for a in inputs):
        return contextlib.nullcontext()
    from . import _gpu
    named = tuple(zip(names, inputs)) + (("out", out),)
    if _is_gpu(where):
        named += (("where", where),)
    return _gpu.device_scope(named, fname)


def _dtypes(arrays, names, dtype, fname, backend):
    """(result dtype, compute dtype) of a call: dtype= when given (the inputs
    are computed in it, torch's rule), else the inputs' own."""
    if dtype is not None:
        rdtype = _requested_dtype(dtype, fname)
        for a, n in zip(arrays, names):
            _result_dtype(a.dtype, n, fname)  # complex and the like still refused
    else:
        dtypes = [_result_dtype(a.dtype, n, fname) for a, n in zip(arrays, names)]
        rdtype = dtypes[0] if len(set(dtypes)) == 1 else np.result_type(*dtypes)
    return rdtype, _compute_dtype(rdtype, backend)


def _mask_rows(where, shape, rows, fname, xp):
    """where= as the kernels take it: the bool mask of the (N, K) rows (a view
    where the layout allows, a compact copy of the mask otherwise). The CPU
    kernels take any strides; the CUDA kernels bytes with unit column
    stride (any row stride, 0 for one mask of every row)."""
    if where is None:
        return None
    w = rows.to_rows(_where_array(where, shape, fname, xp))
    if xp is not np:
        if w.shape[1] > 1 and w.strides[1] != 1:
            w = xp.ascontiguousarray(w)
        w = w.view(np.uint8)
    return w


def _elementwise(op, inputs, names, axis, out, num_threads, where=None, dtype=None):
    """softmax, log_softmax and both backward passes: result shaped like the input."""
    with _on_device(inputs, names, out, op, where):
        return _elementwise_here(op, inputs, names, axis, out, num_threads, where, dtype)


def _elementwise_here(op, inputs, names, axis, out, num_threads, where, dtype):
    nt = _threads(num_threads, op)
    inputs, where, ma_mask = _unmask(list(inputs), where, op)
    backend, xp = _backend(inputs, op, names)
    arrays = [_as_array(a, n, op, xp) for a, n in zip(inputs, names)]
    if len(arrays) == 2 and arrays[0].shape != arrays[1].shape:
        raise ValueError(f"{op}: {names[0]} has shape {arrays[0].shape} but "
                         f"{names[1]} has shape {arrays[1].shape}; they must match")
    rdtype, cdtype = _dtypes(arrays, names, dtype, op, backend)
    shape = arrays[0].shape
    rows = _Rows(shape, _axes(axis, len(shape), op))
    mask = _mask_rows(where, shape, rows, op, xp)
    if out is not None:
        _check_out(np.ma.getdata(out) if ma_mask is not None else out, shape, rdtype, op, xp)
    if rows.n == 0 or rows.k == 0:
        res = xp.empty(shape, dtype=rdtype)
        return _masked_result(res, ma_mask) if out is None else out

    srcs = [_kernel_ready(rows.to_rows(a), cdtype, xp) for a in arrays]
    if xp is np:
        # The C-level path on the rows: it alone decides how a result goes
        # into `out` (directly, or through a copy when out overlaps an input).
        from . import _entry
        target = None
        if out is not None and rdtype == cdtype and ma_mask is None:
            target = _rows_view(out, rows)
        res2 = _entry.rows_2d(op, srcs[0], srcs[1] if len(srcs) > 1 else None, target, nt,
                              mask)
        if target is not None:
            return out
    else:
        res2 = xp.empty((rows.n, rows.k), dtype=cdtype)
        extra = {} if mask is None else {"mask": mask}
        backend.run(op, srcs[0], srcs[1] if len(srcs) > 1 else None, res2, nt, True, **extra)
    res = _deliver(rows.from_rows(res2), out, rdtype)
    if ma_mask is not None and out is not None:
        if isinstance(out, np.ma.MaskedArray):
            out.mask = ma_mask
        return out
    return _masked_result(res, ma_mask)


def softmax(x, axis=-1, *, where=None, out=None, dtype=None, num_threads=None):
    return _elementwise("softmax", (x,), ("x",), axis, out, num_threads, where, dtype)


def log_softmax(x, axis=-1, *, where=None, out=None, dtype=None, num_threads=None):
    return _elementwise("log_softmax", (x,), ("x",), axis, out, num_threads, where, dtype)


def softmax_backward(y, grad, axis=-1, *, where=None, out=None, dtype=None, num_threads=None):
    return _elementwise("softmax_backward", (y, grad), ("y", "grad"), axis, out, num_threads,
                        where, dtype)


def log_softmax_backward(y, grad, axis=-1, *, where=None, out=None, dtype=None,
                         num_threads=None):
    return _elementwise("log_softmax_backward", (y, grad), ("y", "grad"), axis, out,
                        num_threads, where, dtype)


def logsumexp(x, axis=-1, *, where=None, keepdims=False, out=None, dtype=None,
              num_threads=None):
    with _on_device((x,), ("x",), out, "logsumexp", where):
        return _logsumexp_here(x, axis, where, keepdims, out, dtype, num_threads)


def _logsumexp_here(x, axis, where, keepdims, out, dtype, num_threads):
    fname = "logsumexp"
    nt = _threads(num_threads, fname)
    if not isinstance(keepdims, (bool, np.bool_)):
        raise TypeError(f"{fname}: keepdims must be a bool, not {type(keepdims).__name__}")
    (x,), where, ma_mask = _unmask([x], where, fname)
    backend, xp = _backend((x,), fname, ("x",))
    x = _as_array(x, "x", fname, xp)
    rdtype, cdtype = _dtypes([x], ["x"], dtype, fname, backend)
    axes = _axes(axis, x.ndim, fname)
    rows = _Rows(x.shape, axes)
    mask = _mask_rows(where, x.shape, rows, fname, xp)
    shape = tuple(1 if d in axes else n for d, n in enumerate(x.shape)) if keepdims \
        else rows.batch_shape
    if out is not None:
        _check_out(out, shape, rdtype, fname, xp)
    res = xp.empty(rows.n, dtype=cdtype)
    if rows.k == 0:
        res[...] = -np.inf  # an empty sum: log(0)
    elif rows.n > 0:
        src = _kernel_ready(rows.to_rows(x), cdtype, xp)
        extra = {} if mask is None else {"mask": mask.view(np.uint8) if xp is np else mask}
        backend.run(fname, src, None, res, nt, True, **extra)
    res = _deliver(res.reshape(shape), out, rdtype)
    if ma_mask is not None:
        # np.ma's rule for reductions: a result is masked where its row is.
        gone = np.all(ma_mask, axis=axes, keepdims=keepdims)
        return np.ma.MaskedArray(res, mask=gone)
    if out is None and res.ndim == 0 and xp is np:
        return res[()]  # a NumPy scalar, as NumPy's reductions give
    return res


def _memory_bytes():
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def softmax_jacobian(x, axis=-1, *, where=None, out=None, dtype=None, num_threads=None):
    with _on_device((x,), ("x",), out, "softmax_jacobian", where):
        return _softmax_jacobian_here(x, axis, where, out, dtype, num_threads)


def _softmax_jacobian_here(x, axis, where, out, dtype, num_threads):
    fname = "softmax_jacobian"
    nt = _threads(num_threads, fname)
    (x,), where, ma_mask = _unmask([x], where, fname)
    backend, xp = _backend((x,), fname, ("x",))
    x = _as_array(x, "x", fname, xp)
    rdtype, cdtype = _dtypes([x], ["x"], dtype, fname, backend)
    rows = _Rows(x.shape, _axes(axis, x.ndim, fname, single=True))
    mask = _mask_rows(where, x.shape, rows, fname, xp)
    shape = rows.batch_shape + (rows.k, rows.k)
    if out is not None:
        _check_out(out, shape, rdtype, fname, xp)
    else:
        # N * K^2 grows fast: refuse, before allocating, what cannot exist.
        nbytes = rows.n * rows.k * rows.k * rdtype.itemsize
        if rows.n * rows.k * rows.k > np.iinfo(np.intp).max // max(rdtype.itemsize, 1):
            raise MemoryError(f"{fname}: a result of shape {shape} ({rdtype}) has more "
                              "elements than an array can index")
        mem = _memory_bytes() if xp is np else None
        if mem is not None and nbytes > mem:
            raise MemoryError(f"{fname}: a result of shape {shape} ({rdtype}) needs "
                              f"{nbytes / 2**30:.1f} GiB, more than this machine's "
                              f"{mem / 2**30:.1f} GiB of memory")
    if rows.n == 0 or rows.k == 0:
        return xp.empty(shape, dtype=rdtype) if out is None else out

    src = _kernel_ready(rows.to_rows(x), cdtype, xp, row_strides=False)
    if xp is np:
        from . import _entry  # the one rule for writing into out: see _elementwise
        target = None
        if out is not None and rdtype == cdtype:
            try:
                target = np.reshape(out, (rows.n, rows.k, rows.k), copy=False)
            except ValueError:
                target = None
        res = _entry.jacobian_2d(src, target, nt, mask)
        if target is not None:
            return out
    else:
        res = xp.empty((rows.n, rows.k, rows.k), dtype=cdtype)
        extra = {} if mask is None else {"mask": mask}
        backend.run(fname, src, None, res, nt, True, **extra)
    res = _deliver(res.reshape(shape), out, rdtype)
    if ma_mask is not None and out is None:
        # Entry (i, j) of a block is masked where entry i or entry j is.
        m = rows.to_rows(ma_mask).reshape(rows.batch_shape + (rows.k,))
        return np.ma.MaskedArray(res, mask=m[..., :, None] | m[..., None, :])
    return res


# Foreign arrays (torch, JAX, Dask, array API, pandas, xarray) in, the same
# kind out: _interop wraps the functions above; NumPy and CuPy pass through.
from . import _interop  # noqa: E402

_interop.install(globals())
