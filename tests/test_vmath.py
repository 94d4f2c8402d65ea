"""The kernels' vectorised exp and log: <= 2 ulp on the softmax domain, IEEE specials kept.

The sweep runs the very functions the kernels inline (the table's exp and log
ops), under every ISA, against NumPy's float64 libm (correctly rounded for
float32 results; within 1 ulp for float64, so 1 ulp of slack is allowed).
"""
import platform
import sys

import numpy as np
import pytest

from csoftmax import _cpu
from conftest import assert_same_bits

# float64 exp overflows above 709.78; float32 above 88.72.
EXP_DOMAIN = {np.float32: (-110.0, 0.0), np.float64: (-750.0, 0.0)}


def vm(op, x):
    x = np.ascontiguousarray(x).reshape(1, -1)
    out = np.empty_like(x)
    _cpu.run(op, x, None, out, 1)
    return out.ravel()


def ulp_error(got, want_f64, dtype):
    """|got - want| in units of the last place of the dtype at want."""
    want = want_f64.astype(dtype)
    spacing = np.spacing(np.abs(want).astype(dtype)).astype(np.float64)
    spacing = np.maximum(spacing, np.finfo(dtype).smallest_subnormal)
    return np.abs(got.astype(np.float64) - want_f64) / spacing


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exp_is_within_two_ulp_on_the_softmax_domain(isa, dtype):
    lo, hi = EXP_DOMAIN[dtype]
    x = np.linspace(lo, hi, 2_000_001, dtype=dtype)
    x = np.concatenate([x, -np.logspace(-30, 1, 100_001, dtype=dtype)])
    got = vm("exp", x)
    want = np.exp(x.astype(np.float64))
    if dtype == np.float64:  # a float64 reference for float64: allow its own 1 ulp
        assert ulp_error(got, want, dtype).max() <= 2 + 1
    else:
        assert ulp_error(got, want, dtype).max() <= 2


def test_float32_exp_is_within_the_readme_bound(isa):
    # The README's 1.2 ulp for float32 (AVX2's table of 8 is within 1.14,
    # AVX-512's of 16 within 0.99, baseline's polynomial within 1.01), on the
    # softmax domain and up to the overflow.
    # The float64 reference's own error, 2^-53 relative, is 2^-29 of a
    # float32 ulp.
    top = np.log(np.finfo(np.float32).max)
    x = np.concatenate([softmax_domain(np.float32), np.linspace(0, top, 1_000_001).astype(np.float32)])
    x = x[np.isfinite(x) & (x.astype(np.float64) < top)]
    err = ulp_error(vm("exp", x), np.exp(x.astype(np.float64)), np.float32)
    assert err.max() <= 1.2


@pytest.mark.skipif(np.finfo(np.longdouble).nmant < 60, reason="needs an extended long double")
def test_float64_exp_is_within_the_readme_bound_of_an_extended_reference(isa):
    # The README's 1.01 ulp, against x87 extended precision (64-bit mantissa:
    # its own error is about 1e-3 ulp of a double), over the normal range.
    # AVX2's worst in 32 million uniform points of [-708, 0] is 1.0024 ulp
    # (mpmath at 200 bits agrees), at the point added here: q s + s rounds
    # once, but q's own rounding adds to it.
    rng = np.random.default_rng(11)
    x = np.concatenate([rng.uniform(-708, 0, 1_500_000), rng.uniform(-0.4, 0.4, 300_000),
                        rng.uniform(0, 709, 200_000), [float.fromhex("-0x1.d8568cadc5852p+8")]])
    want = np.exp(x.astype(np.longdouble))
    spacing = np.spacing(want.astype(np.float64)).astype(np.longdouble)
    err = np.abs(vm("exp", x).astype(np.longdouble) - want) / spacing
    assert float(err.max()) <= 1.01


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exp_keeps_ieee_specials(isa, dtype):
    x = np.array([-np.inf, np.inf, np.nan, 0.0, -0.0, 1e6, -1e6, 80.0], dtype=dtype)
    got = vm("exp", x)
    with np.errstate(over="ignore"):
        want = np.exp(x)
    np.testing.assert_array_equal(got, want)
    assert got[0] == 0 and np.isposinf(got[1]) and np.isnan(got[2])


# The exps' low clamps, where the scale's bits are all zero: the softmax
# domain's (exp_neg) and the whole exp's.
CLAMP = {np.float32: -132.39, np.float64: -753.45}
CLAMP_UP = {np.float32: -176.06, np.float64: -1418.18}


