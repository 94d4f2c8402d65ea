/*
 * Masked row kernels (where=) and logsumexp, for ONE (element type,
 * instruction set) pair: a template like _rows_impl.h, included right after
 * it by _rows_isa.h with the same CSM_T / CSM_F32 / CSM_SFX / CSM_TARGET, so
 * it reuses that file's exp, log, max and sum helpers.
 *
 * A mask is one byte per element (1: the element takes part, 0: masked),
 * with unit column stride and row stride ldm (0: one mask for every row).
 * The semantics are those of jax.nn.softmax(where=):
 *   - masked elements take no part in the max or in any sum;
 *   - they come out as exactly 0 (softmax, the backward passes) or -inf
 *     (log_softmax), whatever the input holds there (NaN included);
 *   - a row with no unmasked element gives zeros (softmax) or -inf
 *     (log_softmax, logsumexp): no NaN;
 *   - unmasked elements follow the unmasked rules over the unmasked subset.
 * The mask is read inside each pass, as a select next to the arithmetic, so
 * a masked row costs the unmasked passes plus one byte per element. The
 * selects take the mask widened to the element's width (CSM_MW_T, all ones
 * or zero), done once per row into scratch: with a byte beside each element
 * GCC sizes the vectors by the byte and falls back to a quarter of the
 * register (callgrind, AVX2, 4096 x 128 float32 softmax: 19.5 instructions
 * per element with byte selects, 6.6 unmasked).
 *
 * Every sum is taken in the order the unmasked kernels use (CSM_PARTS,
 * CSM_SUM_BLOCK; _rows.h), with masked terms as exact zeros: so an all-true
 * mask gives the unmasked kernels' bits, on every path and thread count.
 *
 * Rows whose operands are not unit-column-stride (Fortran order, views) are
 * gathered into a contiguous scratch row first (csm_masked_rows).
 */

/* sum(exp(x - m)) over the (unmasked, when mk is not NULL) elements without
 * storing the terms: logsumexp's sum, in softmax's blocked order (partials
 * in the element type within blocks of CSM_SUM_BLOCK, the blocks in double),
 * which keeps its error near that of the float exp terms themselves. Double
 * partials throughout (log_softmax's csm_row_sum) cost as much as softmax's
 * whole row: callgrind, AVX2, 4096 x 128 float32: 6.6 instructions per
 * element, the same as softmax, which also stores. */
static CSM_INLINE CSM_TARGET double CSM_FN(csm_row_exp_total)(const CSM_T *x, const CSM_MW_T *mk,
                                                              CSM_T m, ptrdiff_t K, const int normal)
{
    return normal > 0 ? CSM_FN(csm_row_exp_sum_eager)(x, mk, NULL, m, K, 0.0, 1)
                      : CSM_FN(csm_row_exp_sum_eager)(x, mk, NULL, m, K, 0.0, normal);
}

/* The same with the byte mask. */
static CSM_INLINE CSM_TARGET int CSM_FN(csm_row_has_nan_b)(const CSM_T *x, const unsigned char *mk,
                                                           ptrdiff_t K)
{
    for (ptrdiff_t i = 0; i < K; ++i)
        if ((!mk || mk[i]) && x[i] != x[i])
            return 1;
    return 0;
}

/* Whether an element of the row (an unmasked one, when mk is not NULL) is
 * NaN: logsumexp's rows whose max is infinite, a rare path. */
static CSM_INLINE CSM_TARGET int CSM_FN(csm_row_has_nan)(const CSM_T *x, const CSM_MW_T *mk,
                                                         ptrdiff_t K)
{
    for (ptrdiff_t i = 0; i < K; ++i)
        if ((!mk || mk[i]) && x[i] != x[i])
            return 1;
    return 0;
}

/* K mask bytes (column j at m + j mcs) widened into tw: all ones where the
 * element takes part, else zero (CSM_MW_T, see above). */
static CSM_INLINE CSM_TARGET void CSM_FN(csm_mask_widen)(CSM_MW_T *tw, const unsigned char *m,
                                                         ptrdiff_t mcs, ptrdiff_t K)
{
    if (mcs == 1 || K == 1) {
#pragma omp simd
        for (ptrdiff_t j = 0; j < K; ++j)
            tw[j] = m[j] ? ~(CSM_MW_T)0 : 0;
    } else {
        for (ptrdiff_t j = 0; j < K; ++j)
            tw[j] = m[j * mcs] ? ~(CSM_MW_T)0 : 0;
    }
}

/* The end of a masked row of softmax, log_softmax or logsumexp once its max
 * m and its sum s (of exp(x - m) over the unmasked elements) are known: for
 * softmax y holds the terms, +0 where masked; logsumexp's m is finite. */
static CSM_INLINE CSM_TARGET void CSM_FN(csm_masked_finish)(int op, const CSM_T *x, const CSM_MW_T *mk,
                                                            CSM_T *y, ptrdiff_t K, CSM_T m, double s)
{
    if (op == CSM_OP_SOFTMAX) {
        const CSM_T c = (CSM_T)(1.0 / s);
        if (c - c == 0) {
            /* The masked y are exact zeros, and stay so times a finite c:
             * the unmasked kernels' scale, with no mask to read. */
            CSM_FN(csm_row_scale)(y, c, K);
            return;
        }
        /* A row with nothing unmasked has s = 0 and c = inf, a NaN among
         * the unmasked elements gives NaN: the select keeps the masked
         * zeros. */
#pragma omp simd
        for (ptrdiff_t i = 0; i < K; ++i)
            y[i] = mk[i] ? y[i] * c : (CSM_T)0;
        if (c != c) /* csm_nan_rows's rule */
            CSM_NAN_ROW_(y, 1, K, mk);
    } else if (op == CSM_OP_LOG_SOFTMAX) {
        /* s >= 1 whenever an unmasked element is finite, NaN when one is
         * NaN; s = 0 only when nothing is unmasked, and the select gives
         * -inf. A NaN row's scalars the quiet NaN (csm_nan_q, csm_nan_max). */
        const CSM_T l =
            CSM_FN(csm_nan_q)((CSM_T)CSM_PASTE(csm_log, CSM_PASTE(f64, CSM_ISA))(s == 0 ? 1.0 : s));
        const CSM_T mq = CSM_FN(csm_nan_max)(m, l);
#pragma omp simd
        for (ptrdiff_t i = 0; i < K; ++i)
            y[i] = mk[i] ? (x[i] - mq) - l : -CSM_INF_T;
    } else {
        y[0] = CSM_FN(csm_nan_q)((CSM_T)((double)m + CSM_PASTE(csm_log, CSM_PASTE(f64, CSM_ISA))(s)));
    }
}

/* Masked softmax of one contiguous row into y (y may be x). */
static CSM_INLINE CSM_TARGET void CSM_FN(csm_masked_softmax_row)(
    const CSM_T *x, const CSM_MW_T *mk, CSM_T *y, ptrdiff_t K)
{
    if (K * (ptrdiff_t)sizeof(CSM_T) > CSM_LONG_ROW && K <= CSM_LONG_KEEP) {
        /* A row past L2, as csm_long_rows takes it. */
        CSM_FN(csm_long_softmax_kept)(x, mk, y, K, 1);
        return;
    }
    if (K * (ptrdiff_t)sizeof(CSM_T) > CSM_LONG_ROW) {
        /* A row past L2 and past CSM_LONG_KEEP, as csm_long_rows takes it:
         * the max and the sum in one read, then exp(x - max) * c. */
        CSM_T m;
        const CSM_T c = (CSM_T)(1.0 / CSM_FN(csm_long_max_sum)(x, mk, K, &m, NULL, NULL, 1, NULL));
        CSM_T e[CSM_EXP_CHUNK];
        for (ptrdiff_t i0 = 0; i0 < K; i0 += CSM_EXP_CHUNK) {
            const ptrdiff_t nb = K - i0 < CSM_EXP_CHUNK ? K - i0 : CSM_EXP_CHUNK;
            CSM_FN(csm_exp_lanes)(e, x + i0, NULL, m, nb, 0);
#pragma omp simd
            for (ptrdiff_t p = 0; p < nb; ++p)
                y[i0 + p] = mk[i0 + p] ? e[p] * c : (CSM_T)0;
        }
        if (c != c) /* csm_nan_rows's rule */
            CSM_NAN_ROW_(y, 1, K, mk);
        return;
    }
    CSM_T m;
    const int normal = CSM_FN(csm_group_rows_max_normal)(1, &x, &mk, K, &m);
    const double s = normal > 0 ? CSM_FN(csm_row_exp_sum_eager)(x, mk, y, m, K, 0.0, 1)
                                : CSM_FN(csm_row_exp_sum_eager)(x, mk, y, m, K, 0.0, normal);
    CSM_FN(csm_masked_finish)(CSM_OP_SOFTMAX, x, mk, y, K, m, s);
}

