/* The float32 row kernels for AVX-512 (F, VL, DQ, BW) (_rows_isa.h). */
#define CSM_ISA_ID 2
#define CSM_UNIT_F32 1
#include "_rows_isa.h"