def softmax_domain(dtype):
    """The exp's arguments in a softmax, x - max <= 0: float32 every 211th
    bit pattern from -0 down past the clamp, float64 a linear and a random
    sweep; with -0, -inf, NaNs of both signs, subnormals and the values
    around the clamp, around +0's edge and around the subnormal results."""
    if dtype == np.float32:
        top = np.float32(-140.0).view(np.uint32)
        x = np.arange(np.uint32(0x80000000), top, 211, dtype=np.uint32).view(np.float32)
    else:
        rng = np.random.default_rng(5)
        x = np.concatenate([np.linspace(-760.0, 0.0, 3_000_001), -rng.exponential(50.0, 2_000_000)])
    lo = -104.0 if dtype == np.float32 else -746.0  # exp rounds to +0 below
    sub = -np.log(np.finfo(dtype).tiny)
    edges = np.array([lo, -sub, CLAMP[dtype], -0.0, -np.inf, np.nan, -np.nan,
                      -np.finfo(dtype).smallest_subnormal, -np.finfo(dtype).tiny, -1e30], dtype=dtype)
    near = np.concatenate([np.nextafter(np.full(64, v, dtype), np.array(-np.inf, dtype)) for v in edges[:3]])
    return np.concatenate([x.astype(dtype), edges, near, np.spacing(edges[:3]) + edges[:3]])


