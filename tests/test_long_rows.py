"""float32 accuracy at any row length, up to a vocabulary-sized K = 10^6.

Every sum over a row is taken in double (CSM_PARTS in _rows.h), so the
float32 results keep the bound of short rows: softmax within 2e-6 relative
of a float64 reference; log_softmax within 2e-6 relative where |log p| >= 1
and 2e-6 absolute nearer 0 (log p = (x - max) - log(sum) cancels there);
the backward passes within 2e-6 of the size of their terms,
|y| (|g| + |sum(g y)|), since the result itself may cancel to 0.
"""
import numpy as np
import pytest

import csoftmax
from conftest import (ref_log_softmax, ref_log_softmax_backward, ref_softmax,
                      ref_softmax_backward)

KS = [1000, 65536, 1_000_000]
TOL = 2e-6


def _x(k, seed=0, order="C"):
    n = 2 if k >= 100_000 else 8
    x = (np.random.default_rng(seed).standard_normal((n, k)) * 3).astype(np.float32)
    return np.asarray(x, order=order)


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("k", KS)
def test_float32_softmax_is_within_2e_6_relative_at_any_k(isa, k, order):
    x = _x(k, order=order)
    want = ref_softmax(x)
    got = csoftmax.softmax(x).astype(np.float64)
    assert np.max(np.abs(got - want) / want) <= TOL


@pytest.mark.parametrize("k", KS)
def test_float32_rows_sum_to_one_at_any_k(isa, k):
    s = csoftmax.softmax(_x(k)).astype(np.float64).sum(axis=-1)
    # Each of K entries is within 2e-6 relative, so the sum is within 2e-6.
    assert np.max(np.abs(s - 1)) <= TOL


@pytest.mark.parametrize("k", KS)
def test_float32_log_softmax_is_within_2e_6_at_any_k(isa, k):
    x = _x(k, seed=1)
    want = ref_log_softmax(x)
    got = csoftmax.log_softmax(x).astype(np.float64)
    assert np.max(np.abs(got - want) / np.maximum(np.abs(want), 1.0)) <= TOL


@pytest.mark.parametrize("k", KS)
def test_float32_softmax_backward_is_within_2e_6_of_its_terms_at_any_k(isa, k):
    y = csoftmax.softmax(_x(k, seed=2))
    g = _x(k, seed=3)
    y64, g64 = y.astype(np.float64), g.astype(np.float64)
    want = ref_softmax_backward(y, g)
    scale = np.abs(y64) * (np.abs(g64) + np.abs(np.sum(g64 * y64, axis=-1, keepdims=True)))
    got = csoftmax.softmax_backward(y, g).astype(np.float64)
    assert np.all(np.abs(got - want) <= TOL * scale + np.finfo(np.float32).tiny)


@pytest.mark.parametrize("k", KS)
def test_float32_log_softmax_backward_is_within_2e_6_of_its_terms_at_any_k(isa, k):
    y = csoftmax.log_softmax(_x(k, seed=4))
    g = _x(k, seed=5)
    y64, g64 = y.astype(np.float64), g.astype(np.float64)
    want = ref_log_softmax_backward(y, g)
    scale = np.abs(g64) + np.exp(y64) * np.abs(np.sum(g64, axis=-1, keepdims=True))
    got = csoftmax.log_softmax_backward(y, g).astype(np.float64)
    assert np.all(np.abs(got - want) <= TOL * scale + np.finfo(np.float32).tiny)


@pytest.mark.parametrize("length, dtype", [("past_l2", "float32"), ("past_l2", "float64"),
                                           ("past_keep", "float32")])
