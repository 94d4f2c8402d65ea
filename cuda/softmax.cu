// Row-wise softmax kernels of csoftmax, compiled at run time by cupy.RawModule.
//
// This text has no #include: NVRTC ships no <math.h> (and no INFINITY), and
// the same text is compiled by g++ in the test emulator (tests/cuda_emu), so it
// uses only what NVRTC provides built in (expf, __shfl_xor_sync, ...).
// Infinities are built from bit patterns; float16 is carried as raw bits
// (`csm_half`) because `__half` needs <cuda_fp16.h>.
//
// Every row kernel works on (n_rows, k) arrays with unit column stride and a
// row stride of its own per array, in elements (`lda`, `ldb`, `ldo`; `ldo` is
// logsumexp's output stride), so a row-sliced view (x[:, :K] of a wider
// array, x[::2]) is passed as it is, not copied; the Jacobian kernels take
// C-contiguous arrays. csoftmax/_gpu.py does the planning (tier, vector
// width, grid, block, shared memory) and csoftmax/_semantics.py everything
// else. Semantics are those of the CPU backend (README.md, Semantics): a NaN
// or +inf anywhere gives a NaN row, a row of -inf gives a NaN row, -inf in a
// finite row gives exactly 0 (softmax) / -inf (log_softmax). They all follow
// from max subtraction with IEEE arithmetic: fmaxf ignores NaN, so the NaN
// reaches the sum instead and spreads from there.
//
// Masks (where=, the semantics of jax.nn.softmax(where=)): every kernel takes
// `const unsigned char* mask` (nullptr: no mask; 1 = the element takes part,
// 0 = masked) with unit column stride and a row stride `ldm` (0: one (k,) mask
// for every row). Masked elements take no part in the max or the sums, whatever
// their value (NaN included); they come out exactly 0 (softmax and the backward
// passes) or -inf (log_softmax), and a fully masked row gives zeros / -inf /
// logsumexp -inf, never NaN. Every result passes through a select on the
// element's mask bit, because the arithmetic alone cannot tell a masked
// element from an unmasked -inf once the row's max is -inf.
//
// No `__restrict__` on the inputs: csoftmax allows `out is x`, and restrict
// would let the compiler use the non-coherent load path on aliased memory.

// Launch constants; csoftmax/_gpu.py reads every `CSM_* = N,` line of this
// enum, so these numbers live in one place. (An enum, because NVRTC warns
// about unused constexpr variables when only some kernels are instantiated.)
enum : int {
    // 128 threads per block for the warp tier: OneFlow softmax.cuh (kBlockSize
    // of SoftmaxWarpImpl) and PyTorch PersistentSoftmax.cuh (threads_per_block).
    CSM_WARP_THREADS = 128,
    // Upper bound for the block tiers: PyTorch SoftMax.cu `max_threads = 1024`,
    // also CUDA's per-block limit. At 1024 threads ptxas has 64 registers.
    CSM_MAX_THREADS = 1024,
    // Bound for the vectorised block kernels: PyTorch's block size rule halves
    // the block when loads are vectors, so they never exceed 512 threads, and
    // the bound gives ptxas 128 registers (double exp spills at 64).
    CSM_MAX_THREADS_VEC = 512,
    // Accumulator slots at the start of dynamic shared memory: two banks of 32
    // per-warp partials (32 warps in a 1024-thread block). Block reductions
    // alternate banks, so each needs one __syncthreads (see csm_block_reduce).
    CSM_SCRATCH = 64,
    // Packs each thread of the block tiers loads before using the first, so
    // 4 loads are in flight (the pattern of PyTorch SoftMax.cu ilpReduce and
    // WriteFpropResults, whose loops load ILP values into tmp[] first).
    CSM_BLOCK_UNROLL = 4,

    // Operation codes (template argument OP); _gpu.py checks its own table
    // against these.
    CSM_SOFTMAX = 0,
    CSM_LOG_SOFTMAX = 1,
    CSM_SOFTMAX_BACKWARD = 2,      // a = y, b = grad
    CSM_LOG_SOFTMAX_BACKWARD = 3,  // a = y (the log_softmax output), b = grad
    CSM_LOGSUMEXP = 5,             // one output per row (4 is the Jacobian's code)
};

extern __shared__ __align__(16) unsigned char csm_smem[];

// ---------------------------------------------------------------- types

struct csm_half {
    unsigned short bits;
};

// float16 and float32 accumulate in float (as OneFlow and PyTorch do),
// float64 in double.
template <typename T> struct csm_acc { typedef float type; };
template <> struct csm_acc<double> { typedef double type; };

// A 16-byte (or smaller) aligned group of elements, for vector loads/stores.
template <typename T, int N> struct alignas(sizeof(T) * N) csm_pack {
    T v[N];
};

__device__ __forceinline__ float csm_to_acc(float v) { return v; }
__device__ __forceinline__ double csm_to_acc(double v) { return v; }
__device__ __forceinline__ float csm_to_acc(csm_half h) {
#ifdef __CUDA_ARCH__
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h.bits));
    return f;
#else
    // Host path, used only by the emulator: F. Giesen's exact half_to_float
    // (public domain, "half_to_float_fast5"); the GPU path is one cvt.
    const unsigned int shifted_exp = 0x7c00u << 13;
    unsigned int u = (h.bits & 0x7fffu) << 13;
    const unsigned int e = shifted_exp & u;
    u += (127u - 15u) << 23;
    float f;
    if (e == shifted_exp) {
        u += (128u - 16u) << 23;  // inf or NaN
        f = __uint_as_float(u);
    } else if (e == 0) {
        u += 1u << 23;  // zero or subnormal: renormalise through the FPU
        f = __uint_as_float(u) - __uint_as_float(113u << 23);
    } else {
        f = __uint_as_float(u);
    }
    return __uint_as_float(__float_as_uint(f) | ((h.bits & 0x8000u) << 16));
#endif
}

