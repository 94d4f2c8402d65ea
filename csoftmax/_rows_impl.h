/*
 * Row kernels of csoftmax for ONE (element type, instruction set) pair.
 *
 * This file is a template: _rows_isa.h includes it once per pair, with
 *   CSM_T       the element type (float or double)
 *   CSM_F32     1 for float, 0 for double
 *   CSM_SFX     the name suffix (f32_avx2, f64_baseline, ...)
 *   CSM_TARGET  a function attribute selecting the instruction set (may be empty)
 * defined, so every variant is the same source compiled for another ISA.
 *
 * Why plain C with `#pragma omp simd`: libm's expf/exp do not vectorise without
 * -ffast-math, and -ffast-math breaks NaN/inf handling (docs/design.md). The
 * polynomial exp below does vectorise under -O3 -fno-math-errno
 * -fno-trapping-math, and the reductions need `reduction(...)` clauses, which
 * Cython cannot emit.
 *
 * Every kernel processes `rows` rows of length K. Row r of an operand starts at
 * base + r * ld (ld in elements), columns are contiguous. The kernels never
 * validate: the Python wrapper does. An output may be the very same buffer as
 * an input (in-place), so no pointer is declared restrict.
 */

#define CSM_FN(name) CSM_PASTE(name, CSM_SFX)

/* A mask widened to the element's width: all ones (the element takes part)
 * or zero; the masked kernels (_masked_impl.h) make it once per row. */
#if CSM_F32
  #define CSM_MW_T uint32_t
#else
  #define CSM_MW_T uint64_t
#endif

#if CSM_F32
  #define CSM_UINT uint32_t
  #define CSM_SINT int32_t
  #define CSM_MANT_BITS 23
  #define CSM_BIAS 127
  /* Clamp limits (csm_exp_core says why these): below ln(2^-150) =
     -103.97 the result is +0, above EXP_HI it overflows to +inf. */
  #define CSM_EXP_LO (-132.39f)    /* n = -191 */
  #define CSM_EXP_LO_UP (-176.06f) /* n = -254 */
  #define CSM_EXP_HI (89.0f)
  /* 1.5 * 2^23: adding it rounds to an integer held in the low mantissa bits. */
  #define CSM_SHIFTER 12582912.0f
  #define CSM_SHIFTER_BITS 0x4b400000u
  #define CSM_LOG2E 1.44269504088896341f
  /* Cody-Waite split of ln 2 (Cephes expf): n * LN2_HI is exact for |n| < 2^14. */
  #define CSM_LN2_HI 0.693359375f
  #define CSM_LN2_LO (-2.12194440e-4f)
#else
  #define CSM_UINT uint64_t
  #define CSM_SINT int64_t
  #define CSM_MANT_BITS 52
  #define CSM_BIAS 1023
  #define CSM_EXP_LO (-753.45)     /* n = -1087; +0 below -745.13 */
  #define CSM_EXP_LO_UP (-1418.18) /* n = -2046 */
  #define CSM_EXP_HI (710.0)
  #define CSM_SHIFTER 6755399441055744.0 /* 1.5 * 2^52 */
  #define CSM_SHIFTER_BITS 0x4338000000000000ull
  #define CSM_LOG2E 1.44269504088896340736
  /* fdlibm's split of ln 2: n * LN2_HI is exact for |n| < 2^11. */
  #define CSM_LN2_HI 6.93147180369123816490e-01
  #define CSM_LN2_LO 1.90821492927058770002e-10
#endif

/* exp(r) - 1 for |r| <= ln2/2, as r + r^2 P(r): the caller adds the 1 in
 * the same rounding as its scale by 2^n (q * s + s, where q * s is exact).
 * P's coefficients, highest degree first, are one table for the scalar form
 * here and the register form (csm_exp_v), which must agree to the bit. */
#if CSM_F32
/* Degree 6: P of degree 4, fitted (relative-error minimax by reweighted
 * least squares) to (exp(r) - 1 - r) / r^2 on [-ln2/2, ln2/2]. Against
 * Cephes expf's degree 7 it saves a multiply-add and keeps the error of
 * the whole exp at the same <= 1.01 ulp (float32, 6e6 points against
 * float64 exp; tests/test_vmath.py sweeps the exp of every ISA). */
  #define CSM_EXPM1_P(X0, X) X0(0x1.687d90p-10f) X(0x1.123b8ep-7f) X(0x1.555b56p-5f) \
                         X(0x1.55548ep-3f) X(0x1.fffff8p-2f)
#else
/* Degree 11: P of degree 9, fitted to (exp(r) - 1 - r) / r^2 on
 * [-ln2/2, ln2/2] (Lawson's reweighted least squares at 45 digits, mpmath,
 * minimising the relative error of exp(r) = 1 + r + r^2 P(r)), each
 * coefficient rounded to double in turn, lowest degree first, and the
 * others refitted: 3.7e-18 relative with the double coefficients (rounded
 * at once: 1.1e-17). It replaced the Taylor series to r^13 (4.3e-18), two
 * multiply-adds fewer: AMD Zen 5, one thread, interleaved, float64 softmax,
 * log_softmax and log_softmax_backward at 4096 x 128 and 1024 x 1000 took
 * 0.84-0.89x the time (AVX-512), 0.84-0.90x (AVX2), 0.81-0.85x (baseline;
 * its softmax 0.45x). The whole exp keeps its max error (0.88 ulp AVX-512,
 * 0.99 AVX2, 0.96 baseline over 5e6 points against x87 extended exp, as
 * before; tests/test_vmath.py). Degree 10 fits only to 2.9e-16 (1.3 ulp). */
  #define CSM_EXPM1_P(X0, X) X0(0x1.ada12a5c20013p-26) X(0x1.28ade09aa2011p-22)          \
                         X(0x1.71df0ec9f2791p-19) X(0x1.a019997ea23a4p-16)                \
                         X(0x1.a01a013531ee2p-13) X(0x1.6c16c1846b871p-10)                \
                         X(0x1.1111111125876p-7) X(0x1.55555555506e7p-5)                  \
                         X(0x1.5555555555504p-3) X(0x1.000000000000ap-1)
/* AVX2 and baseline evaluate P as c0 + r (c1 + r Q(r)), Q(r) = E(r^2) +
 * r O(r^2) from Q's even and odd coefficients by Horner's rule in r^2 (r^2
 * is q's product anyway): the same nine multiply-adds as Horner's rule in
 * r, in two chains of three and then three, not one chain of nine. A whole
 * exp is about 17 dependent operations, four cycles each on AMD Zen 4, and
 * its scheduler holds too few 256-bit exps at once to keep both
 * multiply-add pipes busy. AMD Zen 4, one thread, float64, out=, ns per
 * element, best of 100, three alternations, Horner -> split, 256 x 1000 |
 * 4096 x 128: AVX2 softmax 1.09 -> 1.08 | 1.11 -> 1.03, log_softmax 1.09 ->
 * 1.04 | 1.12 -> 1.05, logsumexp 0.94 -> 0.88 | 0.96 -> 0.91,
 * log_softmax_backward 0.90 -> 0.86 | 0.94 -> 0.90; baseline 0.88-0.90x.
 * AVX-512's 512-bit exps fill the pipes with half as many in flight, and
 * the split took 1-3% longer there, so it keeps Horner's rule. P's last two
 * steps stay Horner's, which keeps the exp within its 1.01 ulp (AVX2's
 * worst in 4e6 points 0.987, baseline 0.950): split to the end, E(r^2) + r
 * O(r^2) over all of P (0.91-0.92x under AVX2), reached 1.033 ulp. */
  #define CSM_EXPM1_SPLIT (CSM_ISA_ID != 2)
  #define CSM_EXPM1_Q_EVEN(X0, X) X0(0x1.28ade09aa2011p-22) X(0x1.a019997ea23a4p-16) \
                         X(0x1.6c16c1846b871p-10) X(0x1.55555555506e7p-5)
  #define CSM_EXPM1_Q_ODD(X0, X) X0(0x1.ada12a5c20013p-26) X(0x1.71df0ec9f2791p-19)  \
                         X(0x1.a01a013531ee2p-13) X(0x1.1111111125876p-7)
  #define CSM_EXPM1_C1 0x1.5555555555504p-3
  #define CSM_EXPM1_C0 0x1.000000000000ap-1
#endif
#ifndef CSM_EXPM1_SPLIT
  #define CSM_EXPM1_SPLIT 0
#endif

/* float32 under AVX2 and AVX-512 reduces by ln2/N and looks 2^(j/N) up in
 * a table of N held in one register, N = 8 (AVX2) or 16 (AVX-512): x =
 * (N n + j) ln2/N + r, |r| <= ln2/(2N). exp(r) - 1 then needs only r + c2
 * r^2 + c3 r^3, three operations of the multiply-add unit instead of six,
 * and the lookup is one permute (vpermd, which reads the low bits of each
 * index: j) and an integer add, which run beside them. AMD Zen 5, one
 * thread, AVX2: the exp-and-sum loop took 0.63-0.71 cycles per element
 * against 0.87-0.97. c2, c3: Lawson's reweighted least squares of the
 * relative error on [-ln2/(2N), ln2/(2N)]; the whole exp is within 1.14 ulp
 * (N = 8; the table's own rounding is half of it) and 0.99 (N = 16),
 * against 1.01 for the degree-6 form, which baseline (no register permute)
 * and float64 (a table rounded to double would break its 1.01 ulp) keep.
 * CSM_EXP_TAB_E(j) is 2^(j/N)'s bits less j << (23 - log2 N), plus 64 << 23:
 * added to t's bits shifted left by 23 - log2 N, whose low bits are
 * N n + j, it gives the bits of 2^(j/N) 2^(n+64), the softmax domain's scale
 * s (below). */
#define CSM_EXP_TAB (CSM_X86_DISPATCH && CSM_ISA_ID >= 1 && CSM_F32)
#if CSM_EXP_TAB
  #define CSM_EXP_TAB_LN2_HI (CSM_LN2_HI / CSM_EXP_TAB_N) /* exact: the same bits, scaled */
  #define CSM_EXP_TAB_LN2_LO (CSM_LN2_LO / CSM_EXP_TAB_N)
  #define CSM_EXP_TAB_SHIFT (CSM_MANT_BITS - CSM_EXP_TAB_LOG2N)
  #define CSM_EXP_TAB_E(j, bits) ((uint32_t)(bits) - ((uint32_t)(j) << CSM_EXP_TAB_SHIFT) + (64u << 23))
  #define CSM_EXP_TAB_NORMAL_E(j, bits) ((uint32_t)(bits) - ((uint32_t)(j) << CSM_EXP_TAB_SHIFT))
  #if CSM_ISA_ID == 2
    #define CSM_EXP_TAB_N 16
    #define CSM_EXP_TAB_LOG2N 4
    #define CSM_EXP_TAB_LOG2E 23.0831206542234146f /* 16 log2(e) */
    #define CSM_EXP_TAB_C2 0x1.00022p-1f
    #define CSM_EXP_TAB_C3 0x1.5555fap-3f
    #define CSM_EXP_TAB_ENTRIES(X) X(0, 0x3f800000u), X(1, 0x3f85aac3u), X(2, 0x3f8b95c2u),   \
        X(3, 0x3f91c3d3u), X(4, 0x3f9837f0u), X(5, 0x3f9ef532u), X(6, 0x3fa5fed7u),          \
        X(7, 0x3fad583fu), X(8, 0x3fb504f3u), X(9, 0x3fbd08a4u), X(10, 0x3fc5672au),         \
        X(11, 0x3fce248cu), X(12, 0x3fd744fdu), X(13, 0x3fe0ccdfu), X(14, 0x3feac0c7u),      \
        X(15, 0x3ff5257du)
  #else
    #define CSM_EXP_TAB_N 8
    #define CSM_EXP_TAB_LOG2N 3
    #define CSM_EXP_TAB_LOG2E 11.5415603271117073f /* 8 log2(e) */
    #define CSM_EXP_TAB_C2 0x1.000878p-1f
    #define CSM_EXP_TAB_C3 0x1.55568cp-3f
    #define CSM_EXP_TAB_ENTRIES(X) X(0, 0x3f800000u), X(1, 0x3f8b95c2u), X(2, 0x3f9837f0u), \
        X(3, 0x3fa5fed7u), X(4, 0x3fb504f3u), X(5, 0x3fc5672au), X(6, 0x3fd744fdu), X(7, 0x3feac0c7u)
  #endif
static const uint32_t CSM_FN(csm_exp_tab)[CSM_EXP_TAB_N] = {CSM_EXP_TAB_ENTRIES(CSM_EXP_TAB_E)};
  #if CSM_ISA_ID == 2
    #define CSM_EXP_TAB_PLAIN(j, bits) (bits)
/* 2^(j/N) itself, for AVX-512's register form (csm_exp_v). */
static const uint32_t CSM_FN(csm_exp_tab_plain)[CSM_EXP_TAB_N] = {CSM_EXP_TAB_ENTRIES(CSM_EXP_TAB_PLAIN)};
  #endif
#endif

/* P(r): by Horner's rule, or in halves (CSM_EXPM1_SPLIT). */
static CSM_INLINE CSM_TARGET CSM_T CSM_FN(csm_expm1_p)(CSM_T r)
{
#if CSM_EXPM1_SPLIT
    const CSM_T r2 = r * r;
#define CSM_HORNER0_(c) CSM_T e = (c);
#define CSM_HORNER_(c) e = e * r2 + (c);
    CSM_EXPM1_Q_EVEN(CSM_HORNER0_, CSM_HORNER_)
#undef CSM_HORNER0_
#undef CSM_HORNER_
#define CSM_HORNER0_(c) CSM_T o = (c);
#define CSM_HORNER_(c) o = o * r2 + (c);
    CSM_EXPM1_Q_ODD(CSM_HORNER0_, CSM_HORNER_)
#undef CSM_HORNER0_
#undef CSM_HORNER_
    const CSM_T p = (o * r + e) * r + (CSM_T)CSM_EXPM1_C1;
    return p * r + (CSM_T)CSM_EXPM1_C0;
#else
#define CSM_HORNER0_(c) CSM_T p = (c);
#define CSM_HORNER_(c) p = p * r + (c);
    CSM_EXPM1_P(CSM_HORNER0_, CSM_HORNER_)
#undef CSM_HORNER0_
#undef CSM_HORNER_
    return p;
#endif
}

static CSM_INLINE CSM_TARGET CSM_T CSM_FN(csm_expm1_poly)(CSM_T r)
{
    return CSM_FN(csm_expm1_p)(r) * (r * r) + r;
}

/* The same P, carried to exp(r) itself by Horner's rule: ((P r + 1) r + 1,
 * two multiply-adds). The AVX-512 float64 kernels take it: their scale,
 * vscalef(exp(r), n), then needs no 1 + q; the polynomial and its
 * reconstruction are 6 operations per register, not 7 (a product r r, the
 * multiply-add of q and the add of 1 replaced by two multiply-adds). The
 * last multiply-add rounds exp(r) once, as 1 + q did. Measured in
 * tests/test_vmath.py's sweeps against float64 exp. */
static CSM_INLINE CSM_TARGET CSM_T CSM_FN(csm_exp_poly)(CSM_T r)
{
    const CSM_T p = CSM_FN(csm_expm1_p)(r) * r + (CSM_T)1;
    return p * r + (CSM_T)1;
}

/* exp(x), vectorisable, <= 1.01 ulp float32 (tests/test_vmath.py sweeps it;
 * float32 under AVX2 and AVX-512 takes the table's form, CSM_EXP_TAB, with
 * the same scales). Cody-Waite reduction x = n ln2 + r with |r| <= ln2/2, q = exp(r) - 1 by a
 * polynomial, and (1 + q) 2^n with one rounding, its scale rebuilt from the
 * bits of the rounding shifter (their low mantissa bits hold n). 2^n alone
 * is not a normal number where the result is subnormal or near the top, so
 * the scale goes in two steps, without compares or selects (the old form
 * took a compare and two selects per side: 26 instructions per 16 floats in
 * softmax's AVX-512 exp-and-sum loop now, 34 before):
 * - softmax domain (`upper` = 0: x <= 0 or NaN, the argument is x - max):
 *   (q s + s) 2^-64 with s = 2^(n+64). n + 64 lies in [-86, 64] (float32;
 *   [-1012, 64] float64), so q s is exact and q s + s rounds once (an FMA or
 *   a multiply and an add: the same bits), normal; the product by 2^-64 is
 *   exact where the result is normal and rounds once where it is subnormal.
 * - any x (`upper` = 1): (q s1 + s1) s2 with s1 = 2^h, s2 = 2^(n-h), h =
 *   floor(n/2): both normal over the clamped range; the last product rounds
 *   once (to +inf past the top).
 * NaN propagates (the clamps are comparisons that a NaN fails), -inf gives
 * +0, +inf gives +inf. `upper` is a constant at each call site.
 * The low clamps are where the scales' bits are all zero (n = -191 for
 * float32's s, n = -254 for s1 and s2; -1087 and -2046 for float64), so a
 * clamped argument (a masked element's -inf, say) gets +0 from zeros. At
 * the old clamp, where exp rounds to +0 first (-104 and -746), the last
 * product underflowed, and an underflow takes a microcode assist on Intel
 * cores: softmax of float32 rows a fifth -inf took 2.6-2.9 ms against 0.29-
 * 0.45 without (1e6 elements, Intel Xeon, AVX-512, one thread), float64
 * 7.9 against 0.59. Arguments between the clamps give +0 as before. */
static CSM_INLINE CSM_TARGET CSM_T CSM_FN(csm_exp_core)(CSM_T x, const int upper)
{
    const CSM_T lo = upper ? CSM_EXP_LO_UP : CSM_EXP_LO;
    x = x < lo ? lo : x;
    if (upper)
        x = x > CSM_EXP_HI ? CSM_EXP_HI : x;
#if CSM_EXP_TAB
    {
        /* The table's form (above); the scales as below, with s carrying
         * 2^(j/N): s = 2^(j/N) 2^(n+64), or s1 = 2^(j/N) 2^h and s2 = 2^g,
         * g = n - h. q s + s rounds once, as there. */
        const CSM_T t = x * CSM_EXP_TAB_LOG2E + CSM_SHIFTER;
        const CSM_T n8 = t - CSM_SHIFTER;
        const CSM_T r = (x - n8 * CSM_EXP_TAB_LN2_HI) - n8 * CSM_EXP_TAB_LN2_LO;
        const CSM_T q = (CSM_EXP_TAB_C3 * r + CSM_EXP_TAB_C2) * (r * r) + r;
        uint32_t b;
        memcpy(&b, &t, sizeof b);
        uint32_t sb = CSM_FN(csm_exp_tab)[b & (CSM_EXP_TAB_N - 1)] + (b << CSM_EXP_TAB_SHIFT);
        CSM_T sc;
        if (!upper) {
            memcpy(&sc, &sb, sizeof sc);
            return (q * sc + sc) * 5.42101086242752217004e-20f; /* 2^-64 */
        }
        const int32_t ni = (int32_t)(b - CSM_SHIFTER_BITS) >> CSM_EXP_TAB_LOG2N;
        const int32_t g = ni - (ni >> 1);
        sb -= (uint32_t)(g + 64) << CSM_MANT_BITS;
        const uint32_t b2 = (uint32_t)(g + CSM_BIAS) << CSM_MANT_BITS;
        CSM_T s2;
        memcpy(&sc, &sb, sizeof sc);
        memcpy(&s2, &b2, sizeof s2);
        return (q * sc + sc) * s2;
    }
#else
    const CSM_T t = x * CSM_LOG2E + CSM_SHIFTER;
    const CSM_T n = t - CSM_SHIFTER;
    const CSM_T r = (x - n * CSM_LN2_HI) - n * CSM_LN2_LO;
#if CSM_ISA_ID == 2
    /* exp(r) s is exact, as q s + s rounds once, below. */
    const CSM_T e = CSM_FN(csm_exp_poly)(r);
  #define CSM_EXP_SCALED_(s) (e * (s))
#else
    const CSM_T q = CSM_FN(csm_expm1_poly)(r);
  #define CSM_EXP_SCALED_(s) (q * (s) + (s))
#endif
    CSM_UINT b;
    memcpy(&b, &t, sizeof b);
    if (!upper) {
        b = (b - (CSM_UINT)CSM_SHIFTER_BITS + (CSM_UINT)(CSM_BIAS + 64)) << CSM_MANT_BITS;
        CSM_T sc;
        memcpy(&sc, &b, sizeof sc);
        return CSM_EXP_SCALED_(sc) * (CSM_T)5.42101086242752217004e-20; /* 2^-64 */
    }
    /* n as a signed integer; h = floor(n / 2) by an arithmetic shift. */
    const CSM_SINT ni = (CSM_SINT)(b - (CSM_UINT)CSM_SHIFTER_BITS);
    const CSM_SINT h = ni >> 1;
    CSM_UINT b1 = (CSM_UINT)(h + CSM_BIAS) << CSM_MANT_BITS;
    CSM_UINT b2 = (CSM_UINT)(ni - h + CSM_BIAS) << CSM_MANT_BITS;
    CSM_T s1, s2;
    memcpy(&s1, &b1, sizeof s1);
    memcpy(&s2, &b2, sizeof s2);
    return CSM_EXP_SCALED_(s1) * s2;
#undef CSM_EXP_SCALED_
#endif
}

static CSM_INLINE CSM_TARGET CSM_T CSM_FN(csm_exp)(CSM_T x)
{
    return CSM_FN(csm_exp_core)(x, 1);
}

/* exp on the softmax domain, x <= 0 or NaN. */
static CSM_INLINE CSM_TARGET CSM_T CSM_FN(csm_exp_neg)(CSM_T x)
{
    return CSM_FN(csm_exp_core)(x, 0);
}

#if CSM_X86_DISPATCH && CSM_ISA_ID >= 1
/* csm_exp_core on one native register (AVX2, AVX-512), for the loops that
 * are written with registers. Its results are the C form's to the bit, so a
 * row's bits do not depend on which path computes them:
 * - the clamps are vmax(LO, x) and vmin(HI, x), which return x for a NaN as
 *   the compares do (GCC makes the C form's clamps a compare and a mask, and
 *   under AVX2 the upper one three compares, three logic operations and a
 *   blend);
 * - the reduction and P are the same multiply-adds, fused as GCC fuses them;
 * - AVX-512 scales by vscalef(exp(r), n), one instruction for the C form's
 *   four (the exponent from t's bits, exp(r) s, the product by 2^-64 or by
 *   2^(n-h)): exp(r) s is exact (s is a normal power of two), and the scale
 *   by 2^n is exact or rounds once, as the C form's last product;
 * - AVX2 builds the scales from t's bits as the C form does;
 * - float32 under both takes the table's form (CSM_EXP_TAB), its scales
 *   built as the C form builds them, or by vscalef where AVX-512 has the
 *   whole exp's range.
 * tests/test_vmath.py compares the forms on every 211th float32 of the
 * softmax domain and over the whole range of exp. AVX2 has no 64-bit
 * arithmetic shift, so its float64 register form has the softmax domain
 * only (CSM_EXP_V_UP). */
  #if CSM_ISA_ID == 2 && CSM_F32
    #define CSM_XV __m512
    #define CSM_XVI __m512i
    #define CSM_XV_(op) _mm512_##op##_ps
    #define CSM_XVI_(op) _mm512_##op##_epi32
    #define CSM_XVI_SET1(v) _mm512_set1_epi32((int)(v))
  #elif CSM_ISA_ID == 2
    #define CSM_XV __m512d
    #define CSM_XVI __m512i
    #define CSM_XV_(op) _mm512_##op##_pd
    #define CSM_XVI_(op) _mm512_##op##_epi64
    #define CSM_XVI_SET1(v) _mm512_set1_epi64((long long)(v))
  #elif CSM_F32
    #define CSM_XV __m256
    #define CSM_XVI __m256i
    #define CSM_XV_(op) _mm256_##op##_ps
    #define CSM_XVI_(op) _mm256_##op##_epi32
    #define CSM_XVI_SET1(v) _mm256_set1_epi32((int)(v))
  #else
    #define CSM_XV __m256d
    #define CSM_XVI __m256i
    #define CSM_XV_(op) _mm256_##op##_pd
    #define CSM_XVI_(op) _mm256_##op##_epi64
    #define CSM_XVI_SET1(v) _mm256_set1_epi64x((long long)(v))
  #endif
  #if CSM_ISA_ID == 2
    #define CSM_XVD __m512d
    #define CSM_XVD_(op) _mm512_##op##_pd
    #define CSM_XCVT_LO(e) _mm512_cvtps_pd(_mm512_castps512_ps256(e))
    #define CSM_XCVT_HI(e) _mm512_cvtps_pd(_mm512_extractf32x8_ps((e), 1))
    #define CSM_XCVT_LOAD(p) _mm512_cvtps_pd(_mm256_loadu_ps(p)) /* CSM_XVDW floats at p */
  #else
    #define CSM_XVD __m256d
    #define CSM_XVD_(op) _mm256_##op##_pd
    #define CSM_XCVT_LO(e) _mm256_cvtps_pd(_mm256_castps256_ps128(e))
    #define CSM_XCVT_HI(e) _mm256_cvtps_pd(_mm256_extractf128_ps((e), 1))
    #define CSM_XCVT_LOAD(p) _mm256_cvtps_pd(_mm_loadu_ps(p))
  #endif
  #define CSM_XVW ((ptrdiff_t)(sizeof(CSM_XV) / sizeof(CSM_T))) /* elements per register */
  #define CSM_XVDW ((ptrdiff_t)(sizeof(CSM_XVD) / sizeof(double)))
  /* A row's last elements, fewer than a register, in a register: CSM_XM_FIRST(n)
   * selects lanes 0 .. n-1 (0 < n <= CSM_XVW), CSM_XV_LOADM reads them (the
   * other lanes +0; masked lanes do not fault past the row's end),
   * CSM_XV_STOREN(p, n, v) writes them, CSM_XV_ZEROM keeps them and makes
   * the others +0. A tail done element by element left its partial sums in memory,
   * scalar stores that the vector reload of the partials could not forward:
   * a stall per row (softmax 5242 x 100 float32, one thread: 1.22 ns per
   * element against 0.76 at K = 96, AVX-512). */
  /* A 256-bit register under both ISAs (a tile: 8 float32 or 4 float64),
   * for the lane layout's transposes (csm_lanes_move) and AVX2's tails. */
  #if CSM_F32
    #define CSM_TV __m256
    #define CSM_TV_(op) _mm256_##op##_ps
    #define CSM_TM_FIRST(n) _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n)), \
                                               _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
  #else
    #define CSM_TV __m256d
    #define CSM_TV_(op) _mm256_##op##_pd
    #define CSM_TM_FIRST(n) _mm256_cmpgt_epi64(_mm256_set1_epi64x((long long)(n)), \
                                               _mm256_setr_epi64x(0, 1, 2, 3))
  #endif
  #define CSM_TW ((ptrdiff_t)(sizeof(CSM_TV) / sizeof(CSM_T)))
/* The first n lanes of v (0 < n <= CSM_TW) to p by plain stores of 4, 2
 * and 1 lanes, not vmaskmovps/pd: AMD's cores before Zen 4 run the AVX2
 * masked store as microcode. AMD EPYC (Zen 3), 1024 rows of 10 floats, a
 * vector and the 2-float rest each: a masked store of the rest 5.0-6.0 us,
 * a movq 1.6-1.8 us, masked stores of both 11 us (masked loads cost what
 * plain ones do). n is a row's constant, so the branches predict. */
static CSM_INLINE CSM_TARGET void CSM_FN(csm_tv_store_first)(CSM_T *p, ptrdiff_t n, CSM_TV v)
{
    if (n >= CSM_TW) {
        CSM_TV_(storeu)(p, v);
        return;
    }
    #if CSM_F32
    __m128 h = _mm256_castps256_ps128(v);
    if (n & 4) {
        _mm_storeu_ps(p, h);
        h = _mm256_extractf128_ps(v, 1);
        p += 4;
    }
    if (n & 2) {
        _mm_storel_pi((__m64 *)p, h);
        h = _mm_movehl_ps(h, h);
        p += 2;
    }
    if (n & 1)
        _mm_store_ss(p, h);
    #else
    __m128d h = _mm256_castpd256_pd128(v);
    if (n & 2) {
        _mm_storeu_pd(p, h);
        h = _mm256_extractf128_pd(v, 1);
        p += 2;
    }
    if (n & 1)
        _mm_store_sd(p, h);
    #endif
}
  #if CSM_ISA_ID == 2
    #define CSM_XM __mmask16
    #define CSM_XM_FIRST(n) ((__mmask16)((1u << (n)) - 1u))
    #define CSM_XV_LOADM(p, k) CSM_XV_(maskz_loadu)((k), (p))
    #define CSM_XV_STOREN(p, n, v) CSM_XV_(mask_storeu)((p), CSM_XM_FIRST(n), (v))
    #define CSM_XV_ZEROM(k, v) CSM_XV_(maskz_mov)((k), (v))
  #else
    #define CSM_XM __m256i
    #define CSM_XM_FIRST(n) CSM_TM_FIRST(n)
    #define CSM_XV_LOADM(p, k) CSM_XV_(maskload)((p), (k))
    #define CSM_XV_STOREN(p, n, v) CSM_FN(csm_tv_store_first)((p), (n), (v))
    #define CSM_XV_ZEROM(k, v) CSM_XV_(and)((v), CSM_XV_(castsi256)(k))
  #endif
/* The register form's reduction and polynomial, shared by csm_exp_v and
 * csm_exp_v_normal: r, with t (whose bits hold n, or N n + j under the
 * table) and n (N n + j as a float under the table) for the scales. */
static CSM_INLINE CSM_TARGET CSM_XV CSM_FN(csm_exp_v_reduce)(CSM_XV x, CSM_XV *t, CSM_XV *n)
{
  #if CSM_EXP_TAB
    const CSM_T log2e = CSM_EXP_TAB_LOG2E, ln2_hi = CSM_EXP_TAB_LN2_HI, ln2_lo = CSM_EXP_TAB_LN2_LO;
  #else
    const CSM_T log2e = CSM_LOG2E, ln2_hi = CSM_LN2_HI, ln2_lo = CSM_LN2_LO;
  #endif
    *t = CSM_XV_(fmadd)(x, CSM_XV_(set1)(log2e), CSM_XV_(set1)(CSM_SHIFTER));
    *n = CSM_XV_(sub)(*t, CSM_XV_(set1)(CSM_SHIFTER));
    const CSM_XV r = CSM_XV_(fnmadd)(*n, CSM_XV_(set1)(ln2_hi), x);
    return CSM_XV_(fnmadd)(*n, CSM_XV_(set1)(ln2_lo), r);
}

  #if !CSM_EXP_TAB
/* P(r) of CSM_EXPM1_P, as csm_expm1_p evaluates it. */
static CSM_INLINE CSM_TARGET CSM_XV CSM_FN(csm_exp_v_p)(CSM_XV r)
{
#if CSM_EXPM1_SPLIT
    const CSM_XV r2 = CSM_XV_(mul)(r, r);
#define CSM_HORNER0_(c) CSM_XV e = CSM_XV_(set1)(c);
#define CSM_HORNER_(c) e = CSM_XV_(fmadd)(e, r2, CSM_XV_(set1)(c));
    CSM_EXPM1_Q_EVEN(CSM_HORNER0_, CSM_HORNER_)
#undef CSM_HORNER0_
#undef CSM_HORNER_
#define CSM_HORNER0_(c) CSM_XV o = CSM_XV_(set1)(c);
#define CSM_HORNER_(c) o = CSM_XV_(fmadd)(o, r2, CSM_XV_(set1)(c));
    CSM_EXPM1_Q_ODD(CSM_HORNER0_, CSM_HORNER_)
#undef CSM_HORNER0_
#undef CSM_HORNER_
    const CSM_XV p = CSM_XV_(fmadd)(CSM_XV_(fmadd)(o, r, e), r, CSM_XV_(set1)(CSM_EXPM1_C1));
    return CSM_XV_(fmadd)(p, r, CSM_XV_(set1)(CSM_EXPM1_C0));
#else
#define CSM_HORNER0_(c) CSM_XV p = CSM_XV_(set1)(c);
#define CSM_HORNER_(c) p = CSM_XV_(fmadd)(p, r, CSM_XV_(set1)(c));
    CSM_EXPM1_P(CSM_HORNER0_, CSM_HORNER_)
#undef CSM_HORNER0_
#undef CSM_HORNER_
    return p;
#endif
}
  #endif

/* q = exp(r) - 1: the table's r + c2 r^2 + c3 r^3, or r + r^2 P(r). */
static CSM_INLINE CSM_TARGET CSM_XV CSM_FN(csm_exp_v_q)(CSM_XV r)
{
  #if CSM_EXP_TAB
    return CSM_XV_(fmadd)(
        CSM_XV_(fmadd)(CSM_XV_(set1)(CSM_EXP_TAB_C3), r, CSM_XV_(set1)(CSM_EXP_TAB_C2)),
        CSM_XV_(mul)(r, r), r);
  #else
    return CSM_XV_(fmadd)(CSM_FN(csm_exp_v_p)(r), CSM_XV_(mul)(r, r), r);
  #endif
}

  #define CSM_EXP_V 1
  #define CSM_EXP_V_UP (CSM_F32 || CSM_ISA_ID == 2)
/* AVX2: a register of the softmax domain whose results are all normal
 * (every x >= CSM_EXP_NORMAL_LO, or NaN) takes csm_exp_v_normal, without
 * the clamp and the 2^-64 step: its scale s = 2^n (2^(j/N) 2^n from the
 * table) is normal, q s + s rounds once at the result's own exponent, and
 * the result is normal, so the bits are those of (q 2^64 s + 2^64 s) 2^-64,
 * the form below, to the last. A compare and a mask test per register
 * replace a maximum and a multiply, and the multiplies bound the exp:
 * AMD Zen 5, one thread, out=, best of 5-6 alternating processes, time
 * against the form below: float32 softmax 0.93 (4096 x 128 and 64 x 8192),
 * log_softmax 0.97-0.98, logsumexp 0.96-0.98, log_softmax_backward
 * 0.87-0.98; float64 (4096 x 128) softmax 0.88-0.91, log_softmax 0.97-0.99,
 * logsumexp 0.97, log_softmax_backward 0.88-0.94; softmax_backward, which
 * has no exp, 0.97-1.02. Under AVX-512 (float32; float64 scales by
 * vscalef) the same test, register by register, measured 0.94-1.12, so
 * AVX-512 takes the form only where a whole group is known normal.
 * The bound: exp(-87) = 1.6e-38 and exp(-708) = 3.3e-308 are normal, and so
 * are their scales 2^n, n >= -126 (-1021). The register and C forms agree
 * on all 2^32 float32 of the softmax domain and on 1.9e8 float64 around
 * the bound, shuffled and sorted. */
/* AVX-512 takes the same form where the caller knows a whole group of rows
 * normal (csm_exp_v_dom; it has no register test, CSM_EXP_V_TEST): the
 * clamp's max and the 2^-64 step go (float64: the clamp's max and compare,
 * vscalef unmasked), for a min per register in the max's pass. Intel Xeon,
 * AVX-512 kernels, one thread, out=, best of 40-400, three alternations of
 * the builds, us: float32 softmax 4096 x 64 76-81 -> 71-72, 64 x 8192
 * 205-208 -> 190-194, 100000 x 64 2038-2052 -> 1947-1980, 4096 x 128
 * 137-141 -> 136-143 (there bound by L3: 2 MiB in and out pass L2, and a
 * copy of the array takes 130); float64 softmax 4096 x 128 328-331 ->
 * 316-324, logsumexp 4096 x 64 142-146 -> 132, 1024 x 1000 703-719 ->
 * 632-638. The same bits (7056 cases against the clamped form's build:
 * rows at and below the bound, -inf, NaN, where=, the loss). */
  #define CSM_EXP_V_NORMAL (CSM_ISA_ID == 1 || CSM_ISA_ID == 2)
  #define CSM_EXP_V_TEST (CSM_ISA_ID == 1)
  #if CSM_EXP_V_NORMAL
    #if CSM_F32
      #define CSM_EXP_NORMAL_LO (-87.0f)
      #if CSM_ISA_ID == 2
        #define CSM_XV_ANY_CMP_(x, y, p) (_mm512_cmp_ps_mask((x), (y), (p)) != 0)
      #else
        #define CSM_XV_ANY_CMP_(x, y, p) (_mm256_movemask_ps(_mm256_cmp_ps((x), (y), (p))) != 0)
      #endif
    #else
      #define CSM_EXP_NORMAL_LO (-708.0)
      #if CSM_ISA_ID == 2
        #define CSM_XV_ANY_CMP_(x, y, p) (_mm512_cmp_pd_mask((x), (y), (p)) != 0)
      #else
        #define CSM_XV_ANY_CMP_(x, y, p) (_mm256_movemask_pd(_mm256_cmp_pd((x), (y), (p))) != 0)
      #endif
    #endif
    /* Whether a lane of x is below c; whether one is a NaN (csm_any_nan). */
    #define CSM_XV_ANY_BELOW_(x, c) CSM_XV_ANY_CMP_((x), CSM_XV_(set1)(c), _CMP_LT_OQ)
    #define CSM_XV_ANY_NAN_(x) CSM_XV_ANY_CMP_((x), (x), _CMP_UNORD_Q)
    #if CSM_EXP_TAB
/* The table of csm_exp_tab without its 64 << 23. */
static const uint32_t CSM_FN(csm_exp_tab_normal)[CSM_EXP_TAB_N] = {CSM_EXP_TAB_ENTRIES(CSM_EXP_TAB_NORMAL_E)};
    #endif
static CSM_INLINE CSM_TARGET CSM_XV CSM_FN(csm_exp_v_normal)(CSM_XV x)
{
    CSM_XV t, n;
    #if CSM_ISA_ID == 2 && !CSM_EXP_TAB
    /* csm_exp_v_clamped's vscalef form: x >= CSM_EXP_NORMAL_LO > CSM_EXP_LO
     * (or NaN) is its own clamp, and every lane is live. */
    const CSM_XV r = CSM_FN(csm_exp_v_reduce)(x, &t, &n);
    const CSM_XV p = CSM_XV_(fmadd)(CSM_FN(csm_exp_v_p)(r), r, CSM_XV_(set1)(1));
    return CSM_XV_(scalef)(CSM_XV_(fmadd)(p, r, CSM_XV_(set1)(1)), n);
    #else
    const CSM_XV q = CSM_FN(csm_exp_v_q)(CSM_FN(csm_exp_v_reduce)(x, &t, &n));
    CSM_XVI b;
    memcpy(&b, &t, sizeof b);
      #if CSM_EXP_TAB && CSM_ISA_ID == 2
    const CSM_XVI tab = _mm512_permutexvar_epi32(b, _mm512_loadu_si512(CSM_FN(csm_exp_tab_normal)));
    const CSM_XVI sb = CSM_XVI_(add)(tab, CSM_XVI_(slli)(b, CSM_EXP_TAB_SHIFT));
      #elif CSM_EXP_TAB
    const CSM_XVI tab = _mm256_permutevar8x32_epi32(
        _mm256_loadu_si256((const __m256i *)CSM_FN(csm_exp_tab_normal)), b);
    const CSM_XVI sb = CSM_XVI_(add)(tab, CSM_XVI_(slli)(b, CSM_EXP_TAB_SHIFT));
      #else
    const CSM_UINT to_biased = (CSM_UINT)CSM_BIAS - (CSM_UINT)CSM_SHIFTER_BITS;
    const CSM_XVI sb = CSM_XVI_(slli)(CSM_XVI_(add)(b, CSM_XVI_SET1(to_biased)), CSM_MANT_BITS);
      #endif
    CSM_XV sc;
    memcpy(&sc, &sb, sizeof sc);
    return CSM_XV_(fmadd)(q, sc, sc);
    #endif
}
/* AVX2 float64: the exp-sum loops (csm_rows_exp_sum_blocks) and log_softmax
 * backward's rows (csm_log_bwd_row) take the exps of the normal form four
 * registers at a time, csm_exp_v_normal_n. A float64 exp is a chain of
 * about 17 dependent operations there (see CSM_EXPM1_SPLIT); one whole exp
 * after another filled the scheduler with the first chains' waiting steps,
 * where four chains side by side keep both multiply-add pipes busy. AMD
 * Zen 4, one thread, out=, in cache, best of 450 calls over three
 * alternations of the builds, time with / without at 1024 x 128, 256 x 64,
 * 32 x 1000 and 4 x 8192: softmax 0.85-0.97, log_softmax 0.88-0.91,
 * logsumexp 0.86-0.88, log_softmax_backward 0.88-0.91 (one arrangement of
 * the same operations, whose loop GCC spilled, gained nothing there); rows
 * of 16, which take the lane kernels, 0.97-0.99. From DRAM,
 * log_softmax_backward 16384 x 1000 stayed at 1.4x a 3-array add. The
 * same form under the AVX2 float32 kernels (the table's exp, 11
 * operations) measured 0.92-1.19, under the AVX-512 ones 0.95-1.07, so
 * those keep one exp after another. */
    #define CSM_EXP_V_LOCKSTEP (CSM_ISA_ID == 1 && !CSM_F32)
    #if CSM_EXP_V_LOCKSTEP
