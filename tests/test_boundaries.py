"""The engine's thresholds, tested where they sit: each boundary is read from
the build (csoftmax._engine.CONSTANTS), the path a call takes is observed
(csoftmax._engine.plan), and the results on both sides are checked."""
import os
import re
import sys
import time

import numpy as np
import pytest

import csoftmax
from csoftmax import _engine
from conftest import ref_log_softmax, ref_softmax

C = _engine.CONSTANTS


@pytest.mark.parametrize("fn", ["softmax", "log_softmax"])
def test_small_row_cutoff_is_where_the_path_changes(fn, isa):
    # K = 32 takes the row kernels where they have masked tails (AVX2,
    # AVX-512); the baseline ISA keeps it on the lanes.
    k = C["small_k"] if isa == "baseline" else C["small_fwd_k"]
    assert _engine.plan(fn, 64, k)["path"] == "small rows"
    assert _engine.plan(fn, 64, k + 1)["path"] == "rows"
    ref = {"softmax": ref_softmax, "log_softmax": ref_log_softmax}[fn]
    for kk in (k - 1, k, k + 1):
        x = np.random.default_rng(kk).standard_normal((C["lanes"] * 2 + 3, kk)) * 3
        got = getattr(csoftmax, fn)(x)
        np.testing.assert_allclose(got, ref(x), rtol=1e-12, atol=1e-15)
        # Both sides of the boundary give the bits of the lane kernels.
        np.testing.assert_array_equal(getattr(csoftmax, fn)(np.asfortranarray(x)), got)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("fn", ["softmax", "log_softmax"])
def test_short_rows_in_groups_give_the_bits_of_a_row_alone(fn, dtype, isa):
    # Short rows move into the lane layout and back a group at a time (in
    # register tiles under AVX2 and AVX-512, with a row's last piece masked),
    # and a row alone element by element: every K has its own unrolled
    # moves, and a misplaced element changes a row's bits. Each row must
    # give its bits alone, and those of Fortran order's lane path.
    f = getattr(csoftmax, fn)
    rng = np.random.default_rng(11)
    n = C["lanes"] * 2 + 3
    for k in range(1, C["small_k"] + 1):
        x = (rng.standard_normal((n, k)) * 4).astype(dtype)
        x[1, -1] = -np.inf
        x[4, 0] = np.nan
        got = f(x)
        alone = np.concatenate([f(x[i:i + 1]) for i in range(n)])
        assert alone.tobytes() == got.tobytes(), k
        assert f(np.asfortranarray(x)).tobytes() == got.tobytes(), k


def test_non_unit_column_strides_take_the_lane_path():
    assert _engine.plan("softmax", 100, 1000, unit_columns=False)["path"] == "lanes"
    assert _engine.plan("softmax_backward", 100, 7, unit_columns=False)["path"] == "lanes"
    # K = 1: every stride is a unit stride.
    assert _engine.plan("softmax", 100, 1, unit_columns=False)["path"] != "lanes"


def _vec_bwd_hi(isa, dtype):
    return C["vec_bwd_k_avx2_f64"] if (isa, dtype) == ("avx2", "float64") else C["vec_bwd_k"]


def _short_backward_path(k, isa, dtype):
    """The path a C-ordered backward call with rows of k takes under isa."""
    if isa != "baseline" and C["vec_bwd_min"] <= k <= _vec_bwd_hi(isa, dtype):
        return "row vectors"
    return "small rows" if k <= C["small_bwd_k"] else "rows"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("fn", ["softmax_backward", "log_softmax_backward"])
def test_short_backward_rows_give_the_bits_of_every_other_path(fn, dtype, isa):
    # Short rows of the backward passes are summed across SIMD lanes (the
    # lane path) or across one row's registers (the row-vector path of AVX2
    # and AVX-512): the bits must be those of the lane kernels of Fortran
    # order, of a row computed alone (padded into a group), and of the masked
    # kernels with an all-true mask, on each side of every cutoff.
    k, lo, hi = C["small_bwd_k"], C["vec_bwd_min"], _vec_bwd_hi(isa, dtype)
    for kk in (lo - 1, lo, k, k + 1, hi, hi + 1, C["vec_bwd_k"], C["vec_bwd_k"] + 1):
        assert _engine.plan(fn, 64, kk, dtype)["path"] == _short_backward_path(kk, isa, dtype)
    f = getattr(csoftmax, fn)
    fwd = csoftmax.log_softmax if fn.startswith("log") else csoftmax.softmax
    rng = np.random.default_rng(7)
    for kk in (1, lo - 1, lo, 7, k, k + 1, 16, 17, 29, hi, hi + 1, C["vec_bwd_k"], C["vec_bwd_k"] + 1):
        n = C["lanes"] * 2 + 3
        x = (rng.standard_normal((n, kk)) * 4).astype(dtype)
        x[1, 0] = -np.inf
        y, g = fwd(x), rng.standard_normal((n, kk)).astype(dtype)
        g[2, :] = -0.0
        got = f(y, g)
        ref = (y.astype(np.float64) * (g - (g.astype(np.float64) * y).sum(-1, keepdims=True))
               if fn == "softmax_backward" else
               g - np.exp(y.astype(np.float64)) * g.astype(np.float64).sum(-1, keepdims=True))
        np.testing.assert_allclose(got, ref, rtol=2e-6 if dtype == "float32" else 1e-13,
                                   atol=1e-6 if dtype == "float32" else 1e-14)
        np.testing.assert_array_equal(f(np.asfortranarray(y), np.asfortranarray(g)), got)
        alone = np.concatenate([f(y[i:i + 1], g[i:i + 1]) for i in range(n)])
        np.testing.assert_array_equal(alone.view(np.uint8), got.view(np.uint8))
        where = np.ones((n, kk), bool)
        np.testing.assert_array_equal(f(y, g, where=where).view(np.uint8), got.view(np.uint8))


