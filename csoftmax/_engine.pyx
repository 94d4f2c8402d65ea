# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The engine: row blocks, OpenMP scheduling, fork safety and the ISA switch.

The row loops live in _rows.h (vectorised C, one copy per instruction set).
This module splits a call's rows into blocks, runs the blocks on an OpenMP
team, and picks per block the row kernels (unit column stride) or the
strided kernels (any strides, through the lane layout of _rows_impl.h). It
is private: the public doors are csoftmax's Python functions and the Cython
API of kernels.pxd, both of which call run_f32/run_f64.
"""
import os

from cython.parallel cimport parallel, threadid
from cpython.pyport cimport PY_SSIZE_T_MAX
from libc.stdint cimport uintptr_t
from libc.stdlib cimport free, malloc

cdef extern from "_shares.h" nogil:
    ctypedef struct csm_share_t:
        Py_ssize_t next
        Py_ssize_t end
    void csm_shares_init(csm_share_t* s, int count, Py_ssize_t n_blocks)
    Py_ssize_t csm_shares_take(csm_share_t* s, int count, int t, int* visit)

cdef extern from "_rows.h" nogil:
    ctypedef void (*csm_rows_f32_t)(const float*, Py_ssize_t, const float*, Py_ssize_t,
                                    float*, Py_ssize_t, Py_ssize_t, Py_ssize_t, int)
    ctypedef void (*csm_rows_f64_t)(const double*, Py_ssize_t, const double*, Py_ssize_t,
                                    double*, Py_ssize_t, Py_ssize_t, Py_ssize_t, int)
    const csm_rows_f32_t* csm_rows_f32
    const csm_rows_f64_t* csm_rows_f64
    void csm_strided_f32(int, const float*, Py_ssize_t, Py_ssize_t, const float*, Py_ssize_t,
                         Py_ssize_t, float*, Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                         float*)
    void csm_strided_f64(int, const double*, Py_ssize_t, Py_ssize_t, const double*, Py_ssize_t,
                         Py_ssize_t, double*, Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                         double*)
    void csm_masked_f32(int, const float*, Py_ssize_t, Py_ssize_t, const float*, Py_ssize_t,
                        Py_ssize_t, const unsigned char*, Py_ssize_t, Py_ssize_t, float*,
                        Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t, float*)
    void csm_masked_f64(int, const double*, Py_ssize_t, Py_ssize_t, const double*, Py_ssize_t,
                        Py_ssize_t, const unsigned char*, Py_ssize_t, Py_ssize_t, double*,
                        Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t, double*)
    Py_ssize_t csm_masked_scratch(Py_ssize_t K)
    Py_ssize_t csm_lane_count(Py_ssize_t K)
    Py_ssize_t csm_long_strided_scratch(Py_ssize_t K)
    bint csm_staged_k(Py_ssize_t K)
    Py_ssize_t csm_staged_scratch(Py_ssize_t K, Py_ssize_t itemsize)
    Py_ssize_t csm_stage_rows(Py_ssize_t K)
    csm_xent_fn csm_xent_f32
    csm_xent_fn csm_xent_f64
    int csm_isa_in_use
    const char* csm_isa_names[]
    int CSM_N_ISA
    int CSM_ISA_AVX2
    int CSM_SMALL_K
    int CSM_SMALL_FWD_K
    int CSM_ROWS_MAX
    int CSM_ROWS_MAX_K
    int CSM_SMALL_FWD_K_ISA(int isa)
    bint CSM_SOFTMAX_NT_ROWS(Py_ssize_t k, Py_ssize_t itemsize)
    int CSM_NT_MIN_BYTES
    int CSM_NT_RING_BYTES
    int CSM_NT_GROUPS
    int CSM_LANES
    int CSM_STAGE_ROWS
    int CSM_LANE_SCRATCH
    int CSM_LONG_GROUP
    int CSM_LONG_ROW
    int CSM_LONG_CHUNK
    int CSM_LONG_KEEP
    int CSM_SMALL_BWD_K
    int CSM_VEC_BWD_MIN
    int CSM_VEC_BWD_K
    int CSM_VEC_BWD_K_AVX2_F64
    int CSM_BWD_PIPE_BYTES
    int csm_best_isa()
    int csm_cpu_is_amd()
    int csm_cpu_family()
    int csm_select_isa(int isa)
    int csm_openmp_enabled()
    int csm_max_threads()
    int csm_num_procs()
    double csm_now()
    long csm_streamed_blocks
    int csm_widen_256
    int CSM_RUN_STREAM
    int CSM_RUN_PREFETCH
    int CSM_RUN_KEEP

cdef extern from "_ops.h" nogil:
    int CSM_OUT_LOSS
    const char* csm_op_names[]
    const int csm_op_arity[]
    const int csm_op_out[]
    const int csm_op_gpu[]
    const int csm_op_cost[]

# Rows are processed in blocks of about this many input elements. Block
# boundaries depend on the row length and layout only, never on the thread
# count, and a row's result never depends on its block, which keeps results
# bitwise identical for every thread count and schedule. Measured (float32
# softmax, 2 threads vs 1, AVX2): 4096-element blocks gave 1.66-1.74x at 16K
# elements and 1.8-1.95x from 32K; 16384-element blocks left too few blocks
# to share below 64K elements; 2048-element blocks gave only 1.3-1.4x.
cdef enum:
    BLOCK_ELEMS = 4096

# Large calls of the row kernels take larger blocks: at least _block_share
# blocks per call (BLOCKS_PER_THREAD per thread of the default team, read at
# import), so that stealing (_shares.h) still balances the threads within a
# block, of at most BLOCK_MAX_ELEMS elements. The row kernels prefetch the
# next row only inside their block, so a block's first row starts cold: at
# 4096 elements that was one row in four at K = 1000. And with small blocks
# the threads' rows interleave, so neither reads a contiguous run (softmax
# 16384 x 1000 float32, AVX-512, 4096 -> 32768-element blocks: one thread
# 10.2 -> 8.1 ms, two threads 7.8 -> 4.3 ms). Mid sizes showed the same:
# on 2 threads (AMD Zen 5, float32, AVX-512, interleaved), 64 blocks per call
# -> 16: softmax_backward 4096 x 128 44.4 -> 40.0 us, 2048 x 256 45.3 ->
# 41.3 us, 1024 x 1000 82.3 -> 77.9 us, log_softmax_backward 4096 x 128
# 57.4 -> 54.5 us, softmax 4096 x 128 59.9 -> 57.5 us; one thread 2-4% (4
# blocks per call were no faster than 16). Rows never depend on their block,
# so neither do the bits.
cdef enum:
    BLOCKS_PER_THREAD = 8
    BLOCK_MAX_ELEMS = 32768
cdef int _team = max(csm_max_threads(), 2)
cdef Py_ssize_t _block_share = BLOCKS_PER_THREAD * _team

# Below this much work a call runs on the calling thread: waking a second
# thread costs more than it saves. Work is the elements written plus
# ROW_COST per row (a row's fixed cost: its max, its sums, its setup),
# times the op's cost in the registry (_ops.h: 2 for a few additions per
# element, 3 for an exp or a log). So a float32 softmax_backward goes
# parallel at 16K elements (measured as above: at 8K elements two threads
# gained nothing (K = 1000) to 1.36x (K = 16); at 16K they gain 1.66-1.74x;
# PyTorch's GRAIN_SIZE is 32768), and an op with an exp per element at about
# 11K, fewer where rows are short. AMD Zen 5, float32, two threads against
# one, interleaved, AVX-512 | AVX2: softmax, log_softmax, logsumexp and
# log_softmax_backward took 0.65-0.78x | 0.62-0.72x of the time at 820 x 10
# and 1024 x 10, 0.84-0.96x | 0.70-0.76x at 16 x 1000, but 1.06-1.31x |
# 0.83-0.97x at 64 x 128 and 8 x 1024 (8192 elements in long rows, about
# 1.7 us on one thread under AVX-512), which stay on one thread here;
# softmax_backward took 0.85-0.94x | 0.84-0.86x at 1024 x 10, 1.3-1.4x at
# 128 x 64.
cdef enum:
    PARALLEL_GRAIN = 32768
    ROW_COST = 8

# Waking the team costs more than the mid sizes gain from it. Idle OpenMP
# threads spin for a short while (_openmp_env.py) and then sleep; a call
# that finds them asleep waits for one to wake up and reach the end of the
# region. Measured on a 2-core VM (AMD Zen 5), log_softmax_backward 1024 x 10
# float32 on two threads: 4.1 us a call back to back, and still with 100 us
# between calls, but 30 us with 0.3-3 ms between calls (the threads had gone
# to sleep), against 5 us on one thread; after 20 ms idle the first call took
# 55 us. So a call of work below WAKE_GRAIN (about 35-100 us on one thread,
# twice the wake-up) runs on two threads only within a burst: when the
# previous call of at least PARALLEL_GRAIN ended less than BURST_S ago (the
# threads are still spinning, or a loop of such calls will keep them so; at
# 100 us they still spun). An isolated mid-size call runs on the calling
# thread. Larger calls always take the team. Results never depend on it.
cdef enum:
    WAKE_GRAIN = 1 << 20
cdef double BURST_S = 100e-6
cdef double _burst_until = 0.0  # a call that starts before this is in a burst
# _plan's flags beyond the RUN_* ones: plan() decides the burst for tests.
cdef enum:
    PLAN_IN_BURST = 1 << 8
    PLAN_ISOLATED = 1 << 9
    PLAN_OUT_PACKED = 1 << 10  # the output's rows follow one another (row stride K)

# Outputs larger than twice the last-level cache, written by two or more
# threads, go out with streaming stores (no read-for-ownership): past the
# caches a regular store costs DRAM a read and a write, a streaming one only
# the write. Everywhere else regular stores won. `python
# bench/bench_streaming.py` on AMD Zen 5 (2 cores, 32 MiB L3), float32 out=,
# streaming / regular time in ms:
# - one thread: softmax 38 MiB 2.88 / 2.12, 144 MiB 11.07 / 8.22;
#   softmax_backward 38 MiB 3.15 / 2.77; the Jacobian 38 MiB 1.06 / 0.72
#   (at 144 MiB alone it streams faster, 3.95 / 4.18). One core's reads for
#   ownership are hidden by the prefetchers, and the streaming path's span
#   scratch (_rows.h) only adds work.
# - two threads, up to two LLCs: softmax 38 MiB 1.65 / 1.34, the Jacobian
#   0.94 / 0.44: much of an output of about the LLC's size is still in L3
#   and the L2s at the next call.
# - two threads, past two LLCs: softmax 144 MiB 6.92 / 7.05, the Jacobian
#   144 MiB 3.66 / 4.13; softmax_backward 9.60 regular against 10.21, 77 MiB
#   even (softmax 3.60 / 3.56).
# The LLC's size is read at import (_llc_bytes); where it cannot be, 8 MiB,
# past the L2 of the machines measured (1-2 MiB per core).
# On AMD Zen 3 (AVX2 without AVX-512, 512 KiB L2 per core, 32 MiB L3) the
# same bench found streaming faster from 1.2 LLCs on, at one thread too, in
# 13 of 18 cells: the Jacobian 38 MiB 3.19 / 4.99 (one thread), 2.61 / 3.31
# (two); softmax_backward 38 MiB 8.72 / 11.70 and 6.71 / 8.06; softmax
# 7.36 / 8.65 and 5.11 / 5.35 (regular won only for softmax at 144 MiB,
# 32.4 / 36.2 and 17.5 / 18.8). Its RFOs are not hidden as Zen 5's are. So
# a CPU whose widest ISA is AVX2 streams outputs of one LLC and more at any
# thread count, one with AVX-512 keeps the rule above. The ISA only stands
# for the generation of core: the two machines measured, not a law (a
# third, an Intel Xeon, made the rule key on the vendor: _cpu_is_amd).
cdef Py_ssize_t _stream_bytes = 16 << 20
cdef int _stream_threads = 2
# Which ops stream at all. The ops that take an exp per element (cost 3 in
# _ops.h: softmax, log_softmax, log_softmax_backward) are bound by that
# arithmetic, not by memory: their reads for ownership hide behind the exps,
# and streaming's pass through an L1 scratch (csm_streamed) only adds work.
# So they keep regular stores at any size, but for softmax's and
# log_softmax's long rows (csm_long_rows, rows past CSM_LONG_ROW), which
# stream chunks of a row too long for the caches, and measured faster so,
# log_softmax's rows (whole registers, or any that follow one another in
# the output), which stream straight from the registers, and softmax's
# such rows of 512 bytes or more, which
# stream from a ring of their exps in L1 (_plan: nt_rows;
# CSM_SOFTMAX_NT_ROWS in _rows.h has the numbers).
# `python bench/bench_streaming.py`, AMD Zen 3, AVX2, float32 out=, ms
# streamed / regular, one and two threads: softmax 10066 x 1000 (38 MiB)
# 6.39 / 5.12 and 3.54 / 3.54, 37748 x 1000 (144 MiB) 24.5 / 18.7 and
# 13.6 / 11.5 (softmax_backward, cost 2, streams faster: 6.36 / 7.46 and
# 4.17 / 4.78). Three reused outputs in turn, streamed / regular, one and two
# threads: log_softmax 16384 x 1000 10.24 / 8.38 and 5.65 / 5.62,
# 200000 x 64 9.65 / 7.90 and 5.38 / 4.68; softmax 2000000 x 10 23.6 /
# 21.4 and 14.0 / 12.0; float64 softmax 16384 x 1000 28.9 / 23.9 and
# 15.2 / 13.0; log_softmax_backward float32 16384 x 1000 11.85 / 9.91 and
# 6.86 / 6.80, float64 34.6 / 30.1 and 18.3 / 16.8; long rows still stream
# faster: log_softmax 8 x 2^20 5.24 / 5.55 and 3.22 / 3.37, 4 x 2^22 12.1 /
# 13.3 and 7.5 / 8.5. With the caches cold at each call (96 MiB written
# between calls, as when other work runs between them): softmax 16384 x 1000
# 9.88 / 8.00 and 5.84 / 5.90, log_softmax_backward 10.36 / 10.18 and
# 7.84 / 8.27, float64 25.3 / 22.6 and 15.7 / 17.1 (the two-thread cases,
# even or near it, go either way from run to run). On AMD Zen 5 (AVX-512)
# the one case where softmax streamed faster was 144 MiB at two threads, by
# 2% (6.92 / 7.05).
# set_stream_exp_ops lets the tests and bench_streaming.py stream them.
# The switches of which ops may stream, each read by _plan and set by its
# own setter (tests, benchmarks): these ops, and the Jacobian (below).
cdef enum:
    SWITCH_EXP_OPS = 0
    SWITCH_JACOBIAN = 1
cdef bint _stream_switch[2]
_stream_switch[SWITCH_EXP_OPS] = False


def _cache_sizes():
    """{level: bytes} of CPU 0's data (or unified) caches, from sysfs on
    Linux, else glibc's sysconf; empty where the system does not say."""
    import glob
    sizes = {}
    for d in glob.glob("/sys/devices/system/cpu/cpu0/cache/index[0-9]*"):
        try:
            with open(d + "/level") as f:
                level = int(f.read())
            with open(d + "/type") as f:
                if f.read().strip() == "Instruction":
                    continue
            with open(d + "/size") as f:
                text = f.read().strip().upper()
        except (OSError, ValueError):
            continue
        digits = text.rstrip("KMG")  # "2048K" (no negative indices: wraparound is off)
        scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[len(digits):], 1)
        try:
            sizes[level] = int(digits) * scale
        except ValueError:
            continue
    if sizes:
        return sizes
    for level in (2, 3):
        try:
            size = os.sysconf(f"SC_LEVEL{level}_CACHE_SIZE")
        except (ValueError, OSError, AttributeError):
            continue
        if size > 0:
            sizes[level] = size
    return sizes


