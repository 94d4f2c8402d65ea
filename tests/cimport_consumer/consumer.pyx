# cython: language_level=3, boundscheck=False, wraparound=False
"""A downstream extension of csoftmax, as a user writes one.

It cimports every function of the public Cython API (csoftmax/kernels.pxd) and
calls it from inside a nogil prange of its own, with num_threads=1 so that the
kernel starts no threads of its own. tests/test_cimport.py builds this file
against the installed csoftmax and compares the results with the Python API.
"""
from cython.parallel cimport prange, threadid

from csoftmax.kernels cimport (
    log_softmax_backward_f32, log_softmax_backward_f64,
    log_softmax_f32, log_softmax_f64,
    softmax_backward_f32, softmax_backward_f64,
    softmax_f32, softmax_f64,
    softmax_jacobian_f32, softmax_jacobian_f64,
    softmax_strided_f32, softmax_strided_f64,
    log_softmax_strided_f32, log_softmax_strided_f64,
    softmax_backward_strided_f32, softmax_backward_strided_f64,
    log_softmax_backward_strided_f32, log_softmax_backward_strided_f64,
    softmax_masked_f32, softmax_masked_f64,
    log_softmax_masked_f32, log_softmax_masked_f64,
    softmax_backward_masked_f32, softmax_backward_masked_f64,
    log_softmax_backward_masked_f32, log_softmax_backward_masked_f64,
    softmax_jacobian_masked_f32, softmax_jacobian_masked_f64,
    logsumexp_f32, logsumexp_f64, logsumexp_masked_f32, logsumexp_masked_f64,
    softmax_cross_entropy_f32, softmax_cross_entropy_f64,
    softmax_cross_entropy_soft_f32, softmax_cross_entropy_soft_f64,
    REDUCTION_NONE, REDUCTION_MEAN, REDUCTION_SUM,
)
from libc.stdint cimport int64_t
# The fused convenience layer: one generic name for float and double.
from csoftmax.kernels cimport real
from csoftmax.kernels cimport softmax as softmax_real
from csoftmax.kernels cimport log_softmax as log_softmax_real
from csoftmax.kernels cimport softmax_backward as softmax_backward_real
from csoftmax.kernels cimport log_softmax_backward as log_softmax_backward_real
from csoftmax.kernels cimport softmax_jacobian as softmax_jacobian_real
from csoftmax.kernels cimport softmax_masked as softmax_masked_real
from csoftmax.kernels cimport log_softmax_masked as log_softmax_masked_real
from csoftmax.kernels cimport logsumexp as logsumexp_real

cdef extern from *:
    """
    #ifdef _OPENMP
    #define CONSUMER_OPENMP 1
    #else
    #define CONSUMER_OPENMP 0
    #endif
    """
    int CONSUMER_OPENMP

# Whether this module was compiled with OpenMP, i.e. whether prange below
# really runs on several threads (without OpenMP it runs serially).
OPENMP = bool(CONSUMER_OPENMP)

OPS = ("softmax", "log_softmax", "softmax_backward", "log_softmax_backward",
       "softmax_jacobian")


cdef int _call_f32(int op, const float* a, const float* b, float* out,
                   Py_ssize_t n, Py_ssize_t k, int nt) noexcept nogil:
    if op == 0:
        return softmax_f32(a, out, n, k, nt)
    if op == 1:
        return log_softmax_f32(a, out, n, k, nt)
    if op == 2:
        return softmax_backward_f32(a, b, out, n, k, nt)
    if op == 3:
        return log_softmax_backward_f32(a, b, out, n, k, nt)
    return softmax_jacobian_f32(a, out, n, k, nt)


cdef int _call_f64(int op, const double* a, const double* b, double* out,
                   Py_ssize_t n, Py_ssize_t k, int nt) noexcept nogil:
    if op == 0:
        return softmax_f64(a, out, n, k, nt)
    if op == 1:
        return log_softmax_f64(a, out, n, k, nt)
    if op == 2:
        return softmax_backward_f64(a, b, out, n, k, nt)
    if op == 3:
        return log_softmax_backward_f64(a, b, out, n, k, nt)
    return softmax_jacobian_f64(a, out, n, k, nt)


