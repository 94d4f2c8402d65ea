# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""nogil softmax kernels: OpenMP prange over blocks of rows, C row loops inside.

The row loops live in _rows.h (vectorised C, one copy per instruction set);
this module splits the rows into blocks and runs the blocks in parallel. The
public signatures are documented in kernels.pxd.
"""
import os

from cython.parallel cimport prange

cdef extern from "_rows.h" nogil:
    ctypedef void (*csm_rows_f32_t)(const float*, Py_ssize_t, const float*, Py_ssize_t,
                                    float*, Py_ssize_t, Py_ssize_t, Py_ssize_t, int)
    ctypedef void (*csm_rows_f64_t)(const double*, Py_ssize_t, const double*, Py_ssize_t,
                                    double*, Py_ssize_t, Py_ssize_t, Py_ssize_t, int)
    const csm_rows_f32_t* csm_rows_f32
    const csm_rows_f64_t* csm_rows_f64
    int csm_isa_in_use
    const char* csm_isa_names[]
    int CSM_N_ISA
    int CSM_N_OPS
    int csm_best_isa()
    int csm_select_isa(int isa)
    int csm_openmp_enabled()
    int csm_max_threads()
    int csm_num_procs()

# kernels.pxd repeats the op codes of _rows.h (consumers of the .pxd must not
# need the header); the C compiler checks that they agree.
cdef extern from *:
    """
    _Static_assert(CSM_OP_SOFTMAX == 0 && CSM_OP_LOG_SOFTMAX == 1 &&
                   CSM_OP_SOFTMAX_BACKWARD == 2 && CSM_OP_LOG_SOFTMAX_BACKWARD == 3 &&
                   CSM_OP_JACOBIAN == 4 && CSM_OP_EXP == 5 && CSM_OP_LOG == 6 &&
                   CSM_N_OPS < 16, "kernels.pxd and _rows.h disagree on the op codes");
    """

# Rows are processed in blocks of about this many input elements. Block
# boundaries depend on n_cols only, never on the thread count, which keeps
# results bitwise identical for every thread count. Measured (float32
# softmax, 2 threads vs 1, AVX2): 4096-element blocks gave 1.66-1.74x at 16K
# elements and 1.8-1.95x from 32K; 16384-element blocks left too few blocks
# to share below 64K elements; 2048-element blocks gave only 1.3-1.4x.
cdef enum:
    BLOCK_ELEMS = 4096

# Below this much work (elements written) a call runs on the calling thread:
# waking a second thread costs more than it saves. Measured as above: at 8K
# elements two threads gained nothing (K = 1000) to 1.36x (K = 16); at 16K
# they gain 1.66-1.74x. (PyTorch's GRAIN_SIZE is 32768.)
cdef enum:
    PARALLEL_GRAIN = 16384

# Outputs of at least this many bytes are written with streaming stores (no
# read-for-ownership). Above the caches they cost DRAM one write instead of a
# read and a write; below, a cached result is what the caller reads next.
# 8 MiB is past this machine's L2s (1 MiB per core) and a quarter of its L3.
cdef enum:
    STREAM_BYTES = 8 << 20

ctypedef fused real_t:
    float
    double


cdef inline void _rows(int op, const real_t* a, Py_ssize_t lda, const real_t* b, Py_ssize_t ldb,
                       real_t* out, Py_ssize_t ldo, Py_ssize_t n, Py_ssize_t k, int stream) noexcept nogil:
    if real_t is float:
        csm_rows_f32[op](a, lda, b, ldb, out, ldo, n, k, stream)
    else:
        csm_rows_f64[op](a, lda, b, ldb, out, ldo, n, k, stream)


cdef int _run(int op, const real_t* a, Py_ssize_t lda, const real_t* b, Py_ssize_t ldb,
              real_t* out, Py_ssize_t ldo, Py_ssize_t n, Py_ssize_t k, int num_threads) noexcept nogil:
    cdef Py_ssize_t block, n_blocks, c, r0, nr, work
    cdef int stream, no_stream = op & OP_NO_STREAM
    op = op & ~OP_NO_STREAM
    if op < 0 or op >= CSM_N_OPS or n < 0 or k < 0:
        return -1
    if n == 0 or k == 0:
        return 0
    if b == NULL:
        b = a
        ldb = lda
    block = BLOCK_ELEMS // k
    if block < 1:
        block = 1
    n_blocks = (n + block - 1) // block
    work = n * k
    if op == OP_SOFTMAX_JACOBIAN:
        work = work * k
    # Streaming never changes a value, only how it reaches memory.
    stream = not no_stream and work >= STREAM_BYTES // <Py_ssize_t>sizeof(real_t)
    if num_threads <= 0:
        num_threads = csm_max_threads()
    # A thread without a block would idle, and a huge request must not spawn
    # a huge team: 16 threads per processor is past any useful oversubscription.
    if num_threads > n_blocks:
        num_threads = <int>n_blocks
    if num_threads > 16 * csm_num_procs():
        num_threads = 16 * csm_num_procs()
    if num_threads == 1 or n_blocks == 1 or work < PARALLEL_GRAIN:
        for c in range(n_blocks):
            r0 = c * block
            nr = n - r0 if n - r0 < block else block
            _rows(op, a + r0 * lda, lda, b + r0 * ldb, ldb, out + r0 * ldo, ldo, nr, k, stream)
    else:
        for c in prange(n_blocks, schedule='static', num_threads=num_threads):
            r0 = c * block
            nr = n - r0 if n - r0 < block else block
            _rows(op, a + r0 * lda, lda, b + r0 * ldb, ldb, out + r0 * ldo, ldo, nr, k, stream)
    return 0


cdef int rows_f32(int op, const float* a, Py_ssize_t lda, const float* b, Py_ssize_t ldb,
                  float* out, Py_ssize_t ldo, Py_ssize_t n_rows, Py_ssize_t n_cols,
                  int num_threads) noexcept nogil:
    return _run(op, a, lda, b, ldb, out, ldo, n_rows, n_cols, num_threads)


cdef int rows_f64(int op, const double* a, Py_ssize_t lda, const double* b, Py_ssize_t ldb,
                  double* out, Py_ssize_t ldo, Py_ssize_t n_rows, Py_ssize_t n_cols,
                  int num_threads) noexcept nogil:
    return _run(op, a, lda, b, ldb, out, ldo, n_rows, n_cols, num_threads)


cdef inline bint _jacobian_fits(Py_ssize_t n, Py_ssize_t k) noexcept nogil:
    # n * k * k elements must be addressable; the caller's buffer holds them.
    cdef Py_ssize_t big = <Py_ssize_t>(((<size_t>-1) >> 1) // 16)
    if n < 0 or k < 0:
        return False
    if k == 0 or n == 0:
        return True
    if k > big // k:
        return False
    return n <= big // (k * k)


cdef int softmax_f32(const float* x, float* y, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil:
    return _run(OP_SOFTMAX, x, n_cols, <const float*>NULL, 0, y, n_cols, n_rows, n_cols, num_threads)

cdef int softmax_f64(const double* x, double* y, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil:
    return _run(OP_SOFTMAX, x, n_cols, <const double*>NULL, 0, y, n_cols, n_rows, n_cols, num_threads)

cdef int log_softmax_f32(const float* x, float* y, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil:
    return _run(OP_LOG_SOFTMAX, x, n_cols, <const float*>NULL, 0, y, n_cols, n_rows, n_cols, num_threads)

cdef int log_softmax_f64(const double* x, double* y, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil:
    return _run(OP_LOG_SOFTMAX, x, n_cols, <const double*>NULL, 0, y, n_cols, n_rows, n_cols, num_threads)

cdef int softmax_backward_f32(const float* y, const float* grad, float* out, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil:
    return _run(OP_SOFTMAX_BACKWARD, y, n_cols, grad, n_cols, out, n_cols, n_rows, n_cols, num_threads)

cdef int softmax_backward_f64(const double* y, const double* grad, double* out, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil:
    return _run(OP_SOFTMAX_BACKWARD, y, n_cols, grad, n_cols, out, n_cols, n_rows, n_cols, num_threads)

cdef int log_softmax_backward_f32(const float* y, const float* grad, float* out, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil:
    return _run(OP_LOG_SOFTMAX_BACKWARD, y, n_cols, grad, n_cols, out, n_cols, n_rows, n_cols, num_threads)

cdef int log_softmax_backward_f64(const double* y, const double* grad, double* out, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil:
    return _run(OP_LOG_SOFTMAX_BACKWARD, y, n_cols, grad, n_cols, out, n_cols, n_rows, n_cols, num_threads)

cdef int softmax_jacobian_f32(const float* x, float* jac, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil:
    if not _jacobian_fits(n_rows, n_cols):
        return -1
    return _run(OP_SOFTMAX_JACOBIAN, x, n_cols, <const float*>NULL, 0, jac, n_cols * n_cols, n_rows, n_cols, num_threads)

cdef int softmax_jacobian_f64(const double* x, double* jac, Py_ssize_t n_rows, Py_ssize_t n_cols, int num_threads) noexcept nogil:
    if not _jacobian_fits(n_rows, n_cols):
        return -1
    return _run(OP_SOFTMAX_JACOBIAN, x, n_cols, <const double*>NULL, 0, jac, n_cols * n_cols, n_rows, n_cols, num_threads)


# ---- Python-level introspection and the ISA switch ---------------------------

def isa():
    """The instruction set the kernels use now: 'baseline', 'avx2' or 'avx512'."""
    return csm_isa_names[csm_isa_in_use].decode()


def supported_isas():
    """The instruction sets this CPU and this build can run, narrowest first."""
    return [csm_isa_names[i].decode() for i in range(csm_best_isa() + 1)]


def select_isa(name=None):
    """Use the kernels built for `name` (None: the widest this CPU runs).

    Not thread-safe against concurrent calls into the kernels; meant for
    import time and tests. Raises ValueError for an unknown or unsupported name.
    """
    cdef int i
    if name is None:
        csm_select_isa(-1)
        return isa()
    names = [csm_isa_names[i].decode() for i in range(CSM_N_ISA)]
    if name not in names:
        raise ValueError(f"unknown ISA {name!r}; expected one of {names}")
    if csm_select_isa(names.index(name)) < 0:
        raise ValueError(
            f"ISA {name!r} is not supported by this CPU; it runs {supported_isas()}")
    return isa()


def openmp_enabled():
    """Whether this build runs rows in parallel with OpenMP."""
    return bool(csm_openmp_enabled())


def max_threads():
    """The thread count used when num_threads is None (OpenMP's default)."""
    return csm_max_threads()


# The CPU is probed once, here; CSOFTMAX_ISA forces a narrower choice (tests).
_forced = os.environ.get("CSOFTMAX_ISA", "").strip().lower()
try:
    select_isa(_forced or None)
except ValueError as exc:
    raise ImportError(f"csoftmax: CSOFTMAX_ISA={_forced!r}: {exc}") from None
del _forced
