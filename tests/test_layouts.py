"""Every memory layout takes the C-level path and gives the C-order bits.

Arrays out of einsum/tensordot are often Fortran-ordered, and transposed
views with axis=0 are common. The engine takes element strides, so any
layout computes the same rows with the same arithmetic (the sums of a row
are taken in one fixed order, see CSM_PARTS in _rows.h): the result must
equal, bit for bit, the result of the C-contiguous copy.
"""
import numpy as np
import pytest

import csoftmax
from csoftmax import _semantics, compat

FUNCS = ["softmax", "log_softmax", "softmax_backward", "log_softmax_backward",
         "softmax_jacobian"]
BINARY = {"softmax_backward", "log_softmax_backward"}

# Row lengths across the engine's paths: K = 1; short rows (lane path in C
# order, K <= 32); the row kernels; rows too long for a full lane group.
KS = [1, 10, 32, 33, 100, 1025, 3000]


def _layouts(a):
    """(name, array equal to a, axis) for the layouts users pass."""
    n, k = a.shape
    big = np.zeros((2 * n, 3 * k), a.dtype)
    big[::2, ::3] = a
    yield "c", np.ascontiguousarray(a), -1
    yield "fortran", np.asfortranarray(a), -1
    yield "transposed_axis0", np.ascontiguousarray(a.T), 0
    yield "fortran_transposed_axis0", np.asfortranarray(a.T), 0
    yield "row_and_column_strides", big[::2, ::3], -1
    yield "negative_rows", np.ascontiguousarray(a[::-1])[::-1], -1
    yield "negative_columns", np.ascontiguousarray(a[:, ::-1])[:, ::-1], 1
    ro = np.asfortranarray(a)
    ro.flags.writeable = False
    yield "readonly_fortran", ro, -1


def _inputs(fn, n, k, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, k)) * 3).astype(dtype)
    if fn in BINARY:
        y = csoftmax.softmax(x) if fn == "softmax_backward" else csoftmax.log_softmax(x)
        return [y, rng.standard_normal((n, k)).astype(dtype)]
    return [x]


def _call(fn, arrays, axis, **kw):
    return getattr(csoftmax, fn)(*arrays, axis=axis, **kw)


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("fn", FUNCS)
def test_every_layout_gives_the_c_order_bits(isa, fn, dtype, k):
    # Under every ISA: C-order rows take the row kernels, whose partial sums
    # are reduced in registers, and the other layouts the lane kernels, which
    # reduce them through memory; both by the same tree.
    if fn == "softmax_jacobian" and dtype == np.float64 and k == KS[-1]:
        # 216 MB per call and 7.5 s per ISA; float64 Jacobians of K = 1025
        # and float32 ones of K = 3000 take the same paths.
        pytest.skip("float64 Jacobians at K = 3000: covered by K = 1025 and by float32")
    n = 3 if fn == "softmax_jacobian" and k > 100 else 37
    arrays = _inputs(fn, n, k, dtype)
    want = _call(fn, arrays, -1)
    laid = [list(_layouts(a)) for a in arrays]
    for i, (name, _, axis) in enumerate(laid[0]):
        got = _call(fn, [lay[i][1] for lay in laid], axis)
        assert got.dtype == want.dtype, name
        if fn == "softmax_jacobian" or axis == -1 or axis == 1:
            np.testing.assert_array_equal(got, want, err_msg=name)
        else:
            np.testing.assert_array_equal(got.T, want, err_msg=name)


@pytest.mark.parametrize("fn", FUNCS)
def test_layouts_never_take_the_python_path(fn, monkeypatch):
    # The Python-level general path (_semantics) is for N-D and array-likes only:
    # NumPy 1-D/2-D input of any layout and dtype stays in C.
    for name in FUNCS:
        monkeypatch.setattr(_semantics, name, lambda *a, **k: pytest.fail("took the Python path"))
    for dtype in (np.float32, np.float64, np.float16, np.int64, np.bool_):
        arrays = [a.astype(dtype) for a in _inputs(fn, 9, 12, np.float64)]
        for i, (name, _, axis) in enumerate(_layouts(arrays[0])):
            laid = [list(_layouts(a))[i][1] for a in arrays]
            _call(fn, laid, axis)
            _call(fn, [a[0] for a in laid] if axis == -1 else laid, -1 if axis == -1 else axis)
    x = np.asfortranarray(np.ones((6, 4)))
    compat.Softmax(x)
    compat.Softmax_grad(x)