# Read once, at import.
_CACHE_SIZES = _cache_sizes()


def _llc_bytes():
    """The size of the largest cache level of CPU 0, in bytes, or 0 where the
    system does not say."""
    return _CACHE_SIZES[max(_CACHE_SIZES)] if _CACHE_SIZES else 0


# An LLC past 64 MiB is a server's L3, shared by every core of its socket
# and, in a VM, by other tenants' cores: a call sees far less of it than
# the size says. A 2-core Intel Xeon VM (AVX-512) reads its L3 as 480 MiB,
# yet one thread's copy ran at 27 GB/s (read + write) up to 24 MiB copies
# (48 MiB of traffic) and fell from there: 22 GB/s at 32 MiB, 16 at 48, 13
# at 128. So the rule above takes at most 64 MiB of the LLC (more than the
# 32 MiB L3 of the AMD parts measured, whose rule is unchanged). At 32 MiB,
# bench_targets.py (quiet, operands rotated through 1 GiB) found the
# Jacobian's 40 MB output slower streamed: 1000 x 100 float32 out= at one
# and two threads 2.19 and 1.06 ms against 1.60 and 0.77 regular, where
# the outputs of the backward ops below (77 MB with their inputs) gained.
# On that Xeon, two threads, float32 out=,
# operands rotated through 768 MiB, one process alternating the threshold
# call by call (24 calls each, medians), time at 2 x 32 MiB against 2 x
# 480 MiB: softmax_backward 100000 x 64 0.74 (2.10 / 2.84 ms), float64
# 16384 x 1000 0.77, float32 16384 x 1000 1.03 (its rows of 4000 bytes
# streamed through the L1 scratch then; straight from the registers, as
# csm_nt_rows now takes them, 0.79), the Jacobian 2000 x 100 0.99,
# log_softmax 200000 x 64 1.01.
cdef Py_ssize_t STREAM_LLC_MAX = 64 << 20


def _stream_llc_bytes():
    """The LLC's size as the streaming rule takes it: at most 64 MiB; 8 MiB
    where the system does not say."""
    return min(_llc_bytes() or (8 << 20), STREAM_LLC_MAX)


# The same Xeon streamed faster at one thread too, as the Zen 3 did: one
# thread, operands rotated through 768 MiB, one process alternating
# streamed and regular calls, time streamed / regular: the Jacobian
# 2000 x 100 float32 0.59, softmax_backward 100000 x 64 0.70, 16384 x 1000
# 0.83, float64 0.76; with one output reused, softmax_backward float32
# 16384 x 1000 0.82 and the Jacobian 1000 x 100 (40 MB) 0.80 (two threads
# 0.87 and 0.90). So the ISA did not stand for the core after
# all: AMD's cores with AVX-512 (the Zen 5 measured; Zen 4 with them) keep
# the two-LLC, two-thread rule, and every other x86-64 CPU streams outputs
# of one LLC at any thread count.
def _cpu_is_amd():
    """Whether the CPU is AMD's (the streaming rule)."""
    return bool(csm_cpu_is_amd())