/* csm_exp_v_normal of the four registers v[], each step taken for all four
 * before the next: its operations on each register, so its bits
 * (tests/test_vmath.py checks both against the C form). Its own function,
 * not csm_exp_v_normal's body written as one register of it: that changed
 * GCC's inlining in other kernels (csm_long_rows lost a fifth of its code
 * under AVX-512). */
static CSM_INLINE CSM_TARGET void CSM_FN(csm_exp_v_normal_n)(CSM_XV *v)
{
    enum { N = 4 };
    CSM_XV t[N], nn[N], r[N], r2[N], p[N], o[N];
    /* csm_exp_v_reduce */
    for (int k = 0; k < N; ++k)
        t[k] = CSM_XV_(fmadd)(v[k], CSM_XV_(set1)(CSM_LOG2E), CSM_XV_(set1)(CSM_SHIFTER));
    for (int k = 0; k < N; ++k)
        nn[k] = CSM_XV_(sub)(t[k], CSM_XV_(set1)(CSM_SHIFTER));
    for (int k = 0; k < N; ++k)
        r[k] = CSM_XV_(fnmadd)(nn[k], CSM_XV_(set1)(CSM_LN2_HI), v[k]);
    for (int k = 0; k < N; ++k)
        r[k] = CSM_XV_(fnmadd)(nn[k], CSM_XV_(set1)(CSM_LN2_LO), r[k]);
    /* csm_exp_v_p, split */
    for (int k = 0; k < N; ++k)
        r2[k] = CSM_XV_(mul)(r[k], r[k]);
#define CSM_HORNER0_(c) for (int k = 0; k < N; ++k) p[k] = CSM_XV_(set1)(c);
#define CSM_HORNER_(c) for (int k = 0; k < N; ++k) p[k] = CSM_XV_(fmadd)(p[k], r2[k], CSM_XV_(set1)(c));
    CSM_EXPM1_Q_EVEN(CSM_HORNER0_, CSM_HORNER_)
#undef CSM_HORNER0_
#undef CSM_HORNER_
#define CSM_HORNER0_(c) for (int k = 0; k < N; ++k) o[k] = CSM_XV_(set1)(c);
#define CSM_HORNER_(c) for (int k = 0; k < N; ++k) o[k] = CSM_XV_(fmadd)(o[k], r2[k], CSM_XV_(set1)(c));
    CSM_EXPM1_Q_ODD(CSM_HORNER0_, CSM_HORNER_)
#undef CSM_HORNER0_
#undef CSM_HORNER_
    for (int k = 0; k < N; ++k)
        p[k] = CSM_XV_(fmadd)(CSM_XV_(fmadd)(o[k], r[k], p[k]), r[k], CSM_XV_(set1)(CSM_EXPM1_C1));
    for (int k = 0; k < N; ++k)
        p[k] = CSM_XV_(fmadd)(p[k], r[k], CSM_XV_(set1)(CSM_EXPM1_C0));
    /* csm_exp_v_q, then the scale 2^n */
    for (int k = 0; k < N; ++k)
        p[k] = CSM_XV_(fmadd)(p[k], r2[k], r[k]);
    const CSM_UINT to_biased = (CSM_UINT)CSM_BIAS - (CSM_UINT)CSM_SHIFTER_BITS;
    for (int k = 0; k < N; ++k) {
        CSM_XVI b;
        memcpy(&b, &t[k], sizeof b);
        const CSM_XVI sb = CSM_XVI_(slli)(CSM_XVI_(add)(b, CSM_XVI_SET1(to_biased)), CSM_MANT_BITS);
        CSM_XV sc;
        memcpy(&sc, &sb, sizeof sc);
        v[k] = CSM_XV_(fmadd)(p[k], sc, sc);
    }
}
    #endif
  #endif
/* csm_exp_v without AVX2's test: the clamped form, every lane. */
static CSM_INLINE CSM_TARGET CSM_XV CSM_FN(csm_exp_v_clamped)(CSM_XV x, const int upper)
{
    const CSM_T lo = upper ? CSM_EXP_LO_UP : CSM_EXP_LO;
    x = CSM_XV_(max)(CSM_XV_(set1)(lo), x);
  #if CSM_ISA_ID == 2
    /* vscalef's underflow takes the assist too: clamped lanes get +0 by
     * the mask (NaN is not below lo, and keeps its lane). */
    #if CSM_F32
    const CSM_XM live = _mm512_cmp_ps_mask(x, CSM_XV_(set1)(lo), _CMP_NLE_UQ);
    #else
    const CSM_XM live = _mm512_cmp_pd_mask(x, CSM_XV_(set1)(lo), _CMP_NLE_UQ);
    #endif
    (void)live; /* unused by float32's softmax domain, whose scale is integer */
  #endif
    if (upper)
        x = CSM_XV_(min)(CSM_XV_(set1)(CSM_EXP_HI), x);
  #if CSM_EXP_TAB
    {
        CSM_XV t, n8;
        const CSM_XV q = CSM_FN(csm_exp_v_q)(CSM_FN(csm_exp_v_reduce)(x, &t, &n8));
        CSM_XVI b;
        memcpy(&b, &t, sizeof b);
    #if CSM_ISA_ID == 2
        if (upper) {
            /* vscalef(2^(j/N) (1 + q), n), n = floor(n8 / N): the C form's
             * bits, as in the degree-6 form (2^(j/N) (1 + q) rounds once,
             * as q s1 + s1 does, and the scale by 2^n is exact or rounds
             * once, as the C form's product by s2). Four operations where
             * the integer scales below take ten: log_softmax_backward
             * 4096 x 128, one thread, AMD Zen 5, took 7% longer with them.
             * On the softmax domain the integer scale is the faster (its
             * rounding and scalef cost more than two integer operations). */
            const CSM_XV T = _mm512_permutexvar_ps(b, _mm512_loadu_ps((const float *)CSM_FN(csm_exp_tab_plain)));
            const CSM_XV nf = _mm512_roundscale_ps(CSM_XV_(mul)(n8, CSM_XV_(set1)(1.0f / CSM_EXP_TAB_N)),
                                                   _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
            return _mm512_maskz_scalef_ps(live, CSM_XV_(fmadd)(q, T, T), nf);
        }
        /* The C form's table, one register (loaded once per loop). */
        const CSM_XVI tab = _mm512_permutexvar_epi32(b, _mm512_loadu_si512(CSM_FN(csm_exp_tab)));
    #else
        const CSM_XVI tab = _mm256_permutevar8x32_epi32(
            _mm256_loadu_si256((const __m256i *)CSM_FN(csm_exp_tab)), b);
    #endif
        CSM_XVI sb = CSM_XVI_(add)(tab, CSM_XVI_(slli)(b, CSM_EXP_TAB_SHIFT));
        CSM_XV sc;
        if (!upper) {
            memcpy(&sc, &sb, sizeof sc);
            return CSM_XV_(mul)(CSM_XV_(fmadd)(q, sc, sc), CSM_XV_(set1)(5.42101086242752217004e-20f));
        }
        const CSM_XVI ni = CSM_XVI_(srai)(CSM_XVI_(sub)(b, CSM_XVI_SET1(CSM_SHIFTER_BITS)), CSM_EXP_TAB_LOG2N);
        const CSM_XVI g = CSM_XVI_(sub)(ni, CSM_XVI_(srai)(ni, 1));
        sb = CSM_XVI_(sub)(sb, CSM_XVI_(slli)(CSM_XVI_(add)(g, CSM_XVI_SET1(64)), CSM_MANT_BITS));
        const CSM_XVI b2 = CSM_XVI_(slli)(CSM_XVI_(add)(g, CSM_XVI_SET1(CSM_BIAS)), CSM_MANT_BITS);
        CSM_XV s2;
        memcpy(&sc, &sb, sizeof sc);
        memcpy(&s2, &b2, sizeof s2);
        return CSM_XV_(mul)(CSM_XV_(fmadd)(q, sc, sc), s2);
    }
  #else
    CSM_XV t, n;
    const CSM_XV r = CSM_FN(csm_exp_v_reduce)(x, &t, &n);
#if CSM_ISA_ID == 2
    const CSM_XV p = CSM_XV_(fmadd)(CSM_FN(csm_exp_v_p)(r), r, CSM_XV_(set1)(1));
    return CSM_XV_(maskz_scalef)(live, CSM_XV_(fmadd)(p, r, CSM_XV_(set1)(1)), n);
#else
    const CSM_XV q = CSM_FN(csm_exp_v_q)(r);
    CSM_XVI b;
    memcpy(&b, &t, sizeof b);
    if (!upper) {
        const CSM_UINT to_biased = (CSM_UINT)(CSM_BIAS + 64) - (CSM_UINT)CSM_SHIFTER_BITS;
        b = CSM_XVI_(slli)(CSM_XVI_(add)(b, CSM_XVI_SET1(to_biased)), CSM_MANT_BITS);
        CSM_XV sc;
        memcpy(&sc, &b, sizeof sc);
        return CSM_XV_(mul)(CSM_XV_(fmadd)(q, sc, sc), CSM_XV_(set1)((CSM_T)5.42101086242752217004e-20));
    }
  #if CSM_EXP_V_UP
    const CSM_XVI ni = CSM_XVI_(sub)(b, CSM_XVI_SET1(CSM_SHIFTER_BITS));
    const CSM_XVI h = CSM_XVI_(srai)(ni, 1);
    CSM_XVI b1 = CSM_XVI_(slli)(CSM_XVI_(add)(h, CSM_XVI_SET1(CSM_BIAS)), CSM_MANT_BITS);
    CSM_XVI b2 = CSM_XVI_(slli)(CSM_XVI_(add)(CSM_XVI_(sub)(ni, h), CSM_XVI_SET1(CSM_BIAS)), CSM_MANT_BITS);
    CSM_XV s1, s2;
    memcpy(&s1, &b1, sizeof s1);
    memcpy(&s2, &b2, sizeof s2);
    return CSM_XV_(mul)(CSM_XV_(fmadd)(q, s1, s1), s2);
  #else
    return q; /* not reached: callers test CSM_EXP_V_UP */
  #endif
#endif
  #endif /* CSM_EXP_TAB */
}

static CSM_INLINE CSM_TARGET CSM_XV CSM_FN(csm_exp_v)(CSM_XV x, const int upper)
{
  #if CSM_EXP_V_TEST
    if (!upper && __builtin_expect(!CSM_XV_ANY_BELOW_(x, CSM_EXP_NORMAL_LO), 1))
        return CSM_FN(csm_exp_v_normal)(x);
  #endif
    return CSM_FN(csm_exp_v_clamped)(x, upper);
}

/* csm_exp_v on the softmax domain (upper 0), `normal` as
 * csm_group_rows_max_normal gives it: 1 (a constant) where no x of the call
 * is below CSM_EXP_NORMAL_LO, -1 where some is, 0 where the caller does
 * not know. Where it knows, without csm_exp_v's test, the same bits. A row
 * with some x below takes the clamped form in every register: tested
 * register by register, rows a fifth -inf at random (a mask's) took a
 * mispredicted branch in about one register of three, and softmax of
 * 1000 x 1000 float32 took 0.55 ms against 0.29 without -inf (Intel Xeon,
 * AVX2 kernels, one thread). */
static CSM_INLINE CSM_TARGET CSM_XV CSM_FN(csm_exp_v_dom)(CSM_XV x, const int normal)
{
  #if CSM_EXP_V_NORMAL
    if (normal > 0)
        return CSM_FN(csm_exp_v_normal)(x);
    if (normal < 0)
        return CSM_FN(csm_exp_v_clamped)(x, 0);
  #else
    (void)normal;
  #endif
    return CSM_FN(csm_exp_v)(x, 0);
}
#else
  #define CSM_EXP_V 0
  #define CSM_EXP_V_UP 0
#endif

/* dst[l] = exp(src[l] - sub[l]), or exp(src[l] - subc) where sub is NULL
 * (subc 0: exp(src[l]), x - 0 being x), for l < n; `upper` (a constant) as
 * in csm_exp_core. The loops across a group's rows (the lane layouts, the
 * masked and the loss kernels) take their exp here rather than inline:
 * under AVX2 and AVX-512 float32 the C form's table lookup, vectorised by
 * GCC, is a scalar load and insert per element (no gathers under the
 * generic tuning), so the register form does those lanes. The same bits
 * either way; dst may be src. normal: as csm_exp_v_dom takes it, where
 * upper is 0 (csm_exp_lanes: 0, not known). */
static CSM_INLINE CSM_TARGET void CSM_FN(csm_exp_lanes_n)(CSM_T *dst, const CSM_T *src, const CSM_T *sub,
                                                          CSM_T subc, ptrdiff_t n, const int upper,
                                                          int normal)
{
#if CSM_EXP_TAB
    if (n < CSM_XVW) {
        /* Fewer than a register (the last rows of a group, one lane): the
         * C form, element by element, costs less than masked loads and
         * stores (softmax 1024 x 24, whose blocks end in single rows: 41
         * against 22 us). */
        for (ptrdiff_t l = 0; l < n; ++l)
            dst[l] = CSM_FN(csm_exp_core)(src[l] - (sub ? sub[l] : subc), upper);
        return;
    }
    const CSM_XV c = CSM_XV_(set1)(subc);
    ptrdiff_t l = 0;
    for (; l + CSM_XVW <= n; l += CSM_XVW) {
        const CSM_XV v = CSM_XV_(sub)(CSM_XV_(loadu)(src + l), sub ? CSM_XV_(loadu)(sub + l) : c);
        CSM_XV_(storeu)(dst + l, upper ? CSM_FN(csm_exp_v)(v, 1) : CSM_FN(csm_exp_v_dom)(v, normal));
    }
    if (l < n) {
        const CSM_XM k = CSM_XM_FIRST(n - l);
        const CSM_XV v = CSM_XV_(sub)(CSM_XV_LOADM(src + l, k), sub ? CSM_XV_LOADM(sub + l, k) : c);
        CSM_XV_STOREN(dst + l, n - l, upper ? CSM_FN(csm_exp_v)(v, 1) : CSM_FN(csm_exp_v_dom)(v, normal));
    }
#else
    (void)normal;
    if (sub) {
  #pragma omp simd
        for (ptrdiff_t l = 0; l < n; ++l)
            dst[l] = CSM_FN(csm_exp_core)(src[l] - sub[l], upper);
    } else if (subc != 0) {
  #pragma omp simd
        for (ptrdiff_t l = 0; l < n; ++l)
            dst[l] = CSM_FN(csm_exp_core)(src[l] - subc, upper);
    } else {
  #pragma omp simd
        for (ptrdiff_t l = 0; l < n; ++l)
            dst[l] = CSM_FN(csm_exp_core)(src[l], upper);
    }
#endif
}

static CSM_INLINE CSM_TARGET void CSM_FN(csm_exp_lanes)(CSM_T *dst, const CSM_T *src, const CSM_T *sub,
                                                        CSM_T subc, ptrdiff_t n, const int upper)
{
    CSM_FN(csm_exp_lanes_n)(dst, src, sub, subc, n, upper, 0);
}

#if !CSM_F32
/* log(x) for x >= 1 (a softmax denominator), NaN and +inf. fdlibm's
 * __ieee754_log written branch-free so that it vectorises: < 1 ulp. Only the
 * double version exists; float sums are widened, which rounds correctly.
 * Every product that meets a sum does so in a CSM_FMA, for the reason given
 * at CSM_FMA (_rows_isa.h): left to GCC, R = t2 + t1 (two products) and
 * s (hfsq + R) + e ln2_lo contracted one way in the vectorised loop over a
 * chunk's rows and another in a single row's call, so log_softmax and
 * logsumexp in float64 gave the masked kernels (an all-true mask) and the
 * unmasked ones 1 ulp apart in a few rows of 20000 under AVX2 and
 * AVX-512. */
static CSM_INLINE CSM_TARGET double CSM_FN(csm_log)(double x)
{
    uint64_t hx;
    memcpy(&hx, &x, sizeof hx);
    /* Exponent and a mantissa m in [1, 2); fold m into [sqrt(2)/2, sqrt(2)). */
    double e = (double)(int32_t)((hx >> 52) & 0x7ff) - 1023.0;
    uint64_t hm = (hx & 0x000fffffffffffffULL) | 0x3ff0000000000000ULL;
    double m;
    memcpy(&m, &hm, sizeof m);
    const int big = m > 1.41421356237309504880;
    m = big ? m * 0.5 : m;
    e = big ? e + 1.0 : e;
    const double f = m - 1.0;
    const double s = f / (2.0 + f);
    const double z = s * s, w = z * z;
    const double t1 = w * CSM_FMA(w, CSM_FMA(w, 1.531383769920937332e-01, 2.222219843214978396e-01),
                                  3.999999999940941908e-01);
    const double p2 = CSM_FMA(w, CSM_FMA(w, CSM_FMA(w, 1.479819860511658591e-01, 1.818357216161805012e-01),
                                         2.857142874366239149e-01),
                              6.666666666666735130e-01);
    const double R = CSM_FMA(z, p2, t1);
    /* hfsq = 0.5 f^2, the half square, meets its sums only inside FMAs. */
    const double hf = 0.5 * f;
    const double u = CSM_FMA(s, CSM_FMA(hf, f, R), e * CSM_LN2_LO); /* s (hfsq + R) + e ln2_lo */
    double r = CSM_FMA(e, CSM_LN2_HI, -(CSM_FMA(hf, f, -u) - f));
    /* NaN stays NaN, +inf stays +inf (the bit tricks above would not). */
    r = (x != x || x > 1.79769313486231570815e308) ? x : r;
    return r;
}
#endif

/* Largest element of a row. NaN is ignored here on purpose: it reaches the
 * sum through exp(NaN - max) and turns the whole row into NaN there.
 * CSM_MAX_W accumulators, four vectors of the ISA: one vector is bound by
 * the latency of max, four keep the pipeline full. They are combined
 * elementwise by halving, and only the last vector is reduced across its
 * lanes. The old form, four streams over the row's quarters, reduced each
 * stream's vector across lanes on its own, through memory: four horizontal
 * reductions per row (in-cache softmax, 4096 x 128 float32, one thread:
 * 0.49 -> 0.47 ns per element on AVX-512, 0.67 -> 0.64 on AVX2). The max is
 * exact, so the order changes no bit. */
#define CSM_MAX_W_ ((CSM_ISA_ID == 2 ? 256 : CSM_ISA_ID == 1 ? 128 : 64) / (int)sizeof(CSM_T))
#define CSM_MAX_W (CSM_MAX_W_ > 16 ? CSM_MAX_W_ : 16)
/* mk, where not NULL, a widened mask (CSM_MW_T): a masked element counts as
 * -inf, so the max is the largest unmasked element (-inf when there is
 * none; NaN is ignored, as without a mask: it reaches the sum and makes the
 * row NaN there). In the accumulators, not one reduction, which bound each
 * masked row by the latency of its compare and blend (4096 x 128 float32, a
 * random mask, AVX-512, one thread, us: softmax(where=) 228 -> 212,
 * log_softmax 290 -> 272, logsumexp 266 -> 246); the masked rows of K >= 16
 * now take it in registers (csm_rows_max_v, its mask as selects). */
#define CSM_MX_(j) (mk && !mk[j] ? -CSM_INF_T : x[j])
static CSM_INLINE CSM_TARGET CSM_T CSM_FN(csm_row_max_mk)(const CSM_T *x, const CSM_MW_T *mk,
                                                           ptrdiff_t K)
{
    CSM_T mv[CSM_MAX_W];
    ptrdiff_t i = 0;
    for (ptrdiff_t p = 0; p < CSM_MAX_W; ++p)
        mv[p] = -CSM_INF_T;
    for (; i + CSM_MAX_W <= K; i += CSM_MAX_W) {
#pragma omp simd
        for (ptrdiff_t p = 0; p < CSM_MAX_W; ++p)
            mv[p] = CSM_MX_(i + p) > mv[p] ? CSM_MX_(i + p) : mv[p];
    }
    if (K >= 16) {
        /* The tail in windows of 16, the last one ending at the row's end:
         * an element seen twice does not change a max. An element-by-element
         * tail left mv in memory, scalar stores that the halving's vector
         * loads could not forward (a stall per row). */
        for (; i < K; i += 16) {
            const ptrdiff_t w = i + 16 <= K ? i : K - 16;
#pragma omp simd
            for (ptrdiff_t p = 0; p < 16; ++p)
                mv[p] = CSM_MX_(w + p) > mv[p] ? CSM_MX_(w + p) : mv[p];
        }
    } else {
#pragma omp simd
        for (ptrdiff_t p = 0; p < K - i; ++p)
            mv[p] = CSM_MX_(i + p) > mv[p] ? CSM_MX_(i + p) : mv[p];
    }
    if (CSM_MAX_W >= 64) {
#pragma omp simd
        for (ptrdiff_t p = 0; p < 32; ++p)
            mv[p] = mv[p + 32] > mv[p] ? mv[p + 32] : mv[p];
    }
    if (CSM_MAX_W >= 32) {
#pragma omp simd
        for (ptrdiff_t p = 0; p < 16; ++p)
            mv[p] = mv[p + 16] > mv[p] ? mv[p + 16] : mv[p];
    }
    /* The same halving down to one; loops of constant length, which GCC
     * turns into a max of vector halves each (a loop over the halving
     * width went through memory, scalar below 16). */
#pragma omp simd
    for (ptrdiff_t p = 0; p < 8; ++p)
        mv[p] = mv[p + 8] > mv[p] ? mv[p + 8] : mv[p];
#pragma omp simd
    for (ptrdiff_t p = 0; p < 4; ++p)
        mv[p] = mv[p + 4] > mv[p] ? mv[p + 4] : mv[p];
    for (ptrdiff_t p = 0; p < 2; ++p)
        mv[p] = mv[p + 2] > mv[p] ? mv[p + 2] : mv[p];
    return mv[1] > mv[0] ? mv[1] : mv[0];
}
#undef CSM_MX_

static CSM_INLINE CSM_TARGET CSM_T CSM_FN(csm_row_max)(const CSM_T *x, ptrdiff_t K)
{
    return CSM_FN(csm_row_max_mk)(x, NULL, K);
}

#if CSM_EXP_V
/* v where the widened mask words at w are set, else fill: one blend (the
 * words are all ones or zero, so their top bit says). */
static CSM_INLINE CSM_TARGET CSM_XV CSM_FN(csm_xv_keep)(CSM_XV v, const CSM_MW_T *w, CSM_T fill)
{
  #if CSM_ISA_ID == 2 && CSM_F32
    return _mm512_mask_blend_ps(_mm512_movepi32_mask(_mm512_loadu_si512(w)), _mm512_set1_ps(fill), v);
  #elif CSM_ISA_ID == 2
    return _mm512_mask_blend_pd(_mm512_movepi64_mask(_mm512_loadu_si512(w)), _mm512_set1_pd(fill), v);
  #elif CSM_F32
    return _mm256_blendv_ps(_mm256_set1_ps(fill), v, _mm256_loadu_ps((const float *)w));
  #else
    return _mm256_blendv_pd(_mm256_set1_pd(fill), v, _mm256_loadu_pd((const double *)w));
  #endif
}

/* csm_row_max of R rows at once (R a constant, K >= 16), in registers: its
 * CSM_MAX_W accumulators are four registers (CSM_MAX_W = 4 CSM_XVW for
 * every register ISA), its windows of 16 the first 16 / CSM_XVW of them,
 * and its halving the same maxima of the same halves, so every max, a
 * signed zero's too, is the one csm_row_max finds (_mm*_max_* returns its
 * second operand unless the first is greater, as `a > b ? a : b` does). As
 * csm_row_max, a call per row of a group, the accumulators went through the
 * stack before the halving, and the halving waited on the stores: AMD Zen 3,
 * AVX2, float32 softmax 4096 x 64, one thread, the calls took 16% of the
 * time (perf, cpu-clock); this loop took it from 169 to 142 us (4096 x 128
 * 272 -> 224, best of four alternating processes; docs/design.md). */
_Static_assert(CSM_MAX_W == 4 * CSM_XVW, "csm_rows_max_v holds csm_row_max's accumulators in four registers");
static CSM_INLINE CSM_TARGET void CSM_FN(csm_rows_max_v)(const int R, const CSM_T *const *x,
                                                       const CSM_MW_T *const *mk, ptrdiff_t K,
                                                       CSM_T *m, int *normal, int *lo_ok)
{
    enum { WV_ = 16 / CSM_XVW }; /* the registers a window of 16 covers */
    CSM_XV a[CSM_ROWS_MAX][4], b[CSM_ROWS_MAX][2];
    CSM_EACH_ROW
    for (int rr = 0; rr < R; ++rr) {
        for (int v = 0; v < 4; ++v)
            a[rr][v] = CSM_XV_(set1)(-CSM_INF_T);
        b[rr][0] = b[rr][1] = CSM_XV_(set1)(CSM_INF_T);
    }
    /* normal (a constant: NULL or not; csm_group_rows_max_normal): the
     * minima of the elements that are not NaN, in two registers per row
     * (_mm*_min_* returns its second operand where the first is NaN, and the
     * accumulator, second, never is). mk (a constant: NULL or not): the
     * rows' widened masks, a masked element -inf to the max, as
     * csm_row_max_mk takes it; the minima take every element, masked or
     * not, so that `normal` holds for each exp the row's loop computes. */
#define CSM_MAX_MIN_(rr, v, o)                                                   \
    do {                                                                        \
        const CSM_XV l_ = CSM_XV_(loadu)(x[rr] + (o));                          \
        const CSM_XV k_ = mk ? CSM_FN(csm_xv_keep)(l_, mk[rr] + (o), -CSM_INF_T) : l_; \
        a[rr][v] = CSM_XV_(max)(k_, a[rr][v]);                                  \
        if (normal || lo_ok)                                                    \
            b[rr][(v) & 1] = CSM_XV_(min)(l_, b[rr][(v) & 1]);                  \
    } while (0)
    ptrdiff_t i = 0;
    for (; i + CSM_MAX_W <= K; i += CSM_MAX_W)
        CSM_EACH_ROW
        for (int rr = 0; rr < R; ++rr)
            for (int v = 0; v < 4; ++v)
                CSM_MAX_MIN_(rr, v, i + v * CSM_XVW);
    for (; i < K; i += 16) {
        const ptrdiff_t j = i + 16 <= K ? i : K - 16;
        CSM_EACH_ROW
        for (int rr = 0; rr < R; ++rr)
            for (int v = 0; v < WV_; ++v)
                CSM_MAX_MIN_(rr, v, j + v * CSM_XVW);
    }
#undef CSM_MAX_MIN_
    CSM_EACH_ROW
    for (int rr = 0; rr < R; ++rr) {
        const CSM_XV h = CSM_XV_(max)(CSM_XV_(max)(a[rr][3], a[rr][1]), CSM_XV_(max)(a[rr][2], a[rr][0]));
  #if CSM_ISA_ID == 2 && CSM_F32
        const __m256 h8 = _mm256_max_ps(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(h), 1)),
                                        _mm512_castps512_ps256(h));
        const __m128 h4 = _mm_max_ps(_mm256_extractf128_ps(h8, 1), _mm256_castps256_ps128(h8));
  #elif CSM_ISA_ID == 2
        const __m256d h4 = _mm256_max_pd(_mm512_extractf64x4_pd(h, 1), _mm512_castpd512_pd256(h));
  #elif CSM_F32
        const __m128 h4 = _mm_max_ps(_mm256_extractf128_ps(h, 1), _mm256_castps256_ps128(h));
  #else
        const __m256d h4 = h;
  #endif
  #if CSM_F32
        const __m128 h2 = _mm_max_ps(_mm_movehl_ps(h4, h4), h4);
        m[rr] = _mm_cvtss_f32(_mm_max_ss(_mm_shuffle_ps(h2, h2, 1), h2));
  #else
        const __m128d h2 = _mm_max_pd(_mm256_extractf128_pd(h4, 1), _mm256_castpd256_pd128(h4));
        m[rr] = _mm_cvtsd_f64(_mm_max_sd(_mm_unpackhi_pd(h2, h2), h2));
  #endif
    }
  #if CSM_EXP_V_NORMAL
    /* Lane by lane, min - max below the bound where some x - max is. */
    if (normal) {
        int below = 0;
        CSM_EACH_ROW
        for (int rr = 0; rr < R; ++rr)
            below |= CSM_XV_ANY_BELOW_(CSM_XV_(sub)(CSM_XV_(min)(b[rr][0], b[rr][1]), CSM_XV_(set1)(m[rr])),
                                       CSM_EXP_NORMAL_LO);
        *normal = !below;
    }
    /* lo_ok (a constant: NULL or not; csm_log_bwd_dom): whether no x itself
     * is below the bound. */
    if (lo_ok) {
        int below = 0;
        CSM_EACH_ROW
        for (int rr = 0; rr < R; ++rr)
            below |= CSM_XV_ANY_BELOW_(CSM_XV_(min)(b[rr][0], b[rr][1]), CSM_EXP_NORMAL_LO);
        *lo_ok = !below;
    }
  #else
    (void)b;
    (void)lo_ok;
  #endif
}
#endif

#undef CSM_MAX_W
#undef CSM_MAX_W_

/* The maxima of a group of R rows (R a constant; the pair's registers
 * interleaved, csm_rows_max_v), and whether csm_rows_exp_sum_from may take
 * every register of the group by csm_exp_v_normal (its `normal`): whether no
 * x - max of the group is below CSM_EXP_NORMAL_LO, which csm_exp_v otherwise
 * tests register by register. x - max rounds monotonically in x, so the
 * test of the smallest x (NaN aside: a NaN is never below) is the test of
 * every x, and the test of each lane of the minima's registers is the test
 * of their smallest. The minima cost a min per register in the max's pass
 * and save a compare, a mask move and a branch per register in the exp's:
 * Intel Xeon (AVX-512 machine, AVX2 kernels), float32, one thread, out=,
 * in cache, best of 7 per process, four alternations of the two builds,
 * us: softmax 4096 x 64 89-91 -> 83 (one run 91), 4096 x 128 156-162 ->
 * 147-151, 1024 x 1000 330-349 -> 323-342; log_softmax 4096 x 64 108-109
 * -> 101-103, 4096 x 128 187-189 -> 184-186; logsumexp 4096 x 64 86-89 ->
 * 79-81, 4096 x 128 137-142 -> 127-133, 1024 x 1000 317-354 -> 288-317.
 * 1 where none is below, -1 where some is (csm_exp_v_dom), 0 where it
 * did not test (short rows, the ISAs without the test). */
static CSM_INLINE CSM_TARGET int CSM_FN(csm_group_rows_max_normal)(const int R, const CSM_T *const *x,
                                                                 const CSM_MW_T *const *mk,
                                                                 ptrdiff_t K, CSM_T *m)
{
#if CSM_EXP_V_NORMAL
    if (K >= 16) {
        int normal;
        CSM_FN(csm_rows_max_v)(R, x, mk, K, m, &normal, NULL);
        if (mk) /* a row with no max (nothing unmasked is above -inf) */
            for (int rr = 0; rr < R; ++rr)
                normal &= m[rr] != -CSM_INF_T;
        return normal ? 1 : -1;
    }
#elif CSM_EXP_V
    if (R > 1 && K >= 16) {
        CSM_FN(csm_rows_max_v)(R, x, mk, K, m, NULL, NULL);
        return 0;
    }
#endif
    for (int rr = 0; rr < R; ++rr)
        m[rr] = CSM_FN(csm_row_max_mk)(x[rr], mk ? mk[rr] : NULL, K);
    return 0;
}

/* csm_group_rows_max_normal of the R rows (R a constant) from x, ldx apart,
 * unmasked. */
static CSM_INLINE CSM_TARGET int CSM_FN(csm_group_max_at)(const int R, const CSM_T *x, ptrdiff_t ldx,
                                                        ptrdiff_t K, CSM_T *m)
{
    const CSM_T *xr[CSM_ROWS_MAX];
    CSM_EACH_ROW
    for (int rr = 0; rr < R; ++rr)
        xr[rr] = x + rr * ldx;
    return CSM_FN(csm_group_rows_max_normal)(R, xr, NULL, K, m);
}

/* The fixed tree of csm_tree_sum over CSM_PARTS values of the element type,
 * at f[0], f[stride], ... (softmax's block sums, see CSM_SUM_BLOCK). At
 * stride 1 (the row kernels) the same tree as a vector's horizontal sum:
 * halves added by shuffles, in registers. */
static CSM_INLINE CSM_TARGET CSM_T CSM_FN(csm_tree_sum_t)(const CSM_T *f, ptrdiff_t stride)
{
#if CSM_HAVE_VTREE
    if (stride == 1) {
        CSM_T s;
        CSM_VTREE16(CSM_T, s, f);
        return s;
    }
#endif
#define CSM_F_(p) f[(p) * stride]
    return CSM_TREE16(CSM_F_);
#undef CSM_F_
}

#if CSM_EXP_V
/* csm_tree_sum over the CSM_PARTS double partials held in registers (partial
 * p at lane p % CSM_XVDW of av[p / CSM_XVDW]), by the same tree (p + p+8,
 * then p + p+4, p + p+2, p + p+1), in registers: through a stack array the
 * partials came back by partial loads of wider stores. */
static CSM_INLINE CSM_TARGET double CSM_FN(csm_xvd_tree)(const CSM_XVD *av)
{
  #if CSM_ISA_ID == 2
    const __m512d h8 = _mm512_add_pd(av[0], av[1]);                                    /* p + p+8 */
    const __m256d h4 = _mm256_add_pd(_mm512_castpd512_pd256(h8), _mm512_extractf64x4_pd(h8, 1)); /* p + p+4 */
  #else
    const __m256d h4 = _mm256_add_pd(_mm256_add_pd(av[0], av[2]), _mm256_add_pd(av[1], av[3]));
  #endif
    const __m128d h2 = _mm_add_pd(_mm256_castpd256_pd128(h4), _mm256_extractf128_pd(h4, 1)); /* p + p+2 */
    return _mm_cvtsd_f64(_mm_add_sd(h2, _mm_unpackhi_pd(h2, h2)));                     /* p + p+1 */
}

/* The same tree over CSM_PARTS partials of the element type in registers
 * (csm_rows_exp_sum_from's): through a stack array, AVX2 float32's two
 * registers came back as eight scalar loads and inserts per row. AMD Zen 5,
 * one thread, 4096 x 128, best of 10 calls in 3 alternating processes per
 * build, array -> registers: AVX2 float32 softmax 221-223 -> 207-213 us,
 * log_softmax 192-194 -> 182-187; float64 log_softmax 532-543 -> 500-507
 * (AVX2), 310-318 -> 294-303 (AVX-512), softmax 305-314 -> 289-301
 * (AVX-512). AVX-512 float32's one register keeps the array, whose loads
 * GCC turns into shuffles of the register itself: with these intrinsics its
 * softmax took 113-118 -> 119-123 us. */
static CSM_INLINE CSM_TARGET CSM_T CSM_FN(csm_xv_tree)(const CSM_XV *fv)
{
  #if CSM_F32 && CSM_ISA_ID == 2
    CSM_T f[CSM_PARTS];
    CSM_XV_(storeu)(f, fv[0]);
    return CSM_FN(csm_tree_sum_t)(f, 1);
  #elif CSM_F32
    const __m256 h8 = _mm256_add_ps(fv[0], fv[1]);                                  /* p + p+8 */
    const __m128 h4 = _mm_add_ps(_mm256_castps256_ps128(h8), _mm256_extractf128_ps(h8, 1)); /* p + p+4 */
    const __m128 h2 = _mm_add_ps(h4, _mm_movehl_ps(h4, h4));                          /* p + p+2 */
    return _mm_cvtss_f32(_mm_add_ss(h2, _mm_shuffle_ps(h2, h2, 1)));                  /* p + p+1 */
  #else
    return CSM_FN(csm_xvd_tree)(fv); /* CSM_XV is CSM_XVD for double */
  #endif
}
#endif

/* Every cache line of the n elements at p; w = 1 for elements about to be
 * written (fetched for ownership, so the store does not wait for them). */
static CSM_INLINE CSM_TARGET void CSM_FN(csm_prefetch_run)(const CSM_T *p, ptrdiff_t n, const int w)
{
    for (ptrdiff_t i = 0; i < n; i += 64 / (ptrdiff_t)sizeof(CSM_T)) {
        if (w) /* __builtin_prefetch takes a constant */
            CSM_PREFETCH_LINE(p + i, 1);
        else
            CSM_PREFETCH_LINE(p + i, 0);
    }
}

/* The row ahead from csm_prefetch_row or csm_prefetch_out_row (_rows.h),
 * or null where the engine did not ask for prefetching; `pf` is the
 * kernel's flag. */
#define CSM_PF_ROW_(fn, ...) (pf ? fn(__VA_ARGS__) : NULL)

/* The lines of CSM_PARTS elements at element i of the row ahead at pf, where
 * pf is not null (see CSM_PREFETCH_BYTES). */
#define CSM_PREFETCH_PARTS_(pf, i, w)                                                  \
    do {                                                                               \
        if (pf)                                                                        \
            CSM_FN(csm_prefetch_run)((const CSM_T *)(pf) + (i), CSM_PARTS, w);         \
    } while (0)

/* ext (csm_rows_exp_sum_blocks, R = 1; NULL, a constant, elsewhere): the
 * running max of the elements that take part (masked ones -inf, as
 * csm_rows_max_v takes them) in ext[0] and the min of every element in
 * ext[1], lane by lane, over the whole registers the loop reads; a call's
 * tail (its last K % CSM_PARTS elements) is the caller's
 * (csm_long_fused_chunk). */
#if CSM_EXP_V
  #define CSM_XV_EXT_ CSM_XV
  #define CSM_EXT_TRACK_(p, w)                                                                 \
    do {                                                                                    \
        if (ext) {                                                                          \
            const CSM_XV l_ = CSM_XV_(loadu)(p);                                            \
            ext[0] = CSM_XV_(max)((w) ? CSM_FN(csm_xv_keep)(l_, (w), -CSM_INF_T) : l_, ext[0]); \
            ext[1] = CSM_XV_(min)(l_, ext[1]);                                              \
        }                                                                                   \
    } while (0)
