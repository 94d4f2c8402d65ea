/*
 * The fused softmax cross-entropy row kernel for ONE (element type,
 * instruction set) pair: a template included by _rows_isa.h after
 * _rows_impl.h (whose csm_row_max, csm_exp_neg, csm_log and csm_tree_sum it
 * uses), with CSM_T, CSM_F32, CSM_SFX and CSM_TARGET defined. The formulas
 * are in _loss.h.
 *
 * Per row, at most three passes over the row while it sits in L1/L2: the max
 * (with a mask: also the count and weight of the unmasked classes); exp(x - m)
 * summed as log_softmax sums it (CSM_SUM_BLOCK, so L is log_softmax's),
 * stored into the gradient's row when one is wanted, with the soft labels'
 * dot products fused in (in double); and the gradient written in place over
 * the stored exponentials. Between the second pass and the third, the logs
 * of a chunk of rows' sums are taken together (csm_xent_block). An integer
 * label costs one element read, no pass. Label smoothing with integer
 * labels adds a dot product pass (L1). The per-row loss goes to
 * args->loss[r] in double; the caller reduces the rows in a fixed order, so
 * no result depends on the thread count.
 */

#define CSM_XLOG CSM_PASTE(csm_log, CSM_PASTE(f64, CSM_ISA))

/* sum_j exp(x_j - m) as log_softmax takes it (CSM_SUM_BLOCK: element-type
 * partials in the order of CSM_PARTS, each block's tree added in double);
 * e_j stored into e when `store` (a constant at every call site); `normal`
 * (a constant) as csm_group_rows_max_normal gives it. */
static CSM_INLINE CSM_TARGET double CSM_FN(csm_xent_expsum)(
    const CSM_T *x, CSM_T *e, CSM_T m, ptrdiff_t K, const int store, const int normal)
{
    return CSM_FN(csm_row_exp_sum_eager)(x, NULL, store ? e : NULL, m, K, 0.0, normal);
}

/* What a row's first two passes leave for its log and its last pass. */
typedef struct {
    double s, tt, dot, kc, wsum;
    long long y;
    CSM_T m;
    int done; /* the row's loss and gradient are written already */
} CSM_FN(csm_xent_state);

/* A row's first two passes (csm_xent_row_sums) and its loss and gradient
 * (csm_xent_row_finish), with the options as constants: soft labels, a
 * mask, a gradient, a weight. In between, csm_xent_block takes the log of s
 * for a chunk of rows at once. The unmasked row reads no mask byte; a
 * masked one reads one byte per element inside each pass. */
