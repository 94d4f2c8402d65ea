"""The block tiers' passes in steps of CSM_BLOCK_UNROLL packs per thread
(all loaded before the first is used) and the packs left over match the
float64 reference, with and without a mask, hostile values included.

K = VEC * 2049 with 512-thread blocks: every thread takes one step of four
packs and one thread one pack more, in every pass. On the emulated device
(32 KiB of shared memory per block) these rows take the L2 tier; with a real
device's 227 KiB (H100) the shared memory tier, backward ops included.
"""
import numpy as np
import pytest

from csoftmax import _gpu
from cuda_emu import EmuModule, devices, install
from cuda_emu.reference import DTYPES, ROW_OPS, check, inputs, masked_inputs
from cuda_emu.runner import emulate

pytestmark = pytest.mark.skipif(
    not __import__("shutil").which("g++"), reason="the CUDA emulator needs g++ with OpenMP"
)

PACKS = 2049
BIG_SMEM = dict(devices.EMULATED, sharedMemPerBlockOptin=devices.REAL["H100"]["sharedMemPerBlockOptin"],
                sharedMemPerMultiprocessor=devices.REAL["H100"]["sharedMemPerMultiprocessor"])
PROPS = {"block-l2": devices.EMULATED, "block-smem": BIG_SMEM}


def _k(dtype):
    return _gpu._vector_width(np.dtype(dtype)) * PACKS


@pytest.fixture(scope="module")
def module():
    return EmuModule(_gpu.source(), _gpu.name_expressions(), BIG_SMEM)


def _emulate(module, tier, op, a, b, mask=None):
    props = PROPS[tier]
    n, k = a.shape
    launch = _gpu.plan(op, n, k, a.dtype, True, props)
    unroll = _gpu.constants()["CSM_BLOCK_UNROLL"]
    # the case does what it is for: vector packs, this tier, steps and leftovers
    assert launch.tier == tier and launch.kernel.split(", ")[2] != "1", launch
    assert unroll * launch.block < PACKS < (unroll + 1) * launch.block, launch
    with pytest.MonkeyPatch.context() as mp:
        install(mp, module, props)
        return emulate(op, a, b, mask=mask)


@pytest.mark.parametrize("tier", PROPS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
@pytest.mark.parametrize("op", ROW_OPS)
def test_steps_of_four_packs_match_the_reference(module, op, dtype, tier):
    a, b = inputs(op, 7, _k(dtype), dtype, seed=21)  # -inf, +inf, NaN, huge rows
    check(op, _emulate(module, tier, op, a, b), a, b)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
@pytest.mark.parametrize("op", ROW_OPS)
def test_masked_steps_of_four_packs_match_the_masked_reference(module, op, dtype):
    # float32 through L2, float16 and float64 through shared memory
    tier = "block-l2" if dtype == np.float32 else "block-smem"
    a, b, mask = masked_inputs(op, 4, _k(dtype), dtype, "strided", seed=22)
    check(op, _emulate(module, tier, op, a, b, mask), a, b, mask=mask)
