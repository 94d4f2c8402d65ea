"""On a real GPU: the kernels through CuPy match the reference and the CPU backend.

Marked ``gpu``; skipped, with the reason, where CuPy or a CUDA device is
missing (no GPU exists on the development machines or in CI). These are the
final word on what the emulator cannot show: real timing, real races, the
PTX float16 conversions, and 64-bit offsets of N*K >= 2^31.
"""
import numpy as np
import pytest

from csoftmax import _gpu
from cuda_emu.reference import DTYPES, OPS, check, inputs, reference


def _gpu_reason():
    try:
        import cupy
    except Exception as exc:  # ImportError, or a CuPy that fails to load its libraries
        return f"CuPy is not importable ({type(exc).__name__}: {exc})"
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return "no CUDA device"
    except Exception as exc:
        return f"no usable CUDA device ({type(exc).__name__}: {exc})"
    return None


_REASON = _gpu_reason()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(_REASON is not None, reason=f"needs a GPU: {_REASON}")]

KS = (1, 2, 3, 31, 32, 33, 64, 127, 1000, 1024, 1025, 4097, 9000, 65536)
CASES = [(op, dtype, n, k) for op in OPS for dtype in DTYPES for k in KS for n in (1, 7, 64)
         if not (op == "softmax_jacobian" and k > 4097)]


def _run(op, a, b=None):
    import cupy as cp

    n, k = a.shape
    da = cp.asarray(a)
    db = None if b is None else cp.asarray(b)
    out = cp.full(_gpu.out_shape(op, n, k), 4097.0, a.dtype)
    _gpu.run(op, da, db, out)
    return out


def _cpu_tolerance(dtype):
    # -ftz=true flushes float32 subnormals on the GPU; the CPU keeps them.
    return float(np.finfo(np.float32).tiny) if dtype == np.float32 else 0.0


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-{np.dtype(c[1]).name}-N{c[2]}-K{c[3]}" for c in CASES])
def test_matches_reference_and_cpu_backend(case):
    op, dtype, n, k = case
    a, b = inputs(op, n, k, dtype)
    out = _run(op, a, b).get()
    ref = reference(op, a, b)
    check(op, out, a, b, ref)
    import csoftmax

    if not hasattr(csoftmax, op):
        return  # the CPU backend has no such function yet
    cpu = getattr(csoftmax, op)(a) if b is None else getattr(csoftmax, op)(a, b)
    assert np.array_equal(np.isnan(cpu), np.isnan(out))
    check(op, cpu, a, b, ref)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
@pytest.mark.parametrize("k", (3, 32, 33, 1025))
def test_jacobian_is_symmetric_bit_for_bit(dtype, k):
    a, _ = inputs("softmax_jacobian", 7, k, dtype, seed=5)
    jac = _run("softmax_jacobian", a).get()
    assert np.array_equal(jac, np.swapaxes(jac, 1, 2), equal_nan=True)


@pytest.mark.parametrize("misalign", (1, 2))
@pytest.mark.parametrize("op", OPS)
def test_unaligned_views_take_the_scalar_path(op, misalign):
    import cupy as cp

    a, b = inputs(op, 7, 1000, np.float32, seed=1)
    flat = cp.empty(a.size + misalign, a.dtype)
    da = flat[misalign:].reshape(a.shape)
    da[...] = cp.asarray(a)
    db = None if b is None else cp.asarray(b)
    out = cp.empty(_gpu.out_shape(op, 7, 1000), a.dtype)
    _gpu.run(op, da, db, out)
    check(op, out.get(), a, b)


def _free_bytes():
    import cupy as cp

    return cp.cuda.Device().mem_info[0]


