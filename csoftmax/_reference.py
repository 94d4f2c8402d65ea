"""float64 references of every operation, written for clarity, not speed.

The one reference that the tests, the benchmarks' accuracy checks and the GPU
emulator's checks compare csoftmax with: NumPy in float64 from the inputs as
given (in their own dtype, converted exactly), along the last axis unless told
otherwise. NaN, inf and all -inf rows follow from IEEE arithmetic, as in the
kernels; the warnings that arithmetic raises are silenced.
"""
import numpy as np

__all__ = ["softmax", "log_softmax", "softmax_backward", "log_softmax_backward",
           "softmax_jacobian", "reference"]


def _f64(a):
    return np.asarray(a, dtype=np.float64)


def softmax(x, axis=-1):
    x = _f64(x)
    with np.errstate(invalid="ignore", over="ignore"):
        e = np.exp(x - np.max(x, axis=axis, keepdims=True))
        return e / np.sum(e, axis=axis, keepdims=True)


def log_softmax(x, axis=-1):
    x = _f64(x)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        z = x - np.max(x, axis=axis, keepdims=True)
        return z - np.log(np.sum(np.exp(z), axis=axis, keepdims=True))


def softmax_backward(y, grad, axis=-1):
    y, g = _f64(y), _f64(grad)
    with np.errstate(invalid="ignore", over="ignore"):
        return y * (g - np.sum(g * y, axis=axis, keepdims=True))


def log_softmax_backward(y, grad, axis=-1):
    y, g = _f64(y), _f64(grad)
    with np.errstate(invalid="ignore", over="ignore"):
        return g - np.exp(y) * np.sum(g, axis=axis, keepdims=True)


def softmax_jacobian(x):
    """(..., K) -> (..., K, K): s_i (delta_ij - s_j), diagonal s_i - s_i^2."""
    s = softmax(x)
    with np.errstate(invalid="ignore", over="ignore"):
        jac = -(s[..., :, None] * s[..., None, :])
        idx = np.arange(s.shape[-1])
        jac[..., idx, idx] = s - s * s
    return jac


def reference(op, a, b=None):
    """The float64 result of the operation named `op` on its inputs."""
    if op in ("softmax_backward", "log_softmax_backward"):
        return globals()[op](a, b)
    if op in ("softmax", "log_softmax", "softmax_jacobian"):
        return globals()[op](a)
    raise ValueError(f"no reference for {op!r}")
