# cython: language_level=3
# The private engine behind every door (the Python functions, the public
# Cython API in kernels.pxd): op codes, and one strided launcher per dtype.
# Not installed as an API: its signatures may change with any release.

# The operation codes, from the registry of operations (_ops.h): the values
# come from the C header, so they cannot disagree.
cdef extern from "_ops.h":
    enum:
        OP_SOFTMAX "CSM_OP_SOFTMAX"
        OP_LOG_SOFTMAX "CSM_OP_LOG_SOFTMAX"
        OP_SOFTMAX_BACKWARD "CSM_OP_SOFTMAX_BACKWARD"
        OP_LOG_SOFTMAX_BACKWARD "CSM_OP_LOG_SOFTMAX_BACKWARD"
        OP_SOFTMAX_JACOBIAN "CSM_OP_SOFTMAX_JACOBIAN"
        OP_LOGSUMEXP "CSM_OP_LOGSUMEXP"
        OP_SOFTMAX_CROSS_ENTROPY "CSM_OP_SOFTMAX_CROSS_ENTROPY"
        OP_EXP "CSM_OP_EXP"
        N_OPS "CSM_N_OPS"

# Flags of run_*.
cdef enum:
    # The output was just allocated on new pages. Large outputs are otherwise
    # written with streaming stores (no read-for-ownership), which win on
    # reused buffers; on fresh pages, which the OS has just zeroed into
    # cache, regular stores measured as fast or faster. An output that the
    # output cache (_outcache.h) serves from a block earlier outputs wrote is
    # a reused buffer, not fresh.
    RUN_FRESH_OUT = 1

# Return codes of run_*.
cdef enum:
    RUN_OK = 0
    RUN_INVALID = -1    # an op code or size the kernels do not take
    RUN_NO_MEMORY = -2  # scratch for the strided path could not be allocated

# out <- op(a[, b]) on n rows of k elements. Element (r, j) of an operand is at
# base + r * rs + j * cs (strides in elements, any sign); for the Jacobian,
# out is (n, k, k) with ors = k * k between blocks, each block C-contiguous
# (ocs is ignored). b may be NULL for the unary ops. An output may be an input
# with the same strides (in place), and must not overlap it otherwise.
# num_threads <= 0: OpenMP's default. Never validates pointers.
cdef int run_f32(int op, const float* a, Py_ssize_t ars, Py_ssize_t acs,
                 const float* b, Py_ssize_t brs, Py_ssize_t bcs,
                 float* out, Py_ssize_t ors, Py_ssize_t ocs,
                 Py_ssize_t n, Py_ssize_t k, int num_threads, int flags) noexcept nogil
cdef int run_f64(int op, const double* a, Py_ssize_t ars, Py_ssize_t acs,
                 const double* b, Py_ssize_t brs, Py_ssize_t bcs,
                 double* out, Py_ssize_t ors, Py_ssize_t ocs,
                 Py_ssize_t n, Py_ssize_t k, int num_threads, int flags) noexcept nogil

# The same with a mask (where=): one byte per element, 1 = takes part, element
# (r, j) at m + r * mrs + j * mcs (bytes; mrs = 0: one mask for every row).
# m may be NULL (no mask). For logsumexp, out holds one value per row at
# out + r * ors (ocs is ignored).
cdef int run_masked_f32(int op, const float* a, Py_ssize_t ars, Py_ssize_t acs,
                        const float* b, Py_ssize_t brs, Py_ssize_t bcs,
                        const unsigned char* m, Py_ssize_t mrs, Py_ssize_t mcs,
                        float* out, Py_ssize_t ors, Py_ssize_t ocs,
                        Py_ssize_t n, Py_ssize_t k, int num_threads, int flags) noexcept nogil
cdef int run_masked_f64(int op, const double* a, Py_ssize_t ars, Py_ssize_t acs,
                        const double* b, Py_ssize_t brs, Py_ssize_t bcs,
                        const unsigned char* m, Py_ssize_t mrs, Py_ssize_t mcs,
                        double* out, Py_ssize_t ors, Py_ssize_t ocs,
                        Py_ssize_t n, Py_ssize_t k, int num_threads, int flags) noexcept nogil

# The fused softmax cross-entropy's arguments and row kernel (_loss.h).
cdef extern from "_loss.h":
    ctypedef struct csm_xent_args:
        const void* x
        Py_ssize_t ldx
        Py_ssize_t K
        const void* labels
        int label_bytes
        int has_ignore
        long long ignore_index
        const void* target
        Py_ssize_t ldt
        const void* weight
        const unsigned char* mask
        Py_ssize_t ldm
        double eps
        double wsum
        double scale
        void* grad
        Py_ssize_t ldg
        double* loss
    ctypedef void (*csm_xent_fn)(const csm_xent_args*, Py_ssize_t, Py_ssize_t) noexcept nogil

# Per-row losses (args.loss) and the gradient (args.grad, if not NULL) of n
# rows; labels must be in range (checked by the caller). RUN_OK or RUN_INVALID.
cdef int run_xent(bint f32, const csm_xent_args* args, Py_ssize_t n, int num_threads) noexcept nogil