def rows_of(op, x, k):
    """op over x cut into rows of k elements (x zero-padded to whole rows)."""
    pad = (-x.size) % k
    a = np.concatenate([x, np.zeros(pad, x.dtype)]).reshape(-1, k)
    out = np.empty_like(a)
    _cpu.run(op, a, None, out, 1)
    return out.ravel()[:x.size]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_exp_gives_the_bits_of_exp_in_registers_and_alone(isa, dtype):
    # Rows of 16 go through the register form where the ISA has one (AVX2,
    # AVX-512), rows of 3 through the C form the other loops inline; on the
    # softmax domain both must give the general exp's bits.
    x = softmax_domain(dtype)
    want = rows_of("exp", x, 3)
    assert np.isnan(want).sum() == 2  # the two NaN arguments
    for k in (16, 3):
        assert_same_bits(rows_of("exp_neg", x, k), want, f"exp_neg, rows of {k}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_exp_bits_do_not_depend_on_the_lanes_beside_them(isa, dtype):
    # A register whose results are all normal may take another path than
    # one with a subnormal, -inf or clamped lane among them (AVX2); the bits
    # of each lane must not tell. Dense around the normal results' edge,
    # shuffled so that registers mix both sides, against the C form.
    rng = np.random.default_rng(11)
    sub = -np.log(np.finfo(dtype).tiny)
    x = np.concatenate([np.linspace(-sub - 3, -sub + 3, 400_001), softmax_domain(dtype)[::7]]).astype(dtype)
    x = x[rng.permutation(x.size)]
    want = rows_of("exp", x, 3)
    for k in (16, 3):
        assert_same_bits(rows_of("exp_neg", x, k), want, f"shuffled exp_neg, rows of {k}")
    ordered = np.sort(x)  # NaNs last: whole registers on each side too
    assert_same_bits(rows_of("exp_neg", ordered, 16), rows_of("exp", ordered, 3), "sorted exp_neg")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exp_gives_the_same_bits_in_registers_and_alone(isa, dtype):
    # The general exp (log_softmax_backward's), past both clamps.
    top = np.log(np.finfo(dtype).max)
    lo = np.array(CLAMP_UP[dtype], dtype)
    near = np.nextafter(np.full(64, lo), np.array(-np.inf, dtype))
    x = np.concatenate([softmax_domain(dtype), np.linspace(0, top * 1.01, 1_000_001).astype(dtype),
                        np.linspace(1.1 * lo, 0, 200_001).astype(dtype), near, lo + np.spacing(near),
                        np.array([np.inf, 1e30, 1e6, top, np.nextafter(top, np.inf)], dtype)])
    assert_same_bits(rows_of("exp", x, 16), rows_of("exp", x, 3), "exp, rows of 16 and 3")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exp_is_exactly_zero_from_where_it_rounds_to_zero_down_to_minus_inf(isa, dtype):
    # Below ln of half the smallest subnormal exp rounds to +0; the clamps
    # sit further down (where the scales' bits are zero), so the arguments
    # between must give +0 too, in both forms and both exps.
    edge = np.log(float(np.finfo(dtype).smallest_subnormal)) - np.log(2.0)
    x = np.concatenate([np.linspace(1.2 * CLAMP_UP[dtype], edge - 1e-3, 100_001),
                        [CLAMP[dtype], CLAMP_UP[dtype], -np.inf, -1e30]]).astype(dtype)
    for op in ("exp", "exp_neg"):
        for k in (16, 3):
            got = rows_of(op, x, k)
            assert np.all(got == 0) and not np.signbit(got).any(), f"{op}, rows of {k}"


FE_UNDERFLOW = 0x10  # glibc's x86-64 <fenv.h>, as the MXCSR's UE bit


def _libm():
    import ctypes
    import ctypes.util
    name = ctypes.util.find_library("m")
    return ctypes.CDLL(name) if name else None


@pytest.mark.skipif(not (sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64"))
                    or _libm() is None, reason="reads the x86-64 floating-point status through glibc")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n, k", [(64, 10), (64, 64), (64, 1000), (3, 300_000)])
@pytest.mark.parametrize("op", ["softmax", "log_softmax", "logsumexp", "softmax_where",
                                "log_softmax_backward", "softmax_cross_entropy"])
def test_minus_inf_arguments_raise_no_underflow(isa, op, n, k, dtype):
    # A -inf (a mask's, or the where= mask's own) gets its +0 from a scale
    # whose bits are zero, not from a product that underflows: an underflow
    # costs a microcode assist per element on Intel cores (softmax of rows
    # a fifth -inf took 6 to 13 times as long). The status flag shows
    # whether any operation underflowed; the call runs in this thread. Short
    # rows (the lanes), rows in cache, and rows past L2 (chunked).
    import csoftmax

    libm = _libm()
    rng = np.random.default_rng(k)
    x = (3 * rng.standard_normal((n, k))).astype(dtype)
    hole = rng.random(x.shape) < 0.2
    hole[:, 0] = False
    kw = {"num_threads": 1}
    if op == "softmax_where":
        args, f, kw["where"] = (x,), csoftmax.softmax, ~hole
        x[hole] = rng.choice([-np.inf, np.inf, np.nan, 1e30], size=hole.sum())
    elif op == "log_softmax_backward":
        x[hole] = -np.inf
        args, f = (csoftmax.log_softmax(x), rng.standard_normal(x.shape).astype(dtype)), \
            csoftmax.log_softmax_backward
    elif op == "softmax_cross_entropy":
        x[hole] = -np.inf
        args, f, kw["return_grad"] = (x, np.zeros(len(x), np.int64)), csoftmax.softmax_cross_entropy, True
    else:
        x[hole] = -np.inf
        args, f = (x,), getattr(csoftmax, op)
    f(*args, **kw)  # the output cache and the first call's set-up
    libm.feclearexcept(0x3D)
    f(*args, **kw)
    assert libm.fetestexcept(FE_UNDERFLOW) == 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exp_has_no_spurious_overflow(isa, dtype):
    # Up to the largest finite exp, the result is finite and accurate.
    top = np.log(np.finfo(dtype).max)
    x = np.linspace(0, top, 100_001).astype(dtype)
    x = x[x.astype(np.float64) < top]
    got = vm("exp", x)
    assert np.isfinite(got).all()
    assert ulp_error(got, np.exp(x.astype(np.float64)), dtype).max() <= 3


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log_is_within_two_ulp_on_softmax_sums(isa, dtype):
    # A softmax denominator lies in [1, K]; sweep well beyond.
    x = np.concatenate([np.linspace(1, 4, 1_000_001), np.logspace(0, 30, 1_000_001),
                        np.linspace(0.5, 1, 100_001)]).astype(dtype)
    got = vm("log", x)
    want = np.log(x.astype(np.float64))
    err = ulp_error(got, want, dtype)
    assert err.max() <= (2 if dtype == np.float32 else 3)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log_keeps_ieee_specials(isa, dtype):
    got = vm("log", np.array([1.0, np.inf, np.nan], dtype=dtype))
    assert got[0] == 0 and np.isposinf(got[1]) and np.isnan(got[2])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_short_rows_give_each_rows_own_bits_around_the_normal_bound(isa, op, dtype):
    # Short rows go sixteen at a time through the lane layout, whose exps
    # take the form without clamps where the group's minima say that every
    # result is normal (AVX2, AVX-512); alone, a row takes the C form.
    # Groups with and without arguments below the bound (subnormal results,
    # -inf), and groups whose lanes straddle it, must give each row's own
    # bits.
    import csoftmax

    rng = np.random.default_rng(5)
    sub = -np.log(np.finfo(dtype).tiny)
    for k in (3, 10, 31):
        x = rng.uniform(-sub + 5, 0, (16 * 8, k)).astype(dtype)
        x[:, 0] = 0
        x[16:32, 1:] = rng.uniform(-sub - 20, -sub + 5, (16, k - 1))
        x[40, -1] = -sub - 1
        x[70, 1] = -np.inf
        x[96:112, 1:] = -np.inf
        x[120, 2 % k] = np.nan
        f = getattr(csoftmax, op)
        got = f(x, num_threads=1)
        want = np.concatenate([f(x[i:i + 1], num_threads=1) for i in range(len(x))])
        assert_same_bits(got.ravel(), want.ravel(), f"K = {k}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k", [16, 17, 64, 1000])
def test_log_softmax_backward_rows_give_the_exps_bits_whatever_their_range(isa, k, dtype):
    # log_softmax_backward's rows choose their exp's form once per row where
    # the ISA tests its arguments (AVX2): the form without clamps where no y
    # is below the normal results' bound, the clamped form where one is.
    # With g one at column 0 and zero elsewhere, sum(g) = 1 and column j > 0
    # is -exp(y_j): rows all normal, rows with -inf, with subnormal results,
    # straddling the bound, and a row with y > 0 (the whole exp), against the
    # C form's exp of each element.
    import csoftmax

    rng = np.random.default_rng(k)
    sub = -np.log(np.finfo(dtype).tiny)
    n = 64
    y = rng.uniform(-sub + 5, 0, (n, k)).astype(dtype)
    y[8:16] = rng.uniform(-sub - 20, -sub + 5, (8, k))
    y[16:24, 1::3] = -np.inf
    y[24:32, -1] = -sub - 1
    y[32:40] = rng.uniform(-sub - 3, -sub + 3, (8, k))
    y[40, 1] = np.nan
    y[41, 2 % k] = 0.5
    y[:, 0] = 0
    g = np.zeros((n, k), dtype)
    g[:, 0] = 1
    want = rows_of("exp", y[:, 1:].ravel(), 3)
    # C order, Fortran order (straight out of an einsum) and a column view:
    # the gathered rows take the same choice.
    wide_y, wide_g = np.repeat(y, 2, axis=1), np.repeat(g, 2, axis=1)
    for ys, gs, what in ((y, g, "C"), (np.asfortranarray(y), np.asfortranarray(g), "F"),
                         (wide_y[:, ::2], wide_g[:, ::2], "every other column")):
        for threads in (1, 2):
            out = csoftmax.log_softmax_backward(ys, gs, num_threads=threads)
            got = (dtype(0) - np.ascontiguousarray(out)[:, 1:]).ravel()
            assert_same_bits(got, want, f"K = {k}, {what}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k", [64, 100, 1000])
def test_softmax_rows_give_the_exps_bits(isa, k, dtype):
    # softmax's rows take their exps in the loop that sums them, some ISAs
    # several registers side by side (AVX2 float64). A row of 0 and values
    # far enough below it sums to exactly 1, so that softmax returns its
    # exps themselves: against the C form's exp of each element, rows one
    # and two at a time (K = 64 goes in pairs), in C and Fortran order, as a
    # column view, and through the masked kernels (a mask of all True).
    import csoftmax

    rng = np.random.default_rng(k)
    lo, hi = (-700.0, -50.0) if dtype == np.float64 else (-86.0, -30.0)
    x = rng.uniform(lo, hi, (40, k)).astype(dtype)
    x[:, 0] = 0
    want = rows_of("exp", x[:, 1:].ravel(), 3)
    every_other = np.repeat(x, 2, axis=1)[:, ::2]
    for xs, what in ((x, "C"), (np.asfortranarray(x), "F"), (every_other, "every other column")):
        for threads in (1, 2):
            for where, how in ((None, ""), (np.ones(x.shape, bool), ", where="))[:2 if what == "C" else 1]:
                got = np.ascontiguousarray(csoftmax.softmax(xs, where=where, num_threads=threads))
                assert (got[:, 0] == 1).all(), what + how
                assert_same_bits(got[:, 1:].ravel(), want, f"K = {k}, {what}{how}")