def _cpu_family():
    """The CPU's x86 family (CPUID leaf 1), 0 off x86: the streaming rule
    tells AMD's Zen 4 (0x19) from Zen 5 (0x1A) by it."""
    return csm_cpu_family()


# A Zen 4 (AMD family 0x19 with AVX-512; a 2-core VM, 32 MiB L3, 1 MiB L2
# per core, DRAM fast enough that a 3-array pass of 196 MB took 5.5 ms)
# streamed faster from one thread, as the Zen 3 and the Xeon did and the
# Zen 5 did not. One process alternating the settings, operands rotated
# past the L3, one thread, time streamed over regular, AVX-512 kernels then
# AVX2 ones: softmax_backward float32 16384 x 1000 0.79 and 0.71 (0.62 and
# 0.61 without the dot product's prefetches, below), float64 0.75 and 0.79,
# 100000 x 64 0.85 and 0.88; log_softmax_backward float32 16384 x 1000 0.83
# and 0.79, float64 0.84 and 0.95; softmax and log_softmax 16384 x 1000
# (131 MB with the input) 0.96-1.05. Outputs between one and two LLCs did
# better with regular stores there (the Jacobian 1000 x 100, 40 MB: 0.95
# and 1.30 streamed at one thread, 1.17 and 1.24 at two), so Zen 4 keeps
# the two-LLC threshold and streams from one thread.
#
# log_softmax's long rows (and softmax's past CSM_LONG_KEEP) stream from one
# LLC under that rule too (_long_stream_div): their output pass reads x
# again and writes y with no exps to hide the reads for ownership behind,
# and past the LLC neither stays in it. Zen 4, operands rotated (three
# sets) or reused (one), time streamed / regular, log_softmax out=, one and
# two threads: float32 8 x 2^20 (32 MiB, one LLC) AVX-512 0.67-0.73 and
# 0.84-0.87, AVX2 0.75-0.77 and 0.90-0.93; float64 8 x 2^19 0.87 and
# 0.90-0.94, AVX2 0.85-0.90 and 0.91-0.97; but float32 4 x 2^20 (16 MiB,
# which stays in the L3 between calls) two threads with one set reused 1.14
# and 1.17 (one thread 0.74-0.88).
cdef Py_ssize_t _long_stream_div = 1
if csm_best_isa() == 1 or (csm_best_isa() == 2 and not csm_cpu_is_amd()):
    _stream_bytes = _stream_llc_bytes()
    _stream_threads = 1
else:
    _stream_bytes = 2 * _stream_llc_bytes()
    _long_stream_div = 2
    if csm_cpu_family() < 0x1A:
        _stream_threads = 1

# The Jacobian keeps regular stores at any size on a Zen 4 (AMD family 0x19
# with AVX-512; the Zen 3, family 0x19 without it, streams as measured
# above). Its streamed form builds rows in an L1 scratch and copies them out
# (csm_stream_copy), and this core's streaming stores top out near 28 GB/s
# (an 80 MB fill of ones: 2.84 ms at one thread, 2.81 at two), where its
# regular stores of the Jacobian did better. 2-core VM, 32 MiB L3, float32
# and float64 out=, one process alternating the settings, best of 8 calls,
# three rounds, time regular / streamed with one output reused (as a caller's
# out= is) and with two in turn, one and two threads, AVX-512 kernels then
# AVX2 ones:
#   1000 x 100 float64 (76 MiB)  0.93 0.99 0.70 0.89 | 0.70 0.78 0.63 0.76
#   3000 x 100 float32 (114 MiB) 0.82 0.91 0.82 0.95 | 0.72 0.81 0.77 0.90
#   2000 x 100 float64 (153 MiB) 0.97 0.97 0.88 0.96 | 0.74 0.78 0.88 0.95
#   12000 x 64 float32 (188 MiB) 0.95 1.01 0.92 0.98 | 0.98 0.98 0.93 0.99
#   1500 x 128 float64 (188 MiB) 1.09 1.12 0.91 0.99 | 0.90 0.92 0.91 0.98
# and bench_targets.py's jacobian 1000 x 100 float64 out= (one output
# reused), two runs each: 2.95-3.07 and 2.19-2.32 ms regular against
# 3.17-3.18 and 2.82-2.84 streamed (Numba's prange kernel 3.08-3.16 and
# 1.48-2.28). set_stream_jacobian lets the tests and bench_streaming.py
# stream it there.
# What is left against a fill is the fill's own value: the same Zen 4,
# 10000 x 32 float32 out= (41 MB, 16 bytes past a line as NumPy places it),
# two outputs in turn, best of 45 calls, us, a fill of zeros / a fill of
# ones (numba prange halves, as bench_targets.py fills) / the Jacobian under
# AVX-512 and AVX2: one thread 1235-1371 / 1421-1541 / 1554-1671 and
# 1598-1668; two 1008-1092 / 1221-1294 / 1258-1356 and 1229-1355 (streamed:
# 1470-1493). A C loop over the same two outputs wrote zeros by `rep stosb`
# in 0.52 ms and any other byte in 1.42 (regular AVX-512 stores 1.58-1.89,
# streaming 1.44): zero lines cost this host less than any data does.
cdef bint _zen4 = csm_cpu_is_amd() and csm_cpu_family() == 0x19 and csm_best_isa() == 2
_stream_switch[SWITCH_JACOBIAN] = not _zen4

# The AVX-512 kernels' double sums of float32 terms (softmax_backward's dot
# product, log_softmax_backward's sum of g) widen four floats per conversion
# on a Zen 4, whose 512-bit conversions to double cost more than two 256-bit
# ones (_rows_impl.h, csm_rows_sum, has the C loop's numbers). The bits are
# the same either way. Zen 4, 2-core VM, out=, one process alternating the
# settings (best of 300 calls, four rounds), us, AVX-512 kernels eight ->
# four floats per conversion, one thread / two:
#   softmax_backward float32 4096 x 128   81.0 -> 78.4 / 42.7 -> 41.1
#                                         (the AVX2 kernels: 76.5 / 40.5)
#                            4096 x 256   175.5 -> 157.6 / 89.1 -> 79.5
#                            1000 x 1000  175.4 -> 155.3 / 90.1 -> 76.1
#                            50000 x 128  (DRAM) even, within 2%
#                            100000 x 64  (DRAM) 1637-1668 -> 1683-1733 / even
#   log_softmax_backward     4096 x 128   144.2 -> 135.7 / 74.0 -> 69.7
#                            100000 x 64  2331 -> 2245 / 1172 -> 1132
# The one loss, softmax_backward's rows of 64 from DRAM at one thread (3%),
# is smaller than the gains, so the rule has no threshold on K.
csm_widen_256 = _zen4


cdef bint _set_switch(int which, bint flag):
    """Set a streaming switch; returns the old setting."""
    old = _stream_switch[which]
    _stream_switch[which] = flag
    return old

# The row kernels prefetch the rows ahead (_rows.h, CSM_PREFETCH_BYTES) only
# in calls whose operands and output together exceed this many bytes: the L2
# cache of CPU 0, read at import; where it cannot be, 1 MiB, the smaller L2
# of the machines measured. Smaller calls usually find their rows in cache.
cdef Py_ssize_t _prefetch_bytes = _CACHE_SIZES.get(2) or (1 << 20)