/* log_softmax_backward's output of a masked row whose sum of g (over the
 * unmasked elements) is sg, the mask mk read at its declared type: the
 * widened row (csm_masked_lbwd_out) or the caller's bytes
 * (csm_masked_lbwd_out_bytes, AVX-512). One body, so the two give the same
 * bits; its NaN rows are csm_nan_rows's. */
#define CSM_MASKED_LBWD_OUT_BODY_                                                             \
    {                                                                                         \
        CSM_MASKED_LBWD_OUT_;                                                                 \
        /* csm_nan_rows's rule, for either type of mask. */                                   \
        if (sg != sg)                                                                         \
            CSM_NAN_ROW_(y, 1, K, mk);                                                        \
    }
#if CSM_EXP_TAB
  #define CSM_MASKED_LBWD_OUT_                                                                \
    CSM_T e[CSM_EXP_CHUNK];                                                                   \
    for (ptrdiff_t i0 = 0; i0 < K; i0 += CSM_EXP_CHUNK) {                                     \
        const ptrdiff_t nb = K - i0 < CSM_EXP_CHUNK ? K - i0 : CSM_EXP_CHUNK;                 \
        CSM_FN(csm_exp_lanes)(e, x + i0, NULL, 0, nb, 1);                                     \
        _Pragma("omp simd")                                                                   \
        for (ptrdiff_t p = 0; p < nb; ++p)                                                    \
            y[i0 + p] = mk[i0 + p] ? g[i0 + p] - e[p] * sg : (CSM_T)0;                        \
    }
#else
/* One loop where the C form vectorises (float64, baseline; see
 * csm_exp_lanes): chunked, it cost 3% here (AVX-512 float32 when its C form
 * was the degree-6 polynomial, 4096 x 128). */
  #define CSM_MASKED_LBWD_OUT_                                                                \
    _Pragma("omp simd")                                                                       \
    for (ptrdiff_t i = 0; i < K; ++i)                                                         \
        y[i] = mk[i] ? g[i] - CSM_FN(csm_exp)(x[i]) * sg : (CSM_T)0
#endif
static CSM_INLINE CSM_TARGET void CSM_FN(csm_masked_lbwd_out)(const CSM_T *x, const CSM_T *g,
                                                              const CSM_MW_T *mk, CSM_T *y, ptrdiff_t K,
                                                              const CSM_T sg)
CSM_MASKED_LBWD_OUT_BODY_
#if CSM_EXP_V && CSM_ISA_ID == 2
static CSM_INLINE CSM_TARGET void CSM_FN(csm_masked_lbwd_out_bytes)(const CSM_T *x, const CSM_T *g,
                                                                    const unsigned char *mk, CSM_T *y,
                                                                    ptrdiff_t K, const CSM_T sg)
CSM_MASKED_LBWD_OUT_BODY_
#endif
#undef CSM_MASKED_LBWD_OUT_BODY_
#undef CSM_MASKED_LBWD_OUT_

/* The output of a masked row of a backward pass once its sum s is known
 * (the dot product of g and x for softmax_backward, the sum of g for
 * log_softmax_backward, over the unmasked elements), the mask widened. */
static CSM_INLINE CSM_TARGET void CSM_FN(csm_masked_bwd_out)(int op, const CSM_T *x, const CSM_T *g,
                                                             const CSM_MW_T *mk, CSM_T *y, ptrdiff_t K,
                                                             double s)
{
    if (op == CSM_OP_LOG_SOFTMAX_BACKWARD) {
        CSM_FN(csm_masked_lbwd_out)(x, g, mk, y, K, (CSM_T)s);
        return;
    }
    const CSM_T d = (CSM_T)s;
#pragma omp simd
    for (ptrdiff_t i = 0; i < K; ++i)
        y[i] = mk[i] ? x[i] * (g[i] - d) : (CSM_T)0;
    if (d != d) /* csm_nan_rows's rule */
        CSM_NAN_ROW_(y, 1, K, mk);
}
#if CSM_EXP_V && CSM_ISA_ID == 2
/* AVX-512: softmax_backward's output of a masked row whose dot product is s,
 * the mask the caller's bytes (unit stride), in registers: each register's
 * masked lanes +0, as csm_masked_bwd_out's select makes them. */
static CSM_INLINE CSM_TARGET void CSM_FN(csm_masked_sbwd_out_bytes)(const CSM_T *x, const CSM_T *g,
                                                                    const unsigned char *m, CSM_T *y,
                                                                    ptrdiff_t K, double s)
{
    const CSM_XV d = CSM_XV_(set1)((CSM_T)s);
    ptrdiff_t i = 0;
    for (; i + CSM_XVW <= K; i += CSM_XVW)
        CSM_XV_(storeu)(y + i, CSM_XV_(maskz_mul)(CSM_FN(csm_keep_bytes)(m + i, CSM_XVW), CSM_XV_(loadu)(x + i),
                                                  CSM_XV_(sub)(CSM_XV_(loadu)(g + i), d)));
    if (i < K) {
        const CSM_XM k = CSM_FN(csm_keep_bytes)(m + i, K - i);
        CSM_XV_STOREN(y + i, K - i,
                      CSM_XV_(maskz_mul)(k, CSM_XV_LOADM(x + i, k), CSM_XV_(sub)(CSM_XV_LOADM(g + i, k), d)));
    }
    if (s != s) /* csm_nan_rows's rule */
        CSM_NAN_ROW_(y, 1, K, m);
}

/* AVX-512: masked rows of a backward pass with unit strides (row r of a, b,
 * the mask and out at r ars, r brs, r mrs and r ors; mrs = 0: one mask for
 * every row), the mask read as the caller's bytes, not widened into a row
 * first: csm_masked_row's sums (csm_row_sum_bytes) and outputs, so the same
 * bits. Out of line: inlined into csm_masked_rows, these loops spilled
 * registers to the stack. softmax_backward's short rows are pipelined as the
 * unmasked kernel's are (CSM_BWD_PIPE_BYTES): row r's dot product before row
 * r - 1's output, so the sum's tree resolves while the next row's loads
 * run. AMD Zen 4, one thread, a random mask (90% kept), out=, two
 * alternations of the builds, us, widened -> bytes, softmax_backward
 * (log_softmax_backward): float32 4096 x 128 168-204 -> 93-94 (249-285 ->
 * 180; unmasked 81), 8192 x 129 447-474 -> 266-267 (640-669 -> 421-429),
 * 8192 x 256 595-665 -> 444-497 (955-969 -> 688-710), 2048 x 1000 643-687
 * -> 518-607 (883-941 -> 697-736); float64 8192 x 64 297-372 -> 178-182,
 * 1024 x 1000 876-974 -> 483-504. The pipeline alone: float32 4096 x 128
 * 104.5 -> 94, but 2048 x 1000 719-764 -> 848-920. float64
 * log_softmax_backward widens (csm_masked_rows): its output loop (the C
 * form's exp) selected by bytes took 1.02-1.17x the widened row's time
 * (8192 x 64 621-701 -> 706-710, 1024 x 1000 1344-1426 -> 1570-1608). AVX2
 * has no mask registers: rebuilding a lane mask from the bytes took two or
 * three operations per register, and the same form there measured
 * 0.78-1.35x the widened row's time (float32 8192 x 129 405 -> 547, 2048 x
 * 1000 671 -> 757, 4096 x 128 175 -> 173; float64 4096 x 128 262 -> 203),
 * so AVX2 and baseline widen. */