static CSM_INLINE CSM_TARGET void CSM_FN(csm_xent_row_sums)(
    const csm_xent_args *a, ptrdiff_t r, const int soft, const int masked,
    const int want_grad, const int weighted, CSM_FN(csm_xent_state) *st)
{
    const ptrdiff_t K = a->K;
    const CSM_T *x = (const CSM_T *)a->x + r * a->ldx;
    const CSM_T *w = (const CSM_T *)a->weight;
    const unsigned char *mk = masked ? a->mask + r * a->ldm : 0;
    CSM_T *g = want_grad ? (CSM_T *)a->grad + r * a->ldg : 0;
    const double eps = a->eps;
    long long y = 0;
    st->done = 1;
    st->s = 1; /* a log argument for the rows that are done */

    if (!soft) {
        y = a->label_bytes == 8 ? ((const long long *)a->labels)[r]
                                : (long long)((const int *)a->labels)[r];
        if (a->has_ignore && y == a->ignore_index) {
            /* Loss 0, gradient 0: torch's, which is 0 - exp(logp_j) * 0, so
             * NaN where the row's log-softmax is NaN (a NaN or +inf logit,
             * or every logit -inf); the row costs two L1 passes then. */
            a->loss[r] = 0;
            if (want_grad) {
                CSM_T mm = -CSM_INF_T;
                for (ptrdiff_t j = 0; j < K; ++j) {
                    const CSM_T v = masked && !mk[j] ? -CSM_INF_T : x[j];
                    mm = v > mm ? v : mm;
                }
                double s0 = 0;
                for (ptrdiff_t j = 0; j < K; ++j)
                    s0 += masked && !mk[j] ? 0.0 : (double)CSM_FN(csm_exp_neg)(x[j] - mm);
                const CSM_T z = s0 == s0 ? (CSM_T)0 : (CSM_T)NAN;
                for (ptrdiff_t j = 0; j < K; ++j)
                    g[j] = masked && !mk[j] ? (CSM_T)0 : z;
            }
            return;
        }
    }

    /* Pass 1: the max (NaN ignored here: it reaches s through exp). */
    CSM_T m;
    double kc = (double)K, wsum = a->wsum;
    int normal = 0; /* csm_group_rows_max_normal's, for pass 2 */
    if (!masked) {
        normal = CSM_FN(csm_group_rows_max_normal)(1, &x, NULL, K, &m);
    } else {
        CSM_T mm = -CSM_INF_T;
        double cnt = 0, ws = 0;
        for (ptrdiff_t j = 0; j < K; ++j) {
            const CSM_T v = mk[j] ? x[j] : -CSM_INF_T;
            mm = v > mm ? v : mm;
            cnt += mk[j] ? 1.0 : 0.0;
            ws += mk[j] ? (weighted ? (double)w[j] : 1.0) : 0.0;
        }
        m = mm;
        kc = cnt;
        wsum = ws;
        if (kc == 0) {
            /* No class takes part: no probability anywhere, gradient 0; an
             * integer label is on a masked class (log-probability -inf). */
            if (soft) {
                a->loss[r] = 0;
            } else {
                const double wy = weighted ? (double)w[y] : 1.0;
                const double nll = -(wy * -(double)INFINITY);
                a->loss[r] = eps > 0 ? (1 - eps) * nll : nll;
            }
            if (want_grad)
                for (ptrdiff_t j = 0; j < K; ++j)
                    g[j] = 0;
            return;
        }
    }
    const double md = (double)m;
    const double ek = eps / kc;

    /* Pass 2: s, with e_j stored into the gradient's row; soft labels: the
     * target's mass tt and the dot product sum_j q_j (x_j - m) fused in. */
    double s, tt = 0, dot = 0;
    if (!soft && !masked) {
        s = normal > 0 ? CSM_FN(csm_xent_expsum)(x, g, m, K, want_grad, 1)
                       : CSM_FN(csm_xent_expsum)(x, g, m, K, want_grad, normal);
    } else {
        /* s as csm_xent_expsum takes it: element-type partials, each
         * block's tree added in double; the targets' sums in double. */
        CSM_T acc[CSM_PARTS];
        double at[CSM_PARTS], ad[CSM_PARTS];
        const CSM_T *t = soft ? (const CSM_T *)a->target + r * a->ldt : 0;
        const CSM_T keep = (CSM_T)(1 - eps), add = (CSM_T)ek;
        s = 0;
        for (ptrdiff_t p = 0; p < CSM_PARTS; ++p) {
            acc[p] = 0;
            at[p] = ad[p] = 0;
        }
        for (ptrdiff_t i = 0; i < K; i += CSM_PARTS) {
            const ptrdiff_t nb = K - i < CSM_PARTS ? K - i : CSM_PARTS;
            CSM_T ev[CSM_PARTS];
            CSM_FN(csm_exp_lanes)(ev, x + i, NULL, m, nb, 0);
#pragma omp simd
            for (ptrdiff_t p = 0; p < nb; ++p) {
                const ptrdiff_t j = i + p;
                const int on = masked ? mk[j] != 0 : 1;
                CSM_T v = ev[p];
                v = on ? v : (CSM_T)0;
                if (want_grad)
                    g[j] = v;
                acc[p] += v;
                if (soft) {
                    CSM_T q = t[j] * keep + add;
                    if (weighted)
                        q = w[j] * q;
                    const double dq = on ? (double)q : 0.0;
                    at[p] += dq;
                    ad[p] += on ? dq * ((double)x[j] - md) : 0.0;
                }
            }
            if ((i + nb) % CSM_SUM_BLOCK == 0 || i + nb == K) {
                s += (double)CSM_FN(csm_tree_sum_t)(acc, 1);
                for (ptrdiff_t p = 0; p < CSM_PARTS; ++p)
                    acc[p] = 0;
            }
        }
        tt = csm_tree_sum(at, 1);
        dot = csm_tree_sum(ad, 1);
    }
    st->done = 0;
    st->s = s;
    st->tt = tt;
    st->dot = dot;
    st->kc = kc;
    st->wsum = wsum;
    st->y = y;
    st->m = m;
}