template <typename T> __device__ __forceinline__ T csm_from_acc(typename csm_acc<T>::type v);
template <> __device__ __forceinline__ float csm_from_acc<float>(float v) { return v; }
template <> __device__ __forceinline__ double csm_from_acc<double>(double v) { return v; }
template <> __device__ __forceinline__ csm_half csm_from_acc<csm_half>(float v) {
    csm_half h;
#ifdef __CUDA_ARCH__
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h.bits) : "f"(v));
#else
    // Host path, used only by the emulator: F. Giesen's round-to-nearest-even
    // float_to_half_fast3_rtne (public domain); the GPU path is one cvt.rn.
    unsigned int u = __float_as_uint(v);
    const unsigned int sign = u & 0x80000000u;
    u ^= sign;
    unsigned int o;
    if (u >= ((127u + 16u) << 23)) {
        o = (u > (255u << 23)) ? 0x7e00u : 0x7c00u;  // NaN stays NaN, overflow is inf
    } else if (u < (113u << 23)) {
        // subnormal or zero: let the FPU round by adding a magic number
        const unsigned int magic = ((127u - 15u) + (23u - 10u) + 1u) << 23;
        o = __float_as_uint(__uint_as_float(u) + __uint_as_float(magic)) - magic;
    } else {
        const unsigned int mant_odd = (u >> 13) & 1u;
        u += ((15u - 127u) << 23) + 0xfffu;
        u += mant_odd;
        o = u >> 13;
    }
    h.bits = (unsigned short)(o | (sign >> 16));
#endif
    return h;
}

// ---------------------------------------------------------------- math

__device__ __forceinline__ float csm_exp(float v) { return expf(v); }
__device__ __forceinline__ float csm_log(float v) { return logf(v); }
// Double exp and log stay calls: inlined into the unrolled row loops, ptxas
// interleaves a dozen of them and spills (NVRTC 13.5, sm_90: 8 to 248 bytes
// in the warp and vectorised block kernels), and a spill fails the build.
__device__ __noinline__ double csm_exp(double v) { return exp(v); }
__device__ __noinline__ double csm_log(double v) { return log(v); }
// Inlined double exp, for kernels with one or two per lane: there the calls
// cost more registers (live across the call) than the inlined bodies
// (NVRTC 13.5 spills csm_rows_warp<double, 3, 1, 1> on sm_100 otherwise).
__device__ __forceinline__ float csm_exp_inline(float v) { return expf(v); }
__device__ __forceinline__ double csm_exp_inline(double v) { return exp(v); }
// A product the compiler may not fuse into an FMA, so that the Jacobian's
// diagonal is exactly s - round(s * s), as on the CPU.
__device__ __forceinline__ float csm_mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double csm_mul_rn(double a, double b) { return __dmul_rn(a, b); }

template <typename A> __device__ __forceinline__ A csm_neg_inf();
template <> __device__ __forceinline__ float csm_neg_inf<float>() { return __int_as_float(0xff800000); }
template <> __device__ __forceinline__ double csm_neg_inf<double>() {
    return __longlong_as_double(0xfff0000000000000LL);
}

struct csm_max_op {
    template <typename A> __device__ __forceinline__ static A identity() { return csm_neg_inf<A>(); }
    __device__ __forceinline__ float operator()(float a, float b) const { return fmaxf(a, b); }
    __device__ __forceinline__ double operator()(double a, double b) const { return fmax(a, b); }
};

struct csm_sum_op {
    template <typename A> __device__ __forceinline__ static A identity() { return A(0); }
    template <typename A> __device__ __forceinline__ A operator()(A a, A b) const { return a + b; }
};

// True for finite v: inf - inf and NaN - NaN are NaN.
template <typename A> __device__ __forceinline__ bool csm_finite(A v) { return v - v == A(0); }

// The mask bits of VEC consecutive elements at mask[off..]: bit c set when
// element c takes part; all set without a mask.
template <int VEC>
__device__ __forceinline__ unsigned csm_keep_bits(const unsigned char* mask, long long off) {
    if (mask == nullptr) return (1u << VEC) - 1u;
    unsigned bits = 0;
#pragma unroll
    for (int c = 0; c < VEC; ++c) bits |= (mask[off + c] != 0 ? 1u : 0u) << c;
    return bits;
}

// The shift of a row's exps: its max, except for logsumexp with an infinite
// max, which sums exp(x) unshifted so that the result is scipy's: +inf for a
// +inf (NaN if a NaN is there too), -inf for a row of -inf or no element.
template <int OP, typename A> __device__ __forceinline__ A csm_shift(A m) {
    return (OP == CSM_LOGSUMEXP && !csm_finite(m)) ? A(0) : m;
}

// Butterfly all-reduce over groups of `width` lanes (a power of two <= 32).
// Every lane ends with the same bits: each step combines the same two values
// in both partners, and + and fmax are commutative.
template <typename Op, typename A> __device__ __forceinline__ A csm_group_reduce(A v, int width) {
    for (int offset = width >> 1; offset > 0; offset >>= 1) {
        v = Op()(v, __shfl_xor_sync(0xffffffffu, v, offset, width));
    }
    return v;
}

// All-reduce over the block; blockDim.x is a multiple of 32. `bank` is one of
// the two 32-slot banks of CSM_SCRATCH. Callers alternate banks, which makes
// one barrier enough: a thread writes bank b for reduction r only after the
// barrier of reduction r-1, and every thread read bank b for reduction r-2
// before arriving at that barrier.
template <typename Op, typename A> __device__ __forceinline__ A csm_block_reduce(A v, A* bank) {
    v = csm_group_reduce<Op>(v, 32);
    const int lane = threadIdx.x & 31;
    if (lane == 0) bank[threadIdx.x >> 5] = v;
    __syncthreads();
    v = lane < (int)(blockDim.x >> 5) ? bank[lane] : Op::template identity<A>();
    return csm_group_reduce<Op>(v, 32);
}

template <typename T, int N>
__device__ __forceinline__ void csm_load(const T* p, typename csm_acc<T>::type* dst) {
    const csm_pack<T, N> pk = *reinterpret_cast<const csm_pack<T, N>*>(p);
#pragma unroll
    for (int c = 0; c < N; ++c) dst[c] = csm_to_acc(pk.v[c]);
}

