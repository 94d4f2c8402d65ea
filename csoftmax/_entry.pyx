# cython: language_level=3, boundscheck=False, wraparound=False
"""The public entry points, with a C-level path for every NumPy 1-D/2-D call.

A call with a NumPy array of one or two dimensions and a single int axis is
validated, allocated and computed here without touching Python code, in any
memory layout: C or Fortran order, transposed views, row or column strides,
negative strides, axis=0. The engine takes element strides, so no layout is
copied: rows with unit column stride run the row kernels, all others the
strided kernels. float16 is computed in float32 and rounded back here;
integers and bools are converted to float64 by NumPy's C cast.

Anything else (N-D arrays, tuple axes, array-likes, CuPy arrays, wrong
arguments) goes to _semantics, which implements the full semantics and raises the
errors; both reach the same kernels, so they give identical results.
"""
cimport numpy as cnp
from cpython.long cimport PyLong_AsLongAndOverflow
from cpython.mem cimport PyMem_Free, PyMem_Malloc

from csoftmax._alloc cimport empty, empty_like, reuses
from csoftmax._cpu cimport Operand, launch
from csoftmax._engine cimport (OP_LOG_SOFTMAX, OP_LOG_SOFTMAX_BACKWARD, OP_LOGSUMEXP,
                               OP_SOFTMAX, OP_SOFTMAX_BACKWARD, OP_SOFTMAX_JACOBIAN)
from csoftmax import _engine, _semantics
import numpy as np

cnp.import_array()

cdef extern from "numpy/arrayobject.h":
    enum:
        NPY_HALF

cdef extern from "_half.h" nogil:
    void csm_widen_f16(const unsigned short* src, Py_ssize_t srs, Py_ssize_t scs,
                       float* dst, Py_ssize_t drs, Py_ssize_t dcs, Py_ssize_t n, Py_ssize_t k)
    void csm_narrow_f16(const float* src, Py_ssize_t srs, Py_ssize_t scs,
                        unsigned short* dst, Py_ssize_t drs, Py_ssize_t dcs,
                        Py_ssize_t n, Py_ssize_t k)

# The fast path allocates Jacobians up to this size (1 GiB); larger ones go
# through _semantics, which checks them against the machine's memory first.
cdef enum:
    FAST_JACOBIAN_BYTES = 1 << 30


cdef inline int _threads(object num_threads):
    # 0 for the default, the count for a plain positive int, -1: let _semantics decide.
    cdef int overflow = 0
    cdef long v
    if num_threads is None:
        return 0
    if type(num_threads) is not int:
        return -1
    v = PyLong_AsLongAndOverflow(num_threads, &overflow)
    # The engine caps the team (_engine._plan); here the count must be a C int.
    if overflow == 0 and 1 <= v <= 2147483647:
        return <int>v
    return -1


cdef inline int _axis(object axis, int nd):
    """1: rows along the last axis; 0: along the first of a 2-D array; -1:
    not a plain int in range (let _semantics decide). C-level int reads: a Python
    comparison costs a few hundred instructions, a third of a tiny call."""
    cdef int overflow = 0
    cdef long v
    if type(axis) is not int:
        return -1
    v = PyLong_AsLongAndOverflow(axis, &overflow)
    if overflow:
        return -1
    if v < 0:
        v += nd
    if v < 0 or v >= nd:
        return -1
    return 1 if v == nd - 1 else 0


cdef inline int _compute_type(int t):
    """The dtype the kernels compute an input of type t in, or -1."""
    if t == cnp.NPY_FLOAT or t == cnp.NPY_DOUBLE:
        return t
    if t == NPY_HALF:
        return cnp.NPY_FLOAT
    if cnp.PyTypeNum_ISINTEGER(t) or cnp.PyTypeNum_ISBOOL(t):
        return cnp.NPY_DOUBLE
    return -1


cdef inline int _result_type(int t):
    return t if t == NPY_HALF else _compute_type(t)


cdef inline Py_ssize_t _n(cnp.ndarray a, int ax):
    if cnp.PyArray_NDIM(a) == 1:
        return 1
    return cnp.PyArray_DIM(a, 0 if ax == 1 else 1)