@pytest.mark.parametrize("op", ("softmax", "log_softmax", "softmax_backward"))
def test_more_than_2_to_the_31_elements_in_float16(op):
    import cupy as cp

    n, k = (1 << 21) + 3, 1024  # N*K = 2^31 + 3072
    arrays = 3 if op == "softmax_backward" else 2
    if _free_bytes() < 1.3 * arrays * n * k * 2:
        pytest.skip("not enough GPU memory for 2^31 float16 elements per array")
    rng = cp.random.default_rng(0)
    a = rng.standard_normal((n, k), dtype=cp.float32).astype(cp.float16)
    b = rng.standard_normal((n, k), dtype=cp.float32).astype(cp.float16) if op == "softmax_backward" else None
    if op == "softmax_backward":
        _gpu.run("softmax", a, None, a)  # a genuine softmax output, in place
    out = cp.empty_like(a)
    _gpu.run(op, a, b, out)
    rows = np.array([0, 1, n // 2, n - 2, n - 1])
    host_b = None if b is None else b[rows].get()
    check(op, out[rows].get(), a[rows].get(), host_b)
    del a, b, out
    cp.get_default_memory_pool().free_all_blocks()


def test_jacobian_beyond_2_to_the_31_elements_in_float16():
    import cupy as cp

    n, k = 520, 2048  # N*K*K = 2^31 + 2^23 * 4
    if _free_bytes() < 1.3 * n * k * k * 2:
        pytest.skip("not enough GPU memory for a 4.4 GB Jacobian")
    a, _ = inputs("softmax_jacobian", n, k, np.float16, seed=9)
    out = cp.empty((n, k, k), cp.float16)
    _gpu.run("softmax_jacobian", cp.asarray(a), None, out)
    rows = [0, n // 2, n - 1]
    check("softmax_jacobian", out[rows].get(), a[rows], None)
    del out
    cp.get_default_memory_pool().free_all_blocks()


def test_info_reports_the_device():
    report = _gpu.info()
    assert report["gpu"] is True and report["device"] and report["compute_capability"]


# ---- where= masks, logsumexp and several devices, on the real GPU

# every tier: 70000 float32 is block-l2 for the backward ops (> smem) and the
# split tier for the forward ones (7 rows < 2 x SMs)
MASK_KS = (3, 33, 1000, 1025, 4096, 70000)


@pytest.mark.parametrize("kind", ("rows", "broadcast", "strided"))
@pytest.mark.parametrize("k", MASK_KS)
@pytest.mark.parametrize("op", ("softmax", "log_softmax", "softmax_backward", "log_softmax_backward",
                                "logsumexp", "softmax_jacobian"))
def test_masked_ops_match_the_masked_reference(op, k, kind):
    import cupy as cp

    from cuda_emu.reference import masked_inputs

    if op == "softmax_jacobian" and k > 1025:
        pytest.skip("a K^2 block per row")
    a, b, mask = masked_inputs(op, 7, k, np.float32, kind, seed=21)
    if mask.ndim == 2 and mask.strides[0] not in (0, k):
        wide = cp.zeros((7, mask.strides[0]), cp.uint8)  # keep the row stride on the device
        wide[:, :k] = cp.asarray(np.ascontiguousarray(mask))
        dmask = wide[:, :k]
    elif mask.ndim == 2 and mask.strides[0] == 0:
        dmask = cp.broadcast_to(cp.asarray(np.ascontiguousarray(mask[0])), mask.shape)
    else:
        dmask = cp.asarray(np.ascontiguousarray(mask))
    out = cp.full(_gpu.out_shape(op, 7, k), 4097.0, np.float32)
    _gpu.run(op, cp.asarray(a), None if b is None else cp.asarray(b), out, mask=dmask)
    check(op, out.get(), a, b, mask=mask)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
@pytest.mark.parametrize("k", (1, 33, 1000, 4097, 70000))
def test_logsumexp_matches_scipy_semantics(dtype, k):
    import cupy as cp

    a, _ = inputs("logsumexp", 7, k, dtype, seed=22)
    out = cp.empty((7,), dtype)
    _gpu.run("logsumexp", cp.asarray(a), None, out)
    check("logsumexp", out.get(), a, None)


def test_a_second_device_runs_its_own_arrays():
    import cupy as cp

    if cp.cuda.runtime.getDeviceCount() < 2:
        pytest.skip("one device")
    import csoftmax

    # block-smem above 48 KiB, the opt-in (300 rows: more than 2 x SMs, not split)
    a, _ = inputs("softmax", 300, 20000, np.float32, seed=23)
    with cp.cuda.Device(1):
        x1 = cp.asarray(a)
    assert cp.cuda.runtime.getDevice() == 0
    y = csoftmax.softmax(x1)
    assert y.device.id == 1
    check("softmax", y.get(), a, None)
    with pytest.raises(ValueError, match="on one device"):
        csoftmax.softmax(x1, out=cp.empty_like(cp.asarray(a)))


# ---- softmax_cross_entropy (cuda/cross_entropy.cu) on the device

XENT_KS = (1, 5, 33, 64, 1000, 1025, 4096, 70000)  # warp groups, warp, block-smem, block-l2


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
@pytest.mark.parametrize("k", XENT_KS)
@pytest.mark.parametrize("soft", (False, True), ids=("labels", "soft"))
def test_cross_entropy_matches_the_reference_and_the_cpu(dtype, k, soft):
    import cupy as cp

    import csoftmax
    from csoftmax._loss_reference import softmax_cross_entropy as xent_reference

    rng = np.random.default_rng(k)
    n = 7
    x = (rng.standard_normal((n, k)) * 3).astype(dtype)
    target = rng.random((n, k)).astype(dtype) if soft else rng.integers(0, k, n)
    weight = rng.random(k) + 0.25
    where = rng.random((n, k)) < 0.8
    where[:, 0] = True
    kw = dict(label_smoothing=0.1, weight=weight, where=where, return_grad=True)
    for reduction in ("mean", "none"):
        loss, grad = csoftmax.softmax_cross_entropy(
            cp.asarray(x), cp.asarray(target), reduction=reduction,
            **dict(kw, weight=cp.asarray(weight), where=cp.asarray(where)))
        ref_loss, ref_grad = xent_reference(x.astype(np.float64), target.astype(np.float64) if soft else target,
                                            reduction=reduction, label_smoothing=0.1, weight=weight, where=where)
        cpu_loss, cpu_grad = csoftmax.softmax_cross_entropy(x, target, reduction=reduction, **kw)
        rtol = {np.float16: 2e-3, np.float32: 2e-5, np.float64: 1e-12}[np.dtype(dtype).type]
        for got, ref, cpu in ((loss.get(), ref_loss, cpu_loss), (grad.get(), ref_grad, cpu_grad)):
            np.testing.assert_allclose(got, ref, rtol=rtol, atol=rtol * 10)
            np.testing.assert_allclose(got, cpu, rtol=rtol, atol=rtol * 10)


# ---- the split tier: few long rows over several blocks per row

SPLIT_SHAPES = ((8, 1 << 20), (64, 50257), (1, 65536))


@pytest.mark.parametrize("shape", SPLIT_SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("op", ("softmax", "log_softmax", "logsumexp"))
def test_split_rows_match_the_reference_with_the_same_bits_every_run(op, shape):
    import cupy as cp

    n, k = shape
    props = _gpu._device_properties(cp.cuda.Device().id)
    launch = _gpu.plan(op, n, k, np.float32, True, props)
    if n >= 2 * props["multiProcessorCount"]:
        pytest.skip("enough rows to fill this device without splitting")
    assert launch.tier == "split", launch
    a, _ = inputs(op, n, k, np.float32, seed=31)
    first = _run(op, a)
    check(op, first.get(), a, None)
    assert bool(cp.array_equal(first, _run(op, a), equal_nan=True))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
@pytest.mark.parametrize("op", ("softmax", "log_softmax", "logsumexp"))
def test_masked_split_rows_match_the_masked_reference(op, dtype):
    import cupy as cp

    from cuda_emu.reference import masked_inputs

    a, _, mask = masked_inputs(op, 7, 1 << 17, dtype, "rows", seed=32)
    assert _gpu.plan(op, 7, 1 << 17, dtype, True, _gpu._device_properties(cp.cuda.Device().id)).tier == "split"
    out = cp.full(_gpu.out_shape(op, 7, 1 << 17), 4097.0, dtype)
    _gpu.run(op, cp.asarray(a), None, out, mask=cp.asarray(mask))
    check(op, out.get(), a, None, mask=mask)