static CSM_NOINLINE CSM_TARGET void CSM_FN(csm_masked_bwd_bytes_rows)(
    int op, const CSM_T *a, ptrdiff_t ars, const CSM_T *b, ptrdiff_t brs, const unsigned char *mk,
    ptrdiff_t mrs, CSM_T *out, ptrdiff_t ors, ptrdiff_t rows, ptrdiff_t K)
{
    if (op == CSM_OP_LOG_SOFTMAX_BACKWARD) {
        for (ptrdiff_t r = 0; r < rows; ++r) {
            const CSM_T *gr = b + r * brs;
            const unsigned char *mr = mk + r * mrs;
            CSM_FN(csm_masked_lbwd_out_bytes)(a + r * ars, gr, mr, out + r * ors, K,
                                              (CSM_T)CSM_FN(csm_row_sum_bytes)(gr, gr, mr, K, CSM_SUM_PLAIN));
        }
        return;
    }
    if (K * (ptrdiff_t)sizeof(CSM_T) > CSM_BWD_PIPE_BYTES) {
        for (ptrdiff_t r = 0; r < rows; ++r) {
            const CSM_T *yr = a + r * ars, *gr = b + r * brs;
            const unsigned char *mr = mk + r * mrs;
            CSM_FN(csm_masked_sbwd_out_bytes)(yr, gr, mr, out + r * ors, K,
                                              CSM_FN(csm_row_sum_bytes)(gr, yr, mr, K, CSM_SUM_DOT));
        }
        return;
    }
    if (rows <= 0)
        return;
    double sp = CSM_FN(csm_row_sum_bytes)(b, a, mk, K, CSM_SUM_DOT);
    for (ptrdiff_t r = 1; r < rows; ++r) {
        const double sr = CSM_FN(csm_row_sum_bytes)(b + r * brs, a + r * ars, mk + r * mrs, K, CSM_SUM_DOT);
        CSM_FN(csm_masked_sbwd_out_bytes)(a + (r - 1) * ars, b + (r - 1) * brs, mk + (r - 1) * mrs,
                                          out + (r - 1) * ors, K, sp);
        sp = sr;
    }
    CSM_FN(csm_masked_sbwd_out_bytes)(a + (rows - 1) * ars, b + (rows - 1) * brs, mk + (rows - 1) * mrs,
                                      out + (rows - 1) * ors, K, sp);
}
#endif

/* Masked rows of a backward pass with unit strides where the mask is widened
 * (AVX2, baseline, float64 log_softmax_backward under AVX-512): each row's
 * mask widened into tw (and tw2 for the pipeline; mrs = 0: once), then
 * csm_masked_row's sums and outputs, so the same bits, out of line and
 * with softmax_backward's short rows pipelined as in
 * csm_masked_bwd_bytes_rows. AMD Zen 4, AVX2, one thread, a random mask (90%
 * kept), out=, two alternations, us, row by row in csm_masked_rows -> here,
 * softmax_backward (log_softmax_backward): float32 4096 x 128 180 -> 166
 * (297 -> 292), 8192 x 129 410-472 -> 396-398 (663-722 -> 645-650), 2048 x
 * 1000 735-774 -> 656-670 (1258-1378 -> 1112-1132); float64 8192 x 64
 * 284-285 -> 263-267 (1173-1187 -> 1038-1042), 1024 x 1000 838-874 ->
 * 736-766 (3147-3191 -> 2831-2968). */
static CSM_NOINLINE CSM_TARGET void CSM_FN(csm_masked_bwd_wide_rows)(
    int op, const CSM_T *a, ptrdiff_t ars, const CSM_T *b, ptrdiff_t brs, const unsigned char *mk,
    ptrdiff_t mrs, CSM_T *out, ptrdiff_t ors, ptrdiff_t rows, ptrdiff_t K, CSM_MW_T *tw, CSM_MW_T *tw2)
{
    if (rows <= 0)
        return;
    CSM_FN(csm_mask_widen)(tw, mk, 1, K);
    if (op == CSM_OP_SOFTMAX_BACKWARD && K * (ptrdiff_t)sizeof(CSM_T) <= CSM_BWD_PIPE_BYTES) {
        CSM_MW_T *wp = tw, *wn = mrs ? tw2 : tw;
        double sp = CSM_FN(csm_row_sum)(b, a, wp, K, CSM_SUM_DOT, NULL, NULL, NULL);
        for (ptrdiff_t r = 1; r < rows; ++r) {
            if (mrs)
                CSM_FN(csm_mask_widen)(wn, mk + r * mrs, 1, K);
            const double sr = CSM_FN(csm_row_sum)(b + r * brs, a + r * ars, wn, K, CSM_SUM_DOT, NULL, NULL, NULL);
            CSM_FN(csm_masked_bwd_out)(op, a + (r - 1) * ars, b + (r - 1) * brs, wp, out + (r - 1) * ors, K, sp);
            CSM_MW_T *t = wp;
            wp = wn;
            wn = mrs ? t : wn;
            sp = sr;
        }
        CSM_FN(csm_masked_bwd_out)(op, a + (rows - 1) * ars, b + (rows - 1) * brs, wp, out + (rows - 1) * ors,
                                   K, sp);
        return;
    }
    for (ptrdiff_t r = 0; r < rows; ++r) {
        if (r && mrs)
            CSM_FN(csm_mask_widen)(tw, mk + r * mrs, 1, K);
        const CSM_T *yr = a + r * ars, *gr = b + r * brs;
        CSM_FN(csm_masked_bwd_out)(op, yr, gr, tw, out + r * ors, K,
                                   op == CSM_OP_SOFTMAX_BACKWARD
                                       ? CSM_FN(csm_row_sum)(gr, yr, tw, K, CSM_SUM_DOT, NULL, NULL, NULL)
                                       : CSM_FN(csm_row_sum)(gr, gr, tw, K, CSM_SUM_PLAIN, NULL, NULL, NULL));
    }
}

/* logsumexp of a row past L2 (mk: a widened mask or NULL): its max M and
 * sum S in one read, chunk by chunk, as softmax's and log_softmax's long
 * rows take them (csm_long_max_sum), where a max over the whole row, then
 * the sum, read it twice from memory; then M + log(S) in double, or, where
 * M is not finite, scipy.special.logsumexp's rules (NaN where an element
 * that takes part is NaN, else M: +inf, or -inf for nothing but -inf). A
 * NaN with M finite makes S NaN. AMD Zen 4, 8 x 2^20 float32, one thread:
 * docs/design.md. Out of line: inlined into csm_logsumexp_rows, it grew
 * that kernel's code for the rows in cache (20 KiB to 28 KiB under AVX2)
 * and their logsumexp took 3% longer (4096 x 128 float32, AVX2 kernels, AMD
 * Zen 4); a call per row past L2 costs nothing. */
static CSM_NOINLINE CSM_TARGET CSM_T CSM_FN(csm_lse_long)(const CSM_T *x, const CSM_MW_T *mk, ptrdiff_t K)
{
    CSM_T m;
    const double s = CSM_FN(csm_long_max_sum)(x, mk, K, &m, NULL, NULL, 1, NULL);
    if (m - m != 0)
        return CSM_FN(csm_row_has_nan)(x, mk, K) ? (CSM_T)NAN : m;
    return CSM_FN(csm_nan_q)((CSM_T)((double)m + CSM_PASTE(csm_log, CSM_PASTE(f64, CSM_ISA))(s)));
}

/* One row of op, contiguous operands (x: the input or y; g: grad; mk: the
 * mask, NULL only for logsumexp), into y (row-shaped ops), y[0]
 * (logsumexp) or the K x K block y (the Jacobian). y may be x or g. */
