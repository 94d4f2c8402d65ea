"""The best hand-written Numba kernels we know for each op: the peer to beat.

What a careful hand-writer does with plain Numba, and nothing more:
* fastmath=False: no reassociation, no approximate exp/log, NaN and inf keep
  their meaning (fastmath flags would also let LLVM drop the checks that make
  a peer comparable with csoftmax's semantics).
* Fused passes per row: softmax is max; exp written out while summing;
  multiply by 1/sum. The backward ops are one dot product (or sum) and one
  pass that writes.
* Without reassociation a reduction is one long dependency chain, so the
  reductions that are not behind an exp (max, sum(g*y), sum(g)) keep eight
  independent accumulators by hand; a sum behind a scalar exp call is limited
  by the exp, not by the chain.
* Accumulators have the input's dtype (float32 rows are summed in float32),
  as torch, JAX and the NumPy formula do.
* error_model="numpy": no division-by-zero checks in the loops.
* A serial and a prange driver per op; the caller picks the serial one at one
  thread and below GRAIN elements (PyTorch's CPU grain is about 32768
  elements per task: starting threads costs more than the work).

Compiled on first use of each dtype; cache=True keeps the machine code under
bench/__pycache__ (git-ignored) for the next run.
"""
import functools

import numpy as np

GRAIN = 32768
_K = {}


