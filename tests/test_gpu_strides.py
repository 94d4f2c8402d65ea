"""Row-sliced views go to the CUDA row kernels as they are, with a row stride.

The kernels of cuda/softmax.cu take a row stride per array (lda, ldb, ldo):
under the emulator, views with a row stride of K + pad (x[:, :K] of a wider
array; the gaps NaN in the inputs and a sentinel in the output that must
survive) match the float64 reference in every tier of every row operation
and dtype, with the vector width the alignment allows (csoftmax._gpu.plan's
``vec``). Through the CuPy stand-in, the public functions pass such views to
the kernels without a copy (the kernel gets the view's own pointer), write
straight into a row-sliced ``out`` and in place; negative row strides and
non-unit column strides are copied.
"""

import numpy as np
import pytest

import csoftmax
from csoftmax import _gpu
from cuda_emu import EmuModule, devices, fake_cupy, install
from cuda_emu.reference import DTYPES, ROW_OPS, check, inputs, masked_inputs
from cuda_emu.runner import emulate

pytestmark = pytest.mark.skipif(
    not __import__("shutil").which("g++"), reason="the CUDA emulator needs g++ with OpenMP"
)

PROPS = devices.EMULATED
ELEMENTWISE = tuple(op for op in ROW_OPS if op != "logsumexp")

# K: a sub-warp group (5), an odd scalar warp row (37), a vectorised warp row
# (64), an odd long row (1001: the scalar warp tier for float32, 32 elements
# per lane; a block per row for float16 and float64) and a vectorised block
# row (4096).
KS = (5, 37, 64, 1001, 4096)


@pytest.fixture(scope="module")
def module():
    return EmuModule(_gpu.source(), _gpu.name_expressions(), PROPS)


@pytest.fixture
def emulated(module, monkeypatch):
    # per test: the public-door tests below need _gpu's own seams back
    install(monkeypatch, module, PROPS)
    return module


def _emulate_with_plan(op, a, b, **kw):
    """(result, Launch): the plan run() made for this call."""
    _gpu._plans.clear()
    got = emulate(op, a, b, **kw)
    launch, = _gpu._plans.values()
    return got, launch


@pytest.mark.parametrize("pad", (1, 8), ids=("pad1-misaligned", "pad8-aligned"))
@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
@pytest.mark.parametrize("op", ROW_OPS)
def test_row_strided_views_match_the_reference(emulated, op, dtype, k, pad):
    n = 3 if k > 1000 else 7
    a, b = inputs(op, n, k, dtype, seed=k + pad)
    got, launch = _emulate_with_plan(op, a, b, pad=pad)
    check(op, got, a, b)
    # the width: a packed row's (16 bytes where the kernels have it), when
    # the row stride allows it too; else 1
    packed = _gpu.plan(op, n, k, dtype, True, PROPS)
    assert launch.vec == (packed.vec if pad % _gpu._vector_width(dtype) == 0 else 1)
    assert launch.vec > 1 or k % _gpu._vector_width(dtype) or pad % _gpu._vector_width(dtype) or packed.vec == 1


@pytest.mark.parametrize("k", (64, 4096))
@pytest.mark.parametrize("op", ROW_OPS)
def test_row_strided_views_are_bitwise_the_contiguous_results(emulated, op, k):
    # same kernel, same plan (pad 8 keeps the 16-byte width): same bits
    a, b = inputs(op, 3, k, np.dtype(np.float32), seed=5)
    np.testing.assert_array_equal(emulate(op, a, b, pad=8), emulate(op, a, b))


@pytest.mark.parametrize("k", (37, 64, 1001, 4096))
@pytest.mark.parametrize("op", ROW_OPS)
def test_an_out_with_another_row_stride_than_the_inputs(emulated, op, k):
    a, b = inputs(op, 3, k, np.dtype(np.float32), seed=7)
    check(op, emulate(op, a, b, pad=4, out_pad=3), a, b)
    check(op, emulate(op, a, b, pad=0, out_pad=8), a, b)


@pytest.mark.parametrize("k", (37, 64, 4096))
@pytest.mark.parametrize("op", ELEMENTWISE)
def test_in_place_on_row_strided_views(emulated, op, k):
    a, b = inputs(op, 3, k, np.dtype(np.float32), seed=9)
    for into in ("a", "b") if b is not None else ("a",):
        check(op, emulate(op, a, b, pad=4, in_place=into), a, b)


@pytest.mark.parametrize("k", (37, 1025))
@pytest.mark.parametrize("op", ROW_OPS)
def test_masked_row_strided_views(emulated, op, k):
    a, b, mask = masked_inputs(op, 7, k, np.dtype(np.float32), seed=3)
    check(op, emulate(op, a, b, mask=mask, pad=5), a, b, mask=mask)


