"""softmax_cross_entropy: torch's cross_entropy, fused with its gradient.

Against torch.nn.functional.cross_entropy (value and autograd gradient) where
torch is installed, and always against the float64 reference
(csoftmax/_loss_reference.py): every option, hostile logits, K = 1, every
label ignored, soft labels that do not sum to 1, finite differences, every
layout and axis, thread counts (bitwise) and instruction sets.
"""
import itertools
import warnings

import numpy as np
import pytest

import csoftmax
from csoftmax import _engine
from csoftmax._loss_reference import softmax_cross_entropy as ref

from conftest import make_layout, LAYOUTS, rows_around_the_normal_exps

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # the comparisons with torch skip; the reference tests run
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed "
                                 "(pip install torch==2.13.0 for the comparisons)")

xent = csoftmax.softmax_cross_entropy
INF = np.inf
TOL = {np.float32: dict(rtol=2e-5, atol=2e-6), np.float64: dict(rtol=1e-12, atol=1e-14)}
REDUCTIONS = ("mean", "sum", "none")


def _inputs(rng, n, k, dtype, soft, scale=3.0):
    x = (scale * rng.standard_normal((n, k))).astype(dtype)
    if soft:
        y = rng.random((n, k)).astype(dtype)  # does not sum to 1
    else:
        y = rng.integers(0, k, n)
    return x, y


def _torch(x, y, weight=None, **kw):
    """torch's loss and autograd gradient of loss.sum() (loss for 'none')."""
    kw = dict(kw)
    if kw.get("ignore_index") is None:
        kw["ignore_index"] = -100  # torch's default; no label here is -100
    xt = torch.tensor(x, requires_grad=True)
    wt = None if weight is None else torch.tensor(weight)
    loss = F.cross_entropy(xt, torch.tensor(y), weight=wt, **kw)
    loss.sum().backward()
    return loss.detach().numpy(), xt.grad.numpy()


def _close(got, want, dtype):
    np.testing.assert_allclose(np.asarray(got, np.float64), np.asarray(want, np.float64),
                               equal_nan=True, **TOL[dtype])


OPTIONS = [dict(soft=soft, label_smoothing=eps, weighted=w, reduction=red, ignore_index=ign)
           for soft, eps, w, red, ign in itertools.product(
               (False, True), (0.0, 0.1, 1.0), (False, True), REDUCTIONS, (None, 3))
           if not (soft and ign is not None)]


def _call_args(rng, opt, x, dtype):
    k = x.shape[-1]
    kw = dict(label_smoothing=opt["label_smoothing"], reduction=opt["reduction"],
              ignore_index=opt["ignore_index"])
    w = (rng.random(k) + 0.1).astype(dtype) if opt["weighted"] else None
    return kw, w