// Explicit 16-byte stores, by element type: v2.f64 and v4.f32 keep the
// values in their own registers (a b32 view of doubles costs moves, and
// ptxas then spills csm_rows_warp<double, 2, 2, 4> on sm_90); float16 packs
// go as four 32-bit words.
#ifdef __CUDA_ARCH__
__device__ __forceinline__ void csm_st128(double* p, const csm_pack<double, 2>& v) {
    asm volatile("st.global.v2.f64 [%0], {%1, %2};" ::"l"(p), "d"(v.v[0]), "d"(v.v[1]));
}
__device__ __forceinline__ void csm_st128(float* p, const csm_pack<float, 4>& v) {
    asm volatile("st.global.v4.f32 [%0], {%1, %2, %3, %4};" ::"l"(p), "f"(v.v[0]), "f"(v.v[1]), "f"(v.v[2]),
                 "f"(v.v[3]));
}
__device__ __forceinline__ void csm_st128(csm_half* p, const csm_pack<csm_half, 8>& v) {
    unsigned w[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) w[i] = (unsigned)v.v[2 * i].bits | ((unsigned)v.v[2 * i + 1].bits << 16);
    asm volatile("st.global.v4.b32 [%0], {%1, %2, %3, %4};" ::"l"(p), "r"(w[0]), "r"(w[1]), "r"(w[2]), "r"(w[3]));
}
#endif

// Explicit 16-byte loads, for the block passes' steps: NVVM otherwise sinks a
// step's loads past the mask tests into the code that uses each pack (one
// load in flight, NVRTC 13.5, the shared memory kernels); volatile asm stays
// in program order, so all of a step's loads are issued before any use.
#ifdef __CUDA_ARCH__
__device__ __forceinline__ void csm_ld128(const double* p, csm_pack<double, 2>& v) {
    asm volatile("ld.global.v2.f64 {%0, %1}, [%2];" : "=d"(v.v[0]), "=d"(v.v[1]) : "l"(p));
}
__device__ __forceinline__ void csm_ld128(const float* p, csm_pack<float, 4>& v) {
    asm volatile("ld.global.v4.f32 {%0, %1, %2, %3}, [%4];"
                 : "=f"(v.v[0]), "=f"(v.v[1]), "=f"(v.v[2]), "=f"(v.v[3])
                 : "l"(p));
}
__device__ __forceinline__ void csm_ld128(const csm_half* p, csm_pack<csm_half, 8>& v) {
    unsigned w[4];
    asm volatile("ld.global.v4.b32 {%0, %1, %2, %3}, [%4];" : "=r"(w[0]), "=r"(w[1]), "=r"(w[2]), "=r"(w[3]) : "l"(p));
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        v.v[2 * i].bits = (unsigned short)(w[i] & 0xffffu);
        v.v[2 * i + 1].bits = (unsigned short)(w[i] >> 16);
    }
}
#endif

// A pack of global memory at p, by an explicit 16-byte load when it is one.
template <typename T, int N> __device__ __forceinline__ void csm_load_pack(const T* p, csm_pack<T, N>& v) {
#ifdef __CUDA_ARCH__
    if constexpr (sizeof(csm_pack<T, N>) == 16) {
        csm_ld128(p, v);
        return;
    }
#endif
    v = *reinterpret_cast<const csm_pack<T, N>*>(p);
}

#ifdef __CUDA_ARCH__
template <typename T, int N> __device__ __forceinline__ void csm_st128_any(T* p, const csm_pack<T, N>& v) {
    if constexpr (sizeof(csm_pack<T, N>) == 16) csm_st128(p, v);
}
#endif

// EXPLICIT: the block tiers' stores. The warp tier's struct stores already
// come out as STG.E.128, and the explicit form there makes ptxas spill
// csm_rows_warp<double, 2, 2, 4> on sm_90 (NVRTC 13.5).
template <typename T, int N, bool EXPLICIT = false>
__device__ __forceinline__ void csm_store(T* p, const typename csm_acc<T>::type* src) {
    csm_pack<T, N> pk;
#pragma unroll
    for (int c = 0; c < N; ++c) pk.v[c] = csm_from_acc<T>(src[c]);
#ifdef __CUDA_ARCH__
    if (EXPLICIT && sizeof(csm_pack<T, N>) == 16) {
        // NVVM splits a 16-byte struct store into 4 x STG.E (float), 8 x
        // STG.E.U16 (float16) or 2 x STG.E.64 (double) on sm_75..sm_90; an
        // explicit st.global.v* keeps it one STG.E.128 (the SASS gate checks).
        csm_st128_any(p, pk);
        return;
    }
#endif
    *reinterpret_cast<csm_pack<T, N>*>(p) = pk;
}

// ---------------------------------------------------------------- tier 1: warp