@pytest.mark.parametrize("k", [10, 100, 1000])
@pytest.mark.parametrize("fn", ["softmax", "softmax_backward", "log_softmax_backward", "logsumexp"])
def test_parallel_grain_is_where_threads_start(fn, k):
    # Work is (elements + row_cost per row) times the op's cost in the
    # registry: 2 for a few additions per element, 3 for an exp.
    cost = _engine.OPS[fn]["cost"]
    assert cost == (2 if fn == "softmax_backward" else 3)
    rows = -(-C["parallel_grain"] // ((k + C["row_cost"]) * cost))  # the fewest that go parallel
    assert _engine.plan(fn, rows - 1, k, num_threads=2)["threads"] == 1
    at = _engine.plan(fn, rows, k, num_threads=2)
    assert at["threads"] == 2 and at["n_blocks"] >= 2
    rng = np.random.default_rng(0)
    x = rng.standard_normal((rows, k))
    fwd = csoftmax.log_softmax if fn.startswith("log_") else csoftmax.softmax
    args = (x,) if fn in ("softmax", "logsumexp") else (fwd(x), rng.standard_normal(x.shape))
    f = getattr(csoftmax, fn)
    np.testing.assert_array_equal(f(*args, num_threads=2), f(*args, num_threads=1))


@pytest.mark.parametrize("fn", ["softmax", "softmax_backward", "log_softmax_backward"])
def test_mid_size_calls_take_the_team_only_within_a_burst(fn):
    # Work between the parallel grain and the wake grain: two threads within
    # a burst of calls, the calling thread alone for an isolated call (the
    # team would have to wake up); larger work takes the team either way.
    cost, k = _engine.OPS[fn]["cost"], 100
    mid = C["parallel_grain"] * 4 // ((k + C["row_cost"]) * cost)
    large = -(-C["wake_grain"] // ((k + C["row_cost"]) * cost))
    for unit in (True, False):  # the row kernels, and the lanes of strided and Fortran rows
        assert _engine.plan(fn, mid, k, num_threads=2, burst=True, unit_columns=unit)["threads"] == 2
        assert _engine.plan(fn, mid, k, num_threads=2, burst=False, unit_columns=unit)["threads"] == 1
        assert _engine.plan(fn, large - 1, k, num_threads=2, burst=False, unit_columns=unit)["threads"] == 1
        for burst in (True, False, None):
            assert _engine.plan(fn, large, k, num_threads=2, burst=burst, unit_columns=unit)["threads"] == 2
    # As the engine sees it: a pause longer than burst_s ends a burst.
    time.sleep(max(10 * C["burst_s"], 0.002))
    assert _engine.plan(fn, mid, k, num_threads=2, burst=None)["threads"] == 1
    # A call of at least the parallel grain starts one (retried: a descheduled
    # test process may take longer than burst_s between the two lines).
    x = np.random.default_rng(1).standard_normal((mid, k))
    args = (x,) if fn == "softmax" else (csoftmax.softmax(x), x)
    f = getattr(csoftmax, fn)
    seen = set()
    for _ in range(20):
        f(*args, num_threads=2)
        seen.add(_engine.plan(fn, mid, k, num_threads=2, burst=None)["threads"])
        if 2 in seen:
            break
    assert 2 in seen
    # The results are the same either way, in C and in Fortran order.
    got = f(*args, num_threads=1)
    np.testing.assert_array_equal(f(*args, num_threads=2), got)
    np.testing.assert_array_equal(f(*map(np.asfortranarray, args), num_threads=2), got)


def test_streaming_threshold_follows_the_last_level_cache_and_the_cpu():
    # Twice the LLC on an AMD CPU with AVX-512, from two threads on Zen 5
    # (family 0x1A) and later, from one on Zen 4 (0x19); one LLC at any
    # thread count on the other x86-64 CPUs (where streaming measured
    # faster). An LLC counts for at most 64 MiB (a server's shared L3).
    llc = _engine._llc_bytes()
    widest = _engine.supported_isas()[-1]
    one_llc = widest == "avx2" or (widest == "avx512" and not _engine._cpu_is_amd())
    if widest != "baseline" and os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            info = f.read()
        assert _engine._cpu_is_amd() == ("AuthenticAMD" in info)
        families = re.findall(r"^cpu family\s*:\s*(\d+)", info, re.M)
        if families:
            assert _engine._cpu_family() == int(families[0])
    assert _engine._stream_llc_bytes() == min(llc or 8 << 20, 64 << 20)
    assert _engine.stream_bytes() == (1 if one_llc else 2) * min(llc or 8 << 20, 64 << 20)
    assert _engine.stream_threads() == (1 if one_llc or _engine._cpu_family() < 0x1A else 2)
    # log_softmax's long rows stream from one LLC under either rule.
    assert _engine.long_stream_bytes() == _engine._stream_llc_bytes()
    if sys.platform.startswith("linux") and os.path.isdir("/sys/devices/system/cpu/cpu0/cache"):
        assert llc >= 1 << 20  # every x86-64 or arm64 Linux machine has an MiB of cache
    with pytest.raises(ValueError, match="nbytes"):
        _engine.set_stream_bytes(-1)
    with pytest.raises(ValueError, match="threads"):
        _engine.set_stream_threads(0)


@pytest.mark.parametrize("dtype,itemsize", [("float32", 4), ("float64", 8)])
def test_streaming_threshold_is_where_streaming_starts(dtype, itemsize, stream_at_8mib):
    elems = stream_at_8mib // itemsize
    k = 1000  # (softmax_backward: the ops bound by their exps keep regular stores)
    # softmax_backward weighs its two inputs with its output: n_at rows of
    # the three fit; one more is past the threshold. The Jacobian counts its
    # output alone.
    n_at = elems // (3 * k)
    assert not _engine.plan("softmax_backward", n_at, k, dtype, num_threads=2)["stream"]
    assert _engine.plan("softmax_backward", n_at + 1, k, dtype, num_threads=2)["stream"]
    # log_softmax weighs its input with its output where its rows stream
    # from the registers: under a register form, past the short rows.
    kl = 1024
    nl_at = elems // (2 * kl)  # (input and output: exactly the threshold, where streaming starts)
    reg_form = _engine.isa() != "baseline"
    assert not _engine.plan("log_softmax", nl_at - 1, kl, dtype, num_threads=2)["stream"]
    assert _engine.plan("log_softmax", nl_at, kl, dtype, num_threads=2)["stream"] is reg_form
    # Rows of any K of a register or more stream where they follow one
    # another in the output; rows apart must be whole registers.
    assert not _engine.plan("log_softmax", 4 * nl_at, kl + 1, dtype, num_threads=2,
                            packed_out=False)["stream"]
    assert _engine.plan("log_softmax", 4 * nl_at, kl + 1, dtype, num_threads=2)["stream"] is reg_form
    assert not _engine.plan("log_softmax", 4 * elems // 24, 24, dtype, num_threads=2)["stream"]
    kj = 40
    nj_at = elems // (kj * kj)
    assert not _engine.plan("softmax_jacobian", nj_at, kj, dtype, num_threads=2)["stream"]
    assert _engine.plan("softmax_jacobian", nj_at + 1, kj, dtype, num_threads=2)["stream"]
    # Where two threads is the least that streams (the fixture's rule), one
    # thread writes with regular stores at any size (bench_streaming.py).
    assert not _engine.plan("softmax_backward", n_at + 1, k, dtype, num_threads=1)["stream"]
    old = _engine.set_stream_threads(1)
    try:
        assert _engine.plan("softmax_backward", n_at + 1, k, dtype, num_threads=1)["stream"]
    finally:
        _engine.set_stream_threads(old)
    # A freshly allocated output never streams: its pages were just zeroed
    # into the cache.
    assert not _engine.plan("softmax_backward", n_at + 1, k, dtype, fresh_out=True, num_threads=2)["stream"]
    # An output that fits in the LLC stays there.
    _engine.set_stream_bytes(1 << 30)
    assert not _engine.plan("softmax_backward", n_at + 1, k, dtype, num_threads=2)["stream"]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("halved", [False, True])
def test_long_log_softmax_rows_stream_from_the_long_rows_threshold(dtype, halved, stream_at_8mib):
    # log_softmax's rows past L2 (and softmax's past the kept length) stream
    # from long_stream_bytes(): the threshold itself, or half of it where the
    # threshold is two LLCs. softmax's kept rows keep the threshold.
    itemsize = np.dtype(dtype).itemsize
    old = _engine._set_long_stream_div(2 if halved else 1)
    try:
        at = _engine.long_stream_bytes()
        assert at == stream_at_8mib // (2 if halved else 1)
        k = _engine.CONSTANTS["long_row_bytes"] // itemsize + 64
        n_at = -(-at // (k * itemsize))  # the fewest rows whose output reaches it
        assert not _engine.plan("log_softmax", n_at - 1, k, dtype, num_threads=2)["stream"]
        assert _engine.plan("log_softmax", n_at, k, dtype, num_threads=2)["stream"]
        # A freshly allocated output never streams.
        assert not _engine.plan("log_softmax", n_at, k, dtype, fresh_out=True, num_threads=2)["stream"]
        n_sm = -(-stream_at_8mib // (k * itemsize))
        if halved:
            assert not _engine.plan("softmax", n_sm - 1, k, dtype, num_threads=2)["stream"]
        # Rows past the kept length (each past any threshold here) stream as
        # log_softmax's do.
        kp = _engine.CONSTANTS["long_keep"] + 16
        assert _engine.plan("softmax", 2, kp, dtype, num_threads=2)["stream"]
    finally:
        _engine._set_long_stream_div(old)


@pytest.mark.parametrize("order", ["C", "F", "strided"])
@pytest.mark.parametrize("threads", [1, 2])
def test_long_log_softmax_rows_streamed_at_the_halved_threshold_give_the_regular_bits(
        isa, threads, order, stream_at_8mib):
    # Where the threshold is two LLCs, log_softmax's long rows stream from
    # half of it: at that size, with the plan's own thresholds (not forced
    # to 0), a reused output streams and holds the bits of regular stores,
    # in every layout (Fortran order and strided rows take the gathered
    # path, which writes with regular stores).
    old_div, old_threads = _engine._set_long_stream_div(2), _engine.set_stream_threads(1)
    try:
        k = _engine.CONSTANTS["long_row_bytes"] // 4 + 64
        n = -(-_engine.long_stream_bytes() // (k * 4))
        x = (np.random.default_rng(9).standard_normal((n, 2 * k)) * 5).astype(np.float32)
        x[1, 100:3000] = -np.inf
        x = {"C": np.ascontiguousarray(x[:, :k]), "F": np.asfortranarray(x[:, :k]),
             "strided": x[:, ::2]}[order]
        old_bytes = _engine.set_stream_bytes(1 << 60)
        try:
            regular = csoftmax.log_softmax(x, num_threads=threads)
        finally:
            _engine.set_stream_bytes(old_bytes)
        out = np.empty(x.shape, np.float32, order="F" if order == "F" else "C")
        before = _engine.streamed_blocks()
        csoftmax.log_softmax(x, out=out, num_threads=threads)
        if order == "C":
            assert _engine.streamed_blocks() > before
        np.testing.assert_array_equal(out, regular, strict=True)
        np.testing.assert_allclose(regular, ref_log_softmax(x), rtol=2e-6, atol=2e-6)
    finally:
        _engine._set_long_stream_div(old_div)
        _engine.set_stream_threads(old_threads)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("threads", [1, 2])
def test_long_softmax_rows_keep_their_exps_where_the_rows_in_flight_fit_the_llc(threads, dtype, stream_at_8mib):
    # softmax's long rows keep their exps while the rows in flight (one per
    # thread, input and exps) take under the streaming threshold: in the
    # output, which keeps regular stores, or, for float32 on two threads or
    # more, in a scratch row while the output streams ("keep"). Past it they
    # stream and compute their exps again. log_softmax's long rows compute
    # once and stream as every other op does.
    itemsize = np.dtype(dtype).itemsize
    old = _engine.set_stream_threads(1)
    try:
        for k in (C["long_row_bytes"] // itemsize + 1, 1 << 19, 1 << 20, 1 << 21, C["long_keep"],
                  C["long_keep"] + 1):
            n = max(2 * threads, 2 * stream_at_8mib // (itemsize * k) + 1)  # past the threshold
            fits = k <= C["long_keep"] and 2 * k * itemsize * threads < stream_at_8mib
            scratch = fits and threads >= 2 and dtype == "float32"
            p = _engine.plan("softmax", n, k, dtype, num_threads=threads)
            assert p["threads"] == threads
            assert p["stream"] is (scratch or not fits) and p["keep"] is scratch, k
            lp = _engine.plan("log_softmax", n, k, dtype, num_threads=threads)
            assert lp["stream"] and not lp["keep"]
            # A fresh output never streams, and so never keeps.
            fresh = _engine.plan("softmax", n, k, dtype, fresh_out=True, num_threads=threads)
            assert not fresh["stream"] and not fresh["keep"]
        # Rows of up to CSM_LONG_ROW are bound by their exps, and keep
        # regular stores at any size (set_stream_exp_ops), but for rows that
        # stream from a ring of their exps: rows that follow one another in
        # the output, or rows of whole registers (K = 1001 apart: neither).
        short = _engine.plan("softmax", stream_at_8mib // (1001 * itemsize) + 1, 1001, dtype,
                             num_threads=threads, packed_out=False)
        assert not short["stream"] and not short["keep"]
    finally:
        _engine.set_stream_threads(old)


def test_log_softmax_rows_past_l2_run_alone_under_avx2_on_one_thread():
    # log_softmax's rows past L2 run their output pass beside the next row's
    # first pass, within blocks of up to four rows; under the AVX2 kernels on
    # one thread each row runs alone (_solo_rows). The bits are the same.
    k = C["long_row_bytes"] // 4 + 1
    # blocks of up to four rows, an even share for each thread of the default team
    team = max(_engine.max_threads(), 2)
    shared = min(4, -(-8 // team))
    before = _engine.isa()
    try:
        for isa in _engine.supported_isas():
            _engine.select_isa(isa)
            for threads in (1, 2):
                p = _engine.plan("log_softmax", 8, k, "float32", num_threads=threads)
                assert p["threads"] == threads
                block = 1 if isa == "avx2" and threads == 1 else shared
                assert (p["block"], p["n_blocks"]) == (block, -(-8 // block)), (isa, threads)
                # softmax's long rows keep their exps and never pipeline
                assert _engine.plan("softmax", 8, k, "float32", num_threads=threads)["block"] == 1
    finally:
        _engine.select_isa(before)


def _even_blocks(n, block):
    # The block count rounded up to a multiple of the default team, the rows
    # spread evenly over the blocks.
    nb, team = -(-n // block), C["team"]
    if nb > 1 and nb % team:
        nb += team - nb % team
        block = -(-n // nb)
    return block, -(-n // block)


@pytest.mark.parametrize("n, k", [(100, 100), (10000, 100), (16384, 1000), (100000, 64), (3, 50000),
                                  (1000, 100), (1024, 10)])
def test_blocks_depend_on_the_shape_and_layout_never_on_threads(n, k):
    # Row-kernel blocks: about n * k / block_share elements, within
    # [block_elems, block_max_elems], whole rows, at least one, then evened
    # out over the default team.
    elems = min(max(n * k // C["block_share"], C["block_elems"]), C["block_max_elems"])
    lane_blocks = set()
    for threads in (1, 2, 7):
        p = _engine.plan("softmax", n, k, num_threads=threads)
        assert (p["block"], p["n_blocks"]) == _even_blocks(n, max(elems // k, 1))
        lane_blocks.add(_engine.plan("softmax", n, k, unit_columns=False, num_threads=threads)["block"])
    assert len(lane_blocks) == 1


@pytest.mark.parametrize("op", ["softmax", "softmax_backward", "log_softmax"])
@pytest.mark.parametrize("n, k", [(1024, 10), (1000, 100), (2048, 24), (20000, 3), (5000, 10),
                                  (999, 7)])
@pytest.mark.parametrize("unit_columns", [True, False])
def test_blocks_share_evenly_over_the_default_team(op, n, k, unit_columns):
    # A multiple of the default team's size wherever there are more rows
    # (or lane groups) than blocks, so that no thread of the team is left
    # with a block more than another; a lane layout's blocks hold whole
    # groups.
    p = _engine.plan(op, n, k, unit_columns=unit_columns, num_threads=2)
    assert p["n_blocks"] == -(-n // p["block"]) > 1
    assert p["n_blocks"] % C["team"] == 0
    assert p["block"] % p["group"] == 0


def test_the_jacobian_streams_everywhere_but_on_a_zen_4():
    # AMD family 0x19 with AVX-512 is a Zen 4, where the Jacobian's regular
    # stores measured faster at every size (_engine.pyx); the Zen 3 (the same
    # family, no AVX-512) and every other CPU stream it as the other ops.
    zen4 = _engine._cpu_is_amd() and _engine._cpu_family() == 0x19 and "avx512" in _engine.supported_isas()
    assert _engine.stream_jacobian() is (not zen4)


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("threads", [1, 2])
def test_a_jacobian_that_may_not_stream_keeps_regular_stores_and_its_bits(isa, threads, order, stream_at_8mib):
    k = 40
    n = stream_at_8mib // (4 * k * k) + 1
    x = np.random.default_rng(2).standard_normal((n, k)).astype(np.float32)
    x[1] = -np.inf
    x[2, 3] = np.nan
    want = csoftmax.softmax_jacobian(x, num_threads=1)
    x = np.asarray(x, order=order)
    out = np.full((n, k, k), 7.0, np.float32)
    old_threads = _engine.set_stream_threads(1)
    try:
        assert _engine.plan("softmax_jacobian", n, k, "float32", num_threads=threads)["stream"]
        old = _engine.set_stream_jacobian(False)
        try:
            assert not _engine.plan("softmax_jacobian", n, k, "float32", num_threads=threads)["stream"]
            before = _engine.streamed_blocks()
            csoftmax.softmax_jacobian(x, out=out, num_threads=threads)
            assert _engine.streamed_blocks() == before
        finally:
            _engine.set_stream_jacobian(old)
    finally:
        _engine.set_stream_threads(old_threads)
    np.testing.assert_array_equal(out, want, strict=True)


@pytest.mark.parametrize("fn", ["softmax_backward", "softmax_jacobian"])
def test_large_reused_outputs_are_written_with_streaming_stores(fn, stream_at_8mib):
    # The kernels count the blocks they stream: a reused output past the
    # threshold written by two threads must stream; a fresh one, one below
    # the threshold or one written by one thread must not.
    k = 40 if fn == "softmax_jacobian" else 1000
    n = stream_at_8mib // (4 * (k * k if fn == "softmax_jacobian" else k)) + 1
    x = np.random.default_rng(1).standard_normal((n, k)).astype(np.float32)
    args = (csoftmax.softmax(x), x) if "backward" in fn else (x,)
    f = getattr(csoftmax, fn)
    out = f(*args)
    before = _engine.streamed_blocks()
    limit = csoftmax.set_output_cache(0)  # a fresh output: new pages
    try:
        f(*args)
    finally:
        csoftmax.set_output_cache(limit)
    assert _engine.streamed_blocks() == before
    # Below the threshold; softmax_backward counts its two inputs with its
    # output, and streams an output of half the threshold.
    below = n // 4 if "backward" in fn else n // 2
    f(*(a[:below] for a in args), out=out[:below], num_threads=2)
    assert _engine.streamed_blocks() == before
    if "backward" in fn:
        f(*(a[: n // 2] for a in args), out=out[: n // 2], num_threads=2)
        assert _engine.streamed_blocks() > before
        before = _engine.streamed_blocks()
    f(*args, out=out, num_threads=1)  # one thread
    assert _engine.streamed_blocks() == before
    f(*args, out=out, num_threads=2)
    assert _engine.streamed_blocks() > before
    # An allocating call that the output cache hands a block an earlier
    # output wrote (not fresh pages) streams as out= does.
    assert csoftmax.output_cache()["limit"] >= out.nbytes
    f(*args, num_threads=2)  # (a block of this size in the cache)
    before = _engine.streamed_blocks()
    hits = csoftmax.output_cache()["hits"]
    f(*args, num_threads=2)
    assert csoftmax.output_cache()["hits"] == hits + 1
    assert _engine.streamed_blocks() > before


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("fn", ["softmax", "log_softmax", "log_softmax_backward"])
def test_ops_bound_by_their_exps_stream_only_from_their_registers(fn, threads, isa, stream_at_8mib):
    # An exp per element hides the reads for ownership of regular stores,
    # and streaming's scratch pass only adds work: these outputs never
    # stream through it, however large, unless set_stream_exp_ops says so.
    # Under a register form their rows stream straight from the registers
    # instead (csm_nt_rows): rows of 1001 elements that follow one another
    # in the output do; the same rows apart (a wider array's columns) do
    # not, as they are not whole registers.
    k = 1001
    n = 4 * stream_at_8mib // (4 * k)  # four thresholds
    x = np.random.default_rng(2).standard_normal((n, k)).astype(np.float32)
    args = (csoftmax.log_softmax(x), x) if "backward" in fn else (x,)
    f = getattr(csoftmax, fn)
    want = f(*args)
    reg_form = isa != "baseline"
    old_threads = _engine.set_stream_threads(1)
    try:
        assert _engine.plan(fn, n, k, "float32", num_threads=threads)["stream"] is reg_form
        assert not _engine.plan(fn, n, k, "float32", num_threads=threads, packed_out=False)["stream"]
        before = _engine.streamed_blocks()
        apart = np.full((n, k + 7), 7, np.float32)[:, :k]
        f(*args, out=apart, num_threads=threads)
        assert _engine.streamed_blocks() == before
        np.testing.assert_array_equal(apart, want)
        out = np.full_like(want, 7)
        f(*args, out=out, num_threads=threads)
        assert (_engine.streamed_blocks() > before) is reg_form
        np.testing.assert_array_equal(out, want)
        assert not _engine.stream_exp_ops()
        if not reg_form:
            old = _engine.set_stream_exp_ops(True)
            try:
                assert _engine.plan(fn, n, k, "float32", num_threads=threads)["stream"]
                streamed = np.full_like(want, 7)
                f(*args, out=streamed, num_threads=threads)
                assert _engine.streamed_blocks() > before
            finally:
                _engine.set_stream_exp_ops(old)
            np.testing.assert_array_equal(streamed, want)
    finally:
        _engine.set_stream_threads(old_threads)
    # softmax_backward, two additions per element, streams the same output.
    assert _engine.plan("softmax_backward", n, k, "float32", num_threads=2)["stream"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_streams_only_rows_from_512_bytes_whose_ring_fits(dtype, isa, stream_at_8mib):
    # softmax's output streams from a ring of its exps (three rows or pairs
    # of rows in 24 KiB) only where that measured faster than regular
    # stores: rows of 512 bytes and more, up to the ring's size, under a
    # register ISA. Shorter rows and rows too long for the ring keep regular
    # stores however large the output, and so do rows that end in a partial
    # register where they do not follow one another in the output.
    C = _engine.CONSTANTS
    item = np.dtype(dtype).itemsize
    reg = (64 if isa == "avx512" else 32) // item  # elements per register
    first = C["softmax_nt_min_bytes"] // item
    last = C["softmax_nt_ring_bytes"] // (C["softmax_nt_groups"] * item)  # (past rows_at_once_k: one row)
    assert first < last and last > C["rows_at_once_k"]
    for k, streams in [(first, True), (first - reg, False), (first + 1, True), (last, True),
                       (last + reg, False), (first // 2, False)]:
        n = 4 * stream_at_8mib // (k * item) + 1
        got = _engine.plan("softmax", n, k, np.dtype(dtype).name, num_threads=2)["stream"]
        assert got == (streams and isa != "baseline"), (k, isa)
        apart = _engine.plan("softmax", n, k, np.dtype(dtype).name, num_threads=2, packed_out=False)
        assert apart["stream"] == (streams and isa != "baseline" and k % reg == 0), (k, isa)


def test_calls_past_l2_prefetch_and_calls_in_cache_do_not():
    l2 = _engine.prefetch_bytes()
    assert l2 == (_engine._CACHE_SIZES.get(2) or 1 << 20)
    k = 1000
    small = max(1, l2 // (8 * k * 4))  # input + output well inside L2
    large = l2 // (k * 4) + 1  # the input alone exceeds it
    assert not _engine.plan("softmax", small, k)["prefetch"]
    assert _engine.plan("softmax", large, k)["prefetch"]
    assert _engine.plan("log_softmax_backward", large, k)["prefetch"]
    # softmax_backward's dot product is bound by loads, which its prefetches
    # compete with: it prefetches past half the LLC (three operands of k
    # elements per row), kept as a multiple of the L2 threshold, at least 8;
    # never where the L1d is under 48 KiB (the multiple is 2^40 there).
    llc, l2_read = _engine._llc_bytes(), _engine._CACHE_SIZES.get(2)
    l1_small = 0 < _engine._CACHE_SIZES.get(1, 0) < 48 << 10
    times = 1 << 40 if l1_small else max(8, llc // (2 * l2_read)) if llc and l2_read else 8
    edge = times * l2 // (3 * k * 4)
    assert not _engine.plan("softmax_backward", large, k)["prefetch"]
    # softmax's long rows that keep their exps in the output take the L2
    # threshold with any L1d: a row just past 1 MiB (the kept rows' least)
    # prefetches where it and its output pass the L2.
    k_long = (1 << 18) + 1
    assert _engine.plan("softmax", 1, k_long)["prefetch"] == (2 * k_long * 4 > l2)
    assert _engine.plan("softmax", 8, 1 << 20)["prefetch"]
    assert _engine.plan("softmax", 8, 1 << 20, num_threads=2)["prefetch"]
    old = _engine.set_prefetch_bytes(1 << 62)
    try:
        assert not _engine.plan("softmax", 8, 1 << 20)["prefetch"]
    finally:
        _engine.set_prefetch_bytes(old)
    assert _engine.plan("log_softmax", 8, 1 << 20)["prefetch"]
    # The Jacobian, whose prefetches are of its output's next block, takes
    # softmax_backward's rule with such an L1d.
    assert _engine.plan("softmax_jacobian", 1000, 100)["prefetch"] == (not l1_small)
    if l1_small:
        assert not _engine.plan("softmax_backward", 1 << 30, k)["prefetch"]
        old = _engine.set_prefetch_bytes(0)
        try:
            assert _engine.plan("softmax_jacobian", 1000, 100)["prefetch"]
        finally:
            _engine.set_prefetch_bytes(old)
        return
    assert not _engine.plan("softmax_backward", edge, k)["prefetch"]
    assert _engine.plan("softmax_backward", edge + 1, k)["prefetch"]
    if llc and l2_read and llc >= 16 * l2_read:  # the threshold is half the LLC
        assert times * l2 <= llc // 2 < (times + 1) * l2


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("fn", ["softmax", "log_softmax", "softmax_backward",
                                "log_softmax_backward", "softmax_jacobian"])
@pytest.mark.parametrize("k", [40, 1000])
def test_prefetching_never_changes_a_bit(isa, fn, dtype, k, threads):
    # Prefetches (and the blocks they stop at) are hints: the same call with
    # them on (threshold 0) and off gives the same bits, in place and in
    # Fortran order too.
    n = (200 if k < 100 else 5) if fn == "softmax_jacobian" else 600
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((n, k)) * 4).astype(dtype)
    x[3, :5] = -np.inf
    args = (csoftmax.softmax(x), rng.standard_normal((n, k)).astype(dtype)) if "backward" in fn else (x,)
    f = getattr(csoftmax, fn)
    results = []
    for threshold in (0, 1 << 62):
        old = _engine.set_prefetch_bytes(threshold)
        try:
            assert _engine.plan(fn, n, k)["prefetch"] == (threshold == 0)
            out = f(*args, num_threads=threads)
            # Fortran order (the strided kernels) gives C order's bits too.
            np.testing.assert_array_equal(f(*map(np.asfortranarray, args), num_threads=threads), out,
                                          strict=True)
            inplace = args[0].copy()
            f(*((inplace,) + args[1:]), out=inplace, num_threads=threads) if fn != "softmax_jacobian" else None
        finally:
            _engine.set_prefetch_bytes(old)
        results.append((out, inplace))
    np.testing.assert_array_equal(results[0][0], results[1][0], strict=True)
    if fn != "softmax_jacobian":
        np.testing.assert_array_equal(results[0][1], results[1][1], strict=True)
        np.testing.assert_array_equal(results[0][0], results[0][1], strict=True)


def test_the_sums_widen_four_floats_at_a_time_only_on_a_zen_4():
    # A Zen 4 runs AVX-512 in 256-bit halves, where two 256-bit conversions
    # to double beat one 512-bit one (_engine.pyx); elsewhere the AVX-512
    # kernels convert eight floats at a time.
    zen4 = _engine._cpu_is_amd() and _engine._cpu_family() == 0x19 and "avx512" in _engine.supported_isas()
    assert _engine.widen_256() is zen4


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("fn", ["softmax_backward", "log_softmax_backward"])
@pytest.mark.parametrize("k", [16, 40, 128, 1000, (1 << 18) + 777])
def test_widening_four_floats_at_a_time_never_changes_a_bit(isa, fn, dtype, k, threads):
    # The backward ops' double sums widen float32 four or eight at a time
    # (_engine.set_widen_256) into the same partials in the same order: the
    # same bits, in C and Fortran order, in place, every other column, past
    # L2 (the chunked long rows), on every ISA; masked sums (a mask of the
    # columns, one per row) keep one form, so their bits cannot move either.
    n = 9 if k > 4096 else 300
    rng = np.random.default_rng(9)
    x = (rng.standard_normal((n, k)) * 4).astype(dtype)
    x[1, :5] = -np.inf
    y = getattr(csoftmax, fn.replace("_backward", ""))(x)
    g = rng.standard_normal((n, k)).astype(dtype)
    g[2, 7] = 1e30
    # Rows 4-8: y uniform, g ones but +1e20 and -1e20 at two places of each
    # block of 16 (the 16 partials), which cancel exactly only where the
    # partials' tree pairs them before the ones: another grouping of the
    # partials changes the result (by far more than a bit).
    for r, (a, b) in enumerate([(0, 8), (0, 4), (0, 2), (0, 1), (3, 12)], start=4):
        x[r] = 0
        g[r] = 1.0
        g[r, a::16] = 1e20
        g[r, b::16] = -1e20
    y[4:9] = getattr(csoftmax, fn.replace("_backward", ""))(x[4:9])
    # The mask keeps those places (and drops columns 5, 6, 14 of 16).
    where = ~np.isin(np.arange(k) % 16, [5, 6, 14])
    wide_y, wide_g = np.zeros((n, 2 * k), dtype), np.zeros((n, 2 * k), dtype)
    wide_y[:, ::2], wide_g[:, ::2] = y, g
    f = getattr(csoftmax, fn)
    got = []
    for flag in (False, True):
        old = _engine.set_widen_256(flag)
        try:
            out = f(y, g, num_threads=threads)
            inplace = g.copy()
            f(y, inplace, out=inplace, num_threads=threads)
            got.append((out, f(np.asfortranarray(y), np.asfortranarray(g), num_threads=threads), inplace,
                        f(wide_y[:, ::2], wide_g[:, ::2], num_threads=threads),
                        f(y, g, where=where, num_threads=threads),
                        f(y, g, where=np.tile(where, (n, 1)), num_threads=threads)))
        finally:
            _engine.set_widen_256(old)
    for a, b in zip(*got):
        np.testing.assert_array_equal(a, b, strict=True)
    for other in got[0][1:4]:  # Fortran order, in place, every other column
        np.testing.assert_array_equal(other, got[0][0], strict=True)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_long_kept_rows_give_the_same_bits_with_and_without_prefetches(isa, dtype, threads):
    # softmax's rows past L2 that keep their exps in the output prefetch
    # or not by the plan (never with a 32 KiB L1d unless the threshold is
    # forced to 0); the masked kernels' long rows always do.
    k = (1 << 20) // np.dtype(dtype).itemsize + 777
    rng = np.random.default_rng(8)
    x = (rng.standard_normal((3, k)) * 4).astype(dtype)
    x[1, 5000:9000] = -np.inf
    x[2, 123] = 80.0
    wide = np.zeros((3, 2 * k), dtype)
    wide[:, ::2] = x
    got = []
    for threshold in (0, 1 << 62):
        old = _engine.set_prefetch_bytes(threshold)
        try:
            got.append(csoftmax.softmax(x, num_threads=threads))
            # Every other column (gathered into a row, the same kernel) and
            # Fortran order (csm_long_rows_strided) give the C-order bits.
            np.testing.assert_array_equal(csoftmax.softmax(wide[:, ::2], num_threads=threads), got[-1],
                                          strict=True)
            np.testing.assert_array_equal(csoftmax.softmax(np.asfortranarray(x), num_threads=threads),
                                          got[-1], strict=True)
        finally:
            _engine.set_prefetch_bytes(old)
    np.testing.assert_array_equal(got[0], got[1], strict=True)
    np.testing.assert_array_equal(csoftmax.softmax(x, where=np.ones(k, bool)), got[0], strict=True)
    np.testing.assert_allclose(got[0], ref_softmax(x), rtol=2e-6 if dtype == np.float32 else 1e-13, atol=1e-30)


# Row lengths whose last elements fill less than the 16 partial sums of a row
# (every tail length, 1 .. 15, and none), and tails after whole 128-element
# blocks of softmax's blocked sum.
TAIL_KS = list(range(33, 50)) + [100, 129, 143, 1000, 1001]
TAIL_FNS = ["softmax", "log_softmax", "logsumexp", "softmax_backward", "log_softmax_backward"]


def _tail_inputs(fn, n, k, dtype, rng):
    """Rows whose hostile values sit in the tail: the max, NaN, +-inf, 1e30,
    subnormals and +-0 in the last elements."""
    x = (rng.standard_normal((n, k)) * 4).astype(dtype)
    tiny = np.finfo(dtype).tiny
    x[0, -1] = 50.0                   # the max in the tail
    x[1, -1] = np.nan
    x[2, -3:] = -np.inf
    x[3, -1] = np.inf
    x[4, -2:] = 1e30
    x[5, -5:] = tiny / 8
    x[6, :] = 0.0
    x[6, -3::2] = -0.0
    x[7, :-1] = -np.inf               # one finite element, the last
    x[8, -7:] = -200.0
    if fn in ("softmax_backward", "log_softmax_backward"):
        y = csoftmax.softmax(x) if fn == "softmax_backward" else csoftmax.log_softmax(x)
        g = rng.standard_normal((n, k)).astype(dtype)
        g[9, -1] = np.inf
        g[10, -4:] = -0.0
        return [y, g]
    return [x]


def _tree16(f):
    """CSM_TREE16 over partials f[..., 0..15], in f's dtype."""
    a = [f[..., p] for p in range(16)]
    return ((((a[0] + a[8]) + (a[4] + a[12])) + ((a[2] + a[10]) + (a[6] + a[14])))
            + (((a[1] + a[9]) + (a[5] + a[13])) + ((a[3] + a[11]) + (a[7] + a[15]))))


def _softmax_in_the_documented_order(x):
    """softmax of each row by the documented order of its sum (docs/design.md,
    "One order for every sum"): the kernels' own exp of x - max, element j
    to partial j % 16 within each block of 128, each partial in order of j,
    the block's partials by the fixed tree in the element type, the blocks'
    sums added in double in order, and the exps scaled by (T)(1 / sum)."""
    from csoftmax import _cpu
    dtype = x.dtype.type
    out = np.empty_like(x)
    for r, row in enumerate(x):
        d = (row - row.max()).astype(dtype)
        e = np.empty_like(d).reshape(1, -1)
        _cpu.run("exp_neg", np.ascontiguousarray(d).reshape(1, -1), None, e, 1)
        e = e.ravel()
        s = 0.0
        for b in range(0, len(e), 128):
            blk = e[b:b + 128]
            f = np.zeros(16, dtype)
            for j, v in enumerate(blk):
                f[j % 16] = dtype(f[j % 16] + v)
            s += float(_tree16(f))
        out[r] = e * dtype(1.0 / s)
    return out


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_sums_its_blocks_in_the_documented_order(dtype, threads, isa):
    # Rows of one and of several 128-element blocks, with a partial block
    # and a partial register at the end, C-contiguous, Fortran-ordered and
    # strided: the bits must be those of the order the design states (AVX2
    # adds a block's tree after the next block's loop; the order of the
    # adds is what must not change).
    rng = np.random.default_rng(23)
    for k in (129, 143, 256, 257, 1000, 1001, 4099):
        x = (rng.standard_normal((3, k)) * 3).astype(dtype)
        want = _softmax_in_the_documented_order(x)
        wide = np.zeros((3, 2 * k), dtype)
        wide[:, ::2] = x
        for src in (x, np.asfortranarray(x), wide[:, ::2]):
            got = csoftmax.softmax(src, num_threads=threads)
            np.testing.assert_array_equal(got, want, strict=True, err_msg=f"K = {k}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("fn", ["softmax", "log_softmax", "logsumexp"])
def test_rows_computed_together_give_the_bits_of_a_row_alone(fn, dtype, isa):
    # Under AVX2 and AVX-512, rows up to rows_at_once_k elements are computed
    # rows_at_once at a time, their registers interleaved, and each group's
    # maxima are taken during the group before it. A row's bits must not
    # depend on its neighbour (a NaN, -inf, +inf or 1e30 row beside a plain
    # one), on the group before it, or on whether it is the odd row out or
    # past log_softmax's chunk of 64 rows: every row of a batch must give
    # what the same row gives alone.
    C = _engine.CONSTANTS
    assert C["rows_at_once"] == 2
    f = getattr(csoftmax, fn)
    rng = np.random.default_rng(21)
    hi = C["rows_at_once_k"]
    for k in [C["small_fwd_k"] + 1, 48, 100, 129, hi, hi + 1]:
        (x,) = _tail_inputs(fn, 11, k, dtype, rng)
        x[9, :] = np.nan                  # whole hostile rows beside plain ones
        x[10, k // 2] = np.inf
        # 67 rows: the hostile rows in every position of a group, and a
        # chunk of 64 and a partial one after it.
        x = np.concatenate([x, x[rng.permutation(11)]] * 3 + [x[:1]])
        for n in (2, 3, 11, 67):
            got = f(x[:n], num_threads=1)
            alone = np.concatenate([f(x[i:i + 1], num_threads=1) for i in range(n)])
            assert got.tobytes() == alone.tobytes(), (fn, k, n)


def _nan_pairs(y, g):
    # Elements where two operands of the backward formula are NaN, or one
    # is and the row's sum is not: the NaN such an element takes must not
    # depend on the path (rows 3, 6 and 8 sum to NaN, rows 5 and 9 do not).
    y[3, 1] = np.nan                       # beside g's NaN row
    y[5, 2] = np.nan                       # alone in its row
    g[6, 0], g[6, 1], y[6, 2] = np.inf, -np.inf, np.nan
    g[8, 0], y[8, 1] = np.nan, -np.nan
    g[9, 0], y[9, 3], y[9, 4] = np.inf, -np.inf, np.nan


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("fn", ["softmax", "softmax_backward", "log_softmax", "log_softmax_backward"])
def test_streamed_rows_give_the_bits_of_regular_stores_at_every_alignment(fn, dtype, threads, isa):
    # softmax, softmax_backward, log_softmax and log_softmax_backward stream
    # their output from their registers where a row is a whole number of
    # registers (softmax from a ring of its exps, rows of 512 bytes and more,
    # one or two at a time: float64 K = 256 is two); an output that does not
    # start at a register's alignment takes each row boundary's elements in
    # one register across the two rows (log_softmax_backward computes it
    # from both rows' lanes at once, one exp for the two, where their exps
    # take the same form). At every element offset in a cache
    # line, in place over an input too, beside hostile rows (and, for
    # log_softmax_backward, a row of positive y, which takes regular stores
    # where its exp has no register form, and rows that sum to NaN), the
    # bits must be those of regular stores, and nothing outside the output
    # may change. (softmax's shorter rows and log_softmax_backward's under
    # 1 KiB stream here through the exp-bound ops' switch; log_softmax's
    # streamed rows go in chunks of about 4 KiB, so K = 128 and 256 take
    # several chunks of a few rows each.)
    rng = np.random.default_rng(23)
    sb, sth, sxo = _engine.stream_bytes(), _engine.stream_threads(), _engine.stream_exp_ops()
    lanes = 64 // np.dtype(dtype).itemsize
    streamed_before = _engine.streamed_blocks()
    f = getattr(csoftmax, fn)
    try:
        more = {"softmax": [256, 512], "log_softmax": [128, 256]}.get(fn, [])
        for k in [48, 64, 1000, 1024, 100, 1001] + more:
            n = 13 if k < 1000 else 101  # (101 rows: blocks of 6 rows on two threads)
            if "backward" in fn:
                ins = list(_tail_inputs(fn, n, k, dtype, rng))
                ins[1][3, :] = np.nan
                ins[1][5, k // 2] = 1e30
                ins[0][7, :] = 0.0 if fn == "softmax_backward" else 0.5
                _nan_pairs(*ins)
            else:
                ins = [(rng.standard_normal((n, k)) * 10).astype(dtype)]
                ins[0][3, :] = -np.inf
                ins[0][5, k // 2] = 1e30
                ins[0][7, 1] = np.nan
                ins[0][9, 2] = np.inf
            _engine.set_stream_bytes(1 << 60)
            regular = f(*ins, num_threads=1)
            _engine.set_stream_bytes(0)
            _engine.set_stream_threads(1)
            _engine.set_stream_exp_ops(fn in ("softmax", "log_softmax_backward"))
            for off in range(lanes):
                for into in [None] + list(range(len(ins))):  # out apart, or over input `into`
                    buf = np.full(n * k + 2 * lanes, 7.0, dtype)
                    o = buf[off:off + n * k].reshape(n, k)
                    args = list(ins)
                    if into is not None:
                        o[...] = ins[into]
                        args[into] = o
                    f(*args, out=o, num_threads=threads)
                    assert o.tobytes() == regular.tobytes(), (k, off, into)
                    assert (buf[:off] == 7).all() and (buf[off + n * k:] == 7).all(), (k, off, into)
            # Rows apart (a wider array's columns) that each start at a
            # register's alignment on whole cache lines stream too.
            ld = -(-k // lanes) * lanes + lanes
            raw = np.full(n * ld + lanes, 7.0, dtype)
            o0 = (-raw.ctypes.data % 64) // raw.itemsize
            wide = raw[o0:o0 + n * ld].reshape(n, ld)
            f(*ins, out=wide[:, :k], num_threads=threads)
            assert np.ascontiguousarray(wide[:, :k]).tobytes() == regular.tobytes(), (k, "rows apart")
            assert (wide[:, k:] == 7).all() and (raw[:o0] == 7).all() and (raw[o0 + n * ld:] == 7).all()
            _engine.set_stream_bytes(sb)
            _engine.set_stream_threads(sth)
            _engine.set_stream_exp_ops(sxo)
    finally:
        _engine.set_stream_bytes(sb)
        _engine.set_stream_threads(sth)
        _engine.set_stream_exp_ops(sxo)
    if fn == "softmax_backward" or isa != "baseline":  # (the others' baseline: regular stores)
        assert _engine.streamed_blocks() > streamed_before


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log_softmax_backward_row_whose_grad_sums_to_nan_is_the_quiet_nan(dtype, isa):
    # Every output of such a row is NaN; which NaN must not depend on the
    # path (short rows, vectors, rows, lanes, streamed, masked), whatever
    # NaNs of either sign its operands hold: the quiet NaN, +0 where masked.
    rng = np.random.default_rng(25)
    quiet = np.array(np.nan, dtype).tobytes()
    pf, st, sth, sxo = (_engine.prefetch_bytes(), _engine.stream_bytes(), _engine.stream_threads(),
                        _engine.stream_exp_ops())
    try:
        for k in [3, C["small_bwd_k"], C["vec_bwd_k"] + 1, 100, 1024]:
            y = csoftmax.log_softmax(rng.standard_normal((9, k)).astype(dtype))
            g = rng.standard_normal((9, k)).astype(dtype)
            g[1, 0], y[1, 1 % k] = np.nan, -np.nan
            g[3, 0], g[3, 1 % k], y[3, 2 % k] = np.inf, -np.inf, -np.nan
            g[5, 0], y[5, 0] = -np.nan, np.nan
            y[7, k - 1] = -np.nan                    # a NaN y alone: the row's other outputs finite
            where = np.ones((9, k), bool)
            where[5, k - 1] = k == 1
            for forced in (False, True):
                _engine.set_prefetch_bytes(0 if forced else pf)
                _engine.set_stream_bytes(0 if forced else st)
                _engine.set_stream_threads(1 if forced else sth)
                _engine.set_stream_exp_ops(forced)
                for threads in (1, 2):
                    outs = {"C": csoftmax.log_softmax_backward(y, g, num_threads=threads),
                            "F": csoftmax.log_softmax_backward(np.asfortranarray(y), np.asfortranarray(g),
                                                               num_threads=threads),
                            "where": csoftmax.log_softmax_backward(y, g, where=where, num_threads=threads)}
                    for name, o in outs.items():
                        for r in (1, 3, 5):
                            for j in range(k):
                                want = np.zeros((), dtype).tobytes() if not where[r, j] and name == "where" \
                                    else quiet
                                assert o[r, j].tobytes() == want, (name, k, r, j, forced, threads)
                        assert np.isfinite(np.delete(o[7], k - 1)).all() and np.isnan(o[7, k - 1])
                        assert np.isfinite(o[[0, 2, 4, 6, 8]]).all(), (name, k)
    finally:
        _engine.set_prefetch_bytes(pf)
        _engine.set_stream_bytes(st)
        _engine.set_stream_threads(sth)
        _engine.set_stream_exp_ops(sxo)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("fn", ["softmax_backward", "log_softmax_backward"])
def test_backward_rows_in_a_batch_give_the_bits_of_a_row_alone(fn, dtype, isa):
    # softmax_backward takes row r + 1's dot product in the loop that writes
    # row r in rows of up to bwd_pipe_bytes, and the two passes one after
    # the other in longer rows: each row's bits must still be those the row
    # gives alone (on either side of that length), beside
    # hostile rows, at any thread count, with prefetches and streaming stores
    # forced, with the output written over y or g, and with rows strided
    # (views into wider arrays) or in Fortran order.
    f = getattr(csoftmax, fn)
    rng = np.random.default_rng(22)
    pf, st, sth = _engine.prefetch_bytes(), _engine.stream_bytes(), _engine.stream_threads()
    try:
        pipe_k = C["bwd_pipe_bytes"] // np.dtype(dtype).itemsize
        for k in [C["vec_bwd_k"] + 1, 100, pipe_k, pipe_k + 1, 1000]:
            y, g = _tail_inputs(fn, 11, k, dtype, rng)
            g[3, :] = np.nan
            y[4, k // 3] = np.inf
            _nan_pairs(y, g)
            for n in (2, 3, 11):
                alone = np.concatenate([f(y[i:i + 1], g[i:i + 1], num_threads=1) for i in range(n)])
                for forced in (False, True):
                    _engine.set_prefetch_bytes(0 if forced else pf)
                    _engine.set_stream_bytes(0 if forced else st)
                    _engine.set_stream_threads(1 if forced else sth)
                    for threads in (1, 2):
                        got = f(y[:n], g[:n], num_threads=threads)
                        assert got.tobytes() == alone.tobytes(), (fn, k, n, forced, threads)
                        wide = np.zeros((3, n, k + 5), dtype)
                        wide[0, :, :k], wide[1, :, :k] = y[:n], g[:n]
                        f(wide[0, :, :k], wide[1, :, :k], out=wide[2, :, :k], num_threads=threads)
                        assert np.ascontiguousarray(wide[2, :, :k]).tobytes() == alone.tobytes()
                        fort = f(np.asfortranarray(y[:n]), np.asfortranarray(g[:n]), num_threads=threads)
                        assert np.ascontiguousarray(fort).tobytes() == alone.tobytes()
                        for into in ("y", "g"):
                            yy, gg = y[:n].copy(), g[:n].copy()
                            f(yy, gg, out=yy if into == "y" else gg, num_threads=threads)
                            res = yy if into == "y" else gg
                            assert res.tobytes() == alone.tobytes(), (fn, k, n, forced, threads, into)
    finally:
        _engine.set_prefetch_bytes(pf)
        _engine.set_stream_bytes(st)
        _engine.set_stream_threads(sth)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_row_tails_give_the_bits_of_every_layout(smoothing, dtype, isa):
    # The loss's exp-and-sum pass takes the tail in masked registers too; its
    # loss and gradient must not depend on the layout at any tail length.
    rng = np.random.default_rng(12)
    for k in TAIL_KS:
        (x,) = _tail_inputs("softmax", 19, k, dtype, rng)
        labels = rng.integers(0, k, 19)
        kw = dict(reduction="none", return_grad=True, label_smoothing=smoothing)
        loss, grad = csoftmax.softmax_cross_entropy(x, labels, **kw)
        loss_f, grad_f = csoftmax.softmax_cross_entropy(np.asfortranarray(x), labels, **kw)
        assert loss.tobytes() == loss_f.tobytes() and grad.tobytes() == grad_f.tobytes(), k


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("fn", TAIL_FNS)
def test_row_tails_give_the_bits_of_every_path(fn, dtype, masked, isa):
    # The row kernels, and with where= the masked kernels, take a row's last
    # elements (fewer than a register) in masked registers; Fortran order
    # takes the lane kernels or gathered rows, which have no tails. Every tail
    # length must give their bits, hostile values included; an all-true mask
    # gives the unmasked bits; and the float64 reference holds where the row
    # is finite.
    rng = np.random.default_rng(11)
    f = getattr(csoftmax, fn)
    for k in TAIL_KS:
        arrays = _tail_inputs(fn, 19, k, dtype, rng)
        kw, kw_f = {}, {}
        if masked:
            where = rng.random((19, k)) > 0.3
            where[11, -1] = False      # the tail's last element masked
            where[12, :-1] = False     # only the tail's last element takes part
            where[13, :] = False       # nothing takes part
            kw, kw_f = {"where": where}, {"where": np.asfortranarray(where)}
        got = f(*arrays, **kw)
        other = f(*[np.asfortranarray(a) for a in arrays], **kw_f)
        assert got.tobytes() == other.tobytes(), (fn, k)  # C-order bytes of both
        if masked:
            every = f(*arrays, where=np.ones((19, k), bool))
            assert every.tobytes() == f(*arrays).tobytes(), (fn, k)
        elif fn in ("softmax", "log_softmax"):
            ref = (ref_softmax if fn == "softmax" else ref_log_softmax)(arrays[0].astype(np.float64))
            ok = np.isfinite(arrays[0]).all(axis=1) & (np.abs(arrays[0]) < 1e29).all(axis=1)
            # log_softmax near 0 is held to its absolute error: a few ulp of
            # the row's largest |x - max| (up to 64 here).
            atol = 1e-30 if fn == "softmax" else 64 * np.finfo(dtype).eps
            np.testing.assert_allclose(got[ok], ref[ok], rtol=3e-6 if dtype == np.float32 else 1e-13,
                                       atol=atol)


_GUARD_SCRIPT = r"""
import ctypes, mmap, sys
import numpy as np
import csoftmax
from csoftmax import kernels

libc = ctypes.CDLL(None, use_errno=True)
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
PAGE = mmap.PAGESIZE
maps = []

def at_page_end(n, k, dtype):
    # An (n, k) array whose last element ends where an inaccessible page
    # begins: a read or write past the last row faults.
    nbytes = n * k * np.dtype(dtype).itemsize
    pages = -(-nbytes // PAGE)
    m = mmap.mmap(-1, (pages + 1) * PAGE)
    maps.append(m)
    base = ctypes.addressof(ctypes.c_char.from_buffer(m))
    assert libc.mprotect(base + pages * PAGE, PAGE, 0) == 0
    a = np.frombuffer(m, dtype, n * k, pages * PAGE - nbytes).reshape(n, k)
    return a

fns = sys.argv[1].split(",")
rng = np.random.default_rng(3)
for isa in kernels.supported_isas():
    kernels.select_isa(isa)
    for dtype in (np.float32, np.float64):
        for k in (33, 40, 47, 100, 129, 1001):
            for fn in fns:
                f = getattr(csoftmax, fn)
                ins = []
                for _ in range(2 if "backward" in fn else 1):
                    a = at_page_end(5, k, dtype)
                    a[...] = rng.standard_normal((5, k))
                    ins.append(a)
                want = f(*[np.array(a) for a in ins])
                o = at_page_end(*want.shape, dtype) if want.ndim == 2 else None
                got = f(*ins, out=o) if o is not None else f(*ins)
                assert np.array_equal(got, want, equal_nan=True), (isa, fn, k)
print("ok")
"""


def _run_guard_script(tmp_path, text, *args):
    # In a subprocess, so that a fault fails the test instead of the run;
    # with this process's csoftmax first on the path.
    import subprocess

    script = tmp_path / "guard.py"
    script.write_text(text)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(os.path.dirname(csoftmax.__file__))] + os.environ.get("PYTHONPATH", "").split(os.pathsep)))
    r = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=300,
                       env=env)
    assert r.returncode == 0 and r.stdout.strip() == "ok", (r.returncode, r.stdout, r.stderr[-2000:])


def test_row_tails_read_and_write_nothing_past_the_row(tmp_path):
    # Masked loads and stores touch only a row's own elements: arrays that
    # end where an inaccessible page begins, in and out, under every ISA.
    _run_guard_script(tmp_path, _GUARD_SCRIPT, ",".join(TAIL_FNS))


_STREAM_GUARD_SCRIPT = r"""
import ctypes, mmap, sys
import numpy as np
import csoftmax
from csoftmax import _engine, kernels

libc = ctypes.CDLL(None, use_errno=True)
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
PAGE = mmap.PAGESIZE
maps = []

def guarded(n, k, dtype, at):
    # An (n, k) array that starts where an inaccessible page ends (at
    # "start") or ends where one begins ("end").
    nbytes = n * k * np.dtype(dtype).itemsize
    pages = -(-nbytes // PAGE)
    m = mmap.mmap(-1, (pages + 2) * PAGE)
    maps.append(m)
    base = ctypes.addressof(ctypes.c_char.from_buffer(m))
    assert libc.mprotect(base, PAGE, 0) == 0
    assert libc.mprotect(base + (pages + 1) * PAGE, PAGE, 0) == 0
    off = PAGE if at == "start" else (pages + 1) * PAGE - nbytes
    return np.frombuffer(m, dtype, n * k, off).reshape(n, k)

_engine.set_stream_bytes(0)
_engine.set_stream_threads(1)
_engine.set_stream_exp_ops(True)
rng = np.random.default_rng(5)
streamed = _engine.streamed_blocks()
for isa in kernels.supported_isas():
    kernels.select_isa(isa)
    for dtype in (np.float32, np.float64):
        for k in (64, 1024):
            for fn in ("softmax_backward", "log_softmax", "log_softmax_backward"):
                f = getattr(csoftmax, fn)
                for at in ("start", "end"):
                    for shape in ("reversed", "broadcast"):
                        ins = []
                        for i in range(1 if fn == "log_softmax" else 2):
                            a = guarded(4 if shape == "reversed" else 1, k, dtype, at)
                            a[...] = rng.standard_normal(a.shape) - (3 if i == 0 else 0)
                            ins.append(a[::-1] if shape == "reversed" else np.broadcast_to(a, (4, k)))
                        want = f(*[np.array(a) for a in ins], num_threads=1)
                        for threads in (1, 2):
                            buf = np.empty(4 * k + 16, dtype)
                            o = buf[1:1 + 4 * k].reshape(4, k)  # (not at a register's alignment)
                            f(*ins, out=o, num_threads=threads)
                            assert o.tobytes() == want.tobytes(), (isa, fn, k, at, shape, threads)
assert _engine.streamed_blocks() > streamed
print("ok")
"""


def test_streamed_rows_read_nothing_outside_their_operands(tmp_path):
    # The register across two rows of a streamed output reads each row's own
    # elements only: inputs whose rows run backwards or are one row
    # broadcast, placed against inaccessible pages on either side, under
    # every ISA, with the output off a register's alignment.
    _run_guard_script(tmp_path, _STREAM_GUARD_SCRIPT)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("fn", TAIL_FNS[:2] + TAIL_FNS[3:] + ["softmax_jacobian"])
def test_row_tails_write_nothing_between_the_rows_of_a_wider_out(fn, dtype, isa):
    # A row's last elements (fewer than a register) are stored lane group by
    # lane group (masked stores, or under AVX2 plain stores of 4, 2 and 1
    # lanes): an out= that is a column slice of a wider array must keep the
    # columns beside it, for every tail length, and get the bits of a
    # C-contiguous out.
    rng = np.random.default_rng(3)
    f = getattr(csoftmax, fn)
    for k in list(range(1, 34)) + [63, 100, 129]:
        n = C["lanes"] + 5
        x = (rng.standard_normal((n, k)) * 3).astype(dtype)
        if fn.endswith("backward"):
            fwd = csoftmax.log_softmax if fn.startswith("log") else csoftmax.softmax
            ins = (fwd(x), rng.standard_normal((n, k)).astype(dtype))
        else:
            ins = (x,)
        want = f(*ins)
        wide = np.full((n, k + 9) if want.ndim == 2 else (n, k, k + 9), 7.0, dtype)
        view = wide[..., 2:k + 2]
        f(*ins, out=view)
        assert np.array_equal(view.view(np.uint8), want.view(np.uint8)), (isa, fn, k)
        assert (wide[..., :2] == 7).all() and (wide[..., k + 2:] == 7).all(), (isa, fn, k)


def test_blocks_scale_with_the_default_team_and_bits_do_not():
    # 8 blocks per thread of the default team (OMP_NUM_THREADS at import);
    # the rows, and so the bits, never depend on their block.
    import subprocess
    code = ("import numpy as np, csoftmax, hashlib; from csoftmax import _engine;"
            "x = np.random.default_rng(0).standard_normal((4096, 130)).astype(np.float32);"
            "g = np.random.default_rng(1).standard_normal(x.shape).astype(np.float32);"
            "y = csoftmax.softmax(x); d = csoftmax.softmax_backward(y, g);"
            "print(_engine.CONSTANTS['block_share'], _engine.plan('softmax', 4096, 130)['n_blocks'],"
            " hashlib.sha256(y.tobytes() + d.tobytes()).hexdigest())")
    seen = {}
    for team in (1, 2, 4):
        env = dict(os.environ, OMP_NUM_THREADS=str(team))
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env=env, timeout=120)
        assert r.returncode == 0, r.stderr
        share, n_blocks, digest = r.stdout.split()
        assert int(share) == 8 * max(team, 2)
        seen[team] = (int(n_blocks), digest)
    assert seen[4][0] > seen[2][0]
    assert len({d for _, d in seen.values()}) == 1