cdef int _call_real(int op, const real* a, const real* b, real* out,
                    Py_ssize_t n, Py_ssize_t k, int nt) noexcept nogil:
    if op == 0:
        return softmax_real(a, out, n, k, nt)
    if op == 1:
        return log_softmax_real(a, out, n, k, nt)
    if op == 2:
        return softmax_backward_real(a, b, out, n, k, nt)
    if op == 3:
        return log_softmax_backward_real(a, b, out, n, k, nt)
    return softmax_jacobian_real(a, out, n, k, nt)


def run_f32(str op, const float[:, ::1] a, const float[:, ::1] b, float[::1] out,
            int[::1] rcs, int[::1] tids, int num_threads, bint fused=False):
    """out <- op(a[, b]) for the (n, k) rows of a, split into len(rcs) tasks of
    consecutive rows; the tasks run in a prange on num_threads threads and call
    the kernel with num_threads=1. rcs[t] is task t's return code, tids[t] the
    thread that ran it. out is flat: n*k elements, n*k*k for the Jacobian."""
    cdef int code = OPS.index(op)
    cdef Py_ssize_t n = a.shape[0], k = a.shape[1], n_tasks = rcs.shape[0]
    cdef Py_ssize_t per_task = (n + n_tasks - 1) // n_tasks
    cdef Py_ssize_t ldo = k * k if code == 4 else k
    cdef Py_ssize_t t, r0, nr
    for t in prange(n_tasks, nogil=True, num_threads=num_threads,
                    schedule="static", chunksize=1):
        r0 = t * per_task
        nr = n - r0 if n - r0 < per_task else per_task
        if nr <= 0:
            rcs[t] = 0
        elif fused:
            rcs[t] = _call_real(code, &a[r0, 0], &b[r0, 0], &out[r0 * ldo], nr, k, 1)
        else:
            rcs[t] = _call_f32(code, &a[r0, 0], &b[r0, 0], &out[r0 * ldo], nr, k, 1)
        tids[t] = threadid()


def run_f64(str op, const double[:, ::1] a, const double[:, ::1] b, double[::1] out,
            int[::1] rcs, int[::1] tids, int num_threads, bint fused=False):
    """run_f32 for float64."""
    cdef int code = OPS.index(op)
    cdef Py_ssize_t n = a.shape[0], k = a.shape[1], n_tasks = rcs.shape[0]
    cdef Py_ssize_t per_task = (n + n_tasks - 1) // n_tasks
    cdef Py_ssize_t ldo = k * k if code == 4 else k
    cdef Py_ssize_t t, r0, nr
    for t in prange(n_tasks, nogil=True, num_threads=num_threads,
                    schedule="static", chunksize=1):
        r0 = t * per_task
        nr = n - r0 if n - r0 < per_task else per_task
        if nr <= 0:
            rcs[t] = 0
        elif fused:
            rcs[t] = _call_real(code, &a[r0, 0], &b[r0, 0], &out[r0 * ldo], nr, k, 1)
        else:
            rcs[t] = _call_f64(code, &a[r0, 0], &b[r0, 0], &out[r0 * ldo], nr, k, 1)
        tids[t] = threadid()


def call_with_sizes(str op, str dtype, Py_ssize_t n_rows, Py_ssize_t n_cols,
                    buf_a, buf_b, buf_out):
    """One nogil call of op with the given sizes on the given (flat, C-contiguous)
    buffers, whatever their length; returns the kernel's return code."""
    cdef int code = OPS.index(op)
    cdef const float[::1] af, bf
    cdef float[::1] of
    cdef const double[::1] ad, bd
    cdef double[::1] od
    cdef int rc
    if dtype == "float32":
        af = buf_a
        bf = buf_b
        of = buf_out
        with nogil:
            rc = _call_f32(code, &af[0], &bf[0], &of[0], n_rows, n_cols, 1)
    else:
        ad = buf_a
        bd = buf_b
        od = buf_out
        with nogil:
            rc = _call_f64(code, &ad[0], &bd[0], &od[0], n_rows, n_cols, 1)
    return rc


