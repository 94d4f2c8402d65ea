// The fused softmax cross-entropy (csoftmax.softmax_cross_entropy) on the GPU.
//
// This text is compiled as ONE source after cuda/softmax.cu's text (the
// loader, csoftmax/_gpu_loss.py, and the emulator concatenate the two): it
// uses softmax.cu's types and helpers (csm_half, csm_acc, csm_load,
// csm_store, csm_keep_bits, csm_group_reduce, csm_block_reduce, csm_smem)
// and, like it, has no #include and no file-scope shared array of its own.
//
// The per-row formulas are those of the CPU kernel, csoftmax/_loss.h (the
// port's contract), with m = max, s = sum exp(x - m), L = log(s):
//   integer label y:  nll = -(w_y * ((x_y - m) - L)),
//                     smooth = -(sum_j w_j (x_j - m) - L * Wsum),
//                     loss = eps > 0 ? (1 - eps) * nll + (eps / K) * smooth : nll,
//                     T = (1 - eps) * w_y + (eps / K) * Wsum (T = w_y without eps)
//   soft labels t:    q_j = w_j * ((1 - eps) * t_j + eps / K),
//                     loss = L * sum_j q_j - sum_j q_j (x_j - m),  T = sum_j q_j
//   gradient:         grad_j = (scale * T / s) * exp(x_j - m) - scale * t_j
// with scale = 1 / W for "mean" (W computed before the launch, by
// csm_xent_labels), else 1. An ignored row has loss 0 and gradient 0 (NaN
// where s is NaN, as torch's autograd); with a mask, masked classes take no
// part (K and Wsum become the row's unmasked count and weight), a label on a
// masked class has log-probability -inf, and a fully masked row gives
// gradient 0 and loss 0 (soft) or -(w_y * -inf) (integer labels).
//
// Precision: the row sums (max, s, the target's mass and dot products)
// accumulate in float for float16/float32 and in double for float64, as the
// softmax kernels do; the per-row scalar formulas (L, the loss, the
// gradient's factors) are evaluated in double, a handful of operations per
// row, and the per-row loss is stored as double, so the host's "sum"/"mean"
// adds doubles in a fixed order (csm_xent_total), as the CPU does.
//
// Passes per row: (1) the max (with a mask also the count and weight of the
// unmasked classes), (2) exp(x - m) summed, with the soft target's mass and
// dot product (or the smoothing's dot product) fused in, (3) the gradient,
// when one is wanted. The warp tier re-reads the row from L1/L2 in passes 2
// and 3 (rows of <= 4 KiB that the warp has just read); the block tier keeps
// the row (and the soft target's q) in shared memory when it fits
// (CACHE = true), else re-reads it through L2, as softmax's block tiers do.
// DRAM sees one read of the logits and one write of the gradient either way.

enum : int {
    // Threads of the single-block reductions (csm_xent_labels, csm_xent_total):
    // a constant, so that the order of the additions, and the result's bits,
    // are the same on every device and for every N.
    CSM_XENT_REDUCE_THREADS = 256,
};

struct csm_min_op {
    template <typename A> __device__ __forceinline__ static A identity() { return -csm_neg_inf<A>(); }
    __device__ __forceinline__ double operator()(double a, double b) const { return fmin(a, b); }
};

// The reduction of one row's partials: a group of `width` lanes of a warp
// (a power of two <= 32). The shuffles keep the width 32 of the whole warp,
// a compile-time constant, and skip the offsets >= width (warp-uniform): an
// xor below the width stays inside the aligned group, and a runtime width in
// the intrinsic makes NVRTC 13.5 call __cuda_sm70_shflsync_bfly_p on sm_80+
// (csm_xent_warp<double, false, 1> then spills 12 bytes on sm_90).
struct csm_xent_lanes {
    int width;
    template <typename Op, typename A> __device__ __forceinline__ A reduce(A v) const {
#pragma unroll
        for (int offset = 16; offset > 0; offset >>= 1) {
            if (offset < width) v = Op()(v, __shfl_xor_sync(0xffffffffu, v, offset, 32));
        }
        return v;
    }
};

