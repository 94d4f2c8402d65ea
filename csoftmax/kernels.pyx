# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The public Cython API: flat nogil functions over C-contiguous buffers.

Each function checks its arguments (see kernels.pxd for the contract) and
runs the same engine (_engine.pyx) as the Python functions.
"""
from libc.stdint cimport uintptr_t

from csoftmax._engine cimport (OP_LOG_SOFTMAX, OP_LOG_SOFTMAX_BACKWARD, OP_SOFTMAX,
                               OP_SOFTMAX_BACKWARD, OP_SOFTMAX_JACOBIAN, run_f32, run_f64)

# The Python-level introspection lives in the engine; these names stay here
# for code written against earlier releases.
from csoftmax._engine import isa, max_threads, openmp_enabled, select_isa, supported_isas

ctypedef fused real_t:
    float
    double

cdef extern from *:
    """
    #define CSM_PY_SSIZE_MAX ((Py_ssize_t)(((size_t)-1) >> 1))
    """
    Py_ssize_t CSM_PY_SSIZE_MAX


cdef inline Py_ssize_t _elems(Py_ssize_t n, Py_ssize_t k, Py_ssize_t per_row) noexcept nogil:
    # n * k * per_row elements, or -1 when negative or when the bytes of the
    # buffer (16 per element at most) would overflow Py_ssize_t.
    cdef Py_ssize_t big = CSM_PY_SSIZE_MAX // 16
    if n < 0 or k < 0 or per_row < 0:
        return -1
    if n == 0 or k == 0 or per_row == 0:
        return 0
    if k > big // per_row:
        return -1
    if n > big // (k * per_row):
        return -1
    return n * k * per_row


cdef inline bint _overlap(const void* p, Py_ssize_t np_, const void* q, Py_ssize_t nq) noexcept nogil:
    # Byte ranges [p, p + np_) and [q, q + nq) share a byte.
    cdef uintptr_t a = <uintptr_t>p, b = <uintptr_t>q
    return a < b + <uintptr_t>nq and b < a + <uintptr_t>np_


cdef inline int _rows(int op, const real_t* a, const real_t* b, real_t* out,
                      Py_ssize_t n, Py_ssize_t k, int num_threads) noexcept nogil:
    cdef Py_ssize_t size = _elems(n, k, 1)
    cdef Py_ssize_t nbytes = size * <Py_ssize_t>sizeof(real_t)
    if size < 0:
        return -1
    if size == 0:
        return 0
    if a == NULL or out == NULL or (op >= OP_SOFTMAX_BACKWARD and b == NULL):
        return -1
    # In place (the very same buffer) or disjoint; nothing in between.
    if <const void*>out != <const void*>a and _overlap(out, nbytes, a, nbytes):
        return -1
    if b != NULL and <const void*>out != <const void*>b and _overlap(out, nbytes, b, nbytes):
        return -1
    if real_t is float:
        return run_f32(op, a, k, 1, b, k, 1, out, k, 1, n, k, num_threads, 0)
    else:
        return run_f64(op, a, k, 1, b, k, 1, out, k, 1, n, k, num_threads, 0)


cdef inline int _jacobian(const real_t* x, real_t* jac, Py_ssize_t n, Py_ssize_t k,
                          int num_threads) noexcept nogil:
    cdef Py_ssize_t size = _elems(n, k, k)
    if size < 0:
        return -1
    if size == 0:
        return 0
    if x == NULL or jac == NULL:
        return -1
    # The Jacobian is written over the whole output before the input is read
    # to the end: an output that shares a byte with its input is refused.
    if _overlap(jac, size * <Py_ssize_t>sizeof(real_t), x, n * k * <Py_ssize_t>sizeof(real_t)):
        return -1
    if real_t is float:
        return run_f32(OP_SOFTMAX_JACOBIAN, x, k, 1, NULL, 0, 0, jac, k * k, 1, n, k, num_threads, 0)
    else:
        return run_f64(OP_SOFTMAX_JACOBIAN, x, k, 1, NULL, 0, 0, jac, k * k, 1, n, k, num_threads, 0)


cdef int softmax_f32(const float* x, float* y, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil:
    return _rows(OP_SOFTMAX, x, <const float*>NULL, y, n_rows, n_cols, num_threads)

cdef int softmax_f64(const double* x, double* y, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil:
    return _rows(OP_SOFTMAX, x, <const double*>NULL, y, n_rows, n_cols, num_threads)

cdef int log_softmax_f32(const float* x, float* y, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil:
    return _rows(OP_LOG_SOFTMAX, x, <const float*>NULL, y, n_rows, n_cols, num_threads)

cdef int log_softmax_f64(const double* x, double* y, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil:
    return _rows(OP_LOG_SOFTMAX, x, <const double*>NULL, y, n_rows, n_cols, num_threads)

cdef int softmax_backward_f32(const float* y, const float* grad, float* out, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil:
    return _rows(OP_SOFTMAX_BACKWARD, y, grad, out, n_rows, n_cols, num_threads)

cdef int softmax_backward_f64(const double* y, const double* grad, double* out, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil:
    return _rows(OP_SOFTMAX_BACKWARD, y, grad, out, n_rows, n_cols, num_threads)

cdef int log_softmax_backward_f32(const float* y, const float* grad, float* out, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil:
    return _rows(OP_LOG_SOFTMAX_BACKWARD, y, grad, out, n_rows, n_cols, num_threads)

cdef int log_softmax_backward_f64(const double* y, const double* grad, double* out, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil:
    return _rows(OP_LOG_SOFTMAX_BACKWARD, y, grad, out, n_rows, n_cols, num_threads)

cdef int softmax_jacobian_f32(const float* x, float* jac, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil:
    return _jacobian(x, jac, n_rows, n_cols, num_threads)

cdef int softmax_jacobian_f64(const double* x, double* jac, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil:
    return _jacobian(x, jac, n_rows, n_cols, num_threads)
