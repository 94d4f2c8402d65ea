"""Property tests with hostile values: +-1e30, -inf, NaN, denormals, K = 1, large K."""
import numpy as np
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

import csoftmax
from conftest import ref_log_softmax, ref_softmax

HOSTILE = {
    np.float32: [1e30, -1e30, -np.inf, np.inf, np.nan, 1e-45, -1e-45, 1e-38, 0.0, -0.0,
                 88.0, -88.0, 3.4e38, -3.4e38],
    np.float64: [1e30, -1e30, -np.inf, np.inf, np.nan, 5e-324, -5e-324, 1e-308, 0.0,
                 -0.0, 709.0, -745.0, 1.7e308, -1.7e308],
}


@st.composite
def batches(draw, dtype):
    n = draw(st.integers(1, 6))
    k = draw(st.one_of(st.just(1), st.integers(1, 40), st.integers(1000, 5000)))
    elems = st.one_of(
        st.floats(-50, 50, width=np.dtype(dtype).itemsize * 8),
        st.sampled_from(HOSTILE[dtype]),
    )
    return draw(hnp.arrays(dtype, (n, k), elements=elems))


def row_expectation(x):
    """What each row must be: NaN rows where the semantics table says so."""
    nan_row = np.isnan(x).any(axis=1) | np.isposinf(x).any(axis=1) | np.isneginf(x).all(axis=1)
    return nan_row


def check_softmax(x, dtype):
    s = csoftmax.softmax(x)
    nan_row = row_expectation(x)
    assert np.isnan(s[nan_row]).all()
    ok = s[~nan_row].astype(np.float64)
    if ok.size:
        assert np.isfinite(ok).all() and (ok >= 0).all() and (ok <= 1).all()
        k = x.shape[1]
        assert np.all(np.abs(ok.sum(axis=1) - 1) <= 2 * k * np.finfo(dtype).eps)
        xin = x[~nan_row].astype(np.float64)
        want = ref_softmax(xin)
        # exp(x - max) inherits the rounding of x - max in the dtype, a
        # relative error of |x - max| eps; exp, sum and scaling add a few eps.
        with np.errstate(over="ignore", invalid="ignore"):
            dist = np.nan_to_num(np.abs(xin - xin.max(axis=1, keepdims=True)), nan=0.0,
                                 posinf=0.0)
        eps = np.finfo(dtype).eps
        # The sum carries at most K eps of relative error (README.md, Accuracy).
        bound = eps * (8 + dist + k) * want + 2 * np.finfo(dtype).smallest_subnormal
        assert np.all(np.abs(ok - want) <= bound)
        # -inf entries of finite rows are exact zeros.
        assert np.all(ok[np.isneginf(x[~nan_row])] == 0)


def check_log_softmax(x, dtype):
    ls = csoftmax.log_softmax(x)
    nan_row = row_expectation(x)
    assert np.isnan(ls[nan_row]).all()
    ok = ls[~nan_row].astype(np.float64)
    if ok.size:
        xin = x[~nan_row].astype(np.float64)
        want = ref_log_softmax(xin)
        # -inf exactly where the true value is -inf or overflows the dtype
        # (x - max of +-3.4e38 in float32 is -6.8e38: -inf when rounded).
        with np.errstate(over="ignore"):
            assert np.all(np.isneginf(ok) == np.isneginf(want.astype(dtype)))
        assert np.all(ok <= 0)
        fin = np.isfinite(ok)
        eps, k = np.finfo(dtype).eps, x.shape[1]
        # Rounding of x - max and of the result (|x| + |want| eps), and the
        # sum's relative error (at most K eps, README.md) as an absolute
        # error of log(sum).
        with np.errstate(over="ignore"):  # |x| near the float64 maximum
            bound = eps * (4 * np.abs(want) + 4 * np.abs(xin) + k + 4)
        assert np.all(np.abs(ok[fin] - want[fin]) <= bound[fin])


@given(batches(np.float32))
def test_softmax_float32_hostile_rows_follow_the_semantics(x):
    check_softmax(x, np.float32)


@given(batches(np.float64))
def test_softmax_float64_hostile_rows_follow_the_semantics(x):
    check_softmax(x, np.float64)


@given(batches(np.float32))
def test_log_softmax_float32_hostile_rows_follow_the_semantics(x):
    check_log_softmax(x, np.float32)


@given(batches(np.float64))
def test_log_softmax_float64_hostile_rows_follow_the_semantics(x):
    check_log_softmax(x, np.float64)


@given(batches(np.float64), st.integers(1, 3))
def test_thread_count_never_changes_a_bit(x, nt):
    for fn in (csoftmax.softmax, csoftmax.log_softmax):
        assert np.array_equal(fn(x, num_threads=nt), fn(x, num_threads=1), equal_nan=True)


@given(batches(np.float64))
def test_jacobian_rows_sum_to_zero_and_are_symmetric(x):
    x = x[:, :40]
    J = csoftmax.softmax_jacobian(x)
    fin = ~np.isnan(J).any(axis=(1, 2))
    assert np.array_equal(J, np.swapaxes(J, 1, 2), equal_nan=True)
    assert np.all(np.abs(J[fin].sum(axis=2)) <= 40 * np.finfo(np.float64).eps)


@st.composite
def laid_out(draw, dtype):
    """A hostile batch, its C-contiguous copy and a view of it in another
    layout (with the axis that view takes): Fortran order, a transpose with
    axis=0, row/column steps (negative too)."""
    x = draw(batches(dtype))
    n, k = x.shape
    kind = draw(st.sampled_from(["fortran", "transpose", "steps"]))
    if kind == "fortran":
        return x, np.asfortranarray(x), -1
    if kind == "transpose":
        return x, np.ascontiguousarray(x.T), 0
    rs, cs = draw(st.sampled_from([1, 2, -1, -3])), draw(st.sampled_from([2, 3, -1, -2]))
    big = np.zeros((n * abs(rs), k * abs(cs)), dtype)
    view = big[::rs, ::cs][:n, :k]
    view[...] = x
    return x, view, -1


@given(st.sampled_from([np.float32, np.float64]).flatmap(
    lambda dt: laid_out(dt)), st.sampled_from(["softmax", "log_softmax", "softmax_jacobian"]))
def test_hostile_values_in_any_layout_give_the_c_order_bits(case, fn):
    x, view, axis = case
    f = getattr(csoftmax, fn)
    want = f(x)
    got = f(view, axis=axis)
    if axis == 0 and fn != "softmax_jacobian":
        got = got.T
    np.testing.assert_array_equal(got, want)


@given(st.sampled_from([np.float32, np.float64]).flatmap(lambda dt: laid_out(dt)),
       st.sampled_from(["softmax_backward", "log_softmax_backward"]))
def test_hostile_gradients_in_any_layout_give_the_c_order_bits(case, fn):
    g, gview, axis = case
    y = csoftmax.softmax(np.cos(np.arange(g.size, dtype=g.dtype)).reshape(g.shape))
    if fn == "log_softmax_backward":
        y = np.log(y)
    yview = np.ascontiguousarray(y.T) if axis == 0 else np.asfortranarray(y)
    f = getattr(csoftmax, fn)
    got = f(yview, gview, axis=axis)
    np.testing.assert_array_equal(got.T if axis == 0 else got, f(y, g))