// The reduction of one row's partials: the whole block, alternating the two
// scratch banks of csm_block_reduce.
template <typename A> struct csm_xent_blockwide {
    A* scratch;
    int* turn;
    template <typename Op, typename B> __device__ __forceinline__ B reduce(B v) const {
        return csm_block_reduce<Op>(v, scratch + 32 * ((*turn)++ & 1));
    }
};

// exp and log inlined, also for double: softmax.cu keeps double exp/log as
// calls for its unrolled register-held rows, but here a lane has at most two
// exps in flight, and values live across a call spill instead
// (csm_xent_warp<double, true, 1>: 4 bytes on sm_90, NVRTC 13.5).
__device__ __forceinline__ double csm_xent_log(double v) { return log(v); }

// 1 / v for v in [1, 2^30] (a class count, or s >= 1: exp(0) at the max) or
// NaN, without a call: IEEE double division and rcp.rn.f64 call a slow path
// (__cuda_sm20_dblrcp_rn_slowpath_v3), and registers live across it spill
// (csm_xent_block<double, false, 1, false>, sm_90). A float estimate and two
// Newton steps (2^-22 -> 2^-44 -> beyond double precision) give the
// quotient within an ulp; the emulator divides.
__device__ __forceinline__ double csm_xent_rcp(double v) {
#ifdef __CUDA_ARCH__
    double r = (double)__fdividef(1.0f, (float)v);
    r = fma(r, fma(-v, r, 1.0), r);
    return fma(r, fma(-v, r, 1.0), r);
#else
    return 1.0 / v;
#endif
}

template <typename A> __device__ __forceinline__ A csm_nan() {
    return csm_neg_inf<A>() - csm_neg_inf<A>();  // -inf - -inf = NaN
}

