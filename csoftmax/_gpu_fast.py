"""The short path of a public call on a CuPy array.

A small call (1 x 10) is all host time: the general path (_semantics) spends
tens of microseconds on checks, the interop wrapper, the device scope, a
contiguity copy and an output copy around a launch that takes a few. The
public row functions (_entry.pyx) offer every call on a non-NumPy array here
first; this path takes exactly the calls whose general path would do nothing
but allocate the result and launch -- a 2-D CuPy array of float16/32/64
with unit column stride (any non-negative row stride: _gpu.row_stride) on
its last axis, no where=, dtype= or num_threads=, ``grad``
(backward passes) and ``out`` alike in every respect, on one device -- and
computes them with the same ``_gpu.run`` (memoised plan, cached kernel),
writing straight into a suitable ``out``. Anything else returns None and the
general path runs, so errors, warnings and odd layouts behave exactly as
there: this path raises nothing of its own.

``out`` is suitable when its rows are apart (row stride >= K), it is on the
inputs' device, and is either disjoint from the inputs (the byte ranges they
span) or one of them exactly (same start and strides: in place): every
kernel writes an element only after the reads that element's result needs
(tests/test_gpu_fast.py checks each tier in place under the emulator). An
``out`` that overlaps an input otherwise goes to the general path, which
computes into a temporary and copies.
"""
import sys

from . import _engine, _gpu

# Op code (the registry's, as _entry.pyx passes it) -> name, for the row
# operations whose result has the input's shape.
NAMES = {op["code"]: name for name, op in _engine.OPS.items()
         if op["gpu"] == "rows" and name not in _gpu._REDUCE_OPS}
_NATIVE = frozenset(_gpu.NATIVE_DTYPES)


def _like(a, x, cp):
    """``a`` (grad or out) is a CuPy array of x's shape and dtype that the
    kernels take as it is (unit column stride, a row stride)."""
    return (type(a) is cp.ndarray and a.shape == x.shape and a.dtype == x.dtype
            and _gpu.row_stride(a) is not None)


def _span(a):
    """The bytes [start, end) that the rows of the 2-D ``a`` lie in."""
    n, k = a.shape
    p = a.data.ptr
    return p, p + (n - 1) * a.strides[0] + k * a.itemsize


def _apart_or_same(out, a) -> bool:
    """``out`` does not overlap ``a``, or is exactly ``a`` (same start and
    strides, one shape and dtype: the same elements)."""
    (p, p_end), (q, q_end) = _span(out), _span(a)
    return (p == q and out.strides == a.strides) or p_end <= q or q_end <= p


def rows(op: int, x, g, axis, out):
    """``op`` on x (and g) into ``out`` or a new array, or None: the call is
    for the general path."""
    cp = sys.modules.get("cupy")
    try:
        if cp is None or type(x) is not cp.ndarray or type(axis) is not int or x.ndim != 2:
            return None
        n, k = x.shape
        if not (axis == -1 or axis == 1) or n == 0 or not 0 < k <= _gpu._MAX_K:
            return None
        if x.dtype not in _NATIVE or _gpu.row_stride(x) is None:
            return None
        name = NAMES.get(op)
        if name is None:
            return None
        device = x.device
        if g is not None and not (_like(g, x, cp) and g.device.id == device.id):
            return None
        if out is not None and not (_like(out, x, cp) and out.device.id == device.id
                                    and (n == 1 or out.strides[0] >= k * out.itemsize)
                                    and _apart_or_same(out, x)
                                    and (g is None or _apart_or_same(out, g))):
            return None
    except (AttributeError, TypeError):  # an array-like that is not quite CuPy's
        return None
    if out is None:
        with device:
            out = cp.empty((n, k), x.dtype)
    _gpu.run(name, x, g, out)
    return out
