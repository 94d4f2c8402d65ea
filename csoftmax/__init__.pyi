# Type stubs for the public Python API (the functions live in the compiled
# csoftmax._entry, which type checkers cannot read).
#
# NumPy input of a floating dtype gives a result of the same dtype; integer and
# bool input gives float64; dtype= gives that dtype. CuPy arrays (the GPU
# backend), masked arrays, dtype= and other array-likes fall through to the
# last overload, typed Any, so that CuPy stays optional.
from typing import Any, TypeVar, overload

import numpy as np
from numpy.typing import DTypeLike, NDArray

__version__: str
__all__ = [
    "softmax",
    "log_softmax",
    "softmax_backward",
    "log_softmax_backward",
    "softmax_jacobian",
    "logsumexp",
    "softmax_cross_entropy",
    "show_config",
    "set_output_cache",
    "output_cache",
    "__version__",
]

_Float = TypeVar("_Float", np.float16, np.float32, np.float64)
_Exact = np.integer[Any] | np.bool_
# axis: an int, a tuple of ints, or None for all axes.
_Axis = int | tuple[int, ...] | None
# where=: a boolean array that broadcasts to the input.
_Where = NDArray[np.bool_] | None

@overload
def softmax(x: NDArray[_Float], axis: _Axis = -1, *, where: _Where = None,
    out: NDArray[_Float] | None = None, dtype: None = None,
    num_threads: int | None = None) -> NDArray[_Float]: ...
@overload
def softmax(x: NDArray[_Exact], axis: _Axis = -1, *, where: _Where = None,
    out: NDArray[np.float64] | None = None, dtype: None = None,
    num_threads: int | None = None) -> NDArray[np.float64]: ...
@overload
def softmax(x: Any, axis: _Axis = -1, *, where: Any = None, out: Any = None,
    dtype: DTypeLike | None = None, num_threads: int | None = None) -> Any: ...

@overload
def log_softmax(x: NDArray[_Float], axis: _Axis = -1, *, where: _Where = None,
    out: NDArray[_Float] | None = None, dtype: None = None,
    num_threads: int | None = None) -> NDArray[_Float]: ...
@overload
def log_softmax(x: NDArray[_Exact], axis: _Axis = -1, *, where: _Where = None,
    out: NDArray[np.float64] | None = None, dtype: None = None,
    num_threads: int | None = None) -> NDArray[np.float64]: ...
@overload
def log_softmax(x: Any, axis: _Axis = -1, *, where: Any = None, out: Any = None,
    dtype: DTypeLike | None = None, num_threads: int | None = None) -> Any: ...

@overload
def softmax_backward(y: NDArray[_Float], grad: NDArray[_Float], axis: _Axis = -1, *, where: _Where = None,
    out: NDArray[_Float] | None = None, dtype: None = None,
    num_threads: int | None = None) -> NDArray[_Float]: ...
@overload
def softmax_backward(y: NDArray[_Exact], grad: NDArray[_Exact], axis: _Axis = -1, *, where: _Where = None,
    out: NDArray[np.float64] | None = None, dtype: None = None,
    num_threads: int | None = None) -> NDArray[np.float64]: ...
@overload
def softmax_backward(y: Any, grad: Any, axis: _Axis = -1, *, where: Any = None, out: Any = None,
    dtype: DTypeLike | None = None, num_threads: int | None = None) -> Any: ...

@overload
def log_softmax_backward(y: NDArray[_Float], grad: NDArray[_Float], axis: _Axis = -1, *, where: _Where = None,
    out: NDArray[_Float] | None = None, dtype: None = None,
    num_threads: int | None = None) -> NDArray[_Float]: ...
@overload
def log_softmax_backward(y: NDArray[_Exact], grad: NDArray[_Exact], axis: _Axis = -1, *, where: _Where = None,
    out: NDArray[np.float64] | None = None, dtype: None = None,
    num_threads: int | None = None) -> NDArray[np.float64]: ...
@overload
def log_softmax_backward(y: Any, grad: Any, axis: _Axis = -1, *, where: Any = None, out: Any = None,
    dtype: DTypeLike | None = None, num_threads: int | None = None) -> Any: ...

@overload
def softmax_jacobian(x: NDArray[_Float], axis: int = -1, *, where: _Where = None,
                     out: NDArray[_Float] | None = None, dtype: None = None,
                     num_threads: int | None = None) -> NDArray[_Float]: ...
@overload
def softmax_jacobian(x: NDArray[_Exact], axis: int = -1, *, where: _Where = None,
                     out: NDArray[np.float64] | None = None, dtype: None = None,
                     num_threads: int | None = None) -> NDArray[np.float64]: ...
@overload
def softmax_jacobian(x: Any, axis: int = -1, *, where: Any = None, out: Any = None,
                     dtype: DTypeLike | None = None, num_threads: int | None = None) -> Any: ...

def logsumexp(x: Any, axis: _Axis = -1, *, where: Any = None, keepdims: bool = False,
              out: Any = None, dtype: DTypeLike | None = None,
              num_threads: int | None = None) -> Any: ...

# The fused softmax cross-entropy: the loss (a NumPy scalar of the result dtype,
# or the per-row losses for reduction="none"), or (loss, grad) with
# return_grad=True. One signature (not overloads on return_grad): the result
# type depends on reduction and return_grad together.
def softmax_cross_entropy(logits: Any, target: Any, axis: int = -1, *,
                          label_smoothing: float = 0.0, ignore_index: int | None = None,
                          weight: Any = None, reduction: str = "mean", return_grad: bool = False,
                          where: Any = None, dtype: Any = None, out: Any = None,
                          grad_out: Any = None, num_threads: int | None = None) -> Any: ...

def show_config(print_: bool = True) -> dict[str, Any]: ...
def set_output_cache(nbytes: int) -> int: ...
def output_cache() -> dict[str, int]: ...
