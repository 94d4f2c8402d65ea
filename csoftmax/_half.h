/*
 * float16 (IEEE binary16) <-> float32, for float16 inputs, which are
 * computed in float32 and returned as float16. Done here, not by NumPy
 * casts: NumPy's float16 -> float32 cast took 2.5 us for 640 elements (most
 * of a small call), and its float32 -> float16 cast warns "overflow
 * encountered in cast" where a result is below the float16 range
 * (log_softmax of [-60000, 0, 60000]), whose right value is -inf.
 *
 * Both directions are the branch-free algorithms of the FP16 library (Marat
 * Dukhan, MIT licence: fp16_ieee_to_fp32_value, fp16_ieee_from_fp32_value):
 * exact widening, and rounding to nearest-even done by float multiplies in
 * hardware, subnormals included. NaN becomes a quiet NaN with its sign.
 */
#ifndef CSOFTMAX_HALF_H
#define CSOFTMAX_HALF_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline uint16_t csm_f32_to_f16(float f)
{
    const float scale_to_inf = 5.192296858534828e+33f;  /* 2^112 */
    const float scale_to_zero = 7.703719777548943e-34f; /* 2^-110 */
    float base = (fabsf(f) * scale_to_inf) * scale_to_zero;
    uint32_t w, bits;
    memcpy(&w, &f, sizeof w);
    const uint32_t shl1_w = w + w;
    const uint32_t sign = w & UINT32_C(0x80000000);
    uint32_t bias = shl1_w & UINT32_C(0xFF000000);
    if (bias < UINT32_C(0x71000000))
        bias = UINT32_C(0x71000000);
    const uint32_t bias_bits = (bias >> 1) + UINT32_C(0x07800000);
    float bias_f;
    memcpy(&bias_f, &bias_bits, sizeof bias_f);
    base = bias_f + base;
    memcpy(&bits, &base, sizeof bits);
    const uint32_t exp_bits = (bits >> 13) & UINT32_C(0x00007C00);
    const uint32_t mantissa_bits = bits & UINT32_C(0x00000FFF);
    const uint32_t nonsign = exp_bits + mantissa_bits;
    return (uint16_t)((sign >> 16) | (shl1_w > UINT32_C(0xFF000000) ? UINT32_C(0x7E00) : nonsign));
}

static inline float csm_f16_to_f32(uint16_t h)
{
    const uint32_t w = (uint32_t)h << 16;
    const uint32_t sign = w & UINT32_C(0x80000000);
    const uint32_t two_w = w + w;
    const uint32_t exp_offset = UINT32_C(0xE0) << 23;
    const float exp_scale = 1.925929944387236e-34f; /* 2^-112 */
    const uint32_t norm_bits = (two_w >> 4) + exp_offset;
    float norm, denorm;
    memcpy(&norm, &norm_bits, sizeof norm);
    norm *= exp_scale;
    const uint32_t denorm_bits = (two_w >> 17) | (UINT32_C(126) << 23);
    memcpy(&denorm, &denorm_bits, sizeof denorm);
    denorm -= 0.5f;
    uint32_t nb, db;
    memcpy(&nb, &norm, sizeof nb);
    memcpy(&db, &denorm, sizeof db);
    const uint32_t bits = sign | (two_w < (UINT32_C(1) << 27) ? db : nb);
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* dst <- src as float32, n rows of k; element (r, j) at base + r * rs + j * cs. */
static void csm_widen_f16_portable(const uint16_t *src, ptrdiff_t srs, ptrdiff_t scs,
                          float *dst, ptrdiff_t drs, ptrdiff_t dcs, ptrdiff_t n, ptrdiff_t k)
{
    for (ptrdiff_t r = 0; r < n; ++r) {
        const uint16_t *s = src + r * srs;
        float *d = dst + r * drs;
        if (scs == 1 && dcs == 1) {
#pragma omp simd
            for (ptrdiff_t j = 0; j < k; ++j)
                d[j] = csm_f16_to_f32(s[j]);
        } else {
            for (ptrdiff_t j = 0; j < k; ++j)
                d[j * dcs] = csm_f16_to_f32(s[j * scs]);
        }
    }
}

/* dst <- src as float16, n rows of k; element (r, j) at base + r * rs + j * cs. */
static void csm_narrow_f16_portable(const float *src, ptrdiff_t srs, ptrdiff_t scs,
                           uint16_t *dst, ptrdiff_t drs, ptrdiff_t dcs, ptrdiff_t n, ptrdiff_t k)
{
    for (ptrdiff_t r = 0; r < n; ++r) {
        const float *s = src + r * srs;
        uint16_t *d = dst + r * drs;
        if (scs == 1 && dcs == 1) {
#pragma omp simd
            for (ptrdiff_t j = 0; j < k; ++j)
                d[j] = csm_f32_to_f16(s[j]);
        } else {
            for (ptrdiff_t j = 0; j < k; ++j)
                d[j * dcs] = csm_f32_to_f16(s[j * scs]);
        }
    }
}

/* The same conversions with the F16C instructions (every AVX2 CPU has
 * them), eight elements at a time: the portable code costs about 1 ns per
 * element at baseline SSE2, a third of a (64, 10) call. vcvtps2ph rounds
 * to nearest-even as the portable code does, so the results are the same. */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define CSM_HAVE_F16C_PATH 1

__attribute__((target("avx,f16c")))
static void csm_widen_f16_f16c(const uint16_t *src, ptrdiff_t srs, ptrdiff_t scs,
                               float *dst, ptrdiff_t drs, ptrdiff_t dcs, ptrdiff_t n, ptrdiff_t k)
{
    if (scs != 1 || dcs != 1) {
        csm_widen_f16_portable(src, srs, scs, dst, drs, dcs, n, k);
        return;
    }
    for (ptrdiff_t r = 0; r < n; ++r) {
        const uint16_t *s = src + r * srs;
        float *d = dst + r * drs;
        ptrdiff_t j = 0;
        for (; j + 8 <= k; j += 8)
            _mm256_storeu_ps(d + j, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + j))));
        for (; j < k; ++j)
            d[j] = csm_f16_to_f32(s[j]);
    }
}