// One row of the loss (and its gradient), by the `nth` threads `tid` of a
// group G (lanes of a warp or a block) that all reach every reduction:
// dead rows (live = false) take part in the reductions with nothing loaded
// and write nothing. Elements v * VEC + c, v = tid, tid + nth, ...
// x, t (SOFT) and g are this row's; mrow its mask (or nullptr); ploss its
// loss slot. cache (CACHE): k accumulator slots for x, then exp(x - m), and
// for SOFT k more for q.
template <typename T, bool SOFT, int VEC, bool CACHE, typename G>
__device__ __forceinline__ void csm_xent_row(
    const G& grp, int tid, int nth, bool live, const T* x, const T* t, long long y,
    const typename csm_acc<T>::type* w, const unsigned char* mrow, bool masked, T* g, double* ploss, int k,
    double eps, double scale, double wsum_all, int has_ignore, long long ignore_index,
    typename csm_acc<T>::type* cache) {
    typedef typename csm_acc<T>::type A;
    const int n_vec = live ? k / VEC : 0;
    A* const cache_q = cache + k;
    A xs[VEC], ts[VEC];

    // Pass 1: the max (NaN ignored: it reaches s through exp), and with a
    // mask the number and weight of the row's unmasked classes.
    A m = csm_neg_inf<A>(), cnt = A(0), ws = A(0);
    for (int v = tid; v < n_vec; v += nth) {
        csm_load<T, VEC>(x + v * VEC, xs);
        const unsigned keep = csm_keep_bits<VEC>(mrow, (long long)v * VEC);
#pragma unroll
        for (int c = 0; c < VEC; ++c) {
            const bool on = (keep >> c) & 1u;
            const A xv = on ? xs[c] : csm_neg_inf<A>();
            m = csm_max_op()(m, xv);
            if (CACHE) cache[c * n_vec + v] = xv;
            if (masked) {
                cnt += on ? A(1) : A(0);
                ws += on ? (w != nullptr ? w[v * VEC + c] : A(1)) : A(0);
            }
        }
    }
    m = grp.template reduce<csm_max_op>(m);
    double kc = (double)k, wsum = wsum_all;
    if (masked) {  // the same for every row of a launch
        kc = (double)grp.template reduce<csm_sum_op>(cnt);
        wsum = (double)grp.template reduce<csm_sum_op>(ws);
    }
    const double ek = kc > 0 ? eps * csm_xent_rcp(kc) : 0.0;
    const A keep_t = (A)(1.0 - eps), add_t = (A)ek;

    // Pass 2: s, fused with the soft target's mass tt and sum_j q_j (x_j - m),
    // or (integer labels with smoothing) sum_j w_j (x_j - m).
    A s = A(0), tt = A(0), dot = A(0);
    const bool smooth = !SOFT && eps > 0;
    for (int v = tid; v < n_vec; v += nth) {
        if (!CACHE) csm_load<T, VEC>(x + v * VEC, xs);
        if (SOFT) csm_load<T, VEC>(t + v * VEC, ts);
        const unsigned keep = csm_keep_bits<VEC>(mrow, (long long)v * VEC);
#pragma unroll
        for (int c = 0; c < VEC; ++c) {
            const bool on = (keep >> c) & 1u;
            const A xv = CACHE ? cache[c * n_vec + v] : xs[c];
            const A d = xv - m;
            const A e = on ? csm_exp_inline(d) : A(0);
            if (CACHE) cache[c * n_vec + v] = e;
            s += e;
            const A wj = w != nullptr ? w[v * VEC + c] : A(1);
            if (SOFT) {
                const A q = wj * (ts[c] * keep_t + add_t);
                if (CACHE) cache_q[c * n_vec + v] = q;
                tt += on ? q : A(0);
                dot += on ? q * d : A(0);
            } else if (smooth) {
                dot += on ? wj * d : A(0);
            }
        }
    }
    s = grp.template reduce<csm_sum_op>(s);
    if (SOFT) tt = grp.template reduce<csm_sum_op>(tt);
    if (SOFT || smooth) dot = grp.template reduce<csm_sum_op>(dot);

    // The row's loss and the gradient's factors, in double.
    const bool ignored = !SOFT && has_ignore && y == ignore_index;
    const long long yc = (SOFT || ignored || !live) ? 0 : y;  // a class to read for an ignored row
    const double L = csm_xent_log((double)s);
    const double md = (double)m;
    double loss, tm, wy = 1.0;
    bool yon = true;
    if (SOFT) {
        loss = L * (double)tt - (double)dot;
        tm = (double)tt;
    } else {
        wy = w != nullptr ? (double)w[yc] : 1.0;
        yon = mrow == nullptr || mrow[yc] != 0;
        const double xy = live ? (double)csm_to_acc(x[yc]) : 0.0;
        const double lpy = yon ? (xy - md) - L : (double)csm_neg_inf<A>();
        const double nll = -(wy * lpy);
        if (smooth) {
            loss = (1.0 - eps) * nll + ek * -((double)dot - L * wsum);
            tm = (1.0 - eps) * (yon ? wy : 0.0) + ek * wsum;
        } else {
            loss = nll;
            tm = yon ? wy : 0.0;
        }
        if (kc == 0) loss = eps > 0 ? (1.0 - eps) * nll : nll;  // no class takes part
        if (ignored) loss = 0.0;
    }
    if (SOFT && kc == 0) loss = 0.0;
    if (live && tid == 0) *ploss = loss;
    if (g == nullptr) return;  // the same for every row of a launch

    // Pass 3: grad_j = c * exp(x_j - m) - scale * t_j; 0 at masked classes,
    // and on an ignored row 0 (NaN where s is NaN), as the CPU kernel.
    const bool zero_row = ignored || kc == 0;
    const A zero_val = (ignored && !(s == s)) ? csm_nan<A>() : A(0);
    const A cf = (A)(scale * tm * csm_xent_rcp((double)s));
    const A sc = (A)scale, ks = (A)(scale * ek), gy = (A)(scale * (1.0 - eps) * wy);
    for (int v = tid; v < n_vec; v += nth) {
        if (!CACHE) csm_load<T, VEC>(x + v * VEC, xs);
        if (SOFT && !CACHE) csm_load<T, VEC>(t + v * VEC, ts);
        const unsigned keep = csm_keep_bits<VEC>(mrow, (long long)v * VEC);
#pragma unroll
        for (int c = 0; c < VEC; ++c) {
            const int j = v * VEC + c;
            const A e = CACHE ? cache[c * n_vec + v] : csm_exp_inline(xs[c] - m);
            A r;
            if (SOFT) {
                const A q = CACHE ? cache_q[c * n_vec + v]
                                  : (w != nullptr ? w[j] : A(1)) * (ts[c] * keep_t + add_t);
                r = e * cf - sc * q;
            } else {
                r = smooth ? e * cf - (w != nullptr ? ks * w[j] : ks) : e * cf;
                if (j == yc && yon) r -= gy;
            }
            xs[c] = !((keep >> c) & 1u) ? A(0) : zero_row ? zero_val : r;
        }
        csm_store<T, VEC, true>(g + v * VEC, xs);
    }
}

