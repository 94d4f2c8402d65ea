"""The public Cython API (csoftmax/kernels.pxd), used the way a downstream project does.

A consumer extension kept in tests/cimport_consumer/ is copied into a temporary
directory and built there with Cython against the *installed* csoftmax: the
build runs in a subprocess whose working directory is that temporary
directory, without PYTHONPATH, so the repository root is not on its sys.path
and the .pxd files come from wherever `import csoftmax` finds the package
(site-packages for a wheel, the source tree for an editable install). The
consumer calls every kernel from inside its own nogil prange and the results
must equal, bit for bit, what the Python API returns: one implementation, two
doors.

Needs a C compiler, Cython and setuptools (the `test` extra); the build takes
about 10 s on the 2-core CI machine.
"""
import importlib.machinery
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import csoftmax

CONSUMER_SRC = Path(__file__).parent / "cimport_consumer"
OPS = ("softmax", "log_softmax", "softmax_backward", "log_softmax_backward",
       "softmax_jacobian")
DTYPES = ("float32", "float64")


@pytest.fixture(scope="module")
def consumer(tmp_path_factory):
    build_dir = tmp_path_factory.mktemp("cimport_consumer")
    for name in ("consumer.pyx", "setup.py"):
        shutil.copy(CONSUMER_SRC / name, build_dir / name)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "setup.py", "build_ext", "--inplace"],
        cwd=build_dir, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (
        f"building the consumer failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    built = [p for suffix in importlib.machinery.EXTENSION_SUFFIXES
             for p in build_dir.glob("consumer" + suffix)]
    assert len(built) == 1, f"expected one built consumer module, found {built}"
    spec = importlib.util.spec_from_file_location("consumer", built[0])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.BUILD_DIR = build_dir
    return module


def test_consumer_compiles_against_the_pxd_of_the_imported_package(consumer):
    # Cython's dependency file names every .pxd the consumer cimported, relative
    # to the build directory; it must be the kernels.pxd of the csoftmax this
    # process imports, not some other copy (e.g. a source tree on sys.path).
    dep = (consumer.BUILD_DIR / "consumer.c.dep").read_text()
    # Cython's own declarations (libc/stdint.pxd, which kernels.pxd cimports)
    # come from Cython.
    import Cython
    cython_dir = os.path.realpath(os.path.dirname(Cython.__file__))
    pxds = {os.path.realpath(consumer.BUILD_DIR / tok)
            for tok in dep.replace("\\\n", " ").split() if tok.endswith(".pxd")}
    pxds = {p for p in pxds if not p.startswith(cython_dir + os.sep)}
    installed = os.path.realpath(Path(csoftmax.__file__).parent / "kernels.pxd")
    assert pxds == {installed}


def _inputs(op, shape, dtype, rng):
    x = (3 * rng.standard_normal(shape)).astype(dtype)
    if op == "softmax_backward":
        return csoftmax.softmax(x), rng.standard_normal(shape).astype(dtype)
    if op == "log_softmax_backward":
        return csoftmax.log_softmax(x), rng.standard_normal(shape).astype(dtype)
    return x, x  # the second operand is ignored by the forward ops


def _python_api(op, a, b):
    if op in ("softmax_backward", "log_softmax_backward"):
        return getattr(csoftmax, op)(a, b)
    return getattr(csoftmax, op)(a)