cdef inline Py_ssize_t _k(cnp.ndarray a, int ax):
    if cnp.PyArray_NDIM(a) == 1:
        return cnp.PyArray_DIM(a, 0)
    return cnp.PyArray_DIM(a, 1 if ax == 1 else 0)


cdef inline bint _elem_stride(cnp.ndarray a, int d, Py_ssize_t* s):
    # The stride of axis d in elements; any value for a length-1 axis, whose
    # stride NumPy leaves arbitrary and the engine never uses.
    cdef Py_ssize_t item = cnp.PyArray_ITEMSIZE(a)
    cdef Py_ssize_t b = cnp.PyArray_STRIDE(a, d)
    if cnp.PyArray_DIM(a, d) <= 1:
        s[0] = 0
        return True
    if b % item:
        return False
    s[0] = b // item
    return True


cdef inline bint _operand(cnp.ndarray a, int ax, Operand* op):
    """a's rows as the engine takes them; False where a stride is not a
    whole number of elements (a copy makes it so)."""
    cdef Py_ssize_t s0 = 0, s1 = 0
    op.data = <char*>cnp.PyArray_DATA(a)
    op.rs = op.cs = 0  # set on every return: GCC cannot tell which a False skips
    if cnp.PyArray_NDIM(a) == 1:
        op.rs = 0
        return _elem_stride(a, 0, &op.cs)
    if not (_elem_stride(a, 0, &s0) and _elem_stride(a, 1, &s1)):
        return False
    if ax == 1:
        op.rs = s0
        op.cs = s1
    else:
        op.rs = s1
        op.cs = s0
    return True


cdef inline bint _usable(cnp.ndarray a, int t, int ax, Operand* op):
    # Aligned, native byte order, dtype t, whole-element strides.
    return (cnp.PyArray_TYPE(a) == t and cnp.PyArray_ISBEHAVED_RO(a)
            and _operand(a, ax, op))


cdef cnp.ndarray _like(cnp.ndarray a, int t):
    """A new array shaped like a, in a's memory order (NumPy's order 'K'), so
    that the result of a Fortran-ordered input is Fortran-ordered too and the
    kernels write it as they read a. Large ones come from _alloc's cache."""
    # PyArray_EMPTY for the common orders: NewLikeArray costs ~0.1 us more.
    if cnp.PyArray_IS_C_CONTIGUOUS(a):
        return empty(cnp.PyArray_NDIM(a), cnp.PyArray_DIMS(a), t, 0)
    if cnp.PyArray_IS_F_CONTIGUOUS(a):
        return empty(cnp.PyArray_NDIM(a), cnp.PyArray_DIMS(a), t, 1)
    return empty_like(a, t)


cdef cnp.ndarray _converted(cnp.ndarray a, int t, int ax):
    """a as dtype t, in a's memory order: float16 widened here (_half.h),
    other dtypes by NumPy's C cast (exact for integers and bools into
    float64)."""
    cdef cnp.ndarray c = _like(a, t)
    cdef Operand s, d
    if (cnp.PyArray_TYPE(a) == NPY_HALF and t == cnp.NPY_FLOAT and cnp.PyArray_ISBEHAVED_RO(a)
            and _operand(a, ax, &s) and _operand(c, ax, &d)):
        csm_widen_f16(<const unsigned short*>s.data, s.rs, s.cs, <float*>d.data, d.rs, d.cs,
                      _n(a, ax), _k(a, ax))
    else:
        cnp.PyArray_CopyInto(c, a)
    return c


cdef inline void _extent(cnp.ndarray a, char** lo, char** hi):
    cdef int d
    cdef Py_ssize_t s, n
    lo[0] = hi[0] = <char*>cnp.PyArray_DATA(a)
    for d in range(cnp.PyArray_NDIM(a)):
        n = cnp.PyArray_DIM(a, d)
        if n == 0:
            hi[0] = lo[0]
            return
        s = cnp.PyArray_STRIDE(a, d) * (n - 1)
        if s < 0:
            lo[0] += s
        else:
            hi[0] += s
    hi[0] += cnp.PyArray_ITEMSIZE(a)