def call_with_offsets(str op, str dtype, Py_ssize_t n_rows, Py_ssize_t n_cols, buf,
                      Py_ssize_t a_off, Py_ssize_t b_off, Py_ssize_t out_off, str null=""):
    """One nogil call of op whose operands a, b and out all lie in one flat
    buffer, at the given element offsets (so they may overlap); the operands
    named in `null` ("a", "b", "out") are passed as NULL. Returns the code."""
    cdef int code = OPS.index(op)
    cdef float[::1] bf
    cdef double[::1] bd
    cdef const float *af32 = NULL
    cdef const float *bf32 = NULL
    cdef float *of32 = NULL
    cdef const double *af64 = NULL
    cdef const double *bf64 = NULL
    cdef double *of64 = NULL
    cdef int rc
    if dtype == "float32":
        bf = buf
        if "a" not in null.split(","):
            af32 = &bf[a_off]
        if "b" not in null.split(","):
            bf32 = &bf[b_off]
        if "out" not in null.split(","):
            of32 = &bf[out_off]
        with nogil:
            rc = _call_f32(code, af32, bf32, of32, n_rows, n_cols, 1)
    else:
        bd = buf
        if "a" not in null.split(","):
            af64 = &bd[a_off]
        if "b" not in null.split(","):
            bf64 = &bd[b_off]
        if "out" not in null.split(","):
            of64 = &bd[out_off]
        with nogil:
            rc = _call_f64(code, af64, bf64, of64, n_rows, n_cols, 1)
    return rc



def strided(str op, const real[:, :] a, const real[:, :] b, real[:, :] out,
            int num_threads=1):
    """The strided entry point of op on 2-D views of any strides (float32 or
    float64; b is ignored by softmax and log_softmax); returns the code."""
    cdef Py_ssize_t n = a.shape[0], k = a.shape[1], it = sizeof(real)
    cdef Py_ssize_t ars = a.strides[0] // it, acs = a.strides[1] // it
    cdef Py_ssize_t brs = b.strides[0] // it, bcs = b.strides[1] // it
    cdef Py_ssize_t ors = out.strides[0] // it, ocs = out.strides[1] // it
    cdef int rc, code = OPS.index(op)
    with nogil:
        if real is float:
            if code == 0:
                rc = softmax_strided_f32(&a[0, 0], ars, acs, &out[0, 0], ors, ocs, n, k, num_threads)
            elif code == 1:
                rc = log_softmax_strided_f32(&a[0, 0], ars, acs, &out[0, 0], ors, ocs, n, k, num_threads)
            elif code == 2:
                rc = softmax_backward_strided_f32(&a[0, 0], ars, acs, &b[0, 0], brs, bcs,
                                                  &out[0, 0], ors, ocs, n, k, num_threads)
            else:
                rc = log_softmax_backward_strided_f32(&a[0, 0], ars, acs, &b[0, 0], brs, bcs,
                                                      &out[0, 0], ors, ocs, n, k, num_threads)
        else:
            if code == 0:
                rc = softmax_strided_f64(&a[0, 0], ars, acs, &out[0, 0], ors, ocs, n, k, num_threads)
            elif code == 1:
                rc = log_softmax_strided_f64(&a[0, 0], ars, acs, &out[0, 0], ors, ocs, n, k, num_threads)
            elif code == 2:
                rc = softmax_backward_strided_f64(&a[0, 0], ars, acs, &b[0, 0], brs, bcs,
                                                  &out[0, 0], ors, ocs, n, k, num_threads)
            else:
                rc = log_softmax_backward_strided_f64(&a[0, 0], ars, acs, &b[0, 0], brs, bcs,
                                                      &out[0, 0], ors, ocs, n, k, num_threads)
    return rc


# ---- masks and logsumexp ------------------------------------------------------

MASKED_OPS = ("softmax", "log_softmax", "softmax_backward", "log_softmax_backward",
              "softmax_jacobian", "logsumexp", "logsumexp_unmasked")