@pytest.mark.parametrize("fn", ["softmax", "log_softmax", "softmax_backward"])
def test_out_of_any_layout_receives_the_c_order_bits(fn):
    arrays = _inputs(fn, 50, 40, np.float32, seed=1)
    want = _call(fn, arrays, -1)
    for name, out, axis in _layouts(np.zeros_like(want)):
        if not out.flags.writeable:
            continue
        target = out if axis != 0 else out.T
        got = _call(fn, [np.asfortranarray(a) for a in arrays], -1, out=target)
        assert got is target
        np.testing.assert_array_equal(got, want, err_msg=name)


@pytest.mark.parametrize("fn", ["softmax", "log_softmax"])
def test_in_place_on_a_fortran_array(fn):
    x = np.asfortranarray(_inputs(fn, 70, 33, np.float64)[0])
    want = _call(fn, [x.copy(order="C")], -1)
    got = _call(fn, [x], -1, out=x)
    assert got is x
    np.testing.assert_array_equal(x, want)


def test_out_overlapping_the_input_gives_the_right_result():
    # out shares memory with x without being x: the result goes through a copy.
    buf = np.random.default_rng(5).standard_normal((20, 41))
    x = buf[:, :40]
    want = csoftmax.softmax(x.copy())
    out = buf[:, 1:]
    csoftmax.softmax(x, out=out)
    np.testing.assert_array_equal(out, want)


def test_fortran_input_gives_a_fortran_result():
    # The result keeps the input's memory order (NumPy's order 'K'), so the
    # kernels write it as they read the input.
    x = np.asfortranarray(np.random.default_rng(6).standard_normal((30, 8)))
    assert csoftmax.softmax(x).flags.f_contiguous
    assert csoftmax.log_softmax(x.T, axis=0).flags.c_contiguous


@pytest.mark.parametrize("dtype", [np.float16, np.int32, np.int64, np.uint8, np.bool_])
def test_other_dtypes_in_any_layout(dtype):
    x = (np.random.default_rng(7).standard_normal((19, 13)) * 4)
    x = x.astype(dtype)
    want = csoftmax.softmax(np.ascontiguousarray(x))
    assert want.dtype == (np.float16 if dtype == np.float16 else np.float64)
    for name, a, axis in _layouts(x):
        got = csoftmax.softmax(a, axis=axis)
        np.testing.assert_array_equal(got if axis != 0 else got.T, want, err_msg=name)


@pytest.mark.parametrize("threads", [1, 2, 3, 8])
@pytest.mark.parametrize("fn", FUNCS)
def test_strided_path_bits_do_not_depend_on_threads(fn, threads):
    k = 7 if fn == "softmax_jacobian" else 300
    arrays = [np.asfortranarray(a) for a in _inputs(fn, 3000, k, np.float32, seed=8)]
    np.testing.assert_array_equal(_call(fn, arrays, -1, num_threads=threads),
                                  _call(fn, arrays, -1, num_threads=1))


@pytest.mark.parametrize("fn", ["softmax", "log_softmax"])
def test_float16_results_round_as_numpy_casts_them(fn):
    # float16 is computed in float32 and rounded to nearest-even by csoftmax's
    # own conversion (F16C where the CPU has it, portable code for strided
    # rows): the bits must be those of NumPy's cast of the float32 result,
    # across float16's subnormals, its top and beyond (-> -inf).
    rng = np.random.default_rng(9)
    x = np.concatenate([rng.uniform(-20, 20, (40, 50)), rng.uniform(-6.5e4, 6.5e4, (40, 50))])
    x = x.astype(np.float16)
    for name, a, axis in _layouts(x):
        if name == "readonly_fortran":
            continue
        got = getattr(csoftmax, fn)(a, axis=axis)
        with np.errstate(over="ignore"):
            want = getattr(csoftmax, fn)(a.astype(np.float32), axis=axis).astype(np.float16)
        np.testing.assert_array_equal(got, want, err_msg=name)


def test_float16_values_pass_through_exactly():
    # log_softmax_backward(y = -inf, g) = g - 0 * sum(g) = g: every finite
    # float16 value goes through the widening and the rounding unchanged
    # (compared as values: -0.0 - (-0.0) is +0.0 in IEEE arithmetic).
    g = np.arange(65536, dtype=np.uint16).view(np.float16)
    g = g[np.isfinite(g)].reshape(-1, 2)
    y = np.full_like(g, -np.inf)
    for lay in (np.ascontiguousarray, np.asfortranarray):
        got = csoftmax.log_softmax_backward(lay(y), lay(g))
        assert got.dtype == np.float16
        np.testing.assert_array_equal(got, g)


