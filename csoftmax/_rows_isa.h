/*
 * One (instruction set, dtype) translation unit, _rows_<isa>_<dtype>.c: the
 * unit defines CSM_ISA_ID (0 baseline, 1 AVX2+FMA, 2 AVX-512) and CSM_UNIT_F32
 * (1 float32, 0 float64), then includes this file, which instantiates the
 * row-kernel template (_rows_impl.h) for that pair and exports the table of
 * its kernels, csm_kernels_<dtype>_<isa>, that _rows.h's dispatch picks from.
 * One unit per pair rather than per ISA: six units of 45-85 s (GCC 12 -O3,
 * 2-core Zen 4) share two cores evenly where three of 100-165 s did not: the
 * whole build took 271 s of wall time for 444 s of CPU time, now 211 s for 409.
 * The ISAs other than the baseline use a function target attribute: only
 * these functions may use the ISA, and they run only where csm_best_isa()
 * found it. Their units are empty on other architectures and compilers.
 */
#ifndef CSM_ISA_ID
#error "_rows_isa.h belongs to a kernel translation unit (_rows_<isa>_<dtype>.c)"
#endif
#define CSM_ISA_UNIT 1
#include "_rows.h"

#if CSM_ISA_ID == 0
  /* The build's own flags, which never name a CPU: every platform. */
  #define CSM_ISA baseline
  #define CSM_TARGET
#elif CSM_X86_DISPATCH && CSM_ISA_ID == 1
  #define CSM_ISA avx2
  #define CSM_TARGET __attribute__((target("avx2,fma")))
#elif CSM_X86_DISPATCH && CSM_ISA_ID == 2
  #define CSM_ISA avx512
  #if defined(__clang__)
    #define CSM_TARGET __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")))
  #else
    /* GCC's generic tuning may keep 256-bit vectors; ask for full width. */
    #define CSM_TARGET __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma,prefer-vector-width=512")))
  #endif
#endif

#ifndef CSM_ISA
typedef int csm_no_kernels_here; /* ISO C wants a declaration in every unit */
#else

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

/* The float64 instantiation comes first in both units: the float32 kernels
 * widen their sums and call the float64 exp and log of the same ISA. In the
 * float32 unit its kernels are unused, and GCC compiles no unused static
 * function (the whole float64 template costs the unit well under a second). */
#if CSM_UNIT_F32 && defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
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
#if CSM_UNIT_F32 && defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
#if CSM_UNIT_F32

#define CSM_T float
#define CSM_F32 1
#define CSM_SFX CSM_PASTE(f32, CSM_ISA)
#include "_rows_impl.h"
#include "_masked_impl.h"
#include "_loss_impl.h"
#undef CSM_T
#undef CSM_F32
#undef CSM_SFX
#endif

/* The row kernels of the unit's dtype, in op-code order: csm_<name>_rows for
 * each operation of _ops.h; 0 for an operation with a signature of its own
 * (CSM_OUT_LOSS), whose kernel has a field of the table to itself. */
#define CSM_ROWS_IF_CSM_OUT_ROWS(f) f,
#define CSM_ROWS_IF_CSM_OUT_BLOCKS(f) f,
#define CSM_ROWS_IF_CSM_OUT_REDUCE(f) f,
#define CSM_ROWS_IF_CSM_OUT_LOSS(f) 0,
#if CSM_UNIT_F32
  #define CSM_UNIT_DT f32
#else
  #define CSM_UNIT_DT f64
#endif
#define CSM_ROWS_(name, NAME, arity, out, gpu, cost) \
    CSM_ROWS_IF_##out(CSM_PASTE(CSM_PASTE(csm_##name##_rows, CSM_UNIT_DT), CSM_ISA))
#define CSM_KERNELS_(dt, isa) CSM_HIDDEN const csm_kernels_##dt##_t csm_kernels_##dt##_##isa = { \
    {CSM_OPS(CSM_ROWS_)}, csm_strided_rows_##dt##_##isa, csm_masked_rows_##dt##_##isa,          \
    csm_xent_rows_##dt##_##isa }
#define CSM_KERNELS(dt, isa) CSM_KERNELS_(dt, isa)

CSM_KERNELS(CSM_UNIT_DT, CSM_ISA);

#undef CSM_KERNELS
#undef CSM_KERNELS_
#undef CSM_ROWS_
#undef CSM_ROWS_IF_CSM_OUT_ROWS
#undef CSM_ROWS_IF_CSM_OUT_BLOCKS
#undef CSM_ROWS_IF_CSM_OUT_REDUCE
#undef CSM_ROWS_IF_CSM_OUT_LOSS
#undef CSM_UNIT_DT
#undef CSM_FMA
#endif /* CSM_ISA */