#else
  #define CSM_XV_EXT_ void
#endif

/* For each of R rows (R a constant, 1 or CSM_ROWS_MAX): y = exp(x - m),
 * adding the sum to acc in the order of CSM_SUM_BLOCK (_rows.h):
 * per block of 128 elements, CSM_PARTS partial sums and their fixed tree in
 * the element type, and the blocks' sums in double. A float sum over the
 * whole row loses about K * eps relative (measured against float64: 1.1e-5
 * at K = 65536, up to 5e-4 at K = 10^6); blocked, the sum stays within
 * 7e-7 at any K. y may be x, or NULL: the sum alone (logsumexp). mk, where
 * not NULL, is a widened mask (CSM_MW_T): a masked element's term is +0
 * (the masked kernels). Both are constants where the callers pass NULL
 * (the function is always inlined), so their tests cost nothing there. */
static CSM_INLINE CSM_TARGET void CSM_FN(csm_rows_exp_sum_blocks)(
    const int R, const CSM_T *const *x, const CSM_MW_T *const *mk, CSM_T *const *y,
    const CSM_T *m, ptrdiff_t K, double *acc, const char *const *pf, const char *const *pfw,
    const int normal, const int defer, CSM_XV_EXT_ *ext)
{
#if CSM_EXP_V
    /* defer (a constant; csm_rows_exp_sum_from chooses it) waits with each
     * block's tree until the next block's loop, when its partials are long
     * done (pv, pend). Summed at the block's end, the tree and the double
     * add are a chain of about 25 cycles on
     * the last exps' results, and the operations of the next block queue
     * behind it: AMD Zen 4, one thread, float32 logsumexp at K = 8192 spent
     * a fifth of its samples there under AVX2. Deferred, in cycles per
     * element at K = 1000 and 8192 (AVX2 | AVX-512, 2^17 elements, best of
     * 200, three alternations): logsumexp 1.00 -> 0.89, 0.92 -> 0.81 |
     * 0.80 -> 0.74, 0.75 -> 0.70; softmax 1.31 -> 1.14, 1.33 -> 1.17 |
     * 1.00 -> 0.95, 0.95 -> 0.88; log_softmax 1.29 -> 1.20, 1.25 -> 1.14 |
     * 1.06 -> 1.02, 1.07 -> 1.01; float64 2-3% under both. The sums are
     * added in the same order, so the bits are the same. */
    CSM_XV pv[CSM_ROWS_MAX][CSM_PARTS / CSM_XVW];
    int pend = 0;
#else
    (void)defer;
    (void)ext;
#endif
    for (ptrdiff_t blk = 0; blk < K; blk += CSM_SUM_BLOCK) {
        const ptrdiff_t end = K - blk < CSM_SUM_BLOCK ? K : blk + CSM_SUM_BLOCK;
#if CSM_EXP_V
        /* The same sums in registers (csm_exp_v); the mask, read as the
         * element type, keeps a term or makes it +0 by a bitwise and. The
         * R rows' registers are interleaved: each row's exp is a chain of
         * about 14 dependent operations, and a second row's chain fills the
         * pipeline where one row's waits. */
        enum { NV_ = CSM_PARTS / CSM_XVW };
        CSM_XV fv[CSM_ROWS_MAX][NV_];
        ptrdiff_t i = blk;
        CSM_EACH_ROW
        for (int rr = 0; rr < R; ++rr)
            for (int h = 0; h < NV_; ++h)
                fv[rr][h] = CSM_XV_(setzero)();
        for (; i + CSM_PARTS <= end; i += CSM_PARTS) {
            CSM_EACH_ROW
            for (int rr = 0; rr < R; ++rr) {
                CSM_PREFETCH_PARTS_(pf[rr], i, 0);
                CSM_PREFETCH_PARTS_(pfw[rr], i, 1);
            }
#if CSM_EXP_V_LOCKSTEP
            if (normal > 0) {
                /* The part's registers of the R rows (four per row), four
                 * at a time: register q is row q % R's register h = q / R,
                 * the order of the loop below, and each sum fv[rr][h] adds
                 * its terms in the same order, so the bits are the same. */
                _Static_assert(CSM_PARTS / CSM_XVW == 4, "csm_exp_v_normal_n takes a row's part at a time");
                for (int q0 = 0; q0 < NV_ * R; q0 += 4) {
                    CSM_XV v[4];
                    for (int k = 0; k < 4; ++k) {
                        const int q = q0 + k, rr = q % R;
                        const CSM_T *xq = x[rr] + i + (q / R) * CSM_XVW;
                        CSM_EXT_TRACK_(xq, mk[rr] ? mk[rr] + i + (q / R) * CSM_XVW : NULL);
                        v[k] = CSM_XV_(sub)(CSM_XV_(loadu)(xq), CSM_XV_(set1)(m[rr]));
                    }
                    CSM_FN(csm_exp_v_normal_n)(v);
                    for (int k = 0; k < 4; ++k) {
                        const int q = q0 + k, rr = q % R, h = q / R;
                        const ptrdiff_t j = i + h * CSM_XVW;
                        CSM_XV e = v[k];
                        if (mk[rr])
                            e = CSM_XV_(and)(e, CSM_XV_(loadu)((const CSM_T *)(mk[rr] + j)));
                        if (y[rr])
                            CSM_XV_(storeu)(y[rr] + j, e);
                        fv[rr][h] = CSM_XV_(add)(fv[rr][h], e);
                    }
                }
                continue;
            }
#endif
            for (int h = 0; h < NV_; ++h)
                CSM_EACH_ROW
                for (int rr = 0; rr < R; ++rr) {
                    const ptrdiff_t j = i + h * CSM_XVW;
                    CSM_EXT_TRACK_(x[rr] + j, mk[rr] ? mk[rr] + j : NULL);
                    CSM_XV e = CSM_FN(csm_exp_v_dom)(
                        CSM_XV_(sub)(CSM_XV_(loadu)(x[rr] + j), CSM_XV_(set1)(m[rr])), normal);
                    if (mk[rr])
                        e = CSM_XV_(and)(e, CSM_XV_(loadu)((const CSM_T *)(mk[rr] + j)));
                    if (y[rr])
                        CSM_XV_(storeu)(y[rr] + j, e);
                    fv[rr][h] = CSM_XV_(add)(fv[rr][h], e);
                }
        }
        /* The tail: element i + p still goes to partial p; the lanes past
         * the row add +0. */
        for (int h = 0; h < NV_ && i + h * CSM_XVW < end; ++h) {
            const ptrdiff_t j = i + h * CSM_XVW, n = end - j;
            const CSM_XM k = CSM_XM_FIRST(n < CSM_XVW ? n : CSM_XVW);
            CSM_EACH_ROW
            for (int rr = 0; rr < R; ++rr) {
                CSM_XV e = CSM_FN(csm_exp_v_dom)(
                    CSM_XV_(sub)(CSM_XV_LOADM(x[rr] + j, k), CSM_XV_(set1)(m[rr])), normal);
                e = mk[rr] ? CSM_XV_(and)(e, CSM_XV_LOADM((const CSM_T *)(mk[rr] + j), k))
                           : CSM_XV_ZEROM(k, e);
                if (y[rr])
                    CSM_XV_STOREN(y[rr] + j, n < CSM_XVW ? n : CSM_XVW, e);
                fv[rr][h] = CSM_XV_(add)(fv[rr][h], e);
            }
        }
        if (defer && pend)
            CSM_EACH_ROW
            for (int rr = 0; rr < R; ++rr)
                acc[rr] += (double)CSM_FN(csm_xv_tree)(pv[rr]);
        pend = defer && end < K;
        if (pend)
            CSM_EACH_ROW
            for (int rr = 0; rr < R; ++rr)
                for (int h = 0; h < NV_; ++h)
                    pv[rr][h] = fv[rr][h];
        else
            CSM_EACH_ROW
            for (int rr = 0; rr < R; ++rr)
                acc[rr] += (double)CSM_FN(csm_xv_tree)(fv[rr]);
#else
        (void)normal;
        CSM_EACH_ROW
        for (int rr = 0; rr < R; ++rr) {
            const CSM_T *xr = x[rr];
            const CSM_MW_T *mr = mk[rr];
            CSM_T *yr = y[rr];
            const CSM_T mm = m[rr];
            CSM_T f[CSM_PARTS];
            ptrdiff_t i = blk;
            for (ptrdiff_t p = 0; p < CSM_PARTS; ++p)
                f[p] = 0;
            for (; i + CSM_PARTS <= end; i += CSM_PARTS) {
                CSM_PREFETCH_PARTS_(pf[rr], i, 0);
                CSM_PREFETCH_PARTS_(pfw[rr], i, 1);
#pragma omp simd
                for (ptrdiff_t p = 0; p < CSM_PARTS; ++p) {
                    const CSM_T e = !mr || mr[i + p] ? CSM_FN(csm_exp_neg)(xr[i + p] - mm) : (CSM_T)0;
                    if (yr)
                        yr[i + p] = e;
                    f[p] += e;
                }
            }
#pragma omp simd
            for (ptrdiff_t p = 0; p < end - i; ++p) {
                const CSM_T e = !mr || mr[i + p] ? CSM_FN(csm_exp_neg)(xr[i + p] - mm) : (CSM_T)0;
                if (yr)
                    yr[i + p] = e;
                f[p] += e;
            }
            acc[rr] += (double)CSM_FN(csm_tree_sum_t)(f, 1);
        }
#endif
    }
}

#undef CSM_XV_EXT_
#undef CSM_EXT_TRACK_

/* Under AVX2, rows of more than one block defer their trees (above).
 * AVX-512 does not: with the deferring copy of the loop beside the other,
 * its float32 softmax took 2-7% longer at K = 64..256 (AMD Zen 4, one
 * thread: 2048 x 256 145 us against 136, 8192 x 64 182 against 177, best of
 * 400, three alternations), which the deferred rows do not even reach, and
 * where its logsumexp and softmax gained 5-7% at K = 1000 and 8192 (moving
 * the deferred row into a function of its own lost both the gain and not
 * the loss). Under AVX2 softmax's short shapes took 0.90-1.00x (4096 x 40
 * and 4096 x 100 0.90-0.95x), log_softmax's 1.02-1.03x (4096 x 128,
 * 100000 x 64), and K >= 256 0.87-0.93x; deferring in the single rows'
 * loops only (R = 1) kept log_softmax's short rows level but took softmax
 * at 8192 x 64 to 1.04x. */
#define CSM_DEFER_TREES (CSM_ISA_ID == 1)
static CSM_INLINE CSM_TARGET void CSM_FN(csm_rows_exp_sum_from)(
    const int R, const CSM_T *const *x, const CSM_MW_T *const *mk, CSM_T *const *y,
    const CSM_T *m, ptrdiff_t K, double *acc, const char *const *pf, const char *const *pfw,
    const int normal)
{
    if (CSM_DEFER_TREES && K > CSM_SUM_BLOCK)
        CSM_FN(csm_rows_exp_sum_blocks)(R, x, mk, y, m, K, acc, pf, pfw, normal, 1, NULL);
    else
        CSM_FN(csm_rows_exp_sum_blocks)(R, x, mk, y, m, K, acc, pf, pfw, normal, 0, NULL);
}
#undef CSM_DEFER_TREES

/* csm_rows_exp_sum_from with each block's tree at the block's end under
 * every ISA, for the masked and loss kernels and the rare rows (a max that
 * is not finite, Fortran-ordered logsumexp). The deferring loop is a second
 * inlined copy at each call site, and theirs are many (an instance per
 * mask, label and weight option): with them the AVX2 unit took 176 s to
 * compile against 166 without (gcc 12 -O3, one core each, side by side),
 * twice in CI (the editable install and the wheel), for rows that are not
 * the ones the deferral was measured and kept for. The blocks' sums are
 * added in the same order either way, so the bits are the same. */
static CSM_INLINE CSM_TARGET void CSM_FN(csm_rows_exp_sum_eager)(
    const int R, const CSM_T *const *x, const CSM_MW_T *const *mk, CSM_T *const *y,
    const CSM_T *m, ptrdiff_t K, double *acc, const char *const *pf, const char *const *pfw,
    const int normal)
{
    CSM_FN(csm_rows_exp_sum_blocks)(R, x, mk, y, m, K, acc, pf, pfw, normal, 0, NULL);
}

/* One row of csm_rows_exp_sum_eager. */
static CSM_INLINE CSM_TARGET double CSM_FN(csm_row_exp_sum_eager)(const CSM_T *x, const CSM_MW_T *mk,
                                                                 CSM_T *y, CSM_T m, ptrdiff_t K,
                                                                 double acc, const int normal)
{
    const char *nopf = NULL;
    CSM_FN(csm_rows_exp_sum_eager)(1, &x, &mk, &y, &m, K, &acc, &nopf, &nopf, normal);
    return acc;
}

/* One row of csm_rows_exp_sum_from. */
static CSM_INLINE CSM_TARGET double CSM_FN(csm_row_exp_sum_from)(const CSM_T *x, const CSM_MW_T *mk,
                                                                CSM_T *y, CSM_T m, ptrdiff_t K,
                                                                double acc, const char *pf,
                                                                const char *pfw, const int normal)
{
    CSM_FN(csm_rows_exp_sum_from)(1, &x, &mk, &y, &m, K, &acc, &pf, &pfw, normal);
    return acc;
}

/* The lane layout's twin of a block's end in csm_rows_exp_sum_from: each lane's
 * CSM_PARTS partials (sf, partial p of lane l at sf[p * lanes + l]) are
 * summed by the tree into sd[l], in double, and cleared. Called after column
 * j when (j + 1) % CSM_SUM_BLOCK == 0 and after the last column. */
static CSM_INLINE CSM_TARGET void CSM_FN(csm_lanes_flush)(double *sd, CSM_T *sf, ptrdiff_t lanes)
{
#pragma omp simd
    for (ptrdiff_t l = 0; l < lanes; ++l)
        sd[l] += (double)CSM_FN(csm_tree_sum_t)(sf + l, lanes);
    for (ptrdiff_t i = 0; i < CSM_PARTS * lanes; ++i)
        sf[i] = 0;
}

#if CSM_EXP_V
/* One register of csm_row_sum's terms, a or a * b, added to its double
 * partials (av[2h] and av[2h + 1] for float, av[h] for double) as the C form
 * adds them: the term widened to double, a product by one FMA in double.
 * mk, where not NULL, is this register's widened mask, read as the element
 * type and ANDed with the operands, so a masked term is +0. In a tail
 * (`tail`: the lanes outside k were loaded as +0) those lanes add +0, which
 * changes no partial (a partial is never -0: it starts at +0). */
static CSM_INLINE CSM_TARGET void CSM_FN(csm_sum_v)(CSM_XVD *av, int h, CSM_XV va, CSM_XV vb,
                                                   const CSM_MW_T *mk, const int what,
                                                   CSM_XM k, const int tail)
{
    CSM_XV keep = CSM_XV_(setzero)();
    if (mk)
        keep = tail ? CSM_XV_LOADM((const CSM_T *)mk, k) : CSM_XV_(loadu)((const CSM_T *)mk);
    if (what == CSM_SUM_DOT) {
        if (mk) {
            va = CSM_XV_(and)(va, keep);
            vb = CSM_XV_(and)(vb, keep);
        }
  #if CSM_F32
        av[2 * h] = CSM_XVD_(fmadd)(CSM_XCVT_LO(va), CSM_XCVT_LO(vb), av[2 * h]);
        av[2 * h + 1] = CSM_XVD_(fmadd)(CSM_XCVT_HI(va), CSM_XCVT_HI(vb), av[2 * h + 1]);
  #else
        av[h] = CSM_XVD_(fmadd)(va, vb, av[h]);
  #endif
        return;
    }
    CSM_XV t = va;
    if (mk)
        t = CSM_XV_(and)(t, keep);
  #if CSM_F32
    av[2 * h] = CSM_XVD_(add)(av[2 * h], CSM_XCVT_LO(t));
    av[2 * h + 1] = CSM_XVD_(add)(av[2 * h + 1], CSM_XCVT_HI(t));
  #else
    av[h] = CSM_XVD_(add)(av[h], t);
  #endif
}
#endif

#if CSM_EXP_V
/* One full register of csm_rows_sum's terms at a (and b), added to the
 * double partials av as csm_sum_v adds them. Unmasked float32 rows widen
 * each half straight from memory (vcvtps2pd with a memory operand: a loaded
 * register's halves cost an extract and a conversion each), and take the
 * product by a multiply and an add, not an FMA: a product of two floats is
 * exact in double, so the bits are the FMA's, and the partials' chain waits
 * on an add's latency instead of an FMA's. With csm_xvd_tree and the
 * unswitched prefetches of csm_rows_sum, softmax_backward float32 1024 x 128
 * (rows in L2, AMD Zen 5, one thread, timed alternately with torch's
 * _softmax_backward_data in one process, two processes per build) went from
 * 0.95-1.39x torch's time to 0.78-0.85x under AVX-512 and from 1.08-1.23x
 * to 0.90-0.92x under AVX2; 2048 x 64 from 1.21-1.31x to 0.85-0.87x. */
static CSM_INLINE CSM_TARGET void CSM_FN(csm_sum_reg)(CSM_XVD *av, int h, const CSM_T *a,
                                                     const CSM_T *b, const CSM_MW_T *mk,
                                                     const int what, CSM_XM all)
{
  #if CSM_F32
    if (!mk) {
        for (int half = 0; half < 2; ++half) {
            const CSM_XVD wa = CSM_XCVT_LOAD(a + half * CSM_XVDW);
            CSM_XVD *acc = &av[2 * h + half];
            *acc = CSM_XVD_(add)(*acc, what == CSM_SUM_DOT
                                           ? CSM_XVD_(mul)(wa, CSM_XCVT_LOAD(b + half * CSM_XVDW))
                                           : wa);
        }
        return;
    }
  #endif
    CSM_FN(csm_sum_v)(av, h, CSM_XV_(loadu)(a), what == CSM_SUM_DOT ? CSM_XV_(loadu)(b) : CSM_XV_(setzero)(),
                      mk, what, all, 0);
}
#endif

/* A sum over each of R rows (R a constant, 1 or CSM_ROWS_MAX) into out[r],
 * in double, in the order of CSM_PARTS: of a (CSM_SUM_PLAIN: log_softmax's
 * backward) or of a * b (CSM_SUM_DOT: softmax's backward). `what` is a
 * constant at every call site; mk, where not NULL, a widened mask whose
 * masked terms are exact zeros (0 * 0 in the dot product, whatever a and b
 * hold there). Double: the output subtracts these sums from g, so their
 * error counts against the size of the terms, and a float sum over a whole
 * row loses about K eps relative (5e-4 at K = 10^6), past the README's 2e-6
 * at large K. (The sums of exp(x - max) are csm_rows_exp_sum_from's.)
 * carry (R = 1 only), where not NULL, holds the 16 partials of the row's
 * elements before these K, and fin = 0 stores them back there instead of
 * ending the sum (K then a multiple of CSM_PARTS): chunks of a row give the
 * whole row's partials, so its bits (csm_long_bwd_strided). */
#define CSM_KEEP_(i) (!mk || mk[i])
#define CSM_SUM_ACC_(acc, i) ((acc) = what == CSM_SUM_DOT                                          \
    ? CSM_FMA(CSM_KEEP_(i) ? (double)a[i] : 0.0, CSM_KEEP_(i) ? (double)b[i] : 0.0, (acc))         \
    : (acc) + (!CSM_KEEP_(i) ? 0.0 : (double)a[i]))
static CSM_INLINE CSM_TARGET void CSM_FN(csm_rows_sum)(
    const int R, const CSM_T *const *ar, const CSM_T *const *br, const CSM_MW_T *const *mkr,
    ptrdiff_t K, const int what, double *out,
    const char *const *pfar, const char *const *pfbr, const char *const *pfwr,
    const CSM_T *sy, const CSM_T *sg, CSM_T *so, const CSM_T sd, double *carry, const int fin)
{
#if CSM_EXP_V
    /* The same sums in registers: the 16 double partials are
     * CSM_PARTS / CSM_XVDW registers (csm_sum_v); the mask is read as the
     * element type. The R rows' registers are interleaved, as in
     * csm_rows_exp_sum_from. */
    enum { NV_ = CSM_PARTS / CSM_XVW, ND_ = CSM_PARTS / CSM_XVDW };
    CSM_XVD av[CSM_ROWS_MAX][ND_];
    ptrdiff_t i = 0;
    CSM_EACH_ROW
    for (int rr = 0; rr < R; ++rr)
        for (int h = 0; h < ND_; ++h)
            av[rr][h] = carry ? CSM_XVD_(loadu)(carry + h * CSM_XVDW) : CSM_XVD_(setzero)();
    const CSM_XM all = CSM_XM_FIRST(CSM_XVW);
    /* The loop twice, with and without the prefetches: tested inside it, the
     * null pointers of calls in cache cost a branch per pointer per
     * CSM_PARTS elements, which GCC does not unswitch. */
    int pfon = 0;
    CSM_EACH_ROW
    for (int rr = 0; rr < R; ++rr)
        pfon |= pfar[rr] || pfbr[rr] || pfwr[rr];
    /* STEP adds the block of CSM_PARTS terms at i to the partials and
     * writes the block of so there. */
#define CSM_SUM_LOOP_(PF, STEP)                                                                \
    for (; i + CSM_PARTS <= K; i += CSM_PARTS) {                                               \
        if (PF)                                                                                \
            CSM_EACH_ROW                                                                       \
            for (int rr = 0; rr < R; ++rr) {                                                   \
                CSM_PREFETCH_PARTS_(pfar[rr], i, 0);                                           \
                CSM_PREFETCH_PARTS_(pfbr[rr], i, 0);                                           \
                CSM_PREFETCH_PARTS_(pfwr[rr], i, 1);                                           \
            }                                                                                  \
        STEP                                                                                   \
    }
#define CSM_SUM_STEP_                                                                          \
    for (int h = 0; h < NV_; ++h)                                                              \
        CSM_EACH_ROW                                                                           \
        for (int rr = 0; rr < R; ++rr)                                                         \
            CSM_FN(csm_sum_reg)(av[rr], h, ar[rr] + i + h * CSM_XVW, br[rr] + i + h * CSM_XVW,     \
                                mkr[rr] ? mkr[rr] + i + h * CSM_XVW : NULL, what, all);        \
    if (so)                                                                                    \
        for (int h = 0; h < NV_; ++h)                                                          \
            CSM_XV_(storeu)(so + i + h * CSM_XVW,                                              \
                            CSM_XV_(mul)(CSM_XV_(loadu)(sy + i + h * CSM_XVW),                 \
                                         CSM_XV_(sub)(CSM_XV_(loadu)(sg + i + h * CSM_XVW),     \
                                                      CSM_XV_(set1)(sd))));
  #if CSM_ISA_ID == 2 && CSM_F32
    /* csm_widen_256: each 512-bit double partial as two 256-bit ones (lanes
     * 0-3 and 4-7), each fed by one vcvtps2pd ymm from memory, joined at the
     * end; a lane adds the same terms in the same order, so the bits are the
     * zmm form's. The output row before (so) is written by 256-bit
     * operations too. AMD Zen 4 (AVX-512 in 256-bit halves), 2-core VM, a C
     * loop of softmax_backward's pipelined row in L1, ns per element:
     * vcvtps2pd zmm into two 512-bit partials 0.146, ymm into four 256-bit
     * partials 0.117 (AVX2 throughout 0.122; two ymm conversions joined by
     * vinsertf64x4 0.151-0.156); _engine.pyx has the kernels' times. A core
     * with whole 512-bit units converts eight floats in the time of four,
     * so there the zmm form stays. */
    int masked = 0;
    CSM_EACH_ROW
    for (int rr = 0; rr < R; ++rr)
        masked |= mkr[rr] != NULL;
    if (csm_widen_256 && !masked) {
        __m256d q[CSM_ROWS_MAX][4];
        CSM_EACH_ROW
        for (int rr = 0; rr < R; ++rr)
            for (int p = 0; p < 4; ++p)
                q[rr][p] = p & 1 ? _mm512_extractf64x4_pd(av[rr][p >> 1], 1)
                                 : _mm512_castpd512_pd256(av[rr][p >> 1]);
#define CSM_SUM_STEP_256_                                                                      \
        CSM_EACH_ROW                                                                           \
        for (int rr = 0; rr < R; ++rr)                                                         \
            for (int p = 0; p < 4; ++p) {                                                      \
                const __m256d w = _mm256_cvtps_pd(_mm_loadu_ps(ar[rr] + i + 4 * p));           \
                q[rr][p] = _mm256_add_pd(q[rr][p], what == CSM_SUM_DOT                          \
                    ? _mm256_mul_pd(w, _mm256_cvtps_pd(_mm_loadu_ps(br[rr] + i + 4 * p))) : w); \
            }                                                                                  \
        if (so)                                                                                \
            for (int p = 0; p < 2; ++p)                                                        \
                _mm256_storeu_ps(so + i + 8 * p,                                               \
                                 _mm256_mul_ps(_mm256_loadu_ps(sy + i + 8 * p),                \
                                               _mm256_sub_ps(_mm256_loadu_ps(sg + i + 8 * p),  \
                                                             _mm256_set1_ps(sd))));
        if (pfon)
            CSM_SUM_LOOP_(1, CSM_SUM_STEP_256_)
        else
            CSM_SUM_LOOP_(0, CSM_SUM_STEP_256_)
#undef CSM_SUM_STEP_256_
        CSM_EACH_ROW
        for (int rr = 0; rr < R; ++rr)
            for (int h = 0; h < 2; ++h)
                av[rr][h] = _mm512_insertf64x4(_mm512_castpd256_pd512(q[rr][2 * h]), q[rr][2 * h + 1], 1);
    } else
  #endif
    if (pfon)
        CSM_SUM_LOOP_(1, CSM_SUM_STEP_)
    else
        CSM_SUM_LOOP_(0, CSM_SUM_STEP_)
#undef CSM_SUM_STEP_
#undef CSM_SUM_LOOP_
    if (!fin) {
        for (int h = 0; h < ND_; ++h)
            CSM_XVD_(storeu)(carry + h * CSM_XVDW, av[0][h]);
        return;
    }
    /* The tail, as in csm_rows_exp_sum_from: element i + p still goes to
     * partial p. */
    for (int h = 0; h < NV_ && i + h * CSM_XVW < K; ++h) {
        const ptrdiff_t j = i + h * CSM_XVW, n = K - j;
        const CSM_XM k = CSM_XM_FIRST(n < CSM_XVW ? n : CSM_XVW);
        CSM_EACH_ROW
        for (int rr = 0; rr < R; ++rr)
            CSM_FN(csm_sum_v)(av[rr], h, CSM_XV_LOADM(ar[rr] + j, k),
                              what == CSM_SUM_DOT ? CSM_XV_LOADM(br[rr] + j, k) : CSM_XV_(setzero)(),
                              mkr[rr] ? mkr[rr] + j : NULL, what, k, 1);
    }
    CSM_EACH_ROW
    for (int rr = 0; rr < R; ++rr)
        out[rr] = CSM_FN(csm_xvd_tree)(av[rr]);
    if (so)
#pragma omp simd
        for (ptrdiff_t j = i; j < K; ++j)
            so[j] = sy[j] * (sg[j] - sd);
#else
    CSM_EACH_ROW
    for (int rr = 0; rr < R; ++rr) {
        const CSM_T *a = ar[rr], *b = br[rr];
        const CSM_MW_T *mk = mkr[rr];
        double acc[CSM_PARTS];
        ptrdiff_t i = 0;
        for (ptrdiff_t p = 0; p < CSM_PARTS; ++p)
            acc[p] = carry ? carry[p] : 0;
        for (; i + CSM_PARTS <= K; i += CSM_PARTS) {
            CSM_PREFETCH_PARTS_(pfar[rr], i, 0);
            CSM_PREFETCH_PARTS_(pfbr[rr], i, 0);
            CSM_PREFETCH_PARTS_(pfwr[rr], i, 1);
#pragma omp simd
            for (ptrdiff_t p = 0; p < CSM_PARTS; ++p)
                CSM_SUM_ACC_(acc[p], i + p);
            if (so)
#pragma omp simd
                for (ptrdiff_t p = 0; p < CSM_PARTS; ++p)
                    so[i + p] = sy[i + p] * (sg[i + p] - sd);
        }
        if (!fin) {
            for (ptrdiff_t p = 0; p < CSM_PARTS; ++p)
                carry[p] = acc[p];
            return;
        }
#pragma omp simd
        for (ptrdiff_t p = 0; p < K - i; ++p)
            CSM_SUM_ACC_(acc[p], i + p);
        if (so)
#pragma omp simd
            for (ptrdiff_t p = 0; p < K - i; ++p)
                so[i + p] = sy[i + p] * (sg[i + p] - sd);
        out[rr] = csm_tree_sum(acc, 1);
    }
#endif
}

/* One row of csm_rows_sum. */
static CSM_INLINE CSM_TARGET double CSM_FN(csm_row_sum)(const CSM_T *a, const CSM_T *b,
                                                         const CSM_MW_T *mk, ptrdiff_t K,
                                                         const int what, const char *pfa,
                                                         const char *pfb, const char *pfw)
{
    double s;
    CSM_FN(csm_rows_sum)(1, &a, &b, &mk, K, what, &s, &pfa, &pfb, &pfw, NULL, NULL, NULL, 0, NULL, 1);
    return s;
}

/* csm_row_sum's dot product of a and b, while the same loop writes the row
 * before: so = sy * (sg - sd), element by element (softmax_backward's output
 * row). */
static CSM_INLINE CSM_TARGET double CSM_FN(csm_row_dot_out)(const CSM_T *a, const CSM_T *b, ptrdiff_t K,
                                                           const char *pfa, const char *pfb,
                                                           const CSM_T *sy, const CSM_T *sg,
                                                           CSM_T *so, CSM_T sd)
{
    double s;
    const CSM_MW_T *mk = NULL;
    const char *pfw = NULL;
    CSM_FN(csm_rows_sum)(1, &a, &b, &mk, K, CSM_SUM_DOT, &s, &pfa, &pfb, &pfw, sy, sg, so, sd, NULL, 1);
    return s;
}
#if CSM_EXP_V && CSM_ISA_ID == 2
/* AVX-512: the lanes of a register kept by the mask bytes at m (nonzero:
 * the element takes part), as a mask register, from one vptestmb; n < CSM_XVW
 * in a row's tail, where no byte past m + n is read and the lanes past n are
 * dropped. */
static CSM_INLINE CSM_TARGET CSM_XM CSM_FN(csm_keep_bytes)(const unsigned char *m, ptrdiff_t n)
{
  #if CSM_F32
    const __m128i b = n < CSM_XVW ? _mm_maskz_loadu_epi8(CSM_XM_FIRST(n), m)
                                  : _mm_loadu_si128((const __m128i *)m);
    return _mm_test_epi8_mask(b, b);
  #else
    const __m128i b = n < CSM_XVW ? _mm_maskz_loadu_epi8(CSM_XM_FIRST(n), m)
                                  : _mm_loadl_epi64((const __m128i *)m);
    return (CSM_XM)(_mm_test_epi8_mask(b, b) & 0xffu);
  #endif
}

/* csm_row_sum with the mask as the caller's bytes (m, unit stride) instead
 * of a widened row: each register's masked lanes load as +0 (a zero-masked
 * load or conversion), the term csm_sum_v makes of a masked lane (0 * 0, or
 * 0), in the same partials and order, so the same bits. */
static CSM_INLINE CSM_TARGET double CSM_FN(csm_row_sum_bytes)(const CSM_T *a, const CSM_T *b,
                                                              const unsigned char *m, ptrdiff_t K,
                                                              const int what)
{
    enum { NV_ = CSM_PARTS / CSM_XVW, ND_ = CSM_PARTS / CSM_XVDW };
    CSM_XVD av[ND_];
    for (int h = 0; h < ND_; ++h)
        av[h] = CSM_XVD_(setzero)();
    ptrdiff_t i = 0;
    for (; i + CSM_PARTS <= K; i += CSM_PARTS)
        for (int h = 0; h < NV_; ++h) {
            const ptrdiff_t j = i + h * CSM_XVW;
            const CSM_XM k = CSM_FN(csm_keep_bytes)(m + j, CSM_XVW);
  #if CSM_F32
            /* Each half widened straight from memory (csm_sum_reg's reason:
             * no extract per half). */
            for (int half = 0; half < 2; ++half) {
                const __mmask8 kh = (__mmask8)(k >> (8 * half));
                const CSM_XVD wa = _mm512_maskz_cvtps_pd(kh, _mm256_loadu_ps(a + j + 8 * half));
                av[2 * h + half] = what == CSM_SUM_DOT
                    ? CSM_XVD_(fmadd)(wa, _mm512_maskz_cvtps_pd(kh, _mm256_loadu_ps(b + j + 8 * half)),
                                      av[2 * h + half])
                    : CSM_XVD_(add)(av[2 * h + half], wa);
            }
  #else
            CSM_FN(csm_sum_v)(av, h, CSM_XV_LOADM(a + j, k),
                              what == CSM_SUM_DOT ? CSM_XV_LOADM(b + j, k) : CSM_XV_(setzero)(), NULL, what,
                              k, 0);
  #endif
        }
    for (int h = 0; h < NV_ && i + h * CSM_XVW < K; ++h) {
        const ptrdiff_t j = i + h * CSM_XVW, n = K - j < CSM_XVW ? K - j : CSM_XVW;
        const CSM_XM k = CSM_FN(csm_keep_bytes)(m + j, n);
        CSM_FN(csm_sum_v)(av, h, CSM_XV_LOADM(a + j, k),
                          what == CSM_SUM_DOT ? CSM_XV_LOADM(b + j, k) : CSM_XV_(setzero)(), NULL, what,
                          k, 1);
    }
    return CSM_FN(csm_xvd_tree)(av);
}
#endif

/* csm_row_sum over a chunk of a row, its partials carried in carry (16
 * doubles, zero before the first chunk); the last chunk (fin) returns the
 * row's sum. */
static CSM_INLINE CSM_TARGET double CSM_FN(csm_row_sum_chunk)(const CSM_T *a, const CSM_T *b, ptrdiff_t n,
                                                               const int what, double *carry, int fin)
{
    double s = 0;
    const CSM_MW_T *mk = NULL;
    const char *none = NULL;
    if (fin)
        CSM_FN(csm_rows_sum)(1, &a, &b, &mk, n, what, &s, &none, &none, &none, NULL, NULL, NULL, 0, carry, 1);
    else
        CSM_FN(csm_rows_sum)(1, &a, &b, &mk, n, what, &s, &none, &none, &none, NULL, NULL, NULL, 0, carry, 0);
    return s;
}
#undef CSM_SUM_ACC_
#undef CSM_KEEP_

/* The output pass of a streamed long row (csm_long_rows), run a piece at a
 * time: y = (x - M) - c (log_softmax: CSM_OUT_LOG), exp(x - M) c (softmax
 * past CSM_LONG_KEEP: CSM_OUT_EXP), or ks f_c with ks the row's kept exps
 * and f_c its chunk's scale (softmax's kept rows: CSM_OUT_KEPT), streamed
 * from the registers that compute it, with regular stores before the first
 * aligned element and after the last whole register. Run whole (open,
 * then close), or beside the first pass of the row after it,
 * CSM_OUT_PASS_STEP elements per as many of its sum (csm_long_max_sum):
 * that pass is bound by its exps, this one by memory, and a core that
 * alternates them finely keeps both busy where it ran them one after the
 * other (docs/design.md has the numbers). Each element is the same
 * expression either way, so the bits are. Its state: */
#ifndef CSM_OUT_FORMS_ /* (this file is included once per type and ISA) */
#define CSM_OUT_FORMS_
enum { CSM_OUT_LOG, CSM_OUT_EXP, CSM_OUT_KEPT };
#endif
typedef struct {
    const CSM_T *x;  /* x, or the kept exps */
    CSM_T *y;
    const CSM_T *f;  /* the chunks' scales, or NULL */
    const char *pf;  /* CSM_PREFETCH_BYTES ahead of x */
    ptrdiff_t a, i, end, K;  /* the lead, the next element, the end of the whole registers */
    CSM_T M, c;
    int form;        /* CSM_OUT_LOG, CSM_OUT_EXP, CSM_OUT_KEPT */
} CSM_FN(csm_out_pass_t);

#if CSM_EXP_V
/* The elements before the first register-aligned one at out. */
static CSM_INLINE ptrdiff_t CSM_FN(csm_nt_lead)(const CSM_T *out)
{
    const ptrdiff_t vw = CSM_XVW;
    return (vw - (ptrdiff_t)(((uintptr_t)out / sizeof(CSM_T)) % (uintptr_t)vw)) % vw;
}

/* The same for one long row of K elements at y that streams alone
 * (csm_out_pass_open): K where no register of it can be aligned, so that
 * all its stores are regular. */
static CSM_INLINE ptrdiff_t CSM_FN(csm_nt_lead_row)(const CSM_T *y, ptrdiff_t K)
{
    const ptrdiff_t a = CSM_FN(csm_nt_lead)(y);
    return (uintptr_t)y % sizeof(CSM_T) != 0 || a > K ? K : a;
}

/* Elements of the output pass per block of the first pass's sum beside it.
 * AMD Zen 4, AVX-512, log_softmax 8 x 2^20 float32 out=, four rows per
 * block, one and two threads, ms against blocks of one row (noisy runs):
 * 128: 3.36-3.41 / 3.27-3.32 and 1.94-2.02 / 2.08-2.23; 512: 3.18-3.22 /
 * 3.32-3.41 and 1.85-1.94 / 2.27-2.33; 1024: 3.16-3.35 / 3.27-3.40 and
 * 1.91-1.92 / 2.23-2.25; 2048 (a chunk): 3.18-3.19 / 3.24-3.27 and
 * 2.00-2.04 / 2.17-2.24. */
#define CSM_OUT_PASS_STEP 512
#define CSM_OUT_AT_(o, i) ((o)->form == CSM_OUT_KEPT ? (o)->x[i] * (o)->f[(i) / CSM_LONG_CHUNK]            \
                          : (o)->form == CSM_OUT_LOG ? ((o)->x[i] - (o)->M) - (o)->c                       \
                          : CSM_FN(csm_exp_neg)((o)->x[i] - (o)->M) * (o)->c)

/* The pass's lead, with regular stores; o->i is then the first aligned one. */
static CSM_INLINE CSM_TARGET void CSM_FN(csm_out_pass_open)(CSM_FN(csm_out_pass_t) *o, const CSM_T *x,
                                                           CSM_T *y, ptrdiff_t K, CSM_T M, CSM_T c,
                                                           const CSM_T *f, int form)
{
    enum { AHEAD = CSM_PREFETCH_BYTES / sizeof(CSM_T) };
    o->x = x;
    o->y = y;
    o->f = f;
    o->form = form;
    o->pf = (const char *)((uintptr_t)x + AHEAD * sizeof(CSM_T));
    o->K = K;
    o->M = M;
    o->c = c;
    o->a = CSM_FN(csm_nt_lead_row)(y, K);
    o->end = o->a + (K - o->a) / CSM_XVW * CSM_XVW;
    for (ptrdiff_t i = 0; i < o->a; ++i)
        y[i] = CSM_OUT_AT_(o, i);
    o->i = o->a;
}

