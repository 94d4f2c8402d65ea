"""Shared fixtures: float64 references, the ISA switch, array layouts."""
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from csoftmax import kernels

settings.register_profile(
    "csoftmax", deadline=None, max_examples=60,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("ci", parent=settings.get_profile("csoftmax"), max_examples=40)
settings.load_profile("ci" if os.environ.get("CI") else "csoftmax")

ISAS = kernels.supported_isas()


@pytest.fixture(params=ISAS)
def isa(request):
    """Run the test once per instruction set this CPU supports, then restore."""
    before = kernels.isa()
    kernels.select_isa(request.param)
    yield request.param
    kernels.select_isa(before)


# ---- float64 references (NumPy, written for clarity, not speed) -------------

def ref_softmax(x, axis=-1):
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        m = np.max(x, axis=axis, keepdims=True)
        e = np.exp(x - m)
        return e / np.sum(e, axis=axis, keepdims=True)


def ref_log_softmax(x, axis=-1):
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        m = np.max(x, axis=axis, keepdims=True)
        return (x - m) - np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))


def ref_softmax_backward(y, g, axis=-1):
    y = np.asarray(y, dtype=np.float64)
    g = np.asarray(g, dtype=np.float64)
    return y * (g - np.sum(g * y, axis=axis, keepdims=True))


def ref_log_softmax_backward(y, g, axis=-1):
    y = np.asarray(y, dtype=np.float64)
    g = np.asarray(g, dtype=np.float64)
    return g - np.exp(y) * np.sum(g, axis=axis, keepdims=True)


def ref_jacobian(x):
    s = ref_softmax(x)
    return np.einsum("ni,ij->nij", s, np.eye(s.shape[-1])) - np.einsum("ni,nj->nij", s, s)


# ---- layouts -----------------------------------------------------------------

LAYOUTS = ["c", "fortran", "strided_rows", "strided_cols", "negative", "readonly"]


def make_layout(a, layout):
    """An array equal to `a` (2-D) in the given memory layout."""
    n, k = a.shape
    if layout == "c":
        return np.ascontiguousarray(a)
    if layout == "fortran":
        return np.asfortranarray(a)
    if layout == "strided_rows":  # every other row of a bigger array
        big = np.zeros((2 * n, k), dtype=a.dtype)
        big[::2] = a
        return big[::2]
    if layout == "strided_cols":  # every other column: no unit stride
        big = np.zeros((n, 2 * k), dtype=a.dtype)
        big[:, ::2] = a
        return big[:, ::2]
    if layout == "negative":
        return np.ascontiguousarray(a[::-1])[::-1]
    if layout == "readonly":
        b = a.copy()
        b.flags.writeable = False
        return b
    raise ValueError(layout)


def rel_err(got, want):
    """Max relative error, where both are finite; NaN/inf must agree exactly."""
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert np.array_equal(np.isnan(got), np.isnan(want)), "NaN pattern differs"
    fin = np.isfinite(want)
    assert np.array_equal(got[~fin & ~np.isnan(want)], want[~fin & ~np.isnan(want)])
    if not fin.any():
        return 0.0
    g, w = got[fin], want[fin]
    return float(np.max(np.abs(g - w) / np.maximum(np.abs(w), np.finfo(np.float64).tiny)))
