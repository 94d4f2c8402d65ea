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

#define CSM_T double
#define CSM_F32 0
#define CSM_SFX CSM_PASTE(f64, CSM_ISA)
#include "_rows_impl.h"
#undef CSM_T
#undef CSM_F32
#undef CSM_SFX

#define CSM_T float
#define CSM_F32 1
#define CSM_SFX CSM_PASTE(f32, CSM_ISA)
#include "_rows_impl.h"
#undef CSM_T
#undef CSM_F32
#undef CSM_SFX

#define CSM_OPS_(T, isa) { csm_softmax_rows_##T##_##isa, csm_log_softmax_rows_##T##_##isa,  \
    csm_softmax_backward_rows_##T##_##isa, csm_log_softmax_backward_rows_##T##_##isa,      \
    csm_jacobian_rows_##T##_##isa, csm_exp_rows_##T##_##isa, csm_log_rows_##T##_##isa }
#define CSM_KERNELS_(isa) CSM_HIDDEN const csm_kernels_t csm_kernels_##isa = {               \
    CSM_OPS_(f32, isa), CSM_OPS_(f64, isa), csm_strided_rows_f32_##isa, csm_strided_rows_f64_##isa }
#define CSM_KERNELS(isa) CSM_KERNELS_(isa)

CSM_KERNELS(CSM_ISA);

#undef CSM_KERNELS
#undef CSM_KERNELS_
#undef CSM_OPS_
