# cython: language_level=3
"""The memory of csoftmax's large outputs.

Outputs of 1 MiB or more are allocated through NumPy's data-allocator hook
(NEP 49) from _outcache.h, which keeps a few freed outputs for reuse: an
allocating call in a loop then costs what a call with out= costs, instead of
the page faults of fresh memory (see _outcache.h for the measurement). The
arrays are ordinary NumPy arrays that own their data. set_output_cache()
bounds or disables the cache; CSOFTMAX_OUTPUT_CACHE sets its limit at import.
"""
import os
import warnings

from cpython.ref cimport Py_INCREF
cimport numpy as cnp

cnp.import_array()

cdef extern from "_outcache.h" nogil:
    size_t CSM_OC_MIN_BYTES
    ctypedef struct csm_oc_stats:
        size_t limit
        size_t bytes
        int blocks
        unsigned long long hits
        unsigned long long misses
    size_t csm_oc_set_limit(size_t limit)
    csm_oc_stats csm_oc_get_stats()
    unsigned long long csm_oc_hits()
    void csm_oc_after_fork()

cdef extern from "_outcache.h":
    object csm_oc_capsule()

cdef extern from "numpy/arrayobject.h":
    object PyDataMem_SetHandler(object handler)
    # Steals a reference to descr.
    object PyArray_NewLikeArray(cnp.ndarray prototype, cnp.NPY_ORDER order,
                                cnp.PyArray_Descr* descr, int subok)

cdef object _handler = csm_oc_capsule()
# Read without the lock: a stale value only sends one output to the other
# allocator, and both free their own blocks.
cdef size_t _limit = csm_oc_get_stats().limit


cdef inline bint _cached(double nbytes):
    return _limit > 0 and nbytes >= <double>CSM_OC_MIN_BYTES


cdef unsigned long long reuses() noexcept nogil:
    return csm_oc_hits()


cdef cnp.ndarray empty(int nd, cnp.npy_intp* dims, int typenum, int fortran):
    cdef double nbytes = cnp.PyDataType_ELSIZE(cnp.PyArray_DescrFromType(typenum))
    cdef int i
    for i in range(nd):
        nbytes *= dims[i]
    if not _cached(nbytes):
        return <cnp.ndarray>cnp.PyArray_EMPTY(nd, dims, typenum, fortran)
    old = PyDataMem_SetHandler(_handler)
    try:
        return <cnp.ndarray>cnp.PyArray_EMPTY(nd, dims, typenum, fortran)
    finally:
        PyDataMem_SetHandler(old)


cdef cnp.ndarray empty_like(cnp.ndarray a, int typenum):
    descr = cnp.PyArray_DescrFromType(typenum)
    cdef double nbytes = <double>cnp.PyDataType_ELSIZE(descr) * <double>cnp.PyArray_SIZE(a)
    Py_INCREF(descr)  # NewLikeArray steals it
    if not _cached(nbytes):
        return <cnp.ndarray>PyArray_NewLikeArray(a, cnp.NPY_KEEPORDER, <cnp.PyArray_Descr*>descr, 0)
    old = PyDataMem_SetHandler(_handler)
    try:
        return <cnp.ndarray>PyArray_NewLikeArray(a, cnp.NPY_KEEPORDER, <cnp.PyArray_Descr*>descr, 0)
    finally:
        PyDataMem_SetHandler(old)


def set_output_cache(nbytes):
    """Keep at most nbytes of freed large outputs for reuse; 0 frees them
    and turns the cache off. Returns the previous limit.

    Outputs of 1 MiB or more that csoftmax allocates come from this cache
    when a freed one of about their size is there, with its memory already
    mapped, so an allocating call in a loop runs as fast as a call with
    out=. The default limit is 256 MiB (8 blocks at most), or the
    CSOFTMAX_OUTPUT_CACHE environment variable (bytes) at import.
    """
    global _limit
    if type(nbytes) is bool or not isinstance(nbytes, int):
        raise TypeError(f"set_output_cache: nbytes must be an int, not {type(nbytes).__name__}")
    if nbytes < 0:
        raise ValueError(f"set_output_cache: nbytes must be >= 0, got {nbytes}")
    cdef size_t n = min(nbytes, <object>(<size_t>-1))
    _limit = n
    return csm_oc_set_limit(n)


def output_cache():
    """The output cache's state: limit and bytes held (bytes), blocks held,
    and the allocations it served (hits) or passed to malloc (misses)."""
    cdef csm_oc_stats s = csm_oc_get_stats()
    return {"limit": s.limit, "bytes": s.bytes, "blocks": s.blocks,
            "hits": s.hits, "misses": s.misses}


def _limit_from_env():
    value = os.environ.get("CSOFTMAX_OUTPUT_CACHE")
    if value is None or value.strip() == "":
        return
    try:
        nbytes = int(value)
        if nbytes < 0:
            raise ValueError
    except ValueError:
        warnings.warn(f"csoftmax: CSOFTMAX_OUTPUT_CACHE={value!r} is not a byte count >= 0; "
                      f"keeping the default of {_limit} bytes", RuntimeWarning, stacklevel=3)
        return
    set_output_cache(nbytes)


_limit_from_env()


def _after_fork_in_child():
    csm_oc_after_fork()


if hasattr(os, "register_at_fork"):  # POSIX only
    os.register_at_fork(after_in_child=_after_fork_in_child)
