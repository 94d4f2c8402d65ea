# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The public Cython API: flat nogil functions over C-contiguous buffers.

Each function checks its arguments (see kernels.pxd for the contract) and
runs the same engine (_engine.pyx) as the Python functions.
"""
from libc.stdint cimport int64_t, uintptr_t
from libc.stdlib cimport free, malloc

from csoftmax._engine cimport csm_xent_args
from csoftmax._loss cimport XENT_BAD_LABEL, XENT_OK, xent_core

from csoftmax._engine cimport (OP_LOG_SOFTMAX, OP_LOG_SOFTMAX_BACKWARD, OP_LOGSUMEXP,
                               OP_SOFTMAX, OP_SOFTMAX_BACKWARD, OP_SOFTMAX_JACOBIAN,
                               run_f32, run_f64, run_masked_f32, run_masked_f64)

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


cdef inline Py_ssize_t _span(Py_ssize_t n, Py_ssize_t k, Py_ssize_t rs, Py_ssize_t cs) noexcept nogil:
    # Elements between an operand's lowest and highest element, plus one;
    # -1 when that overflows (no caller can have such a buffer).
    cdef Py_ssize_t big = CSM_PY_SSIZE_MAX // 16
    cdef Py_ssize_t ar = -rs if rs < 0 else rs, ac = -cs if cs < 0 else cs
    if ar > big or ac > big or (n > 1 and ar > big // (n - 1)) or (k > 1 and ac > big // (k - 1)):
        return -1
    if ar * (n - 1) > big - ac * (k - 1):
        return -1
    return ar * (n - 1) + ac * (k - 1) + 1


cdef inline const char* _low(const void* p, Py_ssize_t n, Py_ssize_t k, Py_ssize_t rs,
                             Py_ssize_t cs, Py_ssize_t item) noexcept nogil:
    # The lowest byte of an operand.
    cdef const char* c = <const char*>p
    if rs < 0:
        c += rs * (n - 1) * item
    if cs < 0:
        c += cs * (k - 1) * item
    return c


cdef inline bint _apart_or_same(const void* o, Py_ssize_t ors, Py_ssize_t ocs,
                                const void* a, Py_ssize_t ars, Py_ssize_t acs,
                                Py_ssize_t n, Py_ssize_t k, Py_ssize_t item) noexcept nogil:
    # The output is this input (same start and strides) or shares no byte
    # with its extent.
    if o == a and (n == 1 or ors == ars) and (k == 1 or ocs == acs):
        return True
    return not _overlap(_low(o, n, k, ors, ocs, item), _span(n, k, ors, ocs) * item,
                        _low(a, n, k, ars, acs, item), _span(n, k, ars, acs) * item)


cdef inline int _strided(int op, const real_t* a, Py_ssize_t ars, Py_ssize_t acs,
                         const real_t* b, Py_ssize_t brs, Py_ssize_t bcs,
                         real_t* out, Py_ssize_t ors, Py_ssize_t ocs,
                         Py_ssize_t n, Py_ssize_t k, int num_threads) noexcept nogil:
    cdef Py_ssize_t item = sizeof(real_t)
    cdef bint binary = op == OP_SOFTMAX_BACKWARD or op == OP_LOG_SOFTMAX_BACKWARD
    if _elems(n, k, 1) < 0:
        return -1
    if n == 0 or k == 0:
        return 0
    if a == NULL or out == NULL or (binary and b == NULL):
        return -1
    if (_span(n, k, ars, acs) < 0 or _span(n, k, ors, ocs) < 0
            or (binary and _span(n, k, brs, bcs) < 0)):
        return -1
    if not _apart_or_same(out, ors, ocs, a, ars, acs, n, k, item):
        return -1
    if binary and not _apart_or_same(out, ors, ocs, b, brs, bcs, n, k, item):
        return -1
    if not binary:
        b, brs, bcs = a, ars, acs
    if real_t is float:
        return run_f32(op, a, ars, acs, b, brs, bcs, out, ors, ocs, n, k, num_threads, 0)
    else:
        return run_f64(op, a, ars, acs, b, brs, bcs, out, ors, ocs, n, k, num_threads, 0)


cdef int softmax_strided_f32(const float* x, Py_ssize_t x_rs, Py_ssize_t x_cs, float* y, Py_ssize_t y_rs, Py_ssize_t y_cs, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil:
    return _strided(OP_SOFTMAX, x, x_rs, x_cs, <const float*>NULL, 0, 0, y, y_rs, y_cs, n_rows, n_cols, num_threads)

cdef int softmax_strided_f64(const double* x, Py_ssize_t x_rs, Py_ssize_t x_cs, double* y, Py_ssize_t y_rs, Py_ssize_t y_cs, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil:
    return _strided(OP_SOFTMAX, x, x_rs, x_cs, <const double*>NULL, 0, 0, y, y_rs, y_cs, n_rows, n_cols, num_threads)

cdef int log_softmax_strided_f32(const float* x, Py_ssize_t x_rs, Py_ssize_t x_cs, float* y, Py_ssize_t y_rs, Py_ssize_t y_cs, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil:
    return _strided(OP_LOG_SOFTMAX, x, x_rs, x_cs, <const float*>NULL, 0, 0, y, y_rs, y_cs, n_rows, n_cols, num_threads)

cdef int log_softmax_strided_f64(const double* x, Py_ssize_t x_rs, Py_ssize_t x_cs, double* y, Py_ssize_t y_rs, Py_ssize_t y_cs, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil:
    return _strided(OP_LOG_SOFTMAX, x, x_rs, x_cs, <const double*>NULL, 0, 0, y, y_rs, y_cs, n_rows, n_cols, num_threads)

cdef int softmax_backward_strided_f32(const float* y, Py_ssize_t y_rs, Py_ssize_t y_cs, const float* grad, Py_ssize_t g_rs, Py_ssize_t g_cs, float* out, Py_ssize_t o_rs, Py_ssize_t o_cs, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil:
    return _strided(OP_SOFTMAX_BACKWARD, y, y_rs, y_cs, grad, g_rs, g_cs, out, o_rs, o_cs, n_rows, n_cols, num_threads)

cdef int softmax_backward_strided_f64(const double* y, Py_ssize_t y_rs, Py_ssize_t y_cs, const double* grad, Py_ssize_t g_rs, Py_ssize_t g_cs, double* out, Py_ssize_t o_rs, Py_ssize_t o_cs, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil:
    return _strided(OP_SOFTMAX_BACKWARD, y, y_rs, y_cs, grad, g_rs, g_cs, out, o_rs, o_cs, n_rows, n_cols, num_threads)

cdef int log_softmax_backward_strided_f32(const float* y, Py_ssize_t y_rs, Py_ssize_t y_cs, const float* grad, Py_ssize_t g_rs, Py_ssize_t g_cs, float* out, Py_ssize_t o_rs, Py_ssize_t o_cs, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil:
    return _strided(OP_LOG_SOFTMAX_BACKWARD, y, y_rs, y_cs, grad, g_rs, g_cs, out, o_rs, o_cs, n_rows, n_cols, num_threads)

cdef int log_softmax_backward_strided_f64(const double* y, Py_ssize_t y_rs, Py_ssize_t y_cs, const double* grad, Py_ssize_t g_rs, Py_ssize_t g_cs, double* out, Py_ssize_t o_rs, Py_ssize_t o_cs, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil:
    return _strided(OP_LOG_SOFTMAX_BACKWARD, y, y_rs, y_cs, grad, g_rs, g_cs, out, o_rs, o_cs, n_rows, n_cols, num_threads)


# ---- masks and logsumexp ------------------------------------------------------

cdef inline int _masked(int op, const real_t* a, const real_t* b, const unsigned char* m,
                        real_t* out, Py_ssize_t n, Py_ssize_t k, int num_threads) noexcept nogil:
    # m may be NULL only for logsumexp (the unmasked door).
    cdef Py_ssize_t size = _elems(n, k, 1)
    cdef Py_ssize_t out_elems, ors = k
    cdef bint binary = op == OP_SOFTMAX_BACKWARD or op == OP_LOG_SOFTMAX_BACKWARD
    cdef Py_ssize_t nbytes = size * <Py_ssize_t>sizeof(real_t)
    if size < 0 or (op == OP_SOFTMAX_JACOBIAN and _elems(n, k, k) < 0):
        return -1
    if size == 0:
        return 0
    if a == NULL or out == NULL or (binary and b == NULL) or (m == NULL and op != OP_LOGSUMEXP):
        return -1
    if op == OP_LOGSUMEXP:
        out_elems, ors = n, 1
    elif op == OP_SOFTMAX_JACOBIAN:
        out_elems, ors = n * k * k, k * k
    else:
        out_elems = size
    cdef Py_ssize_t obytes = out_elems * <Py_ssize_t>sizeof(real_t)
    if m != NULL and _overlap(out, obytes, m, size):
        return -1
    if op == OP_LOGSUMEXP or op == OP_SOFTMAX_JACOBIAN:
        # Written before the input is read to the end: no overlap at all.
        if _overlap(out, obytes, a, nbytes):
            return -1
    else:
        if <const void*>out != <const void*>a and _overlap(out, nbytes, a, nbytes):
            return -1
        if binary and <const void*>out != <const void*>b and _overlap(out, nbytes, b, nbytes):
            return -1
    if not binary:
        b = a
    if real_t is float:
        return run_masked_f32(op, a, k, 1, b, k, 1, m, k, 1, out, ors, 1, n, k, num_threads, 0)
    else:
        return run_masked_f64(op, a, k, 1, b, k, 1, m, k, 1, out, ors, 1, n, k, num_threads, 0)


cdef int softmax_masked_f32(const float* x, const unsigned char* mask, float* y, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil:
    return _masked(OP_SOFTMAX, x, <const float*>NULL, mask, y, n_rows, n_cols, num_threads)

cdef int softmax_masked_f64(const double* x, const unsigned char* mask, double* y, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil:
    return _masked(OP_SOFTMAX, x, <const double*>NULL, mask, y, n_rows, n_cols, num_threads)

cdef int log_softmax_masked_f32(const float* x, const unsigned char* mask, float* y, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil:
    return _masked(OP_LOG_SOFTMAX, x, <const float*>NULL, mask, y, n_rows, n_cols, num_threads)

cdef int log_softmax_masked_f64(const double* x, const unsigned char* mask, double* y, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil:
    return _masked(OP_LOG_SOFTMAX, x, <const double*>NULL, mask, y, n_rows, n_cols, num_threads)

cdef int softmax_backward_masked_f32(const float* y, const float* grad, const unsigned char* mask, float* out, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil:
    return _masked(OP_SOFTMAX_BACKWARD, y, grad, mask, out, n_rows, n_cols, num_threads)

cdef int softmax_backward_masked_f64(const double* y, const double* grad, const unsigned char* mask, double* out, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil:
    return _masked(OP_SOFTMAX_BACKWARD, y, grad, mask, out, n_rows, n_cols, num_threads)

cdef int log_softmax_backward_masked_f32(const float* y, const float* grad, const unsigned char* mask, float* out, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil:
    return _masked(OP_LOG_SOFTMAX_BACKWARD, y, grad, mask, out, n_rows, n_cols, num_threads)

cdef int log_softmax_backward_masked_f64(const double* y, const double* grad, const unsigned char* mask, double* out, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil:
    return _masked(OP_LOG_SOFTMAX_BACKWARD, y, grad, mask, out, n_rows, n_cols, num_threads)

cdef int softmax_jacobian_masked_f32(const float* x, const unsigned char* mask, float* jac, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil:
    return _masked(OP_SOFTMAX_JACOBIAN, x, <const float*>NULL, mask, jac, n_rows, n_cols, num_threads)

cdef int softmax_jacobian_masked_f64(const double* x, const unsigned char* mask, double* jac, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil:
    return _masked(OP_SOFTMAX_JACOBIAN, x, <const double*>NULL, mask, jac, n_rows, n_cols, num_threads)

cdef int logsumexp_f32(const float* x, float* out, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil:
    return _masked(OP_LOGSUMEXP, x, <const float*>NULL, NULL, out, n_rows, n_cols, num_threads)

cdef int logsumexp_f64(const double* x, double* out, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil:
    return _masked(OP_LOGSUMEXP, x, <const double*>NULL, NULL, out, n_rows, n_cols, num_threads)

cdef int logsumexp_masked_f32(const float* x, const unsigned char* mask, float* out, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil:
    if mask == NULL and _elems(n_rows, n_cols, 1) > 0:
        return -1
    return _masked(OP_LOGSUMEXP, x, <const float*>NULL, mask, out, n_rows, n_cols, num_threads)

cdef int logsumexp_masked_f64(const double* x, const unsigned char* mask, double* out, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil:
    if mask == NULL and _elems(n_rows, n_cols, 1) > 0:
        return -1
    return _masked(OP_LOGSUMEXP, x, <const double*>NULL, mask, out, n_rows, n_cols, num_threads)

# ---- the fused softmax cross-entropy ----------------------------------------------

cdef inline int _xent(const real_t* x, const int64_t* labels, const real_t* target,
                      const real_t* weight, double eps, int64_t ignore_index, int use_ignore,
                      int reduction, real_t* loss, real_t* grad, Py_ssize_t n, Py_ssize_t k,
                      int num_threads) noexcept nogil:
    cdef Py_ssize_t size = _elems(n, k, 1), item = sizeof(real_t), j, r, bad = -1
    cdef Py_ssize_t nloss = n if reduction == REDUCTION_NONE else 1
    cdef csm_xent_args a
    cdef double result = 0.0
    cdef double* rows
    cdef int rc
    if size < 0 or reduction < REDUCTION_NONE or reduction > REDUCTION_SUM:
        return -1
    if not (0.0 <= eps <= 1.0):
        return -1
    if loss == NULL and nloss > 0:
        return -1
    if size > 0 and x == NULL:
        return -1
    if n > 0 and labels == NULL and target == NULL:
        return -1
    if size > 0 and grad != NULL and (_overlap(grad, size * item, x, size * item)
                                      or (target != NULL and _overlap(grad, size * item, target, size * item))
                                      or (weight != NULL and _overlap(grad, size * item, weight, k * item))
                                      or (labels != NULL and _overlap(grad, size * item, labels, n * 8))
                                      or _overlap(grad, size * item, loss, nloss * item)):
        return -1
    if nloss > 0 and ((size > 0 and _overlap(loss, nloss * item, x, size * item))
                      or (target != NULL and _overlap(loss, nloss * item, target, size * item))
                      or (weight != NULL and _overlap(loss, nloss * item, weight, k * item))
                      or (labels != NULL and _overlap(loss, nloss * item, labels, n * 8))):
        return -1
    if weight != NULL:
        for j in range(k):
            if not (weight[j] >= 0):
                return -1
    rows = <double*>malloc((n if n > 0 else 1) * sizeof(double))
    if rows == NULL:
        return -3
    a.x = x
    a.ldx = k
    a.K = k
    a.labels = labels if target == NULL else NULL
    a.label_bytes = 8
    a.has_ignore = use_ignore != 0
    a.ignore_index = ignore_index
    a.target = target
    a.ldt = k
    a.weight = weight
    a.mask = NULL
    a.ldm = 0
    a.eps = eps
    a.grad = grad
    a.ldg = k
    a.loss = rows
    rc = xent_core(real_t is float, &a, n, reduction, &result, &bad, num_threads)
    if rc == XENT_OK:
        if reduction == REDUCTION_NONE:
            for r in range(n):
                loss[r] = <real_t>rows[r]
        else:
            loss[0] = <real_t>result
    free(rows)
    if rc == XENT_BAD_LABEL:
        return -2
    return 0 if rc == XENT_OK else -1


cdef int softmax_cross_entropy_f32(const float* logits, const int64_t* labels, const float* weight, double label_smoothing, int64_t ignore_index, int use_ignore_index, int reduction, float* loss, float* grad, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil:
    return _xent(logits, labels, <const float*>NULL, weight, label_smoothing, ignore_index, use_ignore_index, reduction, loss, grad, n_rows, n_cols, num_threads)

cdef int softmax_cross_entropy_f64(const double* logits, const int64_t* labels, const double* weight, double label_smoothing, int64_t ignore_index, int use_ignore_index, int reduction, double* loss, double* grad, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil:
    return _xent(logits, labels, <const double*>NULL, weight, label_smoothing, ignore_index, use_ignore_index, reduction, loss, grad, n_rows, n_cols, num_threads)

cdef int softmax_cross_entropy_soft_f32(const float* logits, const float* target, const float* weight, double label_smoothing, int reduction, float* loss, float* grad, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil:
    return _xent(logits, NULL, target, weight, label_smoothing, 0, 0, reduction, loss, grad, n_rows, n_cols, num_threads)

cdef int softmax_cross_entropy_soft_f64(const double* logits, const double* target, const double* weight, double label_smoothing, int reduction, double* loss, double* grad, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil:
    return _xent(logits, NULL, target, weight, label_smoothing, 0, 0, reduction, loss, grad, n_rows, n_cols, num_threads)
