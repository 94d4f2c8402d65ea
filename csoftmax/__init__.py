"""csoftmax: fast, numerically stable softmax, log-softmax and their derivatives.

Row-wise over a batch x of shape (N, K) by default (axis=-1), on the CPU
(Cython + OpenMP, vectorised exp) for NumPy arrays and on NVIDIA GPUs (CUDA
kernels through CuPy) for CuPy arrays.
"""
from ._version import __version__
from . import _openmp_env

try:
    # The first compiled module loads the OpenMP runtime: see _openmp_env.
    _openmp_env.import_with_short_spin(lambda: __import__(__name__ + "._entry"))
except ModuleNotFoundError as _exc:
    if _exc.name != __name__ + "._entry":
        raise

    def _unbuilt_source_tree():
        """The folder that holds this file, if it is csoftmax's source (the
        .pyx files are here) without compiled modules for this Python."""
        import importlib.machinery
        import os

        here = os.path.dirname(os.path.abspath(__file__))
        if not os.path.exists(os.path.join(here, "_entry.pyx")):
            return None
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            if os.path.exists(os.path.join(here, "_entry" + suffix)):
                return None
        return here

    _src = _unbuilt_source_tree()
    if _src is None:
        raise
    import os as _os

    _root = _os.path.dirname(_src)
    raise ImportError(
        f"csoftmax: {_src} is csoftmax's source folder, and its compiled modules "
        f"have not been built (Python imports it because it comes first on sys.path, "
        f"e.g. from the current directory). To build them, run "
        f"`python -m pip install -e .` in {_root}; or run Python from another "
        f"directory to import an installed csoftmax."
    ) from None

from ._entry import (
    log_softmax,
    log_softmax_backward,
    logsumexp,
    softmax,
    softmax_backward,
    softmax_jacobian,
)
from ._loss import softmax_cross_entropy
from ._alloc import output_cache, set_output_cache
from ._config import show_config

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
