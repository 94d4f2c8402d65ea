"""The GPU backend's contract with csoftmax._semantics, without a GPU."""
import subprocess
import sys
import types

import numpy as np
import pytest

from csoftmax import _gpu


def test_native_dtypes_are_float16_float32_float64():
    assert _gpu.NATIVE_DTYPES == (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


def test_numpy_arrays_and_scalars_are_not_gpu_arrays():
    assert not _gpu.is_gpu_array(np.zeros(3))
    assert not _gpu.is_gpu_array(3.0)
    assert not _gpu.is_gpu_array([1.0])


def test_cupy_arrays_are_recognised_by_their_type_module():
    fake = type("ndarray", (), {"__module__": "cupy._core.core"})()
    assert _gpu.is_gpu_array(fake)
    lookalike = type("ndarray", (), {"__module__": "cupyx_not_cupy"})()
    assert not _gpu.is_gpu_array(lookalike)


def test_importing_the_backend_and_asking_about_an_array_does_not_import_cupy():
    code = ("import sys, numpy; from csoftmax import _gpu; _gpu.is_gpu_array(numpy.zeros(2)); "
            "_gpu.plan('softmax', 2, 3, 'float32', True, {'multiProcessorCount': 1, "
            "'maxThreadsPerMultiProcessor': 1024, 'sharedMemPerMultiprocessor': 65536, "
            "'sharedMemPerBlockOptin': 65536}); print('cupy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_kernel_source_is_read_from_the_package_data():
    src = _gpu.source()
    assert "csm_rows_warp" in src and "csm_jacobian_block" in src


def test_info_reports_missing_cupy_without_raising(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # makes `import cupy` raise ImportError
    report = _gpu.info()
    assert report["cupy"] is None and report["gpu"] is False and "CuPy" in report["reason"]


def test_info_reports_a_broken_driver_without_raising(monkeypatch):
    runtime = types.SimpleNamespace(getDeviceCount=lambda: (_ for _ in ()).throw(RuntimeError("no driver")))
    fake = types.SimpleNamespace(__version__="99.0", cuda=types.SimpleNamespace(runtime=runtime))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    report = _gpu.info()
    assert report == {"cupy": "99.0", "gpu": False, "device": None, "compute_capability": None,
                      "reason": "RuntimeError: no driver"}


def test_info_names_the_device_and_compute_capability(monkeypatch):
    props = {"name": b"NVIDIA H100 80GB HBM3", "major": 9, "minor": 0}
    runtime = types.SimpleNamespace(getDeviceCount=lambda: 1, getDevice=lambda: 0,
                                    getDeviceProperties=lambda i: props)
    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(__version__="14.2.0",
                                                                   cuda=types.SimpleNamespace(runtime=runtime)))
    report = _gpu.info()
    assert report["gpu"] is True and report["device"] == "NVIDIA H100 80GB HBM3"
    assert report["compute_capability"] == "9.0" and report["cupy"] == "14.2.0"


def test_info_without_devices_says_so(monkeypatch):
    runtime = types.SimpleNamespace(getDeviceCount=lambda: 0)
    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(__version__="14.2.0",
                                                                   cuda=types.SimpleNamespace(runtime=runtime)))
    assert _gpu.info()["reason"] == "no CUDA device"
