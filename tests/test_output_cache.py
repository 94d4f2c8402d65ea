"""The cache of freed large outputs (csoftmax/_alloc.pyx, _outcache.h).

Outputs of 1 MiB or more that csoftmax allocates come from a bounded cache of
freed outputs. A reused block holds the bytes of whatever was there before, so
every test that reuses one first leaves NaN in it: a kernel that skipped an
element would show it.
"""
import concurrent.futures
import os
import pickle
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import csoftmax

MIB = 1 << 20


@pytest.fixture
def cache():
    """A fresh, empty cache with the default limit; restored afterwards."""
    old = csoftmax.set_output_cache(0)
    csoftmax.set_output_cache(256 * MIB)
    yield csoftmax.output_cache
    csoftmax.set_output_cache(0)
    csoftmax.set_output_cache(old)


def _poison(shape, dtype, order="C"):
    """Leave a block of the output's size in the cache, full of NaN."""
    y = csoftmax.softmax(np.zeros(shape, dtype, order=order))
    y[...] = np.nan
    del y


def _cases(rng, dtype):
    """(name, call, reference into out=) per allocating public function."""
    x = rng.standard_normal((2048, 257)).astype(dtype)  # 2-4 MiB outputs
    y = csoftmax.softmax(x)
    ly = csoftmax.log_softmax(x)
    g = rng.standard_normal(x.shape).astype(dtype)
    labels = rng.integers(0, x.shape[1], x.shape[0])
    xj = rng.standard_normal((40, 100)).astype(dtype)  # 1.6-3.2 MB Jacobian

    def out_of(f, *a):
        o = np.zeros(f(*a).shape, dtype)
        f(*a, out=o)
        return o

    def xent_grad(*a):
        return csoftmax.softmax_cross_entropy(*a, return_grad=True)[1]

    def xent_grad_out(*a):
        o = np.zeros(x.shape, dtype)
        csoftmax.softmax_cross_entropy(*a, return_grad=True, grad_out=o)
        return o

    return [
        ("softmax", lambda: csoftmax.softmax(x), lambda: out_of(csoftmax.softmax, x)),
        ("log_softmax", lambda: csoftmax.log_softmax(x), lambda: out_of(csoftmax.log_softmax, x)),
        ("softmax_backward", lambda: csoftmax.softmax_backward(y, g),
         lambda: out_of(csoftmax.softmax_backward, y, g)),
        ("log_softmax_backward", lambda: csoftmax.log_softmax_backward(ly, g),
         lambda: out_of(csoftmax.log_softmax_backward, ly, g)),
        ("softmax_jacobian", lambda: csoftmax.softmax_jacobian(xj),
         lambda: out_of(csoftmax.softmax_jacobian, xj)),
        ("cross_entropy_grad", lambda: xent_grad(x, labels), lambda: xent_grad_out(x, labels)),
    ]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("num_threads", [1, 2])
def test_reused_outputs_give_the_bits_of_out(cache, dtype, num_threads):
    rng = np.random.default_rng(1)
    for name, call, ref in _cases(rng, dtype):
        want = ref()
        for _ in range(3):
            _poison(want.shape if want.ndim == 2 else (want.shape[0], want.shape[1] * want.shape[2]),
                    dtype)
            hits = cache()["hits"]
            got = call()
            assert cache()["hits"] > hits, name
            assert got.dtype == dtype and got.shape == want.shape, name
            assert np.array_equal(got, want, equal_nan=True), name
            del got


def test_allocating_calls_in_a_loop_reuse_one_block(cache):
    x = np.random.default_rng(2).standard_normal((1000, 100)).astype(np.float32)
    first = csoftmax.softmax_jacobian(x)
    del first
    before = cache()
    for _ in range(5):
        J = csoftmax.softmax_jacobian(x)
        del J
    after = cache()
    assert after["hits"] - before["hits"] == 5
    assert after["misses"] == before["misses"]
    assert after["blocks"] == 1 and after["bytes"] >= 1000 * 100 * 100 * 4


