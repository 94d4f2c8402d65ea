/*
 * The fused softmax cross-entropy (csoftmax.softmax_cross_entropy): the
 * arguments of its row kernel, shared by every instruction set's copy
 * (_loss_impl.h), the engine that schedules it (_engine.pyx, run_xent) and
 * the callers that fill it in (_loss.pyx).
 *
 * Per row r (logits x, K classes, unit column stride), with m = max_j x_j,
 * s = sum_j exp(x_j - m) (in double: the order of CSM_PARTS, or of j for rows
 * of K <= 32 with integer labels, which run in the lane layout), L = log(s),
 * w_j the class weight (1 without weight), eps the label smoothing:
 *
 *   integer label y (not ignored):
 *     nll    = -(w_y * ((x_y - m) - L))
 *     smooth = -(sum_j w_j (x_j - m) - L * Wsum),   Wsum = sum_j w_j
 *     loss   = eps > 0 ? (1 - eps) * nll + (eps / K) * smooth : nll
 *     t_j    = (1 - eps) * w_y * [j == y] + (eps / K) * w_j
 *   class probabilities t_j (soft labels):
 *     q_j    = w_j * ((1 - eps) * t_j + eps / K)        (in the element type)
 *     loss   = L * sum_j q_j - sum_j q_j (x_j - m)      (= -sum_j q_j logp_j)
 *     t_j    = q_j
 *   gradient (scale = 1 / W for reduction "mean", else 1):
 *     grad_j = scale * (p_j * sum_c t_c - t_j),   p_j = exp(x_j - m) / s
 *
 * An ignored row has loss 0 and gradient 0 (NaN, as torch's, where the
 * row's log-softmax is NaN: s is NaN). With a mask (where=), masked
 * classes take no part: m, s and the sums run over the unmasked classes, K
 * becomes the row's count of unmasked classes, a label on a masked class
 * has log-probability -inf, and the gradient is 0 at masked classes. These
 * formulas are the port's contract for a CUDA kernel.
 */
#ifndef CSOFTMAX_LOSS_H
#define CSOFTMAX_LOSS_H

#include <stddef.h>

typedef struct {
    const void *x;              /* logits: rows of K elements, x + r * ldx */
    ptrdiff_t ldx;
    ptrdiff_t K;
    const void *labels;         /* integer labels (label_bytes 4 or 8), or NULL */
    int label_bytes;
    int has_ignore;             /* labels equal to ignore_index are ignored */
    long long ignore_index;
    const void *target;         /* class probabilities, target + r * ldt, or NULL */
    ptrdiff_t ldt;
    const void *weight;         /* (K,) class weights, or NULL (all 1) */
    const unsigned char *mask;  /* 1 = takes part; mask + r * ldm (ldm 0: one row), or NULL */
    ptrdiff_t ldm;
    double eps;                 /* label smoothing, in [0, 1] */
    double wsum;                /* sum of the K weights (K without weight); unmasked rows */
    double scale;               /* the gradient's factor: 1 / W for "mean", else 1 */
    void *grad;                 /* the gradient, grad + r * ldg, or NULL (none) */
    ptrdiff_t ldg;
    double *loss;               /* per-row loss, loss[r] */
} csm_xent_args;

/* Rows r0 <= r < r1 of a call; labels are in range (the caller checked). */
typedef void (*csm_xent_fn)(const csm_xent_args *, ptrdiff_t, ptrdiff_t);

#endif /* CSOFTMAX_LOSS_H */
