# cython: language_level=3
"""The public Cython API of csoftmax: nogil softmax kernels over C buffers.

    from csoftmax.kernels cimport softmax_f32

Flat C signatures in the style of scipy.linalg.cython_blas: pointers and sizes,
a type suffix in each name, no numpy. The buffers are C-contiguous row-major
(n_rows, n_cols) arrays; the Jacobian output is (n_rows, n_cols, n_cols).
An output may be the same buffer as an input (in place), but must not overlap
it otherwise.

num_threads <= 0 uses the OpenMP default; num_threads == 1 never starts a
thread, so it is safe inside the caller's own prange. Each function returns 0
on success and -1 for invalid sizes (negative, or a Jacobian whose size
overflows Py_ssize_t); nothing is written then.

These are the kernels the Python API runs: one implementation, two doors.
"""

cdef int softmax_f32(const float* x, float* y, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil
cdef int softmax_f64(const double* x, double* y, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil
cdef int log_softmax_f32(const float* x, float* y, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil
cdef int log_softmax_f64(const double* x, double* y, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil
cdef int softmax_backward_f32(const float* y, const float* grad, float* out, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil
cdef int softmax_backward_f64(const double* y, const double* grad, double* out, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil
cdef int log_softmax_backward_f32(const float* y, const float* grad, float* out, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil
cdef int log_softmax_backward_f64(const double* y, const double* grad, double* out, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil
cdef int softmax_jacobian_f32(const float* x, float* jac, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil
cdef int softmax_jacobian_f64(const double* x, double* jac, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil

# The strided form behind all of the above: row r of an operand starts at
# base + r * ld (ld in elements; ldo = n_cols * n_cols for the Jacobian).
# b is the second operand of the backward ops (grad) and ignored otherwise.
cdef enum:
    OP_SOFTMAX = 0
    OP_LOG_SOFTMAX = 1
    OP_SOFTMAX_BACKWARD = 2
    OP_LOG_SOFTMAX_BACKWARD = 3
    OP_SOFTMAX_JACOBIAN = 4
    OP_EXP = 5          # y = exp(x), the kernels' vectorised exp (for tests)
    OP_LOG = 6          # y = log(x), the kernels' vectorised log (for tests)
    # Or'ed into op: the output was just allocated. Large outputs are
    # otherwise written with streaming stores (no read-for-ownership), which
    # win on reused buffers; on fresh pages, which the OS has just zeroed
    # into cache, regular stores measured as fast or faster.
    OP_NO_STREAM = 16

cdef int rows_f32(int op, const float* a, Py_ssize_t lda, const float* b, Py_ssize_t ldb,
                  float* out, Py_ssize_t ldo, Py_ssize_t n_rows, Py_ssize_t n_cols,
                  int num_threads) noexcept nogil
cdef int rows_f64(int op, const double* a, Py_ssize_t lda, const double* b, Py_ssize_t ldb,
                  double* out, Py_ssize_t ldo, Py_ssize_t n_rows, Py_ssize_t n_cols,
                  int num_threads) noexcept nogil

# A fused-type door for generic Cython code: softmax[real](...), etc.
ctypedef fused real:
    float
    double

cdef inline int softmax(const real* x, real* y, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil:
    if real is float:
        return softmax_f32(x, y, n_rows, n_cols, num_threads)
    else:
        return softmax_f64(x, y, n_rows, n_cols, num_threads)

cdef inline int log_softmax(const real* x, real* y, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil:
    if real is float:
        return log_softmax_f32(x, y, n_rows, n_cols, num_threads)
    else:
        return log_softmax_f64(x, y, n_rows, n_cols, num_threads)

cdef inline int softmax_backward(const real* y, const real* grad, real* out, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil:
    if real is float:
        return softmax_backward_f32(y, grad, out, n_rows, n_cols, num_threads)
    else:
        return softmax_backward_f64(y, grad, out, n_rows, n_cols, num_threads)

cdef inline int log_softmax_backward(const real* y, const real* grad, real* out, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil:
    if real is float:
        return log_softmax_backward_f32(y, grad, out, n_rows, n_cols, num_threads)
    else:
        return log_softmax_backward_f64(y, grad, out, n_rows, n_cols, num_threads)

cdef inline int softmax_jacobian(const real* x, real* jac, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil:
    if real is float:
        return softmax_jacobian_f32(x, jac, n_rows, n_cols, num_threads)
    else:
        return softmax_jacobian_f64(x, jac, n_rows, n_cols, num_threads)
