# cython: language_level=3
# The CPU backend's one way to run a kernel on arrays, shared by the fast
# path in _entry.pyx and the general path in _semantics.py. Private.
cimport numpy as cnp

# One operand of a call: its data pointer and the element strides of its
# rows and columns.
cdef struct Operand:
    char* data
    Py_ssize_t rs
    Py_ssize_t cs

# m: a mask (where=), one byte per element (strides in bytes), or NULL.
cdef int launch(int op, bint f32, Operand a, Operand b, Operand out, Py_ssize_t n,
                Py_ssize_t k, int num_threads, bint fresh, const Operand* m=*) except -1
