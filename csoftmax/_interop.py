"""Foreign arrays in, the caller's kind of array out.

The public functions compute NumPy arrays (the CPU kernels) and CuPy arrays
(the GPU backend). Every other array a caller holds comes through here, on the
general path only (_semantics wraps its public functions with `install`; NumPy
and CuPy arrays pass straight through, after one type check per argument):

* torch tensors: a zero-copy DLPack view for the kernels (NumPy on the CPU,
  CuPy on a CUDA device, on the tensor's device and current stream), the
  result handed back as a tensor of the same device (zero-copy again);
* JAX arrays: computed from a DLPack view, returned as JAX arrays on the
  input's device; tracers (inside jax.jit, jax.grad, jax.vmap) are refused;
* any other object with `__dlpack__` or `__array_namespace__` (the array API
  standard, e.g. array_api_strict): a DLPack view in, its namespace's
  `from_dlpack` (or `asarray`) out;
* Dask arrays: a lazy graph (_dask);
* pandas and xarray objects: computed on their values; a result of the
  input's shape keeps the labels, any other result is an ndarray.

No library is imported here unless the caller passed one of its objects: a
kind is recognised by the top-level module of the object's type, so `import
csoftmax` imports none of them. Which arguments of each public function are
arrays is one table (ARRAY_ARGS); a new public function is one entry.

This module is only the recognition and the wrapper, loaded with csoftmax;
the exchange itself (_foreign) and the Dask graphs (_dask) are imported on
the first call that needs them.
"""
import functools
import sys

import numpy as np

# ---- which arguments are arrays ---------------------------------------------

# The positional array parameters of each public function, in order; the
# parameter after them is `axis`. Entries for functions that do not exist in
# this build are harmless: install() wraps only what it finds.
ARRAY_ARGS = {
    "softmax": ("x",),
    "log_softmax": ("x",),
    "logsumexp": ("x",),
    "softmax_jacobian": ("x",),
    "softmax_backward": ("y", "grad"),
    "log_softmax_backward": ("y", "grad"),
    "softmax_cross_entropy": ("logits", "target"),
}

# Keyword arguments that hold arrays, in any public function that has them.
# `out` and `grad_out` are written: a foreign one is computed into through a
# zero-copy view where its library allows it, and returned itself.
ARRAY_KEYWORDS = ("where", "weight", "out", "grad_out")
OUTPUT_KEYWORDS = ("out", "grad_out")


# ---- recognising kinds ---------------------------------------------------------

def _top_module(a):
    return type(a).__module__.partition(".")[0]


def kind_of(a):
    """The kind of a foreign array (a string), or None for what the general
    path takes as it is: NumPy and CuPy arrays, scalars, lists, None."""
    if a is None or isinstance(a, (np.ndarray, np.generic, int, float, complex, list, tuple)):
        return None
    mod = _top_module(a)
    if mod == "cupy":
        return None
    if mod == "torch":
        return "torch"
    if mod in ("jax", "jaxlib"):
        return "jax"
    if mod == "dask":
        return "dask" if _is_dask_array(a) else None
    if mod == "pandas":
        return "pandas"
    if mod == "xarray":
        return "xarray"
    if hasattr(type(a), "__dlpack__") or hasattr(type(a), "__array_namespace__"):
        return "dlpack"
    return None


def _is_dask_array(a):
    da = sys.modules.get("dask.array")
    return da is not None and isinstance(a, da.Array)


_KIND_NAMES = {"torch": "a torch tensor", "jax": "a JAX array", "dask": "a Dask array",
               "pandas": "a pandas object", "xarray": "an xarray object",
               "dlpack": "an array API / DLPack array"}


# ---- the wrapper ---------------------------------------------------------------

def install(namespace):
    """Wrap the public functions of `namespace` (a module's globals) that
    ARRAY_ARGS names, so that foreign arrays come through here."""
    for fname in ARRAY_ARGS:
        impl = namespace.get(fname)
        if impl is not None and not getattr(impl, "_csoftmax_interop", False):
            namespace[fname] = wrap(fname, impl)


