# cython: language_level=3, boundscheck=False, wraparound=False
"""The public entry points, with a C-level fast path for the core contract.

A call whose arguments are exactly the core contract (C-contiguous, aligned,
native float32/float64 1-D or 2-D NumPy arrays, the last axis, an `out` of the same
kind that is an input itself or disjoint from them, a plain int or None for
num_threads) is validated, allocated and computed here without touching Python
code: that is what keeps a 1x10 softmax under a microsecond. Every other call
goes to _api, which implements the full semantics; both reach the same
kernels, so they give identical results.
"""
cimport numpy as cnp
from cpython.long cimport PyLong_AsLongAndOverflow

from csoftmax._cpu cimport launch
from csoftmax.kernels cimport (OP_LOG_SOFTMAX, OP_LOG_SOFTMAX_BACKWARD, OP_NO_STREAM,
                               OP_SOFTMAX, OP_SOFTMAX_BACKWARD, OP_SOFTMAX_JACOBIAN)
from csoftmax import _api

cnp.import_array()

# The fast path allocates Jacobians up to this size (1 GiB); larger ones go
# through _api, which checks them against the machine's memory first.
cdef enum:
    FAST_JACOBIAN_BYTES = 1 << 30


cdef inline bint _is_fast(object x):
    # The core contract: exactly ndarray, 1-D or 2-D, native float32/float64,
    # C order. A 1-D array is one row, as in the tutorials.
    if type(x) is not cnp.ndarray:
        return False
    cdef cnp.ndarray a = <cnp.ndarray>x
    cdef int t = cnp.PyArray_TYPE(a)
    cdef int nd = cnp.PyArray_NDIM(a)
    return ((nd == 2 or nd == 1) and (t == cnp.NPY_FLOAT or t == cnp.NPY_DOUBLE)
            and cnp.PyArray_IS_C_CONTIGUOUS(a) and cnp.PyArray_ISBEHAVED_RO(a))


cdef inline bint _last_axis(object axis, cnp.ndarray a):
    # C-level int reads: a Python comparison costs a few hundred instructions,
    # a third of a tiny call.
    cdef int overflow = 0
    cdef long v
    if type(axis) is not int:
        return False
    v = PyLong_AsLongAndOverflow(axis, &overflow)
    return overflow == 0 and (v == -1 or v == cnp.PyArray_NDIM(a) - 1)


cdef inline Py_ssize_t _n(cnp.ndarray a):
    return cnp.PyArray_DIM(a, 0) if cnp.PyArray_NDIM(a) == 2 else 1


cdef inline Py_ssize_t _k(cnp.ndarray a):
    return cnp.PyArray_DIM(a, cnp.PyArray_NDIM(a) - 1)


cdef inline int _threads(object num_threads):
    # 0 for the default, the count for a plain positive int, -1: let _api decide.
    cdef int overflow = 0
    cdef long v
    if num_threads is None:
        return 0
    if type(num_threads) is not int:
        return -1
    v = PyLong_AsLongAndOverflow(num_threads, &overflow)
    if overflow == 0 and 1 <= v <= 65536:
        return <int>v
    return -1


cdef inline bint _disjoint(cnp.ndarray a, cnp.ndarray b):
    cdef char* pa = <char*>cnp.PyArray_DATA(a)
    cdef char* pb = <char*>cnp.PyArray_DATA(b)
    return (pa + cnp.PyArray_NBYTES(a) <= pb) or (pb + cnp.PyArray_NBYTES(b) <= pa)


cdef inline bint _fast_out(object out, cnp.ndarray a, cnp.ndarray b, bint jacobian):
    """`out` can take the result directly: same dtype, C order, the result's
    shape, writeable, and either an input itself (not for the Jacobian) or
    disjoint from the inputs."""
    if type(out) is not cnp.ndarray:
        return False
    cdef cnp.ndarray o = <cnp.ndarray>out
    cdef int nd = cnp.PyArray_NDIM(a), i
    if not (cnp.PyArray_TYPE(o) == cnp.PyArray_TYPE(a) and cnp.PyArray_IS_C_CONTIGUOUS(o)
            and cnp.PyArray_ISBEHAVED(o) and cnp.PyArray_NDIM(o) == nd + jacobian):
        return False
    for i in range(nd):
        if cnp.PyArray_DIM(o, i) != cnp.PyArray_DIM(a, i):
            return False
    if jacobian:
        return cnp.PyArray_DIM(o, nd) == _k(a) and _disjoint(o, a)
    return ((o is a or _disjoint(o, a)) and (o is b or _disjoint(o, b)))


cdef object _compute(int op, cnp.ndarray a, cnp.ndarray b, object out, int nt):
    """Allocate (unless `out` is given) and run: the result has a's shape, with
    a K axis appended for the Jacobian."""
    cdef bint jacobian = op == OP_SOFTMAX_JACOBIAN
    cdef cnp.npy_intp dims[3]
    cdef cnp.ndarray o
    cdef int nd = cnp.PyArray_NDIM(a)
    cdef Py_ssize_t n = _n(a), k = _k(a)
    dims[0] = cnp.PyArray_DIM(a, 0)
    dims[1] = k
    dims[nd] = k
    if out is None:
        o = cnp.PyArray_EMPTY(nd + jacobian, dims, cnp.PyArray_TYPE(a), 0)
        op |= OP_NO_STREAM
    else:
        o = <cnp.ndarray>out
    launch(op, a, k, b, k, o, k * k if jacobian else k, n, k, nt)
    return o