__attribute__((target("avx,f16c")))
static void csm_narrow_f16_f16c(const float *src, ptrdiff_t srs, ptrdiff_t scs,
                                uint16_t *dst, ptrdiff_t drs, ptrdiff_t dcs, ptrdiff_t n, ptrdiff_t k)
{
    if (scs != 1 || dcs != 1) {
        csm_narrow_f16_portable(src, srs, scs, dst, drs, dcs, n, k);
        return;
    }
    for (ptrdiff_t r = 0; r < n; ++r) {
        const float *s = src + r * srs;
        uint16_t *d = dst + r * drs;
        ptrdiff_t j = 0;
        for (; j + 8 <= k; j += 8)
            _mm_storeu_si128((__m128i *)(d + j),
                             _mm256_cvtps_ph(_mm256_loadu_ps(s + j), _MM_FROUND_TO_NEAREST_INT));
        for (; j < k; ++j)
            d[j] = csm_f32_to_f16(s[j]);
    }
}

static int csm_f16c(void)
{
    static int have = -1; /* a benign race: every thread computes the same */
    if (have < 0) {
        __builtin_cpu_init();
        have = __builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx");
    }
    return have;
}
#endif

static void csm_widen_f16(const uint16_t *src, ptrdiff_t srs, ptrdiff_t scs,
                          float *dst, ptrdiff_t drs, ptrdiff_t dcs, ptrdiff_t n, ptrdiff_t k)
{
#ifdef CSM_HAVE_F16C_PATH
    if (csm_f16c()) {
        csm_widen_f16_f16c(src, srs, scs, dst, drs, dcs, n, k);
        return;
    }
#endif
    csm_widen_f16_portable(src, srs, scs, dst, drs, dcs, n, k);
}

static void csm_narrow_f16(const float *src, ptrdiff_t srs, ptrdiff_t scs,
                           uint16_t *dst, ptrdiff_t drs, ptrdiff_t dcs, ptrdiff_t n, ptrdiff_t k)
{
#ifdef CSM_HAVE_F16C_PATH
    if (csm_f16c()) {
        csm_narrow_f16_f16c(src, srs, scs, dst, drs, dcs, n, k);
        return;
    }
#endif
    csm_narrow_f16_portable(src, srs, scs, dst, drs, dcs, n, k);
}

#endif /* CSOFTMAX_HALF_H */