def _build():
    from numba import njit, prange

    jit = functools.partial(njit, fastmath=False, error_model="numpy", cache=True)
    pjit = functools.partial(njit, fastmath=False, error_model="numpy", cache=True, parallel=True)

    @jit(inline="always")
    def rmax(r):
        k = r.shape[0]
        if k < 8:
            m = r[0]
            for j in range(1, k):
                if r[j] > m:
                    m = r[j]
            return m
        m0, m1, m2, m3, m4, m5, m6, m7 = r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]
        j = 8
        while j + 8 <= k:
            m0 = r[j] if r[j] > m0 else m0
            m1 = r[j + 1] if r[j + 1] > m1 else m1
            m2 = r[j + 2] if r[j + 2] > m2 else m2
            m3 = r[j + 3] if r[j + 3] > m3 else m3
            m4 = r[j + 4] if r[j + 4] > m4 else m4
            m5 = r[j + 5] if r[j + 5] > m5 else m5
            m6 = r[j + 6] if r[j + 6] > m6 else m6
            m7 = r[j + 7] if r[j + 7] > m7 else m7
            j += 8
        m0 = m1 if m1 > m0 else m0
        m2 = m3 if m3 > m2 else m2
        m4 = m5 if m5 > m4 else m4
        m6 = m7 if m7 > m6 else m6
        m0 = m2 if m2 > m0 else m0
        m4 = m6 if m6 > m4 else m4
        m = m4 if m4 > m0 else m0
        for jj in range(j, k):
            if r[jj] > m:
                m = r[jj]
        return m

    @jit(inline="always")
    def rdot(a, b):
        # sum(a * b) with eight chains (b is a when summing a alone: see rsum).
        k = a.shape[0]
        z = a.dtype.type(0)
        s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = z
        j = 0
        while j + 8 <= k:
            s0 += a[j] * b[j]
            s1 += a[j + 1] * b[j + 1]
            s2 += a[j + 2] * b[j + 2]
            s3 += a[j + 3] * b[j + 3]
            s4 += a[j + 4] * b[j + 4]
            s5 += a[j + 5] * b[j + 5]
            s6 += a[j + 6] * b[j + 6]
            s7 += a[j + 7] * b[j + 7]
            j += 8
        for jj in range(j, k):
            s0 += a[jj] * b[jj]
        return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))

    @jit(inline="always")
    def rsum(a):
        k = a.shape[0]
        z = a.dtype.type(0)
        s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = z
        j = 0
        while j + 8 <= k:
            s0 += a[j]
            s1 += a[j + 1]
            s2 += a[j + 2]
            s3 += a[j + 3]
            s4 += a[j + 4]
            s5 += a[j + 5]
            s6 += a[j + 6]
            s7 += a[j + 7]
            j += 8
        for jj in range(j, k):
            s0 += a[jj]
        return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))

    @jit(inline="always")
    def row_softmax(x, o):
        m = rmax(x)
        s = x.dtype.type(0)
        for j in range(x.shape[0]):
            e = np.exp(x[j] - m)
            o[j] = e
            s += e
        r = x.dtype.type(1) / s
        for j in range(x.shape[0]):
            o[j] *= r

    @jit(inline="always")
    def row_lse(x):
        m = rmax(x)
        s = x.dtype.type(0)
        for j in range(x.shape[0]):
            s += np.exp(x[j] - m)
        return m, np.log(s)

    @jit(inline="always")
    def row_log_softmax(x, o):
        m, ls = row_lse(x)
        for j in range(x.shape[0]):
            o[j] = (x[j] - m) - ls  # this order keeps [1000, 1] exact

    @jit(inline="always")
    def row_softmax_backward(y, g, o):
        d = rdot(g, y)
        for j in range(y.shape[0]):
            o[j] = y[j] * (g[j] - d)

    @jit(inline="always")
    def row_log_softmax_backward(y, g, o):
        s = rsum(g)
        for j in range(y.shape[0]):
            o[j] = g[j] - np.exp(y[j]) * s

    @jit(inline="always")
    def block_jacobian(x, o):
        # o is the (K, K) block of one row. Its first row holds s as scratch
        # (no allocation per row); rows 1..K-1 are written from it, row 0 last,
        # in place: J[i, j] = s_i * (delta_ij - s_j).
        k = x.shape[0]
        row_softmax(x, o[0])
        for i in range(1, k):
            si = o[0, i]
            for j in range(k):
                o[i, j] = -si * o[0, j]
            o[i, i] += si
        s0 = o[0, 0]
        for j in range(k):
            o[0, j] = -s0 * o[0, j]
        o[0, 0] += s0

    @jit
    def ser_softmax(x, o):
        for i in range(x.shape[0]):
            row_softmax(x[i], o[i])

    @pjit
    def par_softmax(x, o):
        for i in prange(x.shape[0]):
            row_softmax(x[i], o[i])

    @jit
    def ser_log_softmax(x, o):
        for i in range(x.shape[0]):
            row_log_softmax(x[i], o[i])

    @pjit
    def par_log_softmax(x, o):
        for i in prange(x.shape[0]):
            row_log_softmax(x[i], o[i])

    @jit
    def ser_logsumexp(x, o):
        for i in range(x.shape[0]):
            m, ls = row_lse(x[i])
            o[i] = m + ls

    @pjit
    def par_logsumexp(x, o):
        for i in prange(x.shape[0]):
            m, ls = row_lse(x[i])
            o[i] = m + ls

    @jit
    def ser_jacobian(x, o):
        for i in range(x.shape[0]):
            block_jacobian(x[i], o[i])

    @pjit
    def par_jacobian(x, o):
        for i in prange(x.shape[0]):
            block_jacobian(x[i], o[i])

    @jit
    def ser_softmax_backward(y, g, o):
        for i in range(y.shape[0]):
            row_softmax_backward(y[i], g[i], o[i])

    @pjit
    def par_softmax_backward(y, g, o):
        for i in prange(y.shape[0]):
            row_softmax_backward(y[i], g[i], o[i])

    @jit
    def ser_log_softmax_backward(y, g, o):
        for i in range(y.shape[0]):
            row_log_softmax_backward(y[i], g[i], o[i])

    @pjit
    def par_log_softmax_backward(y, g, o):
        for i in prange(y.shape[0]):
            row_log_softmax_backward(y[i], g[i], o[i])

    return {
        "softmax": (ser_softmax, par_softmax),
        "log_softmax": (ser_log_softmax, par_log_softmax),
        "logsumexp": (ser_logsumexp, par_logsumexp),
        "jacobian": (ser_jacobian, par_jacobian),
        "softmax_backward": (ser_softmax_backward, par_softmax_backward),
        "log_softmax_backward": (ser_log_softmax_backward, par_log_softmax_backward),
    }


def kernel(op, threads, size):
    """The driver for `op` at `threads` threads over `size` elements:
    kern(x, o) or kern(y, g, o), writing o (the caller sets numba's thread count)."""
    if not _K:
        _K.update(_build())
    ser, par = _K[op]
    return ser if threads == 1 or size < GRAIN else par