@pytest.mark.parametrize("op", ("softmax", "log_softmax", "logsumexp"))
def test_split_rows_with_a_row_stride(emulated, monkeypatch, op):
    # the split tier (few long rows): chunk floor lowered as in test_gpu_split
    monkeypatch.setattr(_gpu, "_SPLIT_MIN_CHUNK_BYTES", 2000)
    for dtype, pad in ((np.dtype(np.float32), 4), (np.dtype(np.float32), 3), (np.dtype(np.float64), 2)):
        a, _ = inputs(op, 3, 5000, dtype, seed=1)
        got, launch = _emulate_with_plan(op, a, None, pad=pad)
        assert launch.tier == "split" and launch.vec == (1 if pad == 3 else _gpu._vector_width(dtype))
        check(op, got, a, None)


@pytest.mark.parametrize("k", (577, 1001, 1023))
@pytest.mark.parametrize("op", ROW_OPS)
def test_odd_float32_rows_stay_in_the_warp_tier(emulated, op, k):
    a, b = inputs(op, 7, k, np.dtype(np.float32), seed=k)
    got, launch = _emulate_with_plan(op, a, b, pad=3)
    check(op, got, a, b)
    assert launch.tier == "warp" and launch.vec == 1 and launch.block == 128


def test_layout_width_takes_k_strides_and_pointers():
    f4 = np.dtype(np.float32)
    assert _gpu.layout_width(f4, 64, (0, 16), (64, 68)) == 4
    assert _gpu.layout_width(f4, 64, (0, 16), (64, 66)) == 1  # a row stride
    assert _gpu.layout_width(f4, 64, (0, 4), (64,)) == 1  # a pointer
    assert _gpu.layout_width(f4, 65, (0,), (68,)) == 1  # K
    assert _gpu.layout_width(np.dtype(np.float16), 64, (0, 32), (72,)) == 8
    assert _gpu.layout_width(np.dtype(np.float64), 6, (16,), (0, 2)) == 2  # a broadcast row: stride 0


def test_row_stride_describes_what_the_kernels_take():
    x = np.zeros((4, 10), np.float32)
    assert _gpu.row_stride(x) == 10
    assert _gpu.row_stride(x[:, :3]) == 10
    assert _gpu.row_stride(x[::2]) == 20
    assert _gpu.row_stride(x[:1, 2:5]) == 3  # one row: no stride that matters
    assert _gpu.row_stride(np.broadcast_to(x[0], (4, 10))) == 0
    assert _gpu.row_stride(x[::-1]) is None  # negative: copied
    assert _gpu.row_stride(x[:, ::2]) is None  # column stride 2: copied
    assert _gpu.row_stride(x.T) is None
    assert _gpu.row_stride(x[:, 0]) == 10  # 1-D (logsumexp's output)


# ---------------------------------------------------------------- the public door


@pytest.fixture
def cp(monkeypatch):
    yield from fake_cupy.installed(monkeypatch, (PROPS,))


@pytest.fixture
def launched(monkeypatch):
    """The (op, a, b, out) of every _gpu.run call: what the kernels get."""
    calls = []
    real = _gpu.run

    def spy(op, a, b, out, *args, **kwargs):
        calls.append((op, a, b, out))
        return real(op, a, b, out, *args, **kwargs)

    monkeypatch.setattr(_gpu, "run", spy)
    return calls


def _copies(cp):
    return [what for what, _ in cp.calls if what == "ascontiguousarray"]


def _views(cp, op, dtype, k, seed):
    """Inputs of ``op`` as views x[:, 1:K+1] (misaligned), x[:, :K] of a
    wider array and x[::2], each with its host copy."""
    a, b = inputs(op, 6, k, np.dtype(dtype), seed)
    host = (a,) if b is None else (a, b)
    out = []
    for kind in ("offset", "wide", "every-other-row"):
        views = []
        for h in host:
            if kind == "offset":
                big = np.full((h.shape[0], k + 3), np.nan, h.dtype)
                big[:, 1:k + 1] = h
                views.append(cp.asarray(big)[:, 1:k + 1])
            elif kind == "wide":
                big = np.full((h.shape[0], k + 8), np.nan, h.dtype)
                big[:, :k] = h
                views.append(cp.asarray(big)[:, :k])
            else:
                big = np.full((2 * h.shape[0], k), np.nan, h.dtype)
                big[::2] = h
                views.append(cp.asarray(big)[::2])
        out.append((kind, views))
    return host, out


