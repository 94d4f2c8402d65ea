"""float64 references of every operation, written for clarity, not speed.

The one reference that the tests, the benchmarks' accuracy checks and the GPU
emulator's checks compare csoftmax with: NumPy in float64 from the inputs as
given (in their own dtype, converted exactly), along the last axis unless told
otherwise. NaN, inf and all -inf rows follow from IEEE arithmetic, as in the
kernels; the warnings that arithmetic raises are silenced.
"""
import numpy as np

__all__ = ["softmax", "log_softmax", "softmax_backward", "log_softmax_backward",
           "softmax_jacobian", "logsumexp", "reference"]


def _f64(a):
    return np.asarray(a, dtype=np.float64)


def _keep(where, x):
    return np.ones(x.shape, dtype=bool) if where is None else np.broadcast_to(where, x.shape)


def _masked_max(x, keep, axis):
    # The max over the unmasked entries, -inf where there are none; NaN is
    # ignored here (it reaches the sum and makes the row NaN there).
    return np.max(np.where(keep & ~np.isnan(x), x, -np.inf), axis=axis, keepdims=True)


def softmax(x, axis=-1, where=None):
    x = _f64(x)
    keep = _keep(where, x)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        e = np.where(keep, np.exp(x - _masked_max(x, keep, axis)), 0.0)
        return np.where(keep, e / np.sum(e, axis=axis, keepdims=True), 0.0)


def log_softmax(x, axis=-1, where=None):
    x = _f64(x)
    keep = _keep(where, x)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        z = x - _masked_max(x, keep, axis)
        s = np.sum(np.where(keep, np.exp(z), 0.0), axis=axis, keepdims=True)
        return np.where(keep, z - np.log(s), -np.inf)


def softmax_backward(y, grad, axis=-1, where=None):
    y, g = _f64(y), _f64(grad)
    keep = _keep(where, y)
    with np.errstate(invalid="ignore", over="ignore"):
        d = np.sum(np.where(keep, g * y, 0.0), axis=axis, keepdims=True)
        return np.where(keep, y * (g - d), 0.0)


def log_softmax_backward(y, grad, axis=-1, where=None):
    y, g = _f64(y), _f64(grad)
    keep = _keep(where, y)
    with np.errstate(invalid="ignore", over="ignore"):
        sg = np.sum(np.where(keep, g, 0.0), axis=axis, keepdims=True)
        return np.where(keep, g - np.exp(y) * sg, 0.0)


def softmax_jacobian(x, where=None):
    """(..., K) -> (..., K, K): s_i (delta_ij - s_j), diagonal s_i - s_i^2."""
    s = softmax(x, where=where)
    with np.errstate(invalid="ignore", over="ignore"):
        jac = -(s[..., :, None] * s[..., None, :])
        idx = np.arange(s.shape[-1])
        jac[..., idx, idx] = s - s * s
    if where is not None:  # masked rows and columns are exactly 0
        keep = np.broadcast_to(where, s.shape)
        jac = np.where(keep[..., :, None] & keep[..., None, :], jac, 0.0)
    return jac


def logsumexp(x, axis=-1, where=None):
    """scipy.special.logsumexp's values: NaN -> NaN, else +inf -> +inf, only
    -inf or nothing (unmasked) -> -inf."""
    x = _f64(x)
    keep = _keep(where, x)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        m = _masked_max(x, keep, axis)
        m = np.where(np.isfinite(m), m, 0.0)
        s = np.sum(np.where(keep, np.exp(x - m), 0.0), axis=axis, keepdims=True)
        return np.squeeze(m + np.log(s), axis=axis)


def reference(op, a, b=None, where=None):
    """The float64 result of the operation named `op` on its inputs."""
    if op in ("softmax_backward", "log_softmax_backward"):
        return globals()[op](a, b, where=where)
    if op in ("softmax", "log_softmax", "softmax_jacobian", "logsumexp"):
        return globals()[op](a, where=where)
    raise ValueError(f"no reference for {op!r}")