# K = 37 leaves a vector tail for every ISA; K = 300 spans several vectors.
# Task counts: the whole batch in one call, uneven chunks, one row per task.
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", OPS)
def test_consumer_built_against_installed_package_matches_python_api(consumer, op, dtype):
    rng = np.random.default_rng(5)
    run = consumer.run_f32 if dtype == "float32" else consumer.run_f64
    for shape in [(23, 37), (6, 300)]:
        a, b = _inputs(op, shape, dtype, rng)
        expected = _python_api(op, a, b)
        for n_tasks in (1, 4, shape[0]):
            for fused in (False, True):
                out = np.full(expected.size, np.nan, dtype=dtype)
                rcs = np.full(n_tasks, -7, dtype=np.intc)
                tids = np.full(n_tasks, -1, dtype=np.intc)
                run(op, a, b, out, rcs, tids, 2, fused)
                assert (rcs == 0).all(), (shape, n_tasks, fused, rcs)
                np.testing.assert_array_equal(
                    out.reshape(expected.shape), expected,
                    err_msg=f"{op} {dtype} {shape} tasks={n_tasks} fused={fused}")


def test_kernels_called_with_one_thread_run_inside_the_callers_parallel_region(consumer):
    # num_threads=1 must be safe on the caller's OpenMP threads: run 8 tasks on
    # 2 threads of the consumer's own prange and check that both threads
    # computed correct rows.
    if not consumer.OPENMP:
        pytest.skip("the consumer was compiled without OpenMP (Apple clang)")
    rng = np.random.default_rng(6)
    x = rng.standard_normal((64, 50))
    out = np.empty(x.size)
    rcs = np.full(8, -7, dtype=np.intc)
    tids = np.full(8, -1, dtype=np.intc)
    consumer.run_f64("log_softmax", x, x, out, rcs, tids, 2)
    assert sorted(set(tids.tolist())) == [0, 1]
    assert (rcs == 0).all()
    np.testing.assert_array_equal(out.reshape(x.shape), csoftmax.log_softmax(x))


def _sizes_that_overflow_the_jacobian():
    # n_cols * n_cols exceeds Py_ssize_t, so no caller can have such a buffer.
    k = int(sys.maxsize ** 0.5) + 1
    return 2, k


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", OPS)
def test_kernels_return_nonzero_for_invalid_sizes_and_write_nothing(consumer, op, dtype):
    invalid = [(-1, 4), (4, -1), (-3, -3)]
    if op == "softmax_jacobian":
        invalid.append(_sizes_that_overflow_the_jacobian())
    a = np.ones(16, dtype=dtype)
    b = np.ones(16, dtype=dtype)
    for n_rows, n_cols in invalid:
        out = np.full(16, 42, dtype=dtype)
        rc = consumer.call_with_sizes(op, dtype, n_rows, n_cols, a, b, out)
        assert rc != 0, (op, dtype, n_rows, n_cols)
        assert (out == 42).all(), "a refused call wrote into its output"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", OPS)
def test_kernels_accept_empty_sizes_and_write_nothing(consumer, op, dtype):
    a = np.ones(16, dtype=dtype)
    for n_rows, n_cols in [(0, 4), (4, 0), (0, 0)]:
        out = np.full(16, 42, dtype=dtype)
        assert consumer.call_with_sizes(op, dtype, n_rows, n_cols, a, a, out) == 0
        assert (out == 42).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", OPS)
