"""Every row of the semantics table (README.md), on every layout."""
import numpy as np
import pytest

import csoftmax
from conftest import LAYOUTS, make_layout, ref_log_softmax, ref_softmax

inf, nan = np.inf, np.nan
FLOATS = [np.float32, np.float64]
UNARY = ["softmax", "log_softmax"]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("fn", UNARY)
def test_any_layout_gives_the_contiguous_result(fn, dtype, layout):
    x = (np.random.default_rng(1).standard_normal((9, 21)) * 4).astype(dtype)
    f = getattr(csoftmax, fn)
    want = f(np.ascontiguousarray(x))
    got = f(make_layout(x, layout))
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("fn", ["softmax_backward", "log_softmax_backward"])
def test_backward_any_layout_gives_the_contiguous_result(fn, layout):
    rng = np.random.default_rng(2)
    y = csoftmax.softmax(rng.standard_normal((9, 21)))
    g = rng.standard_normal((9, 21))
    f = getattr(csoftmax, fn)
    want = f(y, g)
    np.testing.assert_array_equal(f(make_layout(y, layout), make_layout(g, layout)), want)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_jacobian_any_layout_gives_the_contiguous_result(layout):
    x = np.random.default_rng(3).standard_normal((6, 11)).astype(np.float32)
    np.testing.assert_array_equal(csoftmax.softmax_jacobian(make_layout(x, layout)),
                                  csoftmax.softmax_jacobian(x))


@pytest.mark.parametrize("fn", UNARY)
def test_one_dimensional_input_is_one_row(fn):
    x = np.array([1.25, 2.44, 0.78, 0.12])
    got = getattr(csoftmax, fn)(x)
    assert got.shape == (4,)
    np.testing.assert_array_equal(got, getattr(csoftmax, fn)(x[None])[0])


def test_classic_example_probabilities():
    p = csoftmax.softmax(np.array([[1.25, 2.44, 0.78, 0.12]]))[0]
    np.testing.assert_allclose(p, [0.191, 0.628, 0.119, 0.062], atol=5e-4)


@pytest.mark.parametrize("axis", [0, 1, -2, (0, 1), None])
def test_nd_axis_is_moved_and_restored(axis):
    x = np.random.default_rng(4).standard_normal((3, 4, 5))
    got = csoftmax.softmax(x, axis=axis)
    want = ref_softmax(x, axis=axis) if axis is not None else ref_softmax(x.ravel()).reshape(x.shape)
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_jacobian_nd_moves_axis_last_and_appends_k():
    x = np.random.default_rng(5).standard_normal((2, 3, 4))
    J = csoftmax.softmax_jacobian(x, axis=1)
    assert J.shape == (2, 4, 3, 3)
    want = csoftmax.softmax_jacobian(np.moveaxis(x, 1, -1).reshape(8, 3)).reshape(2, 4, 3, 3)
    np.testing.assert_array_equal(J, want)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("fn", UNARY)
def test_float_dtype_is_kept(fn, dtype):
    assert getattr(csoftmax, fn)(np.ones((2, 3), dtype=dtype)).dtype == dtype


@pytest.mark.parametrize("fn", UNARY + ["softmax_jacobian"])
def test_float16_is_computed_in_float32_and_returned_as_float16(fn):
    x = (np.random.default_rng(6).standard_normal((5, 7)) * 3).astype(np.float16)
    f = getattr(csoftmax, fn)
    got = f(x)
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, f(x.astype(np.float32)).astype(np.float16))


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint16, np.bool_])
@pytest.mark.parametrize("fn", UNARY)
def test_integers_and_bools_are_promoted_to_float64(fn, dtype):
    x = np.array([[0, 1, 1], [1, 0, 0]], dtype=dtype)
    got = getattr(csoftmax, fn)(x)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, getattr(csoftmax, fn)(x.astype(np.float64)))


