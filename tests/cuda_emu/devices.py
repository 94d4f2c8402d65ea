"""Device properties, as cupy.cuda.runtime.getDeviceProperties returns them.

The real ones (from NVIDIA's data sheets and the CUDA C++ Programming Guide,
"Technical Specifications per Compute Capability") drive the planning tests.
The emulated ones are deliberately small, so that a few rows already exercise
grid-stride loops and K of a few thousand already falls out of shared memory.
"""


def _props(name, major, minor, sms, threads_per_sm, smem_per_sm, smem_optin, reserved, smem_default=48 * 1024):
    return {
        "name": name.encode(),
        "major": major,
        "minor": minor,
        "multiProcessorCount": sms,
        "maxThreadsPerMultiProcessor": threads_per_sm,
        "maxThreadsPerBlock": 1024,
        "warpSize": 32,
        "sharedMemPerBlock": smem_default,
        "sharedMemPerBlockOptin": smem_optin,
        "sharedMemPerMultiprocessor": smem_per_sm,
        "reservedSharedMemPerBlock": reserved,
        "maxGridSize": (2**31 - 1, 65535, 65535),
    }


REAL = {
    "T4": _props("Tesla T4", 7, 5, 40, 1024, 65536, 65536, 0),
    "A100": _props("NVIDIA A100-SXM4-40GB", 8, 0, 108, 2048, 167936, 166912, 1024),
    "RTX4090": _props("NVIDIA GeForce RTX 4090", 8, 9, 128, 1536, 102400, 101376, 1024),
    "H100": _props("NVIDIA H100 80GB HBM3", 9, 0, 132, 2048, 233472, 232448, 1024),
    "B200": _props("NVIDIA B200", 10, 0, 148, 2048, 233472, 232448, 1024),
}

# Two SMs of 1024 threads and 64 KiB of shared memory; blocks get 16 KiB and
# may opt in to 32 KiB, so the opt-in path runs too: float32 rows up to 8128
# elements stay in shared memory, longer ones take the L2 tier.
EMULATED = _props("emulated", 8, 0, 2, 1024, 65536, 32 * 1024, 1024, smem_default=16 * 1024)

# One SM of 128 threads: the warp tier's grid cap is 32 blocks, so a few
# hundred rows make every warp loop over several row groups.
EMULATED_TINY = _props("emulated-tiny", 8, 0, 1, 128, 16384, 16384, 1024, smem_default=16 * 1024)
