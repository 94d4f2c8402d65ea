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
on success and -1, writing nothing, for: a negative size; a size whose bytes
overflow Py_ssize_t (n_rows * n_cols, or n_rows * n_cols * n_cols for the
Jacobian); a NULL pointer where the size is not zero; an output that
overlaps an input other than by being the very same buffer; and a Jacobian
output that overlaps its input at all. Zero rows or columns return 0 and
write nothing.

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

# Strided rows: element (r, j) of an operand at base + r * *_rs + j * *_cs,
# strides in elements and of any sign (a Fortran-ordered (n_rows, n_cols)
# array has rs = 1, cs = n_rows; a transposed view swaps them). Same checks
# and return codes as above; an output may be an input with the same start
# and strides (in place), and must not share a byte with it otherwise.
cdef int softmax_strided_f32(const float* x, Py_ssize_t x_rs, Py_ssize_t x_cs, float* y, Py_ssize_t y_rs, Py_ssize_t y_cs, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil
cdef int softmax_strided_f64(const double* x, Py_ssize_t x_rs, Py_ssize_t x_cs, double* y, Py_ssize_t y_rs, Py_ssize_t y_cs, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil
cdef int log_softmax_strided_f32(const float* x, Py_ssize_t x_rs, Py_ssize_t x_cs, float* y, Py_ssize_t y_rs, Py_ssize_t y_cs, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil
cdef int log_softmax_strided_f64(const double* x, Py_ssize_t x_rs, Py_ssize_t x_cs, double* y, Py_ssize_t y_rs, Py_ssize_t y_cs, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil
cdef int softmax_backward_strided_f32(const float* y, Py_ssize_t y_rs, Py_ssize_t y_cs, const float* grad, Py_ssize_t g_rs, Py_ssize_t g_cs, float* out, Py_ssize_t o_rs, Py_ssize_t o_cs, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil
cdef int softmax_backward_strided_f64(const double* y, Py_ssize_t y_rs, Py_ssize_t y_cs, const double* grad, Py_ssize_t g_rs, Py_ssize_t g_cs, double* out, Py_ssize_t o_rs, Py_ssize_t o_cs, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil
cdef int log_softmax_backward_strided_f32(const float* y, Py_ssize_t y_rs, Py_ssize_t y_cs, const float* grad, Py_ssize_t g_rs, Py_ssize_t g_cs, float* out, Py_ssize_t o_rs, Py_ssize_t o_cs, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil
cdef int log_softmax_backward_strided_f64(const double* y, Py_ssize_t y_rs, Py_ssize_t y_cs, const double* grad, Py_ssize_t g_rs, Py_ssize_t g_cs, double* out, Py_ssize_t o_rs, Py_ssize_t o_cs, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil

# Masks (where=) and logsumexp. mask is a C-contiguous (n_rows, n_cols) array
# of bytes: nonzero = the element takes part, 0 = masked. Semantics as the
# Python API's where=: masked elements take no part in the max or the sums and
# come out as 0 (softmax, the backward passes, the Jacobian's rows and
# columns) or -inf (log_softmax); a row with nothing unmasked gives zeros
# (-inf for log_softmax and logsumexp), never NaN. logsumexp writes one value
# per row into out[n_rows]: scipy.special.logsumexp's values (NaN -> NaN,
# else +inf -> +inf, only -inf -> -inf). Same checks and return codes as
# above; an output must not share a byte with the mask either.
cdef int softmax_masked_f32(const float* x, const unsigned char* mask, float* y, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil
cdef int softmax_masked_f64(const double* x, const unsigned char* mask, double* y, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil
cdef int log_softmax_masked_f32(const float* x, const unsigned char* mask, float* y, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil
cdef int log_softmax_masked_f64(const double* x, const unsigned char* mask, double* y, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil
cdef int softmax_backward_masked_f32(const float* y, const float* grad, const unsigned char* mask, float* out, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil
cdef int softmax_backward_masked_f64(const double* y, const double* grad, const unsigned char* mask, double* out, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil
cdef int log_softmax_backward_masked_f32(const float* y, const float* grad, const unsigned char* mask, float* out, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil
cdef int log_softmax_backward_masked_f64(const double* y, const double* grad, const unsigned char* mask, double* out, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil
cdef int softmax_jacobian_masked_f32(const float* x, const unsigned char* mask, float* jac, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil
cdef int softmax_jacobian_masked_f64(const double* x, const unsigned char* mask, double* jac, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil
cdef int logsumexp_f32(const float* x, float* out, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil
cdef int logsumexp_f64(const double* x, double* out, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil
cdef int logsumexp_masked_f32(const float* x, const unsigned char* mask, float* out, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil
cdef int logsumexp_masked_f64(const double* x, const unsigned char* mask, double* out, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil

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

cdef inline int softmax_masked(const real* x, const unsigned char* mask, real* y, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil:
    if real is float:
        return softmax_masked_f32(x, mask, y, n_rows, n_cols, num_threads)
    else:
        return softmax_masked_f64(x, mask, y, n_rows, n_cols, num_threads)

cdef inline int log_softmax_masked(const real* x, const unsigned char* mask, real* y, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil:
    if real is float:
        return log_softmax_masked_f32(x, mask, y, n_rows, n_cols, num_threads)
    else:
        return log_softmax_masked_f64(x, mask, y, n_rows, n_cols, num_threads)

cdef inline int logsumexp(const real* x, real* out, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil:
    if real is float:
        return logsumexp_f32(x, out, n_rows, n_cols, num_threads)
    else:
        return logsumexp_f64(x, out, n_rows, n_cols, num_threads)
# ---- the fused softmax cross-entropy (csoftmax.softmax_cross_entropy) --------
#
# logits: C-contiguous (n_rows, n_cols). labels: n_rows int64 class labels;
# a label equal to ignore_index counts for nothing when use_ignore_index is
# nonzero. target (the soft variant): C-contiguous (n_rows, n_cols) class
# probabilities. weight: n_cols non-negative class weights, or NULL.
# label_smoothing in [0, 1]. reduction: REDUCTION_NONE (loss: n_rows
# values), REDUCTION_MEAN or REDUCTION_SUM (loss: one value), with torch's
# divisor for the mean. grad: NULL, or (n_rows, n_cols) for dL/dlogits with
# the reduction applied, written by the same pass. The semantics are those of
# the Python function; the results are its bits.
#
# Returns 0; -1, writing nothing, for a negative or overflowing size, a NULL
# pointer where data is needed, an unknown reduction, label_smoothing outside
# [0, 1], a negative or NaN weight, or outputs (loss, grad) that overlap each
# other or an input; -2, writing nothing, for a label outside [0, n_cols)
# that is not ignored; -3 when the per-row scratch cannot be allocated.
# num_threads == 1 starts no thread: safe inside the caller's own prange.
from libc.stdint cimport int64_t

cdef enum:
    REDUCTION_NONE = 0
    REDUCTION_MEAN = 1
    REDUCTION_SUM = 2

cdef int softmax_cross_entropy_f32(const float* logits, const int64_t* labels, const float* weight, double label_smoothing, int64_t ignore_index, int use_ignore_index, int reduction, float* loss, float* grad, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil
cdef int softmax_cross_entropy_f64(const double* logits, const int64_t* labels, const double* weight, double label_smoothing, int64_t ignore_index, int use_ignore_index, int reduction, double* loss, double* grad, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil
cdef int softmax_cross_entropy_soft_f32(const float* logits, const float* target, const float* weight, double label_smoothing, int reduction, float* loss, float* grad, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil
cdef int softmax_cross_entropy_soft_f64(const double* logits, const double* target, const double* weight, double label_smoothing, int reduction, double* loss, double* grad, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil
