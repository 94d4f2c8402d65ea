"""The split tier (rows over several blocks, cuda/softmax.cu csm_rows_split_*)
matches the float64 reference, the other tiers' special-value and mask
semantics, and gives the same bits on every run of one plan.

Emulated with small shapes: the device of tests/cuda_emu/devices.py with 4
SMs (so up to 7 rows split, and inputs()' hostile rows 1..6 are all there)
and the chunk floor lowered from 32 KiB to 2000 bytes, so K = 5000 splits
into 5 chunks of 1000 elements (float16, float32) or 10 of 500 (float64).
"""
import numpy as np
import pytest

from csoftmax import _gpu
from cuda_emu import EmuModule, devices, install
from cuda_emu.reference import DTYPES, HUGE, check, inputs, masked_inputs
from cuda_emu.runner import emulate

pytestmark = pytest.mark.skipif(
    not __import__("shutil").which("g++"), reason="the CUDA emulator needs g++ with OpenMP"
)

PROPS = dict(devices.EMULATED, multiProcessorCount=4)
MIN_CHUNK_BYTES = 2000
K = 5000
SPLIT_OPS = ("softmax", "log_softmax", "logsumexp")


# Per test (the library is built once and cached): the public-door test
# below needs csoftmax._gpu's own seams, not this fixture's.
@pytest.fixture
def emulated():
    module = EmuModule(_gpu.source(), _gpu.name_expressions(), PROPS)
    with pytest.MonkeyPatch.context() as mp:
        install(mp, module, PROPS)
        mp.setattr(_gpu, "_SPLIT_MIN_CHUNK_BYTES", MIN_CHUNK_BYTES)
        yield module


def _assert_split(op, n, k, dtype, aligned=True):
    launch = _gpu.plan(op, n, k, dtype, aligned, PROPS)
    assert launch.tier == "split" and -(-k // launch.chunk) >= 3, launch
    return launch


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
@pytest.mark.parametrize("op", SPLIT_OPS)
def test_split_rows_match_the_float64_reference(emulated, op, dtype):
    _assert_split(op, 7, K, dtype)
    a, _ = inputs(op, 7, K, dtype, seed=3)
    check(op, emulate(op, a), a, None)


@pytest.mark.parametrize("op", SPLIT_OPS)
def test_unaligned_split_rows_take_the_scalar_kernels_and_match(emulated, op):
    k = K - 1  # odd: no vector loads
    assert "float, 1>" in _assert_split(op, 3, k, np.float32, aligned=False).kernel
    a, _ = inputs(op, 3, k, np.float32, seed=4)
    check(op, emulate(op, a, misalign=1), a, None)


@pytest.mark.parametrize("kind", ("rows", "strided", "broadcast"))
@pytest.mark.parametrize("op", SPLIT_OPS)
def test_masked_split_rows_match_the_masked_reference(emulated, op, kind):
    _assert_split(op, 5, K, np.float32)
    a, _, mask = masked_inputs(op, 5, K, np.float32, kind, seed=6)
    check(op, emulate(op, a, mask=mask), a, None, mask=mask)


def _special_rows(dtype):
    """Rows whose special values sit in one chunk or fill whole chunks."""
    huge = HUGE[np.dtype(dtype)]
    rows = np.zeros((7, K), np.float64)
    rows[0, 2500] = np.nan  # NaN in one chunk: NaN row (logsumexp NaN)
    rows[1, 4999] = np.inf  # +inf in the last chunk: NaN row (logsumexp +inf)
    rows[2, :] = -np.inf  # all -inf: NaN row (logsumexp -inf)
    rows[3, :] = -huge
    rows[3, 3100] = huge  # +-huge: an exact one-hot, chunk maxima far apart
    rows[4, :] = np.linspace(-5.0, 5.0, K)
    rows[4, :2000] = -np.inf  # whole chunks of -inf in a finite row: exactly 0
    rows[5, 1000:2000] = np.nan  # a chunk of NaN only (its max is -inf)
    rows[6, :] = np.linspace(-80.0, 0.0, K)  # chunks' exps many orders apart
    return rows.astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
def test_special_rows_in_split_rows_follow_the_other_tiers(emulated, dtype):
    x = _special_rows(dtype)
    _assert_split("softmax", 7, K, dtype)
    out = emulate("softmax", x).astype(np.float64)
    log = emulate("log_softmax", x).astype(np.float64)
    for r in (0, 1, 2, 5):
        assert np.isnan(out[r]).all() and np.isnan(log[r]).all(), r
    one_hot = np.zeros(K)
    one_hot[3100] = 1.0
    assert np.array_equal(out[3], one_hot)
    assert (out[4, :2000] == 0.0).all() and (log[4, :2000] == -np.inf).all()
    check("softmax", out[4:5].astype(dtype), x[4:5], None)
    check("softmax", out[6:].astype(dtype), x[6:], None)
    check("log_softmax", log[6:].astype(dtype), x[6:], None)
    lse = emulate("logsumexp", x).astype(np.float64)
    assert np.isnan(lse[0]) and lse[1] == np.inf and lse[2] == -np.inf and np.isnan(lse[5])
    check("logsumexp", lse[3:5].astype(dtype), x[3:5], None)
    check("logsumexp", lse[6:].astype(dtype), x[6:], None)


def test_split_rows_give_the_same_bits_on_every_run_and_in_place(emulated):
    a, _ = inputs("softmax", 7, K, np.float32, seed=8)
    first = emulate("softmax", a)
    assert np.array_equal(first, emulate("softmax", a), equal_nan=True)
    assert np.array_equal(first, emulate("softmax", a, in_place="a"), equal_nan=True)


def test_split_rows_through_the_public_door_on_another_device(monkeypatch):
    # csoftmax.softmax / log_softmax / logsumexp on CuPy arrays of device 1
    # while device 0 is current: the partials' workspace, both launches and
    # the kernel lookups happen under device 1 (the stand-in raises
    # WrongDevice otherwise); results as the CPU backend's.
    import sys

    import csoftmax
    from cuda_emu.fake_cupy import FakeCuPy

    fake = FakeCuPy((PROPS, dict(PROPS, name=b"emulated-1")))
    fake.reset()
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setattr(_gpu, "_SPLIT_MIN_CHUNK_BYTES", MIN_CHUNK_BYTES)
    for cached in (_gpu._device_properties, _gpu._load_module):
        cached.cache_clear()
    for table in ("_kernels", "_raised_smem", "_plans"):
        monkeypatch.setattr(_gpu, table, {})
    try:
        a, _ = inputs("softmax", 3, K, np.float32, seed=9)
        with fake.cuda.Device(1):
            x1 = fake.asarray(a)
        for op in SPLIT_OPS:
            got = getattr(csoftmax, op)(x1)
            assert got.device.id == 1 and fake.cuda.runtime.getDevice() == 0
            np.testing.assert_allclose(got.get(), getattr(csoftmax, op)(a), rtol=2e-6, atol=1e-7, equal_nan=True)
        assert [dev for what, dev in fake.calls if what == "launch"] == [1] * 6  # two per call
        assert not fake.violations
    finally:
        for cached in (_gpu._device_properties, _gpu._load_module):
            cached.cache_clear()
        fake.reset()