// Groups of `width` lanes per row (width = 32 unless the row has <= 32
// elements), the row held in registers: COLS = VEC * NVEC elements per lane,
// element c of pack p at column (p * width + lane_in_group) * VEC + c.
// VEC > 1 only when k and the row strides are multiples of VEC and the
// pointers are 16-byte aligned.
// The row loop is warp-uniform so every lane reaches every shuffle.
// A masked element is loaded as -inf (forward; its exp is 0 whenever the
// row's max is finite) or as y = grad = 0 (backward), so max and sums need no
// mask bits; the final pass re-reads them (a byte per element, from L1) for
// the select, rather than holding them in registers across the row: ptxas
// spills on sm_80-sm_89 otherwise (NVRTC 13.5).
template <typename T, int OP, int VEC, int NVEC>
__global__ void __launch_bounds__(CSM_WARP_THREADS)
    csm_rows_warp(const T* a, const T* b, T* out, const unsigned char* mask, long long ldm, long long lda,
                  long long ldb, long long ldo, long long n_rows, int k, int width) {
    typedef typename csm_acc<T>::type A;
    constexpr int COLS = VEC * NVEC;
    constexpr bool BACKWARD = OP == CSM_SOFTMAX_BACKWARD || OP == CSM_LOG_SOFTMAX_BACKWARD;
    static_assert(BACKWARD || OP == CSM_SOFTMAX || OP == CSM_LOG_SOFTMAX || OP == CSM_LOGSUMEXP,
                  "unknown operation code");
    // Only the (1, 1) kernel serves rows of <= 32 elements in narrower
    // groups; every other one runs with width 32, and saying so at compile
    // time turns the shuffles into SHFL instructions instead of calls (a
    // runtime width makes NVRTC 13.5 call __cuda_sm70_shflsync_bfly_p on
    // sm_80+, and registers live across calls spill).
    if (VEC > 1 || NVEC > 1) width = 32;
    const int lane = threadIdx.x & 31;
    const int col_lane = lane & (width - 1);
    const int rows_per_warp = 32 / width;
    const long long warp = (blockIdx.x * (long long)blockDim.x + threadIdx.x) >> 5;
    const long long n_warps = ((long long)gridDim.x * blockDim.x) >> 5;

    for (long long first = warp * rows_per_warp; first < n_rows; first += n_warps * rows_per_warp) {
        const long long row = first + lane / width;
        const bool live = row < n_rows;
        // this lane's packs in the row: pack p (column (p * width + col_lane)
        // * VEC) is in it when p < packs. One count instead of a column per
        // pack to compare with k: those stay addressing immediates, and the
        // double kernels keep a register free across their exp calls
        // (csm_rows_warp<double, 0, 2, 4> spills 4 bytes on sm_90 otherwise,
        // NVRTC 13.5, since the row strides came in).
        const int packs = !live || col_lane * VEC >= k ? 0
                          : NVEC == 1 ? 1 : (k - col_lane * VEC - 1) / (width * VEC) + 1;
        // this row's mask (or nullptr): one pointer, fewer live registers
        // than mask, ldm and row (ptxas spills on sm_100 otherwise)
        const unsigned char* const mrow = mask == nullptr ? mask : mask + row * ldm;
        A x[COLS];
        A g[BACKWARD ? COLS : 1];
#pragma unroll
        for (int p = 0; p < NVEC; ++p) {
            const int col = (p * width + col_lane) * VEC;
            if (p < packs) {
                csm_load<T, VEC>(a + row * lda + col, x + p * VEC);
                if (BACKWARD) csm_load<T, VEC>(b + row * ldb + col, g + p * VEC);
                if (mrow != nullptr) {
                    const unsigned keep = csm_keep_bits<VEC>(mrow, col);
#pragma unroll
                    for (int c = 0; c < VEC; ++c) {
                        if (!((keep >> c) & 1u)) {
                            x[p * VEC + c] = BACKWARD ? A(0) : csm_neg_inf<A>();
                            if (BACKWARD) g[p * VEC + c] = A(0);
                        }
                    }
                }
            }
        }

        if (!BACKWARD) {
            A m = csm_neg_inf<A>();
#pragma unroll
            for (int p = 0; p < NVEC; ++p) {
                if (p < packs) {
#pragma unroll
                    for (int c = 0; c < VEC; ++c) m = csm_max_op()(m, x[p * VEC + c]);
                }
            }
            m = csm_group_reduce<csm_max_op>(m, width);
            const A shift = csm_shift<OP>(m);
            A s = A(0);
#pragma unroll
            for (int p = 0; p < NVEC; ++p) {
                if (p < packs) {
#pragma unroll
                    for (int c = 0; c < VEC; ++c) {
                        const A e = csm_exp(x[p * VEC + c] - shift);
                        if (OP == CSM_SOFTMAX) x[p * VEC + c] = e;
                        s += e;
                    }
                }
            }
            s = csm_group_reduce<csm_sum_op>(s, width);
            if (OP == CSM_LOGSUMEXP) {
                if (live && col_lane == 0) out[row * ldo] = csm_from_acc<T>(m + csm_log(s));
                continue;
            }
            const A inv = A(1) / s;
            const A log_s = csm_log(s);
#pragma unroll
            for (int p = 0; p < NVEC; ++p) {
                const int col = (p * width + col_lane) * VEC;
                if (p < packs) {
                    const unsigned keep = csm_keep_bits<VEC>(mrow, col);
#pragma unroll
                    for (int c = 0; c < VEC; ++c) {
                        A& v = x[p * VEC + c];
                        const A r = (OP == CSM_SOFTMAX) ? v * inv : (v - m) - log_s;
                        v = ((keep >> c) & 1u) ? r : (OP == CSM_SOFTMAX ? A(0) : csm_neg_inf<A>());
                    }
                    csm_store<T, VEC>(out + row * ldo + col, x + p * VEC);
                }
            }
        } else {
            A s = A(0);
#pragma unroll
            for (int p = 0; p < NVEC; ++p) {
                if (p < packs) {
#pragma unroll
                    for (int c = 0; c < VEC; ++c) {
                        const int i = p * VEC + c;
                        s += (OP == CSM_SOFTMAX_BACKWARD) ? g[i] * x[i] : g[i];
                    }
                }
            }
            s = csm_group_reduce<csm_sum_op>(s, width);
#pragma unroll
            for (int p = 0; p < NVEC; ++p) {
                const int col = (p * width + col_lane) * VEC;
                if (p < packs) {
#pragma unroll
                    for (int c = 0; c < VEC; ++c) {
                        const int i = p * VEC + c;
                        if (OP == CSM_SOFTMAX_BACKWARD) {
                            x[i] = x[i] * (g[i] - s);
                        } else {
                            x[i] = g[i] - (COLS <= 2 ? csm_exp_inline(x[i]) : csm_exp(x[i])) * s;
                        }
                    }
                    // The mask bits after the exp calls: live across a call,
                    // they make ptxas spill the float64 kernels on sm_90.
                    const unsigned keep = csm_keep_bits<VEC>(mrow, col);
#pragma unroll
                    for (int c = 0; c < VEC; ++c) {
                        if (!((keep >> c) & 1u)) x[p * VEC + c] = A(0);
                    }
                    csm_store<T, VEC>(out + row * ldo + col, x + p * VEC);
                }
            }
        }
    }
}

// ---------------------------------------------------------------- tiers 2 and 3: block

// What the shared memory tier caches a row as: the accumulator type, except
// for float16, whose values (inputs, -inf, 0) are exact in float16.
template <typename T> struct csm_cache { typedef typename csm_acc<T>::type type; };
template <> struct csm_cache<csm_half> { typedef csm_half type; };
template <typename C> __device__ __forceinline__ C csm_to_cache(typename csm_acc<C>::type v) {
    return csm_from_acc<C>(v);
}

