"""Dask arrays: lazy, exact, distributed (csoftmax/_dask.py).

A Dask array in gives a lazy Dask array out, computed only when asked, and
bitwise equal to the NumPy path for every chunking (the softmax axis in one
chunk or split, every axis split), on the threaded scheduler, on forked worker
processes and on a multi-process dask.distributed LocalCluster. Skips when
Dask is not installed.
"""
import inspect
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import csoftmax
from csoftmax import _semantics

da = pytest.importorskip("dask.array", reason="dask[array] is not installed (test-interop extra)")
dask = pytest.importorskip("dask")

RNG = np.random.default_rng(7)
FUNCS = [f for f in ("softmax", "log_softmax", "softmax_backward", "log_softmax_backward",
                     "logsumexp") if hasattr(csoftmax, f)]
BACKWARD = ("softmax_backward", "log_softmax_backward")
SHAPE = (6, 7, 9)


def _has_kwarg(name):
    return name in inspect.signature(_semantics.softmax).parameters


def _inputs(fname, shape=SHAPE, dtype=np.float64):
    x = RNG.standard_normal(shape).astype(dtype)
    if fname not in BACKWARD:
        return [x]
    y = (csoftmax.softmax if fname == "softmax_backward" else csoftmax.log_softmax)(x)
    return [y.astype(dtype), RNG.standard_normal(shape).astype(dtype)]


# Chunkings of SHAPE: none split, each axis split, all split, ragged.
CHUNKS = [SHAPE, (2, 7, 9), (6, 3, 9), (6, 7, 4), (2, 3, 4), (5, 2, 8)]


@pytest.mark.parametrize("fname", FUNCS)
@pytest.mark.parametrize("chunks", CHUNKS, ids=str)
@pytest.mark.parametrize("axis", [-1, 0, 1, (0, 2), None])
def test_dask_result_is_bitwise_the_numpy_path(fname, chunks, axis):
    arrays = _inputs(fname)
    expect = getattr(csoftmax, fname)(*arrays, axis=axis)
    lazy = getattr(csoftmax, fname)(*[da.from_array(a, chunks=chunks) for a in arrays], axis=axis)
    assert isinstance(lazy, da.Array)
    assert lazy.dtype == expect.dtype and lazy.shape == expect.shape
    got = lazy.compute(scheduler="threads")
    assert type(got) is np.ndarray
    np.testing.assert_array_equal(got, expect, strict=True)


@pytest.mark.parametrize("dtype", ["float16", "float32", "int32", "bool"])
def test_dask_dtypes_follow_the_numpy_path(dtype):
    x = (RNG.standard_normal((5, 8)) * 4).astype(dtype)
    d = da.from_array(x, chunks=(2, 3))
    for f in (csoftmax.softmax, csoftmax.log_softmax):
        expect = f(x)
        lazy = f(d)
        assert lazy.dtype == expect.dtype
        np.testing.assert_array_equal(lazy.compute(), expect, strict=True)


def test_dask_is_lazy_until_computed():
    calls = []

    def load(block):
        calls.append(1)
        return block
    x = RNG.standard_normal((8, 6))
    d = da.from_array(x, chunks=(2, 3)).map_blocks(load, dtype=x.dtype, meta=x[:0, :0])
    calls.clear()
    lazy = csoftmax.softmax(d)
    assert calls == []
    np.testing.assert_array_equal(lazy.compute(), csoftmax.softmax(x))
    assert calls


def test_dask_axis_in_one_chunk_keeps_the_chunks():
    d = da.from_array(RNG.standard_normal((10, 4, 5)), chunks=(3, 4, 5))
    for f in (csoftmax.softmax, csoftmax.log_softmax):
        assert f(d, axis=1).chunks == d.chunks
    assert csoftmax.softmax(d, axis=(1, 2)).chunks == d.chunks


def test_dask_split_axis_is_made_whole_and_other_chunks_kept():
    d = da.from_array(RNG.standard_normal((10, 12)), chunks=(3, 5))
    r = csoftmax.softmax(d, axis=1)
    assert r.chunks == ((3, 3, 3, 1), (12,))