@pytest.mark.parametrize("k", (5, 37, 64, 1001))
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
@pytest.mark.parametrize("op", ROW_OPS)
def test_public_functions_pass_views_without_a_copy(cp, launched, op, dtype, k):
    host, cases = _views(cp, op, dtype, k, seed=k)
    fn = getattr(csoftmax, op)
    for kind, views in cases:
        launched.clear()
        cp.calls.clear()
        got = fn(*views)
        assert got.dtype == dtype
        check(op, got.get(), *host, *(() if len(host) > 1 else (None,)))
        # the same bits as the CPU backend computes? close: within the check above;
        # no copy, and the kernels got the views' own pointers and strides
        assert _copies(cp) == [], kind
        (_, a, b, _), = launched
        assert a.data.ptr == views[0].data.ptr and a.strides == views[0].strides, kind
        if b is not None:
            assert b.data.ptr == views[1].data.ptr, kind
    assert not cp.violations


@pytest.mark.parametrize("op", ROW_OPS)
def test_views_match_the_cpu_backend(cp, op):
    host, cases = _views(cp, op, np.float64, 300, seed=1)
    want = getattr(csoftmax, op)(*host)
    for kind, views in cases:
        np.testing.assert_allclose(getattr(csoftmax, op)(*views).get(), want, rtol=1e-10, atol=1e-13,
                                   err_msg=kind)


@pytest.mark.parametrize("k", (37, 64, 1001))
@pytest.mark.parametrize("op", ELEMENTWISE)
def test_out_a_row_sliced_view_is_written_directly(cp, launched, op, k):
    host, cases = _views(cp, op, np.float32, k, seed=2)
    _, views = cases[1]  # x[:, :K] of a wider array
    big = cp.asarray(np.full((6, k + 5), 7.0, np.float32))
    out = big[:, 2:k + 2]
    assert getattr(csoftmax, op)(*views, out=out) is out
    check(op, out.get(), *host, *(() if len(host) > 1 else (None,)))
    (_, _, _, into), = launched
    assert into.data.ptr == out.data.ptr  # no temporary
    rest = big.get()
    assert (rest[:, :2] == 7).all() and (rest[:, k + 2:] == 7).all()  # the gaps untouched
    assert _copies(cp) == []


@pytest.mark.parametrize("k", (37, 64, 1001))
@pytest.mark.parametrize("op", ELEMENTWISE)
def test_in_place_on_a_row_sliced_view(cp, launched, op, k):
    host, cases = _views(cp, op, np.float32, k, seed=3)
    for kind, views in cases:
        launched.clear()
        for i in range(len(views)):
            parents = []
            for v in views:
                big = cp.asarray(np.full((v.shape[0], k + 8), np.nan, v.dtype))
                big[:, 3:k + 3] = v.get()
                parents.append(big[:, 3:k + 3])
            assert getattr(csoftmax, op)(*parents, out=parents[i]) is parents[i], kind
            check(op, parents[i].get(), *host, *(() if len(host) > 1 else (None,)))
        assert len(launched) == len(views)  # the short path: no temporary, no copy back
        assert all(into.data.ptr == a.data.ptr or into.data.ptr == b.data.ptr for _, a, b, into in launched)


def test_negative_row_strides_and_column_steps_are_copied(cp, launched):
    a, _ = inputs("softmax", 6, 40, np.dtype(np.float32), seed=4)
    x = cp.asarray(a)
    for view, host in ((x[::-1], a[::-1]), (x[:, ::2], a[:, ::2])):
        launched.clear()
        got = csoftmax.softmax(view)
        check("softmax", got.get(), host, None)
        (_, seen, _, _), = launched
        assert seen.flags.c_contiguous
    assert len(_copies(cp)) == 2


def test_a_broadcast_row_is_passed_with_row_stride_0(cp, launched):
    a, _ = inputs("log_softmax", 1, 64, np.dtype(np.float32), seed=6)
    x = cp.broadcast_to(cp.asarray(a[0]), (5, 64))
    got = csoftmax.log_softmax(x)
    check("log_softmax", got.get(), np.broadcast_to(a[0], (5, 64)), None)
    (_, seen, _, _), = launched
    assert seen.strides == (0, 4) and _copies(cp) == []


def test_wide_scalar_warp_kernels_are_a_module_of_their_own(cp):
    # a float32 group's first compile leaves out the scalar kernels of 16 and
    # 32 elements per lane; the first call that needs one builds them apart
    x = cp.asarray(inputs("softmax", 3, 64, np.dtype(np.float32), seed=1)[0])
    csoftmax.softmax(x)
    assert cp.modules == [(0, _gpu.group_names("softmax", np.float32))]
    assert not any(name.endswith((", 1, 16>", ", 1, 32>")) for name in cp.modules[0][1])
    a = inputs("softmax", 3, 1001, np.dtype(np.float32), seed=2)[0]
    check("softmax", csoftmax.softmax(cp.asarray(a)).get(), a, None)
    assert cp.modules[1:] == [(0, ("csm_rows_warp<float, 0, 1, 16>", "csm_rows_warp<float, 0, 1, 32>"))]
    assert not cp.violations
