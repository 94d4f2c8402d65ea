# cython: language_level=3
# The fused softmax cross-entropy's nogil core, shared by the Python function
# (_loss.pyx) and the public Cython API (kernels.pyx). Private.
from csoftmax._engine cimport csm_xent_args

# Return codes of xent_core.
cdef enum:
    XENT_OK = 0
    XENT_INVALID = -1    # sizes the kernels do not take
    XENT_BAD_LABEL = -2  # a label outside [0, K) that is not ignore_index (*bad = its row)

# Reductions, as the public Cython API numbers them.
cdef enum:
    REDUCE_NONE = 0
    REDUCE_MEAN = 1
    REDUCE_SUM = 2

# Checks the labels (before anything is written), computes the divisor of
# "mean" (the weights of the labels that are not ignored; the row count for
# soft labels) and the gradient's scale, runs the row kernel on n rows
# (args.loss: n doubles of the caller's) and reduces the per-row losses in
# row order into result[0] (REDUCE_MEAN, REDUCE_SUM). args.wsum and
# args.scale are set here.
cdef int xent_core(bint f32, csm_xent_args* args, Py_ssize_t n, int reduction,
                   double* result, Py_ssize_t* bad, int num_threads) noexcept nogil