def test_outputs_alive_together_start_at_different_page_offsets(cache):
    # y = softmax(x), then softmax_backward(y, g): outputs at one offset in
    # their pages share L1 sets and 4 KiB-alias (the cache's blocks all
    # started at offset 64 before, and softmax_backward then took 1.3x on
    # an AMD Zen 4). New blocks take 64 + 512 c, c = 1..7, in turn: aligned
    # for any vector, and clear of the offsets 0 to 64 where NumPy's large
    # blocks and page-aligned arrays start.
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1024, 512)).astype(np.float32)
    g = rng.standard_normal(x.shape).astype(np.float32)
    outs = [csoftmax.softmax(x)]
    outs.append(csoftmax.softmax_backward(outs[0], g))
    outs += [csoftmax.log_softmax(x) for _ in range(5)]
    offsets = [o.ctypes.data % 4096 for o in outs]
    assert len(set(offsets)) == 7, offsets
    assert all(off % 64 == 0 and off >= 576 for off in offsets), offsets
    np.testing.assert_allclose(outs[1], outs[0] * (g - (g * outs[0]).sum(axis=1, keepdims=True)),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("order", ["C", "F"])
def test_cached_outputs_are_ordinary_arrays(cache, order):
    x = np.asarray(np.random.default_rng(3).standard_normal((1024, 512)), order=order)
    _poison(x.shape, x.dtype, order)
    y = csoftmax.softmax(x)
    assert cache()["hits"] >= 1
    assert y.flags.owndata and y.flags.writeable and y.base is None
    assert y.flags.f_contiguous if order == "F" else y.flags.c_contiguous
    assert y.ctypes.data % 64 == 0
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-12)
    # NumPy's own operations on the block: in-place arithmetic, growing and
    # shrinking it (the allocator's realloc), copies, pickling.
    y *= 2
    z = y.copy()
    assert np.array_equal(pickle.loads(pickle.dumps(y)), z)
    if order == "C":
        y.resize((2048, 512), refcheck=False)
        np.testing.assert_array_equal(y[:1024], z)
        y.resize((10, 10), refcheck=False)
        np.testing.assert_array_equal(y.reshape(-1), z.reshape(-1)[:100])
    del y, z


@pytest.mark.parametrize("num_threads", [1, 2])
def test_strided_inputs_get_cached_outputs_with_the_bits_of_a_copy(cache, num_threads):
    # Neither C- nor F-contiguous (every other column, and a transposed
    # view along axis 0): the order-'K' allocation path.
    wide = np.random.default_rng(10).standard_normal((1024, 1024)).astype(np.float32)
    for x, axis in ((wide[:, ::2], -1), (wide[::2, :].T, 0)):
        want = csoftmax.log_softmax(np.ascontiguousarray(x), axis=axis, num_threads=num_threads)
        _poison(want.shape, want.dtype)
        hits = cache()["hits"]
        got = csoftmax.log_softmax(x, axis=axis, num_threads=num_threads)
        assert cache()["hits"] > hits
        assert got.flags.owndata and got.ctypes.data % 64 == 0
        assert np.array_equal(got, want)
        del got


def test_the_cache_never_holds_more_than_its_limit(cache):
    csoftmax.set_output_cache(5 * MIB)
    rng = np.random.default_rng(4)
    outs = [csoftmax.softmax(rng.standard_normal((512, 1024)).astype(np.float32))
            for _ in range(6)]  # 2 MiB each
    del outs
    state = cache()
    assert state["bytes"] <= 5 * MIB and state["blocks"] == 2
    big = csoftmax.softmax(rng.standard_normal((2048, 1024)).astype(np.float32))  # 8 MiB
    del big
    assert cache()["bytes"] <= 5 * MIB
    outs = [csoftmax.softmax(rng.standard_normal((300, 1024)))  # 2.3 MiB each
            for _ in range(20)]
    csoftmax.set_output_cache(256 * MIB)
    del outs
    state = cache()
    assert state["blocks"] <= 8 and state["bytes"] <= 256 * MIB


