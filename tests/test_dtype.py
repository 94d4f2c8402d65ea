"""dtype= (torch's rule: the input is computed in and returned as dtype) and
bfloat16 through ml_dtypes (computed in float32, returned as bfloat16)."""
import sys

import numpy as np
import pytest

import csoftmax

OPS = ["softmax", "log_softmax", "softmax_backward", "log_softmax_backward",
       "softmax_jacobian", "logsumexp"]


def _args(op, x):
    if op.endswith("backward"):
        g = (np.arange(x.size, dtype=np.float64).reshape(x.shape) % 7 - 3).astype(x.dtype)
        return (x, g)
    return (x,)


def _data(dtype):
    x = np.random.default_rng(0).standard_normal((6, 40)) * 4
    return x.astype(dtype)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("src", [np.float16, np.float32, np.float64, np.int32, np.bool_])
@pytest.mark.parametrize("dst", [np.float32, np.float64])
def test_result_is_computed_in_and_returned_as_dtype(op, src, dst):
    x = _data(src)
    got = getattr(csoftmax, op)(*_args(op, x), dtype=dst)
    assert got.dtype == dst
    want = getattr(csoftmax, op)(*[a.astype(dst) for a in _args(op, x)])
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("layout", ["c", "fortran"])
def test_float16_to_float32_has_no_float16_round_trip(op, layout):
    # The float32 result of float16 logits is the float32 computation of the
    # same values: never rounded to float16 on the way.
    x = _data(np.float16)
    x = np.asfortranarray(x) if layout == "fortran" else x
    got = getattr(csoftmax, op)(*_args(op, x), dtype=np.float32)
    want = getattr(csoftmax, op)(*[a.astype(np.float32) for a in _args(op, x)])
    np.testing.assert_array_equal(got, want)
    with np.errstate(over="ignore"):
        assert not np.array_equal(got.astype(np.float16).astype(np.float32), got)


@pytest.mark.parametrize("op", ["softmax", "log_softmax", "softmax_jacobian", "logsumexp"])
@pytest.mark.parametrize("src", [np.float32, np.float64])
def test_dtype_float16_rounds_the_float32_result(op, src):
    x = _data(src)
    got = getattr(csoftmax, op)(x, dtype=np.float16)
    assert got.dtype == np.float16
    with np.errstate(over="ignore"):
        want = getattr(csoftmax, op)(x.astype(np.float32)).astype(np.float16)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("spelling", ["float32", np.dtype("float32"), np.float32])
def test_dtype_spellings(spelling):
    assert csoftmax.softmax(np.ones((2, 3)), dtype=spelling).dtype == np.float32


def test_dtype_with_where_and_out():
    x = _data(np.float16)
    w = np.arange(40) % 3 != 0
    out = np.empty(x.shape, np.float32)
    assert csoftmax.softmax(x, where=w, dtype=np.float32, out=out) is out
    np.testing.assert_array_equal(out, csoftmax.softmax(x.astype(np.float32), where=w))
    with pytest.raises(ValueError, match="out has dtype"):
        csoftmax.softmax(x, dtype=np.float32, out=np.empty(x.shape, np.float16))


@pytest.mark.parametrize("bad", [np.int32, "complex64", np.float128 if hasattr(np, "float128") else "S3",
                                 "not a dtype"])
def test_unsupported_dtype_is_a_type_error(bad):
    with pytest.raises(TypeError, match="dtype"):
        csoftmax.softmax(np.ones((2, 3)), dtype=bad)


# ---- bfloat16 ------------------------------------------------------------------

@pytest.fixture
def bf16():
    ml_dtypes = pytest.importorskip("ml_dtypes", reason="ml_dtypes is not installed")
    return np.dtype(ml_dtypes.bfloat16)


@pytest.mark.parametrize("op", OPS)
def test_bfloat16_is_computed_in_float32_and_returned_as_bfloat16(op, bf16):
    x = _data(np.float32).astype(bf16)
    args = _args(op, x)
    got = getattr(csoftmax, op)(*args)
    assert got.dtype == bf16
    want = getattr(csoftmax, op)(*[a.astype(np.float32) for a in args]).astype(bf16)
    np.testing.assert_array_equal(got.astype(np.float32), want.astype(np.float32))
    wide = getattr(csoftmax, op)(*args, dtype=np.float32)
    assert wide.dtype == np.float32


@pytest.mark.parametrize("spelling", ["bfloat16", "BFloat16"])
def test_dtype_bfloat16_spellings(spelling, bf16):
    got = csoftmax.softmax(np.ones((2, 3), np.float32), dtype=spelling)
    assert got.dtype == bf16
    assert csoftmax.softmax(np.ones((2, 3)), dtype=bf16).dtype == bf16


def test_bfloat16_with_where(bf16):
    x = _data(np.float32).astype(bf16)
    w = np.arange(40) < 30
    got = csoftmax.softmax(x, where=w)
    assert got.dtype == bf16 and np.all(got.astype(np.float32)[:, 30:] == 0)


def test_bfloat16_without_ml_dtypes_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "ml_dtypes", None)  # import fails
    with pytest.raises(TypeError, match="ml_dtypes"):
        csoftmax.softmax(np.ones((2, 3)), dtype="bfloat16")

    class Bfloat16Tensor:  # what a torch bfloat16 tensor looks like to NumPy
        dtype = "torch.bfloat16"
        shape = (2, 3)

        def __array__(self, dtype=None, copy=None):
            raise TypeError("Got unsupported ScalarType BFloat16")

    with pytest.raises(TypeError, match="ml_dtypes"):
        csoftmax.softmax(Bfloat16Tensor())


def test_dtype_may_be_a_jax_or_torch_dtype():
    from csoftmax import _semantics
    jnp = pytest.importorskip("jax.numpy", reason="JAX is not installed")
    assert _semantics._requested_dtype(jnp.float32, "softmax") == np.float32
    assert _semantics._requested_dtype(jnp.bfloat16, "softmax").name == "bfloat16"
    torch = pytest.importorskip("torch", reason="torch is not installed")
    assert _semantics._requested_dtype(torch.float64, "softmax") == np.float64
