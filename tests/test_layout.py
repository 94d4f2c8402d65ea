"""The repository layout does not break the packages around it."""
import importlib.util
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_top_level_cuda_folder_does_not_hide_nvidia_cuda_bindings():
    # From the repository root (as under `python -m pytest`) our cuda/ folder
    # is importable as `cuda`; NVIDIA's cuda.bindings must still resolve.
    if importlib.util.find_spec("cuda.bindings") is None:
        pytest.skip("cuda-bindings is not installed")
    code = "import cuda, cuda.bindings; print(cuda.bindings.__file__)"
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "site-packages" in r.stdout


def test_kernel_sources_are_package_data():
    from importlib.resources import files
    assert files("csoftmax.cuda").joinpath("softmax.cu").read_text().strip()
    assert files("csoftmax.cuda").joinpath("cross_entropy.cu").read_text().strip()
