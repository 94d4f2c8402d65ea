"""The short path of public calls on CuPy arrays (csoftmax/_gpu_fast.py).

Through the CuPy stand-in over the emulator: the calls it takes give the
general path's results (in every kernel tier, into a new array, into a
separate ``out`` and in place), every other call reaches the general path,
and a wrong call raises exactly what the general path raises.
"""

import numpy as np
import pytest

import csoftmax
from csoftmax import _gpu, _gpu_fast, _semantics
from cuda_emu import devices, fake_cupy
from cuda_emu.reference import check, inputs

pytestmark = pytest.mark.skipif(
    not __import__("shutil").which("g++"), reason="the CUDA emulator needs g++ with OpenMP"
)

ROW_OPS = ("softmax", "log_softmax", "softmax_backward", "log_softmax_backward")


@pytest.fixture
def cp(monkeypatch):
    yield from fake_cupy.installed(
        monkeypatch, (devices.EMULATED, dict(devices.EMULATED, name=b"emulated-1")))


@pytest.fixture
def general(monkeypatch):
    """Counts the calls that reach the general path."""
    calls = []
    real = _semantics._elementwise

    def spy(op, *args, **kwargs):
        calls.append(op)
        return real(op, *args, **kwargs)

    monkeypatch.setattr(_semantics, "_elementwise", spy)
    return calls


def _args(op, n, k, dtype, seed=0):
    a, b = inputs(op, n, k, dtype, seed)
    return (a,) if b is None else (a, b)


def _check(op, got, host):
    assert got.dtype == host[0].dtype and got.shape == host[0].shape
    check(op, got.get().reshape(host[0].shape), host[0], host[1] if len(host) > 1 else None)


def test_the_short_path_knows_every_row_operation():
    assert sorted(_gpu_fast.NAMES.values()) == sorted(ROW_OPS)


# K: sub-warp rows, the warp tier, the shared-memory block tier and the L2
# block tier (the emulated device keeps float32 rows up to 8128 in shared memory).
TIERS = {5: "warp", 300: "warp", 1500: "block-smem", 9000: "block-l2"}


@pytest.mark.parametrize("k", TIERS, ids=lambda k: f"K{k}-{TIERS[k]}")
@pytest.mark.parametrize("op", ROW_OPS)
def test_short_path_results_new_out_and_in_place(cp, general, op, k):
    host = _args(op, 3, k, np.float32, seed=k)
    assert _gpu.plan(op, 3, k, np.float32, True, devices.EMULATED).tier == TIERS[k]
    dev = [cp.asarray(a) for a in host]
    fn = getattr(csoftmax, op)
    _check(op, fn(*dev), host)
    out = cp.empty(host[0].shape, np.float32)
    assert fn(*dev, out=out) is out
    _check(op, out, host)
    # in place: out is an input itself (each input of the backward passes)
    for i in range(len(dev)):
        fresh = [cp.asarray(a) for a in host]
        assert fn(*fresh, out=fresh[i]) is fresh[i]
        _check(op, fresh[i], host)
    assert general == [] and not cp.violations


