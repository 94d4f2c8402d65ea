"""The softmax functions of the NumPy / Numba / CuPy "network from scratch" tutorials.

These are the baselines csoftmax replaces (crysx_nn's ``Softmax`` and
``Softmax_grad``), kept verbatim in spirit: the main job and ``bench/`` time them,
and the tests check that ``csoftmax.compat`` returns what they return.
They are deliberately the slow, allocating originals; do not optimise them.
"""
import numpy as np


def _softmax(xp, x):
    max_x = xp.amax(x, 1).reshape(x.shape[0], 1)  # row-wise maximum, for stability
    e_x = xp.exp(x - max_x)
    return e_x / e_x.sum(axis=1, keepdims=True)


def _softmax_grad(xp, x):
    s = _softmax(xp, x)
    eye = xp.eye(s.shape[-1], dtype=s.dtype)
    diag = xp.einsum("ij,jk->ijk", s, eye)
    outer = xp.einsum("ij,ik->ijk", s, s)
    return diag - outer


def softmax_numpy(x):
    """Row-wise softmax of a 2-D batch, as the tutorials write it."""
    return _softmax(np, x)


def softmax_grad_numpy(x):
    """Batched softmax Jacobian (N, K, K) of logits x, as the tutorials write it."""
    return _softmax_grad(np, x)


def softmax_cupy(x):
    """``softmax_numpy`` for CuPy arrays (the CuPy tutorial's ``Softmax_cupy``)."""
    import cupy

    return _softmax(cupy, x)


def softmax_grad_cupy(x):
    """``softmax_grad_numpy`` for CuPy arrays (the CuPy tutorial's ``Softmax_grad_cupy``)."""
    import cupy

    return _softmax_grad(cupy, x)
