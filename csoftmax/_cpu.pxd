# cython: language_level=3
# The CPU backend's one way to run a kernel, shared with the fast path in
# _entry.pyx. Private: the public Cython API is kernels.pxd.
cimport numpy as cnp

cdef int launch(int op, cnp.ndarray a, Py_ssize_t lda, cnp.ndarray b, Py_ssize_t ldb,
                cnp.ndarray out, Py_ssize_t ldo, Py_ssize_t n, Py_ssize_t k,
                int num_threads) except -1