def test_dask_rows_larger_than_a_chunk_use_an_exact_two_stage_reduction():
    x = RNG.standard_normal((4, 64)) * 30
    x[1, 3] = np.nan
    x[2, :] = -np.inf
    x[3, 5] = np.inf
    d = da.from_array(x, chunks=(1, 16))
    with dask.config.set({"array.chunk-size": "256B"}):  # a row is 512 B
        for fname in ("softmax", "log_softmax"):
            lazy = getattr(csoftmax, fname)(d)
            assert lazy.name.startswith(f"csoftmax-{fname}-two-stage")
            np.testing.assert_allclose(lazy.compute(), getattr(csoftmax, fname)(x),
                                       rtol=1e-13, atol=1e-13)
        y = csoftmax.softmax(x[:2])
        g = RNG.standard_normal(y.shape)
        for fname in BACKWARD:
            yy = y if fname == "softmax_backward" else np.log(y)
            lazy = getattr(csoftmax, fname)(da.from_array(yy, chunks=(1, 16)),
                                           da.from_array(g, chunks=(1, 16)))
            np.testing.assert_allclose(lazy.compute(), getattr(csoftmax, fname)(yy, g),
                                       rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("fname", BACKWARD)
def test_dask_backward_pairs_with_different_chunks(fname):
    y, g = _inputs(fname, (9, 10))
    lazy = getattr(csoftmax, fname)(da.from_array(y, chunks=(4, 3)), da.from_array(g, chunks=(2, 10)))
    np.testing.assert_array_equal(lazy.compute(), getattr(csoftmax, fname)(y, g))
    lazy = getattr(csoftmax, fname)(da.from_array(y, chunks=(4, 3)), g)  # NumPy grad
    np.testing.assert_array_equal(lazy.compute(), getattr(csoftmax, fname)(y, g))
    with pytest.raises(ValueError, match="y has shape .* but grad has shape"):
        getattr(csoftmax, fname)(da.from_array(y), da.from_array(g[:, :3]))


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_dask_jacobian_with_the_axis_in_one_chunk(axis):
    x = RNG.standard_normal((4, 5, 6))
    chunks = tuple(n if d == axis % 3 else 2 for d, n in enumerate(x.shape))
    lazy = csoftmax.softmax_jacobian(da.from_array(x, chunks=chunks), axis=axis)
    expect = csoftmax.softmax_jacobian(x, axis=axis)
    assert lazy.shape == expect.shape and lazy.dtype == expect.dtype
    np.testing.assert_array_equal(lazy.compute(), expect)


def test_dask_jacobian_with_a_split_axis_says_how_to_rechunk():
    d = da.from_array(RNG.standard_normal((4, 6)), chunks=(4, 3))
    with pytest.raises(ValueError, match=r"split into 2 chunks along axis 1.*rechunk\(\{1: -1\}\)"):
        csoftmax.softmax_jacobian(d)


def test_dask_argument_errors_come_at_call_time_with_the_numpy_messages():
    d = da.from_array(RNG.standard_normal((4, 6)), chunks=(2, 3))
    with pytest.raises(np.exceptions.AxisError, match="softmax"):
        csoftmax.softmax(d, axis=2)
    with pytest.raises(TypeError, match="dtype complex128"):
        csoftmax.softmax(d.astype(complex))
    with pytest.raises(TypeError, match="out= cannot be used with Dask arrays"):
        csoftmax.softmax(d, out=np.empty((4, 6)))


@pytest.mark.skipif(not _has_kwarg("where"), reason="where= is not in this build")
@pytest.mark.parametrize("chunks", [(4, 6), (2, 3)], ids=str)
def test_dask_where_mask(chunks):
    x = RNG.standard_normal((4, 6))
    w = RNG.random((4, 6)) < 0.6
    for f in (csoftmax.softmax, csoftmax.log_softmax):
        lazy = f(da.from_array(x, chunks=chunks), where=da.from_array(w, chunks=(1, 6)))
        np.testing.assert_array_equal(lazy.compute(), f(x, where=w))
        np.testing.assert_array_equal(f(da.from_array(x, chunks=chunks), where=w[0]).compute(),
                                      f(x, where=w[0]))


@pytest.mark.skipif(not hasattr(csoftmax, "logsumexp"), reason="logsumexp is not in this build")
@pytest.mark.parametrize("chunks", [(6, 7, 9), (2, 3, 4)], ids=str)
@pytest.mark.parametrize("axis", [1, (0, 2), None])
def test_dask_logsumexp_keepdims_and_where(chunks, axis):
    x = RNG.standard_normal(SHAPE)
    w = RNG.random(SHAPE) < 0.7
    d = da.from_array(x, chunks=chunks)
    for kw in ({"keepdims": True}, {"where": w}, {"where": da.from_array(w, chunks=3),
                                                   "keepdims": True}):
        expect = csoftmax.logsumexp(x, axis=axis, **{k: (np.asarray(v) if k == "where" else v)
                                                     for k, v in kw.items()})
        lazy = csoftmax.logsumexp(d, axis=axis, **kw)
        assert lazy.shape == np.shape(expect)
        np.testing.assert_array_equal(lazy.compute(), expect)


@pytest.mark.skipif(not _has_kwarg("dtype"), reason="dtype= is not in this build")
def test_dask_dtype_argument():
    x = RNG.standard_normal((5, 8))
    d = da.from_array(x, chunks=(2, 3))
    for dt in (np.float32, np.float16):
        lazy = csoftmax.log_softmax(d, dtype=dt)
        assert lazy.dtype == dt
        np.testing.assert_array_equal(lazy.compute(), csoftmax.log_softmax(x, dtype=dt),
                                      strict=True)


@pytest.mark.skipif(not hasattr(csoftmax, "softmax_cross_entropy"),
                    reason="softmax_cross_entropy is not in this build")
@pytest.mark.parametrize("chunks", [(5, 7), (2, 3)], ids=str)
def test_dask_cross_entropy_per_row(chunks):
    logits = RNG.standard_normal((5, 7))
    target = RNG.integers(0, 7, size=5)
    f = csoftmax.softmax_cross_entropy
    d = da.from_array(logits, chunks=chunks)
    t = da.from_array(target, chunks=chunks[0])
    np.testing.assert_array_equal(f(d, t, reduction="none").compute(),
                                  f(logits, target, reduction="none"))
    loss, grad = f(d, t, reduction="none", return_grad=True)
    eloss, egrad = f(logits, target, reduction="none", return_grad=True)
    np.testing.assert_array_equal(loss.compute(), eloss)
    np.testing.assert_array_equal(grad.compute(), egrad)
    with pytest.raises(ValueError, match="only reduction='none'"):
        f(d, t)


def test_dask_results_of_two_calls_computed_together_stay_apart():
    x1, x2 = RNG.standard_normal((2, 4, 6))
    r1, r2 = dask.compute(csoftmax.softmax(da.from_array(x1, chunks=2)),
                          csoftmax.softmax(da.from_array(x2, chunks=2)))
    np.testing.assert_array_equal(r1, csoftmax.softmax(x1))
    np.testing.assert_array_equal(r2, csoftmax.softmax(x2))


def test_dask_unknown_chunk_sizes():
    x = RNG.standard_normal((6, 4))
    d = da.from_array(x, chunks=(2, 4))
    d = d[d[:, 0] > -10]  # every row, but Dask no longer knows how many per chunk
    np.testing.assert_array_equal(csoftmax.softmax(d).compute(), csoftmax.softmax(x))
    np.testing.assert_array_equal(csoftmax.softmax(d.rechunk({1: 2})).compute(),
                                  csoftmax.softmax(x))
    with pytest.raises(ValueError, match="compute_chunk_sizes"):
        csoftmax.softmax(d.rechunk({1: 2}), axis=0)


def _fake_cross_entropy(logits, target, axis=-1, *, weight=None, where=None,
                        reduction="mean", return_grad=False, **kw):
    """A NumPy stand-in with softmax_cross_entropy's signature (integer labels
    or probabilities), for the Dask plumbing where the real one is absent."""
    x = np.moveaxis(np.asarray(logits, np.float64), axis, -1)
    on = np.ones(x.shape, bool) if where is None else np.moveaxis(
        np.broadcast_to(where, logits.shape), axis, -1)
    logp = csoftmax.log_softmax(x, where=on)
    t = np.asarray(target)
    p = np.moveaxis(t, axis, -1) if t.ndim == x.ndim else \
        (np.arange(x.shape[-1]) == t[..., None]).astype(np.float64)
    w = np.ones(x.shape[-1]) if weight is None else np.asarray(weight)
    with np.errstate(invalid="ignore"):  # 0 * -inf at masked classes, then dropped
        loss = -np.sum(np.where(on, w * p * logp, 0.0), axis=-1)
    grad = np.moveaxis(np.where(on, np.exp(logp) * np.sum(w * p, -1, keepdims=True) - w * p, 0),
                       -1, axis)
    return (loss, grad) if return_grad else loss


@pytest.mark.parametrize("chunks", [(5, 7, 3), (2, 3, 2)], ids=str)
@pytest.mark.parametrize("labels", ["int", "probabilities"])
def test_dask_cross_entropy_plumbing_with_a_stand_in(monkeypatch, chunks, labels):
    from csoftmax import _interop
    monkeypatch.setattr(csoftmax, "softmax_cross_entropy",
                        _interop.wrap("softmax_cross_entropy", _fake_cross_entropy),
                        raising=False)
    f = csoftmax.softmax_cross_entropy
    logits = RNG.standard_normal((5, 7, 3))
    if labels == "int":
        target = RNG.integers(0, 7, size=(5, 3))
        dt = da.from_array(target, chunks=(chunks[0], chunks[2]))
    else:
        target = csoftmax.softmax(RNG.standard_normal((5, 7, 3)), axis=1)
        dt = da.from_array(target, chunks=chunks)
    weight = RNG.random(7)
    where = RNG.random((7, 1)) < 0.8
    d = da.from_array(logits, chunks=chunks)
    for kw in ({}, {"weight": weight, "where": where}):
        lazy = f(d, dt, axis=1, reduction="none", **kw)
        assert lazy.shape == (5, 3)
        np.testing.assert_array_equal(lazy.compute(),
                                      f(logits, target, axis=1, reduction="none", **kw))
        loss, grad = f(d, dt, axis=1, reduction="none", return_grad=True, **kw)
        eloss, egrad = f(logits, target, axis=1, reduction="none", return_grad=True, **kw)
        np.testing.assert_array_equal(loss.compute(), eloss)
        np.testing.assert_array_equal(grad.compute(), egrad)
    with pytest.raises(ValueError, match="only reduction='none'"):
        f(d, dt, axis=1)


def test_dask_graph_pickles_by_reference():
    import pickle
    lazy = csoftmax.softmax(da.from_array(RNG.standard_normal((4, 6)), chunks=(2, 3)))
    graph = dict(lazy.__dask_graph__())
    pickle.dumps(graph)  # no closures: distributed workers can take it


# ---- processes ----------------------------------------------------------------------

SCRIPT_TIMEOUT_S = 120


def _run(code):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                       text=True, timeout=SCRIPT_TIMEOUT_S, env=env, start_new_session=True)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


