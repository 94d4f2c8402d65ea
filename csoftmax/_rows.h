/*
 * The row kernels of csoftmax: the definitions their template shares, and the
 * run-time choice between the copies compiled for each instruction set.
 *
 * Wheels are built for baseline x86-64, so _rows_impl.h is instantiated three
 * times per dtype: baseline, AVX2+FMA and AVX-512 (function `target`
 * attributes, GCC and Clang), each (ISA, dtype) in its own translation unit so
 * that the compiler builds them in parallel: _rows_<isa>_<dtype>.c (through
 * _rows_isa.h), extra sources of csoftmax._engine. Each exports one table of
 * its kernels (csm_kernels_<dtype>_<isa>, hidden from the dynamic symbol
 * table). csm_select_isa() picks the widest one the CPU
 * supports, once, at import; CSOFTMAX_ISA can force a narrower one, which is
 * how the tests cover every ISA on one machine. Other compilers and other
 * architectures get the portable baseline only (the AVX files are empty there).
 *
 * The kernel translation units define CSM_ISA_UNIT (in _rows_isa.h) before
 * including this file: they get the shared definitions and the table
 * declarations (which check their definitions), not the dispatch state,
 * which lives in _engine.c.
 */
#ifndef CSOFTMAX_ROWS_H
#define CSOFTMAX_ROWS_H

#include <math.h>
#include <stddef.h>
#include <stdlib.h> /* malloc: csm_long_rows' scratch row */
#include <stdint.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h> /* streaming stores; usable inside target("...") functions */
#define CSM_STREAM_FENCE() _mm_sfence()
#else
#define CSM_STREAM_FENCE() ((void)0)
#endif

#if defined(__GNUC__)
  #define CSM_INLINE inline __attribute__((always_inline))
  #define CSM_NOINLINE __attribute__((noinline))
  #define CSM_COLD __attribute__((noinline, cold))
#else
  #define CSM_INLINE inline
  #define CSM_NOINLINE
  #define CSM_COLD
#endif

/* The row kernels prefetch the row about CSM_PREFETCH_BYTES ahead of the
 * one they compute, one cache line per 64 bytes of the compute loop, so that
 * DRAM works while the core computes. Without it each row's first pass (the
 * max, or the backward's sum) waited on memory while the other passes left
 * it idle: time was the sum of compute and transfer, not their maximum.
 * GCC documents that a prefetch never faults, even on an invalid address,
 * so rows past the caller's block (another thread's, or past the array's
 * end) may be named; the address is formed as an integer, not a pointer. */
#define CSM_PREFETCH_BYTES 4096

/* The engine asks for prefetching only where a call's operands exceed the L2
 * cache (csoftmax._engine.prefetch_bytes): in cache they cost an instruction
 * per line and gain nothing (1 MB operands, one thread, softmax_backward
 * K = 64: 1.14x AVX-512, 1.34x AVX2 with them). */

/* Rows ahead: enough rows of K elements to span CSM_PREFETCH_BYTES, one at
 * least. */
static inline ptrdiff_t csm_prefetch_ahead(ptrdiff_t K, size_t size)
{
    const ptrdiff_t bytes = K * (ptrdiff_t)size;
    return bytes >= CSM_PREFETCH_BYTES || bytes <= 0 ? 1 : (CSM_PREFETCH_BYTES + bytes - 1) / bytes;
}

static inline const char *csm_prefetch_row(const void *row, ptrdiff_t ld, ptrdiff_t K, size_t size)
{
    const ptrdiff_t ahead = csm_prefetch_ahead(K, size);
    return (const char *)((uintptr_t)row + (uintptr_t)(ahead * ld * (ptrdiff_t)size));
}

/* The same for an output row, or null where that row lies past the `left`
 * rows that follow in the caller's block. The blocks of a call go to the
 * threads in turn, so the row after a block is usually another thread's:
 * fetched for ownership here, it moves from core to core when that thread
 * writes it (softmax 16384 x 1000 float32, two threads: 1.2x slower than
 * without write prefetches, until they stopped at the block's end). */
static inline const char *csm_prefetch_out_row(const void *row, ptrdiff_t ld, ptrdiff_t K, size_t size,
                                               ptrdiff_t left)
{
    return csm_prefetch_ahead(K, size) <= left ? csm_prefetch_row(row, ld, K, size) : NULL;
}

#if defined(__GNUC__)
  #define CSM_PREFETCH_LINE(p, rw) __builtin_prefetch((p), (rw), 3)
#else
  #define CSM_PREFETCH_LINE(p, rw) ((void)(p))
#endif

/* Rows per vectorised log in log_softmax: enough lanes to fill an AVX-512
 * register 8 times over, small enough to stay on the stack. */
#define CSM_LOG_CHUNK 64
/* Rows per chunk where log_softmax's output streams (csm_log_softmax_body's
 * nt): about 4 KiB of x, at least a group of rows (CSM_ROWS_MAX), at most
 * CSM_LOG_CHUNK. A chunk's sums only read (x from memory, bound by the
 * exps) and its output pass only writes (x again, from cache): in chunks of
 * 64 rows (256 KiB of x at K = 1000 float32) a thread reads for a long
 * stretch and then writes for one, and re-reads x from L2, not L1 (our
 * reading; the VM has no performance counters). AMD Zen 4, float32 out=,
 * best of 9 calls on two arrays in turn, ms, 64 rows -> this chunk,
 * AVX-512 | AVX2, one thread / two: 16384 x 1000
 * (2 rows) 6.15 -> 5.18-5.28 | 6.45 -> 5.53-5.63 / 3.65-3.80 -> 2.84-2.92 |
 * 3.58-3.69 -> 2.93-2.99; 32768 x 256 (4 rows) 3.47 -> 3.17 | 3.64 -> 3.11
 * / 2.10 -> 1.61 | 2.19 -> 1.57; 100000 x 128 (8) 5.55-5.94 -> 4.11-4.23 |
 * 5.58-5.95 -> 4.99-5.28 / 3.23-3.37 -> 2.07-2.12 | 3.29-3.52 -> 2.56-2.62;
 * 200000 x 64 (16) 4.92-5.05 -> 5.01 | 5.44-5.57 -> 5.32 / 2.68-2.75 -> 2.57
 * | 2.83-2.88 -> 2.70; float64 8192 x 1000 (2) 7.78 -> 6.71 | 8.73 -> 7.58 /
 * 4.64 -> 3.63 | 4.64 -> 3.99, 100000 x 64 (8) 5.95-6.00 -> 5.68 | 6.95-7.05
 * -> 6.86-6.91 / 3.27-3.37 -> 2.89-2.91 | 3.63-3.71 -> 3.45. Shorter
 * chunks lose more than they gain (200000 x 64 in chunks of 2 rows: 9.2
 * ms), and so does a chunk of 4 KiB where the output does not stream (4096
 * x 128 in cache, 4 rows: 0.179 against 0.157 ms), which keeps 64 rows. */
