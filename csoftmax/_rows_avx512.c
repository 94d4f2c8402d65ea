/* The row kernels for AVX-512 (F, VL, DQ, BW), through a function target
 * attribute: only these functions may use AVX-512, and they run only where
 * csm_best_isa() found it. Empty on other architectures and compilers. */
#define CSM_ISA_UNIT 1
#include "_rows.h"

#if CSM_X86_DISPATCH
  #define CSM_ISA avx512
  #define CSM_ISA_ID 2
  #if defined(__clang__)
    #define CSM_TARGET __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")))
  #else
    /* GCC's generic tuning may keep 256-bit vectors; ask for full width. */
    #define CSM_TARGET __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma,prefer-vector-width=512")))
  #endif
  #include "_rows_isa.h"
#else
typedef int csm_no_avx512_kernels; /* ISO C wants a declaration in every unit */
#endif