static CSM_INLINE CSM_TARGET void CSM_FN(csm_masked_row)(
    int op, const CSM_T *x, const CSM_T *g, const CSM_MW_T *mk, CSM_T *y, ptrdiff_t K)
{
    switch (op) {
    case CSM_OP_SOFTMAX:
        CSM_FN(csm_masked_softmax_row)(x, mk, y, K);
        break;
    case CSM_OP_LOG_SOFTMAX: {
        CSM_T m;
        double s;
        if (K * (ptrdiff_t)sizeof(CSM_T) > CSM_LONG_ROW) {
            /* A row past L2 takes its max and sum as csm_long_rows does. */
            s = CSM_FN(csm_long_max_sum)(x, mk, K, &m, NULL, NULL, 1, NULL);
        } else {
            const int normal = CSM_FN(csm_group_rows_max_normal)(1, &x, &mk, K, &m);
            s = normal > 0 ? CSM_FN(csm_row_exp_sum_eager)(x, mk, NULL, m, K, 0.0, 1)
                           : CSM_FN(csm_row_exp_sum_eager)(x, mk, NULL, m, K, 0.0, normal);
        }
        CSM_FN(csm_masked_finish)(CSM_OP_LOG_SOFTMAX, x, mk, y, K, m, s);
        break;
    }
    case CSM_OP_SOFTMAX_BACKWARD:
        CSM_FN(csm_masked_bwd_out)(op, x, g, mk, y, K,
                                   CSM_FN(csm_row_sum)(g, x, mk, K, CSM_SUM_DOT, NULL, NULL, NULL));
        break;
    case CSM_OP_LOG_SOFTMAX_BACKWARD:
        CSM_FN(csm_masked_bwd_out)(op, x, g, mk, y, K,
                                   CSM_FN(csm_row_sum)(g, g, mk, K, CSM_SUM_PLAIN, NULL, NULL, NULL));
        break;
    case CSM_OP_SOFTMAX_JACOBIAN: {
        /* s into the block's last row (scratch until it is written last),
         * then the block, with row and column i exactly 0 where element i is
         * masked (a product 0 * s_j would be NaN beside a NaN row). Row
         * K - 1 reads each s_j before its own store, as in
         * csm_softmax_jacobian_rows. */
        const CSM_T *sv = y + (K - 1) * K;
        CSM_FN(csm_masked_softmax_row)(x, mk, y + (K - 1) * K, K);
        for (ptrdiff_t i = 0; i < K; ++i) {
            const CSM_T si = sv[i];
            const CSM_T di = CSM_FN(csm_jac_diag)(si, sv, K); /* before row i's stores (masked s_j are 0) */
            const CSM_MW_T mi = mk[i];
            CSM_T *Ji = y + i * K;
#pragma omp simd
            for (ptrdiff_t j = 0; j < K; ++j)
                Ji[j] = (mi & mk[j]) ? (CSM_T)0 - si * sv[j] : (CSM_T)0;
            Ji[i] = mi ? di : (CSM_T)0;
        }
        break;
    }
    case CSM_OP_LOGSUMEXP: {
        /* scipy.special.logsumexp's rules: NaN -> NaN; else +inf -> +inf;
         * nothing but -inf (or nothing at all) -> -inf; else
         * max + log(sum(exp(x - max))), in double. */
        CSM_T m;
        if (K * (ptrdiff_t)sizeof(CSM_T) > CSM_LONG_ROW) {
            /* A row past L2, as csm_logsumexp_rows takes it (csm_lse_long) */
            y[0] = CSM_FN(csm_lse_long)(x, mk, K);
            break;
        }
        const int normal = mk ? CSM_FN(csm_group_rows_max_normal)(1, &x, &mk, K, &m)
                              : CSM_FN(csm_group_rows_max_normal)(1, &x, NULL, K, &m);
        if (m - m != 0) { /* +-inf (m is never NaN) */
            y[0] = CSM_FN(csm_row_has_nan)(x, mk, K) ? (CSM_T)NAN : m;
            break;
        }
        CSM_FN(csm_masked_finish)(CSM_OP_LOGSUMEXP, x, mk, y, K, m, CSM_FN(csm_row_exp_total)(x, mk, m, K, normal));
        break;
    }
    default:
        break;
    }
}

/* buf[i] where mb[i] is set, else fill, for i < n. Under AVX-512 float64
 * by the bits, as a vector and-or: GCC's select of a double on a byte went
 * as the mask did there (softmax(where=) 100000 x 10 float64, one thread,
 * ms: a random mask 1.91, all-true 1.29; by the bits 1.38 and 1.38). The
 * and-or cost more elsewhere (AVX2 float64 1.70 -> 1.87, float32 20000 x
 * 17 0.23 -> 0.27, AVX-512 float32 all-true 0.71 -> 0.78), so the select
 * stays there. */
static CSM_INLINE CSM_TARGET void CSM_FN(csm_lanes_keep)(CSM_T *buf, const unsigned char *mb,
                                                         ptrdiff_t n, CSM_T fill)
{
#if CSM_ISA_ID == 2 && !CSM_F32
    CSM_MW_T f;
    memcpy(&f, &fill, sizeof f);
#pragma omp simd
    for (ptrdiff_t i = 0; i < n; ++i) {
        CSM_MW_T b;
        memcpy(&b, buf + i, sizeof b);
        const CSM_MW_T w = (CSM_MW_T)0 - (CSM_MW_T)(mb[i] != 0);
        b = (b & w) | (f & ~w);
        memcpy(buf + i, &b, sizeof b);
    }
#else
#pragma omp simd
    for (ptrdiff_t i = 0; i < n; ++i)
        buf[i] = mb[i] ? buf[i] : fill;
#endif
}

/* Short masked rows (K <= CSM_SMALL_K, unit column strides) of softmax and
 * log_softmax take the lane layout of the unmasked kernels (csm_small_rows):
 * row loops of a few elements spend their time in remainders and per-row
 * reductions. A group is transposed in (the data by the unmasked path's
 * tiles, the mask by csm_mask_lanes), its masked elements set to -inf,
 * which gives them exact zeros in the sum whenever the row's max is finite
 * (as the row kernels' selects do, so the bits agree), and set to 0 or
 * -inf after, which also clears the NaN of a row with nothing unmasked.
 * The selects run along the lanes (csm_lanes_keep). wide: as
 * csm_mask_lanes takes it. */
static CSM_INLINE CSM_TARGET void CSM_FN(csm_small_group_m)(
    const CSM_T *x, ptrdiff_t ldx, const unsigned char *mk, ptrdiff_t ldm, CSM_T *y,
    ptrdiff_t ldy, ptrdiff_t K, int log_out, const ptrdiff_t lanes, int wide)
{
    CSM_T buf[CSM_SMALL_K * CSM_LANES];
    unsigned char mb[CSM_SMALL_K * CSM_LANES];
    const CSM_T off = log_out ? -CSM_INF_T : (CSM_T)0;
    CSM_LANES_IN(buf, x, ldx, K, lanes);
    csm_mask_lanes(mk, ldm, K, mb, lanes, wide);
    CSM_FN(csm_lanes_keep)(buf, mb, K * lanes, -CSM_INF_T);
    CSM_FN(csm_lanes_softmax_buf)(buf, K, log_out, lanes);
    CSM_FN(csm_lanes_keep)(buf, mb, K * lanes, off);
    CSM_LANES_OUT(y, ldy, buf, K, lanes);
}

static CSM_TARGET void CSM_FN(csm_small_rows_m)(
    const CSM_T *x, ptrdiff_t ldx, const unsigned char *mk, ptrdiff_t ldm, CSM_T *y,
    ptrdiff_t ldy, ptrdiff_t rows, ptrdiff_t K, int log_out)
{
    ptrdiff_t r = 0;
    for (; r + CSM_LANES <= rows; r += CSM_LANES) {
        const CSM_T *xg = x + r * ldx;
        const unsigned char *mg = mk + r * ldm;
        CSM_T *yg = y + r * ldy;
        const int wide = csm_mask_lanes_wide(ldm, K, r, rows);
        switch (K) { /* a constant K unrolls the transposes (see csm_small_rows) */
#define CSM_K_CASE(kk) case kk: CSM_FN(csm_small_group_m)(xg, ldx, mg, ldm, yg, ldy, kk, log_out, CSM_LANES, wide); break;
        CSM_SMALL_K_CASES(CSM_K_CASE)
#undef CSM_K_CASE
        default:
            break;
        }
    }
    for (; r < rows; ++r)
        CSM_FN(csm_small_group_m)(x + r * ldx, ldx, mk + r * ldm, ldm, y + r * ldy, ldy, K,
                                  log_out, 1, 0);
}