#define CSM_LOG_NT_CHUNK_BYTES 4096
#define CSM_LOG_NT_CHUNK(K, itemsize) \
    csm_clamp(CSM_LOG_NT_CHUNK_BYTES / ((K) * (ptrdiff_t)(itemsize)), CSM_ROWS_MAX, CSM_LOG_CHUNK)
static inline ptrdiff_t csm_clamp(ptrdiff_t v, ptrdiff_t lo, ptrdiff_t hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

#define CSM_INF_T ((CSM_T)INFINITY)

/* Rows this short can take the cross-row path (csm_small_rows and its
 * masked, logsumexp and loss twins). Measured with AVX2, float32, one
 * thread, when the row kernels took a row's tail element by element: the
 * row path cost 3.75 ns per element at K = 17 and 1.56 at K = 32; the
 * cross-row path about 1.3 at any K up to 32. */
#define CSM_SMALL_K 32

/* softmax and log_softmax take the cross-row path below K = 32 only. At
 * K = 32 every row is whole registers (two float32 AVX-512 ones, four AVX2
 * ones), without a tail, and the row kernels are faster: 8192 x 32, one
 * thread, ns per element, cross-row -> row path: AVX-512 float32 softmax
 * 1.19 -> 1.03, log_softmax 1.28 -> 1.03, float64 2.37 -> 1.56 and
 * 2.11 -> 1.53; AVX2 float32 1.63 -> 1.10, 1.77 -> 1.52, float64
 * 2.61 -> 2.22, 2.88 -> 2.21. At K = 16 to 28 they are mixed. The
 * baseline ISA, whose row kernels take tails element by element, keeps
 * K = 32 on the cross-row path (float64 softmax took 1.1-2.6x as long on
 * the row path, in three noisy runs). Since the lane layout's transposes
 * move 256-bit tiles (csm_lanes_move), the two paths meet at the threshold:
 * AMD Zen 3, AVX2, one thread, 8192 rows, best us, K = 31 (lanes) / K = 32
 * (rows): float32 softmax 98 / 111, log_softmax 119 / 122, float64 softmax
 * 219 / 219; so it stays. */
#define CSM_SMALL_FWD_K 31
#define CSM_SMALL_FWD_K_ISA(isa) ((isa) == CSM_ISA_BASELINE ? CSM_SMALL_K : CSM_SMALL_FWD_K)

/* Rows of the backward passes this short take the cross-row path
 * (csm_small_bwd_rows): it transposes two inputs in and the output out, which
 * costs more than the row path's remainders from K = 16 on. Measured with
 * callgrind, AVX2, float32 softmax_backward, instructions per element, row
 * path -> cross-row path: K = 4 28.3 -> 10.7, K = 8 12.3 -> 10.2, K = 12
 * 12.5 -> 10.0, K = 16 7.1 -> 9.2, K = 30 7.9 -> 14.5. */
#define CSM_SMALL_BWD_K 12
#define CSM_SMALL_BWD_K_CASES(CASE)                                                 \
    CASE(1) CASE(2) CASE(3) CASE(4) CASE(5) CASE(6) CASE(7) CASE(8)                 \
    CASE(9) CASE(10) CASE(11) CASE(12)
_Static_assert(CSM_SMALL_BWD_K == 12, "CSM_SMALL_BWD_K_CASES lists K = 1 .. 12");

/* Under AVX2 and AVX-512, backward rows of CSM_VEC_BWD_MIN <= K <=
 * CSM_VEC_BWD_K take csm_vec_bwd_rows instead: a row per one or two sets of
 * registers, loaded and stored with masks, no transposes. Measured against
 * the lane path (K <= 12) and the row path (K > 12), one thread, float32,
 * 1024 rows, softmax_backward / log_softmax_backward in us, AVX-512 | AVX2:
 * K = 4: 5.9 -> 4.3 / 7.2 -> 10.1 | 5.3 -> 6.1 / 7.0 -> 10.1 (the lanes
 * compute log's exp on whole vectors: K < 5 keeps them); K = 5: 7.0 -> 4.4 /
 * 9.0 -> 10.0 | 7.1 -> 7.0 / 10.8 -> 10.1; K = 10: 12.8 -> 6.1 / 17.9 ->
 * 10.1 | 13.7 -> 7.7 / 18.1 -> 15.5; K = 20: 25.6 -> 9.0 / 35.0 -> 16.5 |
 * 13.5 -> 12.3 / 27.9 -> 22.1; K = 32: 12.5 -> 10.5 / 21.5 -> 16.8 | 13.8 ->
 * 12.0 / 27.9 -> 27.4. Baseline x86-64 keeps the other paths. */
#define CSM_VEC_BWD_MIN 5
#define CSM_VEC_BWD_K 32
/* AVX2 float64 only up to here: 16 elements take four registers per operand,
 * and past K = 12 the spills cost more than the row path saves (1024 rows,
 * one thread, softmax_backward: K = 10 16.3 -> 9.0 us, but K = 16 11.6 ->
 * 14.9 and K = 32 15.6 -> 21.4). */
#define CSM_VEC_BWD_K_AVX2_F64 12

/* softmax_backward pipelines a row's output pass with the next row's dot
 * product (csm_row_dot_out) only in rows of at most this many bytes; longer
 * rows take the two passes one after the other. AMD Zen 4, one process per
 * form, operands rotated between two sets, best quarter of 30-1000 calls,
 * out=, us pipelined -> one after the other (AVX-512; AVX2 alike), one
 * thread: float32 1024 x 1000 303-323 -> 207-222 (torch's
 * _softmax_backward_data 203-221), 8192 x 256 794 -> 536, 8192 x 200 525 ->
 * 379, 4096 x 512 679 -> 471, float64 4096 x 128 327 -> 266, 50000 x 64
 * (512 bytes) 2532 -> 2147, float32 16384 x 1000 (from DRAM, streaming off)
 * 7550 -> 5886; two threads: float32 1024 x 1000 141 -> 104, 16384 x 1000
 * 5307 -> 3929. Rows of 512 bytes and less went the other way at two
 * threads: float32 4096 x 128 43.0-45.7 -> 44.6-46.9, 16384 x 96 154 -> 161,
 * and one thread 4096 x 128 83.3-84.0 -> 86.1-86.6. */
#define CSM_BWD_PIPE_BYTES 512

/* The cases K = 1 .. CSM_SMALL_K of the short-row drivers' switch: each
 * calls its group kernel with a constant K, which unrolls the transposes. */
#define CSM_SMALL_K_CASES(CASE)                                                     \
    CASE(1) CASE(2) CASE(3) CASE(4) CASE(5) CASE(6) CASE(7) CASE(8)                 \
    CASE(9) CASE(10) CASE(11) CASE(12) CASE(13) CASE(14) CASE(15) CASE(16)          \
    CASE(17) CASE(18) CASE(19) CASE(20) CASE(21) CASE(22) CASE(23) CASE(24)         \
    CASE(25) CASE(26) CASE(27) CASE(28) CASE(29) CASE(30) CASE(31) CASE(32)
_Static_assert(CSM_SMALL_K == 32, "CSM_SMALL_K_CASES lists K = 1 .. 32");

/* Elements of the stack scratch that a group of rows is computed into before
 * it is streamed out (32 KiB of float32: an L1 data cache); rows longer than
 * this are written with regular stores. */
#define CSM_SCRATCH 8192
/* softmax's rows whose output streams from its ring of exps
 * (csm_softmax_body: CSM_NT_GROUPS groups of rows on the stack, in L1 at
 * CSM_NT_RING_BYTES), where the engine streams at all: rows of at least
 * CSM_NT_MIN_BYTES whose ring fits. Shorter rows keep regular stores, which
 * were the faster there; the regular path stores the exps while it computes
 * them, and its output pass then runs in L1. AMD Zen 3, AVX2, N(0, 16)
 * logits, out=, the same operands at each call, each row of the table one
 * process that alternates the two plans sample by sample, median time
 * streamed / regular (a range over the runs where there were several), one
 * thread | two: float32 100000 x 64 1.23-1.31 | 1.11-1.28, 50000 x 128
 * 0.86-1.14 | 0.80-1.00, 16384 x 256 0.65-1.08 | 0.65-1.03, 8192 x 512 0.96
 * | 0.94, 16384 x 1000 0.88-0.97 | 0.78-0.94, 4096 x 2048 0.93 | 0.92;
 * float64 8192 x 256 0.97 | 1.01, 16384 x 1000 1.00 | 0.99, 4096 x 2048
 * 0.99 | 1.02 (the spread is the host's: its other tenants share the
 * memory bus). The ring stays within L1 (32 KiB on the machines measured):
 * float64 rows of 2048 elements keep regular stores. The floor, 2 KiB on
 * that machine, is 512 bytes since an AMD Zen 4 (AVX-512) measured rows of
 * 512 bytes to 1 KiB far faster from the ring (there the regular path took
 * 0.45-0.53 ns per element at K = 128 and 192 float32 against 0.35 at K = 64
 * and 96): out=, best of 9 calls on two arrays in turn, three alternations,
 * ms regular / ring, AVX-512 | AVX2, one thread; two threads: float32 100000
 * x 128 5.80-6.11 / 4.22-4.42 | 6.42-6.76 / 4.75-4.87; 2.96-3.06 / 2.10-2.15
 * | 3.21-3.37 / 2.36-2.40, 65536 x 192 6.65-6.78 / 4.14-4.35 | 6.68-6.77 /
 * 4.56-4.83; 3.48-3.61 / 2.14-2.20 | 3.39-3.45 / 2.38-2.46, 32768 x 256
 * 3.58-4.11 / 2.82-2.85 | 3.74-4.33 / 3.18-3.21; 2.08 / 1.45-1.53 |
 * 2.07-2.23 / 1.72-1.81; float64 65536 x 128 9.40-11.04 / 7.71-9.99 |
 * 10.85-12.63 / 8.74-9.41; 4.79-5.54 / 3.95-4.12 | 5.41-6.29 / 4.35-4.41.
 * At the floor, float64 200000 x 64 goes either way: 11.2-11.5 / 11.9-12.7
 * | 15.2-15.6 / 14.4-14.9; 5.9-6.3 / 6.0 | 7.6-8.0 / 7.2-7.4. Below it the
 * ring gained nothing: float32 100000 x 96 3.50 / 3.46 | 3.62 / 3.85; 1.80
 * / 1.71 | 1.85 / 1.90 (and 100000 x 64 on the Zen 3 above). */
#define CSM_NT_GROUPS 3
#define CSM_NT_RING_BYTES 24576
#define CSM_NT_MIN_BYTES 512
#define CSM_SOFTMAX_NT_ROWS(K, itemsize)                                              \
    ((K) * (ptrdiff_t)(itemsize) >= CSM_NT_MIN_BYTES                                 \
     && CSM_NT_GROUPS * CSM_ROWS_AT_ONCE(K) * (K) * (ptrdiff_t)(itemsize) <= CSM_NT_RING_BYTES)

/* Rows of more than this many bytes take csm_long_rows: the max and the
 * sum in one read (one exp per element), then the output pass. Past L2 (1-2
 * MiB per core on the machines measured) the row kernels' three passes cost
 * L3 or DRAM traffic. Measured (8 x 2^20 float32, out=; docs/design.md):
 * softmax 1.65x a same-size copy on one AVX-512 thread. */
#define CSM_LONG_ROW (1 << 20)

/* Elements per chunk of csm_long_max_sum: one read takes the chunk's sum
 * against the max of the chunks before it and its own max and min
 * (csm_long_chunk); a chunk that read cannot take is read again from L1. The
 * bits of a long row depend on this constant. The chunk, its
 * kept exps (csm_long_softmax_kept) and the next chunk's prefetched lines
 * fit in a 48 KiB L1 at 2048 float32 (8 KiB each); at 8192 they did not.
 * Intel Xeon (AVX-512; two reads of every chunk, before the one read),
 * 8 x 2^20 float32 softmax out=, best of 30, ms, chunks of 8192 / 4096 /
 * 2048 / 1024: one thread 3.8 / 3.65 / 3.44 /
 * 3.5 (AVX2 kernels 3.85 / 3.6 / 3.45 / 3.5), two 1.92 / 1.83 / 1.75 /
 * 1.77; log_softmax and logsumexp within 3%. */
#define CSM_LONG_CHUNK 2048

/* softmax rows past L2 of at most this many elements keep their chunks'
 * exp(x - m_c) in the output and scale them there (csm_long_softmax_kept),
 * or, where the output streams, recompute them from x with the same bits
 * (csm_long_rows); longer ones recompute exp(x - M) in a second read of x.
 * 2^23 float32 is the 32 MiB L3 of the machine measured, where keeping
 * still took 0.7-1.0x the time of recomputing (docs/design.md); past the L3
 * the kept output comes back from DRAM. A constant, not the machine's LLC:
 * a row's bits depend on which, and must not depend on the machine beyond
 * its ISA. */
#define CSM_LONG_KEEP (1 << 23)

/* Rows that csm_long_rows_strided reads together (rows past CSM_LONG_ROW
 * that are not contiguous): in Fortran order, 64 float32 rows are 256
 * bytes of each column, four whole lines, and a chunk of them (512 KiB)
 * stays in L2 while it is gathered sixteen rows at a time. Intel Xeon,
 * 64 x 300000 float32 in Fortran order, softmax out=, ms, one thread and
 * two: a row at a time 480 and 200, sixteen rows 90-100 and 40-42, 64
 * rows 70-85 and 37 (docs/design.md). */
#define CSM_LONG_GROUP 64

/* Whether rows of these strides interleave (Fortran order: |row stride| <
 * |column stride|), so that gathering one whole row reads every line of
 * the others: csm_long_rows_strided and csm_long_lse_strided then read a
 * group of rows together. */
static inline int csm_rows_interleaved(ptrdiff_t rs, ptrdiff_t cs)
{
    return (rs < 0 ? -rs : rs) < (cs < 0 ? -cs : cs);
}

/* Elements of csm_long_rows_strided's scratch for rows of K elements: the
 * group's chunk and each row's chunk maxima. */
static inline ptrdiff_t csm_long_strided_scratch(ptrdiff_t K)
{
    return CSM_LONG_GROUP * (CSM_LONG_CHUNK + (K + CSM_LONG_CHUNK - 1) / CSM_LONG_CHUNK);
}

/* Rows per cross-row group: one AVX-512 float vector, two AVX2 ones. */
#define CSM_LANES 16

/* The lane layout (see _rows_impl.h): rows per gathered group at most, and
 * the elements of one operand's scratch: 256 KiB of float32, so that a group
 * of a backward op (two operands) stays in a 1-2 MiB L2 cache. Rows longer
 * than CSM_LANE_SCRATCH / CSM_LANE_GROUP (1024) take fewer rows per group,
 * down to one. */
#define CSM_LANE_GROUP 64
#define CSM_LANE_SCRATCH 65536

/* Rows per gathered group for rows of K elements. */
static inline ptrdiff_t csm_lane_count(ptrdiff_t K)
{
    const ptrdiff_t L = K > 0 ? CSM_LANE_SCRATCH / K : CSM_LANE_GROUP;
    return L > CSM_LANE_GROUP ? CSM_LANE_GROUP : (L < 1 ? 1 : L);
}

/* Staged rows (csm_staged_rows, csm_masked_staged): where a row's operands
 * interleave with the others' (Fortran order), csm_stage_rows(K) rows at a
 * time are gathered into a scratch as contiguous rows and computed there by
 * C order's kernels. In Fortran order a column of sixteen float32 rows is a
 * whole 64-byte line; a row gathered alone reads one element of each line
 * and of each page (one TLB miss per element once K lines pass the TLB's
 * reach), and so does a lane group narrower than sixteen rows. The lane
 * ops stage the rows whose lane groups would be that narrow (K > 4096),
 * and interleaved inputs whose output rows are contiguous (csm_lanes_rows
 * says why); the masked family (and logsumexp), which gathered one row at
 * a time, stages rows of any length. Intel Xeon, float32 Fortran order,
 * one thread, ms, before -> after: softmax 256 x 50000 229-243 -> 29-37
 * (NumPy 50-54), softmax_backward 256 x 50000 257-272 -> 48-54 (NumPy
 * 33-37), logsumexp 2048 x 4096 51-56 -> 5.2-6.3 (docs/design.md). */
#define CSM_STAGE_ROWS 16
static inline int csm_staged_k(ptrdiff_t K)
{
    return K > CSM_LANE_SCRATCH / CSM_STAGE_ROWS;
}

/* Rows per staged group: CSM_STAGE_ROWS, and for shorter rows as many as a
 * lane group takes, in multiples of sixteen. A Fortran-ordered array of a
 * power of two of rows has its columns a power of two apart (16384 rows of
 * float32: 64 KiB), which share a few sets of L2, so a visit to a column
 * must bring every line the group will use of it. */
static inline ptrdiff_t csm_stage_rows(ptrdiff_t K)
{
    const ptrdiff_t g = CSM_LANE_SCRATCH / (K > 0 ? K : 1) / CSM_STAGE_ROWS * CSM_STAGE_ROWS;
    return g < CSM_STAGE_ROWS ? CSM_STAGE_ROWS : g > CSM_LANE_GROUP ? CSM_LANE_GROUP : g;
}

/* Whether an operand of these strides is staged: it is not row-contiguous
 * and its rows interleave. */
static inline int csm_staged_operand(ptrdiff_t rs, ptrdiff_t cs)
{
    return cs != 1 && csm_rows_interleaved(rs, cs);
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
/* A 16 x 16 byte transpose in registers (register i holds row i; after,
 * register c holds column c): four rounds of interleaving register i with
 * register i + 8. */
static inline void csm_bytes16_transpose(__m128i *x)
{
    __m128i t[16];
    for (int round = 0; round < 4; ++round) {
        for (int i = 0; i < 8; ++i) {
            t[2 * i] = _mm_unpacklo_epi8(x[i], x[i + 8]);
            t[2 * i + 1] = _mm_unpackhi_epi8(x[i], x[i + 8]);
        }
        for (int i = 0; i < 16; ++i)
            x[i] = t[i];
    }
}
#endif

/* g rows of K mask bytes (row l at m + l mrs, column j at + j mcs) into
 * dst, row l at dst + l ld, for staged rows. A Fortran-ordered mask
 * (mrs = 1) goes sixteen columns of sixteen rows at a time through the
 * 16 x 16 byte transpose: softmax(where=) of 16384 x 1000 float32 in
 * Fortran order, mask too, took 43 ms byte by byte and 34 ms so (Intel
 * Xeon, two threads; C order 7.4-7.8). */
static inline void csm_mask_rows_move(const unsigned char *m, ptrdiff_t mrs, ptrdiff_t mcs,
                                      unsigned char *dst, ptrdiff_t ld, ptrdiff_t K, ptrdiff_t g)
{
    ptrdiff_t j0 = 0;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    if (mrs == 1 && g % 16 == 0)
        for (; j0 + 16 <= K; j0 += 16)
        for (ptrdiff_t h = 0; h < g; h += 16) {
            __m128i x[16];
            for (int i = 0; i < 16; ++i)
                x[i] = _mm_loadu_si128((const __m128i *)(m + h + (j0 + i) * mcs));
            csm_bytes16_transpose(x);
            for (int l = 0; l < 16; ++l)
                _mm_storeu_si128((__m128i *)(dst + (h + l) * ld + j0), x[l]);
        }
#endif
    /* The rest in spans of columns whose lines stay in L1 for the next row. */
    enum { SPAN = 256 };
    for (; j0 < K; j0 += SPAN) {
        const ptrdiff_t e = K - j0 < SPAN ? K : j0 + SPAN;
        for (ptrdiff_t l = 0; l < g; ++l)
            for (ptrdiff_t j = j0; j < e; ++j)
                dst[l * ld + j] = m[l * mrs + j * mcs];
    }
}

/* The mask of a cross-row group (lanes rows of K <= CSM_SMALL_K bytes, row
 * l at m + l ldm, unit column stride) in the lane layout: column j at mb +
 * j lanes. A whole group goes through the 16 x 16 byte transpose where
 * every row may be read for CSM_SMALL_K bytes (csm_mask_lanes_wide); the
 * bytes past K are read and dropped. Byte by byte, with a select per
 * element whose branch went as the mask did, softmax(where=) of 100000 x
 * 10 float32 with a random mask took 5.7 ms, 2.9 so (Intel Xeon, one
 * thread; 0.45 unmasked; the rest was the exp's underflow at the masked
 * -inf, which csm_exp_core's clamps now avoid: 0.78). */
_Static_assert(CSM_LANES == 16, "csm_mask_lanes transposes groups of sixteen rows");
static inline void csm_mask_lanes(const unsigned char *m, ptrdiff_t ldm, ptrdiff_t K,
                                  unsigned char *mb, const ptrdiff_t lanes, int wide)
{
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    if (lanes == CSM_LANES && wide && ldm != 0) {
        for (ptrdiff_t j0 = 0; j0 < K; j0 += 16) {
            __m128i x[16];
            for (int i = 0; i < 16; ++i)
                x[i] = _mm_loadu_si128((const __m128i *)(m + i * ldm + j0));
            csm_bytes16_transpose(x);
            for (ptrdiff_t c = 0; c < 16 && j0 + c < K; ++c)
                _mm_storeu_si128((__m128i *)(mb + (j0 + c) * CSM_LANES), x[c]);
        }
        return;
    }
#endif
    for (ptrdiff_t l = 0; l < lanes; ++l)
        for (ptrdiff_t j = 0; j < K; ++j)
            mb[j * lanes + l] = m[l * ldm + j];
}

/* Whether csm_mask_lanes may read CSM_SMALL_K bytes from each of the
 * sixteen rows of the group at row r of a mask of `rows` rows of K bytes
 * (row i at i ldm): every byte read lies between the mask's first and last
 * byte. */
static inline int csm_mask_lanes_wide(ptrdiff_t ldm, ptrdiff_t K, ptrdiff_t r, ptrdiff_t rows)
{
    const ptrdiff_t a = r * ldm, b = (r + 15) * ldm, end = (rows - 1) * ldm;
    return (a > b ? a : b) + CSM_SMALL_K <= (end > 0 ? end : 0) + K;
}

/* The row stride, in elements of `itemsize` bytes, of staged rows of K: an
 * odd number of cache lines, so that the rows of a group fall in different
 * sets of L1 (rows a power of two of lines apart, 4 KiB and more, share one
 * set, and the group's gathering stores evicted each other's lines). */
static inline ptrdiff_t csm_staged_ld(ptrdiff_t K, ptrdiff_t itemsize)
{
    ptrdiff_t lines = (K * itemsize + 63) / 64;
    lines += !(lines & 1);
    return lines * 64 / itemsize;
}

/* Elements of element size `itemsize` that staged rows of K take: two
 * operands of csm_stage_rows(K) rows, and a mask of as many rows of bytes. */
static inline ptrdiff_t csm_staged_scratch(ptrdiff_t K, ptrdiff_t itemsize)
{
    return 2 * csm_stage_rows(K) * csm_staged_ld(K, itemsize)
           + (csm_stage_rows(K) * csm_staged_ld(K, 1) + itemsize - 1) / itemsize;
}

/* Every sum over a row (softmax's denominator, the backward passes' dot
 * products) is taken in one order, whatever the layout, the path or the
 * thread count: element j goes to partial sum j % CSM_PARTS, each partial is
 * summed in order of j, in double, and the partials are combined by the
 * fixed tree of csm_tree_sum. The row kernels hold the partials in vector
 * registers (16 doubles: two AVX-512 vectors, four AVX2 ones); the lane
 * kernels hold them per lane. So a row's result depends on its values and
 * the instruction set only: Fortran and C order give the same bits. */
#define CSM_PARTS 16

/* The masked kernels' rows whose exp is taken apart from the rest of their
 * formula (through csm_exp_lanes: the long rows' output, log_softmax_backward)
 * take it in chunks of this many elements: 1-2 KiB on the stack, in L1, and
 * 16-32 registers of arithmetic per call to amortise its loop ends. */
#define CSM_EXP_CHUNK 256

/* The denominators of softmax, log_softmax and logsumexp (the sum in
 * csm_rows_exp_sum_from and its lane twins) are the sums whose cost shows,
 * so they take their partials in the element type
 * over blocks of CSM_SUM_BLOCK elements (eight per partial), sums each
 * block's partials by the fixed tree in the element type (together at most
 * 11 roundings, 7e-7 relative for float), and adds the blocks' sums in
 * double. Double partials throughout cost 20% at 4096 x 128 float32 on
 * AVX-512 (conversions and double adds per float vector); blocked, the cost
 * is that of a float sum and the error that of a short one, at any K
 * (log_softmax with double partials: 4096 x 128 float32 169 us against 125
 * blocked on AVX-512, 275 against 194 on AVX2). The other sums are not
 * compute-bound and use double partials. */
#define CSM_SUM_BLOCK 128
/* Under AVX2 and AVX-512 (the register form, CSM_EXP_V), softmax,
 * log_softmax and logsumexp compute rows of CSM_ROWS_MAX_K or fewer
 * elements CSM_ROWS_MAX at a time, the rows' registers interleaved
 * (csm_rows_exp_sum_from, csm_rows_sum): a short row's passes are chains of
 * dependent operations (max, exp, the sum's tree, 1 / sum, log), and one
 * row alone leaves the pipeline waiting on them. Each row's operations are
 * the same, so its bits are. Measured against one row at a time (one
 * thread, 2^19 elements, ns per element, interleaved A/B, best of 4
 * rounds), float32 AVX-512 | AVX2: softmax K = 33 1.08 -> 0.87 | 1.51 ->
 * 1.26, K = 64 0.61 -> 0.55 | 0.98 -> 0.92, K = 100 0.65 -> 0.58 | 0.87 ->
 * 0.77, K = 256 0.49 -> 0.43 | 0.81 -> 0.67; log_softmax K = 64 0.86 -> 0.68
 * | 1.16 -> 1.03, K = 128 0.73 -> 0.57 | 1.02 -> 1.01; logsumexp K = 64
 * 0.53 -> 0.50 | 0.84 -> 0.74; float64 softmax K = 48 1.58 -> 1.25 | 2.33 ->
 * 1.97. From K = 384 on a row fills the pipeline alone (AVX-512: softmax
 * 1.05x, logsumexp 1.12x). The backward passes are bound by memory, not by
 * latency (1.01-1.08x with two rows), so they keep one row at a time.
 * The group's maxima are one loop of registers too (csm_rows_max_v): the C
 * max inlined twice in a loop over the rows kept its accumulators in
 * memory, and K = 33..63 took twice as long as one row at a time. */
#define CSM_ROWS_MAX 2
#define CSM_ROWS_MAX_K 256
#define CSM_ROWS_AT_ONCE(K) ((K) <= CSM_ROWS_MAX_K ? CSM_ROWS_MAX : 1)
/* Before each loop over a group's rows: fully unrolled, each row's
 * registers stay registers. */
#define CSM_EACH_ROW _Pragma("GCC unroll 2")
_Static_assert(CSM_SCRATCH % CSM_SUM_BLOCK == 0, "csm_long_rows sums whole blocks per chunk");
_Static_assert(CSM_LONG_KEEP % CSM_LONG_CHUNK == 0, "csm_long_softmax_kept keeps a max per chunk");
_Static_assert(CSM_LONG_CHUNK <= CSM_SCRATCH, "csm_long_rows streams a chunk at a time through its scratch");
_Static_assert(CSM_LONG_CHUNK % CSM_SUM_BLOCK == 0, "csm_long_lse_strided carries a row's blocked sum across chunks");

/* What csm_row_sum (_rows_impl.h) sums: a, or a * b. */
enum { CSM_SUM_PLAIN, CSM_SUM_DOT };

/* The fixed tree over 16 partials: halving, a[i] + a[i + 8], then + 4,
 * + 2, + 1. It is the order of a vector's horizontal sum (add the upper half
 * to the lower, repeat), so the row kernels, whose 16 partials sit in one or
 * a few vector registers, sum them with shuffles instead of through memory
 * and 15 scalar adds (the old pairwise tree: about 15% of softmax at
 * 4096 x 128 float32 on AVX-512, by perf's samples). F(p) names partial p. */
#define CSM_TREE16(F) \
    ((((F(0) + F(8)) + (F(4) + F(12))) + ((F(2) + F(10)) + (F(6) + F(14)))) \
     + (((F(1) + F(9)) + (F(5) + F(13))) + ((F(3) + F(11)) + (F(7) + F(15)))))

/* CSM_TREE16 over 16 contiguous values of type T at `src`, as a vector's
 * horizontal sum: halves added by shuffles, in registers (GCC >= 12 and
 * clang have __builtin_shufflevector). A statement that sets `dst`; the row
 * kernels' partials sit in vector registers, so this replaces 15 scalar adds
 * through memory. */
#if defined(__GNUC__) && (__GNUC__ >= 12 || defined(__clang__))
  #define CSM_HAVE_VTREE 1
  #define CSM_VTREE16(T, dst, src) do {                                                   \
        typedef T csm_v16_ __attribute__((vector_size(16 * sizeof(T))));                  \
        typedef T csm_v8_ __attribute__((vector_size(8 * sizeof(T))));                    \
        typedef T csm_v4_ __attribute__((vector_size(4 * sizeof(T))));                    \
        typedef T csm_v2_ __attribute__((vector_size(2 * sizeof(T))));                    \
        csm_v16_ v_;                                                                       \
        memcpy(&v_, (src), sizeof v_);                                                     \
        const csm_v8_ h_ = __builtin_shufflevector(v_, v_, 0, 1, 2, 3, 4, 5, 6, 7)         \
                         + __builtin_shufflevector(v_, v_, 8, 9, 10, 11, 12, 13, 14, 15);  \
        const csm_v4_ g_ = __builtin_shufflevector(h_, h_, 0, 1, 2, 3)                     \
                         + __builtin_shufflevector(h_, h_, 4, 5, 6, 7);                    \
        const csm_v2_ e_ = __builtin_shufflevector(g_, g_, 0, 1)                           \
                         + __builtin_shufflevector(g_, g_, 2, 3);                          \
        (dst) = e_[0] + e_[1];                                                             \
    } while (0)
#else
  #define CSM_HAVE_VTREE 0
#endif

/* The sum of a[0], a[stride], ..., a[15 * stride] by the fixed tree. */
static inline double csm_tree_sum(const double *a, ptrdiff_t stride)
{
#if CSM_HAVE_VTREE
    if (stride == 1) {
        double s;
        CSM_VTREE16(double, s, a);
        return s;
    }
#endif
#define CSM_A(p) a[(p) * stride]
    return CSM_TREE16(CSM_A);
#undef CSM_A
}

/* The operations and their codes: _ops.h. */
#include "_ops.h"
/* The cross-entropy kernel's arguments: _loss.h. */
#include "_loss.h"

/* Instruction sets, narrowest first. */
enum { CSM_ISA_BASELINE = 0, CSM_ISA_AVX2 = 1, CSM_ISA_AVX512 = 2, CSM_N_ISA = 3 };

/* What the engine tells a row kernel besides the operands (the last
 * argument of csm_rows_f32_t, a bit set): write the output with streaming
 * stores (see csm_streamed), prefetch the rows ahead (see
 * CSM_PREFETCH_BYTES), and, with CSM_RUN_STREAM, let softmax's long rows
 * keep their exps in a scratch row (csm_long_rows). None
 * changes a value. */
enum { CSM_RUN_STREAM = 1, CSM_RUN_PREFETCH = 2, CSM_RUN_KEEP = 4 };

/* (a, lda, b, ldb, out, ldo, rows, K, flags): see _rows_impl.h. */
typedef void (*csm_rows_f32_t)(const float *, ptrdiff_t, const float *, ptrdiff_t,
                               float *, ptrdiff_t, ptrdiff_t, ptrdiff_t, int);
typedef void (*csm_rows_f64_t)(const double *, ptrdiff_t, const double *, ptrdiff_t,
                               double *, ptrdiff_t, ptrdiff_t, ptrdiff_t, int);

/* (op, a, ars, acs, b, brs, bcs, out, ors, ocs, rows, K, scratch): rows of
 * any strides, through the lane layout; see csm_strided_rows. */
typedef void (*csm_strided_f32_t)(int, const float *, ptrdiff_t, ptrdiff_t, const float *,
                                  ptrdiff_t, ptrdiff_t, float *, ptrdiff_t, ptrdiff_t,
                                  ptrdiff_t, ptrdiff_t, float *);
typedef void (*csm_strided_f64_t)(int, const double *, ptrdiff_t, ptrdiff_t, const double *,
                                  ptrdiff_t, ptrdiff_t, double *, ptrdiff_t, ptrdiff_t,
                                  ptrdiff_t, ptrdiff_t, double *);

/* (op, a, ars, acs, b, brs, bcs, mask, mrs, mcs, out, ors, ocs, rows, K,
 * scratch): masked rows (and logsumexp's strided rows) of any strides; see
 * csm_masked_rows in _masked_impl.h. */
typedef void (*csm_masked_f32_t)(int, const float *, ptrdiff_t, ptrdiff_t, const float *,
                                 ptrdiff_t, ptrdiff_t, const unsigned char *, ptrdiff_t,
                                 ptrdiff_t, float *, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                                 ptrdiff_t, float *);
typedef void (*csm_masked_f64_t)(int, const double *, ptrdiff_t, ptrdiff_t, const double *,
                                 ptrdiff_t, ptrdiff_t, const unsigned char *, ptrdiff_t,
                                 ptrdiff_t, double *, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                                 ptrdiff_t, double *);

/* Elements of scratch csm_masked_rows needs for rows of K: the operands and
 * the output gathered (3 K), and the mask widened to the element's width. */
static inline ptrdiff_t csm_masked_scratch(ptrdiff_t K)
{
    return 4 * K;
}
/* csm_long_lse_strided takes a group's chunk from the masked scratch of a
 * row past CSM_LONG_ROW. */
_Static_assert(CSM_LONG_GROUP * CSM_LONG_CHUNK <= 4 * (CSM_LONG_ROW / 8), "a group's chunk fits the masked scratch");

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
  #define CSM_X86_DISPATCH 1
  #include <cpuid.h> /* csm_cpu_family */
#else
  #define CSM_X86_DISPATCH 0
#endif

#define CSM_PASTE_(a, b) a##_##b
#define CSM_PASTE(a, b) CSM_PASTE_(a, b)

#if defined(__GNUC__) && !defined(_WIN32)
  #define CSM_HIDDEN __attribute__((visibility("hidden")))
#else
  #define CSM_HIDDEN
#endif

/* The kernels of one ISA and dtype, in the order of the op codes; defined by
 * _rows_isa.h in that ISA and dtype's translation unit. */
#define CSM_KERNELS_OF_(sfx) struct {                                                      \
    csm_rows_##sfx##_t rows[CSM_N_OPS];                                                 \
    csm_strided_##sfx##_t strided;                                                      \
    csm_masked_##sfx##_t masked;                                                        \
    csm_xent_fn xent; /* softmax_cross_entropy (_loss.h, _loss_impl.h) */               \
}
typedef CSM_KERNELS_OF_(f32) csm_kernels_f32_t;
typedef CSM_KERNELS_OF_(f64) csm_kernels_f64_t;
#undef CSM_KERNELS_OF_

