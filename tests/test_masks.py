"""where= on every function: the semantics of jax.nn.softmax(where=), read
inside the kernels, on every layout, ISA and thread count."""
import warnings

import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

import csoftmax
from csoftmax import _reference
from conftest import assert_same_bits, make_layout

ROW_OPS = ["softmax", "log_softmax", "softmax_backward", "log_softmax_backward"]
MASKED_VALUE = {"softmax": 0.0, "log_softmax": -np.inf, "softmax_backward": 0.0,
                "log_softmax_backward": 0.0}
# K on both sides of the short-row path (32) and of a sum block (128).
SHAPES = [(1, 1), (7, 5), (33, 10), (17, 32), (9, 33), (5, 200), (3, 1000)]
TOL = {np.float32: 2e-6, np.float64: 1e-13}


def _mask(shape, kind, rng):
    n, k = shape
    if kind == "rows":  # one mask per row, with a fully masked row
        w = rng.random(shape) > 0.35
        w[n // 2] = False
        return w
    if kind == "columns":  # one (K,) mask for every row
        return rng.random(k) > 0.35
    if kind == "row_flags":  # (N, 1): whole rows on or off
        return (np.arange(n) % 3 != 1)[:, None]
    if kind == "all":
        return np.ones(shape, dtype=bool)
    raise ValueError(kind)


def _call(op, x, w, **kw):
    f = getattr(csoftmax, op)
    if op.endswith("backward"):
        y = csoftmax.softmax(x, where=w) if op == "softmax_backward" else \
            csoftmax.log_softmax(x, where=w)
        g = np.random.default_rng(9).standard_normal(x.shape).astype(x.dtype)
        return f(y, g, where=w, **kw), (y, g)
    return f(x, where=w, **kw), (x,)


def _ref(op, inputs, w):
    return _reference.reference(op, *inputs, where=w)


def _check(got, want, dtype):
    got = np.asarray(got, np.float64)
    assert np.array_equal(np.isnan(got), np.isnan(want)), "NaN pattern differs"
    inf = np.isinf(want)
    assert np.array_equal(got[inf], want[inf])
    fin = np.isfinite(want)
    np.testing.assert_allclose(got[fin], want[fin], rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind", ["rows", "columns", "row_flags"])
@pytest.mark.parametrize("op", ROW_OPS)
def test_matches_float64_reference(isa, op, shape, kind, dtype):
    rng = np.random.default_rng(sum(shape))
    x = (3 * rng.standard_normal(shape)).astype(dtype)
    w = _mask(shape, kind, rng)
    got, inputs = _call(op, x, w)
    _check(got, _ref(op, inputs, w), dtype)


@pytest.mark.parametrize("op", ROW_OPS + ["softmax_jacobian"])
@pytest.mark.parametrize("layout", ["c", "fortran", "strided_cols", "negative", "readonly"])
@pytest.mark.parametrize("mask_layout", ["c", "fortran", "strided_cols"])
def test_any_layout_gives_the_c_order_bits(op, layout, mask_layout):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((37, 45)).astype(np.float32)
    w = _mask(x.shape, "rows", rng)
    want, inputs = _call(op, x, w)
    xs = [make_layout(a, layout) for a in inputs]
    f = getattr(csoftmax, op)
    got = f(*xs, where=make_layout(w, mask_layout))
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("op", ROW_OPS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_masked_entries_are_exact_whatever_the_input_holds_there(op, dtype):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((40, 50)).astype(dtype)
    w = _mask(x.shape, "rows", rng)
    x[~w] = rng.choice([np.nan, np.inf, -np.inf, 1e30], size=(~w).sum())
    got, _ = _call(op, x, w)
    assert np.all(got[~w] == MASKED_VALUE[op])
    assert not np.isnan(got[w]).any()


@pytest.mark.parametrize("op", ROW_OPS + ["softmax_jacobian", "logsumexp"])
@pytest.mark.parametrize("k", [1, 10, 33, 1000])
def test_fully_masked_row_gives_no_nan_and_no_warning(op, k):
    x = np.random.default_rng(5).standard_normal((4, k))
    w = np.ones(x.shape, bool)
    w[1] = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        if op == "logsumexp":
            got = csoftmax.logsumexp(x, where=w)
            assert got[1] == -np.inf and np.isfinite(got[[0, 2, 3]]).all()
            return
        got, _ = _call(op, x, w)
    assert not np.isnan(got).any()
    if op == "softmax_jacobian":
        assert np.all(got[1] == 0)
    else:
        assert np.all(got[1] == MASKED_VALUE[op])


def test_unmasked_special_values_follow_the_unmasked_rules():
    x = np.array([[1.0, np.nan, 2.0], [np.inf, 1.0, 0.0], [-np.inf, -np.inf, 5.0],
                  [-np.inf, 3.0, 4.0]])
    w = np.array([[True, True, True], [True, True, True], [True, True, False],
                  [True, True, False]])
    got = csoftmax.softmax(x, where=w)
    assert np.isnan(got[0]).all() and np.isnan(got[1]).all()
    # Unmasked entries all -inf: NaN there (as jax gives), the masked one 0.
    assert np.isnan(got[2, :2]).all() and got[2, 2] == 0
    np.testing.assert_array_equal(got[3], [0.0, 1.0, 0.0])
    np.testing.assert_array_equal(csoftmax.log_softmax(x, where=w)[3], [-np.inf, 0.0, -np.inf])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("op", ROW_OPS + ["softmax_jacobian"])
@pytest.mark.parametrize("shape", [(64, 10), (50, 33), (8, 300)])
def test_all_true_mask_gives_the_unmasked_bits(isa, op, shape, dtype):
    x = np.random.default_rng(6).standard_normal(shape).astype(dtype)
    w = np.ones(shape, bool)
    got, inputs = _call(op, x, w)
    np.testing.assert_array_equal(got, getattr(csoftmax, op)(*inputs))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("op", ["softmax", "log_softmax", "logsumexp"])
@pytest.mark.parametrize("shape", [(20000, 64), (4000, 300)])
def test_all_true_mask_gives_the_unmasked_bits_in_every_row_of_a_large_batch(isa, op, shape, dtype):
    # The unmasked kernels take the logs of a chunk of rows' sums in one
    # vectorised loop, the masked ones row by row: a difference of rounding
    # between the two (1 ulp in a few rows of 20000) shows only in a batch
    # this large.
    x = (np.random.default_rng(8).standard_normal(shape) * 3).astype(dtype)
    f = getattr(csoftmax, op)
    np.testing.assert_array_equal(f(x, where=np.ones(shape, bool)), f(x))


@pytest.mark.parametrize("op", ROW_OPS + ["softmax_jacobian", "logsumexp"])
@pytest.mark.parametrize("layout", ["c", "fortran"])
def test_bitwise_identical_for_every_thread_count(op, layout):
    rng = np.random.default_rng(7)
    shape = (300, 120) if op == "softmax_jacobian" else (2000, 130)
    x = make_layout(rng.standard_normal(shape).astype(np.float32), layout)
    w = make_layout(_mask(shape, "rows", rng), layout)
    f = getattr(csoftmax, op)
    if op.endswith("backward"):
        args = (csoftmax.softmax(x, where=w), rng.standard_normal(shape).astype(np.float32))
    else:
        args = (x,)
    results = [f(*args, where=w, num_threads=t) for t in (1, 2, 3, 8)]
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])


@pytest.mark.parametrize("op", ROW_OPS + ["logsumexp"])
def test_mask_broadcasts_along_any_axis_of_an_nd_array(op):
    rng = np.random.default_rng(8)
    x = rng.standard_normal((3, 7, 5))
    w = rng.random((7, 1)) > 0.3  # broadcasts over axes 0 and 2
    f = getattr(csoftmax, op)
    if op.endswith("backward"):
        y = rng.random(x.shape)
        g = rng.standard_normal(x.shape)
        got = f(y, g, axis=1, where=w)
        want = _reference.reference(op, np.moveaxis(y, 1, -1), np.moveaxis(g, 1, -1),
                                    where=np.moveaxis(np.broadcast_to(w, x.shape), 1, -1))
        want = np.moveaxis(want, -1, 1)
    else:
        got = f(x, axis=1, where=w)
        want = _reference.reference(op, np.moveaxis(x, 1, -1),
                                    where=np.moveaxis(np.broadcast_to(w, x.shape), 1, -1))
        if op != "logsumexp":
            want = np.moveaxis(want, -1, 1)
    _check(got, want, np.float64)


def test_mask_with_tuple_axes_masks_the_flattened_rows():
    rng = np.random.default_rng(10)
    x = rng.standard_normal((4, 3, 5))
    w = rng.random((4, 3, 5)) > 0.5
    got = csoftmax.softmax(x, axis=(1, 2), where=w)
    want = _reference.softmax(x.reshape(4, 15), where=w.reshape(4, 15)).reshape(4, 3, 5)
    _check(got, want, np.float64)


@pytest.mark.parametrize("op", ["softmax", "log_softmax", "softmax_jacobian"])
def test_masked_array_mask_acts_as_where(op):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((6, 9))
    keep = rng.random(x.shape) > 0.3
    keep[2] = False
    ma = np.ma.MaskedArray(x, mask=~keep)
    got = getattr(csoftmax, op)(ma)
    assert isinstance(got, np.ma.MaskedArray)
    want = getattr(csoftmax, op)(x, where=keep)
    np.testing.assert_array_equal(np.ma.getdata(got), want)
    if op == "softmax_jacobian":
        np.testing.assert_array_equal(got.mask, ~keep[:, :, None] | ~keep[:, None, :])
    else:
        np.testing.assert_array_equal(got.mask, ~keep)


def test_masked_array_combines_with_where():
    x = np.arange(12.0).reshape(3, 4)
    ma = np.ma.MaskedArray(x, mask=[[1, 0, 0, 0]] * 3)
    w = np.array([True, True, False, True])
    got = csoftmax.softmax(ma, where=w)
    np.testing.assert_array_equal(got.data, csoftmax.softmax(x, where=np.array([0, 1, 0, 1], bool)))


def test_masked_array_backward_and_logsumexp():
    rng = np.random.default_rng(12)
    x = rng.standard_normal((5, 8))
    keep = rng.random(x.shape) > 0.4
    keep[0] = False
    y = csoftmax.softmax(x, where=keep)
    g = rng.standard_normal(x.shape)
    got = csoftmax.softmax_backward(np.ma.MaskedArray(y, mask=~keep), g)
    np.testing.assert_array_equal(got.data, csoftmax.softmax_backward(y, g, where=keep))
    lse = csoftmax.logsumexp(np.ma.MaskedArray(x, mask=~keep))
    assert isinstance(lse, np.ma.MaskedArray) and lse.mask[0] and not lse.mask[1:].any()
    np.testing.assert_array_equal(lse.data, csoftmax.logsumexp(x, where=keep))


@pytest.mark.parametrize("bad", [np.ones((3, 4), np.int64), np.ones((3, 4), np.float32),
                                 [[1, 0, 1, 0]] * 3])
def test_a_mask_that_is_not_bool_is_a_type_error(bad):
    with pytest.raises(TypeError, match="where must be a boolean array"):
        csoftmax.softmax(np.ones((3, 4)), where=bad)


@pytest.mark.parametrize("op", ROW_OPS + ["softmax_jacobian", "logsumexp"])
@pytest.mark.parametrize("shape", [(2, 4), (3,), (3, 3), (2, 3, 4)])
def test_a_mask_that_does_not_broadcast_is_a_value_error(op, shape):
    x = np.ones((3, 4))
    f = getattr(csoftmax, op)
    args = (x, x) if op.endswith("backward") else (x,)
    with pytest.raises(ValueError, match=r"where has shape .* does not broadcast"):
        f(*args, where=np.ones(shape, bool))


def test_padded_sequences_example():
    # The README's example: logits of sequences padded to a common length.
    lengths = np.array([3, 1, 4])
    logits = np.random.default_rng(13).standard_normal((3, 4)).astype(np.float32)
    mask = np.arange(4) < lengths[:, None]
    p = csoftmax.softmax(logits, where=mask)
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-6)
    assert np.all(p[~mask] == 0)
    for i, n in enumerate(lengths):
        np.testing.assert_allclose(p[i, :n], csoftmax.softmax(logits[i, :n]), rtol=1e-6)