cdef inline bint _overlap(cnp.ndarray a, cnp.ndarray b):
    """a and b may share memory (by their extents: conservative)."""
    cdef char* alo
    cdef char* ahi
    cdef char* blo
    cdef char* bhi
    _extent(a, &alo, &ahi)
    _extent(b, &blo, &bhi)
    return alo < bhi and blo < ahi


cdef inline bint _same_elements(cnp.ndarray a, cnp.ndarray b):
    # Same shape (checked by the caller), data and strides: in place.
    cdef int d
    if cnp.PyArray_DATA(a) != cnp.PyArray_DATA(b):
        return False
    for d in range(cnp.PyArray_NDIM(a)):
        if cnp.PyArray_DIM(a, d) > 1 and cnp.PyArray_STRIDE(a, d) != cnp.PyArray_STRIDE(b, d):
            return False
    return True


cdef inline bint _same_shape(cnp.ndarray a, cnp.ndarray b, int extra):
    cdef int d, nd = cnp.PyArray_NDIM(a)
    if cnp.PyArray_NDIM(b) != nd + extra:
        return False
    for d in range(nd):
        if cnp.PyArray_DIM(a, d) != cnp.PyArray_DIM(b, d):
            return False
    return True


cdef inline bint _writable_out(object out, cnp.ndarray a, int rt, int extra):
    """`out` is an ndarray the result can be delivered into: the result's
    shape (a's, with `extra` K axes) and dtype, writeable, aligned, native.
    Anything else goes to _semantics, which either raises or copies."""
    if type(out) is not cnp.ndarray:
        return False
    cdef cnp.ndarray o = <cnp.ndarray>out
    return (cnp.PyArray_TYPE(o) == rt and cnp.PyArray_ISBEHAVED(o)
            and _same_shape(a, o, extra))


cdef struct Call:
    # What _accepts found out about a call.
    int nt   # 0: the default thread count
    int ax   # 1: rows along the last axis; 0: along the first of a 2-D array
    int t    # the input's type number
    int ct   # the type the kernels compute in
    int rt   # the result's type
    bint masked  # m holds the mask (where=)
    Operand m    # the mask's bytes, broadcast to the input's rows (strides 0)


# dtype= values the C-level path takes, by the type they ask for; anything
# else (bfloat16, non-native byte orders, wrong values) goes to _semantics.
_FAST_DTYPES = {}
for _name, _code in (("float16", NPY_HALF), ("float32", cnp.NPY_FLOAT),
                     ("float64", cnp.NPY_DOUBLE)):
    for _key in (_name, getattr(np, _name), np.dtype(_name)):
        _FAST_DTYPES[_key] = _code


cdef inline int _requested_type(object dtype):
    """The result type dtype= asks for, or -1: not one the C-level path takes."""
    cdef object code
    try:
        code = _FAST_DTYPES.get(dtype)
    except TypeError:  # unhashable: for _semantics to reject
        return -1
    return -1 if code is None else <int>code


cdef inline bint _mask_operand(object where, cnp.ndarray a, int ax, Operand* m):
    """where= as the engine takes it: a NumPy bool array that broadcasts to
    a's shape without changing it, seen as bytes with the broadcast axes at
    stride 0; False for anything else (_semantics raises or converts)."""
    if type(where) is not cnp.ndarray:
        return False
    cdef cnp.ndarray w = <cnp.ndarray>where
    cdef int nd = cnp.PyArray_NDIM(a), md = cnp.PyArray_NDIM(w), d, dm
    cdef Py_ssize_t st[2]
    if cnp.PyArray_TYPE(w) != cnp.NPY_BOOL or md > nd:
        return False
    for d in range(nd):
        dm = d - (nd - md)
        if dm < 0 or cnp.PyArray_DIM(w, dm) == 1:
            st[d] = 0
        elif cnp.PyArray_DIM(w, dm) == cnp.PyArray_DIM(a, d):
            st[d] = cnp.PyArray_STRIDE(w, dm)
        else:
            return False
    m.data = <char*>cnp.PyArray_DATA(w)
    if nd == 1:
        m.rs, m.cs = 0, st[0]
    elif ax == 1:
        m.rs, m.cs = st[0], st[1]
    else:
        m.rs, m.cs = st[1], st[0]
    return True


