# cython: language_level=3, boundscheck=False, wraparound=False
"""The CPU backend: validated NumPy arrays in, the nogil kernels run.

The wrapper (_api.py) guarantees what the kernels need, so nothing here
validates: 2-D operands and output of one dtype (float32 or float64), aligned,
in native byte order, with unit column stride and a row stride that is a whole
number of elements; the Jacobian's (N, K, K) output is C-contiguous.
"""
cimport numpy as cnp

from csoftmax.kernels cimport OP_NO_STREAM, rows_f32, rows_f64

cnp.import_array()

# Operation names, in the order of the kernels' op codes.
OPS = ("softmax", "log_softmax", "softmax_backward", "log_softmax_backward", "softmax_jacobian",
       "exp", "log")

# The dtypes the kernels compute natively; others are converted by the wrapper.
NATIVE_DTYPES = ("float32", "float64")


cdef inline Py_ssize_t _ld(cnp.ndarray a):
    # Row stride in elements. A single row's stride is never used.
    if cnp.PyArray_DIM(a, 0) <= 1:
        return cnp.PyArray_DIM(a, 1)
    return cnp.PyArray_STRIDE(a, 0) // cnp.PyArray_ITEMSIZE(a)


def run(str op, cnp.ndarray a, b, cnp.ndarray out, int num_threads, bint fresh=False):
    """out <- op(a[, b]) row by row. num_threads <= 0: OpenMP's default.
    fresh: `out` was just allocated (see OP_NO_STREAM)."""
    cdef int code = OPS.index(op)
    cdef cnp.ndarray bb = a if b is None else b
    cdef Py_ssize_t n = cnp.PyArray_DIM(a, 0), k = cnp.PyArray_DIM(a, 1)
    cdef Py_ssize_t lda = _ld(a), ldb = _ld(bb)
    # The Jacobian output is C-contiguous (N, K, K); a row output may be strided.
    cdef Py_ssize_t ldo = k * k if code == 4 else _ld(out)
    cdef void* pa = cnp.PyArray_DATA(a)
    cdef void* pb = cnp.PyArray_DATA(bb)
    cdef void* po = cnp.PyArray_DATA(out)
    cdef int rc
    if fresh:
        code |= OP_NO_STREAM
    if cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT:
        with nogil:
            rc = rows_f32(code, <const float*>pa, lda, <const float*>pb, ldb,
                          <float*>po, ldo, n, k, num_threads)
    else:
        with nogil:
            rc = rows_f64(code, <const double*>pa, lda, <const double*>pb, ldb,
                          <double*>po, ldo, n, k, num_threads)
    if rc != 0:
        raise ValueError(f"{op}: the kernel refused sizes ({n}, {k})")