cdef inline object _unary(int op, object x, object axis, object out, object num_threads):
    """The fast path of softmax/log_softmax, or None when the call is not the
    core contract."""
    cdef int nt = _threads(num_threads)
    if nt < 0 or not _is_fast(x):
        return None
    cdef cnp.ndarray a = <cnp.ndarray>x
    if not _last_axis(axis, a):
        return None
    if out is not None and not _fast_out(out, a, a, False):
        return None
    return _compute(op, a, a, out, nt)


cdef inline object _binary(int op, object y, object g, object axis, object out, object num_threads):
    cdef int nt = _threads(num_threads)
    if nt < 0 or not _is_fast(y) or not _is_fast(g):
        return None
    cdef cnp.ndarray a = <cnp.ndarray>y, b = <cnp.ndarray>g
    cdef int i
    if not (_last_axis(axis, a) and cnp.PyArray_TYPE(a) == cnp.PyArray_TYPE(b)
            and cnp.PyArray_NDIM(a) == cnp.PyArray_NDIM(b)):
        return None
    for i in range(cnp.PyArray_NDIM(a)):
        if cnp.PyArray_DIM(a, i) != cnp.PyArray_DIM(b, i):
            return None
    if out is not None and not _fast_out(out, a, b, False):
        return None
    return _compute(op, a, b, out, nt)


def softmax(x, axis=-1, *, out=None, num_threads=None):
    """Softmax along `axis`: exp(x - max) / sum(exp(x - max)).

    x: array-like (NumPy, or CuPy for the GPU); float16/32/64 compute in their
    own precision (float16 via float32), integers and bools as float64.
    axis: int, tuple of ints, or None (all axes); default the last.
    out: optional array of the result's shape and dtype (may be x itself).
    num_threads: None for OpenMP's default, or a positive int for this call.
    """
    r = _unary(OP_SOFTMAX, x, axis, out, num_threads)
    return r if r is not None else _api.softmax(x, axis, out=out, num_threads=num_threads)


def log_softmax(x, axis=-1, *, out=None, num_threads=None):
    """Log-softmax along `axis`, computed as (x - max) - log(sum(exp(x - max))).

    Arguments as for softmax().
    """
    r = _unary(OP_LOG_SOFTMAX, x, axis, out, num_threads)
    return r if r is not None else _api.log_softmax(x, axis, out=out, num_threads=num_threads)


def softmax_backward(y, grad, axis=-1, *, out=None, num_threads=None):
    """Gradient of softmax: y * (grad - sum(grad * y)), without the Jacobian.

    y: softmax(x) along `axis`; grad: dL/dy, the same shape. Returns dL/dx.
    """
    r = _binary(OP_SOFTMAX_BACKWARD, y, grad, axis, out, num_threads)
    return r if r is not None else _api.softmax_backward(y, grad, axis, out=out, num_threads=num_threads)


def log_softmax_backward(y, grad, axis=-1, *, out=None, num_threads=None):
    """Gradient of log_softmax: grad - exp(y) * sum(grad).

    y: log_softmax(x) along `axis`; grad: dL/dy, the same shape. Returns dL/dx.
    """
    r = _binary(OP_LOG_SOFTMAX_BACKWARD, y, grad, axis, out, num_threads)
    return r if r is not None else _api.log_softmax_backward(y, grad, axis, out=out, num_threads=num_threads)


def softmax_jacobian(x, axis=-1, *, out=None, num_threads=None):
    """Batched Jacobian of softmax: J[..., i, j] = s_i (delta_ij - s_j).

    x: logits; the softmax axis (a single int) is moved last and a K axis is
    appended, so (N, K) gives (N, K, K). Raises MemoryError, before allocating,
    for a result larger than this machine's memory.
    """
    cdef cnp.ndarray a
    cdef Py_ssize_t n, k
    cdef int nt = _threads(num_threads)
    if nt >= 0 and _is_fast(x) and _last_axis(axis, <cnp.ndarray>x):
        a = <cnp.ndarray>x
        if out is not None:
            if _fast_out(out, a, a, True):
                return _compute(OP_SOFTMAX_JACOBIAN, a, a, out, nt)
        else:
            n = _n(a)
            k = _k(a)
            # k < 2^14 keeps k * k from overflowing; the rest bounds the bytes.
            if 0 < k < 16384 and n <= (FAST_JACOBIAN_BYTES // cnp.PyArray_ITEMSIZE(a)) // (k * k):
                return _compute(OP_SOFTMAX_JACOBIAN, a, a, None, nt)
    return _api.softmax_jacobian(x, axis, out=out, num_threads=num_threads)