/* The kernels of one ISA: its two dtypes' tables. */
typedef struct {
    const csm_kernels_f32_t *f32;
    const csm_kernels_f64_t *f64;
} csm_kernels_t;

extern CSM_HIDDEN const csm_kernels_f32_t csm_kernels_f32_baseline;
extern CSM_HIDDEN const csm_kernels_f64_t csm_kernels_f64_baseline;
#if CSM_X86_DISPATCH
extern CSM_HIDDEN const csm_kernels_f32_t csm_kernels_f32_avx2;
extern CSM_HIDDEN const csm_kernels_f64_t csm_kernels_f64_avx2;
extern CSM_HIDDEN const csm_kernels_f32_t csm_kernels_f32_avx512;
extern CSM_HIDDEN const csm_kernels_f64_t csm_kernels_f64_avx512;
#endif

/* Blocks of rows written with streaming stores since the module loaded:
 * the tests read it (csoftmax._engine.streamed_blocks()) to see that large
 * reused outputs do stream and fresh ones do not. One relaxed atomic add per
 * block of rows. */
extern CSM_HIDDEN long csm_streamed_blocks;
static inline void csm_count_streamed(void)
{
#if defined(__GNUC__) || defined(__clang__)
    __atomic_fetch_add(&csm_streamed_blocks, 1, __ATOMIC_RELAXED);
#else
    ++csm_streamed_blocks;
#endif
}