@pytest.mark.parametrize("dtype", (np.float16, np.float64), ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("op", ("softmax", "log_softmax_backward"))
def test_short_path_in_float16_and_float64(cp, general, op, dtype):
    host = _args(op, 4, 40, dtype, seed=2)
    got = getattr(csoftmax, op)(*[cp.asarray(a) for a in host])
    _check(op, got, host)
    assert general == []


def test_short_path_runs_on_the_arrays_device(cp, general):
    host = _args("softmax_backward", 3, 40, np.float32, seed=3)
    with cp.cuda.Device(1):
        dev = [cp.asarray(a) for a in host]
    got = csoftmax.softmax_backward(*dev)
    assert got.device.id == 1 and cp.cuda.runtime.getDevice() == 0
    _check("softmax_backward", got, host)
    assert [d for what, d in cp.calls if what in ("empty", "launch")] == [1, 1]
    assert general == [] and not cp.violations


def _declined(cp):
    """(name, op, call) of calls the short path leaves to the general path;
    call(x, g, h) gets device arrays of one (4, 40) float32 problem and its
    host copies."""
    return [
        ("where=", "softmax", lambda x, g, h: csoftmax.softmax(x, where=cp.asarray(np.ones(40, bool)))),
        ("dtype=", "softmax", lambda x, g, h: csoftmax.softmax(x, dtype=np.float64)),
        ("num_threads=", "softmax", lambda x, g, h: csoftmax.softmax(x, num_threads=2)),
        ("axis=0", "softmax", lambda x, g, h: csoftmax.softmax(x, axis=0)),
        ("axis as np.int64", "softmax", lambda x, g, h: csoftmax.softmax(x, axis=np.int64(-1))),
        ("1-D", "softmax", lambda x, g, h: csoftmax.softmax(x[0])),
        ("3-D", "softmax", lambda x, g, h: csoftmax.softmax(x.reshape(2, 2, 40))),
        ("transposed", "softmax", lambda x, g, h: csoftmax.softmax(x.T, axis=0)),
        ("negative row stride", "softmax", lambda x, g, h: csoftmax.softmax(x[::-1])),
        ("column step", "softmax", lambda x, g, h: csoftmax.softmax(x[:, ::2])),
        ("integer input", "softmax",
         lambda x, g, h: csoftmax.softmax(cp.asarray(np.arange(h.size, dtype=np.int32).reshape(h.shape) % 7))),
        ("empty", "softmax", lambda x, g, h: csoftmax.softmax(x[:0])),
        ("out Fortran-ordered", "softmax",
         lambda x, g, h: csoftmax.softmax(x, out=cp.asarray(np.asfortranarray(np.empty_like(h))))),
        ("out overlapping x", "log_softmax",
         lambda x, g, h: csoftmax.log_softmax(x[:2], out=x[1:3])),
        ("grad of another dtype", "softmax_backward",
         lambda x, g, h: csoftmax.softmax_backward(x, g.astype(np.float64))),
        ("grad sliced", "softmax_backward",
         lambda x, g, h: csoftmax.softmax_backward(x[:, :20], g[:, ::2])),
    ]


@pytest.mark.parametrize("case", range(16))
def test_other_calls_reach_the_general_path_with_its_results(cp, general, case):
    name, op, call = _declined(cp)[case]
    host = _args(op, 4, 40, np.float32, seed=case)
    x = cp.asarray(host[0])
    g = cp.asarray(host[1]) if len(host) > 1 else cp.asarray(host[0])
    got = call(x, g, host[0])
    assert general == [op], name
    # the same call with the short path switched off gives the same values
    x2 = cp.asarray(host[0])
    g2 = cp.asarray(host[1]) if len(host) > 1 else cp.asarray(host[0])
    orig = _gpu_fast.rows
    try:
        _gpu_fast.rows = lambda *a: None
        want = call(x2, g2, host[0])
    finally:
        _gpu_fast.rows = orig
    np.testing.assert_array_equal(got.get(), want.get())
    assert not cp.violations


def _bad_calls(cp):
    x = cp.asarray(np.zeros((3, 8), np.float32))
    g = cp.asarray(np.ones((3, 8), np.float32))
    with cp.cuda.Device(1):
        x1 = cp.asarray(np.zeros((3, 8), np.float32))
        out1 = cp.empty((3, 8), np.float32)
    return {
        "out of another shape": lambda: csoftmax.softmax(x, out=cp.empty((3, 9), np.float32)),
        "out of another dtype": lambda: csoftmax.log_softmax(x, out=cp.empty((3, 8), np.float64)),
        "out a NumPy array": lambda: csoftmax.softmax(x, out=np.empty((3, 8), np.float32)),
        "out on another device": lambda: csoftmax.softmax(x, out=out1),
        "grad on another device": lambda: csoftmax.softmax_backward(x, x1),
        "grad of another shape": lambda: csoftmax.softmax_backward(x, g[:, :4]),
        "grad a NumPy array": lambda: csoftmax.log_softmax_backward(x, np.ones((3, 8), np.float32)),
        "axis out of range": lambda: csoftmax.softmax(x, axis=2),
        "axis a bool": lambda: csoftmax.softmax(x, axis=True),
        "axis a float": lambda: csoftmax.softmax(x, axis=1.0),
        "complex input": lambda: csoftmax.softmax(cp.asarray(np.zeros((3, 8), np.complex64))),
        "num_threads 0": lambda: csoftmax.softmax(x, num_threads=0),
        "where of another shape": lambda: csoftmax.softmax(x, where=cp.asarray(np.ones(9, bool))),
    }


@pytest.mark.parametrize("case", range(13))
def test_wrong_calls_raise_what_the_general_path_raises(cp, case):
    name, call = list(_bad_calls(cp).items())[case]
    with pytest.raises(Exception) as fast:
        call()
    orig = _gpu_fast.rows
    try:
        _gpu_fast.rows = lambda *a: None
        with pytest.raises(Exception) as slow:
            call()
    finally:
        _gpu_fast.rows = orig
    assert type(fast.value) is type(slow.value) and str(fast.value) == str(slow.value), name
    assert not cp.violations
