"""The CUDA cross-entropy (cuda/cross_entropy.cu) on the CPU emulator.

The unchanged kernel text (softmax.cu + cross_entropy.cu, as NVRTC gets it)
is compiled by g++ (tests/cuda_emu) and driven through the unchanged
planning and launch code of csoftmax/_gpu_loss.py; results are compared with
the float64 reference (csoftmax/_loss_reference.py) and the CPU backend, for
every option, every tier (warp groups of 1..32 lanes, warp rows scalar and
vectorised, block with the row in shared memory, block through L2) and
float16/32/64. Shapes are small: the emulator runs a thread per CUDA thread.
The public function on CuPy arrays runs through the CuPy stand-in
(tests/cuda_emu/fake_cupy.py) on two fake devices.
"""

import numpy as np
import pytest

import csoftmax
from csoftmax import _gpu, _gpu_loss
from csoftmax._loss_reference import softmax_cross_entropy as reference
from cuda_emu import check_guards, devices, fake_cupy, guarded
from cuda_emu.module import EmuModule

pytestmark = pytest.mark.skipif(
    not __import__("shutil").which("g++"), reason="the CUDA emulator needs g++ with OpenMP"
)

PROPS = devices.EMULATED
SENTINEL = 4097.0


class _Device:
    id = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.fixture(scope="module")
def module():
    return EmuModule(_gpu_loss.source(), _gpu_loss.name_expressions(), PROPS, tag="xent")


@pytest.fixture
def emu(monkeypatch, module):
    monkeypatch.setattr(_gpu, "_device_of", lambda a: _Device())
    monkeypatch.setattr(_gpu, "_device_properties", lambda device_id: PROPS)
    monkeypatch.setattr(_gpu_loss, "_load_module", lambda device_id, names: module)
    monkeypatch.setattr(_gpu_loss, "_kernels", {})
    monkeypatch.setattr(_gpu_loss, "_raised_smem", {})
    return module


# ---------------------------------------------------------------- inputs

def _case(n, k, dtype, soft, seed, hostile=False):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, k)) * 3).astype(dtype)
    if hostile:
        x[0, : min(k, 3)] = [1e30, -1e30, 0.0][: min(k, 3)] if dtype != np.float16 else [6e4, -6e4, 0][: min(k, 3)]
        if n > 1:
            x[1, 0] = -np.inf
        if n > 2:
            x[2, -1] = np.nan
        if n > 3:
            x[3, :] = -np.inf
        if n > 4:
            x[4, k // 2] = np.inf
    if soft:
        t = rng.random((n, k)).astype(dtype)
        t[:, ::3] = 0  # zero targets (at -inf logits too: 0 * -inf = NaN, torch's formula)
        return x, None, t
    labels = rng.integers(0, k, n).astype(np.int64)
    if hostile and n > 1:
        labels[1] = 0  # the label at a -inf logit: loss inf
    return x, labels, None


def _weight(k, seed):
    return np.random.default_rng(seed + 7).random(k).astype(np.float64) + 0.25


def _mask(n, k, seed):
    m = np.random.default_rng(seed + 11).random((n, k)) < 0.7
    m[:, 0] = True
    if n > 2:
        m[2] = False  # a fully masked row
    return m


# Option sets: (soft, weight, label_smoothing, ignore, mask).
OPTIONS = {
    "int": (False, False, 0.0, False, False),
    "int-weight-smooth-ignore": (False, True, 0.1, True, False),
    "soft": (True, False, 0.0, False, False),
    "soft-weight-smooth": (True, True, 0.2, False, False),
    "int-mask-weight-smooth": (False, True, 0.1, False, True),
    "soft-mask": (True, False, 0.0, False, True),
}


def _emulate(x, labels, target, weight, mask, eps, ignore, reduction, want_grad, misalign=0):
    """(per-row losses or the total, gradient) from the emulated kernels, the
    inputs between NaN guard zones, the gradient's buffer guarded."""
    acc = _gpu_loss._ACC[x.dtype]
    xb, xv = guarded(x.shape, x.dtype, np.nan, misalign)
    xv[...] = x
    tv = None
    if target is not None:
        _, tv = guarded(target.shape, target.dtype, np.nan, misalign)
        tv[...] = target
    w = None if weight is None else weight.astype(acc)
    m = None if mask is None else np.ascontiguousarray(mask, dtype=np.uint8)
    gb = gv = None
    if want_grad:
        gb, gv = guarded(x.shape, x.dtype, SENTINEL, misalign)
    loss, total = _gpu_loss.run(xv, labels, tv, w, m, eps, ignore, reduction, gv)
    if want_grad:
        check_guards(gb, gv, SENTINEL)
    assert np.array_equal(xv, x, equal_nan=True), "the kernel wrote its input"
    res = loss if total is None else total[()]
    return res, (gv.copy() if want_grad else None)


TOL = {np.float16: (2e-3, 2e-2), np.float32: (2e-5, 1e-4), np.float64: (1e-12, 1e-10)}


def _close(got, want, dtype, what, scale=1.0):
    got = np.asarray(got, np.float64)
    want = np.asarray(want, np.float64)
    rtol, atol = TOL[dtype]
    assert np.array_equal(np.isnan(got), np.isnan(want)), f"{what}: NaN at different places"
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol * scale, err_msg=what)


def _run_case(x, labels, target, opts, seed, dtype, misalign=0, reductions=("mean", "none", "sum")):
    soft, weighted, eps, ignore, masked = opts
    n, k = x.shape
    weight = _weight(k, seed) if weighted else None
    mask = _mask(n, k, seed) if masked else None
    ign = None
    if ignore:
        ign = -100
        labels = labels.copy()
        labels[:: 3] = ign
    tgt = target if soft else labels
    x64 = x.astype(np.float64)
    for reduction in reductions:
        want_grad = reduction != "sum"
        got, grad = _emulate(x, None if soft else labels, target, weight, mask, eps, ign, reduction,
                             want_grad, misalign)
        ref_loss, ref_grad = reference(x64, tgt.astype(np.float64) if soft else tgt, label_smoothing=eps,
                                       ignore_index=ign, weight=weight, reduction=reduction, where=mask)
        _close(got, ref_loss, dtype, f"loss ({reduction})", scale=max(1.0, np.nanmax(np.abs(
            np.where(np.isfinite(ref_loss), ref_loss, 0)), initial=1.0)))
        if want_grad:
            _close(grad, ref_grad, dtype, f"grad ({reduction})")
        # The CPU backend on the same input (computed in float32 for float16).
        cpu = csoftmax.softmax_cross_entropy(x, tgt, label_smoothing=eps, ignore_index=ign,
                                             weight=weight, reduction=reduction, where=mask,
                                             return_grad=want_grad)
        cpu_loss, cpu_grad = cpu if want_grad else (cpu, None)
        _close(got, cpu_loss, dtype, f"loss vs CPU ({reduction})", scale=max(1.0, np.nanmax(np.abs(
            np.where(np.isfinite(cpu_loss), cpu_loss, 0)), initial=1.0)))
        if want_grad:
            _close(grad, cpu_grad, dtype, f"grad vs CPU ({reduction})")


# float32: every tier; K = 1 and 5 (groups of 1 and 8 lanes), 37 (odd: the
# scalar warp kernel), 64 (vectorised warp), 1500 (block, row in shared
# memory), 9000 (block through L2 on the emulated device: 36 KiB > 32 KiB).
TIERS = {1: "warp", 5: "warp", 37: "warp", 64: "warp", 1500: "block-smem", 9000: "block-l2"}


@pytest.mark.parametrize("k", list(TIERS))
@pytest.mark.parametrize("opts", list(OPTIONS))
def test_float32_every_tier_and_option_matches_the_reference_and_the_cpu(emu, k, opts):
    n = 3 if k > 1024 else 7
    x, labels, target = _case(n, k, np.float32, OPTIONS[opts][0], seed=k)
    soft = OPTIONS[opts][0]
    launch = _gpu_loss.plan(n, k, np.float32, soft, True, PROPS)
    assert launch.tier == TIERS[k]
    _run_case(x, labels, target, OPTIONS[opts], k, np.float32,
              reductions=("mean", "none", "sum") if k <= 1024 else ("mean",))


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
@pytest.mark.parametrize("k", [5, 37, 64, 1500])
@pytest.mark.parametrize("opts", ["int-weight-smooth-ignore", "soft-weight-smooth", "int-mask-weight-smooth"])
def test_float16_and_float64_match_the_reference_and_the_cpu(emu, dtype, k, opts):
    n = 3 if k > 1024 else 6
    x, labels, target = _case(n, k, dtype, OPTIONS[opts][0], seed=k + 1)
    _run_case(x, labels, target, OPTIONS[opts], k, dtype, reductions=("mean",))


@pytest.mark.parametrize("k", [37, 1500])
@pytest.mark.parametrize("opts", ["int-weight-smooth-ignore", "soft", "int-mask-weight-smooth"])
def test_hostile_logits_match_the_reference(emu, k, opts):
    # +-1e30, -inf at the label, a NaN, a row of -inf, +inf: torch's IEEE results
    x, labels, target = _case(5, k, np.float32, OPTIONS[opts][0], seed=3, hostile=True)
    _run_case(x, labels, target, OPTIONS[opts], 3, np.float32, reductions=("mean", "none"))


