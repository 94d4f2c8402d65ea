"""The exchange with foreign arrays, for _interop: DLPack views in, the
caller's kind of array out (torch, JAX, array API / DLPack objects), and
pandas / xarray objects computed on their values and relabelled.

Imported on the first call with such an array, not with csoftmax.
"""
import sys

import numpy as np

from ._interop import _KIND_NAMES, OUTPUT_KEYWORDS, _top_module, kind_of

# DLPack device types (dlpack.h, DLDeviceType).
_DL_CPU, _DL_CUDA, _DL_CUDA_HOST = 1, 2, 3
_DL_NAMES = {4: "OpenCL", 7: "Vulkan", 8: "Metal", 9: "VPI", 10: "ROCm",
             13: "CUDA managed memory", 14: "oneAPI"}

# ---- DLPack kinds: torch, JAX, array API ----------------------------------------

class Foreign:
    """One call on arrays of one DLPack library: views in, its arrays out."""

    def __init__(self, kind, c):
        self.kind = kind
        self.c = c
        self.lib = sys.modules.get(_top_module(c.arrays[self._first()]))
        self.like = c.arrays[self._first()]   # results take this one's kind and device
        self.device = None      # (DLPack device type, id) of the arrays
        self.stream = None      # the CUDA stream to run on (torch's current)
        self.narrow = {}        # name -> the library dtype a float32 view stands for

    def _first(self):
        for name, a in self.c.arrays.items():
            if kind_of(a) is not None:
                return name

    # -- in
    def run(self, impl):
        for name, a in self.c.arrays.items():
            if kind_of(a) is not None:
                self._check(a, name)
        views = {}
        originals = {}  # id(view) -> the foreign output it is a view of
        self.copy_back = {}  # output name -> a foreign output no view can write
        cuda = self.device is not None and self.device[0] == _DL_CUDA
        with self._cuda_context() if cuda else _nothing():
            for name, a in self.c.arrays.items():
                if kind_of(a) is None:
                    views[name] = a
                    continue
                v = self._view(a, name, output=name in OUTPUT_KEYWORDS)
                views[name] = v
                if name in OUTPUT_KEYWORDS:
                    originals[id(v)] = a
            args, kwargs = self.c.rebuild(views)
            res = impl(*args, **kwargs)
            if isinstance(res, tuple):
                return tuple(self._back(r, originals, OUTPUT_KEYWORDS[i] if i < 2 else None)
                             for i, r in enumerate(res))
            return self._back(res, originals, "out")

    def _check(self, a, name):
        fname = self.c.fname
        if self.kind == "torch" and getattr(a, "requires_grad", False):
            raise TypeError(
                f"{fname}: {name} is a torch tensor that requires grad; csoftmax does not "
                f"record autograd. Pass {name}.detach() (the result will not be tracked), "
                f"or use torch's own differentiable functions (torch.softmax, "
                f"torch.log_softmax, torch.nn.functional.cross_entropy)")
        if self.kind == "jax":
            jax = sys.modules.get("jax")
            if jax is not None and isinstance(a, jax.core.Tracer):
                raise TypeError(
                    f"{fname}: {name} is a JAX tracer (csoftmax was called inside "
                    f"jax.jit, jax.grad, jax.vmap or another transformation), and "
                    f"csoftmax computes on concrete arrays only. Inside traced code use "
                    f"jax.nn.softmax / jax.nn.log_softmax (or jax.pure_callback); "
                    f"outside it, pass a concrete jax.Array")
            if name in OUTPUT_KEYWORDS:
                raise TypeError(f"{fname}: {name} is a JAX array, and JAX arrays are "
                                f"immutable; leave {name}=None and use the result")
        device = _dlpack_device(a)
        if device is not None:
            if device[0] == _DL_CUDA_HOST:
                device = (_DL_CPU, 0)
            if device[0] not in (_DL_CPU, _DL_CUDA):
                where = _DL_NAMES.get(device[0], f"DLPack device type {device[0]}")
                raise TypeError(f"{fname}: {name} is on a {where} device; csoftmax "
                                "computes on the CPU and on NVIDIA GPUs (CUDA); move "
                                f"{name} to one of them first")
            if self.device is None:
                self.device = device
            elif device != self.device:
                raise ValueError(f"{fname}: {name} is on another device than the other "
                                 f"arrays ({device} vs {self.device}); put them on one")

    def _view(self, a, name, output):
        """A NumPy (CPU) or CuPy (CUDA) array that shares a's memory, where
        its library allows it."""
        if self.kind == "torch":
            return self._torch_view(a, name, output)
        cuda = self.device is not None and self.device[0] == _DL_CUDA
        if cuda:
            return _cupy(self.c.fname, name, self.kind).from_dlpack(a)
        try:
            v = np.from_dlpack(a)
        except (TypeError, BufferError, RuntimeError, AttributeError):
            try:
                v = np.asarray(a)
            except Exception as exc:
                raise TypeError(f"{self.c.fname}: {name} ({type(a).__name__}) cannot be "
                                f"read as an array: {exc}") from None
        if output and not v.flags.writeable:
            raise TypeError(f"{self.c.fname}: {name} ({type(a).__name__}) cannot be "
                            f"written in place; leave {name}=None and use the result")
        return v

    def _torch_view(self, t, name, output):
        torch = self.lib
        cuda = t.device.type == "cuda"
        if t.dtype == torch.bfloat16 and not cuda:
            bf16 = _ml_bfloat16()
            if bf16 is not None:
                # DLPack has no bfloat16 for NumPy: the same bits as int16,
                # seen as ml_dtypes' bfloat16 (zero-copy, writable for out).
                return np.from_dlpack(t.view(torch.int16)).view(bf16)
        if t.dtype == torch.bfloat16:
            # Without ml_dtypes: compute on a float32 copy and round back in
            # torch (bfloat16 is computed in float32 anyway). A bfloat16 out
            # gets the rounded result copied in afterwards.
            if output:
                self.copy_back[name] = t
                return None
            self.narrow[name] = t.dtype
            t = t.float()
        elif t.is_conj() or t.is_neg():
            t = t.resolve_conj().resolve_neg()
        try:
            if cuda:
                return _cupy(self.c.fname, name, "torch").from_dlpack(t)
            return np.from_dlpack(t)
        except (BufferError, RuntimeError, TypeError) as exc:
            raise TypeError(f"{self.c.fname}: {name} (a torch tensor, layout {t.layout}, "
                            f"device {t.device}) cannot be shared through DLPack: {exc}. "
                            f"Pass a dense (strided) tensor on the CPU or a CUDA "
                            f"device") from None

    def _cuda_context(self):
        cupy = _cupy(self.c.fname, self._first(), self.kind)
        dev = self.device[1]
        stream = None
        if self.kind == "torch":
            torch = self.lib
            stream = cupy.cuda.ExternalStream(
                torch.cuda.current_stream(dev).cuda_stream, dev)
        return _CudaContext(cupy.cuda.Device(dev), stream)

    # -- out
    def _back(self, r, originals, output=None):
        if isinstance(r, np.generic):
            r = np.asarray(r)  # a full reduction: a 0-d array of the caller's kind
        if not isinstance(r, np.ndarray) and _top_module(r) != "cupy":
            return r  # a Python scalar or None
        orig = originals.get(id(r))
        if orig is not None:
            return orig
        if kind_of(self.c.arrays.get(self.c.names[0])) is None and output not in self.copy_back:
            return r  # the first array is NumPy (a foreign where=, say): so is the result
        if self.kind == "torch":
            t = self._to_torch(r)
            dest = self.copy_back.get(output)
            if dest is None:
                return t
            if t.dtype != dest.dtype:
                raise ValueError(f"{self.c.fname}: {output} has dtype {dest.dtype}, "
                                 f"expected {t.dtype}")
            return dest.copy_(t)
        if self.kind == "jax":
            return self._to_jax(r)
        return self._to_namespace(r)

    def _to_torch(self, r):
        torch = self.lib
        if r.dtype.kind == "V" or r.dtype.name == "bfloat16":
            # An ml_dtypes bfloat16 ndarray: its bits, seen as torch.bfloat16.
            t = torch.from_dlpack(r.view(np.int16)).view(torch.bfloat16)
        else:
            t = torch.from_dlpack(r)
        if self.narrow and self.c.kwargs.get("dtype") is None and t.dtype == torch.float32:
            t = t.to(next(iter(self.narrow.values())))
        return t

    def _to_jax(self, r):
        jax = self.lib if self.lib.__name__ == "jax" else sys.modules["jax"]
        if not isinstance(r, np.ndarray):  # a CuPy result of a JAX array on a GPU
            return jax.numpy.from_dlpack(r)
        canon = jax.dtypes.canonicalize_dtype(r.dtype)
        if canon != r.dtype:
            # Without jax_enable_x64, JAX keeps no float64: int inputs give
            # float32, as jax.nn.softmax gives.
            r = r.astype(canon)
        devices = getattr(self.like, "devices", None)
        dev = next(iter(devices())) if callable(devices) else None
        return jax.device_put(r, dev)

    def _to_namespace(self, r):
        ns = None
        if hasattr(self.like, "__array_namespace__"):
            ns = self.like.__array_namespace__()
        elif self.lib is not None:
            ns = self.lib
        for how in ("from_dlpack", "asarray"):
            f = getattr(ns, how, None) if ns is not None else None
            if f is not None:
                try:
                    return f(r)
                except (TypeError, BufferError, RuntimeError, ValueError):
                    continue
        return r