/* Whether the AVX-512 kernels widen float32 terms to double four at a time
 * (vcvtps2pd ymm) rather than eight (zmm) in their double sums (csm_rows_sum):
 * the same partials in the same order, so the same bits, and the faster form
 * on a core that runs AVX-512 in 256-bit halves. Set by csoftmax._engine's
 * rule at import (and by its tests); read once per row. */
extern CSM_HIDDEN int csm_widen_256;

#ifndef CSM_ISA_UNIT /* the dispatch: csoftmax._engine's own translation unit */

CSM_HIDDEN long csm_streamed_blocks = 0;
CSM_HIDDEN int csm_widen_256 = 0;

static const char *const csm_isa_names[CSM_N_ISA] = {"baseline", "avx2", "avx512"};

static const csm_kernels_t csm_all_kernels[CSM_N_ISA] = {
    {&csm_kernels_f32_baseline, &csm_kernels_f64_baseline},
#if CSM_X86_DISPATCH
    {&csm_kernels_f32_avx2, &csm_kernels_f64_avx2},
    {&csm_kernels_f32_avx512, &csm_kernels_f64_avx512},
#endif
};

/* The kernels in use; set once by csm_select_isa() at import. One pointer, so
 * that a switch of ISA (the tests) changes every kernel at once. */