@pytest.mark.slow
def test_dask_on_forked_worker_processes_after_a_parallel_call_does_not_hang():
    out = _run("""
        import multiprocessing, numpy as np, dask, dask.array as da, csoftmax
        x = np.random.default_rng(0).standard_normal((4000, 1000))
        expect = csoftmax.softmax(x, num_threads=2)  # the parent's OpenMP pool starts
        ctx = multiprocessing.get_context("fork")
        with dask.config.set({"multiprocessing.context": "fork"}):
            got = csoftmax.softmax(da.from_array(x, chunks=(1000, 250))).compute(
                scheduler="processes", num_workers=2)
        assert np.array_equal(got, expect)
        print("ok")
    """)
    assert "ok" in out


@pytest.mark.slow
def test_dask_on_a_local_cluster_of_processes_is_bitwise():
    pytest.importorskip("distributed", reason="distributed is not installed")
    out = _run("""
        import numpy as np, dask.array as da, csoftmax
        from distributed import Client, LocalCluster
        if __name__ == "__main__":
            x = np.random.default_rng(1).standard_normal((3000, 700)).astype(np.float32)
            with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                              dashboard_address=None) as cluster, Client(cluster) as client:
                d = da.from_array(x, chunks=(500, 200))
                for f in (csoftmax.softmax, csoftmax.log_softmax):
                    assert np.array_equal(f(d).compute(), f(x)), f
                y = csoftmax.softmax(x)
                g = np.ones_like(y)
                got = csoftmax.softmax_backward(da.from_array(y, chunks=(300, 700)),
                                                da.from_array(g, chunks=(1000, 100))).compute()
                assert np.array_equal(got, csoftmax.softmax_backward(y, g))
                assert len(client.scheduler_info()["workers"]) == 2
            print("ok")
    """)
    assert "ok" in out