cdef inline bint _accepts(object x, object axis, object num_threads, object where,
                          object dtype, Call* c):
    """The C-level path takes the call: a NumPy 1-D/2-D array of a dtype the
    kernels compute, a plain int axis in range, num_threads None or a C int,
    where= None or a NumPy bool array that broadcasts to x, dtype= None or
    float16/32/64."""
    c.nt = _threads(num_threads)
    if c.nt < 0 or type(x) is not cnp.ndarray:
        return False
    cdef int nd = cnp.PyArray_NDIM(<cnp.ndarray>x)
    if nd != 1 and nd != 2:
        return False
    c.ax = _axis(axis, nd)
    if c.ax < 0:
        return False
    c.t = cnp.PyArray_TYPE(<cnp.ndarray>x)
    c.ct = _compute_type(c.t)
    if dtype is None:
        c.rt = _result_type(c.t)
    else:
        # torch's rule: the input is computed in and returned as dtype.
        c.rt = _requested_type(dtype)
        if c.rt < 0 or c.ct < 0:
            return False
        c.ct = cnp.NPY_FLOAT if c.rt == NPY_HALF else c.rt
    c.masked = where is not None
    if c.masked and not _mask_operand(where, <cnp.ndarray>x, c.ax, &c.m):
        return False
    return c.ct >= 0


# csoftmax._gpu_fast, imported with the first CuPy array a row function sees.
cdef object _gpu_short = None


cdef object _gpu_rows(int op, object x, object g, object axis, object out, object num_threads,
                      object where, object dtype):
    """The GPU's short path for a CuPy array (csoftmax/_gpu_fast.py), or
    None: the call is for _semantics."""
    global _gpu_short
    if where is not None or dtype is not None or num_threads is not None:
        return None
    if _gpu_short is None:
        if not type(x).__module__.startswith("cupy"):
            return None
        from csoftmax import _gpu_fast
        _gpu_short = _gpu_fast
    return _gpu_short.rows(op, x, g, axis, out)


cdef object _rows(int op, object x, object g, object axis, object out, object num_threads,
                  object where, object dtype):
    """softmax, log_softmax and the backward passes (g is not None) on a
    NumPy 1-D/2-D array of any layout; None: the call is for _semantics."""
    if type(x) is not cnp.ndarray:
        return _gpu_rows(op, x, g, axis, out, num_threads, where, dtype)
    cdef Call c
    if not _accepts(x, axis, num_threads, where, dtype, &c):
        return None
    cdef int nt = c.nt, ax = c.ax, t = c.t, ct = c.ct, rt = c.rt
    cdef const Operand* m = &c.m if c.masked else NULL
    cdef cnp.ndarray a = <cnp.ndarray>x, b = a, o, res
    if g is not None:
        if type(g) is not cnp.ndarray:
            return None
        b = <cnp.ndarray>g
        if cnp.PyArray_TYPE(b) != t or not _same_shape(a, b, 0):
            return None
    if out is not None and not _writable_out(out, a, rt, 0):
        return None
    cdef Py_ssize_t n = _n(a, ax), k = _k(a, ax)
    if n == 0 or k == 0:
        return _like(a, rt) if out is None else out
    cdef Operand oa, ob, oo
    if t == NPY_HALF and rt == NPY_HALF:
        return _rows_half(op, a, b if g is not None else None, ax, n, k, out, nt, m)
    # Inputs the kernels cannot read as they are (another dtype, unaligned,
    # swapped, odd strides) are converted once, in their own memory order.
    cdef bint own = False
    if not _usable(a, ct, ax, &oa):
        a = _converted(a, ct, ax)
        _operand(a, ax, &oa)
        own = True
    if g is None:
        b, ob = a, oa
    elif not _usable(b, ct, ax, &ob):
        b = _converted(b, ct, ax)
        _operand(b, ax, &ob)
        own = True
    cdef bint direct = False
    if out is not None and rt == ct:
        o = <cnp.ndarray>out
        # Straight into out when it is an input itself or apart from them.
        direct = (_operand(o, ax, &oo)
                  and (_same_elements(o, a) or not _overlap(o, a))
                  and (g is None or _same_elements(o, b) or not _overlap(o, b)))
    if direct:
        launch(op, ct == cnp.NPY_FLOAT, oa, ob, oo, n, k, nt, False, m)
        return out
    # A new output is fresh (RUN_FRESH_OUT) unless the output cache handed
    # it a block that earlier outputs wrote.
    cdef unsigned long long hits = reuses()
    if own and g is None:
        res = a  # our own copy of the input: computed in place
    else:
        res = _like(a, ct)
    _operand(res, ax, &oo)
    launch(op, ct == cnp.NPY_FLOAT, oa, ob, oo, n, k, nt, res is not a and reuses() == hits, m)
    if rt != ct:  # a float16 result (dtype=float16) computed in float32
        o = _like(a, rt) if out is None else <cnp.ndarray>out
        _deliver_half(oo, o, ax, n, k)
        return o
    if out is None:
        return res
    cnp.PyArray_CopyInto(<cnp.ndarray>out, res)
    return out