// ---------------------------------------------------------------- tier 1: warp

// A group of `width` lanes per row (width = 32 unless K <= 32); VEC > 1 only
// when K % VEC == 0 and x, t and grad are 16-byte aligned, and then width is
// 32 at compile time (a runtime width makes NVRTC call a shuffle helper).
// labels: int64 (ignored for SOFT); t: soft labels (ignored otherwise);
// weight, mask, grad: nullptr for none. loss: (n_rows,) doubles.
// (min. 1 block per SM: without it ptxas aims at more resident blocks on
// sm_86/sm_89/sm_100 and spills 4-24 bytes in csm_xent_warp<float, false, 1>,
// <csm_half, false, 8> and <double, *, 2>; NVRTC 13.5.)
template <typename T, bool SOFT, int VEC>
__global__ void __launch_bounds__(CSM_WARP_THREADS, 1)
    csm_xent_warp(const T* x, const T* t, const long long* labels, const typename csm_acc<T>::type* weight,
                  const unsigned char* mask, long long ldm, T* grad, double* loss, long long n_rows, int k,
                  double eps, double scale, double wsum, int has_ignore, long long ignore_index, int width) {
    if (VEC > 1) width = 32;
    const int lane = threadIdx.x & 31;
    const int col_lane = lane & (width - 1);
    const int rows_per_warp = 32 / width;
    const long long warp = (blockIdx.x * (long long)blockDim.x + threadIdx.x) >> 5;
    const long long n_warps = ((long long)gridDim.x * blockDim.x) >> 5;
    const csm_xent_lanes grp{width};

    for (long long first = warp * rows_per_warp; first < n_rows; first += n_warps * rows_per_warp) {
        const long long row = first + lane / width;
        const bool live = row < n_rows;
        const long long base = live ? row * (long long)k : 0;
        const unsigned char* const mrow = mask == nullptr ? mask : mask + (live ? row : 0) * ldm;
        const long long y = (!SOFT && live) ? labels[row] : 0;
        csm_xent_row<T, SOFT, VEC, false>(grp, col_lane, width, live, x + base, SOFT ? t + base : t, y, weight,
                                          mrow, mask != nullptr, grad == nullptr ? grad : grad + base,
                                          loss + (live ? row : 0), k, eps, scale, wsum, has_ignore, ignore_index,
                                          nullptr);
    }
}

// ---------------------------------------------------------------- tiers 2 and 3: block