static CSM_INLINE CSM_TARGET void CSM_FN(csm_xent_row_finish)(
    const csm_xent_args *a, ptrdiff_t r, const int soft, const int masked,
    const int want_grad, const int weighted, const CSM_FN(csm_xent_state) *st, double L)
{
    const ptrdiff_t K = a->K;
    const CSM_T *x = (const CSM_T *)a->x + r * a->ldx;
    const CSM_T *w = (const CSM_T *)a->weight;
    const unsigned char *mk = masked ? a->mask + r * a->ldm : 0;
    CSM_T *g = want_grad ? (CSM_T *)a->grad + r * a->ldg : 0;
    const double eps = a->eps, s = st->s, tt = st->tt, dot = st->dot, wsum = st->wsum;
    const double md = (double)st->m, ek = eps / st->kc;
    const long long y = st->y;

    double loss, T;
    if (soft) {
        loss = L * tt - dot;
        T = tt;
    } else {
        const double wy = weighted ? (double)w[y] : 1.0;
        const int yon = masked ? mk[y] != 0 : 1;
        const double lpy = yon ? ((double)x[y] - md) - L : -(double)INFINITY;
        const double nll = -(wy * lpy);
        if (eps > 0) {
            /* smooth = -sum_j w_j logp_j = -(sum_j w_j (x_j - m) - L * Wsum) */
            double ad[CSM_PARTS];
            for (ptrdiff_t p = 0; p < CSM_PARTS; ++p)
                ad[p] = 0;
            for (ptrdiff_t i = 0; i < K; i += CSM_PARTS) {
                const ptrdiff_t nb = K - i < CSM_PARTS ? K - i : CSM_PARTS;
#pragma omp simd
                for (ptrdiff_t p = 0; p < nb; ++p) {
                    const ptrdiff_t j = i + p;
                    const double d = (double)x[j] - md;
                    const double term = weighted ? (double)w[j] * d : d;
                    ad[p] += masked ? (mk[j] ? term : 0.0) : term;
                }
            }
            const double smooth = -(csm_tree_sum(ad, 1) - L * wsum);
            loss = (1 - eps) * nll + ek * smooth;
            T = (1 - eps) * (yon ? wy : 0.0) + ek * wsum;
        } else {
            loss = nll;
            T = yon ? wy : 0.0;
        }
    }
    a->loss[r] = loss;
    if (!want_grad)
        return;

    /* Pass 3: grad_j = scale * (p_j * T - t_j), over the stored e_j. */
    const double scale = a->scale;
    const CSM_T c = (CSM_T)(scale * T / s);
    if (soft) {
        const CSM_T *t = (const CSM_T *)a->target + r * a->ldt;
        const CSM_T keep = (CSM_T)(1 - eps), add = (CSM_T)ek, sc = (CSM_T)scale;
#pragma omp simd
        for (ptrdiff_t j = 0; j < K; ++j) {
            CSM_T q = t[j] * keep + add;
            if (weighted)
                q = w[j] * q;
            const CSM_T v = g[j] * c - sc * q;
            g[j] = masked ? (mk[j] ? v : (CSM_T)0) : v;
        }
        return;
    }
    if (eps > 0) {
        const CSM_T ks = (CSM_T)(scale * ek);
#pragma omp simd
        for (ptrdiff_t j = 0; j < K; ++j) {
            const CSM_T v = g[j] * c - (weighted ? ks * w[j] : ks);
            g[j] = masked ? (mk[j] ? v : (CSM_T)0) : v;
        }
    } else {
#pragma omp simd
        for (ptrdiff_t j = 0; j < K; ++j)
            g[j] = g[j] * c;
    }
    if (!masked || mk[y]) {
        const double wy = weighted ? (double)w[y] : 1.0;
        g[y] -= (CSM_T)(scale * (1 - eps) * wy);
    }
}