def _ml_bfloat16():
    """NumPy's bfloat16 dtype from ml_dtypes, or None when it is not installed."""
    try:
        import ml_dtypes
    except ImportError:
        return None
    return np.dtype(ml_dtypes.bfloat16)


def _dlpack_device(a):
    f = getattr(a, "__dlpack_device__", None)
    if f is None:
        return None
    try:
        t, i = f()
    except Exception:
        return None
    return int(t), int(i)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _CudaContext:
    """The array's device and, for torch, its current stream as CuPy's, so
    that the kernels run where and when the caller's library expects."""

    def __init__(self, device, stream):
        self.device, self.stream = device, stream

    def __enter__(self):
        self.device.__enter__()
        if self.stream is not None:
            self.stream.__enter__()
        return self

    def __exit__(self, *exc):
        if self.stream is not None:
            self.stream.__exit__(*exc)
        self.device.__exit__(*exc)
        return False


def _cupy(fname, name, kind):
    try:
        import cupy
    except ImportError:
        raise TypeError(
            f"{fname}: {name} is {_KIND_NAMES[kind]} on a CUDA device; csoftmax runs "
            "CUDA arrays through CuPy, which is not installed (pip install "
            "'csoftmax[cuda12]' or 'csoftmax[cuda13]'), or move it to the CPU") from None
    return cupy