/* logsumexp of short rows (K <= CSM_SMALL_K, unit column stride) in the
 * lane layout, for the reason above: the max per lane, the sum of exp(x -
 * max) as csm_row_exp_total takes it (partial p holds elements p and
 * p + 16, added in the element type, then the fixed tree, then double), so
 * the bits are the row path's. mk may be NULL. */
static CSM_INLINE CSM_TARGET void CSM_FN(csm_small_lse_group)(
    const CSM_T *x, ptrdiff_t ldx, const unsigned char *mk, ptrdiff_t ldm, CSM_T *out,
    ptrdiff_t ldo, ptrdiff_t K, const ptrdiff_t lanes, int wide)
{
    CSM_T buf[CSM_SMALL_K * CSM_LANES], m[CSM_LANES], e[CSM_SMALL_K * CSM_LANES];
    double lg[CSM_LANES];
    CSM_LANES_IN(buf, x, ldx, K, lanes);
    if (mk) { /* as csm_small_group_m */
        unsigned char mb[CSM_SMALL_K * CSM_LANES];
        csm_mask_lanes(mk, ldm, K, mb, lanes, wide);
        CSM_FN(csm_lanes_keep)(buf, mb, K * lanes, -CSM_INF_T);
    }
#pragma omp simd
    for (ptrdiff_t l = 0; l < lanes; ++l)
        m[l] = -CSM_INF_T;
    for (ptrdiff_t j = 0; j < K; ++j) {
#pragma omp simd
        for (ptrdiff_t l = 0; l < lanes; ++l)
            m[l] = buf[j * lanes + l] > m[l] ? buf[j * lanes + l] : m[l];
    }
    for (ptrdiff_t j = 0; j < K; ++j)
        CSM_FN(csm_exp_lanes)(e + j * lanes, buf + j * lanes, m, 0, lanes, 0);
#define CSM_E(j) e[(j) * lanes + l]
#define CSM_PAIR(p) ((p) >= K ? (CSM_T)0 : (p) + 16 >= K ? CSM_E(p) : CSM_E(p) + CSM_E((p) + 16))
#pragma omp simd
    for (ptrdiff_t l = 0; l < lanes; ++l)
        lg[l] = CSM_PASTE(csm_log, CSM_PASTE(f64, CSM_ISA))((double)CSM_TREE16(CSM_PAIR));
    CSM_FN(csm_nan_d)(lg, lanes); /* m + lg then the quiet NaN (csm_nan_q) */
#undef CSM_PAIR
#undef CSM_E
    for (ptrdiff_t l = 0; l < lanes; ++l) {
        if (m[l] - m[l] == 0)
            out[l * ldo] = (CSM_T)((double)m[l] + lg[l]);
        else /* +-inf: NaN if the row holds one, else the max (scipy's rules) */
            out[l * ldo] = CSM_FN(csm_row_has_nan_b)(x + l * ldx, mk ? mk + l * ldm : 0, K)
                               ? (CSM_T)NAN : m[l];
    }
}

static CSM_TARGET void CSM_FN(csm_small_lse_rows)(
    const CSM_T *x, ptrdiff_t ldx, const unsigned char *mk, ptrdiff_t ldm, CSM_T *out,
    ptrdiff_t ldo, ptrdiff_t rows, ptrdiff_t K)
{
    ptrdiff_t r = 0;
    for (; r + CSM_LANES <= rows; r += CSM_LANES) {
        const CSM_T *xg = x + r * ldx;
        const unsigned char *mg = mk ? mk + r * ldm : 0;
        CSM_T *og = out + r * ldo;
        const int wide = mk && csm_mask_lanes_wide(ldm, K, r, rows);
        switch (K) {
#define CSM_K_CASE(kk) case kk: CSM_FN(csm_small_lse_group)(xg, ldx, mg, ldm, og, ldo, kk, CSM_LANES, wide); break;
        CSM_SMALL_K_CASES(CSM_K_CASE)
#undef CSM_K_CASE
        default:
            break;
        }
    }
    for (; r < rows; ++r)
        CSM_FN(csm_small_lse_group)(x + r * ldx, ldx, mk ? mk + r * ldm : 0, ldm,
                                    out + r * ldo, ldo, K, 1, 0);
}

/* logsumexp's maxima and sums of R rows (R a constant): sm[r] is 1 where
 * the max is not finite (the value comes from the max then). */
static CSM_INLINE CSM_TARGET void CSM_FN(csm_lse_sum_group)(const int R, const CSM_T *x, ptrdiff_t ldx,
                                                            ptrdiff_t K, CSM_T *mx, double *sm)
{
    const CSM_T *xr[CSM_ROWS_MAX];
    const CSM_MW_T *mk[CSM_ROWS_MAX];
    CSM_T *none[CSM_ROWS_MAX];
    const char *nopf[CSM_ROWS_MAX];
    int finite = 1;
    CSM_EACH_ROW
    for (int rr = 0; rr < R; ++rr) {
        xr[rr] = x + rr * ldx;
        mk[rr] = NULL;
        none[rr] = NULL;
        nopf[rr] = NULL;
        sm[rr] = 0.0;
    }
    const int normal = CSM_FN(csm_group_rows_max_normal)(R, xr, NULL, K, mx);
    CSM_EACH_ROW
    for (int rr = 0; rr < R; ++rr)
        finite &= mx[rr] - mx[rr] == 0;
    if (finite) {
        if (normal > 0)
            CSM_FN(csm_rows_exp_sum_from)(R, xr, mk, none, mx, K, sm, nopf, nopf, 1);
        else
            CSM_FN(csm_rows_exp_sum_from)(R, xr, mk, none, mx, K, sm, nopf, nopf, normal);
        return;
    }
    CSM_EACH_ROW
    for (int rr = 0; rr < R; ++rr)
        sm[rr] = mx[rr] - mx[rr] == 0 ? CSM_FN(csm_row_exp_total)(xr[rr], 0, mx[rr], K, 0) : 1.0;
}

/* logsumexp's row kernel, for the table of _rows_isa.h: one value per row,
 * at out[r * ldo]. */
static CSM_TARGET void CSM_FN(csm_logsumexp_rows)(
    const CSM_T *x, ptrdiff_t ldx, const CSM_T *unused, ptrdiff_t ldu,
    CSM_T *out, ptrdiff_t ldo, ptrdiff_t rows, ptrdiff_t K, int flags)
{
    (void)unused; (void)ldu; (void)flags;
    if (K <= CSM_SMALL_K) {
        CSM_FN(csm_small_lse_rows)(x, ldx, 0, 0, out, ldo, rows, K);
        return;
    }
    if (K * (ptrdiff_t)sizeof(CSM_T) > CSM_LONG_ROW) {
        for (ptrdiff_t r = 0; r < rows; ++r)
            out[r * ldo] = CSM_FN(csm_lse_long)(x + r * ldx, NULL, K);
        return;
    }
    /* In chunks of CSM_LOG_CHUNK rows, as csm_log_softmax_core: maxima and
     * sums, then one vectorised log over the chunk's sums (a log per row was
     * 30% of the time at 4096 x 128 float32, AVX-512); the same values as
     * csm_masked_row's logsumexp. */
    CSM_T mx[CSM_LOG_CHUNK];
    double sm[CSM_LOG_CHUNK];
    for (ptrdiff_t r0 = 0; r0 < rows; r0 += CSM_LOG_CHUNK) {
        const ptrdiff_t nr = rows - r0 < CSM_LOG_CHUNK ? rows - r0 : CSM_LOG_CHUNK;
        ptrdiff_t r = 0;
#if CSM_EXP_V
        if (CSM_ROWS_AT_ONCE(K) == CSM_ROWS_MAX)
            for (; r + CSM_ROWS_MAX <= nr; r += CSM_ROWS_MAX)
                CSM_FN(csm_lse_sum_group)(CSM_ROWS_MAX, x + (r0 + r) * ldx, ldx, K, mx + r, sm + r);
#endif
        for (; r < nr; ++r)
            CSM_FN(csm_lse_sum_group)(1, x + (r0 + r) * ldx, ldx, K, mx + r, sm + r);
#pragma omp simd
        for (ptrdiff_t r = 0; r < nr; ++r)
            sm[r] = CSM_PASTE(csm_log, CSM_PASTE(f64, CSM_ISA))(sm[r]);
        CSM_FN(csm_nan_d)(sm, nr); /* m + sm then the quiet NaN (csm_nan_q) */
        for (ptrdiff_t r = 0; r < nr; ++r) {
            const CSM_T m = mx[r];
            out[(r0 + r) * ldo] = m - m == 0 ? (CSM_T)((double)m + sm[r])
                : CSM_FN(csm_row_has_nan)(x + (r0 + r) * ldx, 0, K) ? (CSM_T)NAN : m;
        }
    }
}