def test_unaligned_rows_take_the_scalar_kernels(emu):
    x, labels, _ = _case(6, 64, np.float32, False, seed=5)
    assert _gpu_loss.plan(6, 64, np.float32, False, False, PROPS).kernel.endswith(", 1>")
    _run_case(x, labels, None, OPTIONS["int-weight-smooth-ignore"], 5, np.float32, misalign=1,
              reductions=("mean",))


def test_every_label_ignored_gives_a_nan_mean_and_a_zero_gradient(emu):
    x, labels, _ = _case(4, 10, np.float32, False, seed=1)
    labels[:] = -100
    total, grad = _emulate(x, labels, None, None, None, 0.0, -100, "mean", True)
    assert np.isnan(total) and (grad == 0).all()
    total, _ = _emulate(x, labels, None, None, None, 0.0, -100, "sum", False)
    assert total == 0


def test_a_bad_label_is_refused_before_the_loss_kernel(emu):
    x, labels, _ = _case(5, 10, np.float32, False, seed=2)
    labels[3] = 10
    labels[4] = -1
    with pytest.raises(_gpu_loss.BadLabel, match="label 10 at flat index 3") as info:
        _emulate(x, labels, None, None, None, 0.0, None, "mean", True)
    assert info.value.row == 3
    labels[3] = -100  # ignore_index is not out of range; -1 still is
    with pytest.raises(_gpu_loss.BadLabel, match="label -1 at flat index 4"):
        _emulate(x, labels, None, None, None, 0.0, -100, "mean", True)


def test_the_total_is_the_same_bits_for_one_input(emu):
    x, labels, _ = _case(300, 5, np.float32, False, seed=9)
    a, _ = _emulate(x, labels, None, None, None, 0.1, None, "mean", False)
    b, _ = _emulate(x, labels, None, None, None, 0.1, None, "mean", False)
    assert a.tobytes() == b.tobytes()


def test_every_planned_kernel_is_among_the_compiled_names():
    names = _gpu_loss.name_expressions()
    assert len(names) == len(set(names)) == 3 * 12 + 2 + 1
    for dt in _gpu.NATIVE_DTYPES:
        assert set(_gpu_loss.group_names(dt)) <= set(names)
        for k in (1, 5, 37, 64, 1500, 9000, 100000):
            for soft in (False, True):
                for aligned in (False, True):
                    kernel = _gpu_loss.plan(3, k, dt, soft, aligned, devices.REAL["H100"]).kernel
                    assert set(_gpu_loss.module_names(dt, kernel)) <= set(_gpu_loss.group_names(dt))


def test_a_call_compiles_only_its_loss_kernel_and_the_two_small_ones(cp):
    x, labels, _ = _case(3, 37, np.float32, False, seed=1)
    csoftmax.softmax_cross_entropy(cp.asarray(x), cp.asarray(labels))
    (device, names), = cp.modules
    assert device == 0 and len(names) == 3 and names[0].startswith("csm_xent_warp<float, false, 1>")


# ---------------------------------------------------------------- the public door

TWO = (devices.EMULATED, dict(devices.EMULATED, name=b"emulated-1"))


@pytest.fixture
def cp(monkeypatch):
    yield from fake_cupy.installed(monkeypatch, TWO)


def _both(cp, *arrays):
    return [None if a is None else cp.asarray(a) for a in arrays]


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_public_function_on_cupy_arrays_matches_the_cpu(cp, dtype):
    x, labels, _ = _case(6, 40, dtype, False, seed=4)
    w = _weight(40, 4)
    dx, dy, dw = _both(cp, x, labels, w)
    loss, grad = csoftmax.softmax_cross_entropy(dx, dy, weight=dw, label_smoothing=0.1, return_grad=True)
    assert isinstance(loss, cp.ndarray) and loss.shape == () and loss.dtype == dtype
    assert isinstance(grad, cp.ndarray) and grad.dtype == dtype and grad.device.id == 0
    cl, cg = csoftmax.softmax_cross_entropy(x, labels, weight=w, label_smoothing=0.1, return_grad=True)
    _close(loss.get(), cl, dtype, "loss")
    _close(grad.get(), cg, dtype, "grad")
    assert not cp.violations


def test_public_soft_labels_on_another_axis_with_where_out_and_grad_out(cp):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 7, 4)).astype(np.float32)  # classes on axis 1
    t = rng.random((3, 7, 4)).astype(np.float32)
    where = rng.random((3, 7, 4)) < 0.8
    dx, dt, dwh = _both(cp, x, t, where)
    out = cp.full((3, 4), 7.0, dtype=np.float32)
    gout = cp.full((3, 7, 4), 7.0, dtype=np.float32)
    loss, grad = csoftmax.softmax_cross_entropy(dx, dt, axis=1, where=dwh, reduction="none",
                                                return_grad=True, out=out, grad_out=gout)
    assert loss is out and grad is gout
    cl, cg = csoftmax.softmax_cross_entropy(x, t, axis=1, where=where, reduction="none", return_grad=True)
    _close(out.get(), cl, np.float32, "loss")
    _close(gout.get(), cg, np.float32, "grad")