@pytest.mark.parametrize("fn", ["softmax", "log_softmax"])
def test_rows_past_l2_give_the_bits_of_every_other_path(isa, fn, length, dtype, stream_at_8mib):
    # Rows longer than CSM_LONG_ROW bytes take their max and sum in one
    # read; softmax then scales the exponentials it kept in the output
    # (rows of up to CSM_LONG_KEEP elements) or recomputes them from a
    # second read of x (longer rows). Either way the bits must be those of
    # Fortran order (a gathered row), of an in-place call and of a streamed
    # output, with special values in the rows.
    from csoftmax import _engine

    itemsize = np.dtype(dtype).itemsize
    k = (_engine.CONSTANTS["long_row_bytes"] // itemsize if length == "past_l2"
         else _engine.CONSTANTS["long_keep"]) + 1000
    x = (np.random.default_rng(3).standard_normal((4, k)) * 3).astype(dtype)
    x[1, ::7] = -np.inf
    x[2, 5] = np.nan
    x[3, 9] = np.inf
    f = getattr(csoftmax, fn)
    got = f(x)
    ref = (ref_softmax if fn == "softmax" else ref_log_softmax)(x[:1])
    np.testing.assert_allclose(got[:1], ref, rtol=TOL if dtype == "float32" else 1e-13)
    assert np.isnan(got[2]).all() and np.isnan(got[3]).all()
    assert (got[1, ::7] == (0 if fn == "softmax" else -np.inf)).all()
    np.testing.assert_array_equal(f(np.asfortranarray(x)), got)
    inplace = x.copy()
    f(inplace, out=inplace)
    np.testing.assert_array_equal(inplace, got)
    # A threshold of 1 MiB puts these outputs past it, and softmax's kept
    # rows in flight too (under it they would keep their exps in a scratch
    # row; past it they compute them again). Rows past CSM_LONG_KEEP run in
    # slices of one row (so that Ctrl-C is heard, _cpu.pyx), each on one
    # thread: here one thread streams.
    out = np.empty_like(x)
    before = _engine.streamed_blocks()
    old = _engine.set_stream_threads(1 if length == "past_keep" else _engine.stream_threads())
    old_bytes = _engine.set_stream_bytes(1 << 20)
    try:
        f(x, out=out, num_threads=2)
    finally:
        _engine.set_stream_threads(old)
        _engine.set_stream_bytes(old_bytes)
    assert _engine.streamed_blocks() > before
    np.testing.assert_array_equal(out, got)


@pytest.mark.parametrize("fn, length, dtype", [("log_softmax", "past_l2", "float32"),
                                               ("log_softmax", "past_l2", "float64"),
                                               ("softmax", "past_keep", "float32"),
                                               ("softmax", "kept", "float32"),
                                               ("softmax", "kept_again", "float32"),
                                               ("softmax", "kept_again", "float64")])
