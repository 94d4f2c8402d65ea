"""Shared fixtures: float64 references, the ISA switch, array layouts."""
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from csoftmax import _reference, kernels

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


# ---- float64 references: the package's own (csoftmax/_reference.py) ----------

ref_softmax = _reference.softmax
ref_log_softmax = _reference.log_softmax
ref_softmax_backward = _reference.softmax_backward
ref_log_softmax_backward = _reference.log_softmax_backward
ref_jacobian = _reference.softmax_jacobian

# One class ahead of the others by these margins (added to N(0, 1) logits):
# s_i about 0.29, 0.957, 0.9997 and 0.99998 in float32 (1 - s_i down to 16 of
# its ulps near 1), to 1 - 7e-13 in float64: where s_i - s_i^2 cancels.
DOMINANT_GAPS = {np.dtype(np.float32): (0.0, 3.0, 7.0, 12.0, 15.0),
                 np.dtype(np.float64): (0.0, 7.0, 15.0, 25.0, 32.0)}


def ref_jacobian_diagonal(x):
    """s_i (1 - s_i) of each row of x, in extended precision, with 1 - s_i as
    the sum of the other classes' exps (no cancellation); float64."""
    xl = np.asarray(x).astype(np.longdouble)
    e = np.exp(xl - xl.max(axis=1, keepdims=True))
    tot = e.sum(axis=1, keepdims=True)
    k = xl.shape[1]
    others = np.where(np.eye(k, dtype=bool)[None], 0, e[:, None, :]).sum(axis=2)
    return ((e / tot) * (others / tot)).astype(np.float64)


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


def assert_same_bits(got, want, what):
    """Bit for bit, except NaN payloads: NaN where want is NaN."""
    uint = np.uint32 if got.dtype == np.float32 else np.uint64
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(got), nan, err_msg=what)
    np.testing.assert_array_equal(got[~nan].view(uint), want[~nan].view(uint), err_msg=what)


@pytest.fixture
def stream_at_8mib():
    # The threshold is the machine's LLC (up to hundreds of MiB on servers):
    # the tests put it at 8 MiB so that their arrays stay small, and the
    # least streaming thread count at 2, the rule of most machines (an
    # AVX2-only CPU streams at one thread too), so that the tests mean the
    # same on every machine. The Jacobian streams as the other ops do (a
    # Zen 4 keeps its regular stores: _engine.stream_jacobian).
    from csoftmax import _engine

    old = _engine.set_stream_bytes(8 << 20)
    old_threads = _engine.set_stream_threads(2)
    old_jac = _engine.set_stream_jacobian(True)
    yield 8 << 20
    _engine.set_stream_bytes(old)
    _engine.set_stream_threads(old_threads)
    _engine.set_stream_jacobian(old_jac)


def rows_around_the_normal_exps(k, dtype):
    """Rows of k elements whose smallest x - max sits just above or just below
    the edge of the exps whose results are normal (about -87 in float32, -708
    in float64), in pairs that mix both sides, with NaN and -inf rows too."""
    edge = float(np.floor(np.log(np.finfo(dtype).tiny)))  # -88 / -709: below the edge
    rng = np.random.default_rng(k)
    rows = []
    for lo in (edge + 1.0, edge + 0.5, edge - 0.5, edge + 1.0, -3.0, edge - 40.0):
        r = rng.uniform(lo, 0.0, k)
        r[rng.integers(k)] = lo
        r[rng.integers(k)] = 0.0
        rows.append(r)
    nan = rng.uniform(edge - 1.0, 0.0, k)
    nan[k // 2] = np.nan
    ninf = rng.uniform(-3.0, 0.0, k)
    ninf[k // 3] = -np.inf
    rows += [nan, ninf, rng.uniform(-3.0, 0.0, k) + 5.0]
    return np.array(rows, dtype=dtype)
