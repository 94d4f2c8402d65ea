# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""softmax_cross_entropy: the fused loss and gradient, with a C-level path.

A call with C-contiguous 2-D float32/float64 logits (rows along the last
axis), int32/int64 labels or soft labels of the logits' dtype, and no mask,
dtype or layout to convert is checked and computed here without Python-level
code; everything else (N-D, other axes and layouts, float16, where=, dtype=,
array-likes, and every error message) goes to _loss_semantics, which reduces
the call to such arrays and comes back through run_arrays. The kernel is
csm_xent_rows (_loss_impl.h, formulas in _loss.h), scheduled by the engine
(_engine.run_xent).
"""
cimport numpy as cnp
from cpython.long cimport PyLong_AsLongAndOverflow, PyLong_AsLongLongAndOverflow
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.stdint cimport uintptr_t

from csoftmax._alloc cimport empty
from csoftmax._engine cimport csm_xent_args, run_xent

import numpy as np

cnp.import_array()

# Below this many logits the GIL is kept (as in _cpu: releasing and taking it
# back costs more than the kernel).
cdef enum:
    NOGIL_ELEMS = 4096
# Per-row losses of calls up to this many rows live on the stack.
cdef enum:
    STACK_ROWS = 512

_F32 = np.float32
_F64 = np.float64
_REDUCTIONS = {"none": REDUCE_NONE, "mean": REDUCE_MEAN, "sum": REDUCE_SUM}


cdef int xent_core(bint f32, csm_xent_args* a, Py_ssize_t n, int reduction,
                   double* result, Py_ssize_t* bad, int num_threads) noexcept nogil:
    cdef Py_ssize_t r, j, k = a.K
    cdef long long y
    cdef double W = 0.0, total = 0.0, wsum = 0.0
    cdef const float* wf = <const float*>a.weight
    cdef const double* wd = <const double*>a.weight
    if n < 0 or k < 0:
        return XENT_INVALID
    # The labels first: a bad one refuses the call before anything is written.
    if a.labels != NULL:
        for r in range(n):
            if a.label_bytes == 8:
                y = (<const long long*>a.labels)[r]
            else:
                y = (<const int*>a.labels)[r]
            if a.has_ignore and y == a.ignore_index:
                continue
            if y < 0 or y >= k:
                bad[0] = r
                return XENT_BAD_LABEL
            if a.weight == NULL:
                W += 1.0
            elif f32:
                W += wf[y]
            else:
                W += wd[y]
    else:
        W = <double>n  # torch divides soft-label losses by the row count
    if a.weight == NULL:
        wsum = <double>k
    else:
        for j in range(k):
            wsum += wf[j] if f32 else wd[j]
    a.wsum = wsum
    # W == 0 (every label ignored, or zero weights): 1 / 0 = inf, as torch's
    # grad_output / total_weight; the ignored rows' gradient stays 0.
    a.scale = 1.0 / W if reduction == REDUCE_MEAN else 1.0
    if k == 0:
        for r in range(n):
            a.loss[r] = 0.0  # soft labels over no class: an empty sum
    elif run_xent(f32, a, n, num_threads) != 0:
        return XENT_INVALID
    if reduction != REDUCE_NONE:
        # One order, the rows', whatever the thread count.
        for r in range(n):
            total += a.loss[r]
        result[0] = total / W if reduction == REDUCE_MEAN else total
    return XENT_OK


cdef inline bint _c_array(object o, int t, int nd):
    # A C-contiguous, aligned, native ndarray of type t and nd dimensions.
    if type(o) is not cnp.ndarray:
        return False
    cdef cnp.ndarray a = <cnp.ndarray>o
    return (cnp.PyArray_TYPE(a) == t and cnp.PyArray_NDIM(a) == nd
            and cnp.PyArray_IS_C_CONTIGUOUS(a) and cnp.PyArray_ISBEHAVED_RO(a))


cdef inline bint _disjoint(cnp.ndarray a, object b):
    # a (C-contiguous) shares no byte with b (C-contiguous, or None).
    if b is None:
        return True
    cdef uintptr_t alo = <uintptr_t>cnp.PyArray_DATA(a)
    cdef uintptr_t blo = <uintptr_t>cnp.PyArray_DATA(<cnp.ndarray>b)
    cdef uintptr_t ahi = alo + <uintptr_t>cnp.PyArray_NBYTES(a)
    cdef uintptr_t bhi = blo + <uintptr_t>cnp.PyArray_NBYTES(<cnp.ndarray>b)
    return ahi <= blo or bhi <= alo or cnp.PyArray_NBYTES(a) == 0 or cnp.PyArray_NBYTES(<cnp.ndarray>b) == 0


cdef inline int _nthreads(object num_threads):
    # 0: the default; the count for a plain positive int; -1: not for here.
    cdef int overflow = 0
    cdef long v
    if num_threads is None:
        return 0
    if type(num_threads) is not int:
        return -1
    v = PyLong_AsLongAndOverflow(num_threads, &overflow)
    if overflow == 0 and 1 <= v <= 2147483647:
        return <int>v
    return -1


def bad_label_message(labels, Py_ssize_t row, Py_ssize_t k, ignore_index):
    v = labels.reshape(-1)[row]
    ign = "" if ignore_index is None else f" and is not ignore_index ({ignore_index})"
    return (f"softmax_cross_entropy: target has the label {v} at flat index {row}, "
            f"which is outside [0, {k}) (the number of classes){ign}")


cdef object _run(cnp.ndarray x, object labels, object target, object weight, object mask,
                 Py_ssize_t ldm, double eps, object ignore_index, int reduction,
                 bint want_grad, object out, object grad_out, int nt):
    """The computation on prepared arrays: x (N, K) C-contiguous float32/64;
    labels (N,) int32/int64 or target (N, K) of x's dtype, C-contiguous;
    weight (K,) of x's dtype or None; mask uint8 rows of K (row stride ldm)
    or None; out (N,) and grad_out (N, K) of x's dtype, C-contiguous,
    disjoint from the inputs, or None. Returns the loss, or (loss, grad)."""
    cdef csm_xent_args a
    cdef Py_ssize_t n = cnp.PyArray_DIM(x, 0), k = cnp.PyArray_DIM(x, 1), bad = -1, r
    cdef bint f32 = cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT
    cdef int overflow = 0, rc
    cdef double result = 0.0
    cdef double stack_loss[STACK_ROWS]
    cdef double* loss = stack_loss
    cdef cnp.ndarray g = None, lo
    a.x = cnp.PyArray_DATA(x)
    a.ldx = k
    a.K = k
    a.labels = NULL
    a.label_bytes = 8
    a.has_ignore = 0
    a.ignore_index = 0
    a.target = NULL
    a.ldt = k
    a.weight = NULL
    a.mask = NULL
    a.ldm = ldm
    a.eps = eps
    a.grad = NULL
    a.ldg = k
    if labels is not None:
        a.labels = cnp.PyArray_DATA(<cnp.ndarray>labels)
        a.label_bytes = <int>cnp.PyArray_ITEMSIZE(<cnp.ndarray>labels)
        if ignore_index is not None:
            a.ignore_index = PyLong_AsLongLongAndOverflow(ignore_index, &overflow)
            # An ignore_index no int64 label can equal ignores nothing.
            a.has_ignore = overflow == 0
    else:
        a.target = cnp.PyArray_DATA(<cnp.ndarray>target)
    if weight is not None:
        a.weight = cnp.PyArray_DATA(<cnp.ndarray>weight)
    if mask is not None:
        a.mask = <const unsigned char*>cnp.PyArray_DATA(<cnp.ndarray>mask)
    if want_grad:
        if grad_out is not None:
            g = <cnp.ndarray>grad_out
        else:
            g = empty(2, cnp.PyArray_DIMS(x), cnp.PyArray_TYPE(x), 0)
        a.grad = cnp.PyArray_DATA(g)
    if n > STACK_ROWS:
        loss = <double*>PyMem_Malloc(n * sizeof(double))
        if loss == NULL:
            raise MemoryError("softmax_cross_entropy: no memory for the per-row losses")
    a.loss = loss
    try:
        if n * k < NOGIL_ELEMS:
            rc = xent_core(f32, &a, n, reduction, &result, &bad, nt)
        else:
            with nogil:
                rc = xent_core(f32, &a, n, reduction, &result, &bad, nt)
        if rc == XENT_BAD_LABEL:
            raise ValueError(bad_label_message(labels, bad, k, ignore_index))
        if rc != XENT_OK:
            raise ValueError(f"softmax_cross_entropy: the kernel refused sizes ({n}, {k})")
        if reduction == REDUCE_NONE:
            lo = (<cnp.ndarray>out if out is not None else
                  <cnp.ndarray>cnp.PyArray_EMPTY(1, <cnp.npy_intp*>&n, cnp.PyArray_TYPE(x), 0))
            if f32:
                for r in range(n):
                    (<float*>cnp.PyArray_DATA(lo))[r] = <float>loss[r]
            else:
                for r in range(n):
                    (<double*>cnp.PyArray_DATA(lo))[r] = loss[r]
            res = lo
        else:
            res = _F32(result) if f32 else _F64(result)
    finally:
        if loss != stack_loss:
            PyMem_Free(loss)
    if want_grad:
        return res, g
    return res


def run_arrays(x, labels, target, weight, mask, Py_ssize_t ldm, double eps, ignore_index,
               str reduction, bint want_grad, out, grad_out, int num_threads):
    """For _loss_semantics: the computation on arrays it prepared (see _run)."""
    return _run(x, labels, target, weight, mask, ldm, eps, ignore_index,
                _REDUCTIONS[reduction], want_grad, out, grad_out, num_threads)


cdef object _fast(object logits, object target, object axis, object label_smoothing,
                  object ignore_index, object weight, object reduction, object return_grad,
                  object out, object grad_out, object num_threads):
    """The C-level path; None: the call is for _loss_semantics."""
    cdef int nt = _nthreads(num_threads), t, red, overflow = 0
    cdef long ax
    cdef double eps
    cdef Py_ssize_t n, k, j
    cdef bint want_grad, soft
    if nt < 0 or type(logits) is not cnp.ndarray:
        return None
    cdef cnp.ndarray x = <cnp.ndarray>logits
    t = cnp.PyArray_TYPE(x)
    if (t != cnp.NPY_FLOAT and t != cnp.NPY_DOUBLE) or not _c_array(x, t, 2):
        return None
    if type(axis) is not int:
        return None
    ax = PyLong_AsLongAndOverflow(axis, &overflow)
    if overflow or (ax != -1 and ax != 1):
        return None
    if type(label_smoothing) is float:
        eps = label_smoothing
    elif type(label_smoothing) is int and (label_smoothing == 0 or label_smoothing == 1):
        eps = label_smoothing
    else:
        return None
    if not (0.0 <= eps <= 1.0):
        return None
    if ignore_index is not None and type(ignore_index) is not int:
        return None
    if return_grad is True:
        want_grad = True
    elif return_grad is False:
        want_grad = False
    else:
        return None
    if type(reduction) is not str:
        return None
    red = _REDUCTIONS.get(reduction, -1)
    if red < 0:
        return None
    n = cnp.PyArray_DIM(x, 0)
    k = cnp.PyArray_DIM(x, 1)
    if type(target) is not cnp.ndarray:
        return None
    cdef cnp.ndarray tg = <cnp.ndarray>target
    cdef int tt = cnp.PyArray_TYPE(tg)
    if cnp.PyArray_NDIM(tg) == 1:
        soft = False
        if not (cnp.PyTypeNum_ISSIGNED(tt) and cnp.PyArray_ITEMSIZE(tg) in (4, 8)
                and _c_array(tg, tt, 1) and cnp.PyArray_DIM(tg, 0) == n):
            return None
    else:
        soft = True
        if (ignore_index is not None or not _c_array(tg, t, 2) or cnp.PyArray_DIM(tg, 0) != n
                or cnp.PyArray_DIM(tg, 1) != k):
            return None
    if weight is not None:
        if not _c_array(weight, t, 1) or cnp.PyArray_DIM(<cnp.ndarray>weight, 0) != k:
            return None
        # Negative or NaN weights: _loss_semantics raises.
        if t == cnp.NPY_FLOAT:
            for j in range(k):
                if not ((<const float*>cnp.PyArray_DATA(<cnp.ndarray>weight))[j] >= 0):
                    return None
        else:
            for j in range(k):
                if not ((<const double*>cnp.PyArray_DATA(<cnp.ndarray>weight))[j] >= 0):
                    return None
    if out is not None:
        if (red != REDUCE_NONE or not _c_array(out, t, 1)
                or cnp.PyArray_DIM(<cnp.ndarray>out, 0) != n
                or not cnp.PyArray_ISWRITEABLE(<cnp.ndarray>out)
                or not (_disjoint(<cnp.ndarray>out, x) and _disjoint(<cnp.ndarray>out, tg)
                        and _disjoint(<cnp.ndarray>out, weight)
                        and _disjoint(<cnp.ndarray>out, grad_out))):
            return None
    if grad_out is not None:
        if (not want_grad or not _c_array(grad_out, t, 2)
                or cnp.PyArray_DIM(<cnp.ndarray>grad_out, 0) != n
                or cnp.PyArray_DIM(<cnp.ndarray>grad_out, 1) != k
                or not cnp.PyArray_ISWRITEABLE(<cnp.ndarray>grad_out)
                or not (_disjoint(<cnp.ndarray>grad_out, x) and _disjoint(<cnp.ndarray>grad_out, tg)
                        and _disjoint(<cnp.ndarray>grad_out, weight))):
            return None
    return _run(x, None if soft else tg, tg if soft else None, weight, None, 0, eps,
                ignore_index, red, want_grad, out, grad_out, nt)


def softmax_cross_entropy(logits, target, axis=-1, *, label_smoothing=0.0, ignore_index=None,
                          weight=None, reduction="mean", return_grad=False, where=None,
                          dtype=None, out=None, grad_out=None, num_threads=None):
    """Softmax cross-entropy of logits against target, and its gradient, fused.

    The semantics of torch.nn.functional.cross_entropy(logits, target, weight,
    ignore_index, reduction, label_smoothing), along `axis` of any array:

    target: integer class labels, shaped like logits without `axis`, or class
        probabilities shaped like logits (need not sum to 1).
    label_smoothing: in [0, 1]; mixes the target with the uniform
        distribution over the classes.
    ignore_index: None (nothing ignored; torch's default is -100) or an int
        label whose rows count for nothing (integer labels only).
    weight: (K,) non-negative class weights. "mean" divides by the summed
        weight of the labels that are not ignored (soft labels: by the row
        count), so every label ignored gives NaN, as torch.
    reduction: "mean", "sum" or "none" (the per-row losses).
    return_grad: also return dL/dlogits, with the reduction applied (for
        "none": the gradient of the sum of the per-row losses), written by the
        same kernel pass: (loss, grad).
    where: boolean mask broadcast against logits; masked classes take no part
        (optax semantics: an integer label on a masked class gives +inf; the
        gradient is 0 there).
    dtype: compute in and return this dtype (float16 is computed in float32).
        Without it, the loss and gradient have the logits' dtype (float16 via
        float32; integers as float64).
    out: for reduction="none", an array for the per-row losses; a scalar
        reduction takes no out (ValueError). grad_out: an array for the gradient.
    num_threads: None for OpenMP's default, or a positive int.

    Returns the loss (a NumPy scalar, or an array for "none"), or (loss, grad).
    CuPy arrays raise TypeError: the GPU kernel is not available yet.
    """
    r = _fast(logits, target, axis, label_smoothing, ignore_index, weight, reduction,
              return_grad, out, grad_out, num_threads) if where is None and dtype is None else None
    if r is not None:
        return r
    from csoftmax import _loss_semantics
    return _loss_semantics.softmax_cross_entropy(
        logits, target, axis, label_smoothing=label_smoothing, ignore_index=ignore_index,
        weight=weight, reduction=reduction, return_grad=return_grad, where=where, dtype=dtype,
        out=out, grad_out=grad_out, num_threads=num_threads)
