"""Drop-in names for code written against the NumPy/Numba/CuPy tutorials.

    from csoftmax.compat import Softmax, Softmax_grad

gives the tutorials' functions (2-D input, rows are samples) backed by the
csoftmax kernels, so such code changes one import and nothing else.
"""
from . import _entry


def _check_2d(x, fname):
    if getattr(x, "ndim", None) != 2:
        raise ValueError(f"{fname}: x must be a 2-D array (samples, nodes), "
                         f"got ndim={getattr(x, 'ndim', None)}")


def Softmax(x):
    """Row-wise softmax of a 2-D batch x (N, K); the tutorials' ``Softmax``."""
    _check_2d(x, "Softmax")
    return _entry.softmax(x, axis=1)


def Softmax_grad(x):
    """Jacobian (N, K, K) of the row-wise softmax of logits x; the tutorials'
    ``Softmax_grad``: J[n, i, j] = s_i (delta_ij - s_j)."""
    _check_2d(x, "Softmax_grad")
    return _entry.softmax_jacobian(x, axis=1)


def Softmax_cupy(x):
    """``Softmax`` for CuPy arrays, computed by csoftmax's CUDA kernels."""
    _check_2d(x, "Softmax_cupy")
    return _entry.softmax(x, axis=1)


def Softmax_grad_cupy(x):
    """``Softmax_grad`` for CuPy arrays, computed by csoftmax's CUDA kernels."""
    _check_2d(x, "Softmax_grad_cupy")
    return _entry.softmax_jacobian(x, axis=1)
