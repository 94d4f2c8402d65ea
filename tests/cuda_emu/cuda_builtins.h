// The CUDA names a kernel file uses, defined for g++ so that the unchanged
// .cu text compiles on the CPU. Only file-scope `extern __shared__` memory is
// supported (the harness refuses sources with other __shared__ variables):
// `__shared__` expands to nothing and the harness defines the array.
#pragma once
#include <math.h>

#include <cstdint>
#include <cstring>

#include "emu_runtime.h"

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __shared__
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))

#define __syncthreads() ::emu::syncthreads(__LINE__)
#define __shfl_xor_sync(...) ::emu::shfl_xor(__LINE__, __VA_ARGS__)
#define __shfl_sync(...) ::emu::shfl_idx(__LINE__, __VA_ARGS__)
#define __shfl_down_sync(...) ::emu::shfl_down(__LINE__, __VA_ARGS__)

template <class To, class From> inline To emu_bit_cast(From v) {
    static_assert(sizeof(To) == sizeof(From), "bit cast between sizes");
    To out;
    std::memcpy(&out, &v, sizeof out);
    return out;
}
inline float __int_as_float(int v) { return emu_bit_cast<float>(v); }
inline float __uint_as_float(unsigned int v) { return emu_bit_cast<float>(v); }
inline int __float_as_int(float v) { return emu_bit_cast<int>(v); }
inline unsigned int __float_as_uint(float v) { return emu_bit_cast<unsigned int>(v); }
inline double __longlong_as_double(long long v) { return emu_bit_cast<double>(v); }
inline long long __double_as_longlong(double v) { return emu_bit_cast<long long>(v); }
// Built with -ffp-contract=off, so a plain product is already unfused.
inline float __fmul_rn(float a, float b) { return a * b; }
inline double __dmul_rn(double a, double b) { return a * b; }
