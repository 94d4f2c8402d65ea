/*
 * One instruction set's translation unit (_rows_baseline.c, _rows_avx2.c,
 * _rows_avx512.c): instantiates the row-kernel template (_rows_impl.h) for
 * both element types and exports the table of those kernels, csm_kernels_<isa>,
 * that _rows.h's dispatch picks from. The including file defines CSM_ISA (a
 * name), CSM_ISA_ID (0, 1, 2), CSM_TARGET (a target attribute) and
 * CSM_ISA_UNIT, then includes _rows.h and this file.
 * double comes first: the float log_softmax widens its sums and calls the
 * double log of the same ISA.
 */
#ifndef CSM_ISA_UNIT
#error "_rows_isa.h belongs to an ISA translation unit (_rows_<isa>.c)"
#endif

/* acc + a * b in double, with its rounding fixed by the code rather than by
 * the compiler: GCC contracts `acc += a * b` into an FMA in some loops and not
 * in others (vector code against a scalar remainder, a select in between), so
 * the same row summed by two paths (C order, Fortran order, short-row lanes,
 * masked with an all-true mask) gave different float64 bits. One fused
 * rounding where the ISA has FMA; a separate product and sum where it has
 * none (no contraction is possible there). */
#if (CSM_X86_DISPATCH && CSM_ISA_ID >= 1) || defined(__aarch64__) || defined(__FMA__)
  #define CSM_FMA(a, b, acc) __builtin_fma((a), (b), (acc))
#else
  #define CSM_FMA(a, b, acc) ((a) * (b) + (acc))
#endif

#define CSM_T double
#define CSM_F32 0
#define CSM_SFX CSM_PASTE(f64, CSM_ISA)
#include "_rows_impl.h"
#include "_masked_impl.h"
#include "_loss_impl.h"
#undef CSM_T
#undef CSM_F32
#undef CSM_SFX

#define CSM_T float
#define CSM_F32 1
#define CSM_SFX CSM_PASTE(f32, CSM_ISA)
#include "_rows_impl.h"
#include "_masked_impl.h"
#include "_loss_impl.h"
#undef CSM_T
#undef CSM_F32
#undef CSM_SFX

/* The row kernels of each dtype, in op-code order: csm_<name>_rows for each
 * operation of _ops.h; 0 for an operation with a signature of its own
 * (CSM_OUT_LOSS), whose kernel has a field of the table to itself. */
#define CSM_ROWS_IF_CSM_OUT_ROWS(f) f,
#define CSM_ROWS_IF_CSM_OUT_BLOCKS(f) f,
#define CSM_ROWS_IF_CSM_OUT_REDUCE(f) f,
#define CSM_ROWS_IF_CSM_OUT_LOSS(f) 0,
#define CSM_ROWS_F32_(name, NAME, arity, out, gpu, cost) \
    CSM_ROWS_IF_##out(CSM_PASTE(CSM_PASTE(csm_##name##_rows, f32), CSM_ISA))
#define CSM_ROWS_F64_(name, NAME, arity, out, gpu, cost) \
    CSM_ROWS_IF_##out(CSM_PASTE(CSM_PASTE(csm_##name##_rows, f64), CSM_ISA))
#define CSM_KERNELS_(isa) CSM_HIDDEN const csm_kernels_t csm_kernels_##isa = {               \
    {CSM_OPS(CSM_ROWS_F32_)}, {CSM_OPS(CSM_ROWS_F64_)},                                       \
    csm_strided_rows_f32_##isa, csm_strided_rows_f64_##isa,                                   \
    csm_masked_rows_f32_##isa, csm_masked_rows_f64_##isa,                                     \
    csm_xent_rows_f32_##isa, csm_xent_rows_f64_##isa }
#define CSM_KERNELS(isa) CSM_KERNELS_(isa)

CSM_KERNELS(CSM_ISA);

#undef CSM_KERNELS
#undef CSM_KERNELS_
#undef CSM_ROWS_F32_
#undef CSM_ROWS_F64_
#undef CSM_ROWS_IF_CSM_OUT_ROWS
#undef CSM_ROWS_IF_CSM_OUT_BLOCKS
#undef CSM_ROWS_IF_CSM_OUT_REDUCE
#undef CSM_ROWS_IF_CSM_OUT_LOSS
#undef CSM_FMA