/* The pass's next n elements (up to its last whole register), streamed. */
static CSM_INLINE CSM_TARGET void CSM_FN(csm_out_pass_run)(CSM_FN(csm_out_pass_t) *o, ptrdiff_t n)
{
    const ptrdiff_t vw = CSM_XVW, stop = o->i + n < o->end ? o->i + n : o->end;
    const CSM_T *x = o->x;
    CSM_T *y = o->y;
    ptrdiff_t i = o->i;
    for (; i < stop; i += vw) {
        if ((i - o->a) % CSM_PARTS == 0)
            CSM_PREFETCH_PARTS_(o->pf, i, 0);
        CSM_XV v;
        if (o->form == CSM_OUT_LOG) {
            v = CSM_XV_(sub)(CSM_XV_(sub)(CSM_XV_(loadu)(x + i), CSM_XV_(set1)(o->M)), CSM_XV_(set1)(o->c));
        } else if (o->form == CSM_OUT_EXP) {
            v = CSM_XV_(mul)(CSM_FN(csm_exp_v)(CSM_XV_(sub)(CSM_XV_(loadu)(x + i), CSM_XV_(set1)(o->M)), 0),
                             CSM_XV_(set1)(o->c));
        } else if ((i + vw - 1) / CSM_LONG_CHUNK == i / CSM_LONG_CHUNK) {
            v = CSM_XV_(mul)(CSM_XV_(loadu)(x + i), CSM_XV_(set1)(o->f[i / CSM_LONG_CHUNK]));
        } else { /* the register across a chunk's end: each element its own f_c */
            CSM_T t[CSM_XVW];
            for (ptrdiff_t l = 0; l < vw; ++l)
                t[l] = CSM_OUT_AT_(o, i + l);
            v = CSM_XV_(loadu)(t);
        }
        CSM_XV_(stream)(y + i, v);
    }
    o->i = i;
}

/* The rest of the pass: its whole registers, then its tail. */
static CSM_INLINE CSM_TARGET void CSM_FN(csm_out_pass_close)(CSM_FN(csm_out_pass_t) *o)
{
    CSM_FN(csm_out_pass_run)(o, o->end - o->i);
    for (ptrdiff_t i = o->end; i < o->K; ++i)
        o->y[i] = CSM_OUT_AT_(o, i);
}
#undef CSM_OUT_AT_
#endif

/* A chunk's max m and sum sj (of exp(x - m), or of exp(x) where m = -inf)
 * into its row's running max M and sum s (csm_long_max_sum says how). */
static CSM_INLINE CSM_TARGET void CSM_FN(csm_long_fold)(double *s, CSM_T *M, CSM_T m, double sj)
{
    if (m == -CSM_INF_T) {
        *s += sj;
    } else if (m > *M) {
        *s = *s * CSM_PASTE(csm_exp_neg, CSM_PASTE(f64, CSM_ISA))((double)*M - (double)m) + sj;
        *M = m;
    } else {
        *s += sj * CSM_PASTE(csm_exp_neg, CSM_PASTE(f64, CSM_ISA))((double)m - (double)*M);
    }
}

#if CSM_EXP_V_NORMAL
/* A chunk of a row past L2 in one read (csm_long_chunk): exp(x - r) against
 * the row's running max r of the chunks before, in the loop that takes
 * the chunk's own max and min (csm_rows_exp_sum_blocks' ext), instead of a
 * read for the chunk's max and another for the sum. The max's read waits on
 * memory and the sum's on the exps, one after the other; in one loop they
 * overlap. Returns 1 where the chunk holds nothing above r, no x - r below
 * CSM_EXP_NORMAL_LO (the exp's normal form) and no NaN: its sum, against r
 * (the row's M), joins s. Otherwise the caller takes the chunk again by its own max
 * (it is in L1 by then), overwriting the stores to y; o's steps, which ran
 * here, are done. 0: the chunk's max is above r (a new max, or +inf). Its
 * exps are not kept against r: exp(x - r) > 1 scaled by exp(r - M) / S
 * would take that scale below float32's normal range (subnormal, its
 * precision lost) where exp(x - M) / S itself is normal. -1: an exp out of
 * the normal form (-inf, a stretch far below the max) or a NaN. */
static CSM_INLINE CSM_TARGET int CSM_FN(csm_long_fused_chunk)(const CSM_T *xj, const CSM_MW_T *mj,
                                                             CSM_T *yj, ptrdiff_t n, double *s,
                                                             const CSM_T r, const char *next,
                                                             const char *next_y,
                                                             CSM_FN(csm_out_pass_t) *o)
{
    CSM_XV ext[2] = {CSM_XV_(set1)(-CSM_INF_T), CSM_XV_(set1)(CSM_INF_T)};
    CSM_T mx = -CSM_INF_T, mn = CSM_INF_T;
    const ptrdiff_t step = o ? CSM_OUT_PASS_STEP : n;
    double sj = 0.0;
    for (ptrdiff_t b = 0; b < n; b += step) {
        const ptrdiff_t nb = n - b < step ? n - b : step;
        const CSM_T *xb = xj + b;
        const CSM_MW_T *mb = mj ? mj + b : NULL;
        CSM_T *yb = yj ? yj + b : NULL;
        const char *nx = next ? next + b * sizeof(CSM_T) : NULL;
        const char *ny = next_y ? next_y + b * sizeof(CSM_T) : NULL;
        /* AVX2's deferred trees (csm_rows_exp_sum_from): the same bits */
        CSM_FN(csm_rows_exp_sum_blocks)(1, &xb, &mb, &yb, &r, nb, &sj, &nx, &ny, 1, CSM_ISA_ID == 1, ext);
        for (ptrdiff_t i = nb - nb % CSM_PARTS; i < nb; ++i) {
            if ((!mb || mb[i]) && xb[i] > mx)
                mx = xb[i];
            if (xb[i] < mn)
                mn = xb[i];
        }
        if (o)
            CSM_FN(csm_out_pass_run)(o, nb);
    }
    CSM_T hx[CSM_XVW], hn[CSM_XVW];
    CSM_XV_(storeu)(hx, ext[0]);
    CSM_XV_(storeu)(hn, ext[1]);
    for (ptrdiff_t l = 0; l < CSM_XVW; ++l) {
        mx = hx[l] > mx ? hx[l] : mx;
        mn = hn[l] < mn ? hn[l] : mn;
    }
    if (!((CSM_T)(mn - r) >= CSM_EXP_NORMAL_LO))
        return -1;
    if (mx > r)
        return 0;
    if (sj - sj != 0) /* a NaN, which the max and the min pass over */
        return -1;
    *s += sj;
    return 1;
}
#endif

/* A chunk of a row past L2 (xj: its n elements; later: whether a chunk of
 * the row came before it) into the row's running max M and sum s
 * (csm_long_max_sum), its exps into yj where not NULL (yj may be xj), and
 * its reference (the max its exps are taken against) into *mc where not
 * NULL. After the first chunk, while M is finite, in one read
 * (csm_long_fused_chunk); a chunk that reading cannot take goes on in the
 * two reads below. So does every later chunk of the row (*fuse = 0, the
 * row's state, 1 at its start) after an exp out of the normal form or a
 * NaN, or after two chunks in a row with a new max (*fuse = 2 after the
 * first): a row with -inf in every chunk (a mask's), or one that rises all
 * along, pays the one read once, not per chunk, and a row of stationary
 * noise, whose max rises in a few chunks near its start, a few times. The
 * chunk boundaries and these rules are the same on every path to a long
 * row (C order, Fortran order, masks, streamed or not), so their bits are
 * the same. Two reads: the chunk's max m_c, read from
 * memory, then its sum s_c = sum(exp(x - m_c)) from L1, while the next
 * chunk is prefetched (next, next_y, where not NULL), folded into s and M
 * (csm_long_fold). o, where not NULL: the previous row's output pass, run
 * beside the sum CSM_OUT_PASS_STEP elements at a time. */
static CSM_INLINE CSM_TARGET void CSM_FN(csm_long_chunk)(const CSM_T *xj, const CSM_MW_T *mj, CSM_T *yj,
                                                        ptrdiff_t n, int later, double *s, CSM_T *M,
                                                        int *fuse, CSM_T *mc, const char *next,
                                                        const char *next_y,
                                                        CSM_FN(csm_out_pass_t) *o)
{
#if CSM_EXP_V_NORMAL
    if (*fuse && later && *M - *M == 0) {
        const CSM_T r = *M;
        /* In place (y = x), the exps wait in L1 until the chunk is taken:
         * a chunk taken again needs its x. */
        CSM_T tmp[CSM_LONG_CHUNK];
        CSM_T *fy = yj && yj == xj ? tmp : yj;
        const int took = CSM_FN(csm_long_fused_chunk)(xj, mj, fy, n, s, r, next, next_y, o);
        if (took > 0) {
            if (fy != yj)
                memcpy(yj, tmp, (size_t)n * sizeof(CSM_T));
            if (mc)
                *mc = r;
            *fuse = 1;
            return;
        }
        *fuse = took == 0 && *fuse == 1 ? 2 : 0;
        o = NULL;
    }
#else
    (void)later;
    (void)fuse;
#endif
    CSM_T m;
    /* The chunk's exps take one form where its minima say which
     * (csm_group_rows_max_normal), as the rows in cache do; a chunk with
     * no max (-inf: its exps are of x - 0) tests register by register.
     * Tested register by register, a fifth of x -inf at random took
     * AVX2's 4 x 300000 float64 softmax from 1.20 ms to 2.34 (Intel
     * Xeon, one thread, out=), now 1.30; log_softmax 1.49 -> 2.56-2.60,
     * now 1.57; float32 softmax 0.42 -> 0.66, now 0.42-0.43. */
    int normal = mj ? CSM_FN(csm_group_rows_max_normal)(1, &xj, &mj, n, &m)
                    : CSM_FN(csm_group_rows_max_normal)(1, &xj, NULL, n, &m);
    if (m == -CSM_INF_T)
        normal = 0;
    const CSM_T ref = m == -CSM_INF_T ? (CSM_T)0 : m;
    /* The sum in one call, or, with the previous row's output pass beside
     * it (o), CSM_OUT_PASS_STEP elements at a time, each followed by as
     * many of that pass: the blocks' sums add to sj in the same order. */
#if CSM_EXP_V
    const ptrdiff_t step = o ? CSM_OUT_PASS_STEP : n;
#else
    const ptrdiff_t step = n;
#endif
    double sj = 0.0;
    for (ptrdiff_t b = 0; b < n; b += step) {
        const ptrdiff_t nb = n - b < step ? n - b : step;
        const char *nx = next ? next + b * sizeof(CSM_T) : NULL;
        const char *ny = next_y ? next_y + b * sizeof(CSM_T) : NULL;
        const CSM_MW_T *mb = mj ? mj + b : NULL;
        CSM_T *yb = yj ? yj + b : NULL;
        sj = normal > 0 ? CSM_FN(csm_row_exp_sum_from)(xj + b, mb, yb, ref, nb, sj, nx, ny, 1)
                        : CSM_FN(csm_row_exp_sum_from)(xj + b, mb, yb, ref, nb, sj, nx, ny, normal);
#if CSM_EXP_V
        if (o)
            CSM_FN(csm_out_pass_run)(o, nb);
#endif
    }
    if (mc)
        *mc = m;
    CSM_FN(csm_long_fold)(s, M, m, sj);
}

/* The max M of a row past L2 and its sum S = sum(exp(x - M)), reading the
 * row from memory once instead of twice (a pass for the max, a pass for the
 * sum), chunk by chunk (CSM_LONG_CHUNK elements, csm_long_chunk), with S
 * rescaled in double as M grows (the online normalizer of Milakov and
 * Gimelshein, "Online normalizer calculation for softmax", 2018, per chunk
 * instead of per element, so that the rescaling costs one exp per chunk).
 * The chunk sums are softmax's blocked sum (csm_rows_exp_sum_blocks), for
 * log_softmax too: within 7e-7 relative (CSM_SUM_BLOCK), so log(S) within
 * 7e-7 absolute, inside the 2e-6 that log_softmax's rows keep. mk, where
 * not NULL, is a widened mask (the masked kernels): masked elements take no
 * part, so an all-true mask gives the bits of no mask. A chunk with no
 * finite or +inf element (m_c = -inf: -inf, NaN or masked elements only)
 * adds its terms exp(x - 0), 0 or NaN, unscaled: S keeps the row's NaN, and
 * is 0 for a row of only -inf or masked elements, whose output pass then
 * gives NaN (exp(-inf - -inf)) or the masked kernels' zeros and -inf, as
 * rows of the three-pass kernels get. A +inf makes S NaN, as there. mc,
 * where not NULL, takes each chunk's reference r_c (y's chunk holds
 * exp(x - r_c)). */
static CSM_INLINE CSM_TARGET double CSM_FN(csm_long_max_sum)(const CSM_T *x, const CSM_MW_T *mk,
                                                             ptrdiff_t K, CSM_T *max_out,
                                                             CSM_T *y, CSM_T *mc, int pf,
                                                             CSM_FN(csm_out_pass_t) *o)
{
    double s = 0.0;
    CSM_T M = -CSM_INF_T;
    int fuse = 1;
    for (ptrdiff_t j = 0; j < K; j += CSM_LONG_CHUNK) {
        const ptrdiff_t n = K - j < CSM_LONG_CHUNK ? K - j : CSM_LONG_CHUNK;
        /* The next chunk (or the next row's first, past the last one), where
         * pf: a prefetch never faults (see CSM_PREFETCH_BYTES). */
        const char *next = pf ? (const char *)((uintptr_t)(x + j + CSM_LONG_CHUNK)) : NULL;
        const char *next_y = y && pf ? (const char *)((uintptr_t)(y + j + CSM_LONG_CHUNK)) : NULL;
        CSM_FN(csm_long_chunk)(x + j, mk ? mk + j : NULL, y ? y + j : NULL, n, j > 0, &s, &M, &fuse,
                               mc ? mc + j / CSM_LONG_CHUNK : NULL, next, next_y, o);
    }
    *max_out = M;
    return s;
}

static CSM_INLINE CSM_TARGET void CSM_FN(csm_row_scale)(CSM_T *y, CSM_T c, ptrdiff_t K)
{
#pragma omp simd
    for (ptrdiff_t i = 0; i < K; ++i)
        y[i] *= c;
}

/* dst[j] = src[j] with non-temporal stores where the ISA has them. For
 * outputs larger than the caches a regular store first reads the line it
 * writes (read-for-ownership); a streaming store does not, so the output costs
 * DRAM one write instead of a read and a write (a 38 MB fill measured 6.1 ms
 * with regular AVX2 stores, 2.0 ms streamed). The caller ends the kernel with
 * CSM_STREAM_FENCE(). */
#if defined(__x86_64__) && CSM_X86_DISPATCH
  #if CSM_ISA_ID == 2
    #define CSM_VW (64 / (int)sizeof(CSM_T))
    #if CSM_F32
      #define CSM_VSTREAM(d, s) _mm512_stream_ps((d), _mm512_loadu_ps(s))
    #else
      #define CSM_VSTREAM(d, s) _mm512_stream_pd((d), _mm512_loadu_pd(s))
    #endif
  #elif CSM_ISA_ID == 1
    #define CSM_VW (32 / (int)sizeof(CSM_T))
    #if CSM_F32
      #define CSM_VSTREAM(d, s) _mm256_stream_ps((d), _mm256_loadu_ps(s))
    #else
      #define CSM_VSTREAM(d, s) _mm256_stream_pd((d), _mm256_loadu_pd(s))
    #endif
  #else
    #define CSM_VW (16 / (int)sizeof(CSM_T))
    #if CSM_F32
      #define CSM_VSTREAM(d, s) _mm_stream_ps((d), _mm_loadu_ps(s))
    #else
      #define CSM_VSTREAM(d, s) _mm_stream_pd((d), _mm_loadu_pd(s))
    #endif
  #endif
#endif

static CSM_INLINE CSM_TARGET void CSM_FN(csm_stream_copy)(CSM_T *dst, const CSM_T *src, ptrdiff_t n)
{
    ptrdiff_t j = 0;
#ifdef CSM_VW
    /* Streaming stores need aligned addresses: scalar stores up to the first
     * aligned element, then whole vectors, then the tail. */
    while (j < n && ((uintptr_t)(dst + j) % (CSM_VW * sizeof(CSM_T))) != 0) {
        dst[j] = src[j];
        ++j;
    }
    for (; j + CSM_VW <= n; j += CSM_VW)
        CSM_VSTREAM(dst + j, src + j);
#endif
    for (; j < n; ++j)
        dst[j] = src[j];
}
#undef CSM_VW
#undef CSM_VSTREAM

/* ---- The lane layout ------------------------------------------------------
 * A group of rows is held in a scratch buffer one row per SIMD lane:
 * buf[j * lanes + l] is column j of row l. The arithmetic then runs across
 * rows, so every loop is as long as the group whatever K is, and no
 * horizontal reduction is needed. Two kinds of rows use it:
 *  - short rows (K <= CSM_SMALL_K) with unit column stride: the row loops
 *    would spend most of their time in scalar remainders and horizontal
 *    reductions (measured: 519 instructions per K = 10 row with AVX2, against
 *    91 here); the group is transposed in and out;
 *  - rows without unit column stride (Fortran order, column-strided views,
 *    x.T with axis=0): there the rows of a group usually lie next to each
 *    other in memory (row stride 1), so column j of the group is one
 *    contiguous load and the "transpose" is a copy.
 * Each lane's arithmetic is the same sequence (sequential over j) whatever
 * the lane count, so `lanes` only changes the speed and a row's result never
 * depends on the rows around it. */

/* A group's transposes between its rows (unit column stride) and the lane
 * layout: CSM_LANES_IN(buf, x, ldx, K, lanes) and CSM_LANES_OUT(y, ldy,
 * buf, K, lanes), both csm_lanes_move. Under AVX2 and AVX-512 a whole group (lanes ==
 * CSM_LANES) moves in square tiles of the ISA's registers (CSM_LT: AVX2
 * 8 x 8 float32 and 4 x 4 float64, AVX-512 16 x 16 and 8 x 8): a row's
 * piece per load, a column's per store, transposed by unpacks and lane
 * permutes; a row's last piece by a masked load (which reads nothing past
 * the row) and, under AVX2, split stores (csm_tv_store_first).
 * Element by element, the two transposes were about half of softmax 64 x
 * 10 float32's kernel time (perf, AVX2, AMD Zen 3: a scalar load and store
 * per element). AVX-512 took AVX2's 256-bit tiles at first: each of buf's
 * rows was then two 256-bit stores that the kernels' 512-bit loads read
 * right after, which the store buffer cannot forward (the load waits for
 * both stores to reach L1), and the 8 x 8 tile takes 3 shuffles per 8
 * elements where 16 x 16 takes 4 per 16 (port 5 on Intel runs them all).
 * Intel Xeon (AVX-512), one thread, out=, 2^17 elements, best of 4-5
 * alternating processes, ns per element, 256-bit -> 512-bit tiles:
 * float32 softmax K = 8 0.577 -> 0.502, K = 10 0.575 -> 0.504, K = 16
 * 0.480 -> 0.430, K = 31 0.551 -> 0.514; log_softmax K = 8 0.83 -> 0.66;
 * softmax_cross_entropy K = 10 1.285 -> 1.170, K = 31 0.766 -> 0.719;
 * float64 softmax K = 8 1.036 -> 0.851, K = 16 1.107 -> 0.883, K = 24
 * 1.149 -> 0.933. Not everywhere: float64 rows of 28-31 elements end in a
 * tile of 4-7 columns, and softmax_cross_entropy took 3-10% longer there
 * (K = 31 1.252 -> 1.379; softmax 1.096 -> 1.147). 512-bit tiles in and
 * 256-bit ones out gave back most of the gains (float32 softmax K = 10
 * 0.553). softmax_backward's rows of K <= 12 were even. Pure moves: no
 * value changes. */
#if CSM_X86_DISPATCH && CSM_ISA_ID >= 1
static CSM_INLINE CSM_TARGET void CSM_FN(csm_tile_transpose)(CSM_TV *r)
{
  #if CSM_F32
    const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
    r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
    r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
    r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
    r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
    r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
    r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
    r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
  #else
    const __m256d t0 = _mm256_unpacklo_pd(r[0], r[1]), t1 = _mm256_unpackhi_pd(r[0], r[1]);
    const __m256d t2 = _mm256_unpacklo_pd(r[2], r[3]), t3 = _mm256_unpackhi_pd(r[2], r[3]);
    r[0] = _mm256_permute2f128_pd(t0, t2, 0x20);
    r[1] = _mm256_permute2f128_pd(t1, t3, 0x20);
    r[2] = _mm256_permute2f128_pd(t0, t2, 0x31);
    r[3] = _mm256_permute2f128_pd(t1, t3, 0x31);
  #endif
}
  #if CSM_ISA_ID == 2
    #if CSM_F32
      #define CSM_XV_LANES_(p, q, imm) _mm512_shuffle_f32x4((p), (q), (imm))
    #else
      #define CSM_XV_LANES_(p, q, imm) _mm512_shuffle_f64x2((p), (q), (imm))
    #endif
/* One stage of the AVX-512 tile: in each block of 2h registers, register c
 * and c + h (c < h) exchange 128-bit lanes: 0x88 takes lanes 0 and 2 of
 * each source, 0xDD lanes 1 and 3. */
static CSM_INLINE CSM_TARGET void CSM_FN(csm_xtile_lanes)(CSM_XV *dst, const CSM_XV *src, int h)
{
    for (int b = 0; b < CSM_XVW; b += 2 * h)
        for (int c = b; c < b + h; ++c) {
            dst[c] = CSM_XV_LANES_(src[c], src[c + h], 0x88);
            dst[c + h] = CSM_XV_LANES_(src[c], src[c + h], 0xDD);
        }
}

/* The AVX-512 tile: unpacks within 128-bit lanes, then 128-bit lanes
 * exchanged (csm_xtile_lanes). */
static CSM_INLINE CSM_TARGET void CSM_FN(csm_xtile_transpose)(CSM_XV *r)
{
    CSM_XV t[CSM_XVW], v[CSM_XVW];
    for (int i = 0; i < CSM_XVW / 2; ++i) {
        t[2 * i] = CSM_XV_(unpacklo)(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = CSM_XV_(unpackhi)(r[2 * i], r[2 * i + 1]);
    }
    #if CSM_F32
    /* t[2i + e], 128-bit lane L: rows 2i and 2i + 1 interleaved, columns
     * 4L + 2e and 4L + 2e + 1; u[4i + c], lane L: rows 4i .. 4i + 3, column
     * 4L + c */
    CSM_XV u[CSM_XVW];
    for (int i = 0; i < 4; ++i) {
        u[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
        u[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
        u[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
        u[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
    }
    CSM_FN(csm_xtile_lanes)(v, u, 4);
    CSM_FN(csm_xtile_lanes)(r, v, 8);
    #else
    /* t[2i + e], 128-bit lane L: rows 2i and 2i + 1, column 2L + e */
    CSM_FN(csm_xtile_lanes)(v, t, 2);
    CSM_FN(csm_xtile_lanes)(r, v, 4);
    #endif
}
    #define CSM_LT CSM_XV
    #define CSM_LTW CSM_XVW
    #define CSM_LT_LOADU(p) CSM_XV_(loadu)(p)
    #define CSM_LT_LOADN(p, n) CSM_XV_LOADM((p), CSM_XM_FIRST(n))
    #define CSM_LT_STOREN(p, n, v) \
        ((n) >= CSM_XVW ? CSM_XV_(storeu)((p), (v)) : CSM_XV_STOREN((p), (n), (v)))
    #define CSM_LT_ZERO() CSM_XV_(setzero)()
    #define CSM_LT_STOREU(p, v) CSM_XV_(storeu)((p), (v))
    #define CSM_LT_TRANSPOSE(r) CSM_FN(csm_xtile_transpose)(r)
  #else
    #define CSM_LT CSM_TV
    #define CSM_LTW CSM_TW
    #define CSM_LT_LOADU(p) CSM_TV_(loadu)(p)
    #define CSM_LT_LOADN(p, n) CSM_TV_(maskload)((p), CSM_TM_FIRST(n))
    #define CSM_LT_STOREN(p, n, v) CSM_FN(csm_tv_store_first)((p), (n), (v))
    #define CSM_LT_ZERO() CSM_TV_(setzero)()
    #define CSM_LT_STOREU(p, v) CSM_TV_(storeu)((p), (v))
    #define CSM_LT_TRANSPOSE(r) CSM_FN(csm_tile_transpose)(r)
  #endif
#endif

/* in = 1: the group's rows (row l at x + l ld) into the lane layout buf,
 * column j at buf + j cs (cs = lanes in a scratch; the column stride of a
 * Fortran-ordered array in csm_long_rows_strided); in = 0: back. A
 * constant at every call, so each copy keeps one way. */
static CSM_INLINE CSM_TARGET void CSM_FN(csm_lanes_move)(CSM_T *x, ptrdiff_t ld, CSM_T *buf,
                                                        ptrdiff_t cs, ptrdiff_t K,
                                                        const ptrdiff_t lanes, const int in)
{
#if CSM_X86_DISPATCH && CSM_ISA_ID >= 1
    if (lanes == CSM_LANES) {
        for (ptrdiff_t h = 0; h < CSM_LANES; h += CSM_LTW)
            for (ptrdiff_t c0 = 0; c0 < K; c0 += CSM_LTW) {
                const ptrdiff_t n = K - c0 < CSM_LTW ? K - c0 : CSM_LTW;
                CSM_LT r[CSM_LTW];
                for (ptrdiff_t i = 0; i < CSM_LTW; ++i) {
                    CSM_T *row = x + (h + i) * ld + c0, *col = buf + (c0 + i) * cs + h;
                    if (in)
                        r[i] = n == CSM_LTW ? CSM_LT_LOADU(row) : CSM_LT_LOADN(row, n);
                    else
                        r[i] = i < n ? CSM_LT_LOADU(col) : CSM_LT_ZERO();
                }
                CSM_LT_TRANSPOSE(r);
                for (ptrdiff_t i = 0; i < CSM_LTW; ++i) {
                    CSM_T *row = x + (h + i) * ld + c0, *col = buf + (c0 + i) * cs + h;
                    if (!in)
                        CSM_LT_STOREN(row, n, r[i]);
                    else if (i < n)
                        CSM_LT_STOREU(col, r[i]);
                }
            }
        return;
    }
#endif
    for (ptrdiff_t l = 0; l < lanes; ++l)
        for (ptrdiff_t j = 0; j < K; ++j) {
            if (in)
                buf[j * cs + l] = x[l * ld + j];
            else
                x[l * ld + j] = buf[j * cs + l];
        }
}

#ifndef CSM_LANES_IN /* the same for every element type */
#define CSM_LANES_IN(buf, x, ldx, K, lanes) \
    CSM_FN(csm_lanes_move)((CSM_T *)(x), (ldx), (buf), (lanes), (K), (lanes), 1)
#define CSM_LANES_OUT(y, ldy, buf, K, lanes) \
    CSM_FN(csm_lanes_move)((y), (ldy), (CSM_T *)(buf), (lanes), (K), (lanes), 0)
#endif

/* The maxima m of the lanes rows held in buf (column j at buf + j lanes),
 * and `normal` for their exps (csm_exp_v_dom) where the ISA tests: the
 * minima beside the maxima, as csm_group_rows_max_normal keeps them for
 * the row kernels. Tested register by register, a fifth of the arguments
 * -inf at random (a mask's) mispredicted the branch in about one register
 * in three: AVX2, float32, one thread, 100000 x 10, ms: softmax(where=),
 * a random mask, 0.95 -> 0.76-0.80 (all-true 0.70-0.73); softmax of rows a
 * fifth -inf 0.61 -> 0.47 (without -inf 0.46). AVX-512 has no test. */
static CSM_INLINE CSM_TARGET int CSM_FN(csm_lanes_max_normal)(const CSM_T *buf, ptrdiff_t K, CSM_T *m,
                                                              const ptrdiff_t lanes)
{
    CSM_T mn[CSM_LANES]; /* a min per register beside each max: about free */
#pragma omp simd
    for (ptrdiff_t l = 0; l < lanes; ++l)
        m[l] = mn[l] = buf[l];
    for (ptrdiff_t j = 1; j < K; ++j) {
        const CSM_T *bj = buf + j * lanes;
#pragma omp simd
        for (ptrdiff_t l = 0; l < lanes; ++l) {
            m[l] = bj[l] > m[l] ? bj[l] : m[l];
            mn[l] = bj[l] < mn[l] ? bj[l] : mn[l];
        }
    }
#if CSM_EXP_V_NORMAL
    if (lanes == CSM_LANES) {
        /* min - max below the bound where some x - max is (NaN: never). */
        int below = 0;
#pragma omp simd reduction(| : below)
        for (ptrdiff_t l = 0; l < CSM_LANES; ++l)
            below |= mn[l] - m[l] < CSM_EXP_NORMAL_LO;
        return below ? -1 : 1;
    }
#endif
    return 0;
}

/* The rows of an op whose row scalar is NaN (c[l], row l at o + l rs,
 * element j at j cs): the NaN rows of the semantics (a NaN or +inf in x, a
 * row of -inf; for the backward passes a NaN sum of g * y or of g), where
 * every output is NaN. Each is rewritten the quiet NaN at every element
 * (+0 where the masked kernels' mask masks it). Which NaN
 * an operation returns where two of its operands are NaN (sign, payload)
 * depends on its form (which operand the instruction overwrites, which one
 * a commutative product takes first), and the compiler picks a form at
 * each site by the registers around it: a streamed row's boundary register
 * took g's NaN where the row's loop took exp's, and a Fortran-ordered
 * input's lanes took another NaN than its C-ordered copy's rows. Every site
 * of an op (rows, lanes, streamed, long, masked) writes its output and then
 * calls this (the masked rows, whose mask is widened or the caller's bytes,
 * take its one-row rule, CSM_NAN_ROW_), so their bits agree. (log_softmax
 * and logsumexp make their row scalars the quiet NaN instead, csm_nan_q and
 * csm_nan_max: their outputs take no commutative operation of two NaNs.)
 * Where c is not NaN, at most one operand of each output is a NaN, and
 * every form returns it. */
/* One such row (o, column stride cs): NaN where its element takes part (mk
 * NULL, or mk[j] nonzero, a widened mask or the caller's bytes), +0 where
 * it is masked. */
#define CSM_NAN_ROW_(o, cs, K, mk)                                                            \
    for (ptrdiff_t j_ = 0; j_ < (K); ++j_)                                                    \
        (o)[j_ * (cs)] = !(mk) || (mk)[j_] ? (CSM_T)NAN : (CSM_T)0
static CSM_COLD void CSM_FN(csm_nan_row)(CSM_T *o, ptrdiff_t cs, ptrdiff_t K)
{
    CSM_NAN_ROW_(o, cs, K, (const CSM_MW_T *)NULL);
}
/* Whether v[0..n) holds a NaN. Under AVX2 and AVX-512 a compare per
 * register and a mask test; a vectorised sum of v[l] * 0 in its place (a
 * chain of adds in order, and the horizontal add) took logsumexp and
 * log_softmax at 1024 x 10 4-14% longer (one thread, in cache; an int
 * reduction of scalar compares much the same). */
static CSM_INLINE CSM_TARGET int CSM_FN(csm_any_nan)(const CSM_T *v, ptrdiff_t n)
{
    int any = 0;
    ptrdiff_t l = 0;
#if CSM_EXP_V_NORMAL
    for (; l < n - n % CSM_XVW; l += CSM_XVW) {
        const CSM_XV x = CSM_XV_(loadu)(v + l);
        any |= CSM_XV_ANY_NAN_(x);
    }
#endif
    for (; l < n; ++l)
        any |= v[l] != v[l];
    return any;
}

/* One row's test, c by value (through memory, the pipelined rows of
 * softmax_backward took 3-5% longer), the rewrite out of line. */
static CSM_INLINE CSM_TARGET void CSM_FN(csm_nan_row_if)(CSM_T *o, ptrdiff_t cs, ptrdiff_t K, CSM_T c)
{
    if (__builtin_expect(c != c, 0))
        CSM_FN(csm_nan_row)(o, cs, K);
}
/* A lane group's: csm_any_nan over c, the rewrite out of line. Scalar
 * compares, in the loop that takes c or apart, took softmax_backward at
 * 1024 x 10 and softmax in Fortran order 3-9% longer (one thread, in
 * cache). */
static CSM_COLD void CSM_FN(csm_nan_rows_fix)(CSM_T *o, ptrdiff_t rs, ptrdiff_t cs, ptrdiff_t K,
                                             const CSM_T *c, ptrdiff_t n)
{
    for (ptrdiff_t l = 0; l < n; ++l)
        if (c[l] != c[l])
            CSM_FN(csm_nan_row)(o + l * rs, cs, K);
}
static CSM_INLINE CSM_TARGET void CSM_FN(csm_nan_rows)(CSM_T *o, ptrdiff_t rs, ptrdiff_t cs, ptrdiff_t K,
                                                       const CSM_T *c, ptrdiff_t n)
{
    if (__builtin_expect(CSM_FN(csm_any_nan)(c, n), 0))
        CSM_FN(csm_nan_rows_fix)(o, rs, cs, K, c, n);
}

/* x, or the quiet NaN where x is a NaN: logsumexp's value, log_softmax's
 * log of the sum. */
static CSM_INLINE CSM_T CSM_FN(csm_nan_q)(CSM_T x)
{
    return x != x ? (CSM_T)NAN : x;
}

/* log_softmax's max m in a row whose log of the sum l is NaN (a NaN row):
 * the quiet NaN, whatever m was, so that (x - m) - l is x's own NaN where
 * x is one and the quiet NaN elsewhere, on every path. A path's max may
 * skip a NaN that another's takes, and x - m at x = m = +inf makes the
 * machine's NaN, not l's. */
static CSM_INLINE CSM_T CSM_FN(csm_nan_max)(CSM_T m, CSM_T l)
{
    return l != l ? (CSM_T)NAN : m;
}

/* The same for a lane group's maxima m and logs of the sums c, after
 * csm_any_nan: the select in the loop that takes c did not vectorise there
 * (GCC unrolled it into a compare and a branch per lane) and took
 * log_softmax at 1024 x 10 and 1024 x 16 3-9% longer (one thread, in
 * cache). */
static CSM_COLD void CSM_FN(csm_nan_lanes_fix)(CSM_T *m, CSM_T *c, ptrdiff_t n)
{
    for (ptrdiff_t l = 0; l < n; ++l) {
        m[l] = CSM_FN(csm_nan_max)(m[l], c[l]);
        c[l] = CSM_FN(csm_nan_q)(c[l]);
    }
}
static CSM_INLINE CSM_TARGET void CSM_FN(csm_nan_lanes)(CSM_T *m, CSM_T *c, ptrdiff_t n)
{
    if (__builtin_expect(CSM_FN(csm_any_nan)(c, n), 0))
        CSM_FN(csm_nan_lanes_fix)(m, c, n);
}

/* v[l] the quiet NaN where NaN, for l < n, after the same test:
 * logsumexp's logs of the sums, in double, before m + log. */
static CSM_COLD void CSM_FN(csm_nan_d_fix)(double *v, ptrdiff_t n)
{
    for (ptrdiff_t l = 0; l < n; ++l)
        v[l] = v[l] != v[l] ? (double)NAN : v[l];
}
static CSM_INLINE CSM_TARGET void CSM_FN(csm_nan_d)(double *v, ptrdiff_t n)
{
    if (__builtin_expect(CSM_PASTE(csm_any_nan, CSM_PASTE(f64, CSM_ISA))(v, n), 0))
        CSM_FN(csm_nan_d_fix)(v, n);
}

/* softmax (log_out = 0) or log_softmax (log_out = 1) of the lanes rows held
 * in buf (K <= CSM_SMALL_K), in place. The sums follow CSM_PARTS and
 * CSM_SUM_BLOCK exactly as the row kernels take them, written out for short
 * rows: partial p holds elements p and p + 16, so the sum is the fixed tree
 * of those pairs, added in the element type as within a block. With K a
 * constant at the call sites, the terms past K fold away. */
static CSM_INLINE CSM_TARGET void CSM_FN(csm_lanes_softmax_buf)(
    CSM_T *buf, ptrdiff_t K, int log_out, const ptrdiff_t lanes)
{
    /* Lane loops are innermost and of fixed length: GCC does not vectorise
     * an outer loop over lanes that contains several inner loops. */
    CSM_T m[CSM_LANES], c[CSM_LANES];
    CSM_T ebuf[CSM_SMALL_K * CSM_LANES]; /* log_softmax's exp terms */
    const int normal = CSM_FN(csm_lanes_max_normal)(buf, K, m, lanes);
#define CSM_E(e, j) e[(j) * lanes + l]
#define CSM_TREE CSM_TREE16
    /* Two branches, not one loop with selects: log_out is not a constant here. */
    if (!log_out) {
        for (ptrdiff_t j = 0; j < K; ++j) {
            CSM_T *bj = buf + j * lanes;
            CSM_FN(csm_exp_lanes_n)(bj, bj, m, 0, lanes, 0, normal);
        }
#define CSM_PAIR(p) ((p) >= K ? (CSM_T)0 : (p) + 16 >= K ? CSM_E(buf, p) \
    : CSM_E(buf, p) + CSM_E(buf, (p) + 16))
#pragma omp simd
        for (ptrdiff_t l = 0; l < lanes; ++l)
            c[l] = (CSM_T)(1.0 / (double)CSM_TREE(CSM_PAIR));
#undef CSM_PAIR
        for (ptrdiff_t j = 0; j < K; ++j) {
            CSM_T *bj = buf + j * lanes;
#pragma omp simd
            for (ptrdiff_t l = 0; l < lanes; ++l)
                bj[l] *= c[l];
        }
        CSM_FN(csm_nan_rows)(buf, 1, lanes, K, c, lanes);
    } else {
        for (ptrdiff_t j = 0; j < K; ++j) {
            const CSM_T *bj = buf + j * lanes;
            CSM_T *ej = ebuf + j * lanes;
            CSM_FN(csm_exp_lanes_n)(ej, bj, m, 0, lanes, 0, normal);
        }
#define CSM_PAIR(p) ((p) >= K ? (CSM_T)0 : (p) + 16 >= K ? CSM_E(ebuf, p) \
    : CSM_E(ebuf, p) + CSM_E(ebuf, (p) + 16))
#pragma omp simd
        for (ptrdiff_t l = 0; l < lanes; ++l)
            c[l] = (CSM_T)CSM_PASTE(csm_log, CSM_PASTE(f64, CSM_ISA))((double)CSM_TREE(CSM_PAIR));
#undef CSM_PAIR
        CSM_FN(csm_nan_lanes)(m, c, lanes);
        for (ptrdiff_t j = 0; j < K; ++j) {
            CSM_T *bj = buf + j * lanes;
#pragma omp simd
            for (ptrdiff_t l = 0; l < lanes; ++l)
                bj[l] = (bj[l] - m[l]) - c[l];
        }
    }
#undef CSM_TREE
#undef CSM_E
}

/* Short rows with unit column stride: transpose a group in, compute, and
 * transpose it out. */
static CSM_INLINE CSM_TARGET void CSM_FN(csm_small_group)(
    const CSM_T *x, ptrdiff_t ldx, CSM_T *y, ptrdiff_t ldy, ptrdiff_t K,
    int log_out, const ptrdiff_t lanes)
{
    CSM_T buf[CSM_SMALL_K * CSM_LANES];
    CSM_LANES_IN(buf, x, ldx, K, lanes);
    CSM_FN(csm_lanes_softmax_buf)(buf, K, log_out, lanes);
    CSM_LANES_OUT(y, ldy, buf, K, lanes);
}

static CSM_TARGET void CSM_FN(csm_small_rows)(
    const CSM_T *x, ptrdiff_t ldx, CSM_T *y, ptrdiff_t ldy, ptrdiff_t rows, ptrdiff_t K,
    int log_out)
{
    ptrdiff_t r = 0;
    /* A constant K unrolls the transposes into plain loads and stores: they
     * were 57% of the instructions at K = 10 (callgrind), with loop overhead
     * on every element. */
    for (; r + CSM_LANES <= rows; r += CSM_LANES) {
        const CSM_T *xg = x + r * ldx;
        CSM_T *yg = y + r * ldy;
        switch (K) {
#define CSM_K_CASE(kk) case kk: CSM_FN(csm_small_group)(xg, ldx, yg, ldy, kk, log_out, CSM_LANES); break;
        CSM_SMALL_K_CASES(CSM_K_CASE)
#undef CSM_K_CASE
        default: /* K <= CSM_SMALL_K = 32 here */
            break;
        }
    }
    for (; r < rows; ++r)
        CSM_FN(csm_small_group)(x + r * ldx, ldx, y + r * ldy, ldy, K, log_out, 1);
}

/* The backward passes of a group of short rows (K <= CSM_SMALL_BWD_K) with unit
 * column stride, in the lane layout: y and g transposed in, the row's sum of
 * g * y (softmax) or of g (log_softmax) per lane, the output computed in
 * place of y and transposed out. The sum follows csm_row_sum's order written
 * out for short rows: partial p is 0 + t_p (+ t_{p + 16}), in double, and the
 * partials are combined by csm_tree_sum's tree; the output is the row
 * kernels' formula. So the bits are those of the row path (tested), at a
 * fraction of the cost: the row path spends its time in remainders and the
 * per-row reduction at K = 10 (1024 x 10 float32 took 12.3 us, Numba's plain
 * prange loop 11.5 us and a 3-array add 4.3 us on one AVX-512 thread). */
static CSM_INLINE CSM_TARGET void CSM_FN(csm_small_bwd_buf)(CSM_T *yb, const CSM_T *gb, CSM_T *c,
                                                           ptrdiff_t K, int logf, const ptrdiff_t lanes)
{
#define CSM_E(e, j) e[(j) * lanes + l]
#define CSM_ACC(j, acc) (logf ? (acc) + (double)CSM_E(gb, j) \
    : CSM_FMA((double)CSM_E(gb, j), (double)CSM_E(yb, j), (acc)))
#define CSM_PAIR(p) ((p) >= K ? 0.0 : (p) + 16 >= K ? CSM_ACC(p, 0.0) \
    : CSM_ACC((p) + 16, CSM_ACC(p, 0.0)))
#pragma omp simd
    for (ptrdiff_t l = 0; l < lanes; ++l)
        c[l] = (CSM_T)CSM_TREE16(CSM_PAIR);
#undef CSM_PAIR
#undef CSM_ACC
    /* Two branches, not one loop with selects: an if-converted loop would
     * compute log_softmax's exp for softmax too (see csm_lane_group). */
    if (logf) {
        for (ptrdiff_t j = 0; j < K; ++j) {
            CSM_FN(csm_exp_lanes)(yb + j * lanes, yb + j * lanes, NULL, 0, lanes, 1);
#pragma omp simd
            for (ptrdiff_t l = 0; l < lanes; ++l)
                CSM_E(yb, j) = CSM_E(gb, j) - CSM_E(yb, j) * c[l];
        }
    } else {
        for (ptrdiff_t j = 0; j < K; ++j) {
#pragma omp simd
            for (ptrdiff_t l = 0; l < lanes; ++l)
                CSM_E(yb, j) = CSM_E(yb, j) * (CSM_E(gb, j) - c[l]);
        }
    }
#undef CSM_E
}

static CSM_INLINE CSM_TARGET void CSM_FN(csm_small_bwd_group)(
    const CSM_T *y, ptrdiff_t ldy, const CSM_T *g, ptrdiff_t ldg, CSM_T *out, ptrdiff_t ldo,
    ptrdiff_t K, int logf, const ptrdiff_t lanes)
{
    CSM_T yb[CSM_SMALL_BWD_K * CSM_LANES], gb[CSM_SMALL_BWD_K * CSM_LANES], c[CSM_LANES];
    CSM_LANES_IN(yb, y, ldy, K, lanes);
    CSM_LANES_IN(gb, g, ldg, K, lanes);
    CSM_FN(csm_small_bwd_buf)(yb, gb, c, K, logf, lanes);
    CSM_LANES_OUT(out, ldo, yb, K, lanes);
    CSM_FN(csm_nan_rows)(out, ldo, 1, K, c, lanes);
}

/* A group of CSM_LANES rows with a constant K (which unrolls the transposes,
 * see csm_small_rows). */
static CSM_INLINE CSM_TARGET void CSM_FN(csm_small_bwd_switch)(
    const CSM_T *y, ptrdiff_t ldy, const CSM_T *g, ptrdiff_t ldg, CSM_T *out, ptrdiff_t ldo,
    ptrdiff_t K, int logf)
{
    switch (K) {
#define CSM_K_CASE(kk) case kk: CSM_FN(csm_small_bwd_group)(y, ldy, g, ldg, out, ldo, kk, logf, CSM_LANES); break;
    CSM_SMALL_BWD_K_CASES(CSM_K_CASE)
#undef CSM_K_CASE
    default: /* K <= CSM_SMALL_BWD_K here */
        break;
    }
}

/* The last rows (fewer than CSM_LANES) go through a whole group padded with
 * zero rows, not a one-lane group: a one-lane group is scalar code, and GCC
 * contracts the float64 products of the sum into FMAs in the vector code but
 * not there, so the bits would depend on a row's position. */
static CSM_TARGET void CSM_FN(csm_small_bwd_rows)(
    const CSM_T *y, ptrdiff_t ldy, const CSM_T *g, ptrdiff_t ldg, CSM_T *out, ptrdiff_t ldo,
    ptrdiff_t rows, ptrdiff_t K, int logf)
{
    ptrdiff_t r = 0;
    for (; r + CSM_LANES <= rows; r += CSM_LANES)
        CSM_FN(csm_small_bwd_switch)(y + r * ldy, ldy, g + r * ldg, ldg, out + r * ldo, ldo, K, logf);
    if (r < rows) {
        CSM_T ty[CSM_LANES * CSM_SMALL_BWD_K], tg[CSM_LANES * CSM_SMALL_BWD_K];
        const ptrdiff_t n = rows - r;
        for (ptrdiff_t i = 0; i < CSM_LANES * K; ++i)
            ty[i] = tg[i] = 0;
        for (ptrdiff_t l = 0; l < n; ++l)
            for (ptrdiff_t j = 0; j < K; ++j) {
                ty[l * K + j] = y[(r + l) * ldy + j];
                tg[l * K + j] = g[(r + l) * ldg + j];
            }
        CSM_FN(csm_small_bwd_switch)(ty, K, tg, K, ty, K, K, logf);
        for (ptrdiff_t l = 0; l < n; ++l)
            for (ptrdiff_t j = 0; j < K; ++j)
                out[(r + l) * ldo + j] = ty[l * K + j];
    }
}

/* ---- Short backward rows, one row per register set -------------------------
 * AVX2 and AVX-512, rows of CSM_VEC_BWD_MIN <= K <= CSM_VEC_BWD_K with unit
 * column stride. Each row is loaded whole by masked loads (zeros past K) into
 * one or two sets of CSM_NV_ native vectors (16 elements a set: one AVX-512
 * float register, up to four AVX2 double ones), its partials formed in
 * double, summed by the fixed tree as a horizontal sum, and the output
 * written by masked stores. The arithmetic is csm_row_sum's and the row
 * kernels' for K <= 2 * CSM_PARTS (see csm_vec_partials), the pad partials
 * are +0, and the tree is CSM_TREE16 (vector halves first, then halves
 * within a vector); so the bits are those of every other path (tested). Against the lane path
 * (csm_small_bwd_rows) it drops the transposes in and out: see CSM_VEC_BWD_K
 * in _rows.h for the measurements. Native vectors only: GCC keeps a 16-float
 * generic vector in memory under AVX2 and moves it element by element. */
#if defined(__x86_64__) && CSM_X86_DISPATCH && CSM_ISA_ID >= 1
#define CSM_VEC_BWD 1
#define CSM_VEC_BWD_HI_ (CSM_ISA_ID == 1 && !CSM_F32 ? CSM_VEC_BWD_K_AVX2_F64 : CSM_VEC_BWD_K)
#define CSM_VB_ (CSM_ISA_ID == 2 ? 64 : 32)            /* bytes per native vector */
#define CSM_VL_ (CSM_VB_ / (int)sizeof(CSM_T))          /* elements per vector */
#define CSM_NV_ (16 / CSM_VL_)                          /* vectors per row */
#define CSM_DL_ (CSM_VB_ / 8)                           /* doubles per vector */
#define CSM_ND_ (16 / CSM_DL_)                          /* double vectors of partials */
typedef CSM_T CSM_FN(csm_vt_) __attribute__((vector_size(CSM_VB_)));
typedef double CSM_FN(csm_vd_) __attribute__((vector_size(CSM_VB_)));
#define CSM_VT_ CSM_FN(csm_vt_)
#define CSM_VD_ CSM_FN(csm_vd_)
#if CSM_ISA_ID == 2
  /* Lane masks for the first n lanes of each vector (n may be <= 0 or >= VL). */
  #define CSM_MASK_T_ unsigned
  #define CSM_MASK_(n) ((n) >= CSM_VL_ ? (1u << CSM_VL_) - 1u : (n) <= 0 ? 0u : (1u << (n)) - 1u)
  #if CSM_F32
    #define CSM_VLOAD_(p, m) ((CSM_VT_)_mm512_maskz_loadu_ps((__mmask16)(m), (p)))
    #define CSM_VSTORE_(p, m, n, v) _mm512_mask_storeu_ps((p), (__mmask16)(m), (__m512)(v))
  #else
    #define CSM_VLOAD_(p, m) ((CSM_VT_)_mm512_maskz_loadu_pd((__mmask8)(m), (p)))
    #define CSM_VSTORE_(p, m, n, v) _mm512_mask_storeu_pd((p), (__mmask8)(m), (__m512d)(v))
  #endif
#else
  #define CSM_MASK_T_ __m256i
  #if CSM_F32
    #define CSM_MASK_(n) _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n)),                \
                                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
    #define CSM_VLOAD_(p, m) ((CSM_VT_)_mm256_maskload_ps((p), (m)))
    #define CSM_VSTORE_(p, m, n, v) CSM_XV_STOREN((p), (n), (__m256)(v))
  #else
    #define CSM_MASK_(n) _mm256_cmpgt_epi64(_mm256_set1_epi64x((long long)(n)),         \
                                            _mm256_setr_epi64x(0, 1, 2, 3))
    #define CSM_VLOAD_(p, m) ((CSM_VT_)_mm256_maskload_pd((p), (m)))
    #define CSM_VSTORE_(p, m, n, v) CSM_XV_STOREN((p), (n), (__m256d)(v))
  #endif