hostile = st.sampled_from([0.0, 1.0, -1.0, 1e30, -1e30, np.inf, -np.inf, np.nan,
                           5e-324, -5e-324, 1e-310, 88.0, -104.0, 700.0])


@given(x=hnp.arrays(np.float64, hnp.array_shapes(min_dims=2, max_dims=2, max_side=40),
                    elements=st.one_of(hostile, st.floats(-1e3, 1e3))),
       seed=st.integers(0, 2**32 - 1),
       op=st.sampled_from(["softmax", "log_softmax", "logsumexp"]),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_hostile_values_match_the_reference(x, seed, op, dtype):
    w = np.random.default_rng(seed).random(x.shape) > 0.4
    with np.errstate(over="ignore"):
        xd = x.astype(dtype)
    got = getattr(csoftmax, op)(xd, where=w)
    want = _reference.reference(op, xd, where=w)
    _check(got, want, dtype)


def test_matches_jax_where_installed():
    jax = pytest.importorskip("jax", reason="JAX is not installed")
    import jax.numpy as jnp
    rng = np.random.default_rng(14)
    x = rng.standard_normal((16, 12)).astype(np.float32)
    w = rng.random(x.shape) > 0.3
    w[3] = False
    x[5, ~w[5]] = np.nan
    jx, jw = jnp.asarray(x), jnp.asarray(w)
    g = rng.standard_normal(x.shape).astype(np.float32)
    for name in ("softmax", "log_softmax"):
        fn = getattr(jax.nn, name)
        want, vjp = jax.vjp(lambda v: fn(v, where=jw), jx)
        got = getattr(csoftmax, name)(x, where=w)
        np.testing.assert_allclose(got, np.asarray(want), rtol=2e-6, atol=1e-7)
        # The backward pass is jax's vector-Jacobian product of the masked
        # function (NaN under the mask would poison jax's: rows 5 excluded).
        dx = getattr(csoftmax, name + "_backward")(got, g, where=w)
        want_dx = np.asarray(vjp(jnp.asarray(g))[0])
        rows = np.arange(16) != 5
        np.testing.assert_allclose(dx[rows], want_dx[rows], rtol=2e-5, atol=1e-6)
    lse = np.asarray(jax.nn.logsumexp(jx, axis=-1, where=jw))
    np.testing.assert_allclose(csoftmax.logsumexp(x, where=w), lse, rtol=2e-6)


def test_readme_masks_example_runs():
    import pathlib
    import re
    readme = (pathlib.Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("### Masks: padded sequences", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)
    scope = {"np": np, "csoftmax": csoftmax}
    exec(compile(code, "README.md", "exec"), scope)
    assert np.all(scope["attn"][~scope["mask"]] == 0)
    np.testing.assert_allclose(scope["attn"].sum(axis=1), 1, rtol=1e-6)
    assert np.all(scope["dx"][~scope["mask"]] == 0)


def test_masked_jacobian_rows_and_columns_are_zero_beside_a_nan_row():
    x = np.array([[1.0, np.nan, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0]])
    w = np.array([[True, True, False, True], [True, False, True, True]])
    got = csoftmax.softmax_jacobian(x, where=w)
    assert np.all(got[0, 2, :] == 0) and np.all(got[0, :, 2] == 0)
    assert np.isnan(got[0, 0, 0])
    _check(got, _reference.softmax_jacobian(x, where=w), np.float64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("op", ROW_OPS + ["logsumexp"])
def test_interleaved_masked_rows_give_the_c_order_bits(isa, op, dtype):
    # The masked family (and logsumexp) gathers interleaved rows a group at
    # a time into contiguous rows, the mask with them, and computes them as
    # C order's rows (csm_masked_staged), short rows in any layout too. Rows
    # of a few elements and rows of thousands; the data, the mask or the
    # output interleaved or column-strided; a mask per row and one shared by
    # every row.
    from csoftmax import _engine

    g, gs = _engine.CONSTANTS["stage_rows"], _engine.CONSTANTS["stage_rows_short"]
    rng = np.random.default_rng(11)
    for n, k in ((2 * gs + 7, 10), (2 * gs + 23, 45), (g + 5, 5000)):
        x = (3 * rng.standard_normal((n, k))).astype(dtype)
        x[1, ::7] = -np.inf
        x[2, 5] = np.nan
        x[g + 1, -3] = 1e30
        for kind in ("rows", "columns"):
            w = _mask((n, k), kind, rng)
            want, inputs = _call(op, x, w)
            f = getattr(csoftmax, op)
            fort = [np.asfortranarray(a) for a in inputs]
            wf = np.asfortranarray(w) if w.ndim == 2 else w[::-1].copy()[::-1]
            for threads in (1, 2):
                apart = [make_layout(a, "strided_cols") for a in inputs]
                wa = make_layout(w, "strided_cols") if w.ndim == 2 else w
                for xs, ws in ((fort, w), (fort, wf), (inputs, wf), (apart, wa)):
                    got = f(*xs, where=ws, num_threads=threads)
                    np.testing.assert_array_equal(got, want)
                if op == "logsumexp":
                    for xs in (fort, apart):
                        np.testing.assert_array_equal(f(*xs, num_threads=threads), f(*inputs))
                    continue
                out = np.empty_like(fort[0])
                assert f(*inputs, where=w, out=out, num_threads=threads) is out
                np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("op", ["softmax", "log_softmax", "logsumexp"])
def test_masked_rows_give_each_rows_own_bits_in_any_row_layout(isa, op, dtype):
    # Short masked rows go sixteen at a time through the lane layout, the
    # mask through a 16 x 16 byte transpose that reads past a row's K bytes
    # where the rows beyond it are the mask's own, byte by byte elsewhere
    # (the last groups, a mask of rows going backwards); rows up to 256 go
    # two at a time (a logsumexp pair with an infinite max row by row).
    # Each row, alone, takes neither: every group and every row layout must
    # give its bits.
    rng = np.random.default_rng(21)
    f = getattr(csoftmax, op)
    n = 3 * 16 + 5
    for k in (1, 5, 10, 16, 17, 31, 32, 33, 128, 256, 257):
        x = (3 * rng.standard_normal((2 * n, k))).astype(dtype)
        x[rng.random(x.shape) < 0.1] = -np.inf
        x[3, 0] = np.nan
        x[7, -1] = 1e30
        x[10, k // 2] = np.inf
        x[13] = -0.0
        w = rng.random((2 * n, k)) > 0.3
        w[5] = False
        shared = rng.random(k) > 0.3
        for xs, ws in ((x[:n], w[:n]), (x[::2], w[::2]), (x[::-1][:n], w[::-1][:n]),
                       (x[:n], w[1::2]), (x[:n], shared), (x[:n], shared[::-1].copy()[::-1])):
            want = [f(xs[i:i + 1], where=ws[i:i + 1] if ws.ndim == 2 else ws) for i in range(n)]
            for threads in (1, 2):
                got = f(xs, where=ws, num_threads=threads)
                np.testing.assert_array_equal(got, np.concatenate(want), err_msg=f"K = {k}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_masked_rows_are_the_unmasked_rows_of_the_minus_inf_filled_input(isa, op, dtype):
    # A row with a finite unmasked element and no unmasked NaN or +inf:
    # masked elements take no part, so the masked row is bit for bit the
    # unmasked row with -inf where the mask is off, whatever the input
    # holds there, for every K, mask pattern and row grouping.
    rng = np.random.default_rng(23)
    f = getattr(csoftmax, op)
    for k in (33, 40, 64, 100, 128, 129, 256, 257, 1000, 5000):
        n = 3 + 40000 // k
        x = (4 * rng.standard_normal((n, k))).astype(dtype)
        x[rng.random(x.shape) < 0.05] = -np.inf
        w = rng.random((n, k)) > 0.4
        w[:, 0] = True
        x[:, 0] = rng.standard_normal(n)
        w[1] = True  # all on
        w[2, 1:] = False  # one element on
        shared = w[3]
        for mask in (w, np.broadcast_to(shared, w.shape)):
            xm = x.copy()
            hostile = (rng.random(x.shape) < 0.1) & ~mask
            xm[hostile] = rng.choice([np.nan, np.inf, -np.inf, 1e30, -1e30], hostile.sum())
            filled = np.where(mask, xm, -np.inf).astype(dtype)
            for threads in (1, 2):
                np.testing.assert_array_equal(f(xm, where=mask, num_threads=threads), f(filled),
                                              err_msg=f"K = {k}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
@pytest.mark.parametrize("k", [10, 33, 128, 1000, 70000])
def test_masked_call_in_place_gives_the_bits_of_a_new_output(isa, op, k, dtype):
    # In place the output overwrites the input as the rows are computed:
    # rows of every kind (nothing unmasked, an unmasked NaN, +inf, only
    # -inf unmasked, hostile values under the mask) must still come out as
    # a new output gives them.
    rng = np.random.default_rng(29)
    f = getattr(csoftmax, op)
    n = 24
    x = (3 * rng.standard_normal((n, k))).astype(dtype)
    w = rng.random((n, k)) > 0.3
    w[:, 0] = True
    w[1] = False
    x[2, 0] = np.nan
    x[3, 0] = np.inf
    x[4] = -np.inf
    x[5][~w[5]] = np.nan
    x[6][~w[6]] = np.inf
    for threads in (1, 2):
        want = f(x, where=w, num_threads=threads)
        for y in (x.copy(), np.asfortranarray(x)):
            assert f(y, where=w, out=y, num_threads=threads) is y
            np.testing.assert_array_equal(y, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("op", ["softmax_backward", "log_softmax_backward"])
@pytest.mark.parametrize("k", [1, 3, 10, 12, 13, 16, 17, 33, 128, 129, 300, 1000])
@pytest.mark.parametrize("threads", [1, 2])
def test_masked_backward_is_the_unmasked_backward_of_zeroed_operands(isa, op, k, threads, dtype):
    # A masked term of the backward passes' sums is an exact zero: the
    # masked call gives, bit for bit, the unmasked call on y and g with +0
    # where the mask is off, its masked outputs then 0. Short rows (K <= 12)
    # take their own lane kernel for it, longer ones the masked row kernel
    # (under AVX-512 reading the mask's bytes, its short rows pipelined;
    # elsewhere a widened mask), with tails of every kind around a register
    # and a sum block. Rows of 37 leave a partial group of lanes; g holds
    # NaN, inf and -0, and row 6 NaN and inf where it is masked only.
    rng = np.random.default_rng(k)
    n = 37
    x = (3 * rng.standard_normal((n, k))).astype(dtype)
    w = rng.random((n, k)) > 0.3
    w[0] = False
    w[1] = True
    y = csoftmax.softmax(x, where=w) if op == "softmax_backward" else csoftmax.log_softmax(x, where=w)
    y[2, -1] = np.nan if op == "softmax_backward" else 4.0  # a y > 0 for log_softmax's exp
    g = rng.standard_normal((n, k)).astype(dtype)
    g[3::5, k // 2] = np.nan
    g[4::7, 0] = np.inf
    g[5::3, -1] = -0.0
    g[6, ~w[6]], y[6, ~w[6]] = np.nan, np.inf
    f = getattr(csoftmax, op)
    with np.errstate(all="ignore"):
        got = f(y, g, where=w, num_threads=threads)
        zy, zg = np.where(w, y, dtype(0)), np.where(w, g, dtype(0))
        want = np.where(w, f(zy, zg, num_threads=threads), dtype(0))
        shared = np.broadcast_to(w[7], w.shape)
        got_shared = f(y, g, where=w[7], num_threads=threads)
        want_shared = np.where(shared, f(np.where(shared, y, 0).astype(dtype),
                                         np.where(shared, g, 0).astype(dtype), num_threads=threads), dtype(0))
    assert_same_bits(got, want, "per-row mask")
    assert_same_bits(got_shared, want_shared, "one mask for every row")