static const csm_kernels_t *csm_kernels_in_use = &csm_all_kernels[CSM_ISA_BASELINE];
#define csm_rows_f32 (csm_kernels_in_use->f32->rows)
#define csm_rows_f64 (csm_kernels_in_use->f64->rows)
#define csm_strided_f32 (csm_kernels_in_use->f32->strided)
#define csm_strided_f64 (csm_kernels_in_use->f64->strided)
#define csm_masked_f32 (csm_kernels_in_use->f32->masked)
#define csm_masked_f64 (csm_kernels_in_use->f64->masked)
#define csm_xent_f32 (csm_kernels_in_use->f32->xent)
#define csm_xent_f64 (csm_kernels_in_use->f64->xent)
static int csm_isa_in_use = CSM_ISA_BASELINE;

/* The widest ISA this CPU (and this build) can run. */
static int csm_best_isa(void)
{
#if CSM_X86_DISPATCH
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw"))
        return CSM_ISA_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return CSM_ISA_AVX2;
#endif
    return CSM_ISA_BASELINE;
}

/* Whether the CPU is AMD's (the streaming rule in _engine.pyx). */
static int csm_cpu_is_amd(void)
{
#if CSM_X86_DISPATCH
    __builtin_cpu_init();
    return __builtin_cpu_is("amd") != 0;
#else
    return 0;
#endif
}