#endif

/* Double vector q of a row's partials: q % CSM_ND_ names the partials
 * (slot), q / CSM_ND_ the set of 16 elements. fma(g, y, 0) or 0 + g for the
 * first set (the `+ 0.0` turns a product's -0 into +0, as the fma does),
 * fma(g, y, partial) or partial + g for the second (their pad lanes add +0
 * or fma(0, 0, x), which leave x as it is). So no partial is ever -0. */
#if CSM_F32
  /* Each float vector holds two double vectors' worth; intrinsics, because
   * GCC splits __builtin_convertvector of 4 floats into two conversions
   * through the stack under AVX2. */
  #if CSM_ISA_ID == 2
    #define CSM_H_(x, h) ((CSM_VD_)_mm512_cvtps_pd((h) ? _mm512_extractf32x8_ps((__m512)(x), 1) \
                                                        : _mm512_castps512_ps256((__m512)(x))))
  #else
    #define CSM_H_(x, h) ((CSM_VD_)_mm256_cvtps_pd((h) ? _mm256_extractf128_ps((__m256)(x), 1) \
                                                        : _mm256_castps256_ps128((__m256)(x))))
  #endif
#else
  #define CSM_H_(x, h) ((CSM_VD_)(x))
#endif
#if CSM_ISA_ID == 2
  #define CSM_DFMA_(a, b, c) ((CSM_VD_)_mm512_fmadd_pd((__m512d)(a), (__m512d)(b), (__m512d)(c)))
#else
  #define CSM_DFMA_(a, b, c) ((CSM_VD_)_mm256_fmadd_pd((__m256d)(a), (__m256d)(b), (__m256d)(c)))
#endif
static CSM_INLINE CSM_TARGET void CSM_FN(csm_vec_partials)(CSM_VD_ *d, const CSM_VT_ *gv,
                                                         const CSM_VT_ *yv, const int logf,
                                                         const int q)
{
    enum { DPV = CSM_ND_ / CSM_NV_ };               /* double vectors per element vector */
    const CSM_VD_ gq = CSM_H_(gv[q / DPV], q % DPV);
    CSM_VD_ *slot = &d[q % CSM_ND_];
    if (q < CSM_ND_)
        *slot = logf ? gq + 0.0 : gq * CSM_H_(yv[q / DPV], q % DPV) + 0.0;
    else
        *slot = logf ? *slot + gq : CSM_DFMA_(gq, CSM_H_(yv[q / DPV], q % DPV), *slot);
}
#undef CSM_H_
#undef CSM_DFMA_

/* Rows whose K elements fill nq double vectors (a constant, 1 .. 2 CSM_ND_),
 * logf a constant too. Only the vectors that hold elements are loaded,
 * widened and summed: the partials of the others are +0, and x + +0 is x
 * for every partial (none is -0), so leaving them out of the tree keeps the
 * bits. With K and logf read at run time, every row summed all 16 (or 32)
 * elements' vectors and GCC spilled the partials to the stack between them.
 * The horizontal sum takes the register's halves by extracts, not the
 * vpermpd GCC makes of a generic shuffle. AMD EPYC (Zen 3), AVX2, one
 * thread, 1024 rows float32, us, alternating processes of the two builds
 * (a noisy machine: the ranges of three): softmax_backward K = 10 10.9-14.4
 * -> 8.7-11.2, K = 20 16.3-20.6 -> 10.2-15.3; log_softmax_backward K = 10
 * 15.3-20.9 -> 13.5-16.5, K = 20 26.5-30.3 -> 18.1-23.7. Two rows at a time
 * (their chains interleaved, as the forward rows are) gained nothing here:
 * K = 10 8.7-10.9 against 9.9-10.5. */
static CSM_INLINE CSM_TARGET void CSM_FN(csm_vec_bwd_rows_n)(
    const CSM_T *y, ptrdiff_t ldy, const CSM_T *g, ptrdiff_t ldg, CSM_T *out, ptrdiff_t ldo,
    ptrdiff_t rows, ptrdiff_t K, const int logf, const int nq)
{
    enum { DPV = CSM_ND_ / CSM_NV_ };
    const int nv = (nq + DPV - 1) / DPV;            /* element vectors that hold elements */
    if (nq < 1 || nq > 2 * CSM_ND_)
        return; /* not a case of csm_vec_bwd_rows's switch */
    CSM_MASK_T_ mk[2 * CSM_NV_];
    for (int v = 0; v < nv; ++v)
        mk[v] = CSM_MASK_(K - v * CSM_VL_);
    for (ptrdiff_t r = 0; r < rows; ++r) {
        CSM_VT_ yv[2 * CSM_NV_], gv[2 * CSM_NV_];
        CSM_VD_ d[CSM_ND_];
        for (int v = 0; v < nv; ++v) {
            yv[v] = CSM_VLOAD_(y + r * ldy + v * CSM_VL_, mk[v]);
            gv[v] = CSM_VLOAD_(g + r * ldg + v * CSM_VL_, mk[v]);
        }
        for (int q = 0; q < nq; ++q)
            CSM_FN(csm_vec_partials)(d, gv, yv, logf, q);
        /* CSM_TREE16: partial i + partial i + 8 first; across vectors while
         * there are several (slots from `have` on hold only +0), then across
         * each vector's halves. */
        int have = nq < CSM_ND_ ? nq : CSM_ND_;
        for (int n = CSM_ND_ / 2; n >= 1; n /= 2) {
            for (int v = 0; v + n < have; ++v)
                d[v] = d[v] + d[v + n];
            have = have < n ? have : n;
        }
#if CSM_ISA_ID == 2
        const __m256d d4 = _mm256_add_pd(_mm512_castpd512_pd256((__m512d)d[0]),
                                         _mm512_extractf64x4_pd((__m512d)d[0], 1));
#else
        const __m256d d4 = (__m256d)d[0];
#endif
        const __m128d d2 = _mm_add_pd(_mm256_castpd256_pd128(d4), _mm256_extractf128_pd(d4, 1));
        const CSM_T c = (CSM_T)_mm_cvtsd_f64(_mm_add_sd(d2, _mm_unpackhi_pd(d2, d2)));
        for (int v = 0; v < nv; ++v) {
            CSM_VT_ o;
            if (logf) {
                /* Whole-vector stores and loads: memcpy here became two
                 * 16-byte stores and a 32-byte load under AVX2, a failed
                 * store forward on every row (3x the time). */
                CSM_T e[CSM_VL_] __attribute__((aligned(CSM_VB_)));
                *(CSM_VT_ *)e = yv[v];
                CSM_FN(csm_exp_lanes)(e, e, NULL, 0, CSM_VL_, 1);
                o = gv[v] - *(const CSM_VT_ *)e * c;
            } else {
                o = yv[v] * (gv[v] - c);
            }
            CSM_VSTORE_(out + r * ldo + v * CSM_VL_, mk[v], K - v * CSM_VL_, o);
        }
        CSM_FN(csm_nan_row_if)(out + r * ldo, 1, K, c);
    }
}

static CSM_TARGET void CSM_FN(csm_vec_bwd_rows)(
    const CSM_T *y, ptrdiff_t ldy, const CSM_T *g, ptrdiff_t ldg, CSM_T *out, ptrdiff_t ldo,
    ptrdiff_t rows, ptrdiff_t K, const int logf)
{
    /* nq and logf as constants: each case is its own loop, unrolled. */
    switch ((K + CSM_DL_ - 1) / CSM_DL_) {
#define CSM_NQ_CASE_(q)                                                                        \
    case q:                                                                                    \
        if (logf)                                                                              \
            CSM_FN(csm_vec_bwd_rows_n)(y, ldy, g, ldg, out, ldo, rows, K, 1, q);               \
        else                                                                                   \
            CSM_FN(csm_vec_bwd_rows_n)(y, ldy, g, ldg, out, ldo, rows, K, 0, q);               \
        break;
    CSM_NQ_CASE_(1) CSM_NQ_CASE_(2) CSM_NQ_CASE_(3) CSM_NQ_CASE_(4)
    CSM_NQ_CASE_(5) CSM_NQ_CASE_(6) CSM_NQ_CASE_(7) CSM_NQ_CASE_(8)
#undef CSM_NQ_CASE_
    default: /* K <= 32 = 2 * 16 elements here */
        break;
    }
}
_Static_assert(CSM_VEC_BWD_K <= 32, "csm_vec_bwd_rows holds a row in two sets of 16 elements");
#undef CSM_VLOAD_
#undef CSM_VSTORE_
#undef CSM_MASK_
#undef CSM_MASK_T_
#undef CSM_VT_
#undef CSM_VD_
#undef CSM_VB_
#undef CSM_VL_
#undef CSM_NV_
#undef CSM_DL_
#undef CSM_ND_
#endif

/* The lane path prefetches the input and output runs of the column this
 * many columns ahead. In a Fortran-ordered array with a power-of-two row
 * count the runs of a group map to a few L1 sets, so a longer distance
 * evicts what it fetched. Measured (float32 softmax, Fortran order against
 * C order, one thread, AVX-512): without prefetching 2.0x at 16384 x 1000
 * and 1.6x at 4096 x 128; 4 columns ahead 1.39x and 1.28x; 12 ahead 1.46x
 * and 1.39x. */
#define CSM_PREFETCH_COLS 4



/* One group of `lanes` rows of any strides, through the lane layout:
 * operand a (row l, column j at a + l * ars + j * acs), b likewise (the
 * backward ops' grad), into out. Three passes for softmax and log_softmax,
 * two for the backward ops: the max (or the backward's sum) is taken while
 * the group is gathered into buf, and the final scale while it is scattered
 * out. Per lane the arithmetic is that of csm_lanes_softmax_buf and of the
 * row kernels' formulas, sequential over j. */
static CSM_INLINE CSM_TARGET void CSM_FN(csm_lane_group)(
    int op, const CSM_T *a, ptrdiff_t ars, ptrdiff_t acs, const CSM_T *b, ptrdiff_t brs,
    ptrdiff_t bcs, CSM_T *out, ptrdiff_t ors, ptrdiff_t ocs, ptrdiff_t K, CSM_T *buf,
    CSM_T *gbuf, const ptrdiff_t lanes)
{
    CSM_T m[CSM_LANE_GROUP], c[CSM_LANE_GROUP];
    /* Partial p of lane l at [p * lanes + l]: double partials (the backward
     * ops), softmax's and log_softmax's block partials in the element type;
     * sd's first `lanes` entries then hold their sums of whole blocks. */
    double sd[CSM_PARTS * CSM_LANE_GROUP];
    CSM_T sf[CSM_PARTS * CSM_LANE_GROUP];
    const int logf = op == CSM_OP_LOG_SOFTMAX || op == CSM_OP_LOG_SOFTMAX_BACKWARD;
#pragma omp simd
    for (ptrdiff_t l = 0; l < lanes; ++l)
        m[l] = -CSM_INF_T;
    for (ptrdiff_t i = 0; i < CSM_PARTS * lanes; ++i) {
        sd[i] = 0;
        sf[i] = 0;
    }
    if (op == CSM_OP_SOFTMAX || op == CSM_OP_LOG_SOFTMAX) {
        for (ptrdiff_t j = 0; j < K; ++j) {
            const CSM_T *xj = a + j * acs;
            CSM_T *bj = buf + j * lanes;
            if (ars == 1) {
                /* Columns of a group lie a page or more apart in a large
                 * Fortran-ordered array, beyond the hardware prefetchers'
                 * reach: ask for a column CSM_PREFETCH_COLS ahead. */
                if (j + CSM_PREFETCH_COLS < K)
                    CSM_FN(csm_prefetch_run)(xj + CSM_PREFETCH_COLS * acs, lanes, 0);
#pragma omp simd
                for (ptrdiff_t l = 0; l < lanes; ++l) {
                    const CSM_T v = xj[l];
                    bj[l] = v;
                    m[l] = v > m[l] ? v : m[l];
                }
            } else {
#pragma omp simd
                for (ptrdiff_t l = 0; l < lanes; ++l) {
                    const CSM_T v = xj[l * ars];
                    bj[l] = v;
                    m[l] = v > m[l] ? v : m[l];
                }
            }
        }
        if (!logf) {
            for (ptrdiff_t j = 0; j < K; ++j) {
                CSM_T *bj = buf + j * lanes;
                CSM_T *sfj = sf + (j % CSM_PARTS) * lanes;
                CSM_FN(csm_exp_lanes)(bj, bj, m, 0, lanes, 0);
#pragma omp simd
                for (ptrdiff_t l = 0; l < lanes; ++l)
                    sfj[l] += bj[l];
                if ((j + 1) % CSM_SUM_BLOCK == 0 || j + 1 == K)
                    CSM_FN(csm_lanes_flush)(sd, sf, lanes);
            }
#pragma omp simd
            for (ptrdiff_t l = 0; l < lanes; ++l)
                c[l] = (CSM_T)(1.0 / sd[l]);
        } else {
            /* The same blocked sum; buf keeps x for the output. */
            for (ptrdiff_t j = 0; j < K; ++j) {
                const CSM_T *bj = buf + j * lanes;
                CSM_T *sfj = sf + (j % CSM_PARTS) * lanes;
                CSM_T et[CSM_LANE_GROUP];
                CSM_FN(csm_exp_lanes)(et, bj, m, 0, lanes, 0);
#pragma omp simd
                for (ptrdiff_t l = 0; l < lanes; ++l)
                    sfj[l] += et[l];
                if ((j + 1) % CSM_SUM_BLOCK == 0 || j + 1 == K)
                    CSM_FN(csm_lanes_flush)(sd, sf, lanes);
            }
#pragma omp simd
            for (ptrdiff_t l = 0; l < lanes; ++l)
                c[l] = (CSM_T)CSM_PASTE(csm_log, CSM_PASTE(f64, CSM_ISA))(sd[l]);
            CSM_FN(csm_nan_lanes)(m, c, lanes);
        }
        for (ptrdiff_t j = 0; j < K; ++j) {
            CSM_T *yj = out + j * ocs;
            const CSM_T *bj = buf + j * lanes;
            if (ors == 1) {
                if (j + CSM_PREFETCH_COLS < K)
                    CSM_FN(csm_prefetch_run)(yj + CSM_PREFETCH_COLS * ocs, lanes, 1);
#pragma omp simd
                for (ptrdiff_t l = 0; l < lanes; ++l)
                    yj[l] = logf ? (bj[l] - m[l]) - c[l] : bj[l] * c[l];
            } else {
#pragma omp simd
                for (ptrdiff_t l = 0; l < lanes; ++l)
                    yj[l * ors] = logf ? (bj[l] - m[l]) - c[l] : bj[l] * c[l];
            }
        }
        if (!logf)
            CSM_FN(csm_nan_rows)(out, ors, ocs, K, c, lanes);
        return;
    }
    /* Backward: y into buf and g into gbuf, summing g * y (softmax) or g
     * (log_softmax) on the way; then the output. */
    for (ptrdiff_t j = 0; j < K; ++j) {
        const CSM_T *yj = a + j * acs, *gj = b + j * bcs;
        CSM_T *bj = buf + j * lanes, *hj = gbuf + j * lanes;
        double *sdj = sd + (j % CSM_PARTS) * lanes;
        if (j + CSM_PREFETCH_COLS < K && ars == 1 && brs == 1) {
            CSM_FN(csm_prefetch_run)(yj + CSM_PREFETCH_COLS * acs, lanes, 0);
            CSM_FN(csm_prefetch_run)(gj + CSM_PREFETCH_COLS * bcs, lanes, 0);
        }
        if (ars == 1 && brs == 1 && !logf) {
#pragma omp simd
            for (ptrdiff_t l = 0; l < lanes; ++l) {
                const CSM_T y = yj[l], g = gj[l];
                bj[l] = y;
                hj[l] = g;
                sdj[l] = CSM_FMA((double)g, (double)y, sdj[l]);
            }
        } else if (ars == 1 && brs == 1) {
#pragma omp simd
            for (ptrdiff_t l = 0; l < lanes; ++l) {
                const CSM_T y = yj[l], g = gj[l];
                bj[l] = y;
                hj[l] = g;
                sdj[l] += (double)g;
            }
        } else {
#pragma omp simd
            for (ptrdiff_t l = 0; l < lanes; ++l) {
                const CSM_T y = yj[l * ars], g = gj[l * brs];
                bj[l] = y;
                hj[l] = g;
                sdj[l] = logf ? sdj[l] + (double)g : CSM_FMA((double)g, (double)y, sdj[l]);
            }
        }
    }
#pragma omp simd
    for (ptrdiff_t l = 0; l < lanes; ++l)
        c[l] = (CSM_T)csm_tree_sum(sd + l, lanes);
    for (ptrdiff_t j = 0; j < K; ++j) {
        CSM_T *oj = out + j * ocs;
        const CSM_T *bj = buf + j * lanes, *hj = gbuf + j * lanes;
        /* Separate loops per op: if-converted, one loop would compute the
         * exp of log_softmax's backward for softmax's too (measured: 2.4x
         * the time of C order at 4096 x 128, against 1.x without). */
        if (ors == 1 && j + CSM_PREFETCH_COLS < K)
            CSM_FN(csm_prefetch_run)(oj + CSM_PREFETCH_COLS * ocs, lanes, 1);
        if (logf) {
            CSM_T et[CSM_LANE_GROUP];
            CSM_FN(csm_exp_lanes)(et, bj, NULL, 0, lanes, 1);
#pragma omp simd
            for (ptrdiff_t l = 0; l < lanes; ++l)
                oj[l * ors] = hj[l] - et[l] * c[l];
        } else if (ors == 1) {
#pragma omp simd
            for (ptrdiff_t l = 0; l < lanes; ++l)
                oj[l] = bj[l] * (hj[l] - c[l]);
        } else {
#pragma omp simd
            for (ptrdiff_t l = 0; l < lanes; ++l)
                oj[l * ors] = bj[l] * (hj[l] - c[l]);
        }
    }
    CSM_FN(csm_nan_rows)(out, ors, ocs, K, c, lanes);
}

/* Defined below; the lane kernels hand them their rows past L2. */
static CSM_TARGET void CSM_FN(csm_long_rows)(
    const CSM_T *x, ptrdiff_t ldx, CSM_T *y, ptrdiff_t ldy, ptrdiff_t rows, ptrdiff_t K,
    int log_out, int stream);
/* Out of line: inlined into csm_lanes_rows, its registers pushed the
 * gathered rows' copy loops (below) to reload their strides from the stack
 * at every element, 5-8% of 64 x 300000 float32 every third column. */
static CSM_NOINLINE CSM_TARGET void CSM_FN(csm_long_rows_strided)(
    const CSM_T *a, ptrdiff_t ars, ptrdiff_t acs, CSM_T *out, ptrdiff_t ors, ptrdiff_t ocs,
    ptrdiff_t rows, ptrdiff_t K, int log_out, CSM_T *buf);
static CSM_NOINLINE CSM_TARGET void CSM_FN(csm_long_bwd_strided)(
    const CSM_T *y, ptrdiff_t yrs, ptrdiff_t ycs, const CSM_T *g, ptrdiff_t grs, ptrdiff_t gcs,
    CSM_T *out, ptrdiff_t ors, ptrdiff_t ocs, ptrdiff_t rows, ptrdiff_t K, int logf, CSM_T *buf);
/* Defined below, beside the row kernels it calls. */
static CSM_NOINLINE CSM_TARGET void CSM_FN(csm_staged_rows)(
    int op, const CSM_T *a, ptrdiff_t ars, ptrdiff_t acs, const CSM_T *b, ptrdiff_t brs,
    ptrdiff_t bcs, CSM_T *out, ptrdiff_t ors, ptrdiff_t ocs, ptrdiff_t rows, ptrdiff_t K,
    CSM_T *buf);

/* Rows of any strides: groups of csm_lane_count(K) rows through
 * csm_lane_group. A group of many rows pays off in Fortran-ordered arrays,
 * where column j of the group is then one run of up to 256 bytes (four
 * cache lines, which the adjacent-line prefetcher fetches together) instead
 * of one line per page. `buf` holds csm_lane_count(K) * K elements per
 * operand (two operands for the backward ops). An operand may be the output
 * itself (same strides): a group is read whole before it is written. */
static CSM_TARGET void CSM_FN(csm_lanes_rows)(
    int op, const CSM_T *a, ptrdiff_t ars, ptrdiff_t acs, const CSM_T *b, ptrdiff_t brs,
    ptrdiff_t bcs, CSM_T *out, ptrdiff_t ors, ptrdiff_t ocs, ptrdiff_t rows, ptrdiff_t K,
    CSM_T *buf)
{
    if ((op == CSM_OP_SOFTMAX || op == CSM_OP_LOG_SOFTMAX)
        && K * (ptrdiff_t)sizeof(CSM_T) > CSM_LONG_ROW) {
        const int log_out = op == CSM_OP_LOG_SOFTMAX;
        /* Rows past L2. Interleaved rows (Fortran order: |row stride| <
         * |column stride|) go a group at a time (csm_long_rows_strided).
         * Rows that lie apart (column-strided views, reversed rows) are each
         * gathered whole, their elements near each other, and take the
         * contiguous rows' algorithm, csm_long_rows, in the copy, whose
         * second read finds it in cache: 64 x 300000 float32 every third
         * column, 14 ms this way and 30 ms in groups (Intel Xeon, two
         * threads). Either way the bits are those of C order. */
        if (csm_rows_interleaved(ars, acs)) {
            CSM_FN(csm_long_rows_strided)(a, ars, acs, out, ors, ocs, rows, K, log_out, buf);
            return;
        }
        for (ptrdiff_t r = 0; r < rows; ++r) {
            const CSM_T *ar = a + r * ars;
            CSM_T *orow = out + r * ors;
            for (ptrdiff_t j = 0; j < K; ++j)
                buf[j] = ar[j * acs];
            CSM_FN(csm_long_rows)(buf, K, buf, K, 1, K, log_out, 0);
            for (ptrdiff_t j = 0; j < K; ++j)
                orow[j * ocs] = buf[j];
        }
        return;
    }
    /* The backward passes' interleaved rows past L2, a group at a time,
     * chunk by chunk (csm_long_bwd_strided) */
    if ((op == CSM_OP_SOFTMAX_BACKWARD || op == CSM_OP_LOG_SOFTMAX_BACKWARD)
        && K * (ptrdiff_t)sizeof(CSM_T) > CSM_LONG_ROW
        && (csm_staged_operand(ars, acs) || csm_staged_operand(brs, bcs) || csm_staged_operand(ors, ocs))) {
        CSM_FN(csm_long_bwd_strided)(a, ars, acs, b, brs, bcs, out, ors, ocs, rows, K,
                                     op == CSM_OP_LOG_SOFTMAX_BACKWARD, buf);
        return;
    }
    /* Rows whose lane groups would be narrower than a staged group
     * (csm_staged_k), in any layout (rows apart too: a lane group of one
     * row runs the lane kernels on one lane, 16x C order at 256 x 50000
     * float32 every third column), and interleaved inputs whose output rows
     * are contiguous: the lane groups' stores of 64 output rows at once shared
     * L1's sets where the row stride is a power of two of lines. Intel Xeon,
     * float32 Fortran order into C order, softmax, one thread, ms, lane
     * groups / staged: 8192 x 1024 30.0 / 10.2, 8192 x 1000 13.1 / 7.9,
     * 32768 x 256 23.3 / 6.9, 100000 x 64 6.7 / 5.4, 4096 x 128 0.45 /
     * 0.22. Fortran order into Fortran order stays in the lane groups
     * there (8192 x 1024 8.0 / 17.1, 100000 x 64 5.4 / 6.3). */
    if (csm_staged_k(K) || (ocs == 1 && (csm_staged_operand(ars, acs) || csm_staged_operand(brs, bcs)))) {
        CSM_FN(csm_staged_rows)(op, a, ars, acs, b, brs, bcs, out, ors, ocs, rows, K, buf);
        return;
    }
    const ptrdiff_t L = csm_lane_count(K);
    CSM_T *gbuf = buf + L * K;
    for (ptrdiff_t r = 0; r < rows; r += L) {
        const ptrdiff_t lanes = rows - r < L ? rows - r : L;
        if (lanes == CSM_LANE_GROUP)  /* a constant trip count for the vectoriser */
            CSM_FN(csm_lane_group)(op, a + r * ars, ars, acs, b + r * brs, brs, bcs,
                                   out + r * ors, ors, ocs, K, buf, gbuf, CSM_LANE_GROUP);
        else
            CSM_FN(csm_lane_group)(op, a + r * ars, ars, acs, b + r * brs, brs, bcs,
                                   out + r * ors, ors, ocs, K, buf, gbuf, lanes);
    }
}

/* Each operation has a core, computing `rows` rows into (out, ldo) with
 * regular stores, and a table entry that adds streaming (csm_streamed). */
typedef void (*CSM_FN(csm_core_t))(const CSM_T *, ptrdiff_t, const CSM_T *, ptrdiff_t,
                                   CSM_T *, ptrdiff_t, ptrdiff_t, ptrdiff_t, int);

/* Streaming stores pay off only on whole cache lines: a row that ends
 * mid-line mixes streamed and regular stores in one line, and each partial
 * write-combining flush is a transaction of its own (rows of K = 17 float32
 * took 14 ns per element streamed row by row, 1 ns otherwise). So groups of
 * rows are computed into an L1 scratch laid out like a contiguous output and
 * streamed as one span; lines are split only at the ends of a span. Outputs
 * that are not row-contiguous, or rows longer than the scratch, use regular
 * stores. Streaming never changes a value. */
static CSM_INLINE CSM_TARGET void CSM_FN(csm_streamed)(
    CSM_FN(csm_core_t) core, const CSM_T *a, ptrdiff_t lda, const CSM_T *b, ptrdiff_t ldb,
    CSM_T *out, ptrdiff_t ldo, ptrdiff_t rows, ptrdiff_t K, int flags)
{
    const int pf = flags & CSM_RUN_PREFETCH;
    if (!(flags & CSM_RUN_STREAM) || ldo != K || K > CSM_SCRATCH) {
        core(a, lda, b, ldb, out, ldo, rows, K, pf);
        return;
    }
    CSM_T scratch[CSM_SCRATCH];
    const ptrdiff_t group = CSM_SCRATCH / K;
    for (ptrdiff_t r0 = 0; r0 < rows; r0 += group) {
        const ptrdiff_t nr = rows - r0 < group ? rows - r0 : group;
        core(a + r0 * lda, lda, b + r0 * ldb, ldb, scratch, K, nr, K, pf);
        CSM_FN(csm_stream_copy)(out + r0 * K, scratch, nr * K);
    }
    CSM_STREAM_FENCE();
    csm_count_streamed();
}

#if CSM_EXP_V
/* log_softmax backward's exp of a register of y, as `dom` (csm_log_bwd_dom)
 * says: the whole exp (1), or the softmax domain's, its form known (2: no y
 * below CSM_EXP_NORMAL_LO, -1: some y below; csm_exp_v_dom) or tested
 * register by register (0). The same bits every way. */
static CSM_INLINE CSM_TARGET CSM_XV CSM_FN(csm_lbwd_exp_v)(CSM_XV y, const int dom)
{
    if (dom == 1)
        return CSM_FN(csm_exp_v)(y, 1);
    return CSM_FN(csm_exp_v_dom)(y, dom == 2 ? 1 : dom);
}

/* The output forms that stream from registers (csm_nt_row): each element of
 * the output from its elements of u and v and the row's scalars c and e. */
#ifndef CSM_NT_FORMS_  /* (this file is included once per type and ISA) */
#define CSM_NT_FORMS_
enum { CSM_NT_SHIFT = 0,   /* log_softmax: (u - c) - e (u = x, c its max, e the log of its sum) */
       CSM_NT_BWD = 1,     /* softmax_backward: u (v - c) (u = y, v = g, c the dot product) */
       CSM_NT_LBWD = 2,    /* log_softmax_backward: v - exp(u) c (u = y, v = g, c = sum(g));
                            * e: csm_log_bwd_dom's choice of exp (csm_lbwd_exp_v) */
       CSM_NT_SCALE = 3 }; /* softmax: u c (u = the row's exps, c = 1 / their sum) */
/* Whether the form reads v. */
#define CSM_NT_TWO(form) ((form) == CSM_NT_BWD || (form) == CSM_NT_LBWD)
#endif

/* One register of the output, the expression the regular path computes, so
 * that the bits are the same: c and e as registers (a row's scalars
 * broadcast; csm_nt_join's c holds two rows' lane by lane), dom log_softmax
 * backward's choice of exp (csm_log_bwd_dom, -1 to 2). */