/* Short rows (K <= CSM_SMALL_K) with integer labels and no mask, `lanes`
 * rows at a time in the lane layout of _rows_impl.h (buf[j * lanes + l] is
 * column j of row l): the row loops would be all remainder and per-row
 * reductions (measured: 170 ns per K = 10 row with AVX-512, against 25 for
 * log_softmax's lanes). Each lane computes the formulas of _loss.h in the
 * same order whatever `lanes` is, so a row's result never depends on the
 * rows around it; s is summed in double in order of j. */
static CSM_INLINE CSM_TARGET void CSM_FN(csm_xent_lanes)(
    const csm_xent_args *a, ptrdiff_t r0, const ptrdiff_t lanes, const int want_grad,
    const int weighted)
{
    const ptrdiff_t K = a->K, ldx = a->ldx;
    const CSM_T *x = (const CSM_T *)a->x + r0 * ldx;
    const CSM_T *w = (const CSM_T *)a->weight;
    const double eps = a->eps, ek = eps / (double)K, scale = a->scale;
    CSM_T buf[CSM_SMALL_K * CSM_LANES];
    CSM_T m[CSM_LANES], c[CSM_LANES], gy[CSM_LANES];
    double s[CSM_LANES], d[CSM_LANES], lg[CSM_LANES];
    long long y[CSM_LANES];
    int ign[CSM_LANES];
    for (ptrdiff_t l = 0; l < lanes; ++l) {
        const ptrdiff_t r = r0 + l;
        y[l] = a->label_bytes == 8 ? ((const long long *)a->labels)[r]
                                   : (long long)((const int *)a->labels)[r];
        ign[l] = a->has_ignore && y[l] == a->ignore_index;
        if (ign[l])
            y[l] = 0; /* any class: the row's loss and gradient are set below */
    }
    CSM_LANES_IN(buf, x, ldx, K, lanes);
#pragma omp simd
    for (ptrdiff_t l = 0; l < lanes; ++l) {
        m[l] = -CSM_INF_T;
        s[l] = 0;
        d[l] = 0;
    }
    for (ptrdiff_t j = 0; j < K; ++j) {
        const CSM_T *bj = buf + j * lanes;
#pragma omp simd
        for (ptrdiff_t l = 0; l < lanes; ++l)
            m[l] = bj[l] > m[l] ? bj[l] : m[l];
    }
    for (ptrdiff_t j = 0; j < K; ++j) {
        CSM_T *bj = buf + j * lanes;
        const double wj = weighted ? (double)w[j] : 1.0;
        if (eps > 0) {
#pragma omp simd
            for (ptrdiff_t l = 0; l < lanes; ++l) {
                const double dx = (double)bj[l] - (double)m[l];
                d[l] += weighted ? wj * dx : dx;
            }
        }
        CSM_FN(csm_exp_lanes)(bj, bj, m, 0, lanes, 0);
#pragma omp simd
        for (ptrdiff_t l = 0; l < lanes; ++l)
            s[l] += (double)bj[l];
    }
#pragma omp simd
    for (ptrdiff_t l = 0; l < lanes; ++l)
        lg[l] = CSM_PASTE(csm_log, CSM_PASTE(f64, CSM_ISA))(s[l]);
    for (ptrdiff_t l = 0; l < lanes; ++l) {
        const double wy = weighted ? (double)w[y[l]] : 1.0;
        const double lpy = ((double)x[l * ldx + y[l]] - (double)m[l]) - lg[l];
        const double nll = -(wy * lpy);
        double loss = nll, T = wy;
        if (eps > 0) {
            loss = (1 - eps) * nll + ek * (-(d[l] - lg[l] * a->wsum));
            T = (1 - eps) * wy + ek * a->wsum;
        }
        a->loss[r0 + l] = ign[l] ? 0.0 : loss;
        c[l] = (CSM_T)(scale * T / s[l]);
        gy[l] = (CSM_T)(scale * (1 - eps) * wy);
    }
    if (!want_grad)
        return;
    CSM_T *g = (CSM_T *)a->grad + r0 * a->ldg;
    const CSM_T ks = (CSM_T)(scale * ek);
    for (ptrdiff_t j = 0; j < K; ++j) {
        CSM_T *bj = buf + j * lanes;
        const CSM_T kw = eps > 0 ? (weighted ? ks * w[j] : ks) : (CSM_T)0;
#pragma omp simd
        for (ptrdiff_t l = 0; l < lanes; ++l)
            bj[l] = eps > 0 ? bj[l] * c[l] - kw : bj[l] * c[l];
    }
    CSM_LANES_OUT(g, a->ldg, buf, K, lanes);
    for (ptrdiff_t l = 0; l < lanes; ++l) {
        CSM_T *gl = g + l * a->ldg;
        if (ign[l]) {
            /* As the row kernel: 0, or NaN where the log-softmax is NaN. */
            const CSM_T z = s[l] == s[l] ? (CSM_T)0 : (CSM_T)NAN;
            for (ptrdiff_t j = 0; j < K; ++j)
                gl[j] = z;
            continue;
        }
        gl[y[l]] -= gy[l];
    }
}