@pytest.mark.parametrize("fn", ["softmax", "log_softmax"])
def test_nd_general_path_writes_out_in_place_or_through_a_copy(fn):
    # N-D calls take the general path (_semantics), which hands its rows to
    # the same C-level rule for `out` as 2-D calls.
    rng = np.random.default_rng(12)
    f = getattr(csoftmax, fn)
    x = rng.standard_normal((3, 4, 5))
    want = f(x.copy(), axis=1)
    y = x.copy()
    assert f(y, axis=1, out=y) is y
    np.testing.assert_array_equal(y, want)
    buf = rng.standard_normal((3, 4, 6))
    xin = buf[..., :5]
    want = f(xin.copy(), axis=1)
    out = buf[..., 1:]  # shares memory with the input, shifted by one column
    assert f(xin, axis=1, out=out) is out
    np.testing.assert_array_equal(out, want)
    j = np.empty((3, 5, 4, 4))
    assert csoftmax.softmax_jacobian(x, axis=1, out=j) is j
    np.testing.assert_array_equal(j, csoftmax.softmax_jacobian(np.moveaxis(x, 1, -1)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("fn", FUNCS[:4] + ["logsumexp"])
def test_interleaved_rows_longer_than_a_lane_group_give_the_c_order_bits(isa, fn, dtype):
    # Rows whose lane groups would be narrower than a staged group, in any
    # layout, are gathered a group at a time into contiguous rows and
    # computed by the row kernels (csm_staged_rows; logsumexp's
    # csm_masked_staged). Enough rows that a thread's share holds a whole
    # group and a remainder, rows just past the threshold and rows several
    # times it, special values, and every way an operand or the output can
    # interleave.
    from csoftmax import _engine

    c = _engine.CONSTANTS
    n = 2 * c["stage_rows"] + 7
    for k in (c["lane_scratch"] // c["stage_rows"] + 3, 3 * c["lane_scratch"] // c["stage_rows"] + 5):
        arrays = _inputs(fn, n, k, dtype, seed=k)
        a = arrays[0]
        a[1, ::7] = -np.inf
        a[2, 5] = np.nan
        a[3, 9] = np.inf
        a[4] = -np.inf
        a[c["stage_rows"] + 1, -3] = 1e30
        arrays[-1][5, 11] = np.nan
        want = _call(fn, arrays, -1)
        fort = [np.asfortranarray(x) for x in arrays]
        for threads in (1, 2):
            kw = dict(num_threads=threads)
            np.testing.assert_array_equal(_call(fn, fort, -1, **kw), want)
            np.testing.assert_array_equal(_call(fn, [x.T.copy() for x in arrays], 0, **kw).T, want)
            np.testing.assert_array_equal(
                _call(fn, [np.asfortranarray(x.T) for x in arrays], 0, **kw).T, want)
            rev = [np.asfortranarray(x[::-1])[::-1] for x in arrays]
            np.testing.assert_array_equal(_call(fn, rev, -1, **kw), want)
            apart = [dict((nm, a) for nm, a, _ in _layouts(x))["row_and_column_strides"]
                     for x in arrays]  # rows apart, not interleaved: staged too
            np.testing.assert_array_equal(_call(fn, apart, -1, **kw), want)
            if fn in BINARY:  # one operand interleaved, the other not
                np.testing.assert_array_equal(_call(fn, [fort[0], arrays[1]], -1, **kw), want)
                np.testing.assert_array_equal(_call(fn, [arrays[0], fort[1]], -1, **kw), want)
            if fn == "logsumexp":
                continue
            for ins, out in ((fort, np.empty_like(want)), (arrays, np.empty_like(fort[0]))):
                got = _call(fn, ins, -1, out=out, **kw)
                assert got is out
                np.testing.assert_array_equal(out, want)
            inplace = [x.copy(order="K") for x in fort]
            _call(fn, inplace, -1, out=inplace[-1], **kw)
            np.testing.assert_array_equal(inplace[-1], want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("fn", FUNCS[:4])
def test_fortran_input_into_a_c_ordered_out_gives_the_c_order_bits(isa, fn, dtype):
    # Interleaved inputs whose output rows are contiguous are staged at any
    # K (csm_staged_rows writes the rows straight out): whole groups and a
    # remainder, rows of a power of two of lines and not.
    from csoftmax import _engine

    n = 2 * _engine.CONSTANTS["stage_rows_short"] + 7
    for k in (10, 64, 100, 1024):
        arrays = _inputs(fn, n, k, dtype, seed=k)
        arrays[0][3, 5] = np.nan
        arrays[0][4] = -np.inf
        want = _call(fn, arrays, -1)
        fort = [np.asfortranarray(a) for a in arrays]
        for threads in (1, 2):
            out = np.empty_like(want)
            assert _call(fn, fort, -1, out=out, num_threads=threads) is out
            np.testing.assert_array_equal(out, want)
            if fn in BINARY:
                out = np.empty_like(want)
                _call(fn, [arrays[0], fort[1]], -1, out=out, num_threads=threads)
                np.testing.assert_array_equal(out, want)