static CSM_INLINE CSM_TARGET CSM_XV CSM_FN(csm_nt_vv)(const int form, CSM_XV u, CSM_XV v, CSM_XV c,
                                                     CSM_XV e, const int dom)
{
    if (form == CSM_NT_SHIFT)
        return CSM_XV_(sub)(CSM_XV_(sub)(u, c), e);
    if (form == CSM_NT_SCALE)
        return CSM_XV_(mul)(u, c);
    if (form == CSM_NT_BWD)
        return CSM_XV_(mul)(u, CSM_XV_(sub)(v, c));
  #if CSM_EXP_V_UP
    if (dom == 1)
        return CSM_XV_(fnmadd)(CSM_FN(csm_exp_v)(u, 1), c, v);
  #endif
    return CSM_XV_(fnmadd)(CSM_FN(csm_lbwd_exp_v)(u, dom), c, v);
}

/* csm_nt_vv of one row: its scalars c and e (for log_softmax backward, e is
 * its dom, exact in the element type). */
static CSM_INLINE CSM_TARGET CSM_XV CSM_FN(csm_nt_v)(const int form, CSM_XV u, CSM_XV v, CSM_T c,
                                                    CSM_T e)
{
    return CSM_FN(csm_nt_vv)(form, u, v, CSM_XV_(set1)(c), CSM_XV_(set1)(e),
                             form == CSM_NT_LBWD ? (int)e : 0);
}

/* Where a row of the output streams from the registers that compute it. A
 * streaming store takes a whole aligned register, and a line written partly
 * by streaming stores and partly by regular ones is flushed in pieces
 * (csm_streamed). With `a` = the elements of a row before its first aligned
 * one (csm_nt_start, per row), the row's first `a` elements go out with
 * the previous row's last CSM_XVW - a in one register across the rows'
 * boundary (csm_nt_join), so that every store but the first row's first
 * `a` elements and the last row's last ones is whole and aligned. Where the
 * rows are written one after the other (ldo = K), K need not be a multiple
 * of CSM_XVW: `a` then changes from row to row, and a row's last elements
 * are the CSM_XVW - a of the row after it (csm_nt_tail). */
typedef struct {
    ptrdiff_t a;
    CSM_XM kp, kq;  /* the lanes of the row before, of this row */
} CSM_FN(csm_nt_t);

static CSM_INLINE CSM_TARGET CSM_FN(csm_nt_t) CSM_FN(csm_nt_start)(const CSM_T *out)
{
    CSM_FN(csm_nt_t) w;
    const ptrdiff_t vw = CSM_XVW;
    w.a = CSM_FN(csm_nt_lead)(out);
    w.kp = CSM_XM_FIRST(w.a ? vw - w.a : vw);
  #if CSM_ISA_ID == 2
    w.kq = (CSM_XM)~w.kp;
  #else
    w.kq = _mm256_xor_si256(w.kp, _mm256_set1_epi32(-1));
  #endif
    return w;
}

/* The lead of the position after the row at orow (orow + K): the register
 * across the row's end holds the row's elements from K - CSM_XVW + lead on
 * (none where the lead is 0), and the next row's first lead. */
static CSM_INLINE ptrdiff_t CSM_FN(csm_nt_tail)(const CSM_T *orow, ptrdiff_t K)
{
    return CSM_FN(csm_nt_lead)(orow + K);
}

/* A row's elements j + lo .. j + hi - 1 with regular stores, taken from its
 * register of elements j .. j + CSM_XVW - 1 (inside the row: K >= CSM_XVW),
 * computed whole as the streamed ones are: the first row's first a (j = 0),
 * the last row's elements past its last boundary (j = K - CSM_XVW, lo =
 * csm_nt_tail). */
static CSM_INLINE CSM_TARGET void CSM_FN(csm_nt_part)(const int form, CSM_T *orow, ptrdiff_t j, ptrdiff_t lo,
                                                     ptrdiff_t hi, const CSM_T *u, const CSM_T *v, CSM_T c,
                                                     CSM_T e)
{
    CSM_T t[CSM_XVW];
    CSM_XV_(storeu)(t, CSM_FN(csm_nt_v)(form, CSM_XV_(loadu)(u + j),
                                        CSM_NT_TWO(form) ? CSM_XV_(loadu)(v + j) : CSM_XV_(setzero)(), c, e));
    for (ptrdiff_t i = lo; i < hi; ++i)
        orow[j + i] = t[i];
}

/* The register across the boundary of a row (u, v, c, e, written at orow)
 * and the row before (up, vp, cp, ep), when a > 0: the row before's last
 * CSM_XVW - a elements and the row's first a. log_softmax backward takes
 * them from one register of operands that holds both rows' lanes, each
 * row's sum of g in its own lanes: one register of exps, not one per row,
 * and each lane's operations are its row's, so its bits are (rows of 64
 * floats at NumPy's 16-byte offset took five registers of exps per four of
 * output, and 0.90-0.96x the time with one: docs/design.md). The forms
 * without an exp compute a register per row and blend them: merged loads
 * cost softmax_backward 1-4% under AVX-512. So do rows whose log_softmax
 * backward takes different exps (dom). The loads are masked to each row's
 * own elements: an input's rows may lie anywhere (negative strides, a row
 * broadcast to all of them), and a lane past a row's end may be past the
 * array's, on a page that is not mapped. (Where two operands of an element
 * are NaN, the form of the multiply-add decides the NaN; the ops make those
 * elements' bits the same on every path: csm_nan_rows.) */
static CSM_INLINE CSM_TARGET void CSM_FN(csm_nt_join)(
    const int form, const CSM_FN(csm_nt_t) *w, CSM_T *orow, ptrdiff_t K,
    const CSM_T *u, const CSM_T *v, CSM_T c, CSM_T e,
    const CSM_T *up, const CSM_T *vp, CSM_T cp, CSM_T ep)
{
    const ptrdiff_t vw = CSM_XVW, a = w->a, o = K - vw + a;  /* (the row before's elements in it) */
    const int two = CSM_NT_TWO(form);
  #if CSM_ISA_ID == 2
    #define CSM_NT_BOTH_(pp, p) CSM_XV_(mask_loadu)(CSM_XV_LOADM((pp) + o, w->kp), w->kq, (p) - (vw - a))
    #define CSM_NT_BLEND_(x, y) CSM_XV_(mask_blend)(w->kq, (x), (y))
  #elif CSM_F32
    /* (a masked load's other lanes are +0, all bits clear) */
    #define CSM_NT_BOTH_(pp, p) \
        _mm256_or_ps(CSM_XV_LOADM((pp) + o, w->kp), CSM_XV_LOADM((p) - (vw - a), w->kq))
    #define CSM_NT_BLEND_(x, y) _mm256_blendv_ps((x), (y), _mm256_castsi256_ps(w->kq))
  #else
    #define CSM_NT_BOTH_(pp, p) \
        _mm256_or_pd(CSM_XV_LOADM((pp) + o, w->kp), CSM_XV_LOADM((p) - (vw - a), w->kq))
    #define CSM_NT_BLEND_(x, y) _mm256_blendv_pd((x), (y), _mm256_castsi256_pd(w->kq))
  #endif
    if (form == CSM_NT_LBWD && e == ep) {
        CSM_XV_(stream)(orow - (vw - a),
                        CSM_FN(csm_nt_vv)(form, CSM_NT_BOTH_(up, u), CSM_NT_BOTH_(vp, v),
                                          CSM_NT_BLEND_(CSM_XV_(set1)(cp), CSM_XV_(set1)(c)),
                                          CSM_XV_(setzero)(), (int)e));
    } else {
        const CSM_XV p = CSM_FN(csm_nt_v)(form, CSM_XV_LOADM(up + o, w->kp),
                                          two ? CSM_XV_LOADM(vp + o, w->kp) : CSM_XV_(setzero)(), cp, ep);
        const CSM_XV q = CSM_FN(csm_nt_v)(form, CSM_XV_LOADM(u - (vw - a), w->kq),
                                          two ? CSM_XV_LOADM(v - (vw - a), w->kq) : CSM_XV_(setzero)(), c, e);
        CSM_XV_(stream)(orow - (vw - a), CSM_NT_BLEND_(p, q));
    }
  #undef CSM_NT_BOTH_
  #undef CSM_NT_BLEND_
}

/* The row's whole aligned registers, streamed; pu and pv (or NULL): the row
 * ahead to prefetch, where the row's own loads come from memory. */
static CSM_INLINE CSM_TARGET void CSM_FN(csm_nt_body)(
    const int form, const CSM_FN(csm_nt_t) *w, CSM_T *orow, ptrdiff_t K,
    const CSM_T *u, const CSM_T *v, CSM_T c, CSM_T e, const char *pu, const char *pv)
{
    const ptrdiff_t vw = CSM_XVW, a = w->a;
    const int two = CSM_NT_TWO(form);
    for (ptrdiff_t j = a; j + vw <= K; j += vw) {
        if ((j - a) % CSM_PARTS == 0) {
            CSM_PREFETCH_PARTS_(pu, j, 0);
            CSM_PREFETCH_PARTS_(pv, j, 0);
        }
        CSM_XV_(stream)(orow + j, CSM_FN(csm_nt_v)(form, CSM_XV_(loadu)(u + j),
                                                   two ? CSM_XV_(loadu)(v + j) : CSM_XV_(setzero)(), c, e));
    }
}

/* One row of the output, streamed: w, the row's (csm_nt_start(orow)); u,
 * v, c, e as csm_nt_v takes them; up, vp, cp, ep: the row before's (unused
 * for the first row). first, last: the call's first and last rows, whose
 * ends take regular stores. */
static CSM_INLINE CSM_TARGET void CSM_FN(csm_nt_row)(
    const int form, const CSM_FN(csm_nt_t) *w, CSM_T *orow, ptrdiff_t K,
    const CSM_T *u, const CSM_T *v, CSM_T c, CSM_T e,
    const CSM_T *up, const CSM_T *vp, CSM_T cp, CSM_T ep, int first, int last)
{
    const ptrdiff_t vw = CSM_XVW, a = w->a, t = last ? CSM_FN(csm_nt_tail)(orow, K) : 0;
    if (a && first)
        CSM_FN(csm_nt_part)(form, orow, 0, 0, a, u, v, c, e);
    else if (a)
        CSM_FN(csm_nt_join)(form, w, orow, K, u, v, c, e, up, vp, cp, ep);
    CSM_FN(csm_nt_body)(form, w, orow, K, u, v, c, e, NULL, NULL);
    if (t)
        CSM_FN(csm_nt_part)(form, orow, K - vw, t, vw, u, v, c, e);
}

#endif

/* Whether output rows (out, ldo) of K elements can stream from the
 * registers (csm_nt_row): rows of at least a register written one after the
 * other (any element-aligned out), or rows of a whole number of registers
 * each starting at a register's alignment and taking whole cache lines, so
 * that no line holds two rows' elements. (The ops' short rows keep their
 * own kernels: the callers check those.) */
static CSM_INLINE int CSM_FN(csm_nt_rows)(const CSM_T *out, ptrdiff_t ldo, ptrdiff_t K)
{
#if CSM_EXP_V
    const ptrdiff_t vb = (ptrdiff_t)sizeof(CSM_XV), lb = ldo * (ptrdiff_t)sizeof(CSM_T);
    if (K < CSM_XVW || (uintptr_t)out % sizeof(CSM_T) != 0)
        return 0;
    if (ldo == K)
        return 1;
    return K % CSM_XVW == 0 && (uintptr_t)out % (uintptr_t)vb == 0 && lb % 64 == 0;
#else
    (void)out; (void)ldo; (void)K;
    return 0;
#endif
}

/* R rows of softmax (R a constant), `left` rows from x to the end of the
 * core's rows (the prefetches look ahead), their maxima m and normal
 * (csm_group_rows_max_normal's) taken before. nt (a constant): y is
 * csm_softmax_body's ring of exps (ldy = K), left unscaled, and c[r] = 1 /
 * the row's sum (c: NULL where nt is 0). xn, where not NULL, is the next
 * group's first row: its maxima go into mn, and its normal is returned
 * (0 without xn), after this group's sums and before its scale. */
static CSM_INLINE CSM_TARGET int CSM_FN(csm_softmax_row_group_m)(
    const int R, const CSM_T *x, ptrdiff_t ldx, CSM_T *y, ptrdiff_t ldy, ptrdiff_t K, int pf,
    ptrdiff_t left, const int nt, CSM_T *c, const CSM_T *m, const int normal, const CSM_T *xn,
    CSM_T *mn)
{
    const CSM_T *xr[CSM_ROWS_MAX];
    CSM_T *yr[CSM_ROWS_MAX];
    const CSM_MW_T *mk[CSM_ROWS_MAX];
    const char *pfr[CSM_ROWS_MAX], *pfw[CSM_ROWS_MAX];
    double s[CSM_ROWS_MAX];
    CSM_EACH_ROW
    for (int rr = 0; rr < R; ++rr) {
        xr[rr] = x + rr * ldx;
        yr[rr] = y + rr * ldy;
        mk[rr] = NULL;
        pfr[rr] = CSM_PF_ROW_(csm_prefetch_row, xr[rr], ldx, K, sizeof(CSM_T));
        pfw[rr] = nt ? NULL : CSM_PF_ROW_(csm_prefetch_out_row, yr[rr], ldy, K, sizeof(CSM_T), left - 1 - rr);
        s[rr] = 0.0;
    }
    if (normal > 0)
        CSM_FN(csm_rows_exp_sum_from)(R, xr, mk, yr, m, K, s, pfr, pfw, 1);
    else
        CSM_FN(csm_rows_exp_sum_from)(R, xr, mk, yr, m, K, s, pfr, pfw, normal);
    const int nn = xn ? CSM_FN(csm_group_max_at)(R, xn, ldx, K, mn) : 0;
    CSM_EACH_ROW
    for (int rr = 0; rr < R; ++rr) {
        const CSM_T cr = (CSM_T)(1.0 / s[rr]);
        if (nt) {
            /* A NaN row's exps and scale the quiet NaN: its streamed
             * products are then that NaN (csm_nan_rows). */
            c[rr] = CSM_FN(csm_nan_q)(cr);
            CSM_FN(csm_nan_row_if)(yr[rr], 1, K, cr);
        } else {
            CSM_FN(csm_row_scale)(yr[rr], cr, K);
            CSM_FN(csm_nan_row_if)(yr[rr], 1, K, cr);
        }
    }
    return nn;
}

/* csm_softmax_row_group_m with the group's own maxima first. */
static CSM_INLINE CSM_TARGET void CSM_FN(csm_softmax_row_group)(
    const int R, const CSM_T *x, ptrdiff_t ldx, CSM_T *y, ptrdiff_t ldy, ptrdiff_t K, int pf,
    ptrdiff_t left, const int nt, CSM_T *c)
{
    CSM_T m[CSM_ROWS_MAX];
    const int normal = CSM_FN(csm_group_max_at)(R, x, ldx, K, m);
    CSM_FN(csm_softmax_row_group_m)(R, x, ldx, y, ldy, K, pf, left, nt, c, m, normal, NULL, NULL);
}

/* softmax: max; exp(x - max) into y while summing; scale by 1/sum. The row
 * stays in L1/L2 between the passes, so DRAM sees one read and one write.
 * nt (a constant): the output streams (csm_nt_row, CSM_NT_SCALE; csm_fwd_nt
 * says where). The exps wait on their sum in a ring of three groups of rows
 * on the stack, in L1, not in the output, and a group streams out while the
 * next one's exps are computed: its loads then find its exps in L1. Loaded
 * at once, they came from the store buffer, and where the output is not
 * aligned as the row (an output register straddles two of the exps'
 * stores) each load waited for its stores to retire (100000 x 64 float32,
 * AVX2, one thread: 1.42x the regular path's time, 1.25-1.31x with the
 * ring; such short rows keep regular stores: CSM_SOFTMAX_NT_ROWS). The
 * third group holds the row before the streamed group's first
 * (csm_nt_join). Each row's operations are the regular path's, so its bits
 * are. */
static CSM_INLINE CSM_TARGET void CSM_FN(csm_softmax_body)(
    const CSM_T *x, ptrdiff_t ldx, CSM_T *y, ptrdiff_t ldy, ptrdiff_t rows, ptrdiff_t K, int pf,
    const int nt)
{
    if (!nt && K <= CSM_SMALL_FWD_K_ISA(CSM_ISA_ID)) {
        CSM_FN(csm_small_rows)(x, ldx, y, ldy, rows, K, 0);
        return;
    }
    ptrdiff_t r = 0;
#if CSM_EXP_V
    if (nt) {
        CSM_T ring[CSM_NT_RING_BYTES / sizeof(CSM_T)], c[CSM_NT_GROUPS * CSM_ROWS_MAX] = {0};
        const ptrdiff_t R = CSM_ROWS_AT_ONCE(K), slots = CSM_NT_GROUPS * R;
        /* done: the rows streamed; sr, sd, sp: the slots of rows r, done, done - 1 */
        ptrdiff_t done = 0, sr = 0, sd = 0, sp = slots - 1;
        for (ptrdiff_t g; done < rows; r += g) {
            /* Groups start at multiples of R, so a group's slots are
             * consecutive. The rows of the group before go out after this
             * group's exps; past the last row, the last group's. */
            g = r >= rows ? 0 : R == CSM_ROWS_MAX && r + CSM_ROWS_MAX <= rows ? CSM_ROWS_MAX : 1;
            if (g == CSM_ROWS_MAX)
                CSM_FN(csm_softmax_row_group)(CSM_ROWS_MAX, x + r * ldx, ldx, ring + sr * K, K, K, pf,
                                              rows - r, 1, c + sr);
            else if (g)
                CSM_FN(csm_softmax_row_group)(1, x + r * ldx, ldx, ring + sr * K, K, K, pf, rows - r, 1,
                                              c + sr);
            sr = sr + g == slots ? 0 : sr + g;
            for (; done < r; ++done) {
                const CSM_FN(csm_nt_t) w = CSM_FN(csm_nt_start)(y + done * ldy);
                CSM_FN(csm_nt_row)(CSM_NT_SCALE, &w, y + done * ldy, K, ring + sd * K, NULL, c[sd], 0,
                                   ring + sp * K, NULL, c[sp], 0, done == 0, done == rows - 1);
                sp = sd;
                sd = sd + 1 == slots ? 0 : sd + 1;
            }
        }
        return;
    }
    if (CSM_ROWS_AT_ONCE(K) == CSM_ROWS_MAX && rows >= CSM_ROWS_MAX) {
        /* A group's scale waits on a chain from its last exps: the sums'
         * trees, the add in double, 1 / s and its conversion (perf, AMD Zen
         * 4, AVX2, float32 4096 x 128: 5.8% of the kernel's samples on
         * that conversion alone). The next group's maxima, which need
         * nothing of this group, go between its sums and its scale
         * (csm_softmax_row_group_m), and the scale hides their reduction
         * in turn. Same machine, float32, one thread, out=, in cache, best
         * of 400, six alternations of the builds, us before -> after,
         * AVX2 | AVX-512: 4096 x 128 173-174 -> 169 | 140 -> 137, 100000 x
         * 64 2590-2615 -> 2429-2445 | 2372 -> 2187, 8192 x 64 202 -> 190 |
         * 177 -> 168, 4096 x 100 149-151 -> 140 | 131 -> 127, 4096 x 40
         * 81 -> 72.5 | 80 -> 77, 2048 x 256 level; float64 within 3%
         * either way. Each row's operations are the same, so its bits. */
        CSM_T mg[2][CSM_ROWS_MAX];
        int normal = CSM_FN(csm_group_max_at)(CSM_ROWS_MAX, x, ldx, K, mg[0]);
        for (int cur = 0; r + CSM_ROWS_MAX <= rows; r += CSM_ROWS_MAX, cur ^= 1) {
            const CSM_T *xn = r + 2 * CSM_ROWS_MAX <= rows ? x + (r + CSM_ROWS_MAX) * ldx : NULL;
            normal = CSM_FN(csm_softmax_row_group_m)(CSM_ROWS_MAX, x + r * ldx, ldx, y + r * ldy, ldy, K, pf,
                                                     rows - r, 0, NULL, mg[cur], normal, xn, mg[cur ^ 1]);
        }
    }
#endif
    for (; r < rows; ++r)
        CSM_FN(csm_softmax_row_group)(1, x + r * ldx, ldx, y + r * ldy, ldy, K, pf, rows - r, 0, NULL);
}

static CSM_TARGET void CSM_FN(csm_softmax_core)(
    const CSM_T *x, ptrdiff_t ldx, const CSM_T *unused, ptrdiff_t ldu,
    CSM_T *y, ptrdiff_t ldy, ptrdiff_t rows, ptrdiff_t K, int pf)
{
    (void)unused; (void)ldu;
    CSM_FN(csm_softmax_body)(x, ldx, y, ldy, rows, K, pf, 0);
}

/* log_softmax's sums of R rows (R a constant) into lg[r], their maxima mx
 * and normal (csm_group_rows_max_normal's) taken before. xn, where not
 * NULL, is the next group's first row: its maxima go into mn and its
 * normal is returned (0 without xn), before this group's sums, so that
 * they hide the maxima's reduction. */
static CSM_INLINE CSM_TARGET int CSM_FN(csm_log_sum_group_m)(
    const int R, const CSM_T *x, ptrdiff_t ldx, CSM_T *y, ptrdiff_t ldy, ptrdiff_t K, int pf,
    const CSM_T *mx, const int normal, double *lg, const CSM_T *xn, CSM_T *mn)
{
    const CSM_T *xr[CSM_ROWS_MAX];
    const CSM_MW_T *mk[CSM_ROWS_MAX];
    CSM_T *none[CSM_ROWS_MAX];
    const char *pfx[CSM_ROWS_MAX], *pfw[CSM_ROWS_MAX];
    const int nn = xn ? CSM_FN(csm_group_max_at)(R, xn, ldx, K, mn) : 0;
    CSM_EACH_ROW
    for (int rr = 0; rr < R; ++rr) {
        xr[rr] = x + rr * ldx;
        mk[rr] = NULL;
        none[rr] = NULL;
        pfx[rr] = CSM_PF_ROW_(csm_prefetch_row, xr[rr], ldx, K, sizeof(CSM_T));
        pfw[rr] = pf && y ? (const char *)(y + rr * ldy) : NULL;
        lg[rr] = 0.0;
    }
    if (normal > 0)
        CSM_FN(csm_rows_exp_sum_from)(R, xr, mk, none, mx, K, lg, pfx, pfw, 1);
    else
        CSM_FN(csm_rows_exp_sum_from)(R, xr, mk, none, mx, K, lg, pfx, pfw, normal);
    return nn;
}

/* log_softmax's maxima and sums of R rows (R a constant): mx[r], lg[r]. */
static CSM_INLINE CSM_TARGET void CSM_FN(csm_log_sum_group)(
    const int R, const CSM_T *x, ptrdiff_t ldx, CSM_T *y, ptrdiff_t ldy, ptrdiff_t K, int pf,
    CSM_T *mx, double *lg)
{
    const int normal = CSM_FN(csm_group_max_at)(R, x, ldx, K, mx);
    CSM_FN(csm_log_sum_group_m)(R, x, ldx, y, ldy, K, pf, mx, normal, lg, NULL, NULL);
}

/* log_softmax in chunks of CSM_LOG_CHUNK rows (CSM_LOG_NT_CHUNK where the
 * output streams): maxima and sums for the chunk, one vectorised log over
 * the chunk's sums (a scalar libm log per row costs more than a short row),
 * then y = (x - max) - log(sum): that order keeps [1000, 1] -> [0, -999]
 * exact (PyTorch issue 11752). nt (a constant): the output streams from the
 * registers (csm_nt_row; csm_fwd_nt says where). */
#if CSM_EXP_V
/* The elements of a row at p before its first register-aligned address:
 * 0 where p is on one, is not aligned to its element, or the row is shorter
 * than 256 bytes, where the masked head cost more than the split stores it
 * saves (log_softmax, measured as at csm_log_softmax_body, us without / with
 * the head, y 16 bytes past a boundary: 4096 x 33 float32 AVX-512 83.1 /
 * 87.8, AVX2 90.4 / 99.1; 4096 x 48 AVX2 98.8-99.7 / 102.6-104.4; from 4096 x
 * 64 on even or faster: AVX-512 106.1-111.4 / 101.2-101.3). */
static CSM_INLINE CSM_TARGET ptrdiff_t CSM_FN(csm_head_to_boundary)(const CSM_T *p, ptrdiff_t K)
{
    const uintptr_t a = (uintptr_t)p;
    if (a % sizeof(CSM_T) || K * (ptrdiff_t)sizeof(CSM_T) < 256)
        return 0;
    const ptrdiff_t m = (ptrdiff_t)((a / sizeof(CSM_T)) & (uintptr_t)(CSM_XVW - 1));
    const ptrdiff_t h = m ? CSM_XVW - m : 0;
    return h < K ? h : K;
}
#endif

static CSM_INLINE CSM_TARGET void CSM_FN(csm_log_softmax_body)(
    const CSM_T *x, ptrdiff_t ldx, CSM_T *y, ptrdiff_t ldy, ptrdiff_t rows, ptrdiff_t K, int pf,
    const int nt)
{
    if (!nt && K <= CSM_SMALL_FWD_K_ISA(CSM_ISA_ID)) {
        CSM_FN(csm_small_rows)(x, ldx, y, ldy, rows, K, 1);
        return;
    }
    CSM_T mx[CSM_LOG_CHUNK];
    double lg[CSM_LOG_CHUNK];
#if CSM_EXP_V
    CSM_T mp = 0, lp = 0;
#endif
    const ptrdiff_t chunk = nt ? CSM_LOG_NT_CHUNK(K, sizeof(CSM_T)) : CSM_LOG_CHUNK;
    for (ptrdiff_t r0 = 0; r0 < rows; r0 += chunk) {
        const ptrdiff_t nr = rows - r0 < chunk ? rows - r0 : chunk;
        ptrdiff_t r = 0;
#if CSM_EXP_V
        if (CSM_ROWS_AT_ONCE(K) == CSM_ROWS_MAX && nr >= CSM_ROWS_MAX) {
            /* A group's exps wait on its maxima's reduction; the next
             * group's maxima go before this group's sums, which hide it
             * (csm_log_sum_group_m). Measured as at csm_softmax_body, us
             * before -> after, AVX2 | AVX-512: 4096 x 128 186 -> 181 | 159
             * -> 154, 100000 x 64 2922 -> 2878 | 2686 -> 2590, 4096 x 100
             * 163 -> 153 | 144 -> 140, 4096 x 40 92 -> 84 | 83 -> 81,
             * 8192 x 64 and 2048 x 256 level | 3-4% faster. logsumexp,
             * whose loop stores nothing, was slower so (AVX2 100000 x 64
             * 2069 -> 2223 us, 2048 x 256 130 -> 138; AVX-512 2048 x 256
             * 114 -> 125) and keeps its order. */
            int normal = CSM_FN(csm_group_max_at)(CSM_ROWS_MAX, x + r0 * ldx, ldx, K, mx);
            for (; r + CSM_ROWS_MAX <= nr; r += CSM_ROWS_MAX) {
                const int more = r + 2 * CSM_ROWS_MAX <= nr;
                normal = CSM_FN(csm_log_sum_group_m)(CSM_ROWS_MAX, x + (r0 + r) * ldx, ldx,
                                                     nt ? NULL : y + (r0 + r) * ldy, ldy, K, pf, mx + r,
                                                     normal, lg + r, more ? x + (r0 + r + CSM_ROWS_MAX) * ldx : NULL,
                                                     mx + r + CSM_ROWS_MAX);
            }
        }
#endif
        for (; r < nr; ++r)
            CSM_FN(csm_log_sum_group)(1, x + (r0 + r) * ldx, ldx, nt ? NULL : y + (r0 + r) * ldy, ldy,
                                      K, pf, mx + r, lg + r);
#pragma omp simd
        for (ptrdiff_t r = 0; r < nr; ++r)
            lg[r] = CSM_PASTE(csm_log, CSM_PASTE(f64, CSM_ISA))(lg[r]);
        for (ptrdiff_t r = 0; r < nr; ++r) {
            const CSM_T *xr = x + (r0 + r) * ldx;
            CSM_T *yr = y + (r0 + r) * ldy;
            const CSM_T l = CSM_FN(csm_nan_q)((CSM_T)lg[r]), m = CSM_FN(csm_nan_max)(mx[r], l);
#if CSM_EXP_V
            if (nt) {
                const ptrdiff_t i = r0 + r;
                const CSM_FN(csm_nt_t) w = CSM_FN(csm_nt_start)(yr);
                CSM_FN(csm_nt_row)(CSM_NT_SHIFT, &w, yr, K, xr, NULL, m, l, i ? xr - ldx : xr, NULL, mp, lp,
                                   i == 0, i == rows - 1);
                mp = m;
                lp = l;
                continue;
            }
#endif
            ptrdiff_t i = 0;
#if CSM_EXP_V
            /* The elements up to the row's first register boundary in one
             * masked store, so that the loop's stores split no cache line
             * (NumPy's arrays past glibc's mmap threshold, 128 KiB at
             * first, start 16 bytes past one). Intel Xeon, one thread,
             * out=, x at NumPy's offset, medians of 15 calls alternating
             * ISAs and outputs, us with y on a boundary / 16 bytes past
             * one, without the head: float32
             * 4096 x 128 AVX-512 183-189 / 202-208, AVX2 194-207 / 205-219,
             * float64 AVX-512 386 / 438; with it 175-184 / 181-188, AVX2
             * 200 / 195-199, float64 381 / 380. The same operations, so the
             * same bits. */
            const ptrdiff_t hd = CSM_FN(csm_head_to_boundary)(yr, K);
            if (hd) {
                const CSM_XV v = CSM_XV_LOADM(xr, CSM_XM_FIRST(hd));
                CSM_XV_STOREN(yr, hd, CSM_XV_(sub)(CSM_XV_(sub)(v, CSM_XV_(set1)(m)), CSM_XV_(set1)(l)));
                i = hd;
            }
#endif
#pragma omp simd
            for (ptrdiff_t j = i; j < K; ++j)
                yr[j] = (xr[j] - m) - l;
        }
    }
}

static CSM_TARGET void CSM_FN(csm_log_softmax_core)(
    const CSM_T *x, ptrdiff_t ldx, const CSM_T *unused, ptrdiff_t ldu,
    CSM_T *y, ptrdiff_t ldy, ptrdiff_t rows, ptrdiff_t K, int pf)
{
    (void)unused; (void)ldu;
    CSM_FN(csm_log_softmax_body)(x, ldx, y, ldy, rows, K, pf, 0);
}

/* Whether csm_short_bwd takes rows of K elements. */
static CSM_INLINE int CSM_FN(csm_short_bwd_k)(ptrdiff_t K)
{
#ifdef CSM_VEC_BWD
    if (K >= CSM_VEC_BWD_MIN && K <= CSM_VEC_BWD_HI_)
        return 1;
#endif
    return K <= CSM_SMALL_BWD_K;
}

/* The backward passes' short rows: the row-vector path (AVX2, AVX-512) or
 * the lane path; 0 where the rows take the row path. */
static CSM_INLINE CSM_TARGET int CSM_FN(csm_short_bwd)(
    const CSM_T *y, ptrdiff_t ldy, const CSM_T *g, ptrdiff_t ldg, CSM_T *out, ptrdiff_t ldo,
    ptrdiff_t rows, ptrdiff_t K, const int logf)
{
    if (!CSM_FN(csm_short_bwd_k)(K))
        return 0;
#ifdef CSM_VEC_BWD
    if (K >= CSM_VEC_BWD_MIN) {
        CSM_FN(csm_vec_bwd_rows)(y, ldy, g, ldg, out, ldo, rows, K, logf);
        return 1;
    }
#endif
    CSM_FN(csm_small_bwd_rows)(y, ldy, g, ldg, out, ldo, rows, K, logf);
    return 1;
}

/* softmax backward: out = y * (g - sum(g * y)). One pass for the dot product,
 * one fused elementwise pass; the row stays in cache in between. In rows of
 * at most CSM_BWD_PIPE_BYTES the two are
 * pipelined across rows: the loop that takes row r + 1's dot product writes
 * row r's output (csm_row_dot_out), so the stores of one row overlap the
 * loads from memory of the next instead of following them; the sums and the
 * outputs are the same operations in the same order, so the bits are those
 * of one row at a time. AMD Zen 3, AVX2, caches made cold before each call,
 * best of 8, three alternations of the two builds, us before / after, one
 * thread: float32 16384 x 1000 without prefetches or streaming 8721-9475 /
 * 8236-8596, float64 18547-19041 / 16454-17376, float32 100000 x 64
 * 3021-3207 / 2809-3218; with them, and at two threads, within the noise
 * (9652-10246 / 9964-10349). out may be y or g (an output that overlaps an
 * input is that input exactly, or the wrapper gives the kernel a copy).
 * The backward passes prefetch the input rows ahead, not the output
 * row: the write prefetch cost more than the reads for ownership it hid.
 * AMD Zen 5, AVX-512, one thread, out=, us with and without it (best of 3
 * interleaved rounds): softmax_backward float32 4096 x 128 88.4 / 83.5,
 * 16384 x 1000 4828 / 4692, float64 16384 x 1000 11364 / 10301;
 * log_softmax_backward float32 16384 x 1000 4868 / 4624 (100000 x 64
 * 1390 / 1453 and the others within 3%). Without the input prefetches too,
 * float32 100000 x 64 took 1.16x and log_softmax_backward float64 16384 x
 * 1000 1.36x. */
static CSM_TARGET void CSM_FN(csm_softmax_backward_core)(
    const CSM_T *y, ptrdiff_t ldy, const CSM_T *g, ptrdiff_t ldg,
    CSM_T *out, ptrdiff_t ldo, ptrdiff_t rows, ptrdiff_t K, int pf)
{
    if (CSM_FN(csm_short_bwd)(y, ldy, g, ldg, out, ldo, rows, K, 0))
        return;
    if (rows <= 0)
        return;
    if (K * (ptrdiff_t)sizeof(CSM_T) > CSM_BWD_PIPE_BYTES) {
        for (ptrdiff_t r = 0; r < rows; ++r) {
            const CSM_T *yr = y + r * ldy, *gr = g + r * ldg;
            CSM_T *orow = out + r * ldo;
            /* The dot product in double, for the reason given at csm_row_sum. */
            const CSM_T d = (CSM_T)CSM_FN(csm_row_sum)(gr, yr, NULL, K, CSM_SUM_DOT,
                                                       CSM_PF_ROW_(csm_prefetch_row, gr, ldg, K, sizeof(CSM_T)),
                                                       CSM_PF_ROW_(csm_prefetch_row, yr, ldy, K, sizeof(CSM_T)),
                                                       NULL);
#pragma omp simd
            for (ptrdiff_t i = 0; i < K; ++i)
                orow[i] = yr[i] * (gr[i] - d);
            CSM_FN(csm_nan_row_if)(orow, 1, K, d);
        }
        return;
    }
    CSM_T d = (CSM_T)CSM_FN(csm_row_sum)(g, y, NULL, K, CSM_SUM_DOT,
                                         CSM_PF_ROW_(csm_prefetch_row, g, ldg, K, sizeof(CSM_T)),
                                         CSM_PF_ROW_(csm_prefetch_row, y, ldy, K, sizeof(CSM_T)), NULL);
    for (ptrdiff_t r = 0; r + 1 < rows; ++r) {
        const CSM_T *yn = y + (r + 1) * ldy, *gn = g + (r + 1) * ldg;
        const CSM_T dr = d;
        d = (CSM_T)CSM_FN(csm_row_dot_out)(gn, yn, K,
                                           CSM_PF_ROW_(csm_prefetch_row, gn, ldg, K, sizeof(CSM_T)),
                                           CSM_PF_ROW_(csm_prefetch_row, yn, ldy, K, sizeof(CSM_T)),
                                           y + r * ldy, g + r * ldg, out + r * ldo, dr);
        CSM_FN(csm_nan_row_if)(out + r * ldo, 1, K, dr);
    }
    {
        const CSM_T *yr = y + (rows - 1) * ldy, *gr = g + (rows - 1) * ldg;
        CSM_T *orow = out + (rows - 1) * ldo;
#pragma omp simd
        for (ptrdiff_t i = 0; i < K; ++i)
            orow[i] = yr[i] * (gr[i] - d);
        CSM_FN(csm_nan_row_if)(orow, 1, K, d);
    }
}

#if CSM_EXP_V
/* softmax_backward with streaming stores straight from the registers that
 * compute the output (csm_nt_row), where csm_nt_rows allows. The dot
 * product is taken before the row's output pass (not pipelined with the
 * row before, as csm_softmax_backward_core does): streamed stores do not
 * wait on reads for ownership for the next row's loads to overlap. */
static CSM_TARGET void CSM_FN(csm_softmax_backward_nt)(
    const CSM_T *y, ptrdiff_t ldy, const CSM_T *g, ptrdiff_t ldg,
    CSM_T *out, ptrdiff_t ldo, ptrdiff_t rows, ptrdiff_t K, int pf)
{
    const ptrdiff_t vw = CSM_XVW;
    /* The row before, while its last elements wait for the register across
     * the boundary (op not NULL), as in csm_log_softmax_backward_nt. */
    const CSM_T *yp = y, *gp = g;
    CSM_T *op = NULL, dp = 0;
    for (ptrdiff_t r = 0; r < rows; ++r) {
        const CSM_T *yr = y + r * ldy, *gr = g + r * ldg;
        CSM_T *orow = out + r * ldo;
        /* The dot product in double, for the reason given at csm_row_sum. */
        const CSM_T d = (CSM_T)CSM_FN(csm_row_sum)(gr, yr, NULL, K, CSM_SUM_DOT,
                                                   CSM_PF_ROW_(csm_prefetch_row, gr, ldg, K, sizeof(CSM_T)),
                                                   CSM_PF_ROW_(csm_prefetch_row, yr, ldy, K, sizeof(CSM_T)),
                                                   NULL);
        const CSM_FN(csm_nt_t) w = CSM_FN(csm_nt_start)(orow);
        const ptrdiff_t a = w.a;
        if (d != d) { /* a NaN row (csm_nan_rows), with regular stores */
            if (op && a)
                CSM_FN(csm_nt_part)(CSM_NT_BWD, op, K - vw, a, vw, yp, gp, dp, 0);
            CSM_NAN_ROW_(orow, 1, K, (const CSM_MW_T *)NULL);
            op = NULL;
            continue;
        }
        if (a && op)
            CSM_FN(csm_nt_join)(CSM_NT_BWD, &w, orow, K, yr, gr, d, 0, yp, gp, dp, 0);
        else if (a)
            CSM_FN(csm_nt_part)(CSM_NT_BWD, orow, 0, 0, a, yr, gr, d, 0);
        CSM_FN(csm_nt_body)(CSM_NT_BWD, &w, orow, K, yr, gr, d, 0, NULL, NULL);
        op = orow;
        yp = yr;
        gp = gr;
        dp = d;
    }
    if (op && CSM_FN(csm_nt_tail)(op, K))
        CSM_FN(csm_nt_part)(CSM_NT_BWD, op, K - vw, CSM_FN(csm_nt_tail)(op, K), vw, yp, gp, dp, 0);
}
#endif

/* The backward passes' rows: streamed straight from the registers (nt)
 * where csm_nt_rows allows, elsewhere through csm_streamed's scratch
 * (core). The scratch's extra pass through L1 cost what the streaming
 * saved: AMD Zen 3, AVX2, softmax_backward float32 out=, operands rotated
 * past the L3, us regular / through 32 KiB of scratch / straight from the
 * registers, in a C model of these loops: 100000 x 64 one thread 4163 /
 * 4717 / 3440, two 3099 / 3021 / 2398; 16384 x 1000 12451 / 11435 / 9183
 * and 7950 / 7264 / 5964 (_engine.pyx has log_softmax_backward's). */