/* The CPU's x86 family as CPUID leaf 1 gives it (base plus extended
 * family; AMD Zen 3 and Zen 4 are 0x19, Zen 5 0x1A), 0 elsewhere: the
 * streaming rule in _engine.pyx tells Zen 4 from Zen 5 by it. */
static int csm_cpu_family(void)
{
#if CSM_X86_DISPATCH
    unsigned int a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return 0;
    {
        const int base = (int)((a >> 8) & 0xF);
        return base == 0xF ? base + (int)((a >> 20) & 0xFF) : base;
    }
#else
    return 0;
#endif
}

/* Use `isa`, or the best one when isa < 0. Returns the ISA now in use, or -1
 * when the CPU cannot run the one asked for (nothing changes then). */
static int csm_select_isa(int isa)
{
    const int best = csm_best_isa();
    if (isa < 0)
        isa = best;
    if (isa > best)
        return -1;
    csm_kernels_in_use = &csm_all_kernels[isa];
    csm_isa_in_use = isa;
    return isa;
}

/* Seconds on a monotonic clock (the engine's contention check). */
#if defined(_WIN32)
#include <windows.h>
static double csm_now(void)
{
    LARGE_INTEGER f, c;
    QueryPerformanceFrequency(&f);
    QueryPerformanceCounter(&c);
    return (double)c.QuadPart / (double)f.QuadPart;
}
#else
#include <time.h>
static double csm_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
#endif

static int csm_openmp_enabled(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

static int csm_num_procs(void)
{
#ifdef _OPENMP
    return omp_get_num_procs();
#else
    return 1;
#endif
}

static int csm_max_threads(void)
{
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

#endif /* !CSM_ISA_UNIT */

#endif /* CSOFTMAX_ROWS_H */