/* logsumexp of rows past L2 without a mask whose elements are interleaved
 * (Fortran order: |row stride| < |column stride|), csm_lse_long's steps a
 * group of up to CSM_LONG_GROUP rows at a time, chunk by chunk, each chunk
 * of the group gathered into buf as rows (csm_rows_move), where a gathered
 * row read every line of the array once per row it holds: each row's max
 * and sum carried from chunk to chunk as csm_long_max_sum carries them
 * (csm_long_chunk, each row its own *fuse), so the bits of C order; then,
 * for a group with a row whose max is not finite, a second read for
 * whether such a row holds a NaN. */
static CSM_NOINLINE CSM_TARGET void CSM_FN(csm_long_lse_strided)(
    const CSM_T *a, ptrdiff_t ars, ptrdiff_t acs, CSM_T *out, ptrdiff_t ors, ptrdiff_t rows,
    ptrdiff_t K, CSM_T *buf)
{
    enum { G = CSM_LONG_GROUP, C = CSM_LONG_CHUNK };
    for (ptrdiff_t r0 = 0; r0 < rows; r0 += G) {
        const ptrdiff_t g = rows - r0 < G ? rows - r0 : G;
        CSM_T *ag = (CSM_T *)(a + r0 * ars);
        CSM_T M[G];
        double S[G];
        int nan_in[G], fuse[G], finite = 1;
        for (ptrdiff_t l = 0; l < g; ++l) {
            M[l] = -CSM_INF_T;
            S[l] = 0.0;
            nan_in[l] = 0;
            fuse[l] = 1;
        }
        for (ptrdiff_t j = 0; j < K; j += C) {
            const ptrdiff_t n = K - j < C ? K - j : C;
            CSM_FN(csm_rows_move)(ag + j * acs, ars, acs, buf, C, n, g, 1);
            for (ptrdiff_t l = 0; l < g; ++l)
                CSM_FN(csm_long_chunk)(buf + l * C, NULL, NULL, n, j > 0, &S[l], &M[l], &fuse[l], NULL,
                                       NULL, NULL, NULL);
        }
        for (ptrdiff_t l = 0; l < g; ++l)
            finite &= M[l] - M[l] == 0;
        for (ptrdiff_t j = 0; !finite && j < K; j += C) {
            const ptrdiff_t n = K - j < C ? K - j : C;
            CSM_FN(csm_rows_move)(ag + j * acs, ars, acs, buf, C, n, g, 1);
            for (ptrdiff_t l = 0; l < g; ++l)
                if (M[l] - M[l] != 0)
                    nan_in[l] |= CSM_FN(csm_row_has_nan)(buf + l * C, NULL, n);
        }
        for (ptrdiff_t l = 0; l < g; ++l)
            out[(r0 + l) * ors] = M[l] - M[l] == 0
                ? CSM_FN(csm_nan_q)((CSM_T)((double)M[l]
                                            + CSM_PASTE(csm_log, CSM_PASTE(f64, CSM_ISA))(S[l])))
                : nan_in[l] ? (CSM_T)NAN : M[l];
    }
}

static CSM_TARGET void CSM_FN(csm_masked_rows)(
    int op, const CSM_T *a, ptrdiff_t ars, ptrdiff_t acs, const CSM_T *b, ptrdiff_t brs,
    ptrdiff_t bcs, const unsigned char *mk, ptrdiff_t mrs, ptrdiff_t mcs, CSM_T *out,
    ptrdiff_t ors, ptrdiff_t ocs, ptrdiff_t rows, ptrdiff_t K, CSM_T *buf);

/* Rows of masked softmax, log_softmax and logsumexp (unit column strides,
 * K <= CSM_ROWS_MAX_K) two at a time, as the unmasked kernels take them:
 * the pair's maxima (csm_group_rows_max_normal, the masks as selects), the
 * pair's exp-and-sum loops as one loop (csm_rows_exp_sum_eager), each row's
 * end (csm_masked_finish). Each row's operations are csm_masked_row's, so
 * the bits are. The masks widened into tw and tw2 (K elements each). A
 * logsumexp pair with a max that is not finite goes row by row. Returns the
 * rows done (an even number). One row at a time the pipeline waited on a
 * row's chain of dependent steps, as it did in the unmasked kernels: 4096 x
 * 128 float32, a random mask, one thread, Intel Xeon, AVX-512, us, a row
 * and a pair at a time: softmax (where=) 263 -> 228 (unmasked 143),
 * log_softmax 365 -> 290, logsumexp 335 -> 266.
 *
 * The maxima's pass keeps the minima of every element too, masked or not,
 * so that the exps take one form for the pair where every exp the loop
 * computes is normal, as the unmasked rows' do (a masked -inf or -1e30
 * sends the pair to the clamped form, which never makes a subnormal). One
 * thread, a random mask, AVX-512 / AVX2, us, before -> after: float64 4096
 * x 128 softmax 489-491 -> 467-469 / 698-715 -> 666, log_softmax 595-599
 * -> 556 / 855-884 -> 796-799; float32 4096 x 128 softmax 211-218 ->
 * 209-212 / 258-265 -> 248-274; float32 2048 x 300 (rows alone,
 * csm_masked_row) softmax 302-304 -> 265-267 / 318-330 -> 296-315. The
 * same bits, NaN's too, in 19530 cases against the build before. */
static CSM_TARGET ptrdiff_t CSM_FN(csm_masked_pairs)(
    int op, const CSM_T *a, ptrdiff_t ars, const unsigned char *mk, ptrdiff_t mrs, CSM_T *out,
    ptrdiff_t ors, ptrdiff_t rows, ptrdiff_t K, CSM_MW_T *tw, CSM_MW_T *tw2)
{
    const char *nopf[2] = {NULL, NULL};
    CSM_T *none[2] = {NULL, NULL};
    ptrdiff_t r = 0;
    for (; r + 2 <= rows; r += 2) {
        const CSM_T *xr[2] = {a + r * ars, a + (r + 1) * ars};
        CSM_T *yr[2] = {out + r * ors, out + (r + 1) * ors};
        const CSM_MW_T *mw[2] = {tw, mrs ? tw2 : tw};
        /* A mask shared by every row (mrs = 0) is widened once. */
        if (r == 0 || mrs)
            CSM_FN(csm_mask_widen)(tw, mk + r * mrs, 1, K);
        if (mrs)
            CSM_FN(csm_mask_widen)(tw2, mk + (r + 1) * mrs, 1, K);
        CSM_T m[2];
        double s[2] = {0.0, 0.0};
        const int normal = CSM_FN(csm_group_rows_max_normal)(2, xr, mw, K, m);
        if (op == CSM_OP_LOGSUMEXP && !(m[0] - m[0] == 0 && m[1] - m[1] == 0)) {
            for (int rr = 0; rr < 2; ++rr)
                CSM_FN(csm_masked_row)(op, xr[rr], xr[rr], mw[rr], yr[rr], K);
            continue;
        }
        CSM_T *const *ys = op == CSM_OP_SOFTMAX ? yr : none; /* softmax: the terms into y */
        if (normal > 0)
            CSM_FN(csm_rows_exp_sum_eager)(2, xr, mw, ys, m, K, s, nopf, nopf, 1);
        else
            CSM_FN(csm_rows_exp_sum_eager)(2, xr, mw, ys, m, K, s, nopf, nopf, normal);
        for (int rr = 0; rr < 2; ++rr)
            CSM_FN(csm_masked_finish)(op, xr[rr], mw[rr], yr[rr], K, m[rr], s[rr]);
    }
    return r;
}

