# cython: language_level=3
# The arrays that csoftmax's calls return: large ones get their memory from
# a cache of freed outputs (_outcache.h). Private.
cimport numpy as cnp

# A new array, as PyArray_EMPTY(nd, dims, typenum, fortran).
cdef cnp.ndarray empty(int nd, cnp.npy_intp* dims, int typenum, int fortran)
# A new array shaped like a, in a's memory order (NumPy's order 'K').
cdef cnp.ndarray empty_like(cnp.ndarray a, int typenum)
# Allocations served from the cache so far: an array allocated while this
# count rose took a reused block (see csm_oc_hits), not fresh pages.
cdef unsigned long long reuses() noexcept nogil
