"""The engine's thresholds, tested where they sit: each boundary is read from
the build (csoftmax._engine.CONSTANTS), the path a call takes is observed
(csoftmax._engine.plan), and the results on both sides are checked."""
import numpy as np
import pytest

import csoftmax
from csoftmax import _engine
from conftest import ref_log_softmax, ref_softmax

C = _engine.CONSTANTS


@pytest.mark.parametrize("fn", ["softmax", "log_softmax"])
def test_small_row_cutoff_is_where_the_path_changes(fn):
    k = C["small_k"]
    assert _engine.plan(fn, 64, k)["path"] == "small rows"
    assert _engine.plan(fn, 64, k + 1)["path"] == "rows"
    ref = {"softmax": ref_softmax, "log_softmax": ref_log_softmax}[fn]
    for kk in (k - 1, k, k + 1):
        x = np.random.default_rng(kk).standard_normal((C["lanes"] * 2 + 3, kk)) * 3
        got = getattr(csoftmax, fn)(x)
        np.testing.assert_allclose(got, ref(x), rtol=1e-12, atol=1e-15)
        # Both sides of the boundary give the bits of the lane kernels.
        np.testing.assert_array_equal(getattr(csoftmax, fn)(np.asfortranarray(x)), got)


def test_non_unit_column_strides_take_the_lane_path():
    assert _engine.plan("softmax", 100, 1000, unit_columns=False)["path"] == "lanes"
    assert _engine.plan("softmax_backward", 100, 7, unit_columns=False)["path"] == "lanes"
    # K = 1: every stride is a unit stride.
    assert _engine.plan("softmax", 100, 1, unit_columns=False)["path"] != "lanes"


def test_parallel_grain_is_where_threads_start():
    grain = C["parallel_grain"]
    below = _engine.plan("softmax", (grain - 1) // 100, 100, num_threads=2)
    at = _engine.plan("softmax", grain // 100 + 1, 100, num_threads=2)
    assert below["threads"] == 1
    assert at["threads"] == 2 and at["n_blocks"] >= 2
    x = np.random.default_rng(0).standard_normal((grain // 100 + 1, 100))
    np.testing.assert_array_equal(csoftmax.softmax(x, num_threads=2),
                                  csoftmax.softmax(x, num_threads=1))


@pytest.mark.parametrize("dtype,itemsize", [("float32", 4), ("float64", 8)])
def test_streaming_threshold_is_where_streaming_starts(dtype, itemsize):
    elems = C["stream_bytes"] // itemsize
    k = 1000
    n_at = -(-elems // k)
    assert not _engine.plan("softmax", n_at - 1, k, dtype)["stream"]
    assert _engine.plan("softmax", n_at, k, dtype)["stream"]
    # A freshly allocated output never streams: its pages were just zeroed
    # into the cache.
    assert not _engine.plan("softmax", n_at, k, dtype, fresh_out=True)["stream"]


def test_blocks_depend_on_k_and_layout_only():
    for threads in (1, 2, 7):
        p = _engine.plan("softmax", 10000, 100, num_threads=threads)
        assert p["block"] == C["block_elems"] // 100
        q = _engine.plan("softmax", 10000, 100, unit_columns=False, num_threads=threads)
        assert q["block"] % C["lanes"] == 0


@pytest.mark.parametrize("fn", ["softmax", "log_softmax", "softmax_backward",
                                "softmax_jacobian"])
def test_large_reused_outputs_are_written_with_streaming_stores(fn):
    # The kernels count the blocks they stream: a reused output past the
    # threshold must stream, a fresh one or one below it must not.
    k = 40 if fn == "softmax_jacobian" else 1000
    n = -(-C["stream_bytes"] // (4 * (k * k if fn == "softmax_jacobian" else k)))
    x = np.random.default_rng(1).standard_normal((n, k)).astype(np.float32)
    args = (csoftmax.softmax(x), x) if "backward" in fn else (x,)
    f = getattr(csoftmax, fn)
    out = f(*args)
    before = _engine.streamed_blocks()
    f(*args)  # fresh output
    assert _engine.streamed_blocks() == before
    f(*(a[: n // 2] for a in args), out=out[: n // 2])  # below the threshold
    assert _engine.streamed_blocks() == before
    f(*args, out=out)
    assert _engine.streamed_blocks() > before