def test_python_lists_are_accepted():
    np.testing.assert_array_equal(csoftmax.softmax([[1.0, 2.0], [3.0, 3.0]]),
                                  csoftmax.softmax(np.array([[1.0, 2.0], [3.0, 3.0]])))


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("fn", UNARY)
@pytest.mark.parametrize("row", [[-inf, -inf, -inf], [nan, 1, 2], [1, inf, 2],
                                 [inf, inf, 0], [-inf, nan, 0], [1, 2, nan]])
def test_all_neg_inf_nan_or_pos_inf_rows_become_nan(fn, dtype, row):
    x = np.array([row, [0, 1, 2]], dtype=dtype)
    got = getattr(csoftmax, fn)(x)
    assert np.isnan(got[0]).all()
    assert np.isfinite(got[1]).all()  # other rows are untouched


@pytest.mark.parametrize("dtype", FLOATS)
def test_neg_inf_in_a_finite_row_gives_exact_zero_and_neg_inf(dtype):
    x = np.array([[-inf, 0.0, 1.0, -inf]], dtype=dtype)
    s = csoftmax.softmax(x)
    assert s[0, 0] == 0 and s[0, 3] == 0
    np.testing.assert_allclose(s[0, 1:3], ref_softmax(x)[0, 1:3], rtol=1e-6)
    ls = csoftmax.log_softmax(x)
    assert ls[0, 0] == -inf and ls[0, 3] == -inf


@pytest.mark.parametrize("dtype", FLOATS)
def test_huge_values_are_exact(dtype):
    x = np.array([[1000, 1], [1e30, -1e30], [-1e30, -1e30]], dtype=dtype)
    ls = csoftmax.log_softmax(x)
    np.testing.assert_array_equal(ls[0], [0, -999])
    assert ls[1, 0] == 0 and ls[1, 1] == dtype(-2e30)
    np.testing.assert_allclose(ls[2], [-np.log(2)] * 2, rtol=1e-6)
    s = csoftmax.softmax(x)
    np.testing.assert_array_equal(s[1], [1, 0])
    np.testing.assert_allclose(s[2], [0.5, 0.5], rtol=1e-7)


@pytest.mark.parametrize("shape", [(0, 5), (5, 0), (0, 0), (0,)])
@pytest.mark.parametrize("fn", UNARY)
def test_empty_input_gives_empty_result(fn, shape):
    got = getattr(csoftmax, fn)(np.ones(shape, dtype=np.float32))
    assert got.shape == shape and got.dtype == np.float32


@pytest.mark.parametrize("shape,jshape", [((0, 5), (0, 5, 5)), ((4, 0), (4, 0, 0))])
def test_empty_jacobian_has_the_right_shape(shape, jshape):
    assert csoftmax.softmax_jacobian(np.ones(shape)).shape == jshape


def test_empty_backward_gives_empty_result():
    assert csoftmax.softmax_backward(np.ones((0, 3)), np.ones((0, 3))).shape == (0, 3)


@pytest.mark.parametrize("fn", UNARY)
def test_k_equals_one_gives_one_and_zero(fn):
    got = getattr(csoftmax, fn)(np.array([[5.0], [-1e30], [0.0]]))
    np.testing.assert_array_equal(got, [[1.0]] * 3 if fn == "softmax" else [[0.0]] * 3)


# ---- out= ----------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["c", "fortran", "strided_rows", "strided_cols"])
@pytest.mark.parametrize("fn", UNARY)
def test_out_receives_the_result_and_is_returned(fn, layout):
    x = np.random.default_rng(7).standard_normal((6, 9)).astype(np.float32)
    out = make_layout(np.full((6, 9), np.nan, np.float32), layout)
    got = getattr(csoftmax, fn)(x, out=out)
    assert got is out
    np.testing.assert_array_equal(out, getattr(csoftmax, fn)(x))


@pytest.mark.parametrize("fn", UNARY)
@pytest.mark.parametrize("axis", [-1, 0])
def test_out_may_be_the_input_itself(fn, axis):
    x = np.random.default_rng(8).standard_normal((6, 9))
    want = getattr(csoftmax, fn)(x, axis=axis)
    got = getattr(csoftmax, fn)(x, axis=axis, out=x)
    assert got is x
    np.testing.assert_array_equal(x, want)


