"""Accuracy: csoftmax against float64 references, under every ISA."""
import numpy as np
import pytest
import scipy.special

import csoftmax
from csoftmax import _engine
from conftest import (DOMINANT_GAPS, ref_jacobian, ref_jacobian_diagonal, ref_log_softmax,
                      ref_log_softmax_backward, ref_softmax, ref_softmax_backward, rel_err,
                      rows_around_the_normal_exps)

# float32 within 2e-6 and float64 within 1e-12 relative of a float64 reference
# (the issue's bounds; the kernels' exp is within 1.2 ulp in float32 and 1.01 ulp
# in float64, their log within 1 ulp, the rest is the rounding of x - max, of
# the sum and of the final scaling).
RTOL = {np.float32: 2e-6, np.float64: 1e-12}
# softmax's rows up to this length take the lane path (one row per SIMD lane).
_SMALL_K = _engine.CONSTANTS["small_fwd_k"]
SHAPES = [(1, 1), (1, 10), (7, 3), (64, 10), (33, 1000), (3, 4097), (200, 64)]
DTYPES = [np.float32, np.float64]


def logits(shape, dtype, seed=0, scale=3.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_softmax_matches_float64_reference(isa, shape, dtype):
    x = logits(shape, dtype)
    assert rel_err(csoftmax.softmax(x), ref_softmax(x)) <= RTOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_log_softmax_matches_float64_reference(isa, shape, dtype):
    # The README's bound: relative where |log p| >= 1, absolute nearer 0,
    # where (x - max) - log(sum) cancels and the sum's last bits show.
    x = logits(shape, dtype)
    got = csoftmax.log_softmax(x).astype(np.float64)
    want = ref_log_softmax(x)
    assert np.all(np.abs(got - want) <= RTOL[dtype] * np.maximum(np.abs(want), 1.0))


def _backward_bound(y, g, dtype):
    """Error bound of y * (g - d): relative to the terms, not the (possibly
    cancelled) result."""
    y = y.astype(np.float64)
    g = g.astype(np.float64)
    d = np.abs(np.sum(g * y, axis=-1, keepdims=True))
    return 4 * RTOL[dtype] * np.abs(y) * (np.abs(g) + d) + np.finfo(dtype).tiny


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_softmax_backward_matches_float64_reference(isa, shape, dtype):
    y = csoftmax.softmax(logits(shape, dtype))
    g = logits(shape, dtype, seed=1)
    got = csoftmax.softmax_backward(y, g)
    want = ref_softmax_backward(y, g)
    assert np.all(np.abs(got - want) <= _backward_bound(y, g, dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_log_softmax_backward_matches_float64_reference(isa, shape, dtype):
    y = csoftmax.log_softmax(logits(shape, dtype))
    g = logits(shape, dtype, seed=1)
    got = csoftmax.log_softmax_backward(y, g)
    want = ref_log_softmax_backward(y, g)
    sg = np.abs(g.astype(np.float64)).sum(axis=-1, keepdims=True)
    bound = 4 * RTOL[dtype] * (np.abs(g) + np.exp(y.astype(np.float64)) * sg)
    assert np.all(np.abs(got - want) <= bound)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [40, 100, 1000])
def test_log_softmax_backward_of_any_y_matches_float64_reference(isa, k, dtype):
    # The kernels take exp's cheaper softmax-domain form for rows whose y are
    # all <= 0 (a log_softmax's) and the whole exp for the others: a y > 0,
    # +inf, NaN or -inf anywhere in a row must give exp's values and bits
    # either way, in every layout (C, Fortran, strided, masked, a row alone).
    rng = np.random.default_rng(k)
    y = (rng.standard_normal((8, k)) * 20 - 30).clip(None, 0).astype(dtype)
    y[1, k // 2] = 3.5  # one y > 0: the whole row takes the whole exp
    y[2] = rng.uniform(-80, 80, k).astype(dtype)
    y[3, 0] = 0.0
    y[4, -1] = np.inf
    y[5, 3] = np.nan
    y[6, :] = -np.inf
    y[7, 5] = -0.0
    g = logits((8, k), dtype, seed=1)
    got = csoftmax.log_softmax_backward(y, g)
    with np.errstate(over="ignore", invalid="ignore"):
        want = ref_log_softmax_backward(y, g)
        sg = np.abs(g.astype(np.float64)).sum(axis=-1, keepdims=True)
        bound = 4 * RTOL[dtype] * (np.abs(g) + np.exp(y.astype(np.float64)) * sg)
        fin = np.isfinite(want)
        assert np.all(np.abs(got - want)[fin] <= bound[fin])
    np.testing.assert_array_equal(got[~fin], want[~fin].astype(dtype))
    np.testing.assert_array_equal(csoftmax.log_softmax_backward(np.asfortranarray(y), g), got)
    wide = np.repeat(y, 2, axis=1)[:, ::2]  # every other column: the strided path
    np.testing.assert_array_equal(csoftmax.log_softmax_backward(wide, g), got)
    np.testing.assert_array_equal(csoftmax.log_softmax_backward(y, g, where=np.ones(y.shape, bool)), got)
    for r in range(8):  # a row alone gives the row's bits in the batch
        np.testing.assert_array_equal(csoftmax.log_softmax_backward(y[r:r + 1], g[r:r + 1])[0], got[r])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (5, 3), (64, 10), (4, 130)])
def test_jacobian_matches_float64_reference(isa, shape, dtype):
    x = logits(shape, dtype)
    got = csoftmax.softmax_jacobian(x)
    want = ref_jacobian(x)
    s = ref_softmax(x)
    # Off-diagonal -s_i s_j is a product; the diagonal s_i - s_i^2 may cancel.
    bound = 4 * RTOL[dtype] * (np.abs(want) + np.einsum("ni,ij->nij", s, np.eye(shape[1])))
    assert got.shape == (shape[0], shape[1], shape[1])
    assert np.all(np.abs(got - want) <= bound + np.finfo(dtype).tiny)


def _streamed_jacobian(x, out, num_threads=None):
    """softmax_jacobian(x, out=out) with streaming stores forced (checked)."""
    before = _engine.streamed_blocks()
    old_bytes, old_threads = _engine.set_stream_bytes(0), _engine.set_stream_threads(1)
    old_jac = _engine.set_stream_jacobian(True)
    try:
        csoftmax.softmax_jacobian(x, out=out, num_threads=num_threads)
    finally:
        _engine.set_stream_bytes(old_bytes)
        _engine.set_stream_threads(old_threads)
        _engine.set_stream_jacobian(old_jac)
    assert _engine.streamed_blocks() > before
    return out


@pytest.mark.parametrize("dtype", DTYPES)
def test_jacobian_matches_float64_reference_at_every_k_its_register_kernels_take(isa, dtype):
    # Up to K = 8 registers (AVX-512) or 13 (AVX2) the Jacobian's rows are
    # built from s held in registers, one copy per register count, the last
    # register overlapping the one before it where K is not a multiple of
    # the width: every K up to 140 crosses each copy and the element-wise
    # rows past them. Blocks of several rows and a one-row call alike, C,
    # Fortran and strided rows, and streamed outputs, which build whole
    # blocks in an L1 scratch up to K = 64 (4096 elements) and a
    # block's rows in groups past it (from K = 65 float32, a register's rows
    # span two groups).
    for k in range(1, 141):
        x = logits((3, k), dtype, seed=k)
        got = csoftmax.softmax_jacobian(x)
        want = ref_jacobian(x)
        s = ref_softmax(x)
        bound = 4 * RTOL[dtype] * (np.abs(want) + np.einsum("ni,ij->nij", s, np.eye(k)))
        assert np.all(np.abs(got - want) <= bound + np.finfo(dtype).tiny), k
        assert np.array_equal(got, np.swapaxes(got, 1, 2)), k
        np.testing.assert_array_equal(csoftmax.softmax_jacobian(x[2:]), got[2:])
        # Fortran and strided rows (the lane path: s in each block's last row,
        # which the block's register rows overwrite last).
        np.testing.assert_array_equal(csoftmax.softmax_jacobian(np.asfortranarray(x)), got)
        wide = np.repeat(x, 2, axis=1)[:, ::2]
        np.testing.assert_array_equal(csoftmax.softmax_jacobian(wide), got)
        np.testing.assert_array_equal(_streamed_jacobian(x, np.empty_like(got)), got)


def _hostile_rows(shape, dtype, seed):
    """logits with a -inf row and a row holding NaN and 1e30."""
    x = logits(shape, dtype, seed=seed)
    k = shape[1]
    x[1] = -np.inf
    x[2, : min(k, 2)] = [np.nan, 1e30][: min(k, 2)]
    return x


def _assert_same_bits_at_every_offset(fn, x, threads):
    """fn(x, out=...) into outputs at every element offset within a cache
    line gives the bits of fn(x), and writes nothing outside the output."""
    want = fn(x)
    per_line = 64 // want.itemsize
    base = np.full(want.size + 3 * per_line, 7.0, want.dtype)
    for offset in range(per_line):
        buf = base.copy()
        start = (-(buf.ctypes.data // buf.itemsize)) % per_line + per_line + offset
        out = buf[start: start + want.size].reshape(want.shape)
        fn(x, out=out, num_threads=threads)
        np.testing.assert_array_equal(out, want, err_msg=f"K = {x.shape[1]}, offset {offset}")
        assert np.all(buf[:start] == 7.0) and np.all(buf[start + want.size:] == 7.0), offset


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("threads", [1, 2])
def test_jacobian_bits_do_not_depend_on_where_the_output_starts(isa, dtype, threads):
    # Rows of J longer than 256 bytes are stored at register boundaries (AVX-512
    # up to 8 registers: s shifted by the row's offset, the first and last
    # stores masked; past that, AVX2 too: a partial store up to the first
    # boundary), rows of half a register to one in two 256-bit stores; at
    # every K the register kernels take and past them.
    for k in (1, 2, 5, 7, 8, 9, 15, 16, 17, 31, 33, 64, 100, 127, 128, 129, 140, 200):
        _assert_same_bits_at_every_offset(csoftmax.softmax_jacobian, _hostile_rows((5, k), dtype, k), threads)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("threads", [1, 2])
def test_log_softmax_bits_do_not_depend_on_where_the_output_starts(isa, dtype, threads):
    # Rows of 256 bytes or more write the elements up to their first register
    # boundary in one masked store, then whole registers; short rows, which
    # keep the plain loop, alongside.
    for k in (3, 33, 63, 64, 65, 100, 128, 1000):
        _assert_same_bits_at_every_offset(csoftmax.log_softmax, _hostile_rows((6, k), dtype, k), threads)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("threads", [1, 2])
def test_softmax_backward_bits_do_not_depend_on_where_the_output_starts(isa, dtype, threads):
    # Outputs at every offset within a cache line, through the short rows'
    # kernels, the rows pipelined with the next row's dot product (up to 512
    # bytes) and longer ones, with -inf and NaN rows among them.
    for k in (3, 33, 63, 64, 65, 100, 127, 128, 129, 1000):
        y = csoftmax.softmax(_hostile_rows((7, k), dtype, k))
        g = _hostile_rows((7, k), dtype, k + 1)

        def backward(_, **kw):
            return csoftmax.softmax_backward(y, g, **kw)

        _assert_same_bits_at_every_offset(backward, y, threads)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("offset", [0, 1, 3])
@pytest.mark.parametrize("threads", [1, 2])
def test_streamed_jacobian_gives_the_bits_of_regular_stores_across_groups(isa, dtype, offset, threads):
    # A streamed Jacobian takes s of a group of rows at once (as many as an
    # L1 scratch of 4096 elements holds), then builds as many whole blocks as
    # that scratch holds (up to K = 64) and streams them out in one
    # copy, or a block's rows in parts where a block is larger. More rows
    # than a group cross both; the output starts `offset` elements past an
    # aligned address, so that the streamed copy starts with regular stores;
    # at two threads each thread's block of rows starts its groups anew.
    for k in (1, 3, 16, 31, 32, 45, 46, 64, 65, 100):
        n = 4096 // k + 3
        x = logits((n, k), dtype, seed=k)
        x[1] = -np.inf
        x[2, :2] = [np.nan, 1e30][: min(k, 2)]
        got = csoftmax.softmax_jacobian(x)
        base = np.empty(n * k * k + 32, dtype)
        start = (-(base.ctypes.data // base.itemsize)) % 16 + offset
        streamed = _streamed_jacobian(x, base[start: start + n * k * k].reshape(n, k, k), threads)
        np.testing.assert_array_equal(streamed, got, err_msg=f"K = {k}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_rows_sum_to_one(isa, shape, dtype):
    s = csoftmax.softmax(logits(shape, dtype, scale=10))
    sums = s.astype(np.float64).sum(axis=-1)
    assert np.all(np.abs(sums - 1) <= 2 * shape[1] * np.finfo(dtype).eps)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shift", [-1e4, -7.5, 3.25, 1e4])
def test_shift_invariance(isa, dtype, shift):
    # Shifts that are exact in the dtype leave x - max unchanged: same bits.
    x = logits((32, 100), dtype)
    x = np.round(x * 64) / 64  # few mantissa bits, so x + shift is exact
    shifted = (x + dtype(shift)).astype(dtype)
    assert np.array_equal(shifted - dtype(shift), x)
    np.testing.assert_array_equal(csoftmax.softmax(shifted), csoftmax.softmax(x))
    np.testing.assert_array_equal(csoftmax.log_softmax(shifted), csoftmax.log_softmax(x))


@pytest.mark.parametrize("axis", [0, 1, 2, -1, (0, 2), (1, 2), (0, 1, 2), None])
@pytest.mark.parametrize("fn", ["softmax", "log_softmax"])
def test_matches_scipy_for_every_axis(fn, axis):
    x = logits((4, 5, 6), np.float64)
    got = getattr(csoftmax, fn)(x, axis=axis)
    want = getattr(scipy.special, fn)(x, axis=axis)
    assert got.shape == x.shape
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-300)


def test_matches_scipy_for_axis_none_on_2d():
    x = logits((3, 4), np.float32)
    np.testing.assert_allclose(csoftmax.softmax(x, axis=None),
                               scipy.special.softmax(x, axis=None), rtol=2e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fn", ["softmax", "log_softmax", "softmax_backward",
                                "log_softmax_backward", "softmax_jacobian"])
@pytest.mark.parametrize("shape", [(1000, 64), (10, 20000), (3000, 7)])
def test_thread_count_gives_identical_bits(fn, shape, dtype):
    if fn == "softmax_jacobian":
        shape = (shape[0], min(shape[1], 100))
    x = logits(shape, dtype)
    args = (csoftmax.softmax(x), logits(shape, dtype, seed=2)) if "backward" in fn else (x,)
    f = getattr(csoftmax, fn)
    results = [f(*args, num_threads=t) for t in (1, 2, 3)]
    results.append(f(*args))  # the default thread count
    for r in results[1:]:
        assert np.array_equal(r, results[0], equal_nan=True)


def _fd_check(fwd, bwd, dtype=np.float64, shape=(3, 7), h=1e-6):
    """Central finite differences of L(x) = sum(grad * fwd(x)) against bwd."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal(shape)
    g = rng.standard_normal(shape)
    y = fwd(x)
    analytic = bwd(y, g)
    numeric = np.zeros_like(x)
    for idx in np.ndindex(*shape):
        e = np.zeros_like(x)
        e[idx] = h
        numeric[idx] = (np.sum(g * fwd(x + e)) - np.sum(g * fwd(x - e))) / (2 * h)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)


def test_softmax_backward_matches_finite_differences():
    _fd_check(csoftmax.softmax, csoftmax.softmax_backward)


def test_log_softmax_backward_matches_finite_differences():
    _fd_check(csoftmax.log_softmax, csoftmax.log_softmax_backward)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_backward_equals_jacobian_transpose_times_grad(dtype):
    x = logits((16, 12), dtype)
    g = logits((16, 12), dtype, seed=3)
    J = csoftmax.softmax_jacobian(x).astype(np.float64)
    want = np.einsum("nij,ni->nj", J, g.astype(np.float64))
    got = csoftmax.softmax_backward(csoftmax.softmax(x), g)
    np.testing.assert_allclose(got, want, rtol=RTOL[dtype] * 50, atol=RTOL[dtype] * 10)


@pytest.mark.parametrize("dtype", DTYPES)
def test_log_softmax_backward_equals_jacobian_transpose_times_grad(dtype):
    # d log s_i / d x_j = delta_ij - s_j, i.e. J_log = I - 1 s^T.
    x = logits((16, 12), dtype)
    g = logits((16, 12), dtype, seed=3).astype(np.float64)
    s = ref_softmax(x)
    J = np.eye(12)[None] - s[:, None, :]
    want = np.einsum("nij,ni->nj", J, g)
    got = csoftmax.log_softmax_backward(csoftmax.log_softmax(x), g.astype(dtype))
    np.testing.assert_allclose(got, want, rtol=RTOL[dtype] * 50, atol=RTOL[dtype] * 10)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [2, 3, 10, 16, 17, 32, 33, 64, 100, 130, 300])
def test_jacobian_diagonal_keeps_its_relative_accuracy_where_one_class_dominates(isa, dtype, k):
    # s_i - s_i^2 would lose 1 - s_i to the rounding of s_i near 1 (float32
    # diagonals 0.22 off at s_i = 0.99998); s_i times the sum of the other s_j
    # keeps the accuracy of s. K covers the register kernels, the aligned
    # AVX-512 rows and the rows past them; C, Fortran and strided inputs.
    rng = np.random.default_rng(k)
    gaps = DOMINANT_GAPS[np.dtype(dtype)]
    x = rng.standard_normal((8 * len(gaps), k))
    x[np.arange(x.shape[0]), rng.integers(0, k, x.shape[0])] += np.repeat(gaps, 8)
    x = x.astype(dtype)
    want = ref_jacobian_diagonal(x)
    for variant in (x, np.asfortranarray(x), np.repeat(x, 2, axis=1)[:, ::2]):
        J = csoftmax.softmax_jacobian(variant)
        got = np.diagonal(J, axis1=1, axis2=2).astype(np.float64)
        assert np.max(np.abs(got - want) / want) <= 2 * RTOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
def test_masked_jacobian_diagonal_keeps_its_relative_accuracy(isa, dtype):
    k = 40
    rng = np.random.default_rng(7)
    x = rng.standard_normal((40, k))
    x[:, 5] += np.repeat(DOMINANT_GAPS[np.dtype(dtype)], 8)
    x = x.astype(dtype)
    where = rng.random((40, k)) < 0.7
    where[:, 5] = True
    masked = np.where(where, x, -np.inf)
    got = np.diagonal(csoftmax.softmax_jacobian(x, where=where), axis1=1, axis2=2).astype(np.float64)
    want = np.where(where, ref_jacobian_diagonal(masked.astype(np.float64)), 0)
    assert np.all(got[~where] == 0)
    assert np.max(np.abs(got - want)[where] / want[where]) <= 2 * RTOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [10, 33, 100])
def test_dominant_rows_of_the_jacobian_sum_to_zero_to_the_rounding_of_their_entries(isa, dtype, k):
    # The row of a dominant class (s_i > 1/2) is s_i times the sum of the
    # other s_j on the diagonal and -s_i s_j beside it: it sums to 0 but for
    # the entries' own roundings, a few ulps of the diagonal. s_i - s_i^2
    # left s_i (1 - sum(s)) there, the rounding of the whole row of s.
    rng = np.random.default_rng(k)
    x = rng.standard_normal((40, k))
    top = rng.integers(0, k, 40)
    x[np.arange(40), top] += np.repeat(DOMINANT_GAPS[np.dtype(dtype)][1:], 10)
    x = x.astype(dtype)
    J = csoftmax.softmax_jacobian(x)[np.arange(40), top].astype(np.longdouble)  # the dominant rows
    sums = np.abs(J.sum(axis=1)).astype(np.float64)  # in extended precision: float64's roundings show
    diag = J[np.arange(40), top].astype(np.float64)
    assert np.all(sums <= 4 * np.finfo(dtype).eps * diag)


@pytest.mark.parametrize("dtype", DTYPES)
def test_jacobian_is_symmetric_with_zero_row_sums(isa, dtype):
    J = csoftmax.softmax_jacobian(logits((50, 33), dtype))
    assert np.array_equal(J, np.swapaxes(J, 1, 2))
    sums = np.abs(J.astype(np.float64).sum(axis=2))
    assert np.all(sums <= 33 * np.finfo(dtype).eps)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [10, 33, 100])
def test_jacobian_is_bitwise_symmetric_where_products_underflow(isa, dtype, k):
    # Tiny probabilities whose products s_i s_j underflow past the smallest
    # subnormal: every entry of a block, in registers or in a row's tail,
    # must round 0 - s_i s_j the same way, down to the sign of a zero, in C,
    # Fortran and strided layouts.
    single = np.dtype(dtype).itemsize == 4
    lo = -60.0 if single else -400.0
    x = np.linspace(0.0, lo, k)[None].repeat(3, axis=0).astype(dtype)
    x[1] = x[1][::-1]
    x[2, ::3] = lo / 2
    J = csoftmax.softmax_jacobian(x)
    uint = np.uint32 if single else np.uint64
    np.testing.assert_array_equal(J.view(uint), np.ascontiguousarray(np.swapaxes(J, 1, 2)).view(uint))
    assert (J == 0).any()  # the case the test is about
    np.testing.assert_array_equal(csoftmax.softmax_jacobian(np.asfortranarray(x)).view(uint), J.view(uint))
    wide = np.repeat(x, 2, axis=1)[:, ::2]  # every other column: the strided path
    np.testing.assert_array_equal(csoftmax.softmax_jacobian(wide).view(uint), J.view(uint))


@pytest.mark.parametrize("dtype", DTYPES)
def test_jacobian_equals_diag_s_minus_outer(isa, dtype):
    # J = diag(s (1 - s)) - s s^T, 1 - s_i being the sum of the other s_j (to
    # the rounding of the row's sum: the kernels take s_i - s_i^2 where
    # s_i <= 1/2, and the other s_j's sum where s_i > 1/2).
    x = logits((20, 9), dtype)
    s = csoftmax.softmax(x).astype(np.float64)
    others = s.sum(axis=1, keepdims=True) - s
    want = np.einsum("ni,ij->nij", s * others, np.eye(9)) - np.einsum("ni,nj->nij", s, s) * (1 - np.eye(9))
    np.testing.assert_allclose(csoftmax.softmax_jacobian(x), want,
                               rtol=RTOL[dtype] * 4, atol=np.finfo(dtype).eps)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fn", ["softmax", "log_softmax", "softmax_backward",
                                "log_softmax_backward", "softmax_jacobian"])
def test_streaming_stores_give_identical_bits(isa, fn, dtype, stream_at_8mib):
    # Outputs past 8 MiB are written with streaming stores; slices of the
    # same rows stay below that and take the regular stores.
    shape = (48, 300) if fn == "softmax_jacobian" else (1100, 2001)
    x = logits(shape, dtype)
    f = getattr(csoftmax, fn)
    args = (csoftmax.softmax(x), logits(shape, dtype, seed=4)) if "backward" in fn else (x,)
    # Into a reused buffer: freshly allocated outputs take regular stores.
    # One thread streams only where the least streaming thread count says so.
    n, k = shape
    step = 4 if fn == "softmax_jacobian" else 100
    parts = np.concatenate([f(*(a[i:i + step] for a in args)) for a in [args[0]]
                            for i in range(0, shape[0], step)])
    # (The ops bound by their exps stream only where set_stream_exp_ops says.)
    old, old_exp = _engine.set_stream_threads(1), _engine.set_stream_exp_ops(True)
    try:
        for threads in (1, 2):
            whole = np.empty_like(parts)
            f(*args, out=whole, num_threads=threads)
            assert _engine.plan(fn, n, k, np.dtype(dtype).name, num_threads=threads)["stream"]
            assert not _engine.plan(fn, step, k, np.dtype(dtype).name,
                                    num_threads=threads)["stream"]
            np.testing.assert_array_equal(whole, parts)
    finally:
        _engine.set_stream_threads(old)
        _engine.set_stream_exp_ops(old_exp)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [1, 3, 10, _SMALL_K, _SMALL_K + 1, 100])
@pytest.mark.parametrize("fn", ["softmax", "log_softmax", "softmax_jacobian"])
def test_a_rows_result_does_not_depend_on_the_batch_around_it(isa, fn, k, dtype):
    # Short rows are computed many at a time, one per SIMD lane; leftover rows
    # alone. Either way each row must come out with the same bits.
    x = logits((37, k), dtype, seed=k)
    f = getattr(csoftmax, fn)
    batch = f(x)
    for i in (0, 15, 16, 31, 32, 36):
        np.testing.assert_array_equal(f(x[i:i + 1])[0], batch[i])
        np.testing.assert_array_equal(f(x[i]), batch[i])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [16, 17, 64, 100, 256, 257, 1000])
@pytest.mark.parametrize("fn", ["softmax", "log_softmax", "logsumexp"])
def test_bits_do_not_depend_on_whether_a_row_reaches_the_subnormal_exps(isa, fn, k, dtype):
    # Under AVX2 and AVX-512 a row, or a pair of rows taken together, whose
    # x - max all have normal exps skips the clamps (and under AVX2 the
    # exp's test register by register); the bits must be those of the other
    # paths: the masked kernels (an all-true mask gives the bits of none)
    # take each register's exp on its own, Fortran-ordered and strided rows go
    # through the lane layout, and a row alone or beside another decides
    # for itself.
    x = rows_around_the_normal_exps(k, dtype)
    f = getattr(csoftmax, fn)
    got = f(x)
    uint = np.uint32 if dtype == np.float32 else np.uint64
    strided = np.repeat(x, 2, axis=1)[:, ::2]
    for other in (f(x, where=np.ones(x.shape, bool)), f(np.asfortranarray(x)), f(strided)):
        nan = np.isnan(other)
        np.testing.assert_array_equal(np.isnan(got), nan)
        np.testing.assert_array_equal(got[~nan].view(uint), other[~nan].view(uint))
    for i in range(len(x)):
        np.testing.assert_array_equal(f(x[i:i + 1])[0], got[i])
        for j in range(len(x)):
            np.testing.assert_array_equal(f(x[[j, i]])[1], got[i])
