"""Foreign arrays in, the same kind out (csoftmax/_interop.py).

torch tensors, JAX arrays, array API arrays (array_api_strict), plain DLPack
objects, pandas and xarray objects through every public function: the
result's type, dtype and device are the input's, the values are bitwise the
NumPy path's, and the memory is shared where the library allows it. Each
library's tests skip, saying so, when it is not installed. The CUDA route
(torch CUDA tensor -> CuPy -> torch) is checked with stand-ins for CuPy and
the CUDA tensor: there is no GPU here.
"""
import inspect
import subprocess
import sys
import types

import numpy as np
import pytest

import csoftmax
from csoftmax import _foreign, _interop, _semantics

RNG = np.random.default_rng(12)

# name -> number of positional array arguments; functions of later releases
# are tested when they exist.
FUNCS = {"softmax": 1, "log_softmax": 1, "softmax_backward": 2, "log_softmax_backward": 2,
         "softmax_jacobian": 1, "logsumexp": 1}
FUNCS = {f: n for f, n in FUNCS.items() if hasattr(csoftmax, f)}
SHAPED_LIKE_INPUT = ("softmax", "log_softmax", "softmax_backward", "log_softmax_backward")


def _has_kwarg(name):
    return name in inspect.signature(_semantics.softmax).parameters


def _inputs(fname, shape, dtype=np.float32):
    x = RNG.standard_normal(shape).astype(dtype)
    if FUNCS[fname] == 1:
        return (x,)
    y = csoftmax.softmax(x) if fname == "softmax_backward" else csoftmax.log_softmax(x)
    return (y.astype(dtype), RNG.standard_normal(shape).astype(dtype))


def _numpy(fname, arrays, **kw):
    return getattr(csoftmax, fname)(*arrays, **kw)