def wrap(fname, impl):
    npos = len(ARRAY_ARGS[fname])
    names = ARRAY_ARGS[fname]

    @functools.wraps(impl)
    def wrapper(*args, **kwargs):
        # NumPy, CuPy and array-likes: one type check per argument, then impl.
        for a in args[:npos]:
            if kind_of(a) is not None:
                return call(fname, impl, args, kwargs)
        for key in names + ARRAY_KEYWORDS:
            if kind_of(kwargs.get(key)) is not None:
                return call(fname, impl, args, kwargs)
        dtype = kwargs.get("dtype")
        if dtype is not None and _top_module(dtype) in ("torch", "jax", "jaxlib"):
            kwargs["dtype"] = _numpy_dtype(dtype)
        return impl(*args, **kwargs)

    wrapper._csoftmax_interop = True
    wrapper._csoftmax_impl = impl
    return wrapper


class _Call:
    """A call's arguments by name: the positional arrays, the rest as given."""

    def __init__(self, fname, args, kwargs):
        self.fname = fname
        self.names = ARRAY_ARGS[fname]
        npos = len(self.names)
        self.arrays = {}  # name -> value, for every array argument given
        for name, a in zip(self.names, args[:npos]):
            self.arrays[name] = a
        self.rest = tuple(args[npos:])  # axis, positionally
        self.kwargs = dict(kwargs)
        for key in self.names + ARRAY_KEYWORDS:
            if key in self.kwargs:
                self.arrays[key] = self.kwargs.pop(key)
        self.npos_given = min(len(args), npos)

    def rebuild(self, arrays):
        """(args, kwargs) for the implementation with `arrays` substituted."""
        args = [arrays[n] for n in self.names[:self.npos_given]] + list(self.rest)
        kwargs = dict(self.kwargs)
        for key, a in arrays.items():
            if key not in self.names[:self.npos_given]:
                kwargs[key] = a
        return tuple(args), kwargs

    @property
    def axis(self):
        if self.rest:
            return self.rest[0]
        return self.kwargs.get("axis", -1)


def call(fname, impl, args, kwargs):
    """A call with at least one foreign array argument."""
    c = _Call(fname, args, kwargs)
    kinds = {}
    for name, a in c.arrays.items():
        k = kind_of(a)
        if k is not None:
            kinds.setdefault(k, name)
    if "dtype" in c.kwargs and c.kwargs["dtype"] is not None:
        c.kwargs["dtype"] = _numpy_dtype(c.kwargs["dtype"])
    # Labelled containers first: their values may themselves be Dask, torch...
    for k in ("xarray", "pandas"):
        if k in kinds:
            from . import _foreign
            return _foreign.labelled(k, c, impl)
    if len(kinds) > 1:
        (k1, n1), (k2, n2) = list(kinds.items())[:2]
        raise TypeError(f"{fname}: {n1} is {_KIND_NAMES[k1]} but {n2} is "
                        f"{_KIND_NAMES[k2]}; pass the arrays of one library "
                        "(NumPy arrays may go with any of them)")
    kind = next(iter(kinds))
    if kind == "dask":
        from . import _dask
        return _dask.call(fname, c)
    from . import _foreign
    return _foreign.Foreign(kind, c).run(impl)


def _numpy_dtype(dtype):
    """A torch dtype as the NumPy dtype of the same name, a JAX scalar type
    (jnp.float32) as its NumPy dtype; others unchanged."""
    mod = _top_module(dtype)
    if mod in ("jax", "jaxlib"):
        return np.dtype(getattr(dtype, "dtype", dtype))
    if mod != "torch":
        return dtype
    name = str(dtype).rpartition(".")[2]
    if name == "bfloat16":
        try:
            import ml_dtypes
        except ImportError:
            return "bfloat16"
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)
