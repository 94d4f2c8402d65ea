"""Launch planning of csoftmax._gpu on the properties of real devices.

Pure Python, no emulation: every plan names a compiled kernel, fits the
device and the kernel's launch bound, covers the row, and the tiers follow K.
"""
import numpy as np
import pytest

from csoftmax import _gpu
from cuda_emu import devices
from cuda_emu.reference import DTYPES, OPS, ROW_OPS

PROPS = dict(devices.REAL, emulated=devices.EMULATED, tiny=devices.EMULATED_TINY)
KS = (1, 2, 3, 5, 31, 32, 33, 64, 100, 127, 128, 129, 255, 256, 257, 512, 513, 1000, 1023, 1024, 1025,
      4096, 4097, 8192, 20000, 29056, 58000, 65536, 262144, 2**30)
TIER_ORDER = {"warp": 0, "block-smem": 1, "block-l2": 2, "split": 3}


def _vec(kernel):
    if kernel.startswith("csm_rows_split"):
        return int(kernel.rstrip(">").split(", ")[-1])
    return int(kernel.split(", ")[2]) if kernel.startswith("csm_rows") else 1


def _bound(kernel):
    c = _gpu.constants()
    if "_warp<" in kernel:
        return c["CSM_WARP_THREADS"]
    if kernel.startswith(("csm_rows_block", "csm_rows_split")) and _vec(kernel) > 1:
        return c["CSM_MAX_THREADS_VEC"]
    return c["CSM_MAX_THREADS"]


def _plans():
    for device, props in PROPS.items():
        for op in OPS:
            for dtype in DTYPES:
                for k in KS:
                    if op == "softmax_jacobian" and k > 65536:
                        continue
                    for aligned in (True, False):
                        for n in (1, 7, 10**6):
                            yield device, props, op, dtype, k, aligned, n, _gpu.plan(op, n, k, dtype, aligned, props)


PLANS = list(_plans())


def test_every_plan_names_a_compiled_kernel():
    names = set(_gpu.name_expressions())
    assert {p[-1].kernel for p in PLANS} <= names
    assert {p[-1].finish for p in PLANS if p[-1].chunk} <= names


def test_every_plan_fits_the_device_and_the_kernel_launch_bound():
    for device, props, op, dtype, k, aligned, n, launch in PLANS:
        assert launch.block % 32 == 0 and 32 <= launch.block <= _bound(launch.kernel), (device, op, k, launch)
        assert 0 <= launch.shared_mem <= props["sharedMemPerBlockOptin"], (device, op, k, launch)
        assert 1 <= launch.grid <= props["maxGridSize"][0]
        if launch.chunk:  # the split tier's second launch: same block, no shared memory
            assert launch.finish and 1 <= launch.finish_grid <= props["maxGridSize"][0], (device, op, k, launch)
            assert launch.block <= _bound(launch.finish), (device, op, k, launch)