@pytest.mark.parametrize("which", ["y", "grad"])
@pytest.mark.parametrize("fn", ["softmax_backward", "log_softmax_backward"])
def test_backward_out_may_be_an_input(fn, which):
    rng = np.random.default_rng(9)
    y, g = csoftmax.softmax(rng.standard_normal((5, 8))), rng.standard_normal((5, 8))
    want = getattr(csoftmax, fn)(y, g)
    target = y if which == "y" else g
    assert getattr(csoftmax, fn)(y, g, out=target) is target
    np.testing.assert_array_equal(target, want)


def test_out_overlapping_the_input_partially_is_still_correct():
    base = np.random.default_rng(10).standard_normal((7, 8))
    x = base[:6]
    want = csoftmax.softmax(x.copy())
    out = base[1:]  # shifted by one row: not the input's own elements
    csoftmax.softmax(x, out=out)
    np.testing.assert_array_equal(out, want)


def test_jacobian_out_receives_the_result():
    x = np.random.default_rng(11).standard_normal((4, 5))
    out = np.empty((4, 5, 5))
    assert csoftmax.softmax_jacobian(x, out=out) is out
    np.testing.assert_array_equal(out, csoftmax.softmax_jacobian(x))


def test_float16_out_receives_the_float16_result():
    x = np.random.default_rng(12).standard_normal((3, 4)).astype(np.float16)
    out = np.empty((3, 4), np.float16)
    csoftmax.softmax(x, out=out)
    np.testing.assert_array_equal(out, csoftmax.softmax(x))


@pytest.mark.parametrize("fn", UNARY)
def test_result_of_log_softmax_and_softmax_agree(fn):
    x = np.random.default_rng(13).standard_normal((10, 30))
    np.testing.assert_allclose(np.exp(csoftmax.log_softmax(x)), csoftmax.softmax(x), rtol=1e-13)


def test_thread_count_does_not_change_nan_rows():
    x = np.random.default_rng(14).standard_normal((5000, 50))
    x[::7, 3] = nan
    a, b = csoftmax.softmax(x, num_threads=1), csoftmax.softmax(x, num_threads=2)
    assert np.array_equal(a, b, equal_nan=True)
    assert np.isnan(a[::7]).all() and not np.isnan(a[1::7]).any()


def _nan_rows(rng, n, k, dtype):
    """Rows holding NaNs of both signs, +-inf, all -inf, beside finite rows."""
    x = rng.standard_normal((n, k)).astype(dtype)
    for r in range(0, n, 2):
        for _ in range(rng.integers(1, 4)):
            x[r, rng.integers(0, k)] = rng.choice([nan, -nan, inf, -inf, 1e30])
    x[1] = -inf
    x[3, 0], x[3, -1] = -nan, inf  # a max that one path takes as +inf, another as NaN
    return x


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("fn", UNARY + ["logsumexp", "softmax_backward", "log_softmax_backward",
                                        "softmax_jacobian"])