#if CSM_EXP_V
  #define CSM_NT_FN_(f) CSM_FN(f)
#else
  #define CSM_NT_FN_(f) NULL
#endif
static CSM_INLINE CSM_TARGET void CSM_FN(csm_bwd_rows)(
    CSM_FN(csm_core_t) nt, CSM_FN(csm_core_t) core, const CSM_T *a, ptrdiff_t lda, const CSM_T *b,
    ptrdiff_t ldb, CSM_T *out, ptrdiff_t ldo, ptrdiff_t rows, ptrdiff_t K, int flags)
{
    if (nt && (flags & CSM_RUN_STREAM) && !CSM_FN(csm_short_bwd_k)(K) && CSM_FN(csm_nt_rows)(out, ldo, K)) {
        nt(a, lda, b, ldb, out, ldo, rows, K, flags & CSM_RUN_PREFETCH);
        CSM_STREAM_FENCE();
        csm_count_streamed();
        return;
    }
    CSM_FN(csm_streamed)(core, a, lda, b, ldb, out, ldo, rows, K, flags);
}

static CSM_TARGET void CSM_FN(csm_softmax_backward_rows)(
    const CSM_T *a, ptrdiff_t lda, const CSM_T *b, ptrdiff_t ldb,
    CSM_T *out, ptrdiff_t ldo, ptrdiff_t rows, ptrdiff_t K, int flags)
{
    CSM_FN(csm_bwd_rows)(CSM_NT_FN_(csm_softmax_backward_nt), CSM_FN(csm_softmax_backward_core),
                         a, lda, b, ldb, out, ldo, rows, K, flags);
}

/* One row of log_softmax backward: out = g - exp(y) * sg. `dom` (a
 * constant, csm_log_bwd_dom): 1, exp over every y; else y <= 0 or NaN, exp
 * on the softmax domain (csm_exp_neg), whose bits there are exp's. The rows
 * ahead are prefetched here (pg, py), in the pass the exp makes
 * compute-bound, not in the sum's pass, which is memory-bound already
 * (16384 x 1000 float64, one thread, AVX-512: 1.8x the 3-array pass with the
 * prefetches in the sum's pass). */
static CSM_INLINE CSM_TARGET void CSM_FN(csm_log_bwd_row)(const CSM_T *yr, const CSM_T *gr, CSM_T *orow,
                                                          ptrdiff_t K, CSM_T sg, const char *pg,
                                                          const char *py, const int dom)
{
    const int upper = dom == 1;
    ptrdiff_t i = 0;
    for (; i + CSM_PARTS <= K; i += CSM_PARTS) {
        CSM_PREFETCH_PARTS_(pg, i, 0);
        CSM_PREFETCH_PARTS_(py, i, 0);
#if CSM_EXP_V
  #if CSM_EXP_V_LOCKSTEP
        if (dom == 2) { /* csm_exp_v_normal_n's four registers, the part's */
            _Static_assert(CSM_PARTS == 4 * CSM_XVW, "a part of log_softmax backward's row is four registers");
            CSM_XV v[4];
            for (int k = 0; k < 4; ++k)
                v[k] = CSM_XV_(loadu)(yr + i + k * CSM_XVW);
            CSM_FN(csm_exp_v_normal_n)(v);
            for (int k = 0; k < 4; ++k)
                CSM_XV_(storeu)(orow + i + k * CSM_XVW,
                                CSM_XV_(fnmadd)(v[k], CSM_XV_(set1)(sg), CSM_XV_(loadu)(gr + i + k * CSM_XVW)));
            continue;
        }
  #endif
        if (!upper || CSM_EXP_V_UP) {
            for (ptrdiff_t h = 0; h < CSM_PARTS; h += CSM_XVW)
                CSM_XV_(storeu)(orow + i + h,
                                CSM_XV_(fnmadd)(CSM_FN(csm_lbwd_exp_v)(CSM_XV_(loadu)(yr + i + h), dom),
                                                CSM_XV_(set1)(sg), CSM_XV_(loadu)(gr + i + h)));
            continue;
        }
#endif
#pragma omp simd
        for (ptrdiff_t p = 0; p < CSM_PARTS; ++p)
            orow[i + p] = gr[i + p] - (upper ? CSM_FN(csm_exp)(yr[i + p]) : CSM_FN(csm_exp_neg)(yr[i + p])) * sg;
    }
#if CSM_EXP_V
    /* The tail in registers too (see CSM_XM_FIRST): a scalar exp per
     * element cost more than the rest of a short row. */
    if (!upper || CSM_EXP_V_UP)
        for (; i < K; i += CSM_XVW) {
            const CSM_XM k = CSM_XM_FIRST(K - i < CSM_XVW ? K - i : CSM_XVW);
            CSM_XV_STOREN(orow + i, K - i < CSM_XVW ? K - i : CSM_XVW,
                          CSM_XV_(fnmadd)(CSM_FN(csm_lbwd_exp_v)(CSM_XV_LOADM(yr + i, k), dom),
                                          CSM_XV_(set1)(sg), CSM_XV_LOADM(gr + i, k)));
        }
#endif
#pragma omp simd
    for (ptrdiff_t p = 0; p < K - i; ++p)
        orow[i + p] = gr[i + p] - (upper ? CSM_FN(csm_exp)(yr[i + p]) : CSM_FN(csm_exp_neg)(yr[i + p])) * sg;
}

/* Whether a row of log_softmax backward takes the whole exp (1) or the
 * softmax domain's (0; csm_log_softmax_backward_core says where). What the
 * check costs under AVX2, and what was tried against it: AMD Zen 3, one
 * thread, a C harness of these loops built as setup.py builds them, best of
 * 3000-20000 calls, ns per element. Without the check, and so without the
 * choice it makes between two loops, float64 8 x 1000 (in L2) took
 * 0.96-0.98 against 1.11-1.14 with it, 32 x 1000 0.98-1.03 against
 * 1.15-1.22, 512 x 64 0.98-1.02 against 1.19-1.25; from DRAM, with the
 * prefetches, float32 100000 x 64 0.49-0.51 against 0.53-0.55, float64
 * 16384 x 1000 1.22-1.25 against 1.30-1.41 (1.30-1.31 streamed). No correct
 * form kept that: the max of y in the sum's pass (which then reads y beside
 * g) measured 1.14-1.23; an AND of the sign bits of y - 2^-1074 there
 * 1.13-1.21; no row check but a test of each register against [-708, 0] in
 * the output pass, with a slower exp for a register outside it, 1.25-1.34.
 * The whole exp's row out of line (noinline, cold) took float32 16 x 1000
 * 0.38-0.40 against 0.40-0.43 in the harness, and float64 the same; in the
 * built module, alternating processes, two timings of float32 4096 x 128
 * disagreed within the host's noise (best of 300 calls 0.467-0.513 ns per
 * element against 0.453-0.462; per-call ratio to a 3-array add 1.77-1.88
 * against 1.93-2.33), so the row keeps both forms inline. The check and the
 * sum of g of the row ahead inside this row's output loop, as
 * csm_row_dot_out pipelines softmax_backward's dot product (the exp was to
 * hide their loads), gained nothing either: float32 100000 x 64 from DRAM
 * 0.542-0.608 against 0.549-0.607 for the same loops one after the other,
 * 512 x 64 in L2 0.397-0.412 against 0.398-0.409. */
static CSM_INLINE CSM_TARGET int CSM_FN(csm_log_bwd_upper_of)(CSM_T max_y)
{
    return CSM_ISA_ID == 2 || !(max_y <= 0);
}
static CSM_INLINE CSM_TARGET int CSM_FN(csm_log_bwd_upper)(const CSM_T *yr, ptrdiff_t K)
{
    return CSM_FN(csm_log_bwd_upper_of)(CSM_FN(csm_row_max)(yr, K));
}

/* A row's `dom` for csm_log_bwd_row: csm_log_bwd_upper's choice, and where
 * the ISA tests the exp's arguments (CSM_EXP_V_NORMAL) whether any y is
 * below the bound, from the minima kept beside the max: the row's exp then
 * takes one form for every register, as softmax's rows do (csm_exp_v_dom).
 * Tested register by register, y with a fifth of it -inf (the log_softmax
 * of an input masked by -inf) mispredicted a branch in about one register
 * of three. AVX2 kernels on an Intel Xeon, one thread, out=, best of 60,
 * ms, y with that -inf before -> after (without it before and after):
 * float64 1000 x 1000 1.44-1.48 -> 0.88-0.89 (0.83-0.89), 15625 x 64
 * 1.60-1.67 -> 0.82-0.85 (0.81-0.87), 4096 x 128 0.78-0.82 -> 0.44-0.45;
 * float32 1000 x 1000 0.48-0.50 -> 0.41-0.42 (0.41), 15625 x 64 0.52-0.53
 * -> 0.42-0.43.
 * The check costs a pass over y: AMD Zen 4, AVX2 kernels, float32, one
 * thread, out=, best of three rounds, us with it / with dom fixed at 2 (not
 * correct in general; the measure of what it costs): 100000 x 64 2486-2545
 * / 2174, 4096 x 128 152 / 132, 16384 x 1000 6203-6358 / 5592. Its max and
 * minimum taken in the loop that sums g instead (one loop reading g and y)
 * gave 2609-2714, 146-147 and 7622-7772, so it keeps its own pass.
 */
static CSM_INLINE CSM_TARGET int CSM_FN(csm_log_bwd_dom)(const CSM_T *yr, ptrdiff_t K)
{
#if CSM_EXP_V_TEST
    if (K >= 16) {
        CSM_T m;
        int lo_ok;
        CSM_FN(csm_rows_max_v)(1, &yr, NULL, K, &m, NULL, &lo_ok);
        return CSM_FN(csm_log_bwd_upper_of)(m) ? 1 : lo_ok ? 2 : -1;
    }
#endif
    return CSM_FN(csm_log_bwd_upper)(yr, K);
}

/* A row of log_softmax backward with regular stores, a row whose sum of g
 * is NaN rewritten by csm_nan_rows. */
static CSM_INLINE CSM_TARGET void CSM_FN(csm_log_bwd_row_at)(const CSM_T *yr, const CSM_T *gr, CSM_T *orow,
                                                             ptrdiff_t K, CSM_T sg, const char *pg,
                                                             const char *py, int dom)
{
    if (dom == 1)
        CSM_FN(csm_log_bwd_row)(yr, gr, orow, K, sg, pg, py, 1);
    else if (dom == 2)
        CSM_FN(csm_log_bwd_row)(yr, gr, orow, K, sg, pg, py, 2);
    else if (dom == -1)
        CSM_FN(csm_log_bwd_row)(yr, gr, orow, K, sg, pg, py, -1);
    else
        CSM_FN(csm_log_bwd_row)(yr, gr, orow, K, sg, pg, py, 0);
    CSM_FN(csm_nan_row_if)(orow, 1, K, sg);
}

/* log_softmax backward: out = g - exp(y) * sum(g). out may be y or g. A
 * row whose y are all <= 0 (a log_softmax's are) takes the exp of the
 * softmax domain where that costs less than the whole exp: under AVX2
 * (float32: its scale is two integer operations and a multiply fewer;
 * float64: AVX2 has no 64-bit arithmetic shift, so the whole exp has no
 * register form) and baseline. The max reads y into L1 for the pass after
 * it. Under AVX-512 the whole exp's scale is one vscalef (float32 too,
 * csm_exp_v), and the check would cost alone.
 * AMD Zen 5, one thread, out=, us before and after: AVX2 float64 16384 x
 * 1000 17707 -> 14736, 4096 x 128 565 -> 453; float32 4096 x 128 174 ->
 * 163; baseline float32 4096 x 128 635 -> 468. */
static CSM_TARGET void CSM_FN(csm_log_softmax_backward_core)(
    const CSM_T *y, ptrdiff_t ldy, const CSM_T *g, ptrdiff_t ldg,
    CSM_T *out, ptrdiff_t ldo, ptrdiff_t rows, ptrdiff_t K, int pf)
{
    if (CSM_FN(csm_short_bwd)(y, ldy, g, ldg, out, ldo, rows, K, 1))
        return;
    for (ptrdiff_t r = 0; r < rows; ++r) {
        const CSM_T *yr = y + r * ldy, *gr = g + r * ldg;
        CSM_T *orow = out + r * ldo;
        const CSM_T sg = (CSM_T)CSM_FN(csm_row_sum)(gr, gr, NULL, K, CSM_SUM_PLAIN,
                                                    NULL, NULL, NULL);
        CSM_FN(csm_log_bwd_row_at)(yr, gr, orow, K, sg,
                                   CSM_PF_ROW_(csm_prefetch_row, gr, ldg, K, sizeof(CSM_T)),
                                   CSM_PF_ROW_(csm_prefetch_row, yr, ldy, K, sizeof(CSM_T)),
                                   CSM_FN(csm_log_bwd_dom)(yr, K));
    }
}

#if CSM_EXP_V
/* log_softmax backward with streaming stores straight from the registers
 * (csm_nt_join, csm_nt_body), where csm_nt_rows allows: each element is
 * csm_log_bwd_row's g - exp(y) sum(g), with its choice of exp, so the bits
 * are the same. A row that needs the whole exp where it has no register form
 * (AVX2 float64, a row with y > 0: not a log_softmax's output), or whose
 * sum of g is NaN (csm_nan_rows), takes the regular stores of
 * csm_log_bwd_row_at, and the rows beside it end and begin there as at the
 * ends of the block. */
static CSM_TARGET void CSM_FN(csm_log_softmax_backward_nt)(
    const CSM_T *y, ptrdiff_t ldy, const CSM_T *g, ptrdiff_t ldg,
    CSM_T *out, ptrdiff_t ldo, ptrdiff_t rows, ptrdiff_t K, int pf)
{
    const ptrdiff_t vw = CSM_XVW;
    /* The row before, while its last elements wait for the register across
     * the boundary (op not NULL). */
    const CSM_T *yp = y, *gp = g;
    CSM_T *op = NULL, sp = 0, ep = 0;
    for (ptrdiff_t r = 0; r < rows; ++r) {
        const CSM_T *yr = y + r * ldy, *gr = g + r * ldg;
        CSM_T *orow = out + r * ldo;
        const CSM_FN(csm_nt_t) w = CSM_FN(csm_nt_start)(orow);
        const ptrdiff_t a = w.a;
        const CSM_T sg = (CSM_T)CSM_FN(csm_row_sum)(gr, gr, NULL, K, CSM_SUM_PLAIN, NULL, NULL, NULL);
        const char *pg = CSM_PF_ROW_(csm_prefetch_row, gr, ldg, K, sizeof(CSM_T));
        const char *py = CSM_PF_ROW_(csm_prefetch_row, yr, ldy, K, sizeof(CSM_T));
        const int dom = CSM_FN(csm_log_bwd_dom)(yr, K);
        if ((dom == 1 && !CSM_EXP_V_UP) || sg != sg) {
            if (op && a)
                CSM_FN(csm_nt_part)(CSM_NT_LBWD, op, K - vw, a, vw, yp, gp, sp, ep);
            CSM_FN(csm_log_bwd_row_at)(yr, gr, orow, K, sg, pg, py, dom);
            op = NULL;
            continue;
        }
        if (a && op)
            CSM_FN(csm_nt_join)(CSM_NT_LBWD, &w, orow, K, yr, gr, sg, (CSM_T)dom, yp, gp, sp, ep);
        else if (a)
            CSM_FN(csm_nt_part)(CSM_NT_LBWD, orow, 0, 0, a, yr, gr, sg, (CSM_T)dom);
        /* dom a constant in each call, as csm_log_bwd_row_at takes it. */
        if (dom == 1)
            CSM_FN(csm_nt_body)(CSM_NT_LBWD, &w, orow, K, yr, gr, sg, 1, py, pg);
        else if (dom == 2)
            CSM_FN(csm_nt_body)(CSM_NT_LBWD, &w, orow, K, yr, gr, sg, 2, py, pg);
        else if (dom == -1)
            CSM_FN(csm_nt_body)(CSM_NT_LBWD, &w, orow, K, yr, gr, sg, -1, py, pg);
        else
            CSM_FN(csm_nt_body)(CSM_NT_LBWD, &w, orow, K, yr, gr, sg, 0, py, pg);
        op = orow;
        yp = yr;
        gp = gr;
        sp = sg;
        ep = (CSM_T)dom;
    }
    if (op && CSM_FN(csm_nt_tail)(op, K))
        CSM_FN(csm_nt_part)(CSM_NT_LBWD, op, K - vw, CSM_FN(csm_nt_tail)(op, K), vw, yp, gp, sp, ep);
}
#endif

static CSM_TARGET void CSM_FN(csm_log_softmax_backward_rows)(
    const CSM_T *a, ptrdiff_t lda, const CSM_T *b, ptrdiff_t ldb,
    CSM_T *out, ptrdiff_t ldo, ptrdiff_t rows, ptrdiff_t K, int flags)
{
    CSM_FN(csm_bwd_rows)(CSM_NT_FN_(csm_log_softmax_backward_nt), CSM_FN(csm_log_softmax_backward_core),
                         a, lda, b, ldb, out, ldo, rows, K, flags);
}
#undef CSM_NT_FN_

/* f_c = exp(r_c - M) / S, the scale of a chunk whose exps were taken
 * against its reference r_c (csm_long_chunk: its own max or the max of the
 * chunks before it; +0 for r_c = -inf): csm_long_softmax_kept and the
 * streamed rows of csm_long_rows. */
static CSM_INLINE CSM_TARGET CSM_T CSM_FN(csm_long_chunk_scale)(CSM_T m, CSM_T M, double S)
{
    return m == -CSM_INF_T ? (CSM_T)0
        : (CSM_T)(CSM_PASTE(csm_exp_neg, CSM_PASTE(f64, CSM_ISA))((double)m - (double)M) / S);
}

/* A softmax row past L2 whose M is not finite or whose S is NaN or 0 (a NaN
 * or a +inf that takes part, or nothing finite that does): NaN where an
 * element takes part and +0 where it is masked, as exp(x - M) / S gives
 * there. Returns 1 for such a row, which it has written; 0 otherwise. */
static CSM_INLINE CSM_TARGET int CSM_FN(csm_long_softmax_nan)(const CSM_MW_T *mk, CSM_T *y,
                                                             ptrdiff_t K, CSM_T M, double S)
{
    if (M - M == 0 && S > 0 && S - S == 0)
        return 0;
#pragma omp simd
    for (ptrdiff_t i = 0; i < K; ++i)
        y[i] = !mk || mk[i] ? (CSM_T)NAN : (CSM_T)0;
    return 1;
}

/* softmax of one row past L2 of at most CSM_LONG_KEEP elements, into y (y
 * may be x), masked where mk is not NULL: the max and the sum in one read
 * (csm_long_max_sum), which also stores each chunk's exp(x - r_c) in y, then
 * each chunk of y scaled by f_c (csm_long_chunk_scale). One exp per
 * element, as the rows in cache take, where recomputing exp(x - M) in a
 * second read of x took two: y is still in L2 or L3 for the scaling pass,
 * and costs it no more than the second read of x did. f_c, computed in
 * double and rounded once, adds the half ulp that the rounding of 1 / S
 * added before; a chunk of only -inf or masked elements (r_c = -inf) is +0
 * times 0. Regular stores only: the scaling pass rewrites lines that the
 * first pass left dirty in cache, and streaming them would write each line
 * to memory twice (its eviction, then the streamed store); the streamed
 * rows of csm_long_rows take these bits another way. pf: whether both
 * passes prefetch ahead of themselves (the next chunk of x and of y, and y
 * 4 KiB ahead). The engine asks for them past L2, where every such row is
 * (_engine.pyx has the numbers; an AMD Zen 4 with a 32 KiB L1d ran without
 * them until the first pass took its chunks in one read). The scaling pass
 * of a row beside the next row's first pass (as csm_long_rows runs a
 * streamed output pass, here with regular stores in place) took longer: the
 * same Zen 4, 8 x 2^20 float32 out=, before the prefetches, one process
 * alternating blocks of four rows (beside) and of one (after), best of
 * eight rounds, ms, beside / after: one thread AVX-512 3.35 / 2.95, AVX2
 * 4.52 / 3.20; two AVX-512 2.45 / 2.25, AVX2 2.64 / 2.31. */
static CSM_INLINE CSM_TARGET void CSM_FN(csm_long_softmax_kept)(
    const CSM_T *x, const CSM_MW_T *mk, CSM_T *y, ptrdiff_t K, int pf)
{
    enum { AHEAD = CSM_PREFETCH_BYTES / sizeof(CSM_T) };
    CSM_T mc[CSM_LONG_KEEP / CSM_LONG_CHUNK];
    CSM_T M;
    const double S = CSM_FN(csm_long_max_sum)(x, mk, K, &M, y, mc, pf, NULL);
    if (CSM_FN(csm_long_softmax_nan)(mk, y, K, M, S))
        return;
    for (ptrdiff_t j = 0; j < K; j += CSM_LONG_CHUNK) {
        const ptrdiff_t n = K - j < CSM_LONG_CHUNK ? K - j : CSM_LONG_CHUNK;
        const CSM_T f = CSM_FN(csm_long_chunk_scale)(mc[j / CSM_LONG_CHUNK], M, S);
        CSM_T *yj = y + j;
        const char *py = pf ? (const char *)((uintptr_t)(yj + AHEAD)) : NULL;
        ptrdiff_t i = 0;
        for (; i + CSM_PARTS <= n; i += CSM_PARTS) {
            CSM_PREFETCH_PARTS_(py, i, 1);
#pragma omp simd
            for (ptrdiff_t p = 0; p < CSM_PARTS; ++p)
                yj[i + p] *= f;
        }
#pragma omp simd
        for (ptrdiff_t p = 0; p < n - i; ++p)
            yj[i + p] *= f;
    }
}

/* n elements of a long row's output pass from x into dst: (x - m) - c
 * (log_out) or exp(x - m) c, with m and c the row's (log_softmax, softmax
 * past CSM_LONG_KEEP) or the chunk's (r_c and f_c: the kept rows' bits);
 * px and py, where not NULL, the lines to prefetch ahead of x and dst. */
static CSM_INLINE CSM_TARGET void CSM_FN(csm_long_out_chunk)(const CSM_T *xj, CSM_T *dst, ptrdiff_t n,
                                                            CSM_T m, CSM_T c, const int log_out,
                                                            const char *px, const char *py)
{
    ptrdiff_t i = 0;
    if (log_out) {
        for (; i + CSM_PARTS <= n; i += CSM_PARTS) {
            CSM_PREFETCH_PARTS_(px, i, 0);
            CSM_PREFETCH_PARTS_(py, i, 1);
#pragma omp simd
            for (ptrdiff_t p = 0; p < CSM_PARTS; ++p)
                dst[i + p] = (xj[i + p] - m) - c;
        }
#pragma omp simd
        for (ptrdiff_t p = 0; p < n - i; ++p)
            dst[i + p] = (xj[i + p] - m) - c;
    } else {
        for (; i + CSM_PARTS <= n; i += CSM_PARTS) {
            CSM_PREFETCH_PARTS_(px, i, 0);
            CSM_PREFETCH_PARTS_(py, i, 1);
#if CSM_EXP_V
            for (ptrdiff_t h = 0; h < CSM_PARTS; h += CSM_XVW)
                CSM_XV_(storeu)(dst + i + h, CSM_XV_(mul)(CSM_FN(csm_exp_v)(CSM_XV_(sub)(
                    CSM_XV_(loadu)(xj + i + h), CSM_XV_(set1)(m)), 0), CSM_XV_(set1)(c)));
#else
#pragma omp simd
            for (ptrdiff_t p = 0; p < CSM_PARTS; ++p)
                dst[i + p] = CSM_FN(csm_exp_neg)(xj[i + p] - m) * c;
#endif
        }
        CSM_FN(csm_exp_lanes)(dst + i, xj + i, NULL, m, n - i, 0);
#pragma omp simd
        for (ptrdiff_t p = 0; p < n - i; ++p)
            dst[i + p] *= c;
    }
}

/* softmax (log_out = 0) and log_softmax (1) of rows longer than the L2 cache.
 * The row kernels above take three passes over the output (exp stored, then
 * scaled) because a row stays in cache between them; a row past L2 would
 * cost memory a read and a write per pass. Here the row is read twice and
 * the output written once: the max and the sum in one read
 * (csm_long_max_sum), then an output pass that recomputes exp(x - max) and
 * writes it out, streamed (csm_out_pass_t) where the caller asked; a
 * streamed row's output pass that needs no scratch row runs beside the
 * next row's first pass. Every other path to a row this long (Fortran
 * order, other strides, a mask) ends here or in csm_long_max_sum, so its
 * bits are these. Measured: see CSM_LONG_ROW in _rows.h. */
static CSM_TARGET void CSM_FN(csm_long_rows)(
    const CSM_T *x, ptrdiff_t ldx, CSM_T *y, ptrdiff_t ldy, ptrdiff_t rows, ptrdiff_t K,
    int log_out, int flags)
{
    const int stream = flags & CSM_RUN_STREAM;
    CSM_T buf[CSM_SCRATCH];
    /* The scratch row of softmax's streamed kept rows (ks f_c streams out of
     * it: DRAM sees one read of x and one write of y, as a copy, and each
     * element takes one exp). Where it cannot be had, the streamed rows
     * compute their exps again (the same bits). */
    CSM_T *ks = NULL;
#if CSM_EXP_V
    if (stream && (flags & CSM_RUN_KEEP) && !log_out && K <= CSM_LONG_KEEP)
        ks = (CSM_T *)malloc((size_t)K * sizeof(CSM_T));
    /* The streamed output pass of the row before, run beside this row's
     * first pass (csm_out_pass_t says why); f: a kept row's chunk scales. */
    CSM_FN(csm_out_pass_t) pass;
    int pending = 0;
    CSM_T f[CSM_LONG_KEEP / CSM_LONG_CHUNK];
#endif
    /* The output pass prefetches CSM_PREFETCH_BYTES ahead of itself in the
     * row: the hardware's streamers stop at every 4 KiB page. */
    enum { AHEAD = CSM_PREFETCH_BYTES / sizeof(CSM_T) };
    for (ptrdiff_t r = 0; r < rows; ++r) {
        const CSM_T *xr = x + r * ldx;
        CSM_T *yr = y + r * ldy;
        /* softmax rows of at most CSM_LONG_KEEP elements have the kept
         * rows' bits, exp(x - r_c) * f_c chunk by chunk: kept in y where
         * the stores are regular, in a scratch row or recomputed from x
         * where they stream (csm_long_softmax_kept says why). */
        const int kept = !log_out && K <= CSM_LONG_KEEP;
        if (kept && !stream) {
            CSM_FN(csm_long_softmax_kept)(xr, NULL, yr, K, flags & CSM_RUN_PREFETCH);
            continue;
        }
#if CSM_EXP_V
        if (stream && (ks || !kept)) {
            CSM_T M, mc[CSM_LONG_KEEP / CSM_LONG_CHUNK];
            const double s = CSM_FN(csm_long_max_sum)(xr, NULL, K, &M, ks, ks ? mc : NULL, 1,
                                                      pending ? &pass : NULL);
            if (pending)
                CSM_FN(csm_out_pass_close)(&pass);
            pending = 0;
            if (ks) {
                /* Whole, at once: beside the next row's first pass (with a
                 * second scratch row for its exps) it measured slower
                 * (docs/design.md). */
                if (CSM_FN(csm_long_softmax_nan)(NULL, yr, K, M, s))
                    continue;
                for (ptrdiff_t c = 0; c * CSM_LONG_CHUNK < K; ++c)
                    f[c] = CSM_FN(csm_long_chunk_scale)(mc[c], M, s);
                CSM_FN(csm_out_pass_open)(&pass, ks, yr, K, 0, 0, f, CSM_OUT_KEPT);
                CSM_FN(csm_out_pass_close)(&pass);
            } else {
                /* A NaN row: softmax's the quiet NaN (csm_nan_rows),
                 * log_softmax's scalars (csm_nan_q, csm_nan_max). */
                if (!log_out && CSM_FN(csm_long_softmax_nan)(NULL, yr, K, M, s))
                    continue;
                const CSM_T c = log_out
                    ? CSM_FN(csm_nan_q)((CSM_T)CSM_PASTE(csm_log, CSM_PASTE(f64, CSM_ISA))(s))
                    : (CSM_T)(1.0 / s);
                CSM_FN(csm_out_pass_open)(&pass, xr, yr, K, log_out ? CSM_FN(csm_nan_max)(M, c) : M, c,
                                          NULL, log_out ? CSM_OUT_LOG : CSM_OUT_EXP);
                pending = 1;
            }
            continue;
        }
#endif
        const char *pfx = (const char *)((uintptr_t)xr + AHEAD * sizeof(CSM_T));
        const char *pfy = (const char *)((uintptr_t)yr + AHEAD * sizeof(CSM_T));
        CSM_T M, mc[CSM_LONG_KEEP / CSM_LONG_CHUNK];
        const double s = CSM_FN(csm_long_max_sum)(xr, NULL, K, &M, NULL, kept ? mc : NULL, 1, NULL);
        if (!log_out && CSM_FN(csm_long_softmax_nan)(NULL, yr, K, M, s))
            continue;
        const CSM_T cM = log_out
            ? CSM_FN(csm_nan_q)((CSM_T)CSM_PASTE(csm_log, CSM_PASTE(f64, CSM_ISA))(s))
            : (CSM_T)(1.0 / s);
        if (log_out)
            M = CSM_FN(csm_nan_max)(M, cM);
        for (ptrdiff_t j = 0; j < K; j += CSM_LONG_CHUNK) {
            const ptrdiff_t n = K - j < CSM_LONG_CHUNK ? K - j : CSM_LONG_CHUNK;
            const CSM_T mj = kept ? mc[j / CSM_LONG_CHUNK] : M;
            const CSM_T m = kept && mj == -CSM_INF_T ? (CSM_T)0 : mj;
            const CSM_T c = kept ? CSM_FN(csm_long_chunk_scale)(mj, M, s) : cM;
            CSM_FN(csm_long_out_chunk)(xr + j, stream ? buf : yr + j, n, m, c, log_out,
                                       pfx + j * sizeof(CSM_T), stream ? NULL : pfy + j * sizeof(CSM_T));
            if (stream)
                CSM_FN(csm_stream_copy)(yr + j, buf, n);
        }
    }
#if CSM_EXP_V
    if (pending)
        CSM_FN(csm_out_pass_close)(&pass);
#endif
    free(ks);
    if (stream) {
        CSM_STREAM_FENCE();
        csm_count_streamed();
    }
}

/* n columns of g rows between a strided array (row l at a + l ars, column
 * j at + j acs) and buf, row l at buf + l ld: in = 1 into buf, in = 0
 * back. Rows one apart (Fortran order) move sixteen at a time in the lane
 * layout's tiles (csm_lanes_move, with the array's column stride). */
static CSM_INLINE CSM_TARGET void CSM_FN(csm_rows_move)(CSM_T *a, ptrdiff_t ars, ptrdiff_t acs, CSM_T *buf,
                                                       ptrdiff_t ld, ptrdiff_t n, ptrdiff_t g, const int in)
{
    if (ars == 1)
        for (; g >= CSM_LANES; g -= CSM_LANES, a += CSM_LANES, buf += CSM_LANES * ld)
            CSM_FN(csm_lanes_move)(buf, ld, a, acs, n, CSM_LANES, !in);
    /* Row by row in spans of columns whose lines stay in L1 for the next
     * row: 256 columns of 16 rows are 16 KiB of float32. */
    enum { SPAN = 256 };
    for (ptrdiff_t j0 = 0; j0 < n; j0 += SPAN) {
        const ptrdiff_t e = n - j0 < SPAN ? n : j0 + SPAN;
        for (ptrdiff_t l = 0; l < g; ++l) {
            CSM_T *al = a + l * ars, *bl = buf + l * ld;
            if (in)
                for (ptrdiff_t j = j0; j < e; ++j)
                    bl[j] = al[j * acs];
            else
                for (ptrdiff_t j = j0; j < e; ++j)
                    al[j * acs] = bl[j];
        }
    }
}

/* softmax (log_out = 0) and log_softmax (1) of rows past L2 that are not
 * contiguous (Fortran order, other strides), from csm_lanes_rows: the steps
 * of csm_long_rows chunk by chunk over a group of up to CSM_LONG_GROUP
 * rows, each chunk of the group gathered into buf as rows (csm_rows_move),
 * so that a column's elements of the group are read together, in Fortran
 * order one run of the column, where gathering a whole row at a time read
 * each line of the array once per row it holds. The first read takes each
 * chunk's max and sum as csm_long_max_sum does (csm_long_chunk, each row
 * its own *fuse), the second the output as csm_long_rows' chunks do
 * (csm_long_out_chunk, with a kept row's r_c and f_c), so the bits are
 * those of C order. buf holds CSM_LONG_GROUP rows
 * of CSM_LONG_CHUNK, then each row's chunk maxima
 * (csm_long_strided_scratch). The output may be the input (the same
 * strides): each chunk is read whole before it is written. */
static CSM_NOINLINE CSM_TARGET void CSM_FN(csm_long_rows_strided)(
    const CSM_T *a, ptrdiff_t ars, ptrdiff_t acs, CSM_T *out, ptrdiff_t ors, ptrdiff_t ocs,
    ptrdiff_t rows, ptrdiff_t K, int log_out, CSM_T *buf)
{
    enum { G = CSM_LONG_GROUP, C = CSM_LONG_CHUNK };
    const ptrdiff_t nch = (K + C - 1) / C;
    const int kept = !log_out && K <= CSM_LONG_KEEP;
    CSM_T *mc = buf + G * C;
    for (ptrdiff_t r0 = 0; r0 < rows; r0 += G) {
        const ptrdiff_t g = rows - r0 < G ? rows - r0 : G;
        CSM_T *ag = (CSM_T *)(a + r0 * ars), *og = out + r0 * ors;
        CSM_T M[G], cM[G];
        double S[G];
        int nan_row[G], fuse[G];
        for (ptrdiff_t l = 0; l < g; ++l) {
            M[l] = -CSM_INF_T;
            S[l] = 0.0;
            fuse[l] = 1;
        }
        for (ptrdiff_t c = 0; c < nch; ++c) {
            const ptrdiff_t j = c * C, n = K - j < C ? K - j : C;
            CSM_FN(csm_rows_move)(ag + j * acs, ars, acs, buf, C, n, g, 1);
            for (ptrdiff_t l = 0; l < g; ++l)
                CSM_FN(csm_long_chunk)(buf + l * C, NULL, NULL, n, c > 0, &S[l], &M[l], &fuse[l],
                                       &mc[l * nch + c], NULL, NULL, NULL);
        }
        for (ptrdiff_t l = 0; l < g; ++l) {
            /* csm_long_softmax_nan's rows, all NaN */
            nan_row[l] = kept && !(M[l] - M[l] == 0 && S[l] > 0 && S[l] - S[l] == 0);
            cM[l] = log_out ? (CSM_T)CSM_PASTE(csm_log, CSM_PASTE(f64, CSM_ISA))(S[l]) : (CSM_T)(1.0 / S[l]);
        }
        for (ptrdiff_t c = 0; c < nch; ++c) {
            const ptrdiff_t j = c * C, n = K - j < C ? K - j : C;
            CSM_FN(csm_rows_move)(ag + j * acs, ars, acs, buf, C, n, g, 1);
            for (ptrdiff_t l = 0; l < g; ++l) {
                CSM_T *yl = buf + l * C;
                if (nan_row[l]) {
                    for (ptrdiff_t i = 0; i < n; ++i)
                        yl[i] = (CSM_T)NAN;
                    continue;
                }
                const CSM_T mj = kept ? mc[l * nch + c] : M[l];
                const CSM_T m = kept && mj == -CSM_INF_T ? (CSM_T)0 : mj;
                const CSM_T f = kept ? CSM_FN(csm_long_chunk_scale)(mj, M[l], S[l]) : cM[l];
                CSM_FN(csm_long_out_chunk)(yl, yl, n, m, f, log_out, NULL, NULL);
            }
            CSM_FN(csm_rows_move)(og + j * ocs, ors, ocs, buf, C, n, g, 0);
        }
    }
}

/* softmax_backward (logf = 0) and log_softmax_backward (1) of interleaved
 * rows past L2 (Fortran order), from csm_lanes_rows: a group of up to
 * CSM_LONG_GROUP rows at a time, chunk by chunk, each chunk of y and g
 * gathered into buf as rows (csm_rows_move), where staging sixteen whole
 * rows sent a scratch of 16 K elements per operand through DRAM. The first
 * read takes each row's sum (of g * y, or of g and the max of y that
 * chooses log_softmax_backward's exp, csm_log_bwd_upper_of) with its partials
 * carried from chunk to chunk (csm_row_sum_chunk), so the sum is the whole
 * row's; the second writes the output as the row kernels do, element by
 * element. So the bits are C order's. buf holds 2 CSM_LONG_GROUP
 * CSM_LONG_CHUNK elements. The output may be y or g (the same strides):
 * each chunk is read whole before it is written. */
static CSM_NOINLINE CSM_TARGET void CSM_FN(csm_long_bwd_strided)(
    const CSM_T *y, ptrdiff_t yrs, ptrdiff_t ycs, const CSM_T *g, ptrdiff_t grs, ptrdiff_t gcs,
    CSM_T *out, ptrdiff_t ors, ptrdiff_t ocs, ptrdiff_t rows, ptrdiff_t K, int logf, CSM_T *buf)
{
    enum { G = CSM_LONG_GROUP, C = CSM_LONG_CHUNK };
    CSM_T *yb = buf, *gb = buf + G * C;
    double part[G][CSM_PARTS];
    CSM_T d[G], ym[G];
    for (ptrdiff_t r0 = 0; r0 < rows; r0 += G) {
        const ptrdiff_t gn = rows - r0 < G ? rows - r0 : G;
        CSM_T *yg = (CSM_T *)(y + r0 * yrs), *gg = (CSM_T *)(g + r0 * grs), *og = out + r0 * ors;
        for (ptrdiff_t l = 0; l < gn; ++l) {
            for (int p = 0; p < CSM_PARTS; ++p)
                part[l][p] = 0.0;
            ym[l] = -CSM_INF_T;
        }
        for (ptrdiff_t j = 0; j < K; j += C) {
            const ptrdiff_t n = K - j < C ? K - j : C;
            const int fin = j + n == K;
            CSM_FN(csm_rows_move)(yg + j * ycs, yrs, ycs, yb, C, n, gn, 1);
            CSM_FN(csm_rows_move)(gg + j * gcs, grs, gcs, gb, C, n, gn, 1);
            for (ptrdiff_t l = 0; l < gn; ++l) {
                const CSM_T *yl = yb + l * C, *gl = gb + l * C;
                if (logf) {
                    const CSM_T m = CSM_FN(csm_row_max)(yl, n);
                    if (!(m <= ym[l]))  /* a NaN stays */
                        ym[l] = m;
                    d[l] = (CSM_T)CSM_FN(csm_row_sum_chunk)(gl, gl, n, CSM_SUM_PLAIN, part[l], fin);
                } else {
                    d[l] = (CSM_T)CSM_FN(csm_row_sum_chunk)(gl, yl, n, CSM_SUM_DOT, part[l], fin);
                }
            }
        }
        for (ptrdiff_t j = 0; j < K; j += C) {
            const ptrdiff_t n = K - j < C ? K - j : C;
            CSM_FN(csm_rows_move)(yg + j * ycs, yrs, ycs, yb, C, n, gn, 1);
            CSM_FN(csm_rows_move)(gg + j * gcs, grs, gcs, gb, C, n, gn, 1);
            for (ptrdiff_t l = 0; l < gn; ++l) {
                CSM_T *yl = yb + l * C;
                const CSM_T *gl = gb + l * C;
                if (logf) {
                    CSM_FN(csm_log_bwd_row_at)(yl, gl, yl, n, d[l], NULL, NULL,
                                               CSM_FN(csm_log_bwd_upper_of)(ym[l]));
                } else {
                    const CSM_T dl = d[l];
#pragma omp simd
                    for (ptrdiff_t i = 0; i < n; ++i)
                        yl[i] = yl[i] * (gl[i] - dl);
                    CSM_FN(csm_nan_row_if)(yl, 1, n, dl);
                }
            }
            CSM_FN(csm_rows_move)(og + j * ocs, ors, ocs, yb, C, n, gn, 0);
        }
    }
}