def test_a_block_is_not_reused_for_a_much_smaller_output(cache):
    rng = np.random.default_rng(5)
    _poison((4096, 256), np.float32)
    hits = cache()["hits"]
    small = csoftmax.softmax(rng.standard_normal((1024, 256)).astype(np.float32))  # a quarter
    assert cache()["hits"] == hits
    del small


def test_small_outputs_bypass_the_cache(cache):
    x = np.random.default_rng(6).standard_normal((100, 10))
    before = cache()
    for _ in range(10):
        csoftmax.softmax(x)
    assert cache() == before


def test_a_disabled_cache_holds_nothing(cache):
    x = np.random.default_rng(7).standard_normal((1024, 512))
    _poison(x.shape, x.dtype)
    assert cache()["blocks"] == 1
    assert csoftmax.set_output_cache(0) == 256 * MIB
    assert cache()["blocks"] == 0 and cache()["bytes"] == 0
    before = cache()
    y = csoftmax.softmax(x)
    del y
    assert cache() == before
    np.testing.assert_allclose(csoftmax.softmax(x).sum(axis=1), 1.0, rtol=1e-12)


@pytest.mark.parametrize("bad, exc", [(1.5, TypeError), ("1", TypeError), (True, TypeError),
                                      (None, TypeError), (-1, ValueError)])
def test_set_output_cache_rejects_bad_limits(cache, bad, exc):
    with pytest.raises(exc, match="set_output_cache"):
        csoftmax.set_output_cache(bad)
    assert cache()["limit"] == 256 * MIB


def test_threads_allocating_at_once_get_their_own_blocks(cache):
    rng = np.random.default_rng(8)
    xs = [rng.standard_normal((1024, 300)) for _ in range(4)]
    want = [csoftmax.softmax(x) for x in xs]
    barrier = threading.Barrier(4)

    def work(i):
        barrier.wait()
        for _ in range(20):
            y = csoftmax.softmax(xs[i], num_threads=1)
            if not np.array_equal(y, want[i]):
                return False
            y[...] = np.nan
            del y
        return True

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        assert all(pool.map(work, range(4)))


def _run(code, env=None):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, **(env or {})))


@pytest.mark.parametrize("value, limit, warns", [("0", 0, False), ("1048576", 1 << 20, False),
                                                 ("lots", 256 << 20, True), ("-5", 256 << 20, True)])
def test_environment_variable_sets_the_limit_at_import(value, limit, warns):
    r = _run("""
        import warnings
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            import csoftmax
        print(csoftmax.output_cache()["limit"], any("CSOFTMAX_OUTPUT_CACHE" in str(x.message) for x in w))
    """, {"CSOFTMAX_OUTPUT_CACHE": value})
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(limit), str(warns)]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork (POSIX)")
def test_a_forked_child_reuses_and_frees_inherited_blocks():
    r = _run("""
        import os, numpy as np, csoftmax
        x = np.random.default_rng(9).standard_normal((1024, 512))
        want = csoftmax.softmax(x)
        y = csoftmax.softmax(x); y[...] = np.nan; del y   # a block in the cache
        pid = os.fork()
        if pid == 0:
            ok = True
            for _ in range(3):
                y = csoftmax.softmax(x)
                ok &= bool(np.array_equal(y, want))
                y[...] = np.nan
                del y
            ok &= csoftmax.output_cache()["hits"] >= 3
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        y = csoftmax.softmax(x)
        print(os.waitstatus_to_exitcode(status), np.array_equal(y, want))
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["0", "True"]


def test_show_config_reports_the_cache(cache):
    cfg = csoftmax.show_config(print_=False)
    assert set(cfg["output_cache"]) == {"limit", "bytes", "blocks", "hits", "misses"}