// Calls f(v, xs, gs) for every pack v = threadIdx.x + j * blockDim.x < n_vec
// of a row (pack v: elements v * VEC .. v * VEC + VEC - 1). With LOAD, xs
// (and gs, with PAIR) hold pack v of pa (pb) as accumulator values, and the
// loads go CSM_BLOCK_UNROLL at a time (packs of pa, or pairs of packs of pa
// and pb): all of a step's packs are loaded into registers before the first
// is used, so each thread has that many loads in flight (as in PyTorch SoftMax.cu ilpReduce); the few packs left
// over (fewer than CSM_BLOCK_UNROLL per thread) go one at a time. Without LOAD f
// reads the shared memory cache itself. The packs reach f in increasing v
// either way, so every thread's partials add in the same order as a plain
// loop's (the results do not depend on the unrolling).
template <typename T, int VEC, bool LOAD, bool PAIR, bool MASKED, typename F>
__device__ __forceinline__ void csm_block_steps(const T* pa, const T* pb, const unsigned char* mrow, int n_vec,
                                                F& f) {
    typedef typename csm_acc<T>::type A;
    // packs per step: with two rows (y and grad) half as many of each, the
    // same loads in flight in fewer registers (float64 and float16 spill at
    // 8 packs per step, NVRTC 13.5)
    constexpr int U = PAIR ? CSM_BLOCK_UNROLL / 2 : CSM_BLOCK_UNROLL;
    const int step = blockDim.x;
    int v = threadIdx.x;
    if (LOAD) {
        for (; v + (U - 1) * step < n_vec; v += U * step) {
            csm_pack<T, VEC> ra[U], rb[PAIR ? U : 1];
#pragma unroll
            for (int u = 0; u < U; ++u) {
                csm_load_pack<T, VEC>(pa + (v + u * step) * VEC, ra[u]);
                if (PAIR) csm_load_pack<T, VEC>(pb + (v + u * step) * VEC, rb[PAIR ? u : 0]);
            }
#pragma unroll
            for (int u = 0; u < U; ++u) {
                A xs[VEC], gs[VEC];
#pragma unroll
                for (int c = 0; c < VEC; ++c) {
                    xs[c] = csm_to_acc(ra[u].v[c]);
                    gs[c] = PAIR ? csm_to_acc(rb[PAIR ? u : 0].v[c]) : A(0);
                }
                // the mask bytes after the packs' loads, pack by pack: all
                // of a step's bytes at once spill the float16 kernels
                const int w = v + u * step;
                f(w, MASKED ? csm_keep_bits<VEC>(mrow, w * VEC) : (1u << VEC) - 1u, xs, gs);
            }
        }
    }
    for (; v < n_vec; v += step) {
        A xs[VEC], gs[VEC];
        if (LOAD) {
            csm_load<T, VEC>(pa + v * VEC, xs);
            if (PAIR) csm_load<T, VEC>(pb + v * VEC, gs);
        }
        f(v, MASKED ? csm_keep_bits<VEC>(mrow, v * VEC) : (1u << VEC) - 1u, xs, gs);
    }
}

// The loop for rows with and without a mask apart: a mask test inside a
// step puts branches between its loads and their uses, and ptxas then sinks
// the loads past them (one or two in flight instead of four; NVRTC 13.5).
template <typename T, int VEC, bool LOAD, bool PAIR, typename F>
__device__ __forceinline__ void csm_block_pass(const T* pa, const T* pb, const unsigned char* mrow, int n_vec,
                                               F&& f) {
    if (mrow == nullptr) {
        csm_block_steps<T, VEC, LOAD, PAIR, false>(pa, pb, mrow, n_vec, f);
    } else {
        csm_block_steps<T, VEC, LOAD, PAIR, true>(pa, pb, mrow, n_vec, f);
    }
}