/* The longest rows csm_masked_short_bwd takes; longer ones take the masked
 * row kernel. 1024 rows, a random mask, one thread, Intel Xeon, us,
 * softmax_backward (log_softmax_backward), row kernel -> lanes: AVX2
 * float32 K = 24 24.8 (26.2) -> 18.1 (24.3), K = 28 27.7 (30.0) -> 22.7
 * (31.1), K = 32 15.4 (24.0) -> 23.1 (30.9); AVX2 float64 K = 16 21.2 (43.4)
 * -> 17.7 (34.5), K = 20 21.0 (48.3) -> 25.4 (48.0); AVX-512 float32 K = 32
 * 28.9 (30.2) -> 20.0 (23.0); AVX-512 float64 K = 24 27.2 (41.9) -> 24.2
 * (36.3), K = 28 28.6 (47.4) -> 30.9 (46.9); baseline float32 K = 32 131
 * (195) -> 50 (81), with K a constant per case (below). At K = 10,
 * float32, K read at run time: AVX-512 26.6 (46.3) -> 11.6 (11.1), AVX2
 * 23.5 (23.7) -> 11.1 (12.5); unmasked 3.8-4.4. */
#ifndef CSM_MASKED_BWD_LANES_K
  #define CSM_MASKED_BWD_LANES_K \
      (CSM_ISA_ID == 1 ? (CSM_F32 ? 24 : 16) : CSM_ISA_ID == 2 && !CSM_F32 ? 24 : CSM_SMALL_K)
#endif

/* Short rows of the masked backward passes (K <= CSM_MASKED_BWD_LANES_K,
 * unit column strides) in the lane layout of the unmasked ones
 * (csm_small_bwd_group, whose sums are written out for K <= 32): a group of
 * CSM_LANES rows transposed in, its masked y and g set to +0, the unmasked
 * kernel's sums and formula, and the output's masked elements set to 0
 * before it is transposed out. The masked row kernel takes a masked term of
 * its sum as fma(0, 0, acc) or acc + 0, which the zeros give, and its
 * output is the same formula where the mask is set and 0 elsewhere,
 * the rows whose sum (of g * y, or of g) is NaN too (csm_nan_rows: NaN
 * where the mask is set); the lane kernel gives the row kernels' bits
 * (tested), so this gives the masked row kernel's. The last rows go through
 * a whole group padded with masked rows, as csm_small_bwd_rows pads them.
 * Row by row, short rows spent their time in the widening, the remainders
 * and the per-row reduction. K is read at run time: a case per constant K,
 * as the unmasked lanes take them, unrolled the transposes but took each
 * ISA's compile from about 150 s to 220-290 s. */
static CSM_INLINE CSM_TARGET void CSM_FN(csm_small_bwd_group_m)(
    const CSM_T *y, ptrdiff_t ldy, const CSM_T *g, ptrdiff_t ldg, const unsigned char *mk, ptrdiff_t ldm,
    CSM_T *out, ptrdiff_t ldo, ptrdiff_t K, int logf, int wide)
{
    const ptrdiff_t lanes = CSM_LANES;
    CSM_T yb[CSM_SMALL_K * CSM_LANES], gb[CSM_SMALL_K * CSM_LANES], c[CSM_LANES];
    unsigned char mb[CSM_SMALL_K * CSM_LANES];
    CSM_LANES_IN(yb, y, ldy, K, lanes);
    CSM_LANES_IN(gb, g, ldg, K, lanes);
    csm_mask_lanes(mk, ldm, K, mb, lanes, wide);
    CSM_FN(csm_lanes_keep)(yb, mb, K * lanes, (CSM_T)0);
    CSM_FN(csm_lanes_keep)(gb, mb, K * lanes, (CSM_T)0);
    CSM_FN(csm_small_bwd_buf)(yb, gb, c, K, logf, lanes);
    CSM_FN(csm_nan_rows)(yb, 1, lanes, K, c, lanes);
    CSM_FN(csm_lanes_keep)(yb, mb, K * lanes, (CSM_T)0);
    CSM_LANES_OUT(out, ldo, yb, K, lanes);
}

static CSM_NOINLINE CSM_TARGET void CSM_FN(csm_masked_short_bwd)(
    int logf, const CSM_T *y, ptrdiff_t ldy, const CSM_T *g, ptrdiff_t ldg, const unsigned char *mk,
    ptrdiff_t ldm, CSM_T *out, ptrdiff_t ldo, ptrdiff_t rows, ptrdiff_t K)
{
    ptrdiff_t r = 0;
    for (; r + CSM_LANES <= rows; r += CSM_LANES)
        CSM_FN(csm_small_bwd_group_m)(y + r * ldy, ldy, g + r * ldg, ldg, mk + r * ldm, ldm,
                                      out + r * ldo, ldo, K, logf, csm_mask_lanes_wide(ldm, K, r, rows));
    if (r < rows) {
        CSM_T ty[CSM_LANES * CSM_SMALL_K], tg[CSM_LANES * CSM_SMALL_K];
        unsigned char tm[CSM_LANES * CSM_SMALL_K];
        const ptrdiff_t n = rows - r;
        for (ptrdiff_t i = 0; i < CSM_LANES * K; ++i) {
            ty[i] = tg[i] = 0;
            tm[i] = 0;
        }
        for (ptrdiff_t l = 0; l < n; ++l)
            for (ptrdiff_t j = 0; j < K; ++j) {
                ty[l * K + j] = y[(r + l) * ldy + j];
                tg[l * K + j] = g[(r + l) * ldg + j];
                tm[l * K + j] = mk[(r + l) * ldm + j];
            }
        CSM_FN(csm_small_bwd_group_m)(ty, K, tg, K, tm, K, ty, K, K, logf, 0);
        for (ptrdiff_t l = 0; l < n; ++l)
            for (ptrdiff_t j = 0; j < K; ++j)
                out[(r + l) * ldo + j] = ty[l * K + j];
    }
}

/* Staged rows of the masked family (csm_masked_rows says when):
 * csm_stage_rows(K) rows at a time, each operand that is not row-contiguous,
 * the mask too, gathered into buf as contiguous rows (csm_stage_in,
 * csm_mask_rows_move), the rows computed where they then lie by
 * csm_masked_rows (logsumexp without a mask by its row kernel, as C order
 * is), into the output where its rows are contiguous (or it is not shaped
 * like the rows), else into the first operand's rows and scattered from
 * there. The same kernels on the same rows as C order, so the same bits.
 * A mask shared by every row (mrs = 0) is gathered once. buf holds
 * csm_staged_scratch(K) elements, then csm_masked_scratch(K). */