def test_kernels_return_nonzero_when_rows_times_cols_overflows(consumer, op, dtype):
    a = np.ones(16, dtype=dtype)
    out = np.full(16, 42, dtype=dtype)
    for n_rows, n_cols in [(sys.maxsize // 2, 4), (4, sys.maxsize // 2), (sys.maxsize, sys.maxsize)]:
        assert consumer.call_with_sizes(op, dtype, n_rows, n_cols, a, a, out) == -1
        assert (out == 42).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", OPS)
def test_kernels_return_nonzero_for_null_pointers_and_write_nothing(consumer, op, dtype):
    names = ["a", "out"] + (["b"] if "backward" in op else [])
    for null in names:
        buf = np.full(64, 0.5, dtype=dtype)
        rc = consumer.call_with_offsets(op, dtype, 2, 3, buf, 0, 8, 32, null)
        assert rc == -1, null
        assert (buf == 0.5).all(), "a refused call wrote something"


@pytest.mark.parametrize("dtype", DTYPES)
def test_jacobian_whose_output_overlaps_its_input_is_refused(consumer, dtype):
    # x is 2 x 3 at offset 0; J (2 x 3 x 3 = 18 elements) at offsets that share
    # memory with x, including x itself.
    for out_off in [0, 1, 5]:
        buf = np.full(64, 0.5, dtype=dtype)
        assert consumer.call_with_offsets("softmax_jacobian", dtype, 2, 3, buf, 0, 0,
                                          out_off) == -1
        assert (buf == 0.5).all()
    buf = np.arange(64, dtype=dtype) / 64
    assert consumer.call_with_offsets("softmax_jacobian", dtype, 2, 3, buf, 0, 0, 6) == 0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", OPS[:4])
def test_row_ops_run_in_place_but_refuse_partial_overlap(consumer, op, dtype):
    buf = np.linspace(0.1, 0.9, 64).astype(dtype)
    before = buf.copy()
    assert consumer.call_with_offsets(op, dtype, 2, 3, buf, 0, 16, 1) == -1
    np.testing.assert_array_equal(buf, before)
    assert consumer.call_with_offsets(op, dtype, 2, 3, buf, 0, 16, 0) == 0
    x = before[:6].reshape(2, 3)
    g = before[16:22].reshape(2, 3)
    want = getattr(csoftmax, op)(x) if "backward" not in op else getattr(csoftmax, op)(x, g)
    np.testing.assert_array_equal(buf[:6].reshape(2, 3), want)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", OPS[:4])
def test_strided_entry_points_take_any_layout_and_match_the_python_api(consumer, op, dtype):
    rng = np.random.default_rng(11)
    x = (rng.standard_normal((37, 45)) * 3).astype(dtype)
    g = rng.standard_normal((37, 45)).astype(dtype)
    a = csoftmax.softmax(x) if op == "softmax_backward" else (
        csoftmax.log_softmax(x) if op == "log_softmax_backward" else x)
    want = getattr(csoftmax, op)(a, g) if "backward" in op else getattr(csoftmax, op)(a)
    run = consumer.strided
    big = np.zeros((74, 135), dtype)
    reverse = lambda v: np.ascontiguousarray(v[::-1, ::-1])[::-1, ::-1]  # noqa: E731
    big[::2, ::3] = a
    for view in (np.asfortranarray, reverse, lambda v: big[::2, ::3]):
        av = view(a)
        out = np.asfortranarray(np.zeros_like(a))
        assert run(op, av, np.asfortranarray(g), out, 2) == 0
        np.testing.assert_array_equal(out, want)
    # In place on a Fortran array; a partly overlapping output is refused.
    f = np.asfortranarray(a.copy())
    assert run(op, f, np.asfortranarray(g), f) == 0
    np.testing.assert_array_equal(f, want)
    buf = np.asfortranarray(np.zeros((38, 45), dtype))
    buf[:37] = a
    before = buf.copy()
    assert run(op, buf[:37], np.asfortranarray(g), buf[1:]) == -1
    np.testing.assert_array_equal(buf, before)


MASKED_OPS = ("softmax", "log_softmax", "softmax_backward", "log_softmax_backward",
              "softmax_jacobian", "logsumexp", "logsumexp_unmasked")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", MASKED_OPS)
def test_masked_entry_points_match_the_python_api(consumer, op, dtype):
    rng = np.random.default_rng(12)
    for shape in [(23, 37), (6, 300)]:
        a, b = _inputs(op if op in OPS else "softmax", shape, dtype, rng)
        keep = rng.random(shape) > 0.3
        keep[1] = False  # a fully masked row
        if op == "logsumexp_unmasked":
            expected = csoftmax.logsumexp(a)
        elif op == "logsumexp":
            expected = csoftmax.logsumexp(a, where=keep)
        elif "backward" in op:
            expected = getattr(csoftmax, op)(a, b, where=keep)
        else:
            expected = getattr(csoftmax, op)(a, where=keep)
        for n_tasks in (1, 4, shape[0]):
            for fused in (False, True):
                out = np.full(expected.size, np.nan, dtype=dtype)
                rcs = np.full(n_tasks, -7, dtype=np.intc)
                consumer.run_masked(op, a, b, keep.view(np.uint8), out, rcs, 2, fused)
                assert (rcs == 0).all(), (op, shape, n_tasks, rcs)
                np.testing.assert_array_equal(out.reshape(expected.shape), expected)


@pytest.mark.parametrize("op", MASKED_OPS[:6])
def test_masked_entry_points_refuse_a_null_mask_and_write_nothing(consumer, op):
    a = np.ones((3, 4))
    out = np.full(48, 42.0)
    assert consumer.masked_null_mask(op, a, out) == -1
    assert (out == 42).all()


def test_masked_output_that_overlaps_the_mask_is_refused(consumer):
    buf = np.full(16, 0.5)
    assert consumer.masked_overlapping_mask(np.ones((2, 3)), buf) == -1
    assert (buf == 0.5).all()
# ---- the fused softmax cross-entropy ---------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_cross_entropy_from_the_callers_prange_matches_python_api(consumer, dtype, soft,
                                                                  reduction):
    rng = np.random.default_rng(21)
    n, k = 41, 37
    x = (3 * rng.standard_normal((n, k))).astype(dtype)
    labels = None if soft else rng.integers(0, k, n).astype(np.int64)
    target = rng.random((n, k)).astype(dtype) if soft else x  # x: unused placeholder
    w = (rng.random(k) + 0.5).astype(dtype)
    ignore = None if soft else int(labels[0])
    want_loss, want_grad = csoftmax.softmax_cross_entropy(
        x, target if soft else labels, weight=w, label_smoothing=0.1, ignore_index=ignore,
        reduction=reduction, return_grad=True)
    for n_tasks in ((1, 4, n) if reduction == "none" else (1,)):
        loss = np.full(n if reduction == "none" else 1, np.nan, dtype)
        grad = np.full((n, k), np.nan, dtype)
        rcs = np.full(n_tasks, -7, dtype=np.intc)
        consumer.cross_entropy(x, labels, target, w, 0.1, ignore, reduction, loss, grad, rcs)
        assert (rcs == 0).all(), rcs
        np.testing.assert_array_equal(grad, want_grad)
        np.testing.assert_array_equal(loss if reduction == "none" else loss[0], want_loss)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_entry_points_refuse_bad_arguments_and_write_nothing(consumer, dtype):
    x = np.zeros(12, dtype)
    labels = np.array([0, 1, 2, 1], np.int64)
    for sizes, lab, w, eps, red, code in [
            ((-1, 3), labels, None, 0.0, 1, -1),
            ((4, 3), np.array([0, 1, 3, 1], np.int64), None, 0.0, 1, -2),
            ((4, 3), np.array([0, -1, 2, 1], np.int64), None, 0.0, 0, -2),
            ((4, 3), labels, np.array([1, -1, 1], dtype), 0.0, 1, -1),
            ((4, 3), labels, None, 1.5, 1, -1),
            ((4, 3), labels, None, 0.0, 3, -1),
            ((sys.maxsize // 2, 4), labels, None, 0.0, 1, -1)]:
        loss = np.full(4, 7, dtype)
        grad = np.full(12, 7, dtype)
        rc = consumer.cross_entropy_raw(dtype, *sizes, x, lab, w, eps, red, loss, grad)
        assert rc == code, (sizes, lab, w, eps, red, rc)
        assert (loss == 7).all() and (grad == 7).all()
    # The gradient may not overlap the logits.
    loss = np.zeros(4, dtype)
    assert consumer.cross_entropy_raw(dtype, 4, 3, x, labels, None, 0.0, 0, loss, x) == -1
