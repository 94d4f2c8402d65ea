/* The float32 row kernels for AVX2+FMA (_rows_isa.h). */
#define CSM_ISA_ID 1
#define CSM_UNIT_F32 1
#include "_rows_isa.h"