static CSM_NOINLINE CSM_TARGET void CSM_FN(csm_masked_staged)(
    int op, const CSM_T *a, ptrdiff_t ars, ptrdiff_t acs, const CSM_T *b, ptrdiff_t brs,
    ptrdiff_t bcs, const unsigned char *mk, ptrdiff_t mrs, ptrdiff_t mcs, CSM_T *out,
    ptrdiff_t ors, ptrdiff_t ocs, ptrdiff_t rows, ptrdiff_t K, CSM_T *buf)
{
    const ptrdiff_t G = csm_stage_rows(K);
    const int blocks = op == CSM_OP_SOFTMAX_JACOBIAN || op == CSM_OP_LOGSUMEXP;
    const int binary = op == CSM_OP_SOFTMAX_BACKWARD || op == CSM_OP_LOG_SOFTMAX_BACKWARD;
    const ptrdiff_t ld = csm_staged_ld(K, sizeof(CSM_T)), ldw = csm_staged_ld(K, 1);
    CSM_T *sa = buf, *sb = buf + G * ld, *rest = buf + csm_staged_scratch(K, sizeof(CSM_T));
    unsigned char *sm = (unsigned char *)(buf + 2 * G * ld);
    for (ptrdiff_t r0 = 0; r0 < rows; r0 += G) {
        const ptrdiff_t g = rows - r0 < G ? rows - r0 : G;
        ptrdiff_t lda, ldb, ldm = mrs;
        const CSM_T *ga = CSM_FN(csm_stage_in)(a + r0 * ars, ars, acs, sa, ld, K, g, &lda);
        ldb = lda;
        const CSM_T *gb = binary ? CSM_FN(csm_stage_in)(b + r0 * brs, brs, bcs, sb, ld, K, g, &ldb) : ga;
        const unsigned char *gm = mk ? mk + r0 * mrs : NULL;
        CSM_T *go = out + r0 * ors;
        if (gm && mcs != 1) {
            if (mrs || r0 == 0)
                csm_mask_rows_move(gm, mrs, mcs, sm, ldw, K, mrs ? g : 1);
            gm = sm;
            ldm = mrs ? ldw : 0;
        }
        const int direct = blocks || ocs == 1;
        CSM_T *dst = direct ? go : sa;
        if (!mk && op == CSM_OP_LOGSUMEXP)
            CSM_FN(csm_logsumexp_rows)(ga, lda, ga, lda, dst, ors, g, K, 0);
        else
            CSM_FN(csm_masked_rows)(op, ga, lda, 1, gb, ldb, 1, gm, ldm, 1, dst, direct ? ors : ld, 1,
                                    g, K, rest);
        if (!direct)
            CSM_FN(csm_rows_move)(go, ors, ocs, sa, ld, K, g, 0);
    }
}

/* Rows of op with a mask (mk may be NULL for logsumexp), operands of any
 * strides: element (r, j) of a at a + r * ars + j * acs, and likewise b
 * (grad), mk (bytes) and out. Rows with unit column strides are computed
 * where they lie; others are gathered into buf, computed, and scattered.
 * buf holds csm_masked_scratch(K) elements (_rows.h): the gathered
 * operands and output, and the widened mask.
 * The Jacobian's out is (rows, K, K) with ors = K * K, each block contiguous;
 * logsumexp's is one value per row (ocs unused). */
static CSM_TARGET void CSM_FN(csm_masked_rows)(
    int op, const CSM_T *a, ptrdiff_t ars, ptrdiff_t acs, const CSM_T *b, ptrdiff_t brs,
    ptrdiff_t bcs, const unsigned char *mk, ptrdiff_t mrs, ptrdiff_t mcs, CSM_T *out,
    ptrdiff_t ors, ptrdiff_t ocs, ptrdiff_t rows, ptrdiff_t K, CSM_T *buf)
{
    const int blocks = op == CSM_OP_SOFTMAX_JACOBIAN || op == CSM_OP_LOGSUMEXP;
    const int binary = op == CSM_OP_SOFTMAX_BACKWARD || op == CSM_OP_LOG_SOFTMAX_BACKWARD;
    CSM_T *ta = buf, *tb = buf + K, *to = buf + 2 * K;
    CSM_MW_T *tw = (CSM_MW_T *)(buf + 3 * K);
    if (mk && (op == CSM_OP_SOFTMAX || op == CSM_OP_LOG_SOFTMAX) && K <= CSM_SMALL_K
        && (acs == 1 || K == 1) && (ocs == 1 || K == 1) && (mcs == 1 || K == 1)) {
        CSM_FN(csm_small_rows_m)(a, ars, mk, mrs, out, ors, rows, K, op == CSM_OP_LOG_SOFTMAX);
        return;
    }
    if (mk && binary && K <= CSM_MASKED_BWD_LANES_K && (acs == 1 || K == 1) && (bcs == 1 || K == 1)
        && (ocs == 1 || K == 1) && (mcs == 1 || K == 1)) {
        CSM_FN(csm_masked_short_bwd)(op == CSM_OP_LOG_SOFTMAX_BACKWARD, a, ars, b, brs, mk, mrs, out, ors,
                                     rows, K);
        return;
    }
    if (op == CSM_OP_LOGSUMEXP && K <= CSM_SMALL_K && (acs == 1 || K == 1)
        && (!mk || mcs == 1 || K == 1)) {
        CSM_FN(csm_small_lse_rows)(a, ars, mk, mrs, out, ors, rows, K);
        return;
    }
    if (op == CSM_OP_LOGSUMEXP && !mk && K * (ptrdiff_t)sizeof(CSM_T) > CSM_LONG_ROW
        && csm_rows_interleaved(ars, acs)) {
        CSM_FN(csm_long_lse_strided)(a, ars, acs, out, ors, rows, K, buf);
        return;
    }
    /* Interleaved operands; short rows of any strides, whose kernels
     * (csm_small_rows_m, csm_small_lse_rows) take contiguous rows only:
     * logsumexp of 64 x 10 float32 every third column took 4.6 us row by
     * row, 6.8x C order. */
#define CSM_STAGED_(rs, cs) (csm_staged_operand(rs, cs) || (K <= CSM_SMALL_K && (cs) != 1))
    if (K > 1 && (CSM_STAGED_(ars, acs) || (binary && CSM_STAGED_(brs, bcs))
                  || (mk && CSM_STAGED_(mrs, mcs)) || (!blocks && CSM_STAGED_(ors, ocs)))) {
#undef CSM_STAGED_
        CSM_FN(csm_masked_staged)(op, a, ars, acs, b, brs, bcs, mk, mrs, mcs, out, ors, ocs, rows, K, buf);
        return;
    }
#if CSM_EXP_V && CSM_ISA_ID == 2
    if (mk && (op == CSM_OP_SOFTMAX_BACKWARD || (op == CSM_OP_LOG_SOFTMAX_BACKWARD && CSM_F32)) && acs == 1
        && bcs == 1 && ocs == 1 && mcs == 1) {
        CSM_FN(csm_masked_bwd_bytes_rows)(op, a, ars, b, brs, mk, mrs, out, ors, rows, K);
        return;
    }
#endif
    if (mk && binary && acs == 1 && bcs == 1 && ocs == 1 && mcs == 1) {
        CSM_FN(csm_masked_bwd_wide_rows)(op, a, ars, b, brs, mk, mrs, out, ors, rows, K, tw, (CSM_MW_T *)tb);
        return;
    }
    ptrdiff_t r = 0;
    if (mk && (op == CSM_OP_SOFTMAX || op == CSM_OP_LOG_SOFTMAX || op == CSM_OP_LOGSUMEXP)
        && CSM_ROWS_AT_ONCE(K) == 2 && K > 1 && acs == 1 && mcs == 1 && (blocks || ocs == 1))
        r = CSM_FN(csm_masked_pairs)(op, a, ars, mk, mrs, out, ors, rows, K, tw, (CSM_MW_T *)tb);
    for (; r < rows; ++r) {
        const CSM_T *ar = a + r * ars, *br = b + r * brs;
        const unsigned char *mb = mk ? mk + r * mrs : 0;
        const CSM_MW_T *mr = 0;
        CSM_T *orow = out + r * ors;
        if (mb) {
            /* A mask shared by every row (mrs = 0) is widened once. */
            if (r == 0 || mrs != 0)
                CSM_FN(csm_mask_widen)(tw, mb, mcs, K);
            mr = tw;
        }
        if (acs != 1 && K > 1) {
            for (ptrdiff_t j = 0; j < K; ++j)
                ta[j] = ar[j * acs];
            ar = ta;
        }
        if (binary && bcs != 1 && K > 1) {
            for (ptrdiff_t j = 0; j < K; ++j)
                tb[j] = br[j * bcs];
            br = tb;
        }
        if (blocks || ocs == 1 || K == 1) {
            CSM_FN(csm_masked_row)(op, ar, br, mr, orow, K);
        } else {
            CSM_FN(csm_masked_row)(op, ar, br, mr, to, K);
            for (ptrdiff_t j = 0; j < K; ++j)
                orow[j * ocs] = to[j];
        }
    }
}

#undef CSM_MW_T