/* Whether softmax (log_out = 0) or log_softmax streams rows of K elements to
 * (out, ldo) from the registers (csm_softmax_body, csm_log_softmax_body):
 * where csm_nt_rows allows, but for the short rows (the lane path), and for
 * softmax where CSM_SOFTMAX_NT_ROWS says. */
static CSM_INLINE int CSM_FN(csm_fwd_nt)(const int log_out, const CSM_T *out, ptrdiff_t ldo, ptrdiff_t K)
{
    return K > CSM_SMALL_FWD_K_ISA(CSM_ISA_ID) && CSM_FN(csm_nt_rows)(out, ldo, K)
           && (log_out || CSM_SOFTMAX_NT_ROWS(K, sizeof(CSM_T)));
}

/* softmax and log_softmax: the long rows (csm_long_rows), the rows that
 * stream from the registers (csm_fwd_nt), the others through csm_streamed. */
static CSM_INLINE CSM_TARGET void CSM_FN(csm_fwd_rows)(
    const int log_out, const CSM_T *a, ptrdiff_t lda, CSM_T *out, ptrdiff_t ldo, ptrdiff_t rows,
    ptrdiff_t K, int flags)
{
    if (K * (ptrdiff_t)sizeof(CSM_T) > CSM_LONG_ROW) {
        CSM_FN(csm_long_rows)(a, lda, out, ldo, rows, K, log_out, flags & (CSM_RUN_STREAM | CSM_RUN_KEEP));
        return;
    }
#if CSM_EXP_V
    if ((flags & CSM_RUN_STREAM) && CSM_FN(csm_fwd_nt)(log_out, out, ldo, K)) {
        if (log_out)
            CSM_FN(csm_log_softmax_body)(a, lda, out, ldo, rows, K, flags & CSM_RUN_PREFETCH, 1);
        else
            CSM_FN(csm_softmax_body)(a, lda, out, ldo, rows, K, flags & CSM_RUN_PREFETCH, 1);
        CSM_STREAM_FENCE();
        csm_count_streamed();
        return;
    }
#endif
    CSM_FN(csm_streamed)(log_out ? CSM_FN(csm_log_softmax_core) : CSM_FN(csm_softmax_core), a, lda,
                         a, lda, out, ldo, rows, K, flags);  /* (b: unused) */
}

static CSM_TARGET void CSM_FN(csm_softmax_rows)(
    const CSM_T *a, ptrdiff_t lda, const CSM_T *b, ptrdiff_t ldb,
    CSM_T *out, ptrdiff_t ldo, ptrdiff_t rows, ptrdiff_t K, int flags)
{
    (void)b; (void)ldb;
    CSM_FN(csm_fwd_rows)(0, a, lda, out, ldo, rows, K, flags);
}

static CSM_TARGET void CSM_FN(csm_log_softmax_rows)(
    const CSM_T *a, ptrdiff_t lda, const CSM_T *b, ptrdiff_t ldb,
    CSM_T *out, ptrdiff_t ldo, ptrdiff_t rows, ptrdiff_t K, int flags)
{
    (void)b; (void)ldb;
    CSM_FN(csm_fwd_rows)(1, a, lda, out, ldo, rows, K, flags);
}

/* A staged group's operand, g rows of K (rows rs apart, columns cs apart):
 * where it lies if its rows are contiguous, else gathered into s, rows ld
 * apart; *ldx is the row stride of what it returns. */
static CSM_INLINE CSM_TARGET const CSM_T *CSM_FN(csm_stage_in)(const CSM_T *x, ptrdiff_t rs, ptrdiff_t cs,
                                                              CSM_T *s, ptrdiff_t ld, ptrdiff_t K,
                                                              ptrdiff_t g, ptrdiff_t *ldx)
{
    if (cs == 1) {
        *ldx = rs;
        return x;
    }
    CSM_FN(csm_rows_move)((CSM_T *)x, rs, cs, s, ld, K, g, 1);
    *ldx = ld;
    return s;
}

/* Staged rows of the lane ops (csm_lanes_rows says when): csm_stage_rows(K)
 * rows at a time, each operand that is not row-contiguous gathered into buf
 * as contiguous rows (csm_stage_in), the rows computed by C order's row
 * kernel (so the bits are C order's), into the output where its rows are
 * contiguous, else into the first operand's rows in buf (the kernels take
 * out = a) and scattered from there. Nothing is streamed: the stores go to
 * L1 or to lines the gather brought in. buf holds csm_staged_scratch(K)
 * elements. */
static CSM_NOINLINE CSM_TARGET void CSM_FN(csm_staged_rows)(
    int op, const CSM_T *a, ptrdiff_t ars, ptrdiff_t acs, const CSM_T *b, ptrdiff_t brs,
    ptrdiff_t bcs, CSM_T *out, ptrdiff_t ors, ptrdiff_t ocs, ptrdiff_t rows, ptrdiff_t K,
    CSM_T *buf)
{
    const ptrdiff_t G = csm_stage_rows(K);
    const int binary = op == CSM_OP_SOFTMAX_BACKWARD || op == CSM_OP_LOG_SOFTMAX_BACKWARD;
    const CSM_FN(csm_core_t) kernel = op == CSM_OP_SOFTMAX ? CSM_FN(csm_softmax_rows)
        : op == CSM_OP_LOG_SOFTMAX ? CSM_FN(csm_log_softmax_rows)
        : op == CSM_OP_SOFTMAX_BACKWARD ? CSM_FN(csm_softmax_backward_rows)
        : CSM_FN(csm_log_softmax_backward_rows);
    const ptrdiff_t ld = csm_staged_ld(K, sizeof(CSM_T));
    CSM_T *sa = buf, *sb = buf + G * ld;
    for (ptrdiff_t r0 = 0; r0 < rows; r0 += G) {
        const ptrdiff_t g = rows - r0 < G ? rows - r0 : G;
        ptrdiff_t lda, ldb;
        const CSM_T *ga = CSM_FN(csm_stage_in)(a + r0 * ars, ars, acs, sa, ld, K, g, &lda);
        ldb = lda;
        const CSM_T *gb = binary ? CSM_FN(csm_stage_in)(b + r0 * brs, brs, bcs, sb, ld, K, g, &ldb) : ga;
        CSM_T *go = out + r0 * ors;
        CSM_T *dst = ocs == 1 ? go : sa;
        kernel(ga, lda, gb, ldb, dst, ocs == 1 ? ors : ld, g, K, 0);
        if (ocs != 1)
            CSM_FN(csm_rows_move)(go, ors, ocs, sa, ld, K, g, 0);
    }
}

/* The Jacobian's diagonal, s_i (1 - s_i). Where s_i > 1/2, 1 - s_i is taken
 * as the sum of the other s_j (a row of softmax has at most one such s_i,
 * so they are the s_j <= 1/2): s_i - s_i s_i cancels there and keeps the
 * rounding of s_i as its error. Float32 rows of K = 32 with one class
 * ahead by 7, 12 and 15 (s_i about 0.957, 0.9997 and 0.99998) had
 * diagonals 1.3e-4, 7.6e-3 and 0.22 off in relative terms against float64;
 * now 5e-7 to 6e-7. Where s_i <= 1/2, s_i - s_i s_i is within two
 * roundings of s_i (1 - s_i), and keeps its bits. The sum goes in double,
 * four lanes in one order, so a row's bits do not depend on the path that
 * writes it; it is taken at most once per row of s (csm_jac_diag: before
 * the row of J's stores, as s may be J's last row). A masked s_j is 0 and
 * adds nothing; a NaN s_i fails the compare and gives NaN as before.
 * Taking the sum for every s_i instead cost 25-70% on Jacobians in cache
 * at K = 10 to 100, this form 8-9% (AVX2 8-13%) at 64 x 10 and even at
 * 50 x 100 (docs/design.md). Inline: out of line, the call cost AVX2's
 * register kernel its registers of s (64 x 10 1.5 -> 2.1-3.0 us). */
static CSM_INLINE CSM_TARGET double CSM_FN(csm_jac_rest)(const CSM_T *s, ptrdiff_t K)
{
    double rest[4] = {0, 0, 0, 0};
    ptrdiff_t j = 0;
    for (; j + 4 <= K; j += 4)
        for (int l = 0; l < 4; ++l)
            rest[l] += s[j + l] > (CSM_T)0.5 ? 0.0 : (double)s[j + l];
    for (int l = 0; j < K; ++j, ++l)
        rest[l] += s[j] > (CSM_T)0.5 ? 0.0 : (double)s[j];
    return (rest[0] + rest[1]) + (rest[2] + rest[3]);
}

/* The diagonal of row i of J, from s_i and the row s of K elements. */
static CSM_INLINE CSM_TARGET CSM_T CSM_FN(csm_jac_diag)(CSM_T si, const CSM_T *s, ptrdiff_t K)
{
    if (__builtin_expect(si > (CSM_T)0.5, 0))
        return (CSM_T)((double)si * CSM_FN(csm_jac_rest)(s, K));
    return si - si * si;
}

#if CSM_EXP_V
/* Rows of up to CSM_JAC_REGS registers: s in registers for the whole block.
 * Read from memory, s cost a load per register per row of J, and a block of
 * J (4 KiB at K = 32 float32) has stores in flight at every offset within a
 * page: the loads of s, we read, waited on stores they share their low
 * address bits with (measured: docs/design.md, beside the Jacobian's
 * prefetch). Here the rows of J are stores only: s_i comes from its lane of
 * the register that holds it, and a row's last, partial register is the one
 * that ends at K, overlapping the one before with the same values. NV = K /
 * CSM_XVW, a constant in each copy, so that sv stays in registers. The
 * values are those of the loop below (0 - s_i s_j in one multiply-add; the
 * diagonal si - si si, stored last or in its register: CSM_JAC_DIAG_). */
  #define CSM_JAC_REGS (CSM_ISA_ID == 2 ? 8 : 13)
  #if CSM_ISA_ID == 2 && CSM_F32
    #define CSM_XV_LANE_(v, d) _mm512_permutexvar_ps(_mm512_set1_epi32((int)(d)), (v))
    #define CSM_XV_FIRST_(v) _mm512_cvtss_f32(v)
  #elif CSM_ISA_ID == 2
    #define CSM_XV_LANE_(v, d) _mm512_permutexvar_pd(_mm512_set1_epi64((long long)(d)), (v))
    #define CSM_XV_FIRST_(v) _mm512_cvtsd_f64(v)
  #elif CSM_F32
    #define CSM_XV_LANE_(v, d) _mm256_permutevar8x32_ps((v), _mm256_set1_epi32((int)(d)))
    #define CSM_XV_FIRST_(v) _mm256_cvtss_f32(v)
  #else
    #define CSM_XV_LANE_(v, d) _mm256_castps_pd(_mm256_permutevar8x32_ps(_mm256_castpd_ps(v), \
        _mm256_set1_epi64x(((long long)(2 * (d) + 1) << 32) | (long long)(2 * (d)))))
    #define CSM_XV_FIRST_(v) _mm256_cvtsd_f64(v)
  #endif
/* AVX-512 rows of J of up to CSM_JAC_DIAG_REGS registers (and a tail) take
 * their diagonal in the register that holds it, by a masked move, not in a
 * scalar store after the row's stores: stores bound a row of J, and at
 * K = 32 float32 the scalar one was a third of them (two registers and it).
 * The diagonal's value is the scalar expression it was, broadcast, so the
 * bits are the same. AMD Zen 4, out= in cache, one thread, us, output on a
 * 64-byte boundary / 16 bytes past one (NumPy's large arrays), three
 * alternations of the builds, before / after: float32 200 x 32 15.1-15.2 /
 * 14.2-14.3 and 17.7-17.9 / 15.7-15.8, 100 x 20 5.5-5.6 / 5.2; float64
 * 200 x 16 10.5-10.6 / 10.3 and 11.4-11.5 / 10.7-10.9; 10000 x 32 float32
 * (41 MB, bound by memory) within its noise. AVX2 keeps the scalar store:
 * its blend needs a broadcast of the lane and a compare too, and gained at
 * 200 x 32 in cache (17.8 -> 16.5) but not at 10000 x 32, and took 2-5%
 * longer at K = 20 float32 and K = 16 float64. Longer rows keep it under
 * AVX-512 too: for every row length the kernel doubled in size. */
  #if CSM_ISA_ID == 2
    #define CSM_JAC_DIAG_REGS 4
    #if CSM_F32
      #define CSM_JAC_DIAG_(o, dv, l) _mm512_mask_mov_ps((o), (__mmask16)(1u << (l)), (dv))
    #else
      #define CSM_JAC_DIAG_(o, dv, l) _mm512_mask_mov_pd((o), (__mmask8)(1u << (l)), (dv))
    #endif
  #endif
static CSM_INLINE CSM_TARGET void CSM_FN(csm_jac_regs)(
    const int NV, const CSM_T *s, CSM_T *J, ptrdiff_t i0, ptrdiff_t i1, ptrdiff_t K, const char *pfw)
{
    CSM_XV sv[CSM_JAC_REGS + 1];
    const int tail = NV * CSM_XVW < K;
    for (int v = 0; v < NV; ++v)
        sv[v] = CSM_XV_(loadu)(s + v * CSM_XVW);
    sv[NV] = CSM_XV_(loadu)(s + K - CSM_XVW);
    for (int v = 0; v <= NV; ++v) {
        if (v == NV && !tail)
            break;
        /* The rows whose s_i register v holds: lanes base .. base + W - 1. */
        const ptrdiff_t base = v < NV ? v * CSM_XVW : K - CSM_XVW;
        ptrdiff_t lo = v < NV ? base : NV * CSM_XVW, hi = v < NV ? base + CSM_XVW : K;
        lo = lo < i0 ? i0 : lo;
        hi = hi > i1 ? i1 : hi;
        for (ptrdiff_t i = lo; i < hi; ++i) {
            const CSM_XV vsi = CSM_XV_LANE_(sv[v], i - base);
            CSM_T *Ji = J + (i - i0) * K;
            if (pfw)
                CSM_FN(csm_prefetch_run)((const CSM_T *)pfw + (i - i0) * K, K, 1);
  #ifdef CSM_JAC_DIAG_
            if (NV <= CSM_JAC_DIAG_REGS) {
                const CSM_T sd = CSM_XV_FIRST_(vsi);
                const CSM_XV dv = CSM_XV_(set1)(CSM_FN(csm_jac_diag)(sd, s, K));
                for (int u = 0; u < NV; ++u) {
                    CSM_XV o = CSM_XV_(fnmadd)(vsi, sv[u], CSM_XV_(setzero)());
                    if (u == v)
                        o = CSM_JAC_DIAG_(o, dv, i - base);
                    CSM_XV_(storeu)(Ji + u * CSM_XVW, o);
                }
                if (tail) {
                    CSM_XV o = CSM_XV_(fnmadd)(vsi, sv[NV], CSM_XV_(setzero)());
                    if (i >= K - CSM_XVW)
                        o = CSM_JAC_DIAG_(o, dv, i - (K - CSM_XVW));
                    CSM_XV_(storeu)(Ji + K - CSM_XVW, o);
                }
                continue;
            }
  #endif
            const CSM_T si = CSM_XV_FIRST_(vsi);
            const CSM_T di = CSM_FN(csm_jac_diag)(si, s, K); /* before the stores: s may be J's last row */
            for (int u = 0; u < NV; ++u)
                CSM_XV_(storeu)(Ji + u * CSM_XVW, CSM_XV_(fnmadd)(vsi, sv[u], CSM_XV_(setzero)()));
            if (tail)
                CSM_XV_(storeu)(Ji + K - CSM_XVW, CSM_XV_(fnmadd)(vsi, sv[NV], CSM_XV_(setzero)()));
            Ji[i] = di;
        }
    }
}
  #undef CSM_XV_LANE_
  #undef CSM_XV_FIRST_
  #ifdef CSM_JAC_DIAG_
    #undef CSM_JAC_DIAG_
    #undef CSM_JAC_DIAG_REGS
  #endif

  #if CSM_ISA_ID == 2
/* AVX-512: the same rows of J, each stored at 64-byte boundaries. A row of
 * J that starts m elements past a boundary takes its registers from s
 * shifted by m (one two-source permute of the s registers each side), the
 * first and last masked, so no store splits a cache line; from
 * csm_jac_regs, whose stores all start at the row's own offset, nearly
 * every 64-byte store split two lines. Intel Xeon (2 cores, AVX-512, 2 MiB
 * L2), float32 out= in cache, one thread, ns per element of J, medians of
 * 15 calls alternating with AVX2's (whose 32-byte stores split half as
 * often) and a fill, AVX-512 / AVX2 / fill. With csm_jac_regs: K = 96 with
 * each row on a boundary 0.166 / 0.156 / 0.147, 16 or 32 bytes past one
 * 0.214 / 0.167 / 0.143 and 0.213 / 0.158 / 0.143; K = 100 (its rows at
 * four offsets) 0.19 / 0.165 / 0.146. Here: K = 96 0.144-0.146 / 0.142-0.148
 * / 0.137-0.139 at the three offsets, K = 100 0.146-0.148 / 0.144 / 0.139;
 * bench_targets.py's jacobian 1000 x 100 out= went from 1.16x and 1.21x a
 * fill (one and two threads) to 1.10x and 1.08x. NT registers hold s
 * (NV = K / W, a constant; zeros past K); a row takes at most NT + 1
 * stores. The values are csm_jac_regs's, 0 - s_i s_j by one multiply-add
 * with the diagonal stored last, so the bits are too. */
    #if CSM_F32
      #define CSM_JA_IDX_(c) _mm512_add_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, \
                                              11, 12, 13, 14, 15), _mm512_set1_epi32((int)(c)))
      #define CSM_JA_LANE_(v, d) _mm512_permutexvar_ps(_mm512_set1_epi32((int)(d)), (v))
      #define CSM_JA_FIRST_(v) _mm512_cvtss_f32(v)
    #else
      #define CSM_JA_IDX_(c) _mm512_add_epi64(_mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7), \
                                              _mm512_set1_epi64((long long)(c)))
      #define CSM_JA_LANE_(v, d) _mm512_permutexvar_pd(_mm512_set1_epi64((long long)(d)), (v))
      #define CSM_JA_FIRST_(v) _mm512_cvtsd_f64(v)
    #endif
static CSM_INLINE CSM_TARGET void CSM_FN(csm_jac_aligned)(
    const int NV, const CSM_T *s, CSM_T *J, ptrdiff_t i0, ptrdiff_t i1, ptrdiff_t K, const char *pfw)
{
    enum { W = (int)(64 / sizeof(CSM_T)) };
    const int NT = NV + (NV * W < K);
    CSM_XV sv[CSM_JAC_REGS + 2];
    for (int v = 0; v < NT; ++v)
        sv[v] = CSM_XV_LOADM(s + v * W, CSM_XM_FIRST(K - v * W < W ? K - v * W : W));
    sv[NT] = CSM_XV_(setzero)();
    for (ptrdiff_t i = i0; i < i1; ++i) {
        const CSM_XV vsi = CSM_JA_LANE_(sv[i / W], i % W);
        const CSM_T si = CSM_JA_FIRST_(vsi);
        const CSM_T di = CSM_FN(csm_jac_diag)(si, s, K); /* before the stores: s may be J's last row */
        CSM_T *Ji = J + (i - i0) * K;
        if (pfw)
            CSM_FN(csm_prefetch_run)((const CSM_T *)pfw + (i - i0) * K, K, 1);
        const int m = (int)(((uintptr_t)Ji / sizeof(CSM_T)) & (W - 1));
        CSM_T *A = Ji - m; /* on a 64-byte boundary */
        /* Lane l of store u holds s[u W - m + l]: register u - 1's lane
         * l + W - m for l < m, register u's lane l - m from l = m on. */
        const __m512i idx = CSM_JA_IDX_(W - m);
        const ptrdiff_t end = K + m; /* elements from A to the row's end */
        CSM_XV prev = CSM_XV_(setzero)();
        for (int u = 0; u <= NT; ++u) {
            if ((ptrdiff_t)u * W >= end)
                break;
            const CSM_XV cur = sv[u];
        #if CSM_F32
            const CSM_XV v = _mm512_permutex2var_ps(prev, idx, cur);
        #else
            const CSM_XV v = _mm512_permutex2var_pd(prev, idx, cur);
        #endif
            const CSM_XV o = CSM_XV_(fnmadd)(vsi, v, CSM_XV_(setzero)());
            const ptrdiff_t lo = u == 0 ? m : 0;
            const ptrdiff_t hi = end - (ptrdiff_t)u * W < W ? end - (ptrdiff_t)u * W : W;
            if (lo == 0 && hi == W)
                CSM_XV_(store)(A + u * W, o);
            else
                CSM_XV_(mask_storeu)(A + u * W, (CSM_XM)(CSM_XM_FIRST(hi) & ~CSM_XM_FIRST(lo)), o);
            prev = cur;
        }
        Ji[i] = di;
    }
}
    #undef CSM_JA_IDX_
    #undef CSM_JA_LANE_
    #undef CSM_JA_FIRST_
  #endif
#endif

/* Jacobian: J[i, j] = s_i (delta_ij - s_j) for each row, into a K x K block
 * per row (ldo = K * K). s is computed once per row. Off-diagonal entries are
 * 0 - s_i * s_j, so the block is bitwise symmetric (and a masked entry's
 * row and column are +0); the diagonal is
 * s_i - s_i * s_i, i.e. diag(s) - s s^T. */
static CSM_INLINE CSM_TARGET void CSM_FN(csm_jacobian_block)(
    const CSM_T *s, CSM_T *J, ptrdiff_t i0, ptrdiff_t i1, ptrdiff_t K, const char *pfw)
{
    /* Rows i0..i1 of the block; J points at row i0. pfw, where not null, is
     * the next block (see CSM_PREFETCH_BYTES): its row i is fetched for
     * ownership while row i of this one is written. */
#if CSM_EXP_V
  #if CSM_ISA_ID == 2
    if (K >= CSM_XVW / 2 && K < CSM_XVW) {
        /* Rows of half a register to one: two half-width stores, the second
         * ending at K (csm_jac_regs's overlap), where the loop below took a
         * 64-byte masked store per row. Intel Xeon, 64 rows in cache, one
         * thread, ns per element of J before / after (AVX2 0.16-0.22 and
         * 0.40-0.46): float32 K = 10 0.32-0.35 / 0.20-0.21, K = 12
         * 0.26-0.28 / 0.16-0.17; float64 K = 7 0.52-0.59 / 0.40. The same
         * multiply-add per element, so the same bits. */
    #if CSM_F32
        const __m256 s0 = _mm256_loadu_ps(s), s1 = _mm256_loadu_ps(s + K - 8);
    #else
        const __m256d s0 = _mm256_loadu_pd(s), s1 = _mm256_loadu_pd(s + K - 4);
    #endif
        for (ptrdiff_t i = i0; i < i1; ++i) {
            const CSM_T si = s[i]; /* before row i's stores: s may be J's last row */
            const CSM_T di = CSM_FN(csm_jac_diag)(si, s, K);
            CSM_T *Ji = J + (i - i0) * K;
            if (pfw)
                CSM_FN(csm_prefetch_run)((const CSM_T *)pfw + (i - i0) * K, K, 1);
    #if CSM_F32
            const __m256 vsi = _mm256_set1_ps(si);
            _mm256_storeu_ps(Ji, _mm256_fnmadd_ps(vsi, s0, _mm256_setzero_ps()));
            if (K > 8)
                _mm256_storeu_ps(Ji + K - 8, _mm256_fnmadd_ps(vsi, s1, _mm256_setzero_ps()));
    #else
            const __m256d vsi = _mm256_set1_pd(si);
            _mm256_storeu_pd(Ji, _mm256_fnmadd_pd(vsi, s0, _mm256_setzero_pd()));
            if (K > 4)
                _mm256_storeu_pd(Ji + K - 4, _mm256_fnmadd_pd(vsi, s1, _mm256_setzero_pd()));
    #endif
            Ji[i] = di;
        }
        return;
    }
    /* Element-aligned rows (any a NumPy array of the dtype has) longer than
     * 256 bytes take the stores on 64-byte boundaries. Shorter rows keep
     * csm_jac_regs: there the aligned loop's work per row (its offset, its
     * masks, a loop of run-time length) cost more than the split stores
     * (same machine and test as at csm_jac_aligned, float32, 400 rows,
     * aligned / csm_jac_regs: K = 32 0.145-0.148 / 0.118-0.127, K = 40
     * 0.128-0.134 / 0.112-0.117, K = 48 to 64 within 1%, K = 80
     * 0.151-0.153 / 0.190-0.195). */
    if (K * (ptrdiff_t)sizeof(CSM_T) > 256 && K <= CSM_JAC_REGS * CSM_XVW
        && (uintptr_t)J % sizeof(CSM_T) == 0) {
        switch (K / CSM_XVW) {
    #define CSM_JA_CASE_(nv) case nv: CSM_FN(csm_jac_aligned)(nv, s, J, i0, i1, K, pfw); return;
        CSM_JA_CASE_(4) CSM_JA_CASE_(5) CSM_JA_CASE_(6) CSM_JA_CASE_(7) CSM_JA_CASE_(8)
    #undef CSM_JA_CASE_
        default: break;
        }
    }
  #endif
    switch (K >= CSM_XVW && K <= CSM_JAC_REGS * CSM_XVW ? K / CSM_XVW : 0) {
  #define CSM_JAC_CASE_(nv) case nv: CSM_FN(csm_jac_regs)(nv, s, J, i0, i1, K, pfw); return;
    CSM_JAC_CASE_(1) CSM_JAC_CASE_(2) CSM_JAC_CASE_(3) CSM_JAC_CASE_(4)
    CSM_JAC_CASE_(5) CSM_JAC_CASE_(6) CSM_JAC_CASE_(7) CSM_JAC_CASE_(8)
  #if CSM_JAC_REGS > 8
    CSM_JAC_CASE_(9) CSM_JAC_CASE_(10) CSM_JAC_CASE_(11) CSM_JAC_CASE_(12) CSM_JAC_CASE_(13)
  #endif
  #undef CSM_JAC_CASE_
    default: break;
    }
#endif
    for (ptrdiff_t i = i0; i < i1; ++i) {
        const CSM_T si = s[i];
        const CSM_T di = CSM_FN(csm_jac_diag)(si, s, K); /* before the stores: s may be J's last row */
        CSM_T *Ji = J + (i - i0) * K;
        if (pfw)
            CSM_FN(csm_prefetch_run)((const CSM_T *)pfw + (i - i0) * K, K, 1);
        ptrdiff_t j = 0;
#if CSM_EXP_V
        /* In registers: GCC's loop over a row of unknown K paid a prologue
         * and an epilogue per row of the block (AMD Zen 5, AVX-512, float32
         * out=, one thread: 64 x 10 1.4 -> 1.1 us; 10000 x 32 and 1000 x
         * 100 are bound by memory, and unchanged). 0 - s_i s_j by one
         * multiply-add, as GCC fuses the C form below, so the same bits (an
         * underflowing product gives -0 there, not a rounded +0 negated). */
        const CSM_XV vsi = CSM_XV_(set1)(si);
        /* The row's stores on register boundaries from its first one on, as
         * csm_jac_aligned's (which says why): the elements up to the first
         * boundary in one partial store (not a whole register that the next
         * store overlaps: in the lane layout s is the block's last row, and
         * that row's head would overwrite the s its next store reads), and
         * s read from where each store needs it (csm_head_to_boundary: these
         * rows, past the register kernels, are all longer than its 256
         * bytes). Same test as there, 40 rows,
         * float32, before / after / fill: AVX-512 K = 129 0.180-0.187 /
         * 0.148-0.153 / 0.112-0.119, K = 200 0.187-0.193 / 0.159-0.163 /
         * 0.138-0.140; AVX2 (alternating builds) K = 250 0.164-0.170 /
         * 0.157-0.158 (fill 0.145), float64 K = 60 0.196-0.207 /
         * 0.170-0.186 (fill 0.20-0.22), K = 100 0.340-0.347 / 0.285-0.290
         * (fill 0.25). */
        const ptrdiff_t hd = CSM_FN(csm_head_to_boundary)(Ji, K);
        if (hd) {
            CSM_XV_STOREN(Ji, hd, CSM_XV_(fnmadd)(vsi, CSM_XV_LOADM(s, CSM_XM_FIRST(hd)), CSM_XV_(setzero)()));
            j = hd;
        }
        for (; j + CSM_XVW <= K; j += CSM_XVW)
            CSM_XV_(storeu)(Ji + j, CSM_XV_(fnmadd)(vsi, CSM_XV_(loadu)(s + j), CSM_XV_(setzero)()));
        if (j < K) {
            const CSM_XM k = CSM_XM_FIRST(K - j);
            CSM_XV_STOREN(Ji + j, K - j, CSM_XV_(fnmadd)(vsi, CSM_XV_LOADM(s + j, k), CSM_XV_(setzero)()));
            j = K;
        }
#endif
        for (; j < K; ++j)
            Ji[j] = (CSM_T)0 - si * s[j]; /* +0, not -0, where s_i or s_j is 0 */
        Ji[i] = di;
    }
}

static CSM_TARGET void CSM_FN(csm_softmax_jacobian_rows)(
    const CSM_T *x, ptrdiff_t ldx, const CSM_T *unused, ptrdiff_t ldu,
    CSM_T *jac, ptrdiff_t ldo, ptrdiff_t rows, ptrdiff_t K, int flags)
{
    const int pf = flags & CSM_RUN_PREFETCH;
    (void)unused; (void)ldu;
    if ((flags & CSM_RUN_STREAM) && ldo == K * K && K <= CSM_SCRATCH / 2) {
        /* The output is one contiguous span: rows of J are built in L1
         * scratch, as many as fit, and streamed (see csm_streamed). s of a
         * group of rows in one call and whole blocks per copy where they
         * fit: a softmax call and a copy per row took 1.15-1.22x a fill of
         * the output, grouped 0.71x (AMD Zen 3, AVX2, 10000 x 32 float32,
         * one thread; docs/design.md). */
        CSM_T s[CSM_SCRATCH / 2], buf[CSM_SCRATCH / 2];
        const ptrdiff_t group = (CSM_SCRATCH / 2) / K;
        const ptrdiff_t blocks = (CSM_SCRATCH / 2) / (K * K);
        for (ptrdiff_t r0 = 0; r0 < rows; r0 += group) {
            const ptrdiff_t nr = rows - r0 < group ? rows - r0 : group;
            CSM_FN(csm_softmax_core)(x + r0 * ldx, ldx, 0, 0, s, K, nr, K, pf);
            if (blocks > 0) {
                for (ptrdiff_t r = 0; r < nr; r += blocks) {
                    const ptrdiff_t nb = nr - r < blocks ? nr - r : blocks;
                    for (ptrdiff_t q = 0; q < nb; ++q)
                        CSM_FN(csm_jacobian_block)(s + (r + q) * K, buf + q * K * K, 0, K, K, NULL);
                    CSM_FN(csm_stream_copy)(jac + (r0 + r) * ldo, buf, nb * K * K);
                }
                continue;
            }
            for (ptrdiff_t r = 0; r < nr; ++r) {
                CSM_T *J = jac + (r0 + r) * ldo;
                for (ptrdiff_t i0 = 0; i0 < K; i0 += group) {
                    const ptrdiff_t i1 = K - i0 < group ? K : i0 + group;
                    CSM_FN(csm_jacobian_block)(s + r * K, buf, i0, i1, K, NULL);
                    CSM_FN(csm_stream_copy)(J + i0 * K, buf, (i1 - i0) * K);
                }
            }
        }
        CSM_STREAM_FENCE();
        csm_count_streamed();
        return;
    }
    if (K <= CSM_SCRATCH / 2) {
        /* s of a group of rows into L1 scratch, then their blocks. Softmax
         * straight into the blocks' last rows first wrote every block once,
         * a page apart (a 4 KiB block at K = 32), and came back for the
         * rest: 10000 x 32 float32 took 2.0x a fill of the output, 1000 x
         * 100 1.0x (bench/bench_targets.py, one thread, AVX-512). A row's s
         * has the same bits computed with any group around it. */
        CSM_T s[CSM_SCRATCH / 2];
        const ptrdiff_t group = (CSM_SCRATCH / 2) / K;
        for (ptrdiff_t r0 = 0; r0 < rows; r0 += group) {
            const ptrdiff_t nr = rows - r0 < group ? rows - r0 : group;
            CSM_FN(csm_softmax_core)(x + r0 * ldx, ldx, 0, 0, s, K, nr, K, pf);
            for (ptrdiff_t r = 0; r < nr; ++r) {
                CSM_T *J = jac + (r0 + r) * ldo;
                CSM_FN(csm_jacobian_block)(s + r * K, J, 0, K, K,
                                           CSM_PF_ROW_(csm_prefetch_out_row, J, ldo, K * K, sizeof(CSM_T),
                                                                rows - 1 - (r0 + r)));
            }
        }
        return;
    }
    /* Longer rows: s of every row at once, into the last row of each block,
     * which serves as scratch until it is overwritten last, in place: s_i is
     * read before row i is written, and row K - 1 reads each s_j before its
     * own store. */
    CSM_FN(csm_softmax_core)(x, ldx, 0, 0, jac + (K - 1) * K, ldo, rows, K, pf);
    for (ptrdiff_t r = 0; r < rows; ++r) {
        CSM_T *J = jac + r * ldo;
        CSM_FN(csm_jacobian_block)(J + (K - 1) * K, J, 0, K, K, NULL);
    }
}

/* Rows of any strides (see csm_lanes_rows); for the Jacobian, out is the
 * (rows, K, K) output with ors = K * K between blocks and ocs unused: s is
 * computed into the last row of each block, as in csm_softmax_jacobian_rows. */
static CSM_TARGET void CSM_FN(csm_strided_rows)(
    int op, const CSM_T *a, ptrdiff_t ars, ptrdiff_t acs, const CSM_T *b, ptrdiff_t brs,
    ptrdiff_t bcs, CSM_T *out, ptrdiff_t ors, ptrdiff_t ocs, ptrdiff_t rows, ptrdiff_t K,
    CSM_T *buf)
{
    if (op != CSM_OP_SOFTMAX_JACOBIAN) {
        CSM_FN(csm_lanes_rows)(op, a, ars, acs, b, brs, bcs, out, ors, ocs, rows, K, buf);
        return;
    }
    CSM_FN(csm_lanes_rows)(CSM_OP_SOFTMAX, a, ars, acs, a, ars, acs, out + (K - 1) * K, ors, 1,
                           rows, K, buf);
    for (ptrdiff_t r = 0; r < rows; ++r) {
        CSM_T *J = out + r * ors;
        CSM_FN(csm_jacobian_block)(J + (K - 1) * K, J, 0, K, K, NULL);
    }
}

/* The vectorised exp itself, row by row, what the accuracy tests sweep
 * (tests/test_vmath.py): exp for any x (`upper`) or on the softmax domain.
 * Whole registers go through csm_exp_v where the ISA has it, the rest of a
 * row through the C form the other loops inline; rows of 16 and of 3
 * elements thus send the same values through the two forms, which the tests
 * compare to the bit. */
static CSM_INLINE CSM_TARGET void CSM_FN(csm_exp_any_rows)(
    const CSM_T *x, ptrdiff_t ldx, CSM_T *y, ptrdiff_t ldy, ptrdiff_t rows, ptrdiff_t K,
    const int upper)
{
    for (ptrdiff_t r = 0; r < rows; ++r) {
        const CSM_T *xr = x + r * ldx;
        CSM_T *yr = y + r * ldy;
        ptrdiff_t i = 0;
#if CSM_EXP_V
        if (!upper || CSM_EXP_V_UP)
            for (; i + CSM_XVW <= K; i += CSM_XVW)
                CSM_XV_(storeu)(yr + i, CSM_FN(csm_exp_v)(CSM_XV_(loadu)(xr + i), upper));
#endif
#pragma omp simd
        for (ptrdiff_t j = i; j < K; ++j)
            yr[j] = CSM_FN(csm_exp_core)(xr[j], upper);
    }
}

static CSM_TARGET void CSM_FN(csm_exp_rows)(
    const CSM_T *x, ptrdiff_t ldx, const CSM_T *unused, ptrdiff_t ldu,
    CSM_T *y, ptrdiff_t ldy, ptrdiff_t rows, ptrdiff_t K, int flags)
{
    (void)unused; (void)ldu; (void)flags;
    CSM_FN(csm_exp_any_rows)(x, ldx, y, ldy, rows, K, 1);
}

static CSM_TARGET void CSM_FN(csm_exp_neg_rows)(
    const CSM_T *x, ptrdiff_t ldx, const CSM_T *unused, ptrdiff_t ldu,
    CSM_T *y, ptrdiff_t ldy, ptrdiff_t rows, ptrdiff_t K, int flags)
{
    (void)unused; (void)ldu; (void)flags;
    CSM_FN(csm_exp_any_rows)(x, ldx, y, ldy, rows, K, 0);
}

/* The vectorised log, row by row, for the same tests. */
static CSM_TARGET void CSM_FN(csm_log_rows)(
    const CSM_T *x, ptrdiff_t ldx, const CSM_T *unused, ptrdiff_t ldu,
    CSM_T *y, ptrdiff_t ldy, ptrdiff_t rows, ptrdiff_t K, int flags)
{
    (void)unused; (void)ldu; (void)flags;
    for (ptrdiff_t r = 0; r < rows; ++r) {
        const CSM_T *xr = x + r * ldx;
        CSM_T *yr = y + r * ldy;
#pragma omp simd
        for (ptrdiff_t i = 0; i < K; ++i)
            yr[i] = (CSM_T)CSM_PASTE(csm_log, CSM_PASTE(f64, CSM_ISA))((double)xr[i]);
    }
}

#undef CSM_UINT
#undef CSM_SINT
#undef CSM_MANT_BITS
#undef CSM_BIAS
#undef CSM_EXP_LO
#undef CSM_EXP_LO_UP
#undef CSM_EXP_HI
#undef CSM_SHIFTER
#undef CSM_SHIFTER_BITS
#undef CSM_LOG2E
#undef CSM_LN2_HI
#undef CSM_LN2_LO
#undef CSM_EXPM1_P
#undef CSM_EXPM1_Q_EVEN
#undef CSM_EXPM1_Q_ODD
#undef CSM_EXPM1_C1
#undef CSM_EXPM1_C0
#undef CSM_EXPM1_SPLIT
/* The register form (CSM_EXP_V, CSM_XV and the rest) stays defined for
 * _masked_impl.h and _loss_impl.h, which end it. */
