# cython: language_level=3, boundscheck=False, wraparound=False
"""The public entry points, with a C-level fast path for the core contract.

A call whose arguments are exactly the core contract (a C-contiguous, aligned,
native float32/float64 2-D NumPy array, the last axis, no out=, default
threads) is validated, allocated and computed here without touching Python
code: that is what keeps a 1x10 softmax under a microsecond. Every other call
goes to _api, which implements the full semantics; both reach the same
kernels, so they give identical results.
"""
cimport numpy as cnp

from csoftmax.kernels cimport rows_f32, rows_f64
from csoftmax import _api

cnp.import_array()

# Below this many elements the GIL is kept: releasing and re-taking it costs
# more than the kernel itself.
cdef enum:
    NOGIL_ELEMS = 4096
    # The fast path allocates Jacobians up to this size (1 GiB); larger ones go
    # through _api, which checks them against the machine's memory first.
    FAST_JACOBIAN_BYTES = 1 << 30


cdef inline bint _is_fast(object x):
    # The core contract: exactly ndarray, 2-D, native float32/float64, C order.
    if type(x) is not cnp.ndarray:
        return False
    cdef cnp.ndarray a = <cnp.ndarray>x
    cdef int t = cnp.PyArray_TYPE(a)
    return (cnp.PyArray_NDIM(a) == 2 and (t == cnp.NPY_FLOAT or t == cnp.NPY_DOUBLE)
            and cnp.PyArray_IS_C_CONTIGUOUS(a) and cnp.PyArray_ISBEHAVED_RO(a))


cdef inline bint _last_axis(object axis):
    return type(axis) is int and (axis == -1 or axis == 1)


cdef object _compute(int op, cnp.ndarray a, cnp.ndarray b, bint jacobian):
    cdef cnp.npy_intp dims[3]
    dims[0] = cnp.PyArray_DIM(a, 0)
    dims[1] = cnp.PyArray_DIM(a, 1)
    dims[2] = dims[1]
    cdef int t = cnp.PyArray_TYPE(a)
    cdef cnp.ndarray out = cnp.PyArray_EMPTY(3 if jacobian else 2, dims, t, 0)
    cdef Py_ssize_t n = dims[0], k = dims[1]
    cdef Py_ssize_t ldo = k * k if jacobian else k
    cdef void* pa = cnp.PyArray_DATA(a)
    cdef void* pb = cnp.PyArray_DATA(b)
    cdef void* po = cnp.PyArray_DATA(out)
    if cnp.PyArray_SIZE(out) < NOGIL_ELEMS:
        if t == cnp.NPY_FLOAT:
            rows_f32(op, <const float*>pa, k, <const float*>pb, k, <float*>po, ldo, n, k, 0)
        else:
            rows_f64(op, <const double*>pa, k, <const double*>pb, k, <double*>po, ldo, n, k, 0)
    else:
        with nogil:
            if t == cnp.NPY_FLOAT:
                rows_f32(op, <const float*>pa, k, <const float*>pb, k, <float*>po, ldo, n, k, 0)
            else:
                rows_f64(op, <const double*>pa, k, <const double*>pb, k, <double*>po, ldo, n, k, 0)
    return out


def softmax(x, axis=-1, *, out=None, num_threads=None):
    """Softmax along `axis`: exp(x - max) / sum(exp(x - max)).

    x: array-like (NumPy, or CuPy for the GPU); float16/32/64 compute in their
    own precision (float16 via float32), integers and bools as float64.
    axis: int, tuple of ints, or None (all axes); default the last.
    out: optional array of the result's shape and dtype (may be x itself).
    num_threads: None for OpenMP's default, or a positive int for this call.
    """
    if out is None and num_threads is None and _last_axis(axis) and _is_fast(x):
        return _compute(0, <cnp.ndarray>x, <cnp.ndarray>x, False)
    return _api.softmax(x, axis, out=out, num_threads=num_threads)


def log_softmax(x, axis=-1, *, out=None, num_threads=None):
    """Log-softmax along `axis`, computed as (x - max) - log(sum(exp(x - max))).

    Arguments as for softmax().
    """
    if out is None and num_threads is None and _last_axis(axis) and _is_fast(x):
        return _compute(1, <cnp.ndarray>x, <cnp.ndarray>x, False)
    return _api.log_softmax(x, axis, out=out, num_threads=num_threads)


cdef inline bint _same_layout(object y, object g):
    cdef cnp.ndarray a = <cnp.ndarray>y, b = <cnp.ndarray>g
    return (cnp.PyArray_TYPE(a) == cnp.PyArray_TYPE(b)
            and cnp.PyArray_DIM(a, 0) == cnp.PyArray_DIM(b, 0)
            and cnp.PyArray_DIM(a, 1) == cnp.PyArray_DIM(b, 1))


def softmax_backward(y, grad, axis=-1, *, out=None, num_threads=None):
    """Gradient of softmax: y * (grad - sum(grad * y)), without the Jacobian.

    y: softmax(x) along `axis`; grad: dL/dy, the same shape. Returns dL/dx.
    """
    if (out is None and num_threads is None and _last_axis(axis) and _is_fast(y)
            and _is_fast(grad) and _same_layout(y, grad)):
        return _compute(2, <cnp.ndarray>y, <cnp.ndarray>grad, False)
    return _api.softmax_backward(y, grad, axis, out=out, num_threads=num_threads)


def log_softmax_backward(y, grad, axis=-1, *, out=None, num_threads=None):
    """Gradient of log_softmax: grad - exp(y) * sum(grad).

    y: log_softmax(x) along `axis`; grad: dL/dy, the same shape. Returns dL/dx.
    """
    if (out is None and num_threads is None and _last_axis(axis) and _is_fast(y)
            and _is_fast(grad) and _same_layout(y, grad)):
        return _compute(3, <cnp.ndarray>y, <cnp.ndarray>grad, False)
    return _api.log_softmax_backward(y, grad, axis, out=out, num_threads=num_threads)


def softmax_jacobian(x, axis=-1, *, out=None, num_threads=None):
    """Batched Jacobian of softmax: J[..., i, j] = s_i (delta_ij - s_j).

    x: logits; the softmax axis (a single int) is moved last and a K axis is
    appended, so (N, K) gives (N, K, K). Raises MemoryError, before allocating,
    for a result larger than this machine's memory.
    """
    cdef cnp.ndarray a
    cdef Py_ssize_t n, k
    if out is None and num_threads is None and _last_axis(axis) and _is_fast(x):
        a = <cnp.ndarray>x
        n = cnp.PyArray_DIM(a, 0)
        k = cnp.PyArray_DIM(a, 1)
        # k < 2^14 keeps k * k from overflowing; the rest bounds the bytes.
        if 0 < k < 16384 and n <= (FAST_JACOBIAN_BYTES // cnp.PyArray_ITEMSIZE(a)) // (k * k):
            return _compute(4, a, a, True)
    return _api.softmax_jacobian(x, axis, out=out, num_threads=num_threads)
