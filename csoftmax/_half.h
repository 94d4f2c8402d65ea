/*
 * float32 -> float16 (IEEE binary16) rounding, for results computed in
 * float32 and returned as float16. Done here, not by a NumPy cast, so that
 * a result below the float16 range (log_softmax of [-60000, 0, 60000])
 * becomes -inf silently, as it should, instead of raising NumPy's "overflow
 * encountered in cast" warning, and so that the cast costs no Python call.
 *
 * The rounding is the branch-free algorithm of the FP16 library (Marat
 * Dukhan, MIT licence, fp16_ieee_from_fp32_value): the float multiplies
 * round the mantissa to nearest-even in hardware, subnormals included.
 * NaN becomes a quiet NaN with the input's sign.
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

/* dst <- src as float16, n rows of k; element (r, j) at base + r * rs + j * cs. */
static void csm_narrow_f16(const float *src, ptrdiff_t srs, ptrdiff_t scs,
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

#endif /* CSOFTMAX_HALF_H */