// One block per row (grid-stride over rows). CACHE = true keeps the row (and
// for the backward ops the gradient) in shared memory, laid out as
// [VEC][k / VEC] so consecutive threads touch consecutive words: float32 and
// float64 as accumulator values (softmax caches its exps there for the last
// pass), float16 as float16 (exact, and twice the K fits; the last pass
// recomputes the exps, one more exp per element of a memory-bound pass);
// CACHE = false re-reads global memory (through L2) in every pass, for rows
// that do not fit. Each thread only ever touches its own cached elements, so
// the passes need no barrier besides the reductions'. The mask bits are
// re-read in every pass (a byte per element, from L1/L2) rather than cached.
// A masked element is cached as -inf (forward) or 0 (backward), so the cache
// holds no NaN from under the mask. Every pass that reads global memory keeps
// CSM_BLOCK_UNROLL loads in flight per thread (csm_block_pass). The
// vectorised kernels ask for 2 resident blocks of 512 threads (64 registers),
// not ptxas's default of full occupancy: at 32 registers ptxas serialises a
// step's loads again, one or two in flight (NVRTC 13.5, sm_90; the SASS gate
// of tests/test_gpu_nvrtc.py checks).
template <typename T, int OP, int VEC, bool CACHE>
__global__ void __launch_bounds__(VEC > 1 ? CSM_MAX_THREADS_VEC : CSM_MAX_THREADS, VEC > 1 ? 2 : 1)
    csm_rows_block(const T* a, const T* b, T* out, const unsigned char* mask, long long ldm, long long lda,
                   long long ldb, long long ldo, long long n_rows, int k) {
    typedef typename csm_acc<T>::type A;
    constexpr bool BACKWARD = OP == CSM_SOFTMAX_BACKWARD || OP == CSM_LOG_SOFTMAX_BACKWARD;
    static_assert(BACKWARD || OP == CSM_SOFTMAX || OP == CSM_LOG_SOFTMAX || OP == CSM_LOGSUMEXP,
                  "unknown operation code");
    A* const scratch = reinterpret_cast<A*>(csm_smem);
    // the cache's element type: float16 rows stay float16 (csm_cache_t)
    typedef typename csm_cache<T>::type C;
    constexpr bool CACHE_ACC = sizeof(C) == sizeof(A);
    C* const cache_a = reinterpret_cast<C*>(scratch + CSM_SCRATCH);
    C* const cache_b = cache_a + k;
    const int n_vec = k / VEC;
    int turn = 0;

    for (long long row = blockIdx.x; row < n_rows; row += gridDim.x) {
        // this row's mask (or nullptr)
        const unsigned char* const mrow = mask == nullptr ? mask : mask + row * ldm;
        const T* const pa = a + row * lda;
        const T* const pb = b + row * ldb;

        if (!BACKWARD) {
            A m = csm_neg_inf<A>();
            csm_block_pass<T, VEC, true, false>(
                pa, pb, mrow, n_vec, [&](int v, unsigned keep, const A* xs, const A*) {
#pragma unroll
                for (int c = 0; c < VEC; ++c) {
                    const A x = ((keep >> c) & 1u) ? xs[c] : csm_neg_inf<A>();
                    m = csm_max_op()(m, x);
                    if (CACHE) cache_a[c * n_vec + v] = csm_to_cache<C>(x);
                }
            });
            m = csm_block_reduce<csm_max_op>(m, scratch + 32 * (turn++ & 1));
            const A shift = csm_shift<OP>(m);
            A s = A(0);
            csm_block_pass<T, VEC, !CACHE, false>(
                pa, pb, mrow, n_vec, [&](int v, unsigned keep, const A* xs, const A*) {
#pragma unroll
                for (int c = 0; c < VEC; ++c) {
                    const A x = CACHE ? csm_to_acc(cache_a[c * n_vec + v]) : xs[c];
                    const A e = ((keep >> c) & 1u) ? csm_exp(x - shift) : A(0);
                    if (CACHE && CACHE_ACC && OP == CSM_SOFTMAX) cache_a[c * n_vec + v] = csm_to_cache<C>(e);
                    s += e;
                }
            });
            s = csm_block_reduce<csm_sum_op>(s, scratch + 32 * (turn++ & 1));
            if (OP == CSM_LOGSUMEXP) {
                if (threadIdx.x == 0) out[row * ldo] = csm_from_acc<T>(m + csm_log(s));
                continue;
            }
            const A inv = A(1) / s;
            const A log_s = csm_log(s);
            csm_block_pass<T, VEC, !CACHE, false>(
                pa, pb, mrow, n_vec, [&](int v, unsigned keep, const A* xs, const A*) {
                A ys[VEC];
#pragma unroll
                for (int c = 0; c < VEC; ++c) {
                    const A x = CACHE ? csm_to_acc(cache_a[c * n_vec + v]) : xs[c];
                    A r;
                    if (OP == CSM_SOFTMAX) {
                        r = (CACHE && CACHE_ACC ? x : csm_exp(x - m)) * inv;
                    } else {
                        r = (x - m) - log_s;
                    }
                    ys[c] = ((keep >> c) & 1u) ? r : (OP == CSM_SOFTMAX ? A(0) : csm_neg_inf<A>());
                }
                csm_store<T, VEC, true>(out + row * ldo + v * VEC, ys);
            });
        } else {
            A s = A(0);
            if (OP == CSM_LOG_SOFTMAX_BACKWARD && !CACHE) {
                // the sum needs grad alone: a pass over grad, in steps of
                // CSM_BLOCK_UNROLL of its packs (a step of pairs would have
                // only half as many loads in flight, y's being dead here)
                csm_block_pass<T, VEC, true, false>(
                    pb, pb, mrow, n_vec, [&](int, unsigned keep, const A* gs, const A*) {
#pragma unroll
                    for (int c = 0; c < VEC; ++c) s += ((keep >> c) & 1u) ? gs[c] : A(0);
                });
            } else {
            csm_block_pass<T, VEC, true, true>(
                pa, pb, mrow, n_vec, [&](int v, unsigned keep, const A* xs, const A* gs) {
#pragma unroll
                for (int c = 0; c < VEC; ++c) {
                    const bool kept = (keep >> c) & 1u;
                    const A x = kept ? xs[c] : A(0);
                    const A g = kept ? gs[c] : A(0);
                    s += (OP == CSM_SOFTMAX_BACKWARD) ? g * x : g;
                    if (CACHE) {
                        cache_a[c * n_vec + v] = csm_to_cache<C>(x);
                        cache_b[c * n_vec + v] = csm_to_cache<C>(g);
                    }
                }
            });
            }
            s = csm_block_reduce<csm_sum_op>(s, scratch + 32 * (turn++ & 1));
            csm_block_pass<T, VEC, !CACHE, true>(
                pa, pb, mrow, n_vec, [&](int v, unsigned keep, const A* xs, const A* gs) {
                A ys[VEC];
#pragma unroll
                for (int c = 0; c < VEC; ++c) {
                    const A x = CACHE ? csm_to_acc(cache_a[c * n_vec + v]) : xs[c];
                    const A g = CACHE ? csm_to_acc(cache_b[c * n_vec + v]) : gs[c];
                    const A r = (OP == CSM_SOFTMAX_BACKWARD) ? x * (g - s) : g - csm_exp(x) * s;
                    ys[c] = ((keep >> c) & 1u) ? r : A(0);
                }
                csm_store<T, VEC, true>(out + row * ldo + v * VEC, ys);
            });
        }
    }
}

// ---------------------------------------------------------------- tier 4: split rows

// Rows too few to fill the device (fewer than about two per SM) and too long
// for one block each are split into chunks of `chunk` elements (a multiple of
// VEC; the last may be shorter), each chunk a block, in two launches:
//
// csm_rows_split_partial: block (row, c) reduces chunk c to the pair
// (m_c, s_c): m_c the max of its unmasked elements and s_c the sum of
// exp(x - m_c) over them, shifted by 0 instead when m_c is infinite (so a
// chunk of -inf gives 0, a NaN gives NaN, a +inf gives +inf or NaN), into
// ws[(row * chunks + c) * 2 + {0, 1}] in the accumulator type.
//
// csm_rows_split_finish: block (row, c) merges the row's pairs in the fixed
// order c = 0, 1, ... with the online normaliser (M. Milakov, N. Gimelshein,
// "Online normalizer calculation for softmax", 2018): M = max m_c,
// S = sum s_c * exp(m_c - shift), shift = csm_shift<OP>(M). Every thread
// merges the same values in the same order, so all get the same bits, and a
// plan (chunk length, block size) always gives the same bits. Then it writes
// chunk c of softmax = exp(x - M) / S or log_softmax = (x - M) - log S; for
// logsumexp (one block per row) M + log S. The special rows come out as in
// the other tiers: a NaN makes some s_c and so S NaN; a +inf makes M = +inf
// and exp(m_c - M) NaN for its chunk (logsumexp: shift 0, S = +inf); a row
// of -inf gives M = -inf and exp(-inf - -inf) NaN (logsumexp: S = 0, -inf);
// a chunk of -inf in a finite row adds s_c * exp(-inf) = 0; a fully masked
// row's output is selected by the mask anyway (logsumexp: S = 0, -inf).
template <typename T, int VEC>
__global__ void __launch_bounds__(VEC > 1 ? CSM_MAX_THREADS_VEC : CSM_MAX_THREADS, VEC > 1 ? 2 : 1)
    csm_rows_split_partial(const T* a, typename csm_acc<T>::type* ws, const unsigned char* mask, long long ldm,
                           long long lda, long long n_rows, int k, int chunk) {
    typedef typename csm_acc<T>::type A;
    A* const scratch = reinterpret_cast<A*>(csm_smem);
    const int chunks = (k - 1) / chunk + 1;
    const long long n_items = n_rows * chunks;
    int turn = 0;
    for (long long item = blockIdx.x; item < n_items; item += gridDim.x) {
        const long long row = item / chunks;
        const int start = (int)(item - row * chunks) * chunk;
        const int len = k - start < chunk ? k - start : chunk;
        const T* const pa = a + row * lda + start;
        const unsigned char* const mrow = mask == nullptr ? mask : mask + row * ldm + start;
        A m = csm_neg_inf<A>();
        csm_block_pass<T, VEC, true, false>(pa, pa, mrow, len / VEC, [&](int, unsigned keep, const A* xs, const A*) {
#pragma unroll
            for (int c = 0; c < VEC; ++c) m = csm_max_op()(m, ((keep >> c) & 1u) ? xs[c] : csm_neg_inf<A>());
        });
        m = csm_block_reduce<csm_max_op>(m, scratch + 32 * (turn++ & 1));
        const A shift = csm_finite(m) ? m : A(0);
        A s = A(0);
        csm_block_pass<T, VEC, true, false>(pa, pa, mrow, len / VEC, [&](int, unsigned keep, const A* xs, const A*) {
#pragma unroll
            for (int c = 0; c < VEC; ++c) s += ((keep >> c) & 1u) ? csm_exp(xs[c] - shift) : A(0);
        });
        s = csm_block_reduce<csm_sum_op>(s, scratch + 32 * (turn++ & 1));
        if (threadIdx.x == 0) {
            ws[2 * item] = m;
            ws[2 * item + 1] = s;
        }
    }
}