cdef int _masked_real(int op, const real* a, const real* b, const unsigned char* m,
                      real* out, Py_ssize_t n, Py_ssize_t k, int nt, bint fused) noexcept nogil:
    if fused and op == 0:
        return softmax_masked_real(a, m, out, n, k, nt)
    if fused and op == 1:
        return log_softmax_masked_real(a, m, out, n, k, nt)
    if fused and op == 6:
        return logsumexp_real(a, out, n, k, nt)
    if real is float:
        if op == 0:
            return softmax_masked_f32(a, m, out, n, k, nt)
        if op == 1:
            return log_softmax_masked_f32(a, m, out, n, k, nt)
        if op == 2:
            return softmax_backward_masked_f32(a, b, m, out, n, k, nt)
        if op == 3:
            return log_softmax_backward_masked_f32(a, b, m, out, n, k, nt)
        if op == 4:
            return softmax_jacobian_masked_f32(a, m, out, n, k, nt)
        if op == 5:
            return logsumexp_masked_f32(a, m, out, n, k, nt)
        return logsumexp_f32(a, out, n, k, nt)
    else:
        if op == 0:
            return softmax_masked_f64(a, m, out, n, k, nt)
        if op == 1:
            return log_softmax_masked_f64(a, m, out, n, k, nt)
        if op == 2:
            return softmax_backward_masked_f64(a, b, m, out, n, k, nt)
        if op == 3:
            return log_softmax_backward_masked_f64(a, b, m, out, n, k, nt)
        if op == 4:
            return softmax_jacobian_masked_f64(a, m, out, n, k, nt)
        if op == 5:
            return logsumexp_masked_f64(a, m, out, n, k, nt)
        return logsumexp_f64(a, out, n, k, nt)


def run_masked(str op, const real[:, ::1] a, const real[:, ::1] b,
               const unsigned char[:, ::1] mask, real[::1] out, int[::1] rcs,
               int num_threads, bint fused=False):
    """out <- op(a[, b], mask) in len(rcs) tasks of consecutive rows, from a
    prange of this module's own, each kernel call with num_threads=1. out is
    flat: n*k elements (n*k*k for the Jacobian, n for logsumexp)."""
    cdef int code = MASKED_OPS.index(op)
    cdef Py_ssize_t n = a.shape[0], k = a.shape[1], n_tasks = rcs.shape[0]
    cdef Py_ssize_t per_task = (n + n_tasks - 1) // n_tasks
    cdef Py_ssize_t ldo = k * k if code == 4 else (1 if code >= 5 else k)
    cdef Py_ssize_t t, r0, nr
    for t in prange(n_tasks, nogil=True, num_threads=num_threads,
                    schedule="static", chunksize=1):
        r0 = t * per_task
        nr = n - r0 if n - r0 < per_task else per_task
        if nr <= 0:
            rcs[t] = 0
        else:
            rcs[t] = _masked_real(code, &a[r0, 0], &b[r0, 0], &mask[r0, 0], &out[r0 * ldo],
                                  nr, k, 1, fused)


def masked_null_mask(str op, const double[:, ::1] a, double[::1] out):
    """op with a NULL mask: the kernels refuse it (-1) and write nothing."""
    cdef int code = MASKED_OPS.index(op)
    cdef int rc
    with nogil:
        rc = _masked_real(code, &a[0, 0], &a[0, 0], NULL, &out[0], a.shape[0], a.shape[1],
                          1, False)
    return rc


def masked_overlapping_mask(const double[:, ::1] a, double[::1] buf):
    """softmax_masked_f64 with an output that overlaps the mask's bytes."""
    cdef int rc
    with nogil:
        rc = softmax_masked_f64(&a[0, 0], <const unsigned char*>&buf[0], &buf[0],
                                a.shape[0], a.shape[1], 1)
    return rc


REDUCTIONS = {"none": REDUCTION_NONE, "mean": REDUCTION_MEAN, "sum": REDUCTION_SUM}


