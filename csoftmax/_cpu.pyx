# cython: language_level=3, boundscheck=False, wraparound=False
"""The CPU backend: validated NumPy arrays in, the nogil kernels run.

The wrapper (_api.py) guarantees what the kernels need, so nothing here
validates: 2-D operands and output of one dtype (float32 or float64), aligned,
in native byte order, with unit column stride and a row stride that is a whole
number of elements; the Jacobian's (N, K, K) output is C-contiguous.
"""
cimport numpy as cnp
import numpy as np

from csoftmax.kernels cimport OP_NO_STREAM, OP_SOFTMAX_JACOBIAN, rows_f32, rows_f64

cnp.import_array()

# Operation names, in the order of the kernels' op codes.
OPS = ("softmax", "log_softmax", "softmax_backward", "log_softmax_backward", "softmax_jacobian",
       "exp", "log")

# The dtypes the kernels compute natively; others are converted by the wrapper.
NATIVE_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

# Below this many output elements the GIL is kept: releasing and re-taking it
# costs more than the kernel itself.
cdef enum:
    NOGIL_ELEMS = 4096


cdef inline Py_ssize_t _ld(cnp.ndarray a):
    # Row stride in elements. A single row's stride is never used.
    if cnp.PyArray_DIM(a, 0) <= 1:
        return cnp.PyArray_DIM(a, 1)
    return cnp.PyArray_STRIDE(a, 0) // cnp.PyArray_ITEMSIZE(a)


cdef int launch(int op, cnp.ndarray a, Py_ssize_t lda, cnp.ndarray b, Py_ssize_t ldb,
                cnp.ndarray out, Py_ssize_t ldo, Py_ssize_t n, Py_ssize_t k,
                int num_threads) except -1:
    """out <- op(a[, b]) on n rows of k: the dtype switch and the GIL rule."""
    cdef bint f32 = cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT
    cdef void* pa = cnp.PyArray_DATA(a)
    cdef void* pb = cnp.PyArray_DATA(b)
    cdef void* po = cnp.PyArray_DATA(out)
    cdef int rc
    if cnp.PyArray_SIZE(out) < NOGIL_ELEMS:
        rc = (rows_f32(op, <const float*>pa, lda, <const float*>pb, ldb, <float*>po, ldo, n, k, num_threads)
              if f32 else
              rows_f64(op, <const double*>pa, lda, <const double*>pb, ldb, <double*>po, ldo, n, k, num_threads))
    else:
        with nogil:
            rc = (rows_f32(op, <const float*>pa, lda, <const float*>pb, ldb, <float*>po, ldo, n, k, num_threads)
                  if f32 else
                  rows_f64(op, <const double*>pa, lda, <const double*>pb, ldb, <double*>po, ldo, n, k, num_threads))
    if rc != 0:
        raise ValueError(f"the kernel refused sizes ({n}, {k})")
    return 0


def run(str op, cnp.ndarray a, b, cnp.ndarray out, int num_threads, bint fresh=False):
    """out <- op(a[, b]) row by row. num_threads <= 0: OpenMP's default.
    fresh: `out` was just allocated (see OP_NO_STREAM)."""
    cdef int code = OPS.index(op)
    cdef cnp.ndarray bb = a if b is None else b
    # The Jacobian output is C-contiguous (N, K, K); a row output may be strided.
    cdef Py_ssize_t k = cnp.PyArray_DIM(a, 1)
    cdef Py_ssize_t ldo = k * k if code == OP_SOFTMAX_JACOBIAN else _ld(out)
    if fresh:
        code |= OP_NO_STREAM
    launch(code, a, _ld(a), bb, _ld(bb), out, ldo, cnp.PyArray_DIM(a, 0), k, num_threads)
