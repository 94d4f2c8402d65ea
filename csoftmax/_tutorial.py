"""The softmax functions of the NumPy / Numba / CuPy "network from scratch" tutorials.

These are the baselines csoftmax replaces (crysx_nn's ``Softmax`` and
``Softmax_grad``), kept verbatim in spirit: the main job and ``bench/`` time them,
and the tests check that ``csoftmax.compat`` returns what they return.
They are deliberately the slow, allocating originals; do not optimise them.
"""
import numpy as np


def softmax_numpy(x):
    """Row-wise softmax of a 2-D batch, as the tutorials write it."""
    max_x = np.amax(x, 1).reshape(x.shape[0], 1)  # row-wise maximum, for stability
    e_x = np.exp(x - max_x)
    return e_x / e_x.sum(axis=1, keepdims=True)


def softmax_grad_numpy(x):
    """Batched softmax Jacobian (N, K, K) of logits x, as the tutorials write it."""
    s = softmax_numpy(x)
    eye = np.eye(s.shape[-1], dtype=s.dtype)
    diag = np.einsum("ij,jk->ijk", s, eye)
    outer = np.einsum("ij,ik->ijk", s, s)
    return diag - outer


def softmax_cupy(x):
    """``softmax_numpy`` for CuPy arrays (the CuPy tutorial's ``Softmax_cupy``)."""
    import cupy as cp

    max_x = cp.amax(x, 1).reshape(x.shape[0], 1)
    e_x = cp.exp(x - max_x)
    return e_x / e_x.sum(axis=1, keepdims=True)


def softmax_grad_cupy(x):
    """``softmax_grad_numpy`` for CuPy arrays (the CuPy tutorial's ``Softmax_grad_cupy``)."""
    import cupy as cp

    s = softmax_cupy(x)
    eye = cp.eye(s.shape[-1], dtype=s.dtype)
    diag = cp.einsum("ij,jk->ijk", s, eye)
    outer = cp.einsum("ij,ik->ijk", s, s)
    return diag - outer
