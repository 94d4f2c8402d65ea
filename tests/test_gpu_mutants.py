"""Planted bugs make the emulated checks fail: the checks can fail.

Each mutant of cuda/softmax.cu (tests/cuda_emu/mutants.py) is built with only
the kernels its cases launch and must fail at least one case, by a wrong
result, a write outside the output or an emulator error; the unmutated source
must pass the same cases, so a failure is the mutant's doing.
"""
import numpy as np
import pytest

from csoftmax import _gpu
from cuda_emu import EmuError, EmuModule, devices, install
from cuda_emu.mutants import MUTANTS, apply
from cuda_emu.reference import check, inputs, masked_inputs
from cuda_emu.runner import emulate

pytestmark = pytest.mark.skipif(
    not __import__("shutil").which("g++"), reason="the CUDA emulator needs g++ with OpenMP"
)

PROPS = devices.EMULATED


def _kernels(cases):
    names = set()
    for op, dtype, n, k, *_ in cases:
        for aligned in (True, False):
            launch = _gpu.plan(op, n, k, np.dtype(dtype), aligned, PROPS)
            names.update(name for name in (launch.kernel, launch.finish) if name)  # split: two kernels
    return sorted(names)


def _failures(source, cases, tag):
    module = EmuModule(source, _kernels(cases), PROPS, tag)
    failures = []
    with pytest.MonkeyPatch.context() as mp:
        install(mp, module, PROPS)
        for op, dtype, n, k, *kind in cases:
            if kind == ["mask"]:
                a, b, mask = masked_inputs(op, n, k, np.dtype(dtype), seed=11)
            else:
                (a, b), mask = inputs(op, n, k, np.dtype(dtype), seed=11), None
            pad = 4 if kind == ["strided"] else 0
            try:
                check(op, emulate(op, a, b, mask=mask, pad=pad), a, b, mask=mask)
            except (AssertionError, EmuError) as exc:
                failures.append(f"{op} {dtype} N={n} K={k}: {str(exc).splitlines()[0][:200]}")
    return failures


@pytest.mark.parametrize("mutant", MUTANTS, ids=[m.name for m in MUTANTS])
def test_mutant_is_caught(mutant):
    failures = _failures(apply(_gpu.source(), mutant), mutant.cases, "mutant")
    assert failures, f"mutant {mutant.name} ({mutant.why}) survived {mutant.cases}"


def test_unmutated_source_passes_the_mutant_cases():
    cases = sorted({case for mutant in MUTANTS for case in mutant.cases})
    assert _failures(_gpu.source(), cases, "control") == []
