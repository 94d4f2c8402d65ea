/* The float64 row kernels for the architecture's baseline (_rows_isa.h). */
#define CSM_ISA_ID 0
#define CSM_UNIT_F32 0
#include "_rows_isa.h"
