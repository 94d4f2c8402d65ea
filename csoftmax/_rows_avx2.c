/* The row kernels for AVX2+FMA, through a function target attribute: only
 * these functions may use AVX2, and they run only where csm_best_isa() found
 * it. Empty on other architectures and compilers. */
#define CSM_ISA_UNIT 1
#include "_rows.h"

#if CSM_X86_DISPATCH
  #define CSM_ISA avx2
  #define CSM_ISA_ID 1
  #define CSM_TARGET __attribute__((target("avx2,fma")))
  #include "_rows_isa.h"
#else
typedef int csm_no_avx2_kernels; /* ISO C wants a declaration in every unit */
#endif