# ---- pandas and xarray -----------------------------------------------------------

def labelled(kind, c, impl):
    """pandas / xarray: computed on the values (which may be Dask, torch, ...:
    the call goes round again); a result of the first input's shape keeps its
    labels, any other result is returned as it is computed (an ndarray)."""
    first = c.names[0]
    like = c.arrays.get(first)
    values = {}
    outputs = {}
    for name, a in c.arrays.items():
        k = kind_of(a)
        if k in ("pandas", "xarray"):
            if name in OUTPUT_KEYWORDS:
                outputs[name] = a
                values[name] = None  # computed fresh, then assigned into it
                continue
            values[name] = _values(a, k)
        else:
            values[name] = a
    axis = c.axis
    if kind_of(like) == "xarray" and _names_dims(axis):
        axis = _dims_to_axes(like, axis, c.fname)
        c.rest = (axis,) + c.rest[1:] if c.rest else ()
        if not c.rest:
            c.kwargs["axis"] = axis
    for name in outputs:
        del values[name]
    args, kwargs = c.rebuild(values)
    # Through the public function again: the values may be Dask, torch, ...
    res = getattr(sys.modules[__package__], c.fname, impl)(*args, **kwargs)
    single = not isinstance(res, tuple)
    results = (res,) if single else res
    back = []
    for i, r in enumerate(results):
        # out goes with the first result, grad_out with the gradient.
        oname = "out" if i == 0 else "grad_out"
        if oname in outputs:
            back.append(_assign(outputs[oname], r))
        elif kind_of(like) in ("pandas", "xarray") and getattr(r, "shape", None) == like.shape:
            back.append(_relabel(like, r))
        else:
            back.append(r)
    return back[0] if single else tuple(back)


def _values(a, kind):
    if kind == "xarray":
        if not hasattr(a, "dims") or not hasattr(a, "data") or hasattr(a, "data_vars"):
            raise TypeError(f"csoftmax takes xarray DataArrays, not {type(a).__name__}; "
                            "apply it to each variable (Dataset.map)")
        return a.data
    if not hasattr(a, "to_numpy"):
        raise TypeError(f"csoftmax takes pandas Series and DataFrames, not {type(a).__name__}")
    return a.to_numpy()


def _names_dims(axis):
    if isinstance(axis, str):
        return True
    return isinstance(axis, tuple) and any(isinstance(d, str) for d in axis)


def _dims_to_axes(like, axis, fname):
    dims = list(like.dims)

    def one(d):
        if isinstance(d, str):
            if d not in dims:
                raise ValueError(f"{fname}: axis {d!r} is not a dimension of x {tuple(dims)}")
            return dims.index(d)
        return d
    return one(axis) if isinstance(axis, str) else tuple(one(d) for d in axis)


def _relabel(like, r):
    mod = _top_module(like)
    if mod == "xarray":
        xr = sys.modules["xarray"]
        return xr.DataArray(r, dims=like.dims, coords=like.coords, name=like.name)
    pd = sys.modules["pandas"]
    if like.ndim == 1:
        return pd.Series(np.asarray(r), index=like.index, name=like.name)
    return pd.DataFrame(np.asarray(r), index=like.index, columns=like.columns)


def _assign(out, r):
    if _top_module(out) == "xarray":
        out.data[...] = r
    elif getattr(out, "ndim", 1) == 1:
        out.iloc[:] = np.asarray(r)
    else:
        out.iloc[:, :] = np.asarray(r)
    return out