cdef object _rows_half(int op, cnp.ndarray a, cnp.ndarray b, int ax, Py_ssize_t n,
                       Py_ssize_t k, object out, int nt, const Operand* m):
    """float16 rows: widened into a float32 scratch (C order), computed there
    in place, rounded into the output. No NumPy array but the result."""
    cdef Operand sa, sb, w
    cdef cnp.ndarray o
    if not (cnp.PyArray_ISBEHAVED_RO(a) and _operand(a, ax, &sa)
            and (b is None or (cnp.PyArray_ISBEHAVED_RO(b) and _operand(b, ax, &sb)))):
        return _rows_via_copy(op, a, b, ax, n, k, out, nt, m)
    cdef Py_ssize_t size = n * k
    cdef float* buf = <float*>PyMem_Malloc(size * sizeof(float) * (1 if b is None else 2))
    if buf == NULL:
        raise MemoryError("csoftmax: no memory for a float32 copy of a float16 input")
    try:
        csm_widen_f16(<const unsigned short*>sa.data, sa.rs, sa.cs, buf, k, 1, n, k)
        w = Operand(<char*>buf, k, 1)
        if b is not None:
            csm_widen_f16(<const unsigned short*>sb.data, sb.rs, sb.cs, buf + size, k, 1, n, k)
            launch(op, True, w, Operand(<char*>(buf + size), k, 1), w, n, k, nt, False, m)
        else:
            launch(op, True, w, w, w, n, k, nt, False, m)
        o = _like(a, NPY_HALF) if out is None else <cnp.ndarray>out
        _deliver_half(w, o, ax, n, k)
    finally:
        PyMem_Free(buf)
    return o


cdef object _rows_via_copy(int op, cnp.ndarray a, cnp.ndarray b, int ax, Py_ssize_t n,
                           Py_ssize_t k, object out, int nt, const Operand* m):
    # float16 that is unaligned, swapped or oddly strided: a float32 copy.
    cdef Operand oa, ob
    a = _converted(a, cnp.NPY_FLOAT, ax)
    _operand(a, ax, &oa)
    ob = oa
    if b is not None:
        b = _converted(b, cnp.NPY_FLOAT, ax)
        _operand(b, ax, &ob)
    launch(op, True, oa, ob, oa, n, k, nt, False, m)
    o = _like(a, NPY_HALF) if out is None else <cnp.ndarray>out
    _deliver_half(oa, o, ax, n, k)
    return o