def test_importing_csoftmax_imports_no_optional_library():
    code = ("import sys, csoftmax\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'jax', 'jaxlib', 'dask', 'distributed', 'pandas', 'xarray', 'cupy', "
            "'array_api_compat', 'array_api_strict', 'ml_dtypes'))\n"
            "print(bad)\n"
            "csoftmax.softmax(csoftmax.softmax([[1.0, 2.0]]))\n"
            "csoftmax.softmax([[[1.0, 2.0]]], axis=(1, 2))\n"
            "assert not bad, bad\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_numpy_arrays_and_array_likes_are_no_foreign_kind():
    for a in (np.ones(3), np.float32(1), [1.0], (1.0,), 1.0, None, np.ma.ones(3)):
        assert _interop.kind_of(a) is None
    cupy_like = type("ndarray", (), {"__module__": "cupy._core.core", "__dlpack__": None})
    assert _interop.kind_of(cupy_like()) is None  # CuPy goes to the GPU backend as before


def test_every_public_function_is_wrapped():
    for fname in _interop.ARRAY_ARGS:
        if hasattr(_semantics, fname):
            assert getattr(getattr(_semantics, fname), "_csoftmax_interop", False), fname


# ---- torch --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch", reason="torch is not installed (test-interop extra)")


@pytest.mark.parametrize("fname", list(FUNCS))
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("shape,axis", [((7,), -1), ((5, 9), -1), ((5, 9), 0), ((3, 4, 6), 1)])
@pytest.mark.parametrize("layout", ["contiguous", "transposed", "sliced"])
def test_torch_cpu_tensor_in_tensor_out_bitwise(torch, fname, dtype, shape, axis, layout):
    arrays = _inputs(fname, shape, np.dtype(dtype))
    tensors = [torch.from_numpy(a.copy()) for a in arrays]
    if layout == "transposed":
        rev = lambda t: t.permute(*range(t.ndim - 1, -1, -1))  # noqa: E731
        tensors = [rev(rev(t).contiguous()) for t in tensors]  # Fortran order
    elif layout == "sliced":
        tensors = [torch.cat([t, t], dim=-1)[..., ::2] for t in tensors]
    expect = _numpy(fname, [t.numpy() for t in tensors], axis=axis)
    got = getattr(csoftmax, fname)(*tensors, axis=axis)
    assert isinstance(got, torch.Tensor)
    assert got.device.type == "cpu"
    assert str(got.dtype) == "torch." + expect.dtype.name
    np.testing.assert_array_equal(got.numpy(), expect, strict=True)


def test_torch_result_is_the_buffer_the_kernel_wrote(torch, monkeypatch):
    seen = []
    back = _foreign.Foreign._back

    def spy(self, r, originals, output=None):
        seen.append(r.ctypes.data)
        return back(self, r, originals, output)
    monkeypatch.setattr(_foreign.Foreign, "_back", spy)
    t = torch.randn(4, 3, 5)
    got = csoftmax.softmax(t, axis=1)
    assert seen == [got.data_ptr()]


def test_torch_in_place_out_is_the_input(torch):
    t = torch.randn(4, 3, 5, dtype=torch.float64)
    expect = csoftmax.softmax(t.numpy().copy(), axis=(0, 2))
    ptr = t.data_ptr()
    got = csoftmax.softmax(t, axis=(0, 2), out=t)
    assert got is t and t.data_ptr() == ptr
    np.testing.assert_array_equal(t.numpy(), expect)


def test_torch_out_tensor_is_written_and_returned(torch):
    t = torch.randn(6, 4, 2)
    out = torch.empty(6, 4, 2)
    got = csoftmax.log_softmax(t, axis=1, out=out)
    assert got is out
    np.testing.assert_array_equal(out.numpy(), csoftmax.log_softmax(t.numpy(), axis=1))


def test_torch_bfloat16_is_computed_in_float32_and_returned_as_bfloat16(torch):
    t = torch.randn(5, 8).to(torch.bfloat16)
    got = csoftmax.softmax(t)
    assert got.dtype == torch.bfloat16
    expect = torch.from_numpy(csoftmax.softmax(t.float().numpy())).to(torch.bfloat16)
    assert torch.equal(got, expect)


def test_torch_bfloat16_without_ml_dtypes_is_computed_on_a_float32_copy(torch, monkeypatch):
    monkeypatch.setattr(_foreign, "_ml_bfloat16", lambda: None)
    t = torch.randn(5, 8).to(torch.bfloat16)
    expect = torch.from_numpy(csoftmax.softmax(t.float().numpy())).to(torch.bfloat16)
    assert torch.equal(csoftmax.softmax(t), expect)
    out = torch.zeros(5, 8, dtype=torch.bfloat16)
    assert csoftmax.softmax(t, out=out) is out and torch.equal(out, expect)


def test_torch_bfloat16_out_is_written_and_returned(torch):
    t = torch.randn(5, 8).to(torch.bfloat16)
    out = torch.zeros(5, 8, dtype=torch.bfloat16)
    assert csoftmax.log_softmax(t, out=out) is out
    assert torch.equal(out, csoftmax.log_softmax(t))
    with pytest.raises(ValueError, match=r"out has dtype (torch\.)?bfloat16, expected (torch\.)?float32"):
        csoftmax.softmax(t.float(), out=out)


def test_torch_tensors_dlpack_cannot_share_are_a_clear_type_error(torch):
    with pytest.raises(TypeError, match=r"x \(a torch tensor, layout torch.sparse_coo"):
        csoftmax.softmax(torch.ones(2, 3).to_sparse())


def test_torch_integer_tensor_gives_float64(torch):
    got = csoftmax.softmax(torch.arange(12).reshape(3, 4))
    assert got.dtype == torch.float64
    np.testing.assert_array_equal(got.numpy(), csoftmax.softmax(np.arange(12.0).reshape(3, 4)))


def test_torch_requires_grad_is_a_clear_type_error(torch):
    t = torch.randn(3, 4, requires_grad=True)
    with pytest.raises(TypeError, match=r"requires grad.*detach\(\)"):
        csoftmax.softmax(t)
    with pytest.raises(TypeError, match="grad is a torch tensor that requires grad"):
        csoftmax.softmax_backward(torch.ones(3, 4), t)
    assert isinstance(csoftmax.softmax(t.detach()), torch.Tensor)


def test_torch_and_numpy_arguments_mix(torch):
    y = csoftmax.softmax(RNG.standard_normal((4, 5)))
    g = RNG.standard_normal((4, 5))
    got = csoftmax.softmax_backward(torch.from_numpy(y), g)
    assert isinstance(got, torch.Tensor)
    np.testing.assert_array_equal(got.numpy(), csoftmax.softmax_backward(y, g))


def test_result_kind_follows_the_first_array(torch):
    y = csoftmax.softmax(RNG.standard_normal((4, 5)))
    g = RNG.standard_normal((4, 5))
    got = csoftmax.softmax_backward(y, torch.from_numpy(g))
    assert type(got) is np.ndarray
    np.testing.assert_array_equal(got, csoftmax.softmax_backward(y, g))
    out = torch.empty(4, 5, dtype=torch.float64)
    assert csoftmax.softmax(y, out=out) is out  # a foreign out is returned itself


@pytest.mark.skipif(not _has_kwarg("dtype"), reason="dtype= is not in this build")
def test_torch_dtype_argument_is_a_torch_dtype(torch):
    t = torch.randn(3, 4)
    got = csoftmax.softmax(t, dtype=torch.float64)
    assert got.dtype == torch.float64


@pytest.mark.skipif(not _has_kwarg("where"), reason="where= is not in this build")
def test_torch_where_mask(torch):
    x = RNG.standard_normal((4, 6))
    w = RNG.random((4, 6)) < 0.7
    got = csoftmax.softmax(torch.from_numpy(x), where=torch.from_numpy(w))
    np.testing.assert_array_equal(got.numpy(), csoftmax.softmax(x, where=w))


# ---- torch CUDA, with stand-ins ------------------------------------------------------

class _Log(list):
    def ctx(self, what):
        log = self

        class C:
            def __enter__(self):
                log.append(("enter", what))

            def __exit__(self, *a):
                log.append(("exit", what))
        return C()


def _fake_cuda_tensor(t):
    """A stand-in for a CUDA torch tensor: the type's module says torch, the
    device says CUDA 1; its data is the CPU tensor t."""
    cls = type("Tensor", (), {"__module__": "torch",
                              "__dlpack_device__": lambda self: (2, 1),
                              "is_conj": lambda self: False,
                              "is_neg": lambda self: False})
    f = cls()
    f.t, f.dtype, f.requires_grad = t, t.dtype, False
    f.device = types.SimpleNamespace(type="cuda", index=1)
    return f


def test_torch_cuda_tensor_goes_through_cupy_on_its_device_and_stream(torch, monkeypatch):
    log = _Log()

    def from_dlpack(a):
        log.append(("from_dlpack", type(a).__name__))
        return np.from_dlpack(a.t)  # the "CuPy array" is a NumPy one here
    fake_cupy = types.SimpleNamespace(
        from_dlpack=from_dlpack,
        cuda=types.SimpleNamespace(
            Device=lambda i: log.ctx(("device", i)),
            ExternalStream=lambda ptr, dev: log.ctx(("stream", ptr, dev))))
    monkeypatch.setattr(_foreign, "_cupy", lambda *a: fake_cupy)
    monkeypatch.setattr(torch.cuda, "current_stream",
                        lambda dev: types.SimpleNamespace(cuda_stream=0xC0FFEE + dev))
    real_from_dlpack = torch.from_dlpack

    def torch_from_dlpack(a):
        log.append(("torch.from_dlpack", type(a).__name__))
        return real_from_dlpack(a)
    monkeypatch.setattr(torch, "from_dlpack", torch_from_dlpack)
    x = torch.randn(3, 5)
    got = csoftmax.softmax(_fake_cuda_tensor(x))
    assert torch.equal(got, torch.from_numpy(csoftmax.softmax(x.numpy())))
    assert log == [("enter", ("device", 1)), ("enter", ("stream", 0xC0FFEE + 1, 1)),
                   ("from_dlpack", "Tensor"), ("torch.from_dlpack", "ndarray"),
                   ("exit", ("stream", 0xC0FFEE + 1, 1)), ("exit", ("device", 1))]


def test_cuda_tensor_without_cupy_says_what_to_install(torch, monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy fails
    with pytest.raises(TypeError, match=r"CUDA device.*CuPy, which is not installed"):
        csoftmax.softmax(_fake_cuda_tensor(torch.randn(2, 3)))


def test_other_devices_are_refused_by_name():
    cls = type("Array", (), {"__module__": "somelib", "__dlpack__": lambda s, **k: None,
                             "__dlpack_device__": lambda s: (8, 0)})
    with pytest.raises(TypeError, match="x is on a Metal device"):
        csoftmax.softmax(cls())


# ---- JAX ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def jax():
    return pytest.importorskip("jax", reason="jax is not installed (test-interop extra)")


@pytest.mark.parametrize("fname", list(FUNCS))
@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_jax_array_in_jax_array_out_bitwise(jax, fname, dtype):
    arrays = _inputs(fname, (4, 3, 6), np.dtype(dtype))
    jarrays = [jax.numpy.asarray(a) for a in arrays]
    got = getattr(csoftmax, fname)(*jarrays, axis=1)
    expect = _numpy(fname, arrays, axis=1)
    assert isinstance(got, jax.Array)
    assert got.dtype == expect.dtype
    assert got.devices() == jarrays[0].devices()
    np.testing.assert_array_equal(np.asarray(got), expect)


def test_array_api_out_is_written_in_place():
    xs = pytest.importorskip("array_api_strict", reason="array_api_strict is not installed")
    x = RNG.standard_normal((2, 3))
    out = xs.zeros((2, 3), dtype=xs.float64)
    assert csoftmax.softmax(xs.asarray(x), out=out) is out
    np.testing.assert_array_equal(np.from_dlpack(out), csoftmax.softmax(x))


def test_jax_bfloat16_is_computed_in_float32_and_returned_as_bfloat16(jax):
    x = jax.numpy.asarray(RNG.standard_normal((3, 8)), dtype=jax.numpy.bfloat16)
    got = csoftmax.log_softmax(x)
    assert isinstance(got, jax.Array) and got.dtype == jax.numpy.bfloat16
    expect = csoftmax.log_softmax(np.asarray(x).astype(np.float32)).astype(got.dtype)
    np.testing.assert_array_equal(np.asarray(got), expect)


def test_jax_integers_give_jax_default_float(jax):
    got = csoftmax.softmax(jax.numpy.arange(6).reshape(2, 3))
    assert got.dtype == jax.numpy.zeros(1, dtype=float).dtype  # float32 unless x64


@pytest.mark.parametrize("transform", ["jit", "grad", "vmap"])
def test_jax_tracer_is_a_clear_type_error(jax, transform):
    jnp = jax.numpy
    f = {"jit": jax.jit(lambda z: csoftmax.softmax(z)),
         "grad": jax.grad(lambda z: csoftmax.softmax(z).sum()),
         "vmap": jax.vmap(lambda z: csoftmax.softmax(z))}[transform]
    with pytest.raises(TypeError, match=r"x is a JAX tracer.*jax\.nn\.softmax"):
        f(jnp.ones((2, 3)))


def test_jax_out_is_refused_as_immutable(jax):
    x = jax.numpy.ones((2, 3))
    with pytest.raises(TypeError, match="out is a JAX array, and JAX arrays are immutable"):
        csoftmax.softmax(x, out=jax.numpy.zeros((2, 3)))


def test_torch_and_jax_together_are_refused(torch, jax):
    with pytest.raises(TypeError, match=r"y is a torch tensor but grad is a JAX array"):
        csoftmax.softmax_backward(torch.ones(2, 3), jax.numpy.ones((2, 3)))


# ---- the array API standard and plain DLPack --------------------------------------------

@pytest.fixture(scope="module")
def xp():
    return pytest.importorskip("array_api_strict", reason="array_api_strict is not installed")


@pytest.mark.parametrize("fname", list(FUNCS))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_array_api_array_in_same_namespace_out(xp, fname, dtype):
    arrays = _inputs(fname, (3, 7), np.dtype(dtype))
    got = getattr(csoftmax, fname)(*[xp.asarray(a) for a in arrays])
    expect = _numpy(fname, arrays)
    assert type(got).__module__.startswith("array_api_strict")
    assert got.dtype == getattr(xp, dtype)
    np.testing.assert_array_equal(np.from_dlpack(got), expect)


class _DLPackOnly:
    """An object with nothing but the DLPack protocol (no namespace)."""

    def __init__(self, a):
        self.a = a

    def __dlpack__(self, **kw):
        return self.a.__dlpack__(**kw)

    def __dlpack_device__(self):
        return self.a.__dlpack_device__()


def test_dlpack_object_without_namespace_gives_ndarray():
    x = RNG.standard_normal((3, 4))
    got = csoftmax.softmax(_DLPackOnly(x))
    assert type(got) is np.ndarray
    np.testing.assert_array_equal(got, csoftmax.softmax(x))


# ---- pandas and xarray: labels kept for results of the input's shape --------------------

@pytest.fixture(scope="module")
def pd():
    return pytest.importorskip("pandas", reason="pandas is not installed")


@pytest.fixture(scope="module")
def xr():
    return pytest.importorskip("xarray", reason="xarray is not installed")


@pytest.mark.parametrize("fname", [f for f in FUNCS if f in SHAPED_LIKE_INPUT])
def test_pandas_dataframe_keeps_index_and_columns(pd, fname):
    arrays = _inputs(fname, (4, 3), np.float64)
    frames = [pd.DataFrame(a, index=list("wxyz"), columns=["a", "b", "c"]) for a in arrays]
    got = getattr(csoftmax, fname)(*frames)
    assert isinstance(got, pd.DataFrame)
    assert list(got.index) == list("wxyz") and list(got.columns) == ["a", "b", "c"]
    np.testing.assert_array_equal(got.to_numpy(), _numpy(fname, arrays))


def test_pandas_series_and_shape_changing_results(pd):
    s = pd.Series([1.0, 2.0, 3.0], index=["a", "b", "c"], name="logits")
    got = csoftmax.log_softmax(s)
    assert isinstance(got, pd.Series) and got.name == "logits" and list(got.index) == ["a", "b", "c"]
    jac = csoftmax.softmax_jacobian(s)
    assert type(jac) is np.ndarray and jac.shape == (3, 3)


def test_pandas_out_is_written_and_returned(pd):
    df = pd.DataFrame(RNG.standard_normal((3, 4)))
    out = pd.DataFrame(np.zeros((3, 4)))
    assert csoftmax.softmax(df, out=out) is out
    np.testing.assert_array_equal(out.to_numpy(), csoftmax.softmax(df.to_numpy()))


def test_xarray_keeps_dims_and_coords_and_takes_dim_names(xr):
    x = RNG.standard_normal((3, 4, 5))
    a = xr.DataArray(x, dims=("batch", "cls", "t"), coords={"cls": list("abcd")}, name="z")
    got = csoftmax.softmax(a, axis="cls")
    assert isinstance(got, xr.DataArray)
    assert got.dims == a.dims and list(got.coords["cls"].values) == list("abcd")
    np.testing.assert_array_equal(got.values, csoftmax.softmax(x, axis=1))
    with pytest.raises(ValueError, match="axis 'nope' is not a dimension"):
        csoftmax.softmax(a, axis="nope")


def test_xarray_backed_by_dask_stays_lazy(xr):
    da = pytest.importorskip("dask.array", reason="dask is not installed")
    x = RNG.standard_normal((6, 5))
    a = xr.DataArray(da.from_array(x, chunks=(2, 2)), dims=("n", "k"))
    got = csoftmax.log_softmax(a, axis="k")
    assert isinstance(got, xr.DataArray) and isinstance(got.data, da.Array)
    np.testing.assert_array_equal(got.values, csoftmax.log_softmax(x))