def test_streamed_long_rows_give_the_bits_of_regular_stores_at_every_alignment(isa, fn, length, dtype):
    # A long row streams its output from the registers: regular stores up
    # to the first aligned element and after the last whole register.
    # log_softmax's rows and softmax's past CSM_LONG_KEEP hold one max and
    # scale for the whole row; softmax's kept rows (of up to CSM_LONG_KEEP
    # elements) one per chunk, from their exps in a scratch row where the
    # rows in flight fit under the streaming threshold ("kept": float32, two
    # threads), else computed again from x ("kept_again"). At every element
    # offset in a cache line, rows of odd length (each row starts at another
    # alignment; a register crosses each chunk's end), the bits must be
    # those of regular stores, and nothing outside the output may change.
    from csoftmax import _engine

    itemsize = np.dtype(dtype).itemsize
    k = (_engine.CONSTANTS["long_keep"] if length == "past_keep"
         else _engine.CONSTANTS["long_row_bytes"] // itemsize) + 13
    n = {"past_keep": 1, "past_l2": 3}.get(length, 5)
    x = (np.random.default_rng(4).standard_normal((n, k)) * 3).astype(dtype)
    x[0, -1] = 40.0
    x[n - 1, 3] = -np.inf
    if n > 1:
        x[1, ::5] = np.linspace(-80, 80, x[1, ::5].size)  # the max grows chunk by chunk
    f = getattr(csoftmax, fn)
    # The threshold: 0, or, for "kept", past the two rows in flight (their
    # inputs and kept exps) and under the output.
    threshold = 4 * k * itemsize + 64 if length == "kept" else 0
    old_bytes = _engine.set_stream_bytes(1 << 60)
    try:
        regular = f(x, num_threads=1)
        _engine.set_stream_bytes(threshold)
        old_threads = _engine.set_stream_threads(1)
        try:
            p = _engine.plan(fn, n, k, dtype, num_threads=2)
            assert p["stream"] and p["keep"] is (length == "kept")
            for off in range(64 // itemsize):
                before = _engine.streamed_blocks()
                buf = np.full(n * k + 64, 7.0, dtype)
                out = buf[off:off + n * k].reshape(n, k)
                f(x, out=out, num_threads=2)
                assert _engine.streamed_blocks() > before
                assert out.tobytes() == regular.tobytes(), off
                assert (buf[:off] == 7).all() and (buf[off + n * k:] == 7).all(), off
        finally:
            _engine.set_stream_threads(old_threads)
    finally:
        _engine.set_stream_bytes(old_bytes)


@pytest.mark.parametrize("num_threads", [1, 2])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_log_softmax_rows_past_l2_give_the_same_bits_with_the_output_pass_beside_the_next_row(
        isa, dtype, num_threads):
    # Streamed, log_softmax's rows past L2 write a row's output while the
    # row after it takes its max and sum, a block of rows at a time
    # (csm_out_pass_t). Rows of odd length start at every alignment; a row
    # of -inf (all NaN out), a NaN, a +inf and a max that grows chunk by
    # chunk sit between ordinary rows. Whatever the rows per block, the bits
    # must be those of each row alone and of regular stores, and nothing
    # outside the output may change.
    from csoftmax import _engine

    itemsize = np.dtype(dtype).itemsize
    k = _engine.CONSTANTS["long_row_bytes"] // itemsize + 13
    n = 7
    x = (np.random.default_rng(5).standard_normal((n, k)) * 3).astype(dtype)
    x[2] = -np.inf
    x[3, 100] = np.nan
    x[4, k // 2] = np.inf
    x[5, ::5] = np.linspace(-80, 80, x[5, ::5].size)
    old_bytes = _engine.set_stream_bytes(1 << 60)
    try:
        regular = csoftmax.log_softmax(x, num_threads=1)
        assert np.isnan(regular[2]).all() and np.isnan(regular[4]).all()
        _engine.set_stream_bytes(0)
        old_threads = _engine.set_stream_threads(1)
        try:
            for rows in (1, 2, 4, n):
                old_rows = _engine.set_long_pipe_rows(rows)
                try:
                    p = _engine.plan("log_softmax", n, k, dtype, num_threads=num_threads)
                    # an even share for each thread of the default team, up
                    # to rows; each row alone under AVX2 on one thread
                    team = max(_engine.max_threads(), 2)
                    solo = isa == "avx2" and p["threads"] == 1
                    assert p["stream"] and p["block"] == (1 if solo else min(rows, -(-n // team)))
                    for off in (0, 3):
                        buf = np.full(n * k + 64, 7.0, dtype)
                        out = buf[off:off + n * k].reshape(n, k)
                        csoftmax.log_softmax(x, out=out, num_threads=num_threads)
                        assert out.tobytes() == regular.tobytes(), (rows, off)
                        assert (buf[:off] == 7).all() and (buf[off + n * k:] == 7).all(), (rows, off)
                finally:
                    _engine.set_long_pipe_rows(old_rows)
        finally:
            _engine.set_stream_threads(old_threads)
    finally:
        _engine.set_stream_bytes(old_bytes)


def test_rows_per_block_of_the_long_rows_must_be_positive():
    from csoftmax import _engine

    with pytest.raises(ValueError, match="rows must be >= 1"):
        _engine.set_long_pipe_rows(0)


def _chunk_rows(dtype):
    """Rows past L2 whose chunks (csm_long_max_sum: max and sum per chunk,
    rescaled as the max grows) hold hostile values, with a ragged last
    chunk; and whether each row's result is NaN throughout."""
    from csoftmax import _engine

    c = _engine.CONSTANTS["long_chunk"]
    k = _engine.CONSTANTS["long_row_bytes"] // np.dtype(dtype).itemsize + c // 2 + 3
    rng = np.random.default_rng(11)
    base = rng.standard_normal(k) * 3
    rows, nan_rows = [], []

    def add(r, nan=False):
        rows.append(r)
        nan_rows.append(nan)

    add(np.linspace(-60, 60, k) + base * 0.01)  # the max grows in every chunk
    add(np.linspace(60, -60, k) + base * 0.01)  # the first chunk's max stays
    r = base.copy(); r[:c] = -np.inf; add(r)  # a first chunk of -inf only
    r = base.copy(); r[3 * c:4 * c] = -np.inf; add(r)  # and one in the middle
    r = base.copy(); r[-5] = 1e30; r[7] = -1e30; add(r)  # one-hot in the last chunk
    r = base * 40; r[c + 1] = r[5 * c + 2] = r.max() + 1; add(r)  # two equal maxima; underflow
    r = np.full(k, -np.inf); r[c:2 * c] = np.nan; add(r, nan=True)  # NaN chunk, -inf elsewhere
    r = base.copy(); r[-2] = np.inf; add(r, nan=True)  # +inf in the last chunk
    r = base.copy(); r[2 * c + 9] = np.nan; add(r, nan=True)
    add(np.full(k, -np.inf), nan=True)
    # A fifth -inf at random (an input masked by -inf) and a stretch whose
    # exps are subnormal: chunks whose exps take the clamped form, and
    # (AVX2, AVX-512) whose minima choose it for the whole chunk.
    r = base.copy(); r[np.random.default_rng(12).random(k) < 0.2] = -np.inf; r[0] = 0; add(r)
    r = base.copy(); r[c // 2:c // 2 + 3 * c] = -80.0 if dtype == "float32" else -720.0; add(r)
    # After the first chunk, a chunk takes its exps against the max of the
    # chunks before it, in the read that finds its own max (csm_long_chunk);
    # a chunk with a new max takes them again against its own, and so does
    # every chunk after two such in a row, or after an exp past the normal
    # form. A chunk's exps kept against an older max would put its scale
    # below float32's normal range (subnormal) where its results are not.
    add(np.arange(k) // c * 30.0 + base * 0.01)  # 30 up in every chunk
    r = base.copy(); r[3 * c:] += 45; r[6 * c:] += 100; add(r)  # up in two chunks apart
    r = base.copy(); r[4 * c + 7] = -100; add(r)  # an exp past the normal form
    return np.array(rows).astype(dtype), np.array(nan_rows)


def _assert_close(fn, got, want, x, dtype):
    """got within the README's bound of the float64 want, rows without NaN."""
    tol = TOL if dtype == "float32" else 1e-13
    if fn == "softmax":
        # Far below the max, the rounding of x - max itself (|x - max| / 2
        # ulps of exp's argument) adds to the bound: the ramps reach -120.
        with np.errstate(invalid="ignore"):  # -inf - -inf where masked
            xm = np.abs(x.astype(np.float64) - np.max(x, axis=1, keepdims=True))
            bound = (tol + xm * np.finfo(dtype).eps / 2) * want
        normal = want > np.finfo(dtype).tiny
        assert np.all(np.abs(got - want)[normal] <= bound[normal])
        assert np.all(got[~normal] <= np.finfo(dtype).tiny)
    else:
        assert np.array_equal(got[np.isinf(want)], want[np.isinf(want)])
        ok = np.isfinite(want)
        assert np.max(np.abs(got[ok] - want[ok]) / np.maximum(np.abs(want[ok]), 1.0)) <= tol


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("fn", ["softmax", "log_softmax"])
def test_rows_past_l2_match_the_float64_reference_whatever_chunk_holds_the_max(isa, fn, dtype):
    x, nan_rows = _chunk_rows(dtype)
    f = getattr(csoftmax, fn)
    got = f(x).astype(np.float64)
    want = (ref_softmax if fn == "softmax" else ref_log_softmax)(x)
    assert np.isnan(got[nan_rows]).all()
    assert np.array_equal(np.isnan(got), np.isnan(want))
    fin = ~nan_rows
    _assert_close(fn, got[fin], want[fin], x[fin], dtype)
    # Every path that reaches a row past L2 gives its bits: Fortran order
    # and other strides (gathered rows), an all-true mask (the masked
    # kernels), two threads, and a streamed output (where softmax recomputes
    # the exps it would have kept in the output).
    np.testing.assert_array_equal(f(np.asfortranarray(x)), got.astype(dtype))
    np.testing.assert_array_equal(f(x[::-1, ::-1]), f(x[::-1, ::-1].copy()))
    np.testing.assert_array_equal(f(x, where=np.ones(x.shape, bool)), got.astype(dtype))
    np.testing.assert_array_equal(f(x, num_threads=2), got.astype(dtype))
    inplace = x.copy()
    f(inplace, out=inplace)
    np.testing.assert_array_equal(inplace, got.astype(dtype))
    from csoftmax import _engine

    streamed = np.full_like(x, 7)
    before = _engine.streamed_blocks()
    old_bytes, old_threads = _engine.set_stream_bytes(0), _engine.set_stream_threads(1)
    try:
        f(x, out=streamed, num_threads=2)
    finally:
        _engine.set_stream_bytes(old_bytes)
        _engine.set_stream_threads(old_threads)
    assert _engine.streamed_blocks() > before
    np.testing.assert_array_equal(streamed, got.astype(dtype))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_logsumexp_of_rows_past_l2_matches_the_float64_reference_whatever_chunk_holds_the_max(isa, dtype):
    # logsumexp's rows past L2 take their max and sum chunk by chunk as
    # softmax's do (csm_lse_long), with scipy's rules where the max is not
    # finite; every path to such a row gives its bits.
    import scipy.special

    x, _ = _chunk_rows(dtype)
    got = csoftmax.logsumexp(x)
    with np.errstate(all="ignore"):
        want = scipy.special.logsumexp(x.astype(np.float64), axis=-1)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    ok = ~np.isnan(want)
    assert np.array_equal(got[np.isinf(want)], want[np.isinf(want)])
    # log(S) within 7e-7 absolute (the blocked sum), then rounded to dtype
    tol = (2e-6, np.finfo(np.float32).eps) if dtype == "float32" else (1e-13, np.finfo(np.float64).eps)
    fin = ok & np.isfinite(want)
    assert np.all(np.abs(got[fin] - want[fin]) <= tol[0] + tol[1] * np.abs(want[fin]))
    np.testing.assert_array_equal(csoftmax.logsumexp(np.asfortranarray(x)), got)
    np.testing.assert_array_equal(csoftmax.logsumexp(x[::-1, ::-1]), csoftmax.logsumexp(x[::-1, ::-1].copy()))
    np.testing.assert_array_equal(csoftmax.logsumexp(x[::-1]), got[::-1])
    np.testing.assert_array_equal(csoftmax.logsumexp(x, where=np.ones(x.shape, bool)), got)
    np.testing.assert_array_equal(csoftmax.logsumexp(x, num_threads=2), got)
    np.testing.assert_array_equal(csoftmax.logsumexp(x.T, axis=0), got)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("fn", ["softmax", "log_softmax"])
def test_fortran_ordered_groups_of_rows_past_l2_give_the_bits_of_c_order(isa, fn, dtype):
    # Rows past L2 that are not contiguous are read a group at a time, chunk
    # by chunk (csm_long_rows_strided): in Fortran order sixteen rows at a
    # time through the lane layout's tiles and the rest one by one. Enough
    # rows that a thread's share holds a tile's sixteen and a remainder,
    # with special values, the max in the last chunk, and a row of -inf.
    from csoftmax import _engine

    itemsize = np.dtype(dtype).itemsize
    n = 2 * _engine.CONSTANTS["lanes"] + 7
    k = _engine.CONSTANTS["long_row_bytes"] // itemsize + 1000
    x = (np.random.default_rng(5).standard_normal((n, k)) * 3).astype(dtype)
    x[1, ::7] = -np.inf
    x[2, 5] = np.nan
    x[3, 9] = np.inf
    x[4] = -np.inf
    x[17, -3] = 1e30
    x[18, :-1] = -1e30
    f = getattr(csoftmax, fn)
    want = f(x)
    xf = np.asfortranarray(x)
    for threads in (1, 2):
        np.testing.assert_array_equal(f(xf, num_threads=threads), want)
        inplace = xf.copy(order="K")
        f(inplace, out=inplace, num_threads=threads)
        np.testing.assert_array_equal(inplace, want)
        c_out = np.empty_like(x)
        f(xf, out=c_out, num_threads=threads)
        np.testing.assert_array_equal(c_out, want)
        f_out = np.empty_like(xf)
        f(x, out=f_out, num_threads=threads)
        np.testing.assert_array_equal(f_out, want)
    np.testing.assert_array_equal(f(xf[::-1, ::-1]), f(x[::-1, ::-1].copy()))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fortran_ordered_groups_of_rows_past_l2_give_logsumexp_the_bits_of_c_order(isa, dtype):
    # logsumexp's interleaved rows past L2 go a group at a time
    # (csm_long_lse_strided): the max from one gathering read, the sum
    # carried from chunk to chunk in a second, scipy's rules for rows whose
    # max is not finite.
    from csoftmax import _engine

    itemsize = np.dtype(dtype).itemsize
    n = 2 * _engine.CONSTANTS["lanes"] + 7
    k = _engine.CONSTANTS["long_row_bytes"] // itemsize + 1000
    x = (np.random.default_rng(6).standard_normal((n, k)) * 3).astype(dtype)
    x[1, 5] = np.inf
    x[2] = -np.inf
    x[3, 7] = np.nan
    x[4, ::3] = -np.inf
    x[5] = -np.inf
    x[5, -2] = np.nan
    x[6, -1] = np.inf
    x[6, 3] = np.nan
    x[17, -3] = 1e30
    want = csoftmax.logsumexp(x)
    assert np.isnan(want[[3, 5, 6]]).all() and want[1] == np.inf and want[2] == -np.inf
    np.testing.assert_allclose(want[17], 1e30 if dtype == "float64" else np.float32(1e30))
    xf = np.asfortranarray(x)
    for threads in (1, 2):
        np.testing.assert_array_equal(csoftmax.logsumexp(xf, num_threads=threads), want)
    np.testing.assert_array_equal(csoftmax.logsumexp(xf[::-1]), want[::-1])
    np.testing.assert_array_equal(csoftmax.logsumexp(x.T, axis=0), want)


def _bits(a):
    a = np.ascontiguousarray(a)
    return a.view(np.uint32 if a.dtype == np.float32 else np.uint64)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("fn", ["softmax_backward", "log_softmax_backward"])
def test_fortran_ordered_groups_of_rows_past_l2_give_the_backward_passes_the_bits_of_c_order(
        isa, fn, dtype):
    # The backward passes' interleaved rows past L2 go a group at a time,
    # chunk by chunk (csm_long_bwd_strided): the dot product's (or the sum's)
    # sixteen partials carried from chunk to chunk, the output element by
    # element. The bits, signed zeros and NaNs included, are C order's: with
    # NaN and +-inf in g, -inf and NaN in y, rows of zeros (-0 sums), y > 0
    # in a log_softmax row (the whole exp), a row's last chunk short of a
    # whole vector; y and g in either order, in place, 1 and 2 threads.
    from csoftmax import _engine

    itemsize = np.dtype(dtype).itemsize
    n = 2 * _engine.CONSTANTS["lanes"] + 7
    k = _engine.CONSTANTS["long_row_bytes"] // itemsize + 1000 + 7
    rng = np.random.default_rng(13)
    x = (rng.standard_normal((n, k)) * 3).astype(dtype)
    y = csoftmax.softmax(x) if fn == "softmax_backward" else csoftmax.log_softmax(x)
    g = rng.standard_normal((n, k)).astype(dtype)
    g[1, 5] = np.nan
    g[2, -3] = np.inf
    y[3, 7] = np.nan
    y[4, ::9] = -np.inf if fn == "log_softmax_backward" else 0.0
    y[5] = -0.0
    g[6] = -0.0
    y[7, 11] = 2.0  # not a log_softmax output: the whole exp
    f = getattr(csoftmax, fn)
    want = _bits(f(y, g))
    yf, gf = np.asfortranarray(y), np.asfortranarray(g)
    for threads in (1, 2):
        for a, b in ((yf, gf), (yf, g), (y, gf)):
            np.testing.assert_array_equal(_bits(f(a, b, num_threads=threads)), want)
        out = np.empty_like(yf)
        f(y, g, out=out, num_threads=threads)
        np.testing.assert_array_equal(_bits(out), want)
        inplace = gf.copy(order="F")
        f(yf, inplace, out=inplace, num_threads=threads)
        np.testing.assert_array_equal(_bits(inplace), want)
    np.testing.assert_array_equal(_bits(f(yf[::-1], gf[::-1])), want[::-1])


@pytest.mark.parametrize("fn", ["softmax", "log_softmax"])
def test_masked_rows_past_l2_match_the_masked_reference(isa, fn):
    from csoftmax import _engine

    c = _engine.CONSTANTS["long_chunk"]
    x, nan_rows = _chunk_rows("float32")
    x = x[~nan_rows][:4].copy()
    w = np.random.default_rng(12).random(x.shape) > 0.3
    w[0, -c:] = False  # the row's max masked away with its chunk
    w[1, :c] = False  # a first chunk with nothing unmasked
    w[2] = False  # a row with nothing unmasked
    x[3, ~w[3]] = np.nan  # NaN and +inf under the mask take no part
    x[3, np.flatnonzero(~w[3])[:9]] = np.inf
    got = getattr(csoftmax, fn)(x, where=w).astype(np.float64)
    want = (ref_softmax if fn == "softmax" else ref_log_softmax)(x, where=w)
    assert not np.isnan(got).any()
    assert np.array_equal(got[~w], want[~w])  # exact 0 or -inf
    assert np.array_equal(np.isinf(got), np.isinf(want))
    _assert_close(fn, got, want, np.where(w, x, -np.inf), "float32")