@needs_torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("opt", OPTIONS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_loss_and_gradient_match_torch_for_every_option(opt, dtype):
    rng = np.random.default_rng(1)
    for n, k in [(37, 11), (5, 300), (64, 10)]:
        x, y = _inputs(rng, n, k, dtype, opt["soft"])
        kw, w = _call_args(rng, opt, x, dtype)
        loss, grad = xent(x, y, weight=w, return_grad=True, **kw)
        want_loss, want_grad = _torch(x, y, weight=w, **kw)
        assert loss.dtype == dtype and grad.dtype == dtype and grad.shape == x.shape
        _close(loss, want_loss, dtype)
        _close(grad, want_grad, dtype)
        # The loss alone is the same number.
        np.testing.assert_array_equal(xent(x, y, weight=w, **kw), loss)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("opt", OPTIONS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_loss_and_gradient_match_the_float64_reference_for_every_option(opt, dtype, isa):
    rng = np.random.default_rng(2)
    for n, k in [(37, 11), (3, 1000), (20, 33)]:
        x, y = _inputs(rng, n, k, dtype, opt["soft"])
        kw, w = _call_args(rng, opt, x, dtype)
        loss, grad = xent(x, y, weight=w, return_grad=True, **kw)
        want_loss, want_grad = ref(x, y, weight=w, **kw)
        _close(loss, want_loss, dtype)
        _close(grad, want_grad, dtype)


HOSTILE = np.array([
    [1e30, -1e30, 0, 1],       # huge finite logits
    [1000, 1, 0, 0],           # log_softmax [0, -999, ...] must stay exact
    [-INF, 0, 1, 2],           # the label (0) at -inf: loss inf
    [0, -INF, -INF, 5],        # -inf away from the label: finite
    [np.nan, 0, 1, 2],         # NaN: NaN row
    [INF, 0, 1, 2],            # +inf: NaN row
    [-INF, -INF, -INF, -INF],  # all -inf: NaN row
    [1e-40, 0, 0, 0],          # a denormal (float32)
    [-1e30, -1e30, -1e30, -1e30],
    [88, -88, 0, 1e-30],
])
HOSTILE_LABELS = np.array([0, 1, 0, 3, 1, 1, 2, 3, 0, 1])
HOSTILE_CASES = [
    dict(), dict(label_smoothing=0.2), dict(label_smoothing=1.0),
    dict(weight=[0, 1, 2, 0.5]), dict(weight=[0, 1, 2, 0.5], label_smoothing=0.3),
    dict(ignore_index=1, label_smoothing=0.1), dict(ignore_index=1),
    dict(soft=True), dict(soft=True, label_smoothing=0.1),
    dict(soft=True, weight=[0, 1, 2, 0.5], label_smoothing=0.1),
]


def _hostile(case, dtype):
    case = dict(case)
    soft = case.pop("soft", False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x = HOSTILE.astype(dtype)
    if soft:
        y = np.random.default_rng(3).random(x.shape).astype(dtype)
        y[:, 1] = 0  # zero probability at a -inf logit: torch's 0 * -inf = NaN
    else:
        y = HOSTILE_LABELS
    if case.get("weight") is not None:
        case["weight"] = np.array(case["weight"], dtype)
    return x, y, case


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case", HOSTILE_CASES, ids=str)
def test_hostile_logits_match_the_reference(case, reduction, dtype, isa):
    x, y, kw = _hostile(case, dtype)
    loss, grad = xent(x, y, reduction=reduction, return_grad=True, **kw)
    want_loss, want_grad = ref(x, y, reduction=reduction, **kw)
    _close(loss, want_loss, dtype)
    _close(grad, want_grad, dtype)


@needs_torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case", HOSTILE_CASES, ids=str)
def test_hostile_logits_match_torch(case, reduction, dtype):
    x, y, kw = _hostile(case, dtype)
    loss, grad = xent(x, y, reduction=reduction, return_grad=True, **kw)
    want_loss, want_grad = _torch(x, y, reduction=reduction, **kw)
    _close(loss, want_loss, dtype)
    _close(grad, want_grad, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_stable_losses_are_finite_and_exact(dtype):
    x = np.array([[1000, 1, 0], [0, -INF, 3], [-1e30, 1e30, 0]], dtype)
    loss = xent(x, np.array([1, 2, 1]), reduction="none")
    want = np.array([999.0, np.log1p(np.exp(-3.0)), 0.0])
    np.testing.assert_allclose(loss, want, rtol=1e-6)
    assert xent(x[:2], np.array([0, 1]), reduction="none")[1] == INF  # label at -inf


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_one_class_gives_zero_loss_and_gradient(dtype, reduction):
    x = np.array([[3.0], [-7.0], [1e30]], dtype)
    loss, grad = xent(x, np.zeros(3, np.int64), reduction=reduction, return_grad=True)
    np.testing.assert_array_equal(loss, np.zeros(3) if reduction == "none" else 0.0)
    np.testing.assert_array_equal(grad, np.zeros_like(x))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_every_label_ignored_gives_nan_mean_zero_sum_and_zero_gradient(dtype, label_smoothing):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((6, 5)).astype(dtype)
    y = np.full(6, 2)
    kw = dict(ignore_index=2, label_smoothing=label_smoothing, return_grad=True)
    loss, grad = xent(x, y, **kw)
    assert np.isnan(loss)  # torch: 0 / 0
    np.testing.assert_array_equal(grad, 0)
    loss, grad = xent(x, y, reduction="sum", **kw)
    assert loss == 0
    np.testing.assert_array_equal(xent(x, y, reduction="none", **kw)[0], 0)
    if torch is not None:
        assert np.isnan(_torch(x, y, ignore_index=2, label_smoothing=label_smoothing)[0])


def test_soft_labels_need_not_sum_to_one():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((8, 7))
    t = rng.random((8, 7)) * 3
    loss, grad = xent(x, t, reduction="none", return_grad=True)
    logp = x - np.log(np.exp(x).sum(-1, keepdims=True))
    np.testing.assert_allclose(loss, -(t * logp).sum(-1), rtol=1e-13)
    # The gradient is p * sum(t) - t, not p - t.
    p = np.exp(logp)
    np.testing.assert_allclose(grad, p * t.sum(-1, keepdims=True) - t, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("opt", [o for o in OPTIONS if o["reduction"] != "none"],
                         ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_gradient_matches_finite_differences(opt):
    rng = np.random.default_rng(6)
    x, y = _inputs(rng, 5, 7, np.float64, opt["soft"], scale=1.0)
    kw, w = _call_args(rng, opt, x, np.float64)
    _, grad = xent(x, y, weight=w, return_grad=True, **kw)
    h = 1e-6
    fd = np.empty_like(x)
    for idx in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        fd[idx] = (xent(xp, y, weight=w, **kw) - xent(xm, y, weight=w, **kw)) / (2 * h)
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("soft", [False, True])
def test_results_are_bitwise_identical_for_every_thread_count(dtype, soft):
    rng = np.random.default_rng(7)
    x, y = _inputs(rng, 3000, 37, dtype, soft)
    w = rng.random(37).astype(dtype)
    for red in REDUCTIONS:
        kw = dict(weight=w, reduction=red, return_grad=True, label_smoothing=0.1)
        l1, g1 = xent(x, y, num_threads=1, **kw)
        for nt in (2, 3, 8):
            ln, gn = xent(x, y, num_threads=nt, **kw)
            np.testing.assert_array_equal(ln, l1)
            np.testing.assert_array_equal(gn, g1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k", [33, 1000, 5000, 70000])
@pytest.mark.parametrize("soft,masked", [(False, False), (True, False), (False, True)])
def test_a_rows_loss_and_gradient_do_not_depend_on_the_rows_around_it(k, soft, masked, dtype, isa):
    # Rows are taken in chunks (their sums, one vectorised log, then their
    # gradients): a row alone must give the bits it gives among others, at
    # chunk sizes from many rows (K = 33) to one (K = 70000), with rows that
    # end early (an ignored label, every class masked) and NaN rows among them.
    rng = np.random.default_rng(k)
    n = {33: 150, 1000: 70, 5000: 30, 70000: 3}[k]
    x, y = _inputs(rng, n, k, dtype, soft)
    x[1, 2] = np.nan
    where = None
    if masked:
        where = rng.random((n, k)) < 0.7
        where[2] = False
        where[np.arange(n), y] = True
        where[2] = False  # a row with no class: its label is on a masked class
    kw = dict(reduction="none", return_grad=True, label_smoothing=0.1)
    if not soft:
        y[0] = 3
        kw["ignore_index"] = 3  # row 0, and every other row labelled 3, is ignored
    loss, grad = xent(x, y, where=where, **kw)
    for r in range(n):
        lr, gr = xent(x[r:r + 1], y[r:r + 1], where=None if where is None else where[r:r + 1], **kw)
        np.testing.assert_array_equal(lr.view(np.uint8), loss[r:r + 1].view(np.uint8))
        np.testing.assert_array_equal(gr.view(np.uint8), grad[r:r + 1].view(np.uint8))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k", [16, 100, 1000])
def test_loss_matches_the_reference_whichever_side_of_the_normal_exps_a_row_falls(k, dtype, isa):
    # Under AVX2 a row whose x - max all have normal exps skips the exp's
    # test register by register. Rows just at and past that edge, NaN and
    # -inf rows among them, labelled on their smallest logit (whose exp the
    # loss and the gradient then depend on), must keep the reference's values.
    x = rows_around_the_normal_exps(k, dtype)
    y = np.argmin(np.where(np.isnan(x), np.inf, x), axis=1)
    loss, grad = xent(x, y, reduction="none", return_grad=True)
    want_loss, want_grad = ref(x, y, reduction="none")
    _close(loss, want_loss, dtype)
    _close(grad, want_grad, dtype)


def test_a_large_call_runs_on_several_threads_and_matches_one():
    if not _engine.openmp_enabled():
        pytest.skip("built without OpenMP")
    rng = np.random.default_rng(8)
    x, y = _inputs(rng, 4096, 100, np.float32, False)
    l1, g1 = xent(x, y, return_grad=True, num_threads=1)
    l2, g2 = xent(x, y, return_grad=True, num_threads=2)
    assert l1 == l2 and np.array_equal(g1, g2)


# ---- layouts, axes, N-D, dtypes ---------------------------------------------------

@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("soft", [False, True])
def test_every_layout_gives_the_c_order_result(layout, soft):
    rng = np.random.default_rng(9)
    x, y = _inputs(rng, 23, 45, np.float32, soft)
    want = xent(x, y, reduction="none", return_grad=True, label_smoothing=0.1)
    xl = make_layout(x, layout)
    yl = make_layout(y, layout) if soft else y
    got = xent(xl, yl, reduction="none", return_grad=True, label_smoothing=0.1)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.parametrize("axis", [0, 1, 2, -1, -3])
@pytest.mark.parametrize("soft", [False, True])
def test_any_axis_of_an_nd_array(axis, soft):
    rng = np.random.default_rng(10)
    x = rng.standard_normal((4, 5, 6))
    k = x.shape[axis]
    if soft:
        y = rng.random(x.shape)
    else:
        y = rng.integers(0, k, np.delete(x.shape, axis % 3))
    for red in REDUCTIONS:
        loss, grad = xent(x, y, axis=axis, reduction=red, return_grad=True, weight=np.arange(k) + 1.0)
        want_loss, want_grad = ref(x, y, axis=axis, reduction=red, weight=np.arange(k) + 1.0)
        np.testing.assert_allclose(loss, want_loss, rtol=1e-12)
        np.testing.assert_allclose(grad, want_grad, rtol=1e-11, atol=1e-15)
        assert grad.shape == x.shape


@needs_torch
def test_nd_logits_with_the_class_axis_second_match_torch():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((3, 5, 4, 2))  # torch: (N, C, d1, d2)
    y = rng.integers(0, 5, (3, 4, 2))
    loss, grad = xent(x, y, axis=1, return_grad=True, label_smoothing=0.1, ignore_index=0)
    want_loss, want_grad = _torch(x, y, label_smoothing=0.1, ignore_index=0)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-12)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-11, atol=1e-15)


def test_one_dimensional_logits_and_a_scalar_label():
    x = np.array([1.0, 2.0, 3.0])
    loss, grad = xent(x, np.int64(2), return_grad=True)
    want_loss, want_grad = ref(x[None], np.array([2]))
    np.testing.assert_allclose(loss, want_loss, rtol=1e-14)
    np.testing.assert_allclose(grad, want_grad[0], rtol=1e-14)


@pytest.mark.parametrize("label_dtype", [np.int64, np.int32, np.int16, np.uint8, np.uint64])
def test_every_integer_label_dtype(label_dtype):
    rng = np.random.default_rng(12)
    x, y = _inputs(rng, 17, 9, np.float64, False)
    want = xent(x, y, return_grad=True)
    got = xent(x, y.astype(label_dtype), return_grad=True)
    assert got[0] == want[0] and np.array_equal(got[1], want[1])


def test_float16_logits_are_computed_in_float32_and_returned_as_float16():
    rng = np.random.default_rng(13)
    x, y = _inputs(rng, 20, 10, np.float16, False)
    loss, grad = xent(x, y, return_grad=True, reduction="none")
    assert loss.dtype == np.float16 and grad.dtype == np.float16
    l32, g32 = xent(x.astype(np.float32), y, return_grad=True, reduction="none")
    np.testing.assert_array_equal(loss, l32.astype(np.float16))
    np.testing.assert_array_equal(grad, g32.astype(np.float16))
    assert isinstance(xent(x, y), np.float16)


def test_dtype_sets_the_compute_and_result_dtype():
    rng = np.random.default_rng(14)
    x, y = _inputs(rng, 20, 10, np.float64, False)
    loss, grad = xent(x, y, dtype=np.float32, return_grad=True)
    assert isinstance(loss, np.float32) and grad.dtype == np.float32
    want = xent(x.astype(np.float32), y, return_grad=True)
    assert loss == want[0] and np.array_equal(grad, want[1])
    loss16 = xent(x, y, dtype="float16")
    assert isinstance(loss16, np.float16)


def test_integer_logits_compute_in_float64():
    x = np.array([[1, 2, 3], [0, 0, 5]])
    loss = xent(x, np.array([0, 2]))
    assert isinstance(loss, np.float64)
    np.testing.assert_allclose(loss, ref(x, np.array([0, 2]))[0], rtol=1e-15)


def test_scalar_reductions_return_numpy_scalars_of_the_dtype():
    x = np.zeros((2, 3), np.float32)
    assert isinstance(xent(x, np.array([0, 1])), np.float32)
    assert isinstance(xent(x.astype(np.float64), np.array([0, 1]), reduction="sum"), np.float64)


# ---- where= ---------------------------------------------------------------------------

@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
@pytest.mark.parametrize("weighted", [False, True])
def test_where_masks_classes_as_the_reference(soft, label_smoothing, weighted, isa):
    rng = np.random.default_rng(15)
    x, y = _inputs(rng, 30, 12, np.float64, soft)
    where = rng.random((30, 12)) < 0.7
    where[0] = False            # a fully masked row
    where[1] = True
    x[2, ~where[2]] = np.nan    # NaN at masked entries takes no part
    if not soft:
        y[3] = np.flatnonzero(~where[3])[0] if (~where[3]).any() else y[3]  # label on a masked class
    w = rng.random(12) + 0.1 if weighted else None
    for red in REDUCTIONS:
        kw = dict(where=where, weight=w, label_smoothing=label_smoothing, reduction=red)
        loss, grad = xent(x, y, return_grad=True, **kw)
        want_loss, want_grad = ref(x, y, **kw)
        np.testing.assert_allclose(loss, want_loss, rtol=1e-12, equal_nan=True)
        np.testing.assert_allclose(grad, want_grad, rtol=1e-11, atol=1e-15)
        assert (grad[~where] == 0).all()


def test_where_all_true_equals_no_mask_and_labels_on_masked_classes_give_inf():
    rng = np.random.default_rng(16)
    x, y = _inputs(rng, 10, 6, np.float32, False)
    a = xent(x, y, reduction="none", return_grad=True)
    b = xent(x, y, reduction="none", return_grad=True, where=np.ones(6, bool))
    np.testing.assert_allclose(a[0], b[0], rtol=1e-6)
    np.testing.assert_allclose(a[1], b[1], rtol=1e-6, atol=1e-7)
    where = np.ones((10, 6), bool)
    where[np.arange(10), y] = False
    assert (xent(x, y, reduction="none", where=where) == INF).all()


def test_masked_array_logits_take_their_mask_as_where():
    rng = np.random.default_rng(17)
    x, y = _inputs(rng, 5, 4, np.float64, True)
    mask = np.zeros((5, 4), bool)
    mask[:, 0] = True
    got = xent(np.ma.MaskedArray(x, mask), y, reduction="none")
    np.testing.assert_array_equal(got, xent(x, y, reduction="none", where=~mask))


# ---- out=, grad_out= --------------------------------------------------------------------

def test_grad_out_and_out_are_filled_and_returned():
    rng = np.random.default_rng(18)
    x, y = _inputs(rng, 12, 7, np.float32, False)
    want = xent(x, y, reduction="none", return_grad=True)
    out = np.full(12, np.nan, np.float32)
    gout = np.full((12, 7), np.nan, np.float32)
    loss, grad = xent(x, y, reduction="none", return_grad=True, out=out, grad_out=gout)
    assert loss is out and grad is gout
    np.testing.assert_array_equal(out, want[0])
    np.testing.assert_array_equal(gout, want[1])
    # Reused for a scalar reduction, and in a Fortran-ordered buffer.
    gf = np.asfortranarray(np.full((12, 7), np.nan, np.float32))
    loss, grad = xent(x, y, return_grad=True, grad_out=gf)
    assert grad is gf
    np.testing.assert_array_equal(gf, xent(x, y, return_grad=True)[1])


def test_grad_out_may_be_the_logits_themselves():
    rng = np.random.default_rng(19)
    x, y = _inputs(rng, 12, 7, np.float64, False)
    want = xent(x, y, return_grad=True, label_smoothing=0.1)
    loss, grad = xent(x, y, return_grad=True, label_smoothing=0.1, grad_out=x)
    assert grad is x and loss == want[0]
    np.testing.assert_array_equal(x, want[1])


# ---- errors: a clear exception naming the argument, nothing written -------------------

def _bad_calls():
    x = np.zeros((4, 3), np.float32)
    y = np.array([0, 1, 2, 1])
    t = np.full((4, 3), 1 / 3, np.float32)
    return [
        (dict(target=np.array([0, 1, 3, 1])), ValueError, "target"),
        (dict(target=np.array([0, -1, 2, 1])), ValueError, "target"),
        (dict(target=np.array([0, -100, 2, 1]), ignore_index=-5), ValueError, "target"),
        (dict(target=np.array([0, 1, 2])), ValueError, "target"),
        (dict(target=np.zeros((4, 3), np.int64)), ValueError, "target"),
        (dict(target=np.zeros((4, 2), np.float32)), ValueError, "target"),
        (dict(target=np.array([True, False, True, False])), TypeError, "target"),
        (dict(target=np.array(["a", "b", "c", "d"])), TypeError, "target"),
        (dict(target=t, ignore_index=0), ValueError, "ignore_index"),
        (dict(ignore_index=1.5), TypeError, "ignore_index"),
        (dict(ignore_index=True), TypeError, "ignore_index"),
        (dict(weight=np.array([1.0, -1.0, 1.0])), ValueError, "weight"),
        (dict(weight=np.array([1.0, np.nan, 1.0])), ValueError, "weight"),
        (dict(weight=np.ones(4)), ValueError, "weight"),
        (dict(reduction="avg"), ValueError, "reduction"),
        (dict(reduction=None), TypeError, "reduction"),
        (dict(label_smoothing=-0.1), ValueError, "label_smoothing"),
        (dict(label_smoothing=1.5), ValueError, "label_smoothing"),
        (dict(label_smoothing=np.nan), ValueError, "label_smoothing"),
        (dict(label_smoothing="0.1"), TypeError, "label_smoothing"),
        (dict(return_grad="yes"), TypeError, "return_grad"),
        (dict(where=np.ones((4, 3), np.int8)), TypeError, "where"),
        (dict(where=np.ones((5, 3), bool)), ValueError, "where"),
        (dict(out=np.zeros(4, np.float32)), ValueError, "out"),  # scalar reduction
        (dict(out=np.zeros(5, np.float32), reduction="none"), ValueError, "out"),
        (dict(out=np.zeros(4, np.float64), reduction="none"), ValueError, "out"),
        (dict(grad_out=np.zeros((4, 3), np.float32)), ValueError, "grad_out"),  # no return_grad
        (dict(grad_out=np.zeros((4, 4), np.float32), return_grad=True), ValueError, "grad_out"),
        (dict(num_threads=0), ValueError, "num_threads"),
        (dict(axis=2), np.exceptions.AxisError, "axis"),
        (dict(dtype=np.int32), TypeError, "dtype"),
    ], x, y


def test_every_bad_argument_raises_naming_it_and_writes_nothing():
    calls, x, y = _bad_calls()
    for kw, exc, name in calls:
        kw = dict(kw)
        target = kw.pop("target", y)
        out = kw.get("out")
        gout = kw.get("grad_out")
        if out is not None:
            kw["out"] = out = np.full_like(out, 7)
        if gout is not None:
            kw["grad_out"] = gout = np.full_like(gout, 7)
        with pytest.raises(exc, match=name):
            xent(x, target, **kw)
        for buf in (out, gout):
            if buf is not None:
                assert (buf == 7).all(), (kw, "a refused call wrote into a buffer")


def test_a_bad_label_with_buffers_given_writes_nothing():
    x = np.zeros((4, 3), np.float32)
    out = np.full(4, 7, np.float32)
    gout = np.full((4, 3), 7, np.float32)
    with pytest.raises(ValueError, match="target has the label 5"):
        xent(x, np.array([0, 1, 5, 1]), reduction="none", return_grad=True, out=out,
             grad_out=gout)
    assert (out == 7).all() and (gout == 7).all()


def test_cupy_logits_with_a_numpy_target_are_a_type_error_naming_target():
    # CuPy calls run on the GPU (tests/test_gpu_cross_entropy.py); a mix is refused.
    class FakeCupy:  # recognised by its module, as CuPy arrays are
        __module__ = "cupy._core.core"
    with pytest.raises(TypeError, match="target: expected CuPy arrays"):
        xent(FakeCupy(), np.zeros(1, np.int64))


def test_empty_batches():
    x = np.zeros((0, 5), np.float32)
    y = np.zeros(0, np.int64)
    assert np.isnan(xent(x, y))
    assert xent(x, y, reduction="sum") == 0
    loss, grad = xent(x, y, reduction="none", return_grad=True)
    assert loss.shape == (0,) and grad.shape == (0, 5)


def test_main_jobs_training_example_learns_as_the_numpy_formula(capsys):
    from csoftmax import __main__ as main_job
    params = dict(main_job.TRAIN, n=1024, epochs=3)
    fused, ref = main_job.training_example(params)
    losses = [h[0] for h in fused]
    assert losses[-1] < losses[0]
    np.testing.assert_allclose(losses, [h[0] for h in ref], rtol=1e-4)
    assert fused[-1][1] > 0.8  # accuracy on separable blobs
    assert "Training example" in capsys.readouterr().out


def test_bfloat16_logits_and_dtype_compute_in_float32():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    bf16 = np.dtype(ml_dtypes.bfloat16)
    rng = np.random.default_rng(20)
    x, y = _inputs(rng, 16, 10, np.float32, False)
    xb = x.astype(bf16)
    loss, grad = xent(xb, y, reduction="none", return_grad=True)
    assert loss.dtype == bf16 and grad.dtype == bf16
    l32, g32 = xent(xb.astype(np.float32), y, reduction="none", return_grad=True)
    np.testing.assert_array_equal(loss, l32.astype(bf16))
    np.testing.assert_array_equal(grad, g32.astype(bf16))
    assert xent(x, y, dtype="bfloat16").dtype == bf16
