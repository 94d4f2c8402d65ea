"""logsumexp: stable, float32 within 2e-6 relative, scipy's rules for special
values, any axis, keepdims, where=, out=, every layout, ISA and thread count."""
import numpy as np
import pytest
import scipy.special

import csoftmax
from csoftmax import _reference
from conftest import make_layout, rel_err


@pytest.mark.parametrize("dtype, tol", [(np.float32, 2e-6), (np.float64, 1e-14)])
@pytest.mark.parametrize("shape", [(1, 1), (7, 5), (40, 33), (5, 1000), (2, 100000)])
def test_matches_float64_reference(isa, shape, dtype, tol):
    x = (5 * np.random.default_rng(sum(shape)).standard_normal(shape)).astype(dtype)
    got = csoftmax.logsumexp(x)
    assert got.dtype == dtype and got.shape == shape[:1]
    assert rel_err(got, _reference.logsumexp(x)) <= tol


@pytest.mark.parametrize("row", [
    [np.nan, 1.0], [np.inf, 1.0], [np.inf, np.nan], [np.inf, -np.inf], [-np.inf, -np.inf],
    [-np.inf, np.nan], [1e30, 1.0], [-1e30, -1e30], [1000.0, 1.0], [5e-324, 0.0],
    [np.inf, np.inf]])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_special_values_follow_scipy(row, dtype):
    x = np.array([row], dtype=dtype)
    with np.errstate(all="ignore"):
        want = scipy.special.logsumexp(x.astype(np.float64), axis=-1)
    got = csoftmax.logsumexp(x)
    np.testing.assert_allclose(got, want.astype(dtype), rtol=2e-7)
    assert np.array_equal(np.isnan(got), np.isnan(want))


def test_huge_logits_stay_exact():
    x = np.array([[1000.0, 1.0], [-1e30, -1e30 + 1e24]], dtype=np.float64)
    np.testing.assert_array_equal(csoftmax.logsumexp(x)[0], 1000.0)


@pytest.mark.parametrize("axis", [0, 1, -1, (0, 2), None, (2, 0, 1)])
@pytest.mark.parametrize("keepdims", [False, True])
def test_axis_and_keepdims_match_scipy(axis, keepdims):
    x = np.random.default_rng(1).standard_normal((3, 4, 5))
    got = csoftmax.logsumexp(x, axis=axis, keepdims=keepdims)
    want = scipy.special.logsumexp(x, axis=axis, keepdims=keepdims)
    assert np.shape(got) == np.shape(want)
    np.testing.assert_allclose(got, want, rtol=1e-14)


def test_one_row_gives_a_numpy_scalar_as_numpy_reductions_do():
    x = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    got = csoftmax.logsumexp(x)
    assert isinstance(got, np.float32)
    np.testing.assert_allclose(got, scipy.special.logsumexp(x.astype(np.float64)), rtol=2e-7)
    assert csoftmax.logsumexp(x, keepdims=True).shape == (1,)


@pytest.mark.parametrize("layout", ["c", "fortran", "strided_rows", "strided_cols",
                                    "negative", "readonly"])
@pytest.mark.parametrize("k", [5, 40, 700])
def test_any_layout_gives_the_c_order_bits(layout, k):
    x = np.random.default_rng(k).standard_normal((60, k)).astype(np.float32)
    np.testing.assert_array_equal(csoftmax.logsumexp(make_layout(x, layout)),
                                  csoftmax.logsumexp(x))
    np.testing.assert_array_equal(csoftmax.logsumexp(make_layout(x, layout).T, axis=0),
                                  csoftmax.logsumexp(x))


def test_reuses_the_log_softmax_row_pass():
    # log_softmax(x) = x - logsumexp(x): the same max and sum, so exactly.
    x = np.random.default_rng(2).standard_normal((50, 300))
    lse = csoftmax.logsumexp(x, keepdims=True)
    np.testing.assert_allclose(csoftmax.log_softmax(x), x - lse, rtol=0, atol=1e-13)


@pytest.mark.parametrize("shape", [(3000, 50), (40, 20000)])
def test_bitwise_identical_for_every_thread_count(shape):
    x = np.random.default_rng(3).standard_normal(shape).astype(np.float32)
    r = [csoftmax.logsumexp(x, num_threads=t) for t in (1, 2, 5)]
    np.testing.assert_array_equal(r[0], r[1])
    np.testing.assert_array_equal(r[0], r[2])


def test_out_receives_the_result():
    x = np.random.default_rng(4).standard_normal((8, 6)).astype(np.float32)
    out = np.empty(8, np.float32)
    assert csoftmax.logsumexp(x, out=out) is out
    np.testing.assert_array_equal(out, csoftmax.logsumexp(x))
    out0 = np.empty((1, 6), np.float32)
    assert csoftmax.logsumexp(x, axis=0, keepdims=True, out=out0) is out0
    with pytest.raises(ValueError, match="out has shape"):
        csoftmax.logsumexp(x, out=np.empty(6, np.float32))
    with pytest.raises(ValueError, match="out has dtype"):
        csoftmax.logsumexp(x, out=np.empty(8, np.float64))


def test_empty_inputs():
    assert csoftmax.logsumexp(np.empty((0, 5))).shape == (0,)
    np.testing.assert_array_equal(csoftmax.logsumexp(np.empty((3, 0))), [-np.inf] * 3)


def test_ints_float16_and_dtype():
    x = np.arange(12).reshape(3, 4)
    assert csoftmax.logsumexp(x).dtype == np.float64
    h = x.astype(np.float16)
    assert csoftmax.logsumexp(h).dtype == np.float16
    got = csoftmax.logsumexp(h, dtype=np.float32)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, csoftmax.logsumexp(h.astype(np.float32)))


def test_wrong_arguments_name_themselves():
    with pytest.raises(TypeError, match="keepdims"):
        csoftmax.logsumexp(np.ones((2, 2)), keepdims="yes")
    with pytest.raises(TypeError, match="complex"):
        csoftmax.logsumexp(np.ones((2, 2), np.complex128))