# softmax_backward prefetches only past half the LLC: its dot product's pass
# is bound by loads, and a prefetch takes a load's slot, so while the
# operands sit in L3 the hardware's prefetchers do better alone. Measured
# (float32 out=, interleaved calls in one process, time with / without the
# prefetches):
#  - AMD Zen 5 (L2 2 MiB, L3 32 MiB; median): 4096 x 128 (6 MiB of operands)
#    1.08-1.14 (AVX-512 and AVX2, 1 and 2 threads), 10922 x 128 and
#    1365 x 1000 (15 MiB) 1.03-1.20; 16384 x 128 (24 MiB) 0.78-0.97,
#    32768 x 128 0.75-0.99.
#  - AMD Zen 3 (L2 512 KiB, L3 32 MiB; AVX2, best of 4 rounds): 2048 x 128
#    (3 MiB) 1.18 / 1.10 (1 / 2 threads), 4096 x 128 1.21 / 1.19, 8192 x 128
#    1.14 / 0.98, 1024 x 1000 (12 MiB) 1.15 / 1.10; 16384 x 128 0.97 / 0.96,
#    100000 x 64 (73 MiB) 1.00 / 0.91, 16384 x 1000 0.98 / 1.04.
# Half the LLC is 8 L2s on the first and 32 on the second; the threshold is
# kept as a multiple of _prefetch_bytes, so that set_prefetch_bytes moves it
# too. The other ops keep the L2 threshold: log_softmax_backward prefetches
# in its exp pass, bound by arithmetic (AVX2, 1365 x 1000, time without /
# with: 1.24-1.33 on the Zen 5, 1.66 / 1.48 on the Zen 3), and softmax was
# even at 6 MiB on both (0.98-1.00).
# With an L1d of 32 KiB (AMD Zen 3, Zen 4) it does not prefetch at all:
# Zen 4, one thread, operands rotated past the L3, time without / with the
# prefetches: float32 16384 x 1000 0.79 (AVX-512) and 0.82 (AVX2) with
# regular stores, 0.79 and 0.86 streamed; float64 0.86 and 0.82, 0.87 and
# 0.82; 100000 x 64 0.92 and 0.94, 0.84 and 0.86; two threads 0.81-1.00. The
# rows in flight (the dot product's row and the one whose output it writes:
# 20 KiB of float32 rows of 1000) and the prefetched lines overflow such an
# L1. The Zen 3 above was even either way; the Zen 5 (48 KiB L1d) gained.
# softmax's long rows that keep their exps in the output (csm_long_rows,
# csm_long_softmax_kept) take the L2 threshold on every machine (a row past
# CSM_LONG_ROW, with its output, is past any L2 measured, so they prefetch):
# since their first pass takes a chunk in one read (csm_long_chunk), the Zen
# 4 no longer loses by them. Zen 4, float32 out= (NumPy's outputs), time
# with / without the prefetches, AVX-512 and AVX2, one thread then two, best
# of seven, one array called with its L3 flushed before each call (cold) or
# again at once (hot): 8 x 300000 cold 1.02 and 0.99, 0.91 and 0.95, hot
# 0.90 and 0.93, 0.94 and 0.95; 4 x 2^20 cold 0.98 and 1.01, 0.96 and 1.02,
# hot 0.97 and 0.99, 0.96 and 0.99; 8 x 2^20 cold 1.00 and 1.01, 1.01 and
# 1.02, hot 0.99 and 1.00, 0.99 and 1.00. Three shapes called in turn, each
# partly evicted by the others, best of five: 8 x 300000 0.89 and 0.89, 0.77
# and 0.80; 4 x 2^20 0.94 and 0.97, 0.71 and 0.85; 3 x 2^20 0.89 and 0.93,
# 0.92 and 0.90. 8 x 2^20 with three sets rotated 1.00 and 1.00, 0.98 and
# 1.01; float64 8 x 2^19 1.00 and 1.00, 0.98 and 1.00. (Before the one read
# they took 1.27x the time with them on the Zen 4.)
# The Jacobian keeps softmax_backward's rule on such an L1d: its prefetches
# fetch the next block of its output for ownership. Zen 4, out=, two outputs
# in turn (as bench_targets.py rotates them), time without / with, AVX-512
# and AVX2: float32 1000 x 100 one thread 0.77-0.79 and 0.76-0.84, two
# 0.93-0.97 and 0.91-0.98; float64 1000 x 100 (regular stores) one thread
# 0.79-0.82 and 0.80-0.84, two 0.93-0.97 and 0.81-0.92; float32 10000 x 32
# one thread 0.97 and 0.89-0.91, two 0.96-1.02 and 1.00-1.02.
cdef bint _l1_small = 0 < _CACHE_SIZES.get(1, 0) < 48 << 10
cdef Py_ssize_t _dot_prefetch_l2s = (
    1 << 40 if _l1_small
    else max(8, _llc_bytes() // (2 * _CACHE_SIZES[2])) if _CACHE_SIZES.get(2) and _llc_bytes() else 8)


def prefetch_bytes():
    """Calls whose operands and output exceed this many bytes prefetch rows
    ahead: the L2 cache's size."""
    return _prefetch_bytes


def set_prefetch_bytes(Py_ssize_t nbytes):
    """Set the prefetch threshold (tests, benchmarks); returns the old one."""
    global _prefetch_bytes
    if nbytes < 0:
        raise ValueError("set_prefetch_bytes: nbytes must be >= 0")
    old, _prefetch_bytes = _prefetch_bytes, nbytes
    return old


def stream_bytes():
    """Outputs of at least this many bytes (and reused, not freshly
    allocated), written by stream_threads() or more threads, are written
    with streaming stores: twice the LLC's size (at most 64 MiB of it) on an
    AMD CPU with AVX-512, that size once on other x86-64 CPUs. (The ops
    bound by their exps keep regular stores: stream_exp_ops.)"""
    return _stream_bytes


def long_stream_bytes():
    """log_softmax's rows past L2 (and softmax's past the kept length)
    stream outputs of at least this many bytes: stream_bytes(), halved where
    that is two LLCs (an AMD CPU with AVX-512)."""
    return _stream_bytes // _long_stream_div


def _set_long_stream_div(Py_ssize_t div):
    """Set the long rows' divisor of the streaming threshold (tests);
    returns the old one."""
    global _long_stream_div
    if div < 1:
        raise ValueError("_set_long_stream_div: div must be >= 1")
    old, _long_stream_div = _long_stream_div, div
    return old


def stream_threads():
    """Outputs are written with streaming stores only by calls that run on at
    least this many threads: 2 on an AMD CPU with AVX-512, else 1."""
    return _stream_threads


def set_stream_threads(int threads):
    """Set the least thread count that streams (tests, benchmarks); returns
    the old one."""
    global _stream_threads
    if threads < 1:
        raise ValueError("set_stream_threads: threads must be >= 1")
    old, _stream_threads = _stream_threads, threads
    return old


def stream_exp_ops():
    """Whether the ops that take an exp per element (softmax, log_softmax
    and log_softmax_backward) stream their outputs: False, but for softmax's
    and log_softmax's long rows, which stream as every other op does."""
    return bool(_stream_switch[SWITCH_EXP_OPS])


def set_stream_exp_ops(bint flag):
    """Let the ops that take an exp per element stream too (tests,
    benchmarks); returns the old setting."""
    return bool(_set_switch(SWITCH_EXP_OPS, flag))


def stream_jacobian():
    """Whether the Jacobian streams outputs past the threshold as the other
    ops do: True, but on an AMD Zen 4, where regular stores measured faster."""
    return bool(_stream_switch[SWITCH_JACOBIAN])


def set_stream_jacobian(bint flag):
    """Let the Jacobian stream (or not) past the threshold (tests,
    benchmarks); returns the old setting."""
    return bool(_set_switch(SWITCH_JACOBIAN, flag))


def widen_256():
    """Whether the AVX-512 kernels widen float32 terms to double four at a
    time in their sums: True on an AMD Zen 4, False elsewhere. The bits are
    the same either way."""
    return bool(csm_widen_256)


def set_widen_256(bint flag):
    """Widen four floats (True) or eight (False) per conversion in the
    AVX-512 kernels' sums (tests, benchmarks); returns the old setting."""
    global csm_widen_256
    old = csm_widen_256
    csm_widen_256 = flag
    return bool(old)


def set_stream_bytes(Py_ssize_t nbytes):
    """Set the streaming threshold (tests, benchmarks); returns the old one."""
    global _stream_bytes
    if nbytes < 0:
        raise ValueError("set_stream_bytes: nbytes must be >= 0")
    old, _stream_bytes = _stream_bytes, nbytes
    return old


# Scratch of the strided path that lives on the stack in a serial call, in
# elements (32 KiB of float32); larger scratch, and every thread's scratch in
# a parallel call, comes from malloc once per call and thread.
cdef enum:
    STACK_SCRATCH = 8192

ctypedef fused real_t:
    float
    double

# Fork safety. libgomp's thread pool does not survive fork(): a child forked
# after the parent ran a parallel region hangs in its first one. So a child
# of a process that ran csoftmax in parallel runs serially, for good (as
# PyTorch does); one forked before any parallel call keeps its threads.
cdef int _ran_parallel = 0
cdef int _serial_after_fork = 0


def _after_fork_in_child():
    global _serial_after_fork
    if _ran_parallel:
        _serial_after_fork = 1


if hasattr(os, "register_at_fork"):  # POSIX only
    os.register_at_fork(after_in_child=_after_fork_in_child)


# Busy machines. When other processes compete for the cores, a thread of
# ours can be descheduled while it holds a block; the calling thread then
# finishes every other block and waits at the end of the parallel region for
# up to a time slice (measured, 4096 x 128 float32 with one busy-loop process
# on a 2-core machine: 0.49 ms on one thread, 17.5 ms on two, dynamic
# schedule; 11.6 ms with the static one; shares with stealing, _shares.h,
# hold up one block as the dynamic schedule did). Such a call is easy to recognise
# afterwards: the calling thread ran out of blocks long before the region
# ended. After such a call, calls that use the default thread count run on
# the calling thread for a while (10 ms, doubling on each repeat up to 1 s;
# halved by a call without the stall), then try again. An explicit
# num_threads is always honoured. Results never depend on the thread count,
# so this changes only the speed.
cdef double _serial_until = 0.0
cdef double _penalty = 0.0

# The calling thread waited for more than this fraction of a parallel call...
cdef double STALL_FRACTION = 0.5
# ...of at least this many seconds (shorter calls are not worth a judgement:
# one block of another thread takes a few microseconds).
cdef double STALL_MIN_S = 50e-6
# Serial spell after the first stall, and its cap (doubling in between).
cdef double PENALTY_MIN_S = 0.01
cdef double PENALTY_MAX_S = 1.0


def contention():
    """The busy-machine state: seconds the default thread count stays at one
    thread, and the current length of a serial spell."""
    return {"serial_for_s": max(0.0, _serial_until - csm_now()), "penalty_s": _penalty}


def serial_after_fork():
    """True in a forked child that runs serially (see above)."""
    return bool(_serial_after_fork)


cdef inline void _row_block(int op, const real_t* a, Py_ssize_t lda, const real_t* b,
                            Py_ssize_t ldb, real_t* out, Py_ssize_t ldo, Py_ssize_t n,
                            Py_ssize_t k, int kflags) noexcept nogil:
    if real_t is float:
        csm_rows_f32[op](a, lda, b, ldb, out, ldo, n, k, kflags)
    else:
        csm_rows_f64[op](a, lda, b, ldb, out, ldo, n, k, kflags)


cdef inline void _strided_block(int op, const real_t* a, Py_ssize_t ars, Py_ssize_t acs,
                                const real_t* b, Py_ssize_t brs, Py_ssize_t bcs,
                                real_t* out, Py_ssize_t ors, Py_ssize_t ocs,
                                Py_ssize_t n, Py_ssize_t k, real_t* buf) noexcept nogil:
    if real_t is float:
        csm_strided_f32(op, a, ars, acs, b, brs, bcs, out, ors, ocs, n, k, buf)
    else:
        csm_strided_f64(op, a, ars, acs, b, brs, bcs, out, ors, ocs, n, k, buf)


cdef inline void _masked_block(int op, const real_t* a, Py_ssize_t ars, Py_ssize_t acs,
                               const real_t* b, Py_ssize_t brs, Py_ssize_t bcs,
                               const unsigned char* m, Py_ssize_t mrs, Py_ssize_t mcs,
                               real_t* out, Py_ssize_t ors, Py_ssize_t ocs,
                               Py_ssize_t n, Py_ssize_t k, real_t* buf) noexcept nogil:
    if real_t is float:
        csm_masked_f32(op, a, ars, acs, b, brs, bcs, m, mrs, mcs, out, ors, ocs, n, k, buf)
    else:
        csm_masked_f64(op, a, ars, acs, b, brs, bcs, m, mrs, mcs, out, ors, ocs, n, k, buf)


cdef inline void _block(int op, bint rowwise, Py_ssize_t c, Py_ssize_t block,
                        const real_t* a, Py_ssize_t ars, Py_ssize_t acs,
                        const real_t* b, Py_ssize_t brs, Py_ssize_t bcs,
                        const unsigned char* m, Py_ssize_t mrs, Py_ssize_t mcs,
                        real_t* out, Py_ssize_t ors, Py_ssize_t ocs,
                        Py_ssize_t n, Py_ssize_t k, int kflags, real_t* buf) noexcept nogil:
    cdef Py_ssize_t r0 = c * block
    cdef Py_ssize_t nr = n - r0 if n - r0 < block else block
    if m != NULL or (op == OP_LOGSUMEXP and not rowwise):
        # The masked family: rows in place or gathered (see _masked_impl.h).
        _masked_block(op, a + r0 * ars, ars, acs, b + r0 * brs, brs, bcs,
                      m + r0 * mrs if m != NULL else NULL, mrs, mcs,
                      out + r0 * ors, ors, ocs, nr, k, buf)
    elif rowwise:
        _row_block(op, a + r0 * ars, ars, b + r0 * brs, brs, out + r0 * ors, ors, nr, k, kflags)
    else:
        _strided_block(op, a + r0 * ars, ars, acs, b + r0 * brs, brs, bcs,
                       out + r0 * ors, ors, ocs, nr, k, buf)


cdef int _serial_strided(int op, Py_ssize_t n_blocks, Py_ssize_t block,
                         const real_t* a, Py_ssize_t ars, Py_ssize_t acs,
                         const real_t* b, Py_ssize_t brs, Py_ssize_t bcs,
                         const unsigned char* m, Py_ssize_t mrs, Py_ssize_t mcs,
                         real_t* out, Py_ssize_t ors, Py_ssize_t ocs,
                         Py_ssize_t n, Py_ssize_t k, Py_ssize_t scratch) noexcept nogil:
    # A function of its own, so that the stack scratch is not part of every
    # call's frame: a 64 KiB frame costs a page probe per 4 KiB.
    cdef real_t stack_buf[STACK_SCRATCH]
    cdef real_t* buf = stack_buf
    cdef Py_ssize_t c
    if scratch > STACK_SCRATCH:
        buf = <real_t*>malloc(scratch * sizeof(real_t))
        if buf == NULL:
            return RUN_NO_MEMORY
    for c in range(n_blocks):
        _block(op, False, c, block, a, ars, acs, b, brs, bcs, m, mrs, mcs, out, ors, ocs, n, k,
               0, buf)
    if buf != stack_buf:
        free(buf)
    return RUN_OK


cdef struct Plan:
    # How a call runs: decided by _plan alone, so that tests can observe it.
    bint rowwise            # row kernels (unit column strides), else lane kernels
    Py_ssize_t block        # rows per block
    Py_ssize_t n_blocks
    Py_ssize_t scratch      # elements of lane scratch per thread (0: none)
    bint stream             # streaming stores for the output
    bint keep               # softmax's long rows keep their exps in a scratch row (with stream)
    bint prefetch           # the row kernels prefetch the rows ahead
    int num_threads         # 1: the calling thread alone
    bint default_threads    # num_threads was not given: the busy-machine check applies
    bint marks_burst        # work of at least PARALLEL_GRAIN: its end starts a burst


cdef inline Py_ssize_t _vec_bwd_hi(Py_ssize_t itemsize) noexcept nogil:
    """The longest backward rows csm_vec_bwd_rows takes under the ISA in use."""
    return (CSM_VEC_BWD_K_AVX2_F64 if csm_isa_in_use == CSM_ISA_AVX2 and itemsize == 8
            else CSM_VEC_BWD_K)


cdef inline Py_ssize_t _long_group_block(Py_ssize_t n) noexcept nogil:
    """Rows per block of the strided rows past L2 (csm_long_rows_strided,
    csm_long_lse_strided), which read up to CSM_LONG_GROUP interleaved rows
    together: an even share for each of the default team's threads where
    that is fewer."""
    cdef Py_ssize_t block = (n + _team - 1) // _team
    return block if block < CSM_LONG_GROUP else CSM_LONG_GROUP


# log_softmax's rows past L2 run their streamed output pass beside the first
# pass of the row after them (csm_out_pass_t in _rows_impl.h), within a
# block: so they take up to this many rows per block, an even share for each
# of the default team's threads where that is fewer. AMD Zen 4 (AVX-512), 8
# x 2^20 float32 out=, rotated operands, one process alternating the
# settings, time against blocks of one row: 4 rows 0.97 (one thread) and
# 0.89 (two), medians of eight alternations; in a shorter run, 2 rows 0.98
# and 0.88 where 4 rows gave 0.96 and 0.83. Four rows of 2^20 still leave
# a thread's block a few milliseconds, for the shares to balance
# (_shares.h).
cdef Py_ssize_t _long_pipe_rows = 4


def set_long_pipe_rows(Py_ssize_t rows):
    """Sets the rows per block of log_softmax's rows past L2 (1: each row
    alone, its output pass after its own first pass); returns the old
    value. For tests and measurements: the bits never change."""
    global _long_pipe_rows
    if rows < 1:
        raise ValueError("set_long_pipe_rows: rows must be >= 1")
    old = _long_pipe_rows
    _long_pipe_rows = rows
    return old


cdef inline Py_ssize_t _long_pipe_block(Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t block = (n + _team - 1) // _team
    return block if block < _long_pipe_rows else _long_pipe_rows


cdef inline int _solo_rows(int op, Py_ssize_t n, Py_ssize_t k, Py_ssize_t itemsize,
                           Plan* p) noexcept nogil:
    """Once the call's thread count is known: log_softmax's rows past L2
    run each alone (blocks of one row, no output pass beside the next row's
    first pass) where the AVX2 kernels run them on one thread. There, since
    their first pass takes each chunk in one read (csm_long_chunk), the
    pipeline cost more than it hid: AMD Zen 4, 8 x 2^20 float32 out=, rotated
    operands, twelve alternations in one process, ms, blocks of one row /
    of four: AVX2 one thread 3.41 / 3.57 (medians; best 3.38 / 3.53), two
    threads 2.24 / 2.11; AVX-512 one thread 3.10 / 2.98. Returns RUN_OK."""
    if (p.num_threads == 1 and op == OP_LOG_SOFTMAX and p.rowwise and k * itemsize > CSM_LONG_ROW
            and csm_isa_in_use == CSM_ISA_AVX2):
        p.block = 1
        p.n_blocks = n
    return RUN_OK


cdef int _plan(int op, Py_ssize_t n, Py_ssize_t k, Py_ssize_t acs, Py_ssize_t bcs,
               Py_ssize_t ocs, int num_threads, int flags, Py_ssize_t itemsize,
               Plan* p, bint masked=False, Py_ssize_t mcs=1) noexcept nogil:
    """The plan of a call of n >= 1 rows of k >= 1 elements; RUN_INVALID for
    a layout the op has no kernels for. masked: a mask with column stride
    mcs comes with the call."""
    cdef bint jacobian = op == OP_SOFTMAX_JACOBIAN
    cdef bint shaped = jacobian or op == OP_LOGSUMEXP  # out is not shaped like a row
    cdef Py_ssize_t lanes = 1, work, foot, cost, pf_bytes
    cdef bint big_out, long_rows, nt_rows, past_l2, forward
    cdef Py_ssize_t reg_bytes
    cdef Py_ssize_t kept_row_bytes
    # The row kernels take unit column strides (every stride is unit when
    # K == 1); everything else goes through the lane layout, or, for the
    # masked family, through a gathered row.
    p.rowwise = k == 1 or (acs == 1 and bcs == 1 and (ocs == 1 or shaped)
                           and (not masked or mcs == 1))
    p.scratch = 0
    if masked or op == OP_LOGSUMEXP:
        if op >= OP_EXP:  # the test ops take no mask
            return RUN_INVALID
        p.block = BLOCK_ELEMS // k
        if p.block < 1:
            p.block = 1
        if masked or not p.rowwise:  # logsumexp's own rows need none
            p.scratch = csm_masked_scratch(k)
        if not p.rowwise:
            # Staged rows (csm_masked_staged): whole groups where a block
            # has that many rows.
            p.scratch += csm_staged_scratch(k, itemsize)
            if p.block < csm_stage_rows(k):
                p.block = csm_stage_rows(k)
        if not masked and not p.rowwise and k * itemsize > CSM_LONG_ROW:
            p.block = _long_group_block(n)  # csm_long_lse_strided
    elif p.rowwise:
        work = n * k // _block_share
        if work < BLOCK_ELEMS:
            work = BLOCK_ELEMS
        if work > BLOCK_MAX_ELEMS:
            work = BLOCK_MAX_ELEMS
        p.block = work // k
        if p.block < 1:
            p.block = 1
        if op == OP_LOG_SOFTMAX and k * itemsize > CSM_LONG_ROW:
            p.block = _long_pipe_block(n)
    else:
        if op >= OP_EXP:  # the test ops have row kernels only
            return RUN_INVALID
        # Whole lane groups per block, so that no group is split.
        lanes = csm_lane_count(k)
        p.block = (BLOCK_ELEMS // k) // lanes * lanes
        if p.block < lanes:
            p.block = lanes
        p.scratch = lanes * k
        past_l2 = k * itemsize > CSM_LONG_ROW
        forward = op == OP_SOFTMAX or op == OP_LOG_SOFTMAX
        if past_l2 and (forward or op == OP_SOFTMAX_BACKWARD or op == OP_LOG_SOFTMAX_BACKWARD):
            # csm_long_rows_strided's and csm_long_bwd_strided's groups, and
            # their scratch (per operand); the forward ops' rows that are
            # gathered one by one take a whole row.
            p.block = _long_group_block(n)
            if csm_long_strided_scratch(k) > p.scratch:
                p.scratch = csm_long_strided_scratch(k)
        if op == OP_SOFTMAX_BACKWARD or op == OP_LOG_SOFTMAX_BACKWARD:
            p.scratch = 2 * p.scratch
        # Staged rows (csm_staged_rows; the Jacobian's rows of s are
        # contiguous); not the forward ops' rows past L2.
        if not (past_l2 and forward):
            if ((csm_staged_k(k) or ocs == 1 or jacobian)
                    and csm_staged_scratch(k, itemsize) > p.scratch):
                p.scratch = csm_staged_scratch(k, itemsize)
            if csm_staged_k(k) and not past_l2:  # a group per block
                lanes = CSM_STAGE_ROWS
                p.block = CSM_STAGE_ROWS
    p.n_blocks = (n + p.block - 1) // p.block
    # An even share for the default team (_team, fixed at import, as
    # _block_share): the block count rounded up to a multiple of it, the rows
    # spread evenly over the blocks (whole lane groups where the lanes run).
    # Three blocks of 409 rows (softmax_backward 1024 x 10) left one thread
    # 615 rows and the other 409; now four of 256. Still never the call's
    # thread count.
    if p.n_blocks > 1 and p.n_blocks % _team:
        p.n_blocks += _team - p.n_blocks % _team
        p.block = (n + p.n_blocks - 1) // p.n_blocks
        p.block = (p.block + lanes - 1) // lanes * lanes
        p.n_blocks = (n + p.block - 1) // p.block
    work = n * k
    if jacobian:
        work = work * k
    # Streaming never changes a value, only how it reaches memory. (The
    # masked family writes with regular stores, and so do the ops bound by
    # their exps: SWITCH_EXP_OPS; the Jacobian on a Zen 4: SWITCH_JACOBIAN.)
    # It needs _stream_threads.
    # At least the threshold, not past it: an output as large as the LLC
    # cannot stay there beside its input (softmax and log_softmax 8 x 2^20
    # float32, 32 MiB, on a 32 MiB L3, AVX2, rotated inputs: log_softmax
    # took 0.86-0.87x the time of regular stores at 1 and 2 threads).
    long_rows = (op == OP_SOFTMAX or op == OP_LOG_SOFTMAX) and k * itemsize > CSM_LONG_ROW
    # softmax_backward weighs its operands with its output: it streams from
    # its registers (csm_softmax_backward_nt), with no pass through scratch
    # to pay for, and two inputs that pass through the LLC with the output
    # evict it before a consumer could read it there. AMD Zen 3, AVX2 (32
    # MiB L3), float32 out=, us regular / streamed, one and two threads:
    # 21845 x 128 (32 MiB of operands and output) with the same operands at
    # each call 1190 / 990 and 698 / 505, rotated 1594 / 1350 and 1210 /
    # 946; 16384 x 128 (24 MiB) the same 824 / 845 and 411 / 529, rotated
    # 1211 / 989 and 917 / 721; 100000 x 64 rotated 3559 / 2772 and 2543 /
    # 2247.
    # log_softmax streams its rows from the registers too (csm_log_nt in
    # _rows_impl.h: rows past the short rows, under a register form; see
    # PLAN_OUT_PACKED below), and weighs its input with its output as
    # softmax_backward does. AMD Zen 3, AVX2, float32 out=, each setting in
    # its own run of calls, ms regular / streamed (medians), one and two
    # threads, rotated inputs: 100000 x 64 4.43 / 4.09 and 3.26 / 2.92,
    # 50000 x 128 5.65 / 4.90 and 3.55 / 3.01, 16384 x 1000 10.43 / 9.74 and
    # 7.39 / 6.29; the same operands at each call: 100000 x 64 5.16 / 5.07
    # and 2.65 / 2.55, 40000 x 128 4.37 / 4.07 and 2.82 / 2.30, 16384 x 256
    # (32 MiB of input and output) 3.85 / 3.46 and 1.84 / 1.90.
    # So does log_softmax_backward (csm_log_softmax_backward_nt), with its
    # two inputs, in rows of at least 1 KiB: AMD Zen 3, AVX2, out=, rotated
    # operands, each setting in its own run of calls, medians, ratio to the
    # 3-array add in the same run, regular / streamed, one and two threads:
    # float32 16384 x 1000 1.02-1.05 / 0.78-0.81 and 1.08 / 0.86, 65536 x 256
    # 1.13 / 0.78 and 1.11 / 0.75, 32768 x 512 1.16 / 0.88 and 0.92 / 0.75;
    # float64 16384 x 1000 1.10-1.25 / 0.95-0.98 and 1.05-1.22 / 0.92-1.12,
    # 65536 x 128 1.38 / 1.36 and 1.09 / 0.94. Shorter rows gained nothing
    # at one thread there (their register across each row boundary is
    # computed twice, once per row, and the rows are few registers long):
    # float32 100000 x 64, four runs, 0.98-1.45 / 1.04-1.36, 50000 x 128
    # 1.01-1.19 / 0.98-1.30; so they kept regular stores below 1 KiB. On an
    # Intel Xeon (AVX-512), one process alternating the two, operands
    # rotated, time streamed / regular: 100000 x 64 0.64 (3.65 / 5.70 ms)
    # at one thread and 0.65 at two. Every row past the short rows'
    # kernels (csm_short_bwd_k) now streams where the rule says.
    # softmax streams such rows from 512 bytes up to what its
    # ring of exps holds (CSM_SOFTMAX_NT_ROWS in _rows.h, with the numbers),
    # weighing its input with its output as log_softmax does.
    # Rows that follow one another in the output stream at any K of a
    # register or more (csm_nt_rows); others must be whole registers. Intel
    # Xeon (AVX-512), float32 16384 x 1000, out=, rotated operands, time
    # streamed / regular, one and two threads: log_softmax_backward 0.76 and
    # 0.76, log_softmax 0.90 and 0.92, softmax 1.02 and 0.94.
    reg_bytes = 64 if csm_isa_in_use > CSM_ISA_AVX2 else 32
    nt_rows = (p.rowwise and csm_isa_in_use >= CSM_ISA_AVX2
               and (k * itemsize % reg_bytes == 0
                    or (flags & PLAN_OUT_PACKED and k * itemsize >= reg_bytes))
               and (((op == OP_LOG_SOFTMAX and not long_rows)
                     or (op == OP_SOFTMAX and CSM_SOFTMAX_NT_ROWS(k, itemsize)))
                    and k > CSM_SMALL_FWD_K_ISA(csm_isa_in_use)
                    or (op == OP_LOG_SOFTMAX_BACKWARD and k > _vec_bwd_hi(itemsize))))
    foot = work
    if op == OP_SOFTMAX_BACKWARD or nt_rows:
        foot = work + n * k * csm_op_arity[op]
    kept_row_bytes = (2 * k * itemsize if op == OP_SOFTMAX and long_rows and k <= CSM_LONG_KEEP
                      else 0)
    big_out = (not (flags & RUN_FRESH_OUT) and not masked
               and foot * itemsize >= (_stream_bytes // _long_stream_div
                                       if long_rows and not kept_row_bytes else _stream_bytes)
               and (csm_op_cost[op] < 3 or long_rows or nt_rows or _stream_switch[SWITCH_EXP_OPS])
               and (_stream_switch[SWITCH_JACOBIAN] or not jacobian))
    # softmax's long rows of at most CSM_LONG_KEEP elements keep their exps
    # in the output (csm_long_rows) and compute them again from x where it
    # streams: a second exp per element. While the rows in flight (one per
    # thread, input and output) take under the streaming threshold, the kept
    # exps come back from the LLC instead, and regular stores cost less. AMD
    # Zen 3 (32 MiB L3, the threshold), AVX2, float32 out=, rotated inputs,
    # ms streamed / regular, one thread: 16 x 2^19 6.85-7.03 / 5.55-5.98,
    # 8 x 2^20 (three runs) 6.68-7.83 / 5.49-7.43, 8 x 2^21 13.67-13.99 /
    # 13.07-13.23, but 4 x 2^22 (16 MiB rows) 13.48-13.99 / 14.54-14.87.
    # float32 rows on two threads or more instead keep their exps in a
    # scratch row in the LLC and stream from it (keep; CSM_RUN_KEEP): one
    # exp per element and no reads for ownership. Same machine, out=, one
    # process alternating the settings call by call, 40-60 calls each,
    # medians of the per-call ratios, scratch / regular: 8 x 2^20 float32,
    # two threads, 0.84 and 0.91 with the same operands at each call, 0.84
    # and 1.02 rotated; one thread 0.93 and 1.21 (rotated); float64
    # 8 x 2^19, bound by its exps, 1.13 and 1.08-1.13 (one and two threads).
    p.stream = big_out and _stream_threads <= 1 and not 0 < kept_row_bytes < _stream_bytes
    p.keep = False
    pf_bytes = _prefetch_bytes
    if op == OP_SOFTMAX_BACKWARD or (jacobian and _l1_small):  # (the tests set thresholds up to 2^62)
        pf_bytes = (_prefetch_bytes * _dot_prefetch_l2s
                    if _prefetch_bytes <= PY_SSIZE_T_MAX // _dot_prefetch_l2s else PY_SSIZE_T_MAX)
    p.prefetch = (work + n * k * csm_op_arity[op]) * itemsize > pf_bytes
    p.default_threads = num_threads <= 0
    p.num_threads = 1
    cost = n * (work // n + ROW_COST) * csm_op_cost[op]
    p.marks_burst = cost >= PARALLEL_GRAIN
    if _serial_after_fork or cost < PARALLEL_GRAIN:
        # Before any OpenMP query: libgomp's omp_get_num_procs reads the
        # affinity mask by a syscall on every call (perf: a quarter of a
        # 1x10 softmax call, at both of its call sites below).
        return _solo_rows(op, n, k, itemsize, p)
    if cost < WAKE_GRAIN and not (flags & PLAN_IN_BURST):
        if flags & PLAN_ISOLATED or csm_now() >= _burst_until:
            return _solo_rows(op, n, k, itemsize, p)
    if p.default_threads:
        num_threads = csm_max_threads()
    # A thread without a block would idle, and a huge request must not spawn
    # a huge team: 16 threads per processor is past any useful oversubscription.
    if num_threads > p.n_blocks:
        num_threads = <int>p.n_blocks
    if num_threads > 16 and num_threads > 16 * csm_num_procs():
        num_threads = 16 * csm_num_procs()
    if p.default_threads and num_threads > 1 and _serial_until > 0.0:
        if csm_now() < _serial_until:
            num_threads = 1
    p.num_threads = num_threads
    p.keep = (big_out and num_threads >= 2 and num_threads >= _stream_threads and itemsize == 4
              and 0 < kept_row_bytes * num_threads < _stream_bytes)
    p.stream = (big_out and num_threads >= _stream_threads
                and (p.keep or not 0 < kept_row_bytes * num_threads < _stream_bytes))
    return _solo_rows(op, n, k, itemsize, p)


cdef int _run(int op, const real_t* a, Py_ssize_t ars, Py_ssize_t acs,
              const real_t* b, Py_ssize_t brs, Py_ssize_t bcs,
              const unsigned char* m, Py_ssize_t mrs, Py_ssize_t mcs,
              real_t* out, Py_ssize_t ors, Py_ssize_t ocs,
              Py_ssize_t n, Py_ssize_t k, int num_threads, int flags) noexcept nogil:
    global _ran_parallel
    cdef Py_ssize_t c, block, n_blocks, scratch
    cdef int kflags, failed = 0
    cdef bint rowwise
    cdef real_t* buf = NULL
    cdef Plan p
    if op < 0 or op >= N_OPS or n < 0 or k < 0 or csm_op_out[op] == CSM_OUT_LOSS:
        return RUN_INVALID  # (the loss has a launcher of its own: run_xent)
    if n == 0 or k == 0:
        return RUN_OK
    if b == NULL:
        b = a
        brs = ars
        bcs = acs
    if n == 1:  # a lone row's row stride is never used
        ars = brs = k
        mrs = 0
        if op != OP_SOFTMAX_JACOBIAN and op != OP_LOGSUMEXP:
            ors = k
    if k == 1:  # nor is a one-element row's column stride
        mcs = 1
    if ors == k and ocs == 1:
        flags |= PLAN_OUT_PACKED
    if _plan(op, n, k, acs, bcs, ocs, num_threads, flags, sizeof(real_t), &p,
             m != NULL, mcs) != RUN_OK:
        return RUN_INVALID
    rowwise, block, n_blocks, scratch = p.rowwise, p.block, p.n_blocks, p.scratch
    kflags = ((CSM_RUN_STREAM if p.stream else 0) | (CSM_RUN_PREFETCH if p.prefetch else 0)
              | (CSM_RUN_KEEP if p.keep else 0))
    num_threads = p.num_threads
    cdef int rc = RUN_OK
    if num_threads <= 1:
        if rowwise and scratch == 0:
            for c in range(n_blocks):
                _block(op, True, c, block, a, ars, acs, b, brs, bcs, m, mrs, mcs, out, ors, ocs,
                       n, k, kflags, buf)
        else:
            rc = _serial_strided(op, n_blocks, block, a, ars, acs, b, brs, bcs, m, mrs, mcs,
                                 out, ors, ocs, n, k, scratch)
        _mark_burst(&p)
        return rc
    _ran_parallel = 1
    # Each thread takes its own share of the blocks first, then steals from
    # the others' (_shares.h says why).
    cdef Shares sh
    _shares_open(&sh, num_threads, n_blocks)
    cdef double t_start = csm_now(), t_caller = t_start, t_end
    cdef double* t_caller_p = &t_caller  # written through: shared, not lastprivate
    cdef int* failed_p = &failed
    # (Cython makes them firstprivate: initialised, so that no copy is read unset.)
    cdef int tid = 0, visit = 0
    c = 0
    with parallel(num_threads=num_threads):
        buf = NULL
        tid = threadid()
        visit = 0
        if scratch > 0:
            buf = <real_t*>malloc(scratch * sizeof(real_t))
        while True:
            c = csm_shares_take(sh.s, sh.count, tid, &visit)
            if c < 0:
                break
            if scratch > 0 and buf == NULL:
                failed_p[0] = 1
            else:
                _block(op, rowwise, c, block, a, ars, acs, b, brs, bcs, m, mrs, mcs, out, ors,
                       ocs, n, k, kflags, buf)
            if tid == 0:
                t_caller_p[0] = csm_now()
        free(buf)
    free(sh.raw)
    if p.default_threads:
        t_end = csm_now()
        _judge(t_start, t_caller, t_end)
    _mark_burst(&p)
    return RUN_NO_MEMORY if failed else RUN_OK


cdef struct Shares:
    void* raw           # the allocation (free it)
    csm_share_t* s      # count shares, each on a cache line of its own
    int count
    csm_share_t one     # the one share where the others cannot be allocated


cdef void _shares_open(Shares* sh, int count, Py_ssize_t n_blocks) noexcept nogil:
    """A parallel loop's shares of n_blocks blocks, one per thread; where
    they cannot be allocated, one share that every thread takes from (a
    dynamic schedule)."""
    sh.raw = malloc((count + 1) * sizeof(csm_share_t))
    if sh.raw == NULL:
        sh.s = &sh.one
        sh.count = 1
    else:
        sh.s = <csm_share_t*>((<uintptr_t>sh.raw + 63) & ~(<uintptr_t>63))
        sh.count = count
    csm_shares_init(sh.s, sh.count, n_blocks)


cdef inline void _mark_burst(const Plan* p) noexcept nogil:
    """After a call of at least PARALLEL_GRAIN: the next one that starts
    within BURST_S is in a burst (see WAKE_GRAIN)."""
    global _burst_until
    if p.marks_burst:
        _burst_until = csm_now() + BURST_S


cdef void _judge(double t_start, double t_caller, double t_end) noexcept nogil:
    """The contention check after a parallel call (see _serial_until)."""
    global _penalty, _serial_until
    if t_end - t_start < STALL_MIN_S:
        return
    if t_end - t_caller > STALL_FRACTION * (t_end - t_start):
        _penalty = PENALTY_MIN_S if _penalty < PENALTY_MIN_S else 2 * _penalty
        if _penalty > PENALTY_MAX_S:
            _penalty = PENALTY_MAX_S
        _serial_until = t_end + _penalty
    else:
        # Halved, not reset: under a steady load one lucky call must not
        # bring back frequent stalls.
        _penalty = 0.5 * _penalty
        _serial_until = 0.0


cdef int run_f32(int op, const float* a, Py_ssize_t ars, Py_ssize_t acs,
                 const float* b, Py_ssize_t brs, Py_ssize_t bcs,
                 float* out, Py_ssize_t ors, Py_ssize_t ocs,
                 Py_ssize_t n, Py_ssize_t k, int num_threads, int flags) noexcept nogil:
    return _run(op, a, ars, acs, b, brs, bcs, NULL, 0, 0, out, ors, ocs, n, k, num_threads, flags)


cdef int run_f64(int op, const double* a, Py_ssize_t ars, Py_ssize_t acs,
                 const double* b, Py_ssize_t brs, Py_ssize_t bcs,
                 double* out, Py_ssize_t ors, Py_ssize_t ocs,
                 Py_ssize_t n, Py_ssize_t k, int num_threads, int flags) noexcept nogil:
    return _run(op, a, ars, acs, b, brs, bcs, NULL, 0, 0, out, ors, ocs, n, k, num_threads, flags)


cdef int run_masked_f32(int op, const float* a, Py_ssize_t ars, Py_ssize_t acs,
                        const float* b, Py_ssize_t brs, Py_ssize_t bcs,
                        const unsigned char* m, Py_ssize_t mrs, Py_ssize_t mcs,
                        float* out, Py_ssize_t ors, Py_ssize_t ocs,
                        Py_ssize_t n, Py_ssize_t k, int num_threads, int flags) noexcept nogil:
    return _run(op, a, ars, acs, b, brs, bcs, m, mrs, mcs, out, ors, ocs, n, k, num_threads, flags)


cdef int run_masked_f64(int op, const double* a, Py_ssize_t ars, Py_ssize_t acs,
                        const double* b, Py_ssize_t brs, Py_ssize_t bcs,
                        const unsigned char* m, Py_ssize_t mrs, Py_ssize_t mcs,
                        double* out, Py_ssize_t ors, Py_ssize_t ocs,
                        Py_ssize_t n, Py_ssize_t k, int num_threads, int flags) noexcept nogil:
    return _run(op, a, ars, acs, b, brs, bcs, m, mrs, mcs, out, ors, ocs, n, k, num_threads, flags)



cdef int run_xent(bint f32, const csm_xent_args* args, Py_ssize_t n, int num_threads) noexcept nogil:
    """The fused softmax cross-entropy (csm_xent_rows, _loss_impl.h) on n rows
    of args.K elements with unit column stride: per-row losses into
    args.loss, the gradient into args.grad. Blocks and threads as _plan
    decides them for a row op; each row is computed by one thread, whichever,
    so the results do not depend on the thread count."""
    global _ran_parallel
    cdef Py_ssize_t c, r0, r1, k = args.K
    cdef Plan p
    cdef csm_xent_fn fn = csm_xent_f32 if f32 else csm_xent_f64
    if n < 0 or k < 0:
        return RUN_INVALID
    if n == 0 or k == 0:
        return RUN_OK
    _plan(OP_SOFTMAX_CROSS_ENTROPY, n, k, 1, 1, 1, num_threads, RUN_FRESH_OUT,
          4 if f32 else 8, &p)
    if p.num_threads <= 1:
        fn(args, 0, n)
        _mark_burst(&p)
        return RUN_OK
    _ran_parallel = 1
    cdef Shares sh
    _shares_open(&sh, p.num_threads, p.n_blocks)
    cdef double t_start = csm_now(), t_caller = t_start, t_end
    cdef double* t_caller_p = &t_caller  # written through: shared, not lastprivate
    cdef int tid = 0, visit = 0
    c = r0 = r1 = 0  # (firstprivate: see _run)
    with parallel(num_threads=p.num_threads):
        tid = threadid()
        visit = 0
        while True:
            c = csm_shares_take(sh.s, sh.count, tid, &visit)
            if c < 0:
                break
            r0 = c * p.block
            r1 = r0 + p.block
            if r1 > n:
                r1 = n
            fn(args, r0, r1)
            if tid == 0:
                t_caller_p[0] = csm_now()
    free(sh.raw)
    if p.default_threads:
        t_end = csm_now()
        _judge(t_start, t_caller, t_end)
    _mark_burst(&p)
    return RUN_OK

# ---- the ISA switch and introspection -----------------------------------------

# The build's constants, for tests that sit on their boundaries.
CONSTANTS = {
    "small_k": CSM_SMALL_K,
    "small_fwd_k": CSM_SMALL_FWD_K,
    "rows_at_once": CSM_ROWS_MAX,
    "rows_at_once_k": CSM_ROWS_MAX_K,
    "lanes": CSM_LANES,
    "stage_rows": CSM_STAGE_ROWS,
    "stage_rows_short": csm_stage_rows(1),
    "lane_scratch": CSM_LANE_SCRATCH,
    "long_group": CSM_LONG_GROUP,
    "long_row_bytes": CSM_LONG_ROW,
    "softmax_nt_min_bytes": CSM_NT_MIN_BYTES,
    "softmax_nt_ring_bytes": CSM_NT_RING_BYTES,
    "softmax_nt_groups": CSM_NT_GROUPS,
    "long_chunk": CSM_LONG_CHUNK,
    "long_keep": CSM_LONG_KEEP,
    "small_bwd_k": CSM_SMALL_BWD_K,
    "vec_bwd_min": CSM_VEC_BWD_MIN,
    "vec_bwd_k": CSM_VEC_BWD_K,
    "vec_bwd_k_avx2_f64": CSM_VEC_BWD_K_AVX2_F64,
    "bwd_pipe_bytes": CSM_BWD_PIPE_BYTES,
    "block_elems": BLOCK_ELEMS,
    "block_share": _block_share,
    "team": _team,
    "block_max_elems": BLOCK_MAX_ELEMS,
    "parallel_grain": PARALLEL_GRAIN,
    "row_cost": ROW_COST,
    "wake_grain": WAKE_GRAIN,
    "burst_s": BURST_S,
}


def plan(str op, Py_ssize_t n, Py_ssize_t k, dtype="float32", bint unit_columns=True,
         bint fresh_out=False, int num_threads=0, bint masked=False, burst=True,
         bint packed_out=True):
    """How a call would run, as the engine decides it: for tests and for
    anyone who wants to know. op is an op name (see OP_NAMES); unit_columns:
    every operand has unit column stride (C order along the rows); masked:
    the call has a mask (where=); burst: the call comes within a burst of
    calls (True), alone (False), or None: as the engine sees it now (see
    WAKE_GRAIN); packed_out: the output's rows follow one another (C order)."""
    cdef Plan p
    cdef int code = OP_NAMES.index(op)
    cdef Py_ssize_t cs = 1 if unit_columns else 2
    cdef Py_ssize_t itemsize = 4 if str(dtype) == "float32" else 8
    if n < 1 or k < 1:
        raise ValueError("plan: n and k must be positive")
    cdef int flags = RUN_FRESH_OUT if fresh_out else 0
    if burst is not None:
        flags |= PLAN_IN_BURST if burst else PLAN_ISOLATED
    if packed_out and unit_columns:
        flags |= PLAN_OUT_PACKED
    if _plan(code, n, k, cs, cs, cs, num_threads, flags, itemsize, &p, masked, cs) != RUN_OK:
        raise ValueError(f"plan: {op} has no kernels for this layout")
    bwd = code in (OP_SOFTMAX_BACKWARD, OP_LOG_SOFTMAX_BACKWARD)
    # csm_vec_bwd_rows exists in the AVX2 and AVX-512 kernels only.
    vec_hi = _vec_bwd_hi(itemsize)
    vec = (p.rowwise and not masked and bwd and csm_isa_in_use >= CSM_ISA_AVX2
           and CSM_VEC_BWD_MIN <= k <= vec_hi)
    small = p.rowwise and not masked and not vec and (
        (k <= CSM_SMALL_FWD_K_ISA(csm_isa_in_use) and code in (OP_SOFTMAX, OP_LOG_SOFTMAX))
        or (k <= CSM_SMALL_BWD_K and bwd))
    gathered = "gathered rows" if masked or code == OP_LOGSUMEXP else "lanes"
    return {"path": "row vectors" if vec else "small rows" if small else ("rows" if p.rowwise else gathered),
            "block": p.block, "n_blocks": p.n_blocks, "stream": bool(p.stream), "keep": bool(p.keep),
            "prefetch": bool(p.prefetch),
            "threads": p.num_threads,
            "group": csm_lane_count(k) if not p.rowwise and not masked and code != OP_LOGSUMEXP else 1}


def streamed_blocks():
    """Blocks of rows written with streaming stores since the module loaded."""
    return csm_streamed_blocks


def _shares_walk(Py_ssize_t n_blocks, int count, order):
    """For the tests: the claims of threads that take turns as `order` says
    (thread ids below 64, one claim per entry) on n_blocks blocks split into
    count shares: a list of (thread, block), block -1 where the thread found
    none left."""
    cdef Shares sh
    cdef int visits[64]
    cdef int t
    for t in range(64):
        visits[t] = 0
    _shares_open(&sh, count, n_blocks)
    out = []
    try:
        for t in order:
            if not 0 <= t < 64:
                raise ValueError("_shares_walk: thread ids lie in [0, 64)")
            out.append((t, csm_shares_take(sh.s, sh.count, t, &visits[t])))
    finally:
        free(sh.raw)
    return out


# The registry of operations (_ops.h), in op-code order: names, and for each
# name its code, arity ((x) or (y, grad)), output ("rows": shaped like the
# input; "blocks": a K x K block per row; "reduce": one value per row) and
# GPU kernel ("rows", "jacobian" or None), and the cost of an element against
# the parallel grain.
OP_NAMES = tuple(csm_op_names[i].decode() for i in range(N_OPS))
OPS = {
    OP_NAMES[i]: {"code": i, "arity": csm_op_arity[i],
                  "out": ("rows", "blocks", "reduce", "loss")[csm_op_out[i]],
                  "gpu": (None, "rows", "jacobian")[csm_op_gpu[i]],
                  "cost": csm_op_cost[i]}
    for i in range(N_OPS)
}


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
    """The thread count used when num_threads is None (OpenMP's default;
    1 in a forked child that runs serially)."""
    return 1 if _serial_after_fork else csm_max_threads()


# The CPU is probed once, here; CSOFTMAX_ISA forces a narrower choice (tests).
_forced = os.environ.get("CSOFTMAX_ISA", "").strip().lower()
try:
    select_isa(_forced or None)
except ValueError as exc:
    raise ImportError(f"csoftmax: CSOFTMAX_ISA={_forced!r}: {exc}") from None
del _forced
