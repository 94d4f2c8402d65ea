/*
 * Instantiates the row-kernel template (_rows_impl.h) for both element types
 * and one instruction set. _rows.h includes this once per ISA, with CSM_ISA
 * (a name), CSM_ISA_ID (0, 1, 2) and CSM_TARGET (a target attribute) defined.
 * double comes first: the float log_softmax widens its sums and calls the
 * double log of the same ISA.
 */
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
