"""Every bad input gets a TypeError/ValueError/MemoryError naming the problem."""
import re
import warnings

import numpy as np
import pytest

import csoftmax

FNS = ["softmax", "log_softmax", "softmax_jacobian"]
BACKWARD = ["softmax_backward", "log_softmax_backward"]


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128, object, "U3", "S2",
                                   np.longdouble, "datetime64[s]"])
@pytest.mark.parametrize("fn", FNS)
def test_unsupported_dtype_is_a_type_error_naming_it(fn, dtype):
    x = np.zeros((2, 3), dtype=dtype)
    with pytest.raises(TypeError, match=re.escape(f"{fn}: x has dtype {np.dtype(dtype)}")):
        getattr(csoftmax, fn)(x)


@pytest.mark.parametrize("fn", FNS)
def test_ragged_input_is_a_type_error(fn):
    with pytest.raises(TypeError, match=fn):
        getattr(csoftmax, fn)([[1.0, 2.0], [3.0]])


@pytest.mark.parametrize("axis", [2, -3, (0, 5)])
@pytest.mark.parametrize("fn", ["softmax", "log_softmax"])
def test_out_of_range_axis_is_a_value_error(fn, axis):
    with pytest.raises(ValueError, match=f"{fn}: .*axis"):
        getattr(csoftmax, fn)(np.zeros((2, 3)), axis=axis)


@pytest.mark.parametrize("axis", [1.5, "0", True, np.float64(1)])
def test_non_integer_axis_is_a_type_error(axis):
    with pytest.raises(TypeError, match="softmax: axis"):
        csoftmax.softmax(np.zeros((2, 3)), axis=axis)


def test_repeated_axis_is_a_value_error():
    with pytest.raises(ValueError, match="softmax: axis"):
        csoftmax.softmax(np.zeros((2, 3)), axis=(1, 1))


@pytest.mark.parametrize("axis", [None, (0, 1), [0, 1], [1], 1.0, True])
def test_jacobian_axis_must_be_a_single_int(axis):
    with pytest.raises(TypeError, match="softmax_jacobian: axis must be a single int"):
        csoftmax.softmax_jacobian(np.zeros((2, 3)), axis=axis)


@pytest.mark.parametrize("fn", FNS + BACKWARD)
@pytest.mark.parametrize("nt,exc", [(0, ValueError), (-2, ValueError), (1.5, TypeError),
                                    ("2", TypeError), (True, TypeError)])
def test_bad_num_threads_is_rejected(fn, nt, exc):
    args = (np.ones((2, 3)),) * (2 if fn in BACKWARD else 1)
    with pytest.raises(exc, match=f"{fn}: num_threads"):
        getattr(csoftmax, fn)(*args, num_threads=nt)


@pytest.mark.parametrize("fn", BACKWARD)
def test_mismatched_y_and_grad_shapes_are_a_value_error(fn):
    with pytest.raises(ValueError, match=rf"{fn}: y has shape \(2, 3\) but grad has shape \(2, 4\)"):
        getattr(csoftmax, fn)(np.ones((2, 3)), np.ones((2, 4)))


@pytest.mark.parametrize("fn", ["softmax", "log_softmax"])
def test_out_with_wrong_shape_is_a_value_error(fn):
    with pytest.raises(ValueError, match=rf"{fn}: out has shape \(3, 2\), expected \(2, 3\)"):
        getattr(csoftmax, fn)(np.ones((2, 3)), out=np.empty((3, 2)))


@pytest.mark.parametrize("fn", ["softmax", "log_softmax"])
def test_out_with_wrong_dtype_is_a_value_error(fn):
    with pytest.raises(ValueError, match=f"{fn}: out has dtype float32, expected float64"):
        getattr(csoftmax, fn)(np.ones((2, 3)), out=np.empty((2, 3), np.float32))


def test_read_only_out_is_a_value_error_and_stays_untouched():
    out = np.full((2, 3), 7.0)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="softmax: out is read-only"):
        csoftmax.softmax(np.ones((2, 3)), out=out)
    assert (out == 7.0).all()


def test_out_that_is_not_an_array_is_a_type_error():
    with pytest.raises(TypeError, match="softmax: out must be a NumPy array"):
        csoftmax.softmax(np.ones((2, 3)), out=[[0.0] * 3] * 2)


def test_jacobian_out_with_wrong_shape_is_a_value_error():
    with pytest.raises(ValueError, match=r"softmax_jacobian: out has shape \(2, 3\), expected \(2, 3, 3\)"):
        csoftmax.softmax_jacobian(np.ones((2, 3)), out=np.empty((2, 3)))


def test_error_leaves_out_unwritten():
    out = np.full((2, 3), 7.0)
    with pytest.raises(ValueError):
        csoftmax.softmax_backward(np.ones((2, 3)), np.ones((2, 4)), out=out)
    with pytest.raises(ValueError):
        csoftmax.softmax(np.ones((2, 3)), out=out, num_threads=0)
    assert (out == 7.0).all()


def test_jacobian_larger_than_memory_is_a_memory_error_before_allocating():
    x = np.broadcast_to(np.float64(0), (10**6, 10**4))  # 8e16 bytes of Jacobian
    with pytest.raises(MemoryError, match=r"softmax_jacobian: a result of shape \(1000000, 10000, 10000\)"):
        csoftmax.softmax_jacobian(x)


def test_jacobian_beyond_py_ssize_t_is_a_memory_error():
    x = np.broadcast_to(np.float32(0), (2**40, 2**20))  # 2^80 elements
    with pytest.raises(MemoryError, match="more elements than an array can index"):
        csoftmax.softmax_jacobian(x)


def test_mixing_numpy_and_gpu_arrays_is_a_type_error():
    class FakeCupyArray:  # looks like a CuPy array by its module
        pass
    FakeCupyArray.__module__ = "cupy._core.core"
    with pytest.raises(TypeError, match="softmax_backward: y and grad must all be CuPy arrays"):
        csoftmax.softmax_backward(np.ones((2, 3)), FakeCupyArray())


def test_huge_axis_is_an_axis_error():
    with pytest.raises(np.exceptions.AxisError, match="softmax: axis"):
        csoftmax.softmax(np.ones((2, 3)), axis=2**70)


def test_huge_thread_count_is_capped_not_spawned():
    x = np.random.default_rng(0).standard_normal((3000, 50))
    np.testing.assert_array_equal(csoftmax.softmax(x, num_threads=2**40),
                                  csoftmax.softmax(x, num_threads=1))


@pytest.mark.parametrize("layout", ["C", "F"])
@pytest.mark.parametrize("fn", ["log_softmax", "softmax"])
def test_float16_results_out_of_range_give_no_numpy_warning(fn, layout):
    # log_softmax([-60000, 0, 60000]) is [-120000, -60000, 0]: -inf in float16,
    # the right value, with no "overflow encountered in cast" on the way.
    x = np.asarray(np.array([[-60000, 0, 60000]] * 3, dtype=np.float16), order=layout)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = getattr(csoftmax, fn)(x)
        nd = getattr(csoftmax, fn)(x[None], axis=-1)  # the N-D path
    if fn == "log_softmax":
        assert np.all(got[:, 0] == -np.inf) and np.all(got[:, 2] == 0)
    np.testing.assert_array_equal(nd[0], got)
