"""csoftmax.compat: the tutorials' names give the tutorials' results."""
import numpy as np
import pytest

from csoftmax import compat
from csoftmax._tutorial import softmax_grad_numpy, softmax_numpy


@pytest.mark.parametrize("dtype,rtol", [(np.float32, 2e-6), (np.float64, 1e-12)])
@pytest.mark.parametrize("shape", [(1, 4), (64, 10), (5, 300)])
def test_softmax_matches_the_tutorial_formula(shape, dtype, rtol):
    x = (np.random.default_rng(0).standard_normal(shape) * 3).astype(dtype)
    got = compat.Softmax(x)
    assert got.dtype == dtype and got.shape == shape
    np.testing.assert_allclose(got, softmax_numpy(x), rtol=rtol, atol=1e-30)


@pytest.mark.parametrize("dtype,atol", [(np.float32, 1e-7), (np.float64, 1e-15)])
@pytest.mark.parametrize("shape", [(1, 4), (64, 10), (3, 50)])
def test_softmax_grad_matches_the_tutorial_formula(shape, dtype, atol):
    x = np.random.default_rng(1).standard_normal(shape).astype(dtype)
    got = compat.Softmax_grad(x)
    assert got.shape == (shape[0], shape[1], shape[1]) and got.dtype == dtype
    np.testing.assert_allclose(got, softmax_grad_numpy(x), rtol=1e-5, atol=atol)


def test_tutorial_names_refuse_non_2d_input():
    with pytest.raises(ValueError, match="Softmax: x must be a 2-D array"):
        compat.Softmax(np.ones(3))
    with pytest.raises(ValueError, match="Softmax_grad: x must be a 2-D array"):
        compat.Softmax_grad(np.ones((2, 2, 2)))