def test_grid_never_exceeds_the_work():
    for device, props, op, dtype, k, aligned, n, launch in PLANS:
        rows_per_block = launch.block // launch.width if launch.width else 1
        items = n * -(-k // launch.chunk) if launch.chunk else n  # split: a block per chunk
        assert (launch.grid - 1) * rows_per_block < items, (device, op, k, n, launch)


def test_split_plans_cover_the_row_in_vector_multiples():
    for device, props, op, dtype, k, aligned, n, launch in PLANS:
        if launch.chunk:
            chunks = -(-k // launch.chunk)
            assert n < 2 * props["multiProcessorCount"] and chunks >= 2, (device, op, k, n, launch)
            assert launch.chunk % _vec(launch.kernel) == 0 and (chunks - 1) * launch.chunk < k
            assert op in ("softmax", "log_softmax", "logsumexp")


def test_warp_plans_cover_the_row():
    for device, props, op, dtype, k, aligned, n, launch in PLANS:
        if launch.width:
            if op == "softmax_jacobian":
                assert launch.width >= k
            else:
                vec, nvec = (int(x) for x in launch.kernel.rstrip(">").split(", ")[2:4])
                assert launch.width * vec * nvec >= k and (launch.width == 32 or vec * nvec == 1)
                assert launch.width & (launch.width - 1) == 0


def test_shared_memory_tier_holds_its_rows():
    for device, props, op, dtype, k, aligned, n, launch in PLANS:
        acc = 8 if dtype == np.float64 else 4
        cached = 2 if dtype == np.float16 else acc  # float16 rows are cached as float16
        rows = 2 if op.endswith("backward") else 1
        need = _gpu.constants()["CSM_SCRATCH"] * acc + rows * k * cached
        if launch.tier == "block-smem":
            assert launch.shared_mem >= need
            assert launch.kernel.endswith("true>")
        if launch.tier == "block-l2":
            assert launch.kernel.endswith("false>")
            assert need > props["sharedMemPerBlockOptin"]


def test_vector_loads_only_when_aligned_and_k_divisible():
    for device, props, op, dtype, k, aligned, n, launch in PLANS:
        vec = _vec(launch.kernel)
        assert launch.vec == vec, (op, k, launch)  # the plan reports the kernel's width
        if vec > 1:
            assert aligned and k % vec == 0 and vec * dtype.itemsize == 16


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
@pytest.mark.parametrize("op", ROW_OPS)
def test_the_width_follows_the_layout(op, dtype):
    """plan's ``aligned`` is the width the layout allows (layout_width): the
    16-byte width when K, the row strides and the pointers allow it, else 1;
    True and False stand for the 16-byte width and 1."""
    h100 = devices.REAL["H100"]
    vec = _gpu._vector_width(dtype)
    item = dtype.itemsize
    k = 256 if dtype == np.float64 else 512  # the warp tier, vectorised when it can be
    assert _gpu.plan(op, 64, k, dtype, True, h100).vec == vec
    assert _gpu.plan(op, 64, k, dtype, vec, h100).vec == vec
    assert _gpu.plan(op, 64, k, dtype, False, h100).vec == 1
    assert _gpu.plan(op, 64, k, dtype, 1, h100).vec == 1
    # what run() passes: layout_width of the pointers and row strides
    assert _gpu.layout_width(dtype, k, (0, 16 * 9), (k, k + vec)) == vec  # x[:, :K] of a wider array
    assert _gpu.layout_width(dtype, k, (item, 16), (k + 8,)) == 1  # x[:, 1:K+1]: a pointer off 16 bytes
    assert _gpu.layout_width(dtype, k, (0,), (2 * k,)) == vec  # x[::2]
    assert _gpu.layout_width(dtype, k, (0,), (k + 1,)) == 1  # an odd row stride
    assert _gpu.layout_width(dtype, k + 1, (0,), (k + 1,)) == 1  # odd K
    for width in (vec, 1):
        launch = _gpu.plan(op, 64, k, dtype, width, h100)
        assert launch.vec == width and _vec(launch.kernel) == width
        # scalar rows stay in the warp tier up to _WARP_SCALAR_MAX_COLS per lane
        assert (launch.tier == "warp") == (width == vec or k <= 32 * _gpu._WARP_SCALAR_MAX_COLS[dtype])


def test_the_layout_width_only_names_built_widths():
    for dtype in DTYPES:
        for k in (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 33, 64):
            for ld in (0, 1, 2, 3, 4, 8, 16):
                for ptr in (i * dtype.itemsize for i in (0, 1, 2, 3, 4, 6, 8)):  # element-aligned
                    w = _gpu.layout_width(dtype, k, (ptr,), (ld,))
                    assert w in _gpu._widths(dtype)
                    assert k % w == 0 and ld % w == 0 and ptr % (w * dtype.itemsize) == 0


@pytest.mark.parametrize("device", sorted(devices.REAL))
@pytest.mark.parametrize("op", ROW_OPS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
def test_tiers_move_from_warp_to_shared_memory_to_l2_as_k_grows(device, op, dtype):
    # With vector loads fixed (every K a multiple of 8, or no alignment at all):
    # whether a row vectorises changes its tier, not the order of the tiers.
    for aligned, ks in ((True, [k for k in KS if k % 8 == 0]), (False, KS)):
        order = [TIER_ORDER[_gpu.plan(op, 7, k, dtype, aligned, PROPS[device]).tier] for k in ks]
        assert order == sorted(order), list(zip(ks, order))


@pytest.mark.parametrize(
    "op, k, dtype, aligned, tier",
    [
        ("softmax", 1024, np.float32, True, "warp"),  # PyTorch's persistent-softmax limit
        ("softmax", 1001, np.float32, True, "warp"),  # float32 scalar rows: the warp tier up to 1024
        ("softmax", 1000, np.float32, False, "warp"),
        ("softmax", 1025, np.float32, False, "block-smem"),
        ("softmax", 129, np.float16, False, "block-smem"),  # float16 scalar rows leave it above 128
        ("softmax", 257, np.float64, False, "block-smem"),
        ("softmax", 512, np.float64, True, "block-smem"),  # double stops at 256
        ("softmax", 58000, np.float32, True, "block-smem"),  # 227 KiB of shared memory on an H100
        ("softmax", 58100, np.float32, True, "block-l2"),
        ("softmax_backward", 29000, np.float32, True, "block-smem"),  # two rows cached
        ("softmax_backward", 29100, np.float32, True, "block-l2"),
        ("softmax_jacobian", 32, np.float32, True, "jacobian-warp"),
        ("softmax_jacobian", 33, np.float32, True, "jacobian-block"),
    ],
)
def test_h100_tier_thresholds(op, k, dtype, aligned, tier):
    assert _gpu.plan(op, 1000, k, dtype, aligned, devices.REAL["H100"]).tier == tier


def test_block_size_follows_pytorch_rule():
    # SoftMax_getBlockSize: power of two of K / ILP, halved for vectors, >= 32, <= 1024
    h100 = devices.REAL["H100"]
    assert _gpu.plan("softmax", 7, 1025, np.float32, False, h100).block == 1024
    assert _gpu.plan("softmax", 7, 4096, np.float32, True, h100).block == 512
    assert _gpu.plan("softmax", 7, 2048, np.float32, True, h100).block == 256
    assert _gpu.plan("softmax", 7, 600, np.float64, True, h100).block == 256


def test_huge_batches_are_capped_by_waves_and_grid_stride():
    launch = _gpu.plan("softmax", 2**40, 1024, np.float16, True, devices.REAL["H100"])
    assert launch.grid == 132 * (2048 // 128) * 32


def test_operation_codes_agree_with_the_kernel_source():
    c = _gpu.constants()
    assert [c["CSM_" + op.upper()] for op in ROW_OPS] == [0, 1, 2, 3, 5]  # 4: the Jacobian


@pytest.mark.parametrize(
    "args, error",
    [
        (("softmax", 1, 0, np.float32), ValueError),
        (("softmax", 0, 5, np.float32), ValueError),
        (("softmax", 1, 2**30 + 1, np.float32), ValueError),
        (("softmax", 1, 5, np.int32), TypeError),
        (("softmin", 1, 5, np.float32), ValueError),
    ],
)
def test_invalid_requests_raise(args, error):
    with pytest.raises(error):
        _gpu.plan(*args, True, devices.REAL["H100"])


def test_split_tier_is_chosen_for_few_long_rows_on_real_devices():
    h100 = devices.REAL["H100"]
    for n, k in ((8, 1 << 20), (64, 50257)):
        launch = _gpu.plan("softmax", n, k, np.float32, True, h100)
        chunks = -(-k // launch.chunk)
        assert launch.tier == "split" and launch.chunk % _vec(launch.kernel) == 0, launch
        # every SM gets work: one wave of 2 resident 512-thread blocks per SM
        assert n * chunks >= h100["multiProcessorCount"], (n, chunks)
        assert launch.chunk * 4 >= _gpu._SPLIT_MIN_CHUNK_BYTES
    # 50257 is odd: scalar kernels; 2^20 vectorises
    assert _vec(_gpu.plan("softmax", 8, 1 << 20, np.float32, True, h100).kernel) == 4
    # rows that fill the device, short rows and the backward ops keep their tiers
    assert _gpu.plan("softmax", 1024, 32768, np.float32, True, h100).tier == "block-smem"
    assert _gpu.plan("softmax", 8, 12000, np.float32, True, h100).tier != "split"
    assert _gpu.plan("softmax_backward", 8, 1 << 20, np.float32, True, h100).tier == "block-l2"
    assert _gpu.plan("logsumexp", 8, 1 << 20, np.float16, True, h100).tier == "split"
