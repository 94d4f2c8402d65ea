"""csoftmax: fast, numerically stable softmax, log-softmax and their derivatives.

Row-wise over a batch x of shape (N, K) by default (axis=-1), on the CPU
(Cython + OpenMP, vectorised exp) for NumPy arrays and on NVIDIA GPUs (CUDA
kernels through CuPy) for CuPy arrays.
"""
from ._version import __version__
from ._entry import (
    log_softmax,
    log_softmax_backward,
    softmax,
    softmax_backward,
    softmax_jacobian,
)
from ._config import show_config

__all__ = [
    "softmax",
    "log_softmax",
    "softmax_backward",
    "log_softmax_backward",
    "softmax_jacobian",
    "show_config",
    "__version__",
]