cdef int _deliver_half(Operand src, cnp.ndarray dst, int ax, Py_ssize_t n,
                       Py_ssize_t k) except -1:
    """Round the float32 rows src into the float16 array dst."""
    cdef Operand d
    if not _operand(dst, ax, &d):
        # A float16 output with strides of odd bytes: round into a copy first.
        tmp = _like(dst, NPY_HALF)
        _deliver_half(src, tmp, ax, n, k)
        cnp.PyArray_CopyInto(dst, tmp)
        return 0
    csm_narrow_f16(<const float*>src.data, src.rs, src.cs, <unsigned short*>d.data, d.rs, d.cs, n, k)
    return 0


cdef object _jacobian(object x, object axis, object out, object num_threads,
                      object where, object dtype, bint capped=True):
    """softmax_jacobian on a NumPy 1-D/2-D array of any layout; None: the
    call is for _semantics. capped: allocate at most FAST_JACOBIAN_BYTES
    (larger results are for _semantics, which checks the machine's memory)."""
    cdef Call c
    if not _accepts(x, axis, num_threads, where, dtype, &c):
        return None
    cdef const Operand* m = &c.m if c.masked else NULL
    cdef int nt = c.nt, ax = c.ax, ct = c.ct, rt = c.rt
    cdef cnp.ndarray a = <cnp.ndarray>x, res, o
    cdef int i, nd = cnp.PyArray_NDIM(a)
    cdef Py_ssize_t n = _n(a, ax), k = _k(a, ax)
    cdef cnp.npy_intp dims[3]
    dims[0] = n
    dims[nd - 1] = k
    dims[nd] = k
    if out is not None:
        if not _writable_out(out, a, rt, 1) or cnp.PyArray_DIM(<cnp.ndarray>out, nd) != k:
            return None
        for i in range(nd):
            if cnp.PyArray_DIM(<cnp.ndarray>out, i) != dims[i]:
                return None
    elif capped and not (0 <= k < 16384 and (k == 0 or n <= (FAST_JACOBIAN_BYTES // 8) // (k * k))):
        # k < 2^14 keeps k * k from overflowing; the rest bounds the bytes.
        return None
    if n == 0 or k == 0:
        return cnp.PyArray_EMPTY(nd + 1, dims, rt, 0) if out is None else out
    cdef Operand oa, oo
    if not _usable(a, ct, ax, &oa):
        a = _converted(a, ct, ax)
        _operand(a, ax, &oa)
    cdef unsigned long long hits = reuses()  # (see _rows)
    if (out is not None and rt == ct and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>out)
            and not _overlap(<cnp.ndarray>out, a) and not _overlap(<cnp.ndarray>out, <cnp.ndarray>x)):
        res = <cnp.ndarray>out
    else:
        res = empty(nd + 1, dims, ct, 0)
    oo = Operand(<char*>cnp.PyArray_DATA(res), k * k, 1)
    launch(OP_SOFTMAX_JACOBIAN, ct == cnp.NPY_FLOAT, oa, oa, oo, n, k, nt,
           res is not out and reuses() == hits, m)
    if res is out:
        return out
    if rt != ct:  # float16: round the whole (n, k, k) result, as n * k rows
        o = empty(nd + 1, dims, rt, 0)
        csm_narrow_f16(<const float*>cnp.PyArray_DATA(res), k, 1,
                       <unsigned short*>cnp.PyArray_DATA(o), k, 1, n * k, k)
        res = o
    if out is None:
        return res
    cnp.PyArray_CopyInto(<cnp.ndarray>out, res)
    return out


# ---- the general path's way in ------------------------------------------------

def rows_2d(str op, a, b, out, int num_threads, where=None):
    """op on 2-D rows (axis -1) that _semantics has reduced an N-D call to,
    already in the compute dtype; out: a 2-D view of the caller's out, or
    None; where: a bool array of a's shape (any strides), or None. Returns
    the result, which is `out` when it went there: the rule for writing into
    `out` (directly, or through a copy when it overlaps an input) lives in
    _rows alone."""
    code = _OP_CODES[op]
    nt = num_threads if num_threads > 0 else None
    r = _rows(code, a, b, -1, out, nt, where, None)
    if r is None:  # not reachable for inputs _semantics prepared; stay correct
        r = _rows(code, a, b, -1, None, nt, where, None)
        if out is not None:
            cnp.PyArray_CopyInto(<cnp.ndarray>out, <cnp.ndarray>r)
            r = out
    return r


def jacobian_2d(a, out, int num_threads, where=None):
    """softmax_jacobian on 2-D rows for _semantics, which has checked the
    result's size against the machine; out: an (N, K, K) view or None."""
    nt = num_threads if num_threads > 0 else None
    r = _jacobian(a, -1, out, nt, where, None, False)
    if r is None:
        r = _jacobian(a, -1, None, nt, where, None, False)
        cnp.PyArray_CopyInto(<cnp.ndarray>out, <cnp.ndarray>r)
        r = out
    return r


# The row operations' codes, from the registry (_ops.h via _engine).
_OP_CODES = {name: op["code"] for name, op in _engine.OPS.items()}


def softmax(x, axis=-1, *, where=None, out=None, dtype=None, num_threads=None):
    """Softmax along `axis`: exp(x - max) / sum(exp(x - max)).

    x: array-like (NumPy, or CuPy for the GPU); float16/32/64 compute in their
    own precision (float16 and bfloat16 via float32), integers and bools as
    float64. A NumPy masked array's mask acts as where=~mask, and the result
    is a masked array with the same mask.
    axis: int, tuple of ints, or None (all axes); default the last.
    where: optional bool array that broadcasts to x: entries where it is
    False take no part and come out as 0; a row with none left gives zeros.
    out: optional array of the result's shape and dtype (may be x itself).
    dtype: compute in and return this dtype (float16, bfloat16, float32,
    float64), as torch's dtype= does.
    num_threads: None for OpenMP's default, or a positive int for this call.
    """
    r = _rows(OP_SOFTMAX, x, None, axis, out, num_threads, where, dtype)
    return r if r is not None else _semantics.softmax(
        x, axis, where=where, out=out, dtype=dtype, num_threads=num_threads)


def log_softmax(x, axis=-1, *, where=None, out=None, dtype=None, num_threads=None):
    """Log-softmax along `axis`, computed as (x - max) - log(sum(exp(x - max))).

    Arguments as for softmax(); masked entries come out as -inf.
    """
    r = _rows(OP_LOG_SOFTMAX, x, None, axis, out, num_threads, where, dtype)
    return r if r is not None else _semantics.log_softmax(
        x, axis, where=where, out=out, dtype=dtype, num_threads=num_threads)


def softmax_backward(y, grad, axis=-1, *, where=None, out=None, dtype=None, num_threads=None):
    """Gradient of softmax: y * (grad - sum(grad * y)), without the Jacobian.

    y: softmax(x) along `axis`; grad: dL/dy, the same shape. Returns dL/dx.
    where: the mask of the forward call: 0 gradient at masked entries, and
    the sum over the others only.
    """
    r = None if grad is None else _rows(OP_SOFTMAX_BACKWARD, y, grad, axis, out, num_threads,
                                        where, dtype)
    return r if r is not None else _semantics.softmax_backward(
        y, grad, axis, where=where, out=out, dtype=dtype, num_threads=num_threads)


def log_softmax_backward(y, grad, axis=-1, *, where=None, out=None, dtype=None,
                         num_threads=None):
    """Gradient of log_softmax: grad - exp(y) * sum(grad).

    y: log_softmax(x) along `axis`; grad: dL/dy, the same shape. Returns dL/dx.
    where: as for softmax_backward().
    """
    r = None if grad is None else _rows(OP_LOG_SOFTMAX_BACKWARD, y, grad, axis, out,
                                        num_threads, where, dtype)
    return r if r is not None else _semantics.log_softmax_backward(
        y, grad, axis, where=where, out=out, dtype=dtype, num_threads=num_threads)


def softmax_jacobian(x, axis=-1, *, where=None, out=None, dtype=None, num_threads=None):
    """Batched Jacobian of softmax: J[..., i, j] = s_i (delta_ij - s_j).

    x: logits; the softmax axis (a single int) is moved last and a K axis is
    appended, so (N, K) gives (N, K, K). where: rows and columns of masked
    entries are 0. Raises MemoryError, before allocating, for a result larger
    than this machine's memory.
    """
    r = _jacobian(x, axis, out, num_threads, where, dtype)
    return r if r is not None else _semantics.softmax_jacobian(
        x, axis, where=where, out=out, dtype=dtype, num_threads=num_threads)


def logsumexp(x, axis=-1, *, where=None, keepdims=False, out=None, dtype=None,
              num_threads=None):
    """log(sum(exp(x))) along `axis`, stably: max + log(sum(exp(x - max))).

    scipy.special.logsumexp's rules for special values: NaN -> NaN; else
    +inf -> +inf; only -inf (or nothing unmasked) -> -inf. axis: int, tuple
    of ints or None (all); keepdims keeps the reduced axes with length 1.
    where, out, dtype and num_threads as for softmax(). A 0-d result is
    returned as a NumPy scalar, as NumPy's reductions do.
    """
    r = _reduce(x, axis, where, keepdims, out, num_threads, dtype)
    return r if r is not None else _semantics.logsumexp(
        x, axis, where=where, keepdims=keepdims, out=out, dtype=dtype, num_threads=num_threads)


cdef object _reduce(object x, object axis, object where, object keepdims, object out,
                    object num_threads, object dtype):
    """logsumexp on a NumPy 1-D/2-D array of any layout; None: the call is
    for _semantics."""
    cdef Call c
    if not (keepdims is False or keepdims is True):
        return None
    if not _accepts(x, axis, num_threads, where, dtype, &c):
        return None
    cdef const Operand* m = &c.m if c.masked else NULL
    cdef cnp.ndarray a = <cnp.ndarray>x, res, o
    cdef int nd = cnp.PyArray_NDIM(a), ax = c.ax, ct = c.ct, rt = c.rt
    cdef Py_ssize_t n = _n(a, ax), k = _k(a, ax)
    cdef cnp.npy_intp dims[2]
    cdef int rnd = 0
    # The result's shape: x's without the axis, or with it at length 1.
    if keepdims:
        rnd = nd
        dims[0] = n if (nd == 2 and ax == 1) else 1
        if nd == 2:
            dims[1] = n if ax == 0 else 1
    elif nd == 2:
        rnd = 1
        dims[0] = n
    cdef Operand oa
    cdef int i
    if out is not None:
        if type(out) is not cnp.ndarray:
            return None
        o = <cnp.ndarray>out
        if (cnp.PyArray_TYPE(o) != rt or not cnp.PyArray_ISBEHAVED(o)
                or cnp.PyArray_NDIM(o) != rnd):
            return None
        for i in range(rnd):
            if cnp.PyArray_DIM(o, i) != dims[i]:
                return None
    if n == 0:
        return cnp.PyArray_EMPTY(rnd, dims, rt, 0) if out is None else out
    cdef cnp.npy_intp nn = n
    res = cnp.PyArray_EMPTY(1, &nn, ct, 0)
    if k == 0:  # an empty sum: log(0)
        res.fill(-np.inf)
    else:
        if not _usable(a, ct, ax, &oa):
            a = _converted(a, ct, ax)
            _operand(a, ax, &oa)
        launch(OP_LOGSUMEXP, ct == cnp.NPY_FLOAT, oa, oa,
               Operand(<char*>cnp.PyArray_DATA(res), 1, 1), n, k, c.nt, True, m)
    if rt != ct:  # float16: rounded in C (an overflow to inf is the right value)
        o = cnp.PyArray_EMPTY(1, &nn, rt, 0)
        csm_narrow_f16(<const float*>cnp.PyArray_DATA(res), 1, 1,
                       <unsigned short*>cnp.PyArray_DATA(o), 1, 1, n, 1)
        res = o
    if rnd != 1:
        res = res.reshape([dims[i] for i in range(rnd)])
    if out is not None:
        cnp.PyArray_CopyInto(<cnp.ndarray>out, res)
        return out
    return res[()] if rnd == 0 else res
