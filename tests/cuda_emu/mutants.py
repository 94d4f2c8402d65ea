"""Planted bugs in a copy of cuda/softmax.cu that the emulated checks must catch.

Each mutant names one edit (the original text must occur exactly once) and a
few cheap cases that exercise the edited code; tests/test_gpu_mutants.py
asserts every mutant fails at least one of its cases and that the same cases
pass on the original source.
"""
from __future__ import annotations

from typing import NamedTuple


class Mutant(NamedTuple):
    name: str
    why: str
    old: str
    new: str
    # (op, dtype name, n, k), or (op, dtype name, n, k, "mask") to run with a
    # mask, or (op, dtype name, n, k, "strided") on views with a row stride of
    # K + 4 (x[:, :K] of a wider array)
    cases: tuple


MUTANTS = (
    Mutant(
        "warp-store-bound-off-by-one",
        "the warp tier counts one pack too many for lanes whose last pack ends the row: it loads and "
        "stores one element past the row",
        "(k - col_lane * VEC - 1) / (width * VEC) + 1;",
        "(k - col_lane * VEC) / (width * VEC) + 1;",
        (("softmax", "float32", 7, 33),),
    ),
    Mutant(
        "block-store-bound-off-by-one",
        "the block passes handle one pack past the row (one at a time, after the steps of four)",
        "    for (; v < n_vec; v += step) {\n        A xs[VEC], gs[VEC];",
        "    for (; v <= n_vec; v += step) {\n        A xs[VEC], gs[VEC];",
        (("softmax", "float32", 3, 1025), ("log_softmax", "float64", 3, 4097)),
    ),
    Mutant(
        "block-step-reads-past-the-row",
        "a step of four packs starts while its last pack is past the row",
        "for (; v + (U - 1) * step < n_vec; v += U * step) {",
        "for (; v + (U - 2) * step < n_vec; v += U * step) {",
        (("softmax", "float32", 3, 4800),),
    ),
    Mutant(
        "block-step-skips-the-mask",
        "the steps of four packs of a masked row ignore the mask",
        "f(w, MASKED ? csm_keep_bits<VEC>(mrow, w * VEC) : (1u << VEC) - 1u, xs, gs);",
        "f(w, (1u << VEC) - 1u, xs, gs);",
        (("log_softmax", "float32", 7, 9000, "mask"),),
    ),
    Mutant(
        "block-reduce-without-syncthreads",
        "warps read the per-warp partials before every warp wrote them",
        "    if (lane == 0) bank[threadIdx.x >> 5] = v;\n    __syncthreads();\n",
        "    if (lane == 0) bank[threadIdx.x >> 5] = v;\n",
        (("softmax", "float32", 3, 1025), ("softmax_backward", "float64", 3, 1000)),
    ),
    Mutant(
        "jacobian-tile-without-syncthreads",
        "threads read the tile of s_i before it is written",
        "if (it < k) tile[threadIdx.x] = csm_prob(csm_to_acc(px[it]), m, inv, csm_kept(mask, mrow + it));\n"
        "                __syncthreads();\n",
        "if (it < k) tile[threadIdx.x] = csm_prob(csm_to_acc(px[it]), m, inv, csm_kept(mask, mrow + it));\n",
        (("softmax_jacobian", "float32", 2, 127),),
    ),
    Mutant(
        "wrong-reduction-shuffle-offset",
        # (offset + 1 would not do: masks 17, 9, 5, 3, 2 still span all 32
        # lanes, an equivalent mutant; offset / 2 ends with a self-exchange
        # and never crosses the half warp.)
        "the butterfly exchanges with the wrong partner lane",
        "v = Op()(v, __shfl_xor_sync(0xffffffffu, v, offset, width));",
        "v = Op()(v, __shfl_xor_sync(0xffffffffu, v, offset / 2, width));",
        (("softmax", "float32", 7, 64),),
    ),
    Mutant(
        "wrong-jacobian-shuffle-source",
        "the Jacobian fetches s_j from the neighbouring lane",
        "const A sj = __shfl_sync(0xffffffffu, s, j, width);",
        "const A sj = __shfl_sync(0xffffffffu, s, j + 1, width);",
        (("softmax_jacobian", "float32", 7, 5),),
    ),
    Mutant(
        "block-reduce-reads-one-partial-too-many",
        "the second reduction step reads a slot no warp wrote (shared memory poison)",
        "v = lane < (int)(blockDim.x >> 5) ? bank[lane]",
        "v = lane <= (int)(blockDim.x >> 5) ? bank[lane]",
        (("softmax", "float64", 3, 1000),),
    ),
    Mutant(
        "mask-ignored-in-the-warp-max",
        "masked elements (NaN, +inf under the mask) take part in the max",
        "x[p * VEC + c] = BACKWARD ? A(0) : csm_neg_inf<A>();",
        "x[p * VEC + c] = BACKWARD ? A(0) : x[p * VEC + c];",
        (("softmax", "float32", 7, 33, "mask"),),
    ),
    Mutant(
        "mask-row-stride-ignored",
        "the block tiers read row 0's mask for every row",
        "mask == nullptr ? mask : mask + row * ldm;\n        const T* const pa",
        "mask == nullptr ? mask : mask + 0 * ldm;\n        const T* const pa",
        (("log_softmax", "float32", 7, 1025, "mask"),),
    ),
    Mutant(
        "block-row-stride-ignored",
        "the block tiers index the input's rows by K instead of its row stride (row-sliced views)",
        "        const T* const pa = a + row * lda;\n",
        "        const T* const pa = a + row * (long long)k;\n",
        (("softmax", "float32", 3, 1025, "strided"),),
    ),
    Mutant(
        "warp-output-row-stride-ignored",
        "the warp tier writes row r of out at r * K instead of r * ldo",
        "                    csm_store<T, VEC>(out + row * ldo + col, x + p * VEC);\n                }\n            }\n        } else {",
        "                    csm_store<T, VEC>(out + row * (long long)k + col, x + p * VEC);\n                }\n            }\n        } else {",
        (("log_softmax", "float32", 7, 64, "strided"),),
    ),
    Mutant(
        "masked-output-not-selected",
        "log_softmax of a masked element computed instead of -inf (wrong in rows whose max is -inf)",
        # (the block tier's line, by its indentation: the split tier has the same)
        "                    ys[c] = ((keep >> c) & 1u) ? r : (OP == CSM_SOFTMAX ? A(0) : csm_neg_inf<A>());",
        "                    ys[c] = r;",
        (("log_softmax", "float32", 7, 1025, "mask"),),
    ),
    Mutant(
        "split-merge-without-rescaling",
        "the split tier adds the chunks' sums without rescaling them to the row's max",
        "s += part[2 * c + 1] * csm_exp(part[2 * c] - shift);",
        "s += part[2 * c + 1];",
        # float64 splits from 2 x 4096 elements, and 3 rows are fewer than
        # 2 x the emulated device's 2 SMs: two chunks per row
        (("softmax", "float64", 3, 8192),),
    ),
    Mutant(
        "logsumexp-shifts-by-an-infinite-max",
        "logsumexp of a row with +inf, or of all -inf, gives NaN instead of scipy's +inf / -inf",
        "return (OP == CSM_LOGSUMEXP && !csm_finite(m)) ? A(0) : m;",
        "return m;",
        (("logsumexp", "float32", 7, 33),),
    ),
)