def test_nan_rows_have_the_same_bits_on_every_path(fn, dtype, isa):
    # Which NaN an operation returns where two of its operands are NaN
    # (sign, payload) depends on the instruction's form, which the compiler
    # picks site by site: every path (lanes, rows, long rows, Fortran order,
    # strided, streamed, masked, one or two threads) must still give the
    # C-ordered result's bytes. NaN rows of softmax, softmax_backward and
    # the Jacobian are the quiet NaN; logsumexp's NaN is; log_softmax's
    # elements are its scalars' quiet NaN, or the element's own NaN.
    from csoftmax import _engine
    rng = np.random.default_rng(26)
    f = getattr(csoftmax, fn)
    quiet = np.array(nan, dtype).view(np.uint32 if dtype == np.float32 else np.uint64)
    uint = np.uint32 if dtype == np.float32 else np.uint64
    ks = [2, 3, 16, 33, 100] if fn == "softmax_jacobian" else [2, 3, 16, 24, 33, 100, 1000, 70000]
    st, sth, sxo = _engine.stream_bytes(), _engine.stream_threads(), _engine.stream_exp_ops()
    try:
        for k in ks:
            n = 6 if k > 1000 else 40
            x = _nan_rows(rng, n, k, dtype)
            if fn in ("softmax_backward", "log_softmax_backward"):
                args = [csoftmax.softmax(x) if fn == "softmax_backward" else csoftmax.log_softmax(x),
                        _nan_rows(rng, n, k, dtype)]
            else:
                args = [x]
            where = rng.random((n, k)) < 0.8
            where[[1, 3], 0] = True  # rows 1 and 3 NaN rows under the mask too
            for mask in (None, where):
                kw = {} if mask is None else {"where": mask}
                want = np.ascontiguousarray(f(*args, num_threads=1, **kw)).view(uint)
                got = {}
                for layout in ("fortran", "strided_rows", "strided_cols", "negative"):
                    for threads in (1, 2):
                        got[layout, threads] = f(*[make_layout(a, layout) for a in args],
                                                 num_threads=threads, **kw)
                _engine.set_stream_bytes(0)
                _engine.set_stream_threads(1)
                _engine.set_stream_exp_ops(True)
                got["streamed"] = f(*args, num_threads=1, **kw)
                _engine.set_stream_bytes(st)
                _engine.set_stream_threads(sth)
                _engine.set_stream_exp_ops(sxo)
                for name, o in got.items():
                    o = np.ascontiguousarray(o).view(uint)
                    assert o.shape == want.shape
                    bad = np.argwhere(o != want)
                    assert not len(bad), (k, mask is not None, name, bad[:3].tolist())
                isn = np.isnan(want.view(dtype)).reshape(n, -1)
                assert isn[3].any() and not isn[5].any()
                if mask is None and fn not in ("log_softmax", "log_softmax_backward"):
                    # A NaN row (every output NaN) is the quiet NaN. (Elsewhere a
                    # NaN an operation makes, inf - inf in a backward pass, is the
                    # machine's own, the same on every path; log_softmax_backward's
                    # rows of NaN y keep y's: test_boundaries.py has its rule.)
                    rows = isn.all(axis=1)
                    assert rows[3] and (fn == "logsumexp" or rows[1])
                    assert (want.reshape(n, -1)[rows] == quiet).all(), (k, fn)
                if mask is None and fn == "log_softmax":
                    # x's own NaN where x is one (every NaN here is quiet), else the quiet NaN.
                    xnan = np.isnan(x)
                    assert (want[xnan] == x.view(uint)[xnan]).all(), k
                    assert (want[isn & ~xnan] == quiet).all(), k
    finally:
        _engine.set_stream_bytes(st)
        _engine.set_stream_threads(sth)
        _engine.set_stream_exp_ops(sxo)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("fn", UNARY + ["softmax_jacobian"])
def test_fast_path_and_general_path_agree_bitwise(fn, dtype):
    # axis=1 takes the C-level fast path; the list axis goes through _semantics.
    x = np.random.default_rng(15).standard_normal((40, 23)).astype(dtype)
    f = getattr(csoftmax, fn)
    general = f(x[:, :], axis=1) if fn == "softmax_jacobian" else f(x, axis=[1])
    fast = f(x, axis=1)
    if fn == "softmax_jacobian":  # force the general path: a Fortran-ordered input
        general = f(np.asfortranarray(x), axis=1)
    np.testing.assert_array_equal(fast, general)


@pytest.mark.parametrize("fn", ["softmax_backward", "log_softmax_backward"])
def test_backward_fast_and_general_paths_agree_bitwise(fn):
    rng = np.random.default_rng(16)
    y, g = csoftmax.softmax(rng.standard_normal((30, 17))), rng.standard_normal((30, 17))
    f = getattr(csoftmax, fn)
    np.testing.assert_array_equal(f(y, g), f(y, g, axis=[1]))
