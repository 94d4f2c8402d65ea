"""bench/device_check.py without a GPU: the clear refusal, and the report.

The full run needs a GPU; `python bench/device_check.py --dry-run` runs its
parts on the CuPy stand-in (minutes on the emulator, so not here). These
tests check the exit path without CuPy and render a report from results of
every shape a part can return (done, failed, partial, skipped).
"""
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "device_check.py"
pytestmark = pytest.mark.skipif(not SCRIPT.is_file(), reason="no source tree beside these tests")


def _module():
    spec = importlib.util.spec_from_file_location("device_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_without_a_gpu_it_says_so_and_exits_2():
    if importlib.util.find_spec("cupy") is not None:
        pytest.skip("CuPy is installed here: the refusal is for machines without it")
    out = subprocess.run([sys.executable, str(SCRIPT), "--report", "unused.md"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2
    assert "no usable CUDA GPU" in out.stderr and "--dry-run" in out.stderr
    assert not Path("unused.md").exists()


def _cell(us, gbps, pct):
    return {"us": us, "GB/s": gbps, "% of copy": pct}


def test_the_report_has_every_part_and_the_targets():
    dc = _module()
    results = {
        "env": {"python": "3.12", "device": "NVIDIA H200", "_seconds": 1.0},
        "build": {"status": "already built", "_seconds": 2.0},
        "tests-device": {"status": 1, "counts": {"passed": 880, "failure": 1}, "failures": ["t::x"],
                         "tail": "1 failed", "_seconds": 30.0},
        "checks": {"results": [{"group": "special values", "case": "softmax float32 K=7", "ok": True,
                                "detail": "worst excess -1"},
                               {"group": "streams", "case": "two streams", "ok": False, "detail": "NaN"}],
                   "_seconds": 5.0},
        "timing": {"rows": [
            {"shape": "16384x1000", "op": "softmax", "copy GB/s": 4300,
             "csoftmax kernel": _cell(31.0, 4200, 90), "torch": _cell(35.0, 3800, 80)},
            {"shape": "1024x32768", "op": "softmax", "copy GB/s": 4300,
             "csoftmax kernel": _cell(80.0, 3300, 70)},
            {"shape": "8x1048576", "op": "softmax", "copy GB/s": 4300,
             "csoftmax kernel": _cell(20.0, 3400, 79), "torch": _cell(40.0, 1700, 40)},
            {"shape": "64x50257", "op": "logsumexp", "skipped": "time box"}],
            "error": "timed out after 150 s (partial results below)", "_seconds": 150.0},
        "sanitizer": {"memcheck": {"status": 0, "summary": ["ERROR SUMMARY: 0 errors"], "seconds": 20},
                      "_seconds": 40.0},
        "tests-other": {"skipped": "budget spent (3 s left)"},
    }
    report = dc.render(results, 540, dry=False)
    for text in ("| env |", "| tests-device |", "FAILED: timed out", "`t::x`", "| streams | two streams | NO |",
                 "16384x1000 at >= 85 % of copy: 90 % of copy: met",
                 "1024x32768 at >= 85 % of copy: 70 % of copy: NOT met",
                 "8x2^20 ahead of torch: 20.0 us vs 40.0 us: met", "skipped: time box",
                 "ERROR SUMMARY: 0 errors", "skipped: budget spent"):
        assert text in report, text