# Planted bugs in cuda/cross_entropy.cu (applied to _gpu_loss.source(), the
# text NVRTC compiles); cases: (option set of tests/test_gpu_cross_entropy.py,
# dtype name, n, k). tests/test_gpu_cross_entropy.py runs them.
XENT_MUTANTS = (
    Mutant(
        "xent-gradient-label-term-on-the-wrong-class",
        "the gradient subtracts the label's target one class too far",
        "if (j == yc && yon) r -= gy;",
        "if (j == yc + 1 && yon) r -= gy;",
        (("int", "float32", 7, 37),),
    ),
    Mutant(
        "xent-mask-ignored-in-the-class-count",
        "label smoothing under where= spreads over all K classes, not the unmasked ones",
        "cnt += on ? A(1) : A(0);",
        "cnt += A(1);",
        (("int-mask-weight-smooth", "float32", 7, 37),),
    ),
    Mutant(
        "xent-total-drops-the-last-rows",
        "the sum over rows stops a stride early",
        "for (long long r = threadIdx.x; r < n_rows; r += blockDim.x) v += loss[r];",
        "for (long long r = threadIdx.x; r + blockDim.x < n_rows; r += blockDim.x) v += loss[r];",
        (("int", "float32", 7, 37),),
    ),
)


def apply(source: str, mutant: Mutant) -> str:
    count = source.count(mutant.old)
    if count != 1:
        raise ValueError(f"mutant {mutant.name}: the text to replace occurs {count} times, not once")
    return source.replace(mutant.old, mutant.new)