def cross_entropy(const real[:, ::1] logits, labels, const real[:, ::1] target, weight,
                  double label_smoothing, ignore_index, str reduction, real[::1] loss,
                  real[:, ::1] grad, int[::1] rcs, int num_threads=2):
    """softmax_cross_entropy on the rows of logits, split into len(rcs) tasks
    of consecutive rows run in a prange of num_threads threads, each calling
    the kernel with num_threads=1 (reduction "none": each task writes its
    rows' losses; a scalar reduction needs one task). labels (int64) or
    target: the other is None. grad may be None (no gradient)."""
    cdef const int64_t[::1] lab
    cdef const real[::1] w
    cdef const int64_t* lp = NULL
    cdef const real* tp = NULL
    cdef const real* wp = NULL
    cdef real* gp = NULL
    cdef Py_ssize_t n = logits.shape[0], k = logits.shape[1], n_tasks = rcs.shape[0]
    cdef Py_ssize_t per_task = (n + n_tasks - 1) // n_tasks, t, r0, nr
    cdef int red = REDUCTIONS[reduction]
    cdef int use_ignore = ignore_index is not None
    cdef int64_t ign = ignore_index if use_ignore else 0
    if labels is not None:
        lab = labels
        lp = &lab[0]
    else:
        tp = &target[0, 0]
    if weight is not None:
        w = weight
        wp = &w[0]
    if grad is not None:
        gp = &grad[0, 0]
    for t in prange(n_tasks, nogil=True, num_threads=num_threads,
                    schedule="static", chunksize=1):
        r0 = t * per_task
        nr = n - r0 if n - r0 < per_task else per_task
        if nr <= 0:
            rcs[t] = 0
        elif real is float:
            if lp != NULL:
                rcs[t] = softmax_cross_entropy_f32(
                    &logits[r0, 0], lp + r0, wp, label_smoothing, ign, use_ignore, red,
                    &loss[r0 if red == REDUCTION_NONE else 0], gp + r0 * k if gp != NULL else NULL,
                    nr, k, 1)
            else:
                rcs[t] = softmax_cross_entropy_soft_f32(
                    &logits[r0, 0], tp + r0 * k, wp, label_smoothing, red,
                    &loss[r0 if red == REDUCTION_NONE else 0], gp + r0 * k if gp != NULL else NULL,
                    nr, k, 1)
        else:
            if lp != NULL:
                rcs[t] = softmax_cross_entropy_f64(
                    &logits[r0, 0], lp + r0, wp, label_smoothing, ign, use_ignore, red,
                    &loss[r0 if red == REDUCTION_NONE else 0], gp + r0 * k if gp != NULL else NULL,
                    nr, k, 1)
            else:
                rcs[t] = softmax_cross_entropy_soft_f64(
                    &logits[r0, 0], tp + r0 * k, wp, label_smoothing, red,
                    &loss[r0 if red == REDUCTION_NONE else 0], gp + r0 * k if gp != NULL else NULL,
                    nr, k, 1)


def cross_entropy_raw(str dtype, Py_ssize_t n_rows, Py_ssize_t n_cols, logits, labels,
                      weight, double label_smoothing, int reduction, loss, grad):
    """One nogil call with the given sizes and codes on flat buffers (labels
    int64; weight and grad may be None for NULL); returns the code."""
    cdef const float[::1] xf, wf
    cdef float[::1] lf, gf
    cdef const double[::1] xd, wd
    cdef double[::1] ld, gd
    cdef const int64_t[::1] lab = labels
    cdef const float* wfp = NULL
    cdef float* gfp = NULL
    cdef const double* wdp = NULL
    cdef double* gdp = NULL
    cdef int rc
    if dtype == "float32":
        xf = logits
        lf = loss
        if weight is not None:
            wf = weight
            wfp = &wf[0]
        if grad is not None:
            gf = grad
            gfp = &gf[0]
        with nogil:
            rc = softmax_cross_entropy_f32(&xf[0], &lab[0], wfp, label_smoothing, 0, 0,
                                           reduction, &lf[0], gfp, n_rows, n_cols, 1)
    else:
        xd = logits
        ld = loss
        if weight is not None:
            wd = weight
            wdp = &wd[0]
        if grad is not None:
            gd = grad
            gdp = &gd[0]
        with nogil:
            rc = softmax_cross_entropy_f64(&xd[0], &lab[0], wdp, label_smoothing, 0, 0,
                                           reduction, &ld[0], gdp, n_rows, n_cols, 1)
    return rc