// One block per row (grid-stride over rows). CACHE: the row (and for SOFT
// the q_j) in shared memory after the CSM_SCRATCH slots, laid out
// [VEC][k / VEC] as in softmax's block tiers; each thread touches only its
// own cached elements, so the passes need no barrier besides the reductions'.
// At most CSM_MAX_THREADS_VEC (512) threads, whatever VEC: at 1024 ptxas has
// 64 registers and spills csm_xent_block<double, false, 1, true> (sm_90,
// NVRTC 13.5); _gpu_loss.plan caps the block there.
template <typename T, bool SOFT, int VEC, bool CACHE>
__global__ void __launch_bounds__(CSM_MAX_THREADS_VEC, 1)
    csm_xent_block(const T* x, const T* t, const long long* labels, const typename csm_acc<T>::type* weight,
                   const unsigned char* mask, long long ldm, T* grad, double* loss, long long n_rows, int k,
                   double eps, double scale, double wsum, int has_ignore, long long ignore_index) {
    typedef typename csm_acc<T>::type A;
    A* const scratch = reinterpret_cast<A*>(csm_smem);
    int turn = 0;
    const csm_xent_blockwide<A> grp{scratch, &turn};

    for (long long row = blockIdx.x; row < n_rows; row += gridDim.x) {
        const long long base = row * (long long)k;
        const unsigned char* const mrow = mask == nullptr ? mask : mask + row * ldm;
        const long long y = SOFT ? 0 : labels[row];
        csm_xent_row<T, SOFT, VEC, CACHE>(grp, threadIdx.x, blockDim.x, true, x + base, SOFT ? t + base : t, y,
                                          weight, mrow, mask != nullptr, grad == nullptr ? grad : grad + base,
                                          loss + row, k, eps, scale, wsum, has_ignore, ignore_index,
                                          scratch + CSM_SCRATCH);
    }
}

// ---------------------------------------------------------------- before and after

// Integer labels, before the loss kernel: one block of CSM_XENT_REDUCE_THREADS
// threads. out[0] = W, the weight of the rows that count (sum of w[y] over
// rows not ignored; the "mean" divisor); out[1] = the first row whose label is
// outside [0, k) and not ignore_index (+inf: none); out[2] = Wsum, the sum of
// the k weights (k without weight). The host reads the three in one copy and
// refuses the call before anything else is launched.
template <typename A>
__global__ void __launch_bounds__(CSM_XENT_REDUCE_THREADS)
    csm_xent_labels(const long long* labels, const A* weight, long long n_rows, int k, int has_ignore,
                    long long ignore_index, double* out) {
    double* const scratch = reinterpret_cast<double*>(csm_smem);
    double W = 0.0, ws = 0.0, bad = -csm_neg_inf<double>();
    for (long long r = threadIdx.x; r < n_rows; r += blockDim.x) {
        const long long y = labels[r];
        if (has_ignore && y == ignore_index) continue;
        if (y < 0 || y >= k) {
            bad = fmin(bad, (double)r);
        } else {
            W += weight != nullptr ? (double)weight[y] : 1.0;
        }
    }
    for (int j = threadIdx.x; j < k; j += blockDim.x) ws += weight != nullptr ? (double)weight[j] : 1.0;
    W = csm_block_reduce<csm_sum_op>(W, scratch);
    bad = csm_block_reduce<csm_min_op>(bad, scratch + 32);
    ws = csm_block_reduce<csm_sum_op>(ws, scratch);
    if (threadIdx.x == 0) {
        out[0] = W;
        out[1] = bad;
        out[2] = ws;
    }
}

// "sum" and "mean": out[0] = (sum of the n_rows losses) / divisor, one block
// of CSM_XENT_REDUCE_THREADS threads, each adding rows tid, tid + 256, ... in
// order, then csm_block_reduce's fixed tree: the same bits on every run.
__global__ void __launch_bounds__(CSM_XENT_REDUCE_THREADS)
    csm_xent_total(const double* loss, double* out, long long n_rows, double divisor) {
    double* const scratch = reinterpret_cast<double*>(csm_smem);
    double v = 0.0;
    for (long long r = threadIdx.x; r < n_rows; r += blockDim.x) v += loss[r];
    v = csm_block_reduce<csm_sum_op>(v, scratch);
    if (threadIdx.x == 0) out[0] = v / divisor;
}
