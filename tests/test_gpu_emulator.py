"""The emulator catches what a GPU would get wrong or hang on.

Small purpose-built kernels check each detector of tests/cuda_emu: poisoned
shared memory, divergent barriers, shuffles with returned lanes, shared memory
writes past the launch size, argument types against the kernel signature, the
48 KiB opt-in, and the deadlock watchdog.
"""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from cuda_emu import EmuError, EmuModule, devices

pytestmark = pytest.mark.skipif(
    not __import__("shutil").which("g++"), reason="the CUDA emulator needs g++ with OpenMP"
)

SOURCE = textwrap.dedent("""
    extern __shared__ __align__(16) unsigned char smem[];

    __global__ void read_unwritten_shared(float* out) {
        out[blockIdx.x * blockDim.x + threadIdx.x] = reinterpret_cast<float*>(smem)[threadIdx.x];
    }
    __global__ void divergent_barrier(float* out) {
        if (threadIdx.x < 32) {
            __syncthreads();
        } else {
            __syncthreads();
        }
        out[threadIdx.x] = 1.0f;
    }
    __global__ void barrier_skipped_by_some(float* out) {
        if (threadIdx.x >= 32) __syncthreads();
        out[threadIdx.x] = 1.0f;
    }
    __global__ void shuffle_after_return(float* out) {
        if (threadIdx.x & 1) return;
        out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.0f, 2);
    }
    __global__ void shuffle_in_warp(float* out, int width) {
        out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, (float)threadIdx.x, 1, width);
    }
    __global__ void write_shared(float* out, int n) {
        reinterpret_cast<float*>(smem)[n] = 1.0f;
        out[threadIdx.x] = 0.0f;
    }
    __global__ void takes_int_and_long(float* out, int a, long long b) {
        out[threadIdx.x] = (float)(a + b);
    }
    __global__ void deadlock(float* out) {
        float v = 0.0f;
        if (threadIdx.x == 0) __syncthreads();
        else v = __shfl_xor_sync(0xffffffffu, v, 1);
        out[threadIdx.x] = v;
    }
""")

NAMES = ["read_unwritten_shared", "divergent_barrier", "barrier_skipped_by_some", "shuffle_after_return",
         "shuffle_in_warp", "write_shared", "takes_int_and_long", "deadlock"]


@pytest.fixture(scope="module")
def module():
    return EmuModule(SOURCE, NAMES, devices.EMULATED, "selftest")


def test_shared_memory_is_poisoned_with_huge_values_and_nan_alternately(module):
    out = np.zeros(2 * 64, np.float32)
    module.get_function("read_unwritten_shared")((2,), (64,), (out,), shared_mem=64 * 4)
    first, second = out[:64], out[64:]
    assert np.all(first[0::2] == np.float32(1e30)) and np.isnan(first[1::2]).all()
    assert np.isnan(second[0::2]).all() and np.all(second[1::2] == np.float32(1e30))  # shifted per block


def test_divergent_syncthreads_is_an_error(module):
    with pytest.raises(EmuError, match="__syncthreads"):
        module.get_function("divergent_barrier")((1,), (64,), (np.zeros(64, np.float32),))


def test_shuffle_with_returned_lanes_is_an_error(module):
    with pytest.raises(EmuError, match="returned"):
        module.get_function("shuffle_after_return")((1,), (32,), (np.zeros(32, np.float32),))


def test_shuffle_follows_cuda_segment_rules(module):
    out = np.zeros(64, np.float32)
    module.get_function("shuffle_in_warp")((1,), (64,), (out, np.int32(32)))
    assert np.array_equal(out, np.arange(64) ^ 1)
    module.get_function("shuffle_in_warp")((1,), (64,), (out, np.int32(1)))
    # Width 1: an odd lane reads the even lane of the segment before it (an
    # earlier group, allowed), an even lane's partner is in a later group, so
    # it gets its own value (CUDA C++ Programming Guide, warp shuffle functions).
    assert np.array_equal(out, np.arange(64) & ~1)


def test_shuffle_in_a_partial_warp_is_an_error(module):
    with pytest.raises(EmuError, match="whole warps"):
        module.get_function("shuffle_in_warp")((1,), (48,), (np.zeros(48, np.float32), np.int32(32)))


def test_shared_memory_write_past_the_launch_size_is_an_error(module):
    kernel = module.get_function("write_shared")
    kernel((1,), (32,), (np.zeros(32, np.float32), np.int32(15)), shared_mem=64)
    with pytest.raises(EmuError, match="past the 64 bytes"):
        kernel((1,), (32,), (np.zeros(32, np.float32), np.int32(16)), shared_mem=64)


def test_dynamic_shared_memory_above_the_default_needs_the_opt_in(module):
    kernel = module.get_function("write_shared")
    args = (np.zeros(32, np.float32), np.int32(0))
    big = devices.EMULATED["sharedMemPerBlock"] + 1024
    with pytest.raises(EmuError, match="max_dynamic_shared_size_bytes"):
        kernel((1,), (32,), args, shared_mem=big)
    kernel.max_dynamic_shared_size_bytes = big
    kernel((1,), (32,), args, shared_mem=big)


@pytest.mark.parametrize(
    "args, message",
    [
        ((np.int64(1), np.int64(2)), "takes int, launch passes long long"),
        ((1, np.int64(2)), "takes int, launch passes long long"),  # CuPy passes a Python int as long long
        ((np.int32(1), np.int32(2)), "takes long long, launch passes int"),
        ((np.int32(1),), "takes 3 arguments"),
    ],
)
def test_argument_types_are_checked_against_the_signature(module, args, message):
    kernel = module.get_function("takes_int_and_long")
    with pytest.raises(EmuError, match=message):
        kernel((1,), (32,), (np.zeros(32, np.float32),) + args)


def test_arrays_must_match_the_pointer_type_and_be_writable(module):
    kernel = module.get_function("takes_int_and_long")
    with pytest.raises(EmuError, match="takes float\\*, launch passes double\\*"):
        kernel((1,), (32,), (np.zeros(32, np.float64), np.int32(1), np.int64(2)))
    frozen = np.zeros(32, np.float32)
    frozen.flags.writeable = False
    with pytest.raises(EmuError, match="float\\*"):
        kernel((1,), (32,), (frozen, np.int32(1), np.int64(2)))
    out = np.zeros(32, np.float32)
    kernel((1,), (32,), (out, np.int32(1), np.int64(2)))
    assert np.all(out == 3.0)


@pytest.mark.parametrize("kernel", ["deadlock", "barrier_skipped_by_some"])
def test_a_barrier_not_every_thread_reaches_is_reported_by_the_watchdog(module, kernel):
    # Inside `omp barrier` the hang cannot be interrupted, so the watchdog
    # ends the process; a child runs the kernel with a 2 s limit.
    tests = Path(__file__).resolve().parent
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(tests)!r})
        import numpy as np
        from cuda_emu import EmuModule, devices
        from test_gpu_emulator import SOURCE, NAMES
        m = EmuModule(SOURCE, NAMES, devices.EMULATED, "selftest")
        m.get_function({kernel!r})((1,), (64,), (np.zeros(64, np.float32),))
    """)
    env = dict(os.environ, CSOFTMAX_EMU_STALL_S="2")
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 86, proc.stderr[-2000:]
    assert "watchdog" in proc.stderr and "deadlock at a __syncthreads or shuffle" in proc.stderr