// (float16 with 8-element packs: min. 1 block per SM, 128 registers; at the
// 64 of 2 blocks, ptxas spills 16 bytes of the softmax kernel on sm_100,
// NVRTC 13.5.)
template <typename T, int OP, int VEC>
__global__ void __launch_bounds__(VEC > 1 ? CSM_MAX_THREADS_VEC : CSM_MAX_THREADS,
                                  VEC > 1 && sizeof(T) != 2 ? 2 : 1)
    csm_rows_split_finish(const T* a, T* out, const typename csm_acc<T>::type* ws, const unsigned char* mask,
                          long long ldm, long long lda, long long ldo, long long n_rows, int k, int chunk) {
    typedef typename csm_acc<T>::type A;
    static_assert(OP == CSM_SOFTMAX || OP == CSM_LOG_SOFTMAX || OP == CSM_LOGSUMEXP, "a forward operation");
    const int chunks = (k - 1) / chunk + 1;
    // logsumexp: one item per row; the others: one per chunk
    const int per_row = OP == CSM_LOGSUMEXP ? 1 : chunks;
    const long long n_items = n_rows * per_row;
    for (long long item = blockIdx.x; item < n_items; item += gridDim.x) {
        const long long row = item / per_row;
        const A* const part = ws + 2 * row * chunks;
        A m = csm_neg_inf<A>();
        for (int c = 0; c < chunks; ++c) m = csm_max_op()(m, part[2 * c]);
        const A shift = csm_shift<OP>(m);
        A s = A(0);
        for (int c = 0; c < chunks; ++c) s += part[2 * c + 1] * csm_exp(part[2 * c] - shift);
        if (OP == CSM_LOGSUMEXP) {
            if (threadIdx.x == 0) out[row * ldo] = csm_from_acc<T>(m + csm_log(s));
            continue;
        }
        const int start = (int)(item - row * chunks) * chunk;
        const int len = k - start < chunk ? k - start : chunk;
        const unsigned char* const mrow = mask == nullptr ? mask : mask + row * ldm + start;
        const T* const pa = a + row * lda + start;
        T* const po = out + row * ldo + start;
        const A inv = A(1) / s;
        const A log_s = csm_log(s);
        csm_block_pass<T, VEC, true, false>(pa, pa, mrow, len / VEC,
                                            [&](int v, unsigned keep, const A* xs, const A*) {
            A ys[VEC];
#pragma unroll
            for (int c = 0; c < VEC; ++c) {
                const A r = OP == CSM_SOFTMAX ? csm_exp(xs[c] - m) * inv : (xs[c] - m) - log_s;
                ys[c] = ((keep >> c) & 1u) ? r : (OP == CSM_SOFTMAX ? A(0) : csm_neg_inf<A>());
            }
            csm_store<T, VEC, true>(po + v * VEC, ys);
        });
    }
}

// ---------------------------------------------------------------- Jacobian

// J[n, i, j] = s_i * (delta_ij - s_j): the diagonal as s_i - s_i * s_i, the
// rest as -(s_i * s_j). Where s_i > 1/2 (a row has at most one), s_i - s_i *
// s_i cancels and keeps the rounding of s_i as its error, so the diagonal
// there is s_i times the sum of the other s_j, the row's s_j <= 1/2 (`rest`,
// a sum of positive terms), as the CPU kernels take it. The product commutes
// exactly, so J is symmetric bit for bit provided s_i is the same bits
// wherever it is used; each kernel computes every s_i by one expression,
// csm_prob. With a mask, s is the masked softmax, and the rows and columns
// of masked elements are exactly 0, also where an unmasked s_i is NaN: a
// masked s_i is carried as -0.0, a value no unmasked s_i takes (exp(.) * inv
// is +0 at the smallest, or NaN), and any entry with a -0.0 factor is 0.
template <typename A> __device__ __forceinline__ A csm_masked_prob();
template <> __device__ __forceinline__ float csm_masked_prob<float>() { return __int_as_float(0x80000000); }
template <> __device__ __forceinline__ double csm_masked_prob<double>() {
    return __longlong_as_double((long long)0x8000000000000000ULL);
}
__device__ __forceinline__ bool csm_is_masked_prob(float v) { return __float_as_int(v) == (int)0x80000000; }
__device__ __forceinline__ bool csm_is_masked_prob(double v) {
    return __double_as_longlong(v) == (long long)0x8000000000000000ULL;
}

template <typename A> __device__ __forceinline__ A csm_jacobian_entry(A si, A sj, bool diagonal, bool zero, A rest) {
    return zero ? A(0) : diagonal ? (si > A(0.5) ? si * rest : si - csm_mul_rn(si, si)) : -(si * sj);
}

