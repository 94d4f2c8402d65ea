/* The row kernels for the architecture's baseline (no target attribute: the
 * flags of the build, which never name a CPU), on every platform. */
#define CSM_ISA_UNIT 1
#include "_rows.h"

#define CSM_ISA baseline
#define CSM_ISA_ID 0
#define CSM_TARGET
#include "_rows_isa.h"