static CSM_INLINE CSM_TARGET void CSM_FN(csm_xent_small)(
    const csm_xent_args *a, ptrdiff_t r0, ptrdiff_t r1, const int want_grad, const int weighted)
{
    ptrdiff_t r = r0;
    for (; r + CSM_LANES <= r1; r += CSM_LANES)
        CSM_FN(csm_xent_lanes)(a, r, CSM_LANES, want_grad, weighted);
    for (; r < r1; ++r)
        CSM_FN(csm_xent_lanes)(a, r, 1, want_grad, weighted);
}

/* Rows in chunks: each row's sums, then the logs of the chunk's sums in one
 * vectorised loop (as log_softmax takes them: the same csm_log, so the same
 * bits), then each row's loss and gradient. A scalar log per row cost about
 * as much as the rest of a K = 128 row: AMD Zen 5, one thread, float32
 * 4096 x 128, us before and after, AVX-512 | AVX2: loss 202 -> 147 | 275 ->
 * 185, loss and gradient 237 -> 151 | 317 -> 228 (1024 x 1000: 271 -> 230 |
 * 425 -> 377). A chunk is log_softmax's (CSM_LOG_CHUNK rows), fewer where
 * its stored exponentials (the gradient's rows) would pass
 * CSM_XENT_CHUNK_BYTES, an eighth of the 2 MiB L2 of the machine measured,
 * so that they are still in L2 when the last pass reads them. */
#define CSM_XENT_CHUNK_BYTES (256 * 1024)
static CSM_INLINE CSM_TARGET void CSM_FN(csm_xent_block)(
    const csm_xent_args *a, ptrdiff_t r0, ptrdiff_t r1, const int soft, const int masked,
    const int want_grad, const int weighted)
{
    CSM_FN(csm_xent_state) st[CSM_LOG_CHUNK];
    double lg[CSM_LOG_CHUNK];
    ptrdiff_t chunk = CSM_XENT_CHUNK_BYTES / ((ptrdiff_t)sizeof(CSM_T) * (a->K > 0 ? a->K : 1));
    chunk = chunk < 1 ? 1 : chunk > CSM_LOG_CHUNK ? CSM_LOG_CHUNK : chunk;
    for (ptrdiff_t c0 = r0; c0 < r1; c0 += chunk) {
        const ptrdiff_t n = r1 - c0 < chunk ? r1 - c0 : chunk;
        for (ptrdiff_t i = 0; i < n; ++i) {
            CSM_FN(csm_xent_row_sums)(a, c0 + i, soft, masked, want_grad, weighted, st + i);
            lg[i] = st[i].s;
        }
#pragma omp simd
        for (ptrdiff_t i = 0; i < n; ++i)
            lg[i] = CSM_XLOG(lg[i]); /* s >= 1 (exp(0) at the max), or NaN */
        for (ptrdiff_t i = 0; i < n; ++i)
            if (!st[i].done)
                CSM_FN(csm_xent_row_finish)(a, c0 + i, soft, masked, want_grad, weighted, st + i, lg[i]);
    }
}