// A row's share of `rest`: an unmasked s_j <= 1/2 (a NaN too: the row is NaN).
template <typename A> __device__ __forceinline__ A csm_rest_term(A s, bool kept) {
    return kept && !(s > A(0.5)) ? s : A(0);
}

template <typename A> __device__ __forceinline__ A csm_prob(A x, A m, A inv, bool kept) {
    return kept ? csm_exp(x - m) * inv : csm_masked_prob<A>();
}

__device__ __forceinline__ bool csm_kept(const unsigned char* mask, long long off) {
    return mask == nullptr || mask[off] != 0;
}

// Rows of k <= 32: one group of `width` lanes per row holds s in registers and
// writes the k*k block in flat order, so consecutive lanes store consecutive
// addresses; s_i and s_j come from the group by shuffle.
template <typename T>
__global__ void __launch_bounds__(CSM_WARP_THREADS)
    csm_jacobian_warp(const T* x, T* out, const unsigned char* mask, long long ldm, long long n_rows, int k,
                      int width) {
    typedef typename csm_acc<T>::type A;
    const int lane = threadIdx.x & 31;
    const int col_lane = lane & (width - 1);
    const int rows_per_warp = 32 / width;
    const long long warp = (blockIdx.x * (long long)blockDim.x + threadIdx.x) >> 5;
    const long long n_warps = ((long long)gridDim.x * blockDim.x) >> 5;
    const int kk = k * k;

    for (long long first = warp * rows_per_warp; first < n_rows; first += n_warps * rows_per_warp) {
        const long long row = first + lane / width;
        const bool valid = row < n_rows && col_lane < k && csm_kept(mask, row * ldm + col_lane);
        const A v = valid ? csm_to_acc(x[row * k + col_lane]) : csm_neg_inf<A>();
        const A m = csm_group_reduce<csm_max_op>(v, width);
        const A e = valid ? csm_exp(v - m) : A(0);
        const A inv = A(1) / csm_group_reduce<csm_sum_op>(e, width);
        const A s = valid ? e * inv : csm_masked_prob<A>();
        const A rest = csm_group_reduce<csm_sum_op>(csm_rest_term(s, valid), width);
        T* const po = out + row * (long long)kk;
        for (int r0 = 0; r0 < kk; r0 += width) {
            const int r = r0 + col_lane;
            const int i = r < kk ? r / k : 0;
            const int j = r < kk ? r - i * k : 0;
            const A si = __shfl_sync(0xffffffffu, s, i, width);
            const A sj = __shfl_sync(0xffffffffu, s, j, width);
            const bool zero = csm_is_masked_prob(si) || csm_is_masked_prob(sj);
            if (row < n_rows && r < kk) po[r] = csm_from_acc<T>(csm_jacobian_entry(si, sj, i == j, zero, rest));
        }
    }
}

// Rows of any k: one block per row. After the row's max and sum, each thread
// owns column j = j0 + threadIdx.x and walks down the rows i, so a warp stores
// 32 consecutive elements of row i of the block. s_i is shared through a tile
// of blockDim.x values in shared memory; recomputing s costs k / blockDim.x
// extra exps per element of s, negligible next to the k*k stores, and keeps
// the kernel independent of k (no k-sized buffer).
// (min. 1 block per SM: without it, ptxas for sm_100 aims at two 1024-thread
// blocks, 32 registers, and spills the masked kernel; NVRTC 13.5.)
template <typename T>
__global__ void __launch_bounds__(CSM_MAX_THREADS, 1)
    csm_jacobian_block(const T* x, T* out, const unsigned char* mask, long long ldm, long long n_rows, int k) {
    typedef typename csm_acc<T>::type A;
    A* const scratch = reinterpret_cast<A*>(csm_smem);
    A* const tile = scratch + CSM_SCRATCH;
    int turn = 0;

    for (long long row = blockIdx.x; row < n_rows; row += gridDim.x) {
        const T* const px = x + row * (long long)k;
        const long long mrow = row * ldm;
        T* const po = out + row * (long long)k * k;
        A m = csm_neg_inf<A>();
        for (int c = threadIdx.x; c < k; c += blockDim.x) {
            if (csm_kept(mask, mrow + c)) m = csm_max_op()(m, csm_to_acc(px[c]));
        }
        m = csm_block_reduce<csm_max_op>(m, scratch + 32 * (turn++ & 1));
        A s = A(0);
        for (int c = threadIdx.x; c < k; c += blockDim.x) {
            if (csm_kept(mask, mrow + c)) s += csm_exp(csm_to_acc(px[c]) - m);
        }
        const A inv = A(1) / csm_block_reduce<csm_sum_op>(s, scratch + 32 * (turn++ & 1));
        A rest = A(0);
        for (int c = threadIdx.x; c < k; c += blockDim.x) {
            const bool kept = csm_kept(mask, mrow + c);
            rest += csm_rest_term(csm_prob(csm_to_acc(px[c]), m, inv, kept), kept);
        }
        rest = csm_block_reduce<csm_sum_op>(rest, scratch + 32 * (turn++ & 1));

        for (int j0 = 0; j0 < k; j0 += blockDim.x) {
            const int j = j0 + threadIdx.x;
            const A sj = j < k ? csm_prob(csm_to_acc(px[j]), m, inv, csm_kept(mask, mrow + j)) : A(0);
            const bool column_masked = csm_is_masked_prob(sj);
            for (int i0 = 0; i0 < k; i0 += blockDim.x) {
                __syncthreads();  // everyone is done reading the previous tile
                const int it = i0 + threadIdx.x;
                if (it < k) tile[threadIdx.x] = csm_prob(csm_to_acc(px[it]), m, inv, csm_kept(mask, mrow + it));
                __syncthreads();
                const int n_i = k - i0 < (int)blockDim.x ? k - i0 : (int)blockDim.x;
                if (j < k) {
                    for (int ii = 0; ii < n_i; ++ii) {
                        const int i = i0 + ii;
                        const A si = tile[ii];
                        const bool zero = column_masked || csm_is_masked_prob(si);
                        po[i * (long long)k + j] = csm_from_acc<T>(csm_jacobian_entry(si, sj, i == j, zero, rest));
                    }
                }
            }
        }
    }
}