def test_public_call_runs_on_the_device_of_its_arrays(cp):
    x, labels, _ = _case(4, 300, np.float32, False, seed=6)
    with cp.cuda.Device(1):
        dx, dy = _both(cp, x, labels)
    loss, grad = csoftmax.softmax_cross_entropy(dx, dy, return_grad=True)  # device 0 is current
    assert loss.device.id == 1 and grad.device.id == 1
    assert not cp.violations
    _close(loss.get(), csoftmax.softmax_cross_entropy(x, labels), np.float32, "loss")
    assert cp.modules and all(dev == 1 for dev, _ in cp.modules)


def test_public_errors_name_their_argument_and_write_nothing(cp):
    x, labels, _ = _case(4, 10, np.float32, False, seed=7)
    dx, dy = _both(cp, x, labels)
    bad = labels.copy()
    bad[2] = 10
    out = cp.full((4,), 7.0, dtype=np.float32)
    gout = cp.full((4, 10), 7.0, dtype=np.float32)
    with pytest.raises(ValueError, match="target has the label 10 at flat index 2"):
        csoftmax.softmax_cross_entropy(dx, cp.asarray(bad), reduction="none", return_grad=True,
                                       out=out, grad_out=gout)
    assert (out.get() == 7).all() and (gout.get() == 7).all()
    with pytest.raises(TypeError, match="target: expected CuPy arrays"):
        csoftmax.softmax_cross_entropy(dx, labels)
    with pytest.raises(ValueError, match="weight must be non-negative"):
        csoftmax.softmax_cross_entropy(dx, dy, weight=cp.asarray(-np.ones(10)))
    with pytest.raises(ValueError, match="out has shape"):
        csoftmax.softmax_cross_entropy(dx, dy, reduction="none", out=cp.empty((3,), dtype=np.float32))
    with pytest.raises(ValueError, match="reduction"):
        csoftmax.softmax_cross_entropy(dx, dy, reduction="avg")
    with cp.cuda.Device(1):
        dy1 = cp.asarray(labels)
    with pytest.raises(ValueError, match="logits on device 0, target on device 1"):
        csoftmax.softmax_cross_entropy(dx, dy1)
    assert not cp.violations


def test_public_empty_batch_mean_is_nan(cp):
    dx = cp.asarray(np.zeros((0, 5), np.float32))
    dy = cp.asarray(np.zeros(0, np.int64))
    assert np.isnan(csoftmax.softmax_cross_entropy(dx, dy).get())
    loss, grad = csoftmax.softmax_cross_entropy(dx, dy, reduction="none", return_grad=True)
    assert loss.shape == (0,) and grad.shape == (0, 5)


# ---------------------------------------------------------------- mutants

def _mutant_failures(source, cases, tag, monkeypatch):
    from cuda_emu.module import EmuError

    names = set()
    for opts, dtype, n, k in cases:
        dt = np.dtype(dtype)
        names |= {_gpu_loss.plan(n, k, dt, OPTIONS[opts][0], True, PROPS).kernel,
                  _gpu_loss._labels_kernel(dt), _gpu_loss._TOTAL}
    module = EmuModule(source, sorted(names), PROPS, tag=tag)
    failures = []
    with monkeypatch.context() as mp:
        mp.setattr(_gpu, "_device_of", lambda a: _Device())
        mp.setattr(_gpu, "_device_properties", lambda device_id: PROPS)
        mp.setattr(_gpu_loss, "_load_module", lambda device_id, names: module)
        mp.setattr(_gpu_loss, "_kernels", {})
        for opts, dtype, n, k in cases:
            x, labels, target = _case(n, k, np.dtype(dtype).type, OPTIONS[opts][0], seed=k)
            try:
                _run_case(x, labels, target, OPTIONS[opts], k, np.dtype(dtype).type)
            except (AssertionError, EmuError) as exc:
                failures.append(f"{opts} {dtype} N={n} K={k}: {str(exc).splitlines()[0][:200]}")
    return failures


from cuda_emu.mutants import XENT_MUTANTS, apply  # noqa: E402


@pytest.mark.parametrize("mutant", XENT_MUTANTS, ids=[m.name for m in XENT_MUTANTS])
def test_cross_entropy_mutant_is_caught(mutant, monkeypatch):
    failures = _mutant_failures(apply(_gpu_loss.source(), mutant), mutant.cases, "xent-mutant", monkeypatch)
    assert failures, f"mutant {mutant.name} ({mutant.why}) survived {mutant.cases}"
