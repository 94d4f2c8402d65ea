# cython: language_level=3, boundscheck=False, wraparound=False
"""The CPU backend: arrays in, the nogil engine run, errors raised.

Callers (_entry.pyx, _semantics.py) guarantee what the engine needs, so nothing
here validates: operands of one dtype (float32 or float64), aligned, in
native byte order, with strides that are whole numbers of elements; the
Jacobian's (N, K, K) output is C-contiguous.
"""
cimport numpy as cnp
from cpython.exc cimport PyErr_CheckSignals
import numpy as np

from csoftmax._engine cimport (OP_SOFTMAX_JACOBIAN, RUN_FRESH_OUT, RUN_NO_MEMORY,
                               run_masked_f32, run_masked_f64)

cnp.import_array()

# Operation names, in the order of the engine's op codes.
from csoftmax._engine import OP_NAMES as OPS
from csoftmax._engine import CONSTANTS as _CONSTANTS

# The dtypes the kernels compute natively; others are converted by the callers.
NATIVE_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

# Below this many output elements the GIL is kept: releasing and re-taking it
# costs more than the kernel itself.
cdef enum:
    NOGIL_ELEMS = 4096

# A call that writes more than this many elements runs in slices of rows,
# with a look for Ctrl-C between slices: 2^24 float32 elements take 10-30 ms
# on one core here, so KeyboardInterrupt arrives well within a second, and a
# new parallel region per slice costs a few microseconds.
cdef enum:
    INTERRUPT_ELEMS = 1 << 24

# Slices of at least this many rows are whole multiples of it: a group of
# sixteen rows per thread of the default team, which the strided kernels
# gather sixteen at a time (the lane layout's tiles). Slices of 55 rows of
# 300000 (2^24 elements) left the two threads 28 and 27 rows, whose last 12
# and 11 took the row-by-row gather. 64 x 300000 float32 in Fortran order,
# Intel Xeon, ms on one thread and two, before -> after: softmax_backward
# 137-141 -> 109 and 65-69 -> 50, softmax 83 -> 63 and 40 -> 30,
# logsumexp 37 -> 25 and 16.5 -> 11.
cdef Py_ssize_t SLICE_QUANTUM = _CONSTANTS["lanes"] * _CONSTANTS["team"]


cdef inline int _engine_run(int op, bint f32, Operand a, Operand b, Operand m, Operand o,
                            Py_ssize_t n, Py_ssize_t k, int nt, int flags) noexcept nogil:
    if f32:
        return run_masked_f32(op, <const float*>a.data, a.rs, a.cs, <const float*>b.data, b.rs,
                              b.cs, <const unsigned char*>m.data, m.rs, m.cs,
                              <float*>o.data, o.rs, o.cs, n, k, nt, flags)
    return run_masked_f64(op, <const double*>a.data, a.rs, a.cs, <const double*>b.data, b.rs,
                          b.cs, <const unsigned char*>m.data, m.rs, m.cs,
                          <double*>o.data, o.rs, o.cs, n, k, nt, flags)


cdef int _run(int op, bint f32, Operand a, Operand b, Operand m, Operand o, Py_ssize_t n,
              Py_ssize_t k, int nt, int flags, bint gil) except -1:
    cdef int rc
    if gil:
        rc = _engine_run(op, f32, a, b, m, o, n, k, nt, flags)
    else:
        with nogil:
            rc = _engine_run(op, f32, a, b, m, o, n, k, nt, flags)
    if rc == RUN_NO_MEMORY:
        raise MemoryError(f"csoftmax: no memory for the scratch of rows of {k} elements")
    if rc != 0:
        raise ValueError(f"csoftmax: the kernel refused sizes ({n}, {k})")
    return 0


cdef int launch(int op, bint f32, Operand a, Operand b, Operand out, Py_ssize_t n,
                Py_ssize_t k, int num_threads, bint fresh, const Operand* m=NULL) except -1:
    """out <- op(a[, b]) on n rows of k elements, masked by m[0] when m is
    not NULL; the GIL rule and Ctrl-C. fresh: `out` was just allocated (see
    RUN_FRESH_OUT)."""
    cdef Py_ssize_t per_row = k * k if op == OP_SOFTMAX_JACOBIAN else k
    cdef Py_ssize_t slice_rows, r0, nr
    cdef int flags = RUN_FRESH_OUT if fresh else 0
    cdef Py_ssize_t itemsize = 4 if f32 else 8
    cdef Operand mask = Operand(NULL, 0, 0) if m == NULL else m[0]
    if n * per_row < NOGIL_ELEMS:
        return _run(op, f32, a, b, mask, out, n, k, num_threads, flags, True)
    if n * per_row <= INTERRUPT_ELEMS or n == 1:
        return _run(op, f32, a, b, mask, out, n, k, num_threads, flags, False)
    slice_rows = INTERRUPT_ELEMS // per_row
    if slice_rows < 1:
        slice_rows = 1
    if slice_rows >= SLICE_QUANTUM:
        slice_rows -= slice_rows % SLICE_QUANTUM
    r0 = 0
    while r0 < n:
        nr = n - r0 if n - r0 < slice_rows else slice_rows
        _run(op, f32,
             Operand(a.data + r0 * a.rs * itemsize, a.rs, a.cs),
             Operand(b.data + r0 * b.rs * itemsize, b.rs, b.cs),
             Operand(mask.data + r0 * mask.rs, mask.rs, mask.cs) if mask.data != NULL else mask,
             Operand(out.data + r0 * out.rs * itemsize, out.rs, out.cs),
             nr, k, num_threads, flags, False)
        r0 += nr
        if PyErr_CheckSignals() < 0:
            return -1
    return 0


cdef inline Operand _operand(cnp.ndarray x):
    # A 2-D array's rows; strides in elements (the caller made them whole).
    cdef Py_ssize_t item = cnp.PyArray_ITEMSIZE(x)
    return Operand(<char*>cnp.PyArray_DATA(x), cnp.PyArray_STRIDE(x, 0) // item,
                   cnp.PyArray_STRIDE(x, 1) // item)


def run(str op, cnp.ndarray a, b, cnp.ndarray out, int num_threads, bint fresh=False,
        cnp.ndarray mask=None):
    """out <- op(a[, b]) row by row, for 2-D arrays of any strides (the
    Jacobian's out: (N, K, K), C-contiguous; logsumexp's: (N,)). num_threads
    <= 0: OpenMP's default. fresh: `out` was just allocated. mask: None, or
    a 2-D uint8/bool array of a's shape (any strides, 0 to broadcast)."""
    cdef int code = OPS.index(op)
    cdef cnp.ndarray bb = a if b is None else b
    cdef Operand o, m
    cdef Py_ssize_t k = cnp.PyArray_DIM(a, 1)
    if code == OP_SOFTMAX_JACOBIAN:
        o = Operand(<char*>cnp.PyArray_DATA(out), k * k, 1)
    elif cnp.PyArray_NDIM(out) == 1:
        o = Operand(<char*>cnp.PyArray_DATA(out),
                    cnp.PyArray_STRIDE(out, 0) // cnp.PyArray_ITEMSIZE(out), 1)
    else:
        o = _operand(out)
    if mask is not None:
        m = _operand(mask)
    launch(code, cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT, _operand(a), _operand(bb), o,
           cnp.PyArray_DIM(a, 0), k, num_threads, fresh, &m if mask is not None else NULL)