/* The table's entry: rows r0 <= r < r1, the options turned into constants. */
static CSM_TARGET void CSM_FN(csm_xent_rows)(const csm_xent_args *a, ptrdiff_t r0, ptrdiff_t r1)
{
    const int soft = a->target != 0, masked = a->mask != 0, want_grad = a->grad != 0,
              weighted = a->weight != 0;
    if (!soft && !masked && a->K <= CSM_SMALL_K) {
        switch (want_grad * 2 + weighted) {
        case 0: CSM_FN(csm_xent_small)(a, r0, r1, 0, 0); break;
        case 1: CSM_FN(csm_xent_small)(a, r0, r1, 0, 1); break;
        case 2: CSM_FN(csm_xent_small)(a, r0, r1, 1, 0); break;
        default: CSM_FN(csm_xent_small)(a, r0, r1, 1, 1); break;
        }
        return;
    }
    switch (soft * 8 + masked * 4 + want_grad * 2 + weighted) {
#define CSM_XCASE(c) case c: CSM_FN(csm_xent_block)(a, r0, r1, (c >> 3) & 1, (c >> 2) & 1, \
                                                    (c >> 1) & 1, c & 1); break;
    CSM_XCASE(0) CSM_XCASE(1) CSM_XCASE(2) CSM_XCASE(3)
    CSM_XCASE(4) CSM_XCASE(5) CSM_XCASE(6) CSM_XCASE(7)
    CSM_XCASE(8) CSM_XCASE(9) CSM_XCASE(10) CSM_XCASE(11)
    CSM_XCASE(12) CSM_XCASE(13) CSM_XCASE(14) CSM_XCASE(15)
#undef CSM_XCASE
    default:
        break;
    }
}

#undef CSM_XLOG

/* The end of _rows_impl.h's register form (this is the last of the three
 * templates that _rows_isa.h includes). */
#undef CSM_EXP_V
#undef CSM_EXP_V_UP
#undef CSM_EXP_V_NORMAL
#undef CSM_EXP_V_TEST
#undef CSM_EXP_NORMAL_LO
#undef CSM_XV_ANY_BELOW_
#undef CSM_XV_ANY_NAN_
#undef CSM_XV_ANY_CMP_
#ifdef CSM_XV
  #undef CSM_XM
  #undef CSM_XM_FIRST
  #undef CSM_XV_LOADM
  #undef CSM_XV_STOREN
  #undef CSM_XV_ZEROM
  #undef CSM_XV
  #undef CSM_XVI
  #undef CSM_XV_
  #undef CSM_XVI_
  #undef CSM_XVI_SET1
  #undef CSM_XVD
  #undef CSM_XVD_
  #undef CSM_XCVT_LO
  #undef CSM_XCVT_HI
  #undef CSM_XVW
  #undef CSM_XVDW
  #undef CSM_TV
  #undef CSM_TV_
  #undef CSM_TM_FIRST
  #undef CSM_TW
  #undef CSM_LT
  #undef CSM_LTW
  #undef CSM_LT_LOADU
  #undef CSM_LT_LOADN
  #undef CSM_LT_STOREN
  #undef CSM_LT_STOREU
  #undef CSM_LT_ZERO
  #undef CSM_LT_TRANSPOSE
  #undef CSM_XV_LANES_
#endif
