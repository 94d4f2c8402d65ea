"""GPU backend: launches the kernels of ``cuda/softmax.cu`` through CuPy.

``csoftmax._semantics`` validates, promotes, moves axes and allocates ``out``; this
module only picks a kernel and a launch configuration for an (N, K) problem
whose arrays have unit column stride (any non-negative row stride: row-sliced
views are passed as they are) and launches it. CuPy is imported lazily, so importing csoftmax
costs nothing on machines without it.

Three seams stand between the launch code and CuPy -- ``_device_of``,
``_device_properties`` and ``_load_module`` -- so that the tests can put a CPU
emulation of the same ``.cu`` text (tests/cuda_emu) behind the unchanged
planning, argument packing and launch code.
"""
from __future__ import annotations

import functools
import importlib.resources
import re
from typing import NamedTuple

import numpy as np

from . import _engine

NATIVE_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))

# The one dtype -> kernel type map. float16 travels as raw bits (csm_half)
# because the kernels cannot include <cuda_fp16.h>; see cuda/softmax.cu.
_CTYPE = {
    np.dtype(np.float16): "csm_half",
    np.dtype(np.float32): "float",
    np.dtype(np.float64): "double",
}

# The operations the GPU computes, from the registry (csoftmax/_ops.h): the
# row kernels take the op code as their template argument OP; softmax.cu's
# enum repeats the codes (NVRTC compiles it without includes), and both
# setup.py and constants() check that it agrees.
_ROW_OPS = {name: op["code"] for name, op in _engine.OPS.items() if op["gpu"] == "rows"}
_JACOBIAN, = (name for name, op in _engine.OPS.items() if op["gpu"] == "jacobian")
_ROW_CODES = dict(_ROW_OPS)
# Operations whose result is one value per row, shape (N,).
_REDUCE_OPS = tuple(name for name, op in _engine.OPS.items() if op["out"] == "reduce")
OPS = tuple(_ROW_CODES) + (_JACOBIAN,)

# CuPy itself adds -arch, -ftz=true and --device-as-default-execution-space.
_OPTIONS = ("--std=c++17",)

# Widest vector access: 16 bytes (ld.global.v4.f32), as in PyTorch SoftMax.cu
# (ALIGN_BYTES = 16).
_VECTOR_BYTES = 16
# The warp tier holds the row in registers up to 1024 elements and 4096 bytes
# per row: PyTorch SoftMax.cu, host_softmax, the persistent-softmax condition
# `dim_size <= 1024 && dim_size*sizeof(scalar_t) <= 4096`.
# For float64 the limit is 256: with 16 doubles per lane held across the exp
# calls ptxas spills (NVRTC 13.5, sm_75 and sm_90), which fails our build.
_WARP_TIER_MAX_K = 1024
_WARP_TIER_MAX_BYTES = 4096
_WARP_TIER_MAX_K_FLOAT64 = 256
# Rows that cannot use vector loads (K, a row stride or a pointer not a
# multiple of 16 bytes) stay in the warp tier up to this many elements per
# lane (32 x this K), rather than take a block of up to 1024 threads per row
# (issue 13, item 4: odd K such as 577 or 1001). float32 goes all the way
# (32 per lane, K <= 1024): its 10 scalar kernels of 16 and 32 elements per
# lane compile with no spill on sm_75..sm_100 at 48-118 registers, in
# 2-4 s per architecture for all 10 (NVRTC 13.5, measured on a loaded
# machine); they are a module of their own (kernel_group), compiled only
# when a call needs one.
# float16 stops at 4 (K <= 128): at 8, the backward kernels spill 12 bytes on
# sm_80, sm_86 and sm_89 at 48-56 registers (ptxas's occupancy heuristic,
# NVRTC 13.5), and a spill fails the build. float64 stops at 8 (its warp tier
# ends at K = 256).
_WARP_SCALAR_MAX_COLS = {np.dtype(np.float16): 4, np.dtype(np.float32): 32, np.dtype(np.float64): 8}
# Grid = SMs x resident blocks per SM x waves, capped by the work: OneFlow
# softmax.cuh GetNumBlocks (kNumWaves = 32); the kernels grid-stride over rows.
_WAVES = 32
# Shared memory the CUDA runtime keeps per block on sm_80 and newer (CUDA C++
# Programming Guide, "Shared Memory" of compute capability 8.x); used when the
# device properties do not report reservedSharedMemPerBlock.
_RESERVED_SMEM_DEFAULT = 1024
# Split rows (csm_rows_split_*): a row is split over several blocks when the
# rows alone leave SMs idle, i.e. fewer than _SPLIT_ROWS_PER_SM rows per SM:
# the vectorised block kernels run 2 resident blocks of 512 threads per SM
# (__launch_bounds__(512, 2)), so fewer rows than 2 x SMs cannot fill one
# wave. The chunks are sized for one full wave of blocks (SMs x resident
# blocks) but never shorter than _SPLIT_MIN_CHUNK_BYTES: one step of a 512-
# thread block with CSM_BLOCK_UNROLL = 4 loads of 16 bytes in flight per
# thread (512 x 4 x 16 = 32 KiB), so each block issues at least one full
# step and the second launch and the merge stay small next to the row. Rows
# that give fewer than 2 chunks keep the one-block-per-row tiers. (Numbers
# from the kernels' launch bounds, not measured on a device.)
_SPLIT_ROWS_PER_SM = 2
_SPLIT_MIN_CHUNK_BYTES = 512 * 4 * 16
# The forward operations split (the backward ones keep the block tiers).
_SPLIT_OPS = ("softmax", "log_softmax", "logsumexp")
# Row length limit of the kernels: they index within a row with 32-bit ints
# and step by up to 1024 threads without overflowing.
_MAX_K = 1 << 30


def is_gpu_array(x) -> bool:
    """True for a CuPy ndarray; never imports CuPy."""
    return type(x).__module__.split(".")[0] == "cupy"


@functools.lru_cache(maxsize=None)
def source() -> str:
    """The CUDA source text, read from the package data ``csoftmax.cuda``."""
    return importlib.resources.files("csoftmax.cuda").joinpath("softmax.cu").read_text(encoding="utf-8")


@functools.lru_cache(maxsize=None)
def constants() -> dict:
    """The ``CSM_* = N,`` constants of softmax.cu, their single source."""
    found = {name: int(value) for name, value in re.findall(r"^\s*(CSM_\w+) = (\d+),", source(), re.M)}
    for op, code in _ROW_CODES.items():
        if found.get("CSM_" + op.upper()) != code:
            raise RuntimeError(f"softmax.cu and _gpu.py disagree on the code of {op}")
    return found


def _acc_size(dtype: np.dtype) -> int:
    return 8 if dtype == np.float64 else 4


def _cache_size(dtype: np.dtype) -> int:
    """Bytes per cached element in the shared memory tier: float16 rows are
    cached as float16 (cuda/softmax.cu, csm_cache), the others as their
    accumulator type."""
    return dtype.itemsize if dtype == np.float16 else _acc_size(dtype)


def _vector_width(dtype: np.dtype) -> int:
    return _VECTOR_BYTES // dtype.itemsize


def _warp_tier_max_k(dtype: np.dtype) -> int:
    if dtype == np.float64:
        return _WARP_TIER_MAX_K_FLOAT64
    return min(_WARP_TIER_MAX_K, _WARP_TIER_MAX_BYTES // dtype.itemsize)


def _warp_configs(dtype: np.dtype) -> list:
    """(VEC, NVEC) instantiations of csm_rows_warp for one dtype."""
    vec = _vector_width(dtype)
    configs = [(1, 1)]  # rows of <= 32 elements, any group width
    cols = 2
    while cols * 32 <= _warp_tier_max_k(dtype):
        if cols <= _WARP_SCALAR_MAX_COLS[dtype]:
            configs.append((1, cols))
        if cols >= vec:
            configs.append((vec, cols // vec))
        cols *= 2
    return configs


def _row_kernel_warp(dtype, op, vec, nvec) -> str:
    return f"csm_rows_warp<{_CTYPE[dtype]}, {_ROW_CODES[op]}, {vec}, {nvec}>"


def _row_kernel_block(dtype, op, vec, cache) -> str:
    return f"csm_rows_block<{_CTYPE[dtype]}, {_ROW_CODES[op]}, {vec}, {'true' if cache else 'false'}>"


def _split_kernels(dtype, op, vec) -> tuple:
    """(partial, finish) kernels of the split tier; logsumexp's finish only
    merges, so it has one instantiation (VEC = 1)."""
    finish_vec = 1 if op in _REDUCE_OPS else vec
    return (f"csm_rows_split_partial<{_CTYPE[dtype]}, {vec}>",
            f"csm_rows_split_finish<{_CTYPE[dtype]}, {_ROW_CODES[op]}, {finish_vec}>")


# The part of an (op, dtype) group compiled as a module of its own: the
# scalar warp kernels of more than 8 elements per lane (float32 rows of
# 257..1024 elements that cannot vectorise). They add about a third to a
# float32 group's first compile (bench/gpu_compile_cache.py), so only a call
# that needs one of them pays for them.
_WIDE_SCALAR = "wide-scalar"


def _wide_scalar(name: str) -> bool:
    return name.startswith("csm_rows_warp<") and name.endswith((", 1, 16>", ", 1, 32>"))


@functools.lru_cache(maxsize=None)
def kernel_group(op: str, dtype, name: str) -> tuple:
    """The module (group) that holds kernel ``name`` of (op, dtype): the
    argument of ``group_names`` and of the module loader."""
    dtype = np.dtype(dtype)
    return (op, dtype.name, _WIDE_SCALAR) if _wide_scalar(name) else (op, dtype.name)


@functools.lru_cache(maxsize=None)
def _op_names(op: str, dtype) -> tuple:
    """Every kernel instantiation the planner can choose for one (op, dtype)."""
    dtype = np.dtype(dtype)
    if op == _JACOBIAN:
        return (f"csm_jacobian_warp<{_CTYPE[dtype]}>", f"csm_jacobian_block<{_CTYPE[dtype]}>")
    names = [_row_kernel_warp(dtype, op, vec, nvec) for vec, nvec in _warp_configs(dtype)]
    for vec in sorted({1, _vector_width(dtype)}):
        names += [_row_kernel_block(dtype, op, vec, cache) for cache in (True, False)]
    if op in _SPLIT_OPS:
        for vec in sorted({1, _vector_width(dtype)}):
            names += [name for name in _split_kernels(dtype, op, vec) if name not in names]
    return tuple(names)


@functools.lru_cache(maxsize=None)
def group_names(op: str, dtype, part: str = "") -> tuple:
    """The name expressions of one lazily compiled module of (op, dtype):
    the kernels the planner can choose (about a tenth of all), but for the
    wide scalar warp kernels, which ``part`` = "wide-scalar" names (a module
    of their own: kernel_group)."""
    return tuple(name for name in _op_names(op, dtype) if _wide_scalar(name) == (part == _WIDE_SCALAR))


@functools.lru_cache(maxsize=None)
def name_expressions() -> tuple:
    """Every kernel instantiation the planner can choose (all groups)."""
    names = []
    for dtype in NATIVE_DTYPES:
        for op in OPS:
            names += [name for name in _op_names(op, dtype) if name not in names]
    return tuple(names)


class Launch(NamedTuple):
    """One kernel launch: what ``plan`` decides and ``run`` executes."""

    kernel: str  # a name expression
    tier: str  # "warp", "block-smem", "block-l2", "split", "jacobian-warp" or "jacobian-block"
    grid: int
    block: int
    shared_mem: int  # dynamic shared memory, bytes
    width: int  # lanes per row for the warp kernels, 0 for the block kernels
    # The split tier: elements per chunk (0 for the other tiers), and the
    # second launch (same block, no dynamic shared memory): the kernel that
    # merges the chunks' partials and writes the output, and its grid.
    chunk: int = 0
    finish: str = ""
    finish_grid: int = 0
    # Elements per vector access of the kernel(s): the dtype's 16-byte width,
    # or 1 where K, a row stride or a pointer is not a multiple of it.
    vec: int = 1


def _pow2_ceil(v: int) -> int:
    return 1 << max(0, (v - 1).bit_length())


def _block_size(ilp: int, k: int, max_threads: int) -> int:
    """Threads per row for the block kernels: PyTorch SoftMax.cu SoftMax_getBlockSize.

    A power of two covering K / ILP, at most ``max_threads``, halved when the
    loads are vectors (to keep at least half of the row vectorised with more
    threads), and at least one warp.
    """
    limit = min(k // ilp, max_threads)
    if ilp > 1:
        limit //= 2
    return max(32, _pow2_ceil(max(1, limit)))


def _resident_blocks(props: dict, block: int, shared_mem: int) -> int:
    """Blocks of this shape one SM holds at once, by threads and shared memory."""
    by_threads = props["maxThreadsPerMultiProcessor"] // block
    per_block = shared_mem + props.get("reservedSharedMemPerBlock", _RESERVED_SMEM_DEFAULT)
    if per_block == 0:  # sm_75 reserves nothing, and the warp tier uses no shared memory
        return by_threads
    return min(by_threads, props["sharedMemPerMultiprocessor"] // per_block)


def _grid(props: dict, work_blocks: int, block: int, shared_mem: int) -> int:
    cap = props["multiProcessorCount"] * max(1, _resident_blocks(props, block, shared_mem)) * _WAVES
    return int(max(1, min(work_blocks, cap, props.get("maxGridSize", (2**31 - 1,))[0])))


def plan(op: str, n: int, k: int, dtype, aligned, props: dict) -> Launch:
    """Choose the kernel and launch configuration for an (n, k) problem.

    ``aligned``: the widest vector, in elements, that the arrays' pointers
    and row strides allow (``layout_width``); True stands for the dtype's
    16-byte width (pointers 16-byte aligned, rows packed), False for 1.
    ``props`` are the device properties as
    ``cupy.cuda.runtime.getDeviceProperties`` gives them. The Launch's
    ``vec`` is the width the kernel uses: the widest of the kernels' widths
    (``_widths``) that divides K and the layout's width.
    """
    dtype = np.dtype(dtype)
    if dtype not in _CTYPE:
        raise TypeError(f"the GPU kernels take {', '.join(map(str, NATIVE_DTYPES))}, not {dtype}")
    if not (1 <= k <= _MAX_K and n >= 1):
        raise ValueError(f"the GPU kernels take 1 <= K <= {_MAX_K} and N >= 1, got N={n}, K={k}")
    c = constants()
    acc = _acc_size(dtype)
    vec = _vector_width(dtype)
    allowed = (vec if aligned else 1) if isinstance(aligned, bool) else int(aligned)
    # the kernels' widths are 1 and the 16-byte one (each width is another
    # set of instantiations: NVRTC time, see README, GPU)
    can_vectorise = allowed % vec == 0 and k % vec == 0
    warp_threads = c["CSM_WARP_THREADS"]

    def warp_grid(width):
        rows_per_block = warp_threads // width
        return _grid(props, -(-n // rows_per_block), warp_threads, 0)

    if op == _JACOBIAN:
        ctype = _CTYPE[dtype]
        if k <= 32:
            width = _pow2_ceil(k)
            return Launch(f"csm_jacobian_warp<{ctype}>", "jacobian-warp", warp_grid(width), warp_threads, 0, width)
        block = _block_size(1, k, c["CSM_MAX_THREADS"])
        smem = (c["CSM_SCRATCH"] + block) * acc
        return Launch(f"csm_jacobian_block<{ctype}>", "jacobian-block", _grid(props, n, block, smem), block, smem, 0)
    if op not in _ROW_CODES:
        raise ValueError(f"unknown operation {op!r}; expected one of {OPS}")

    if k <= 32:
        width = _pow2_ceil(k)
        return Launch(_row_kernel_warp(dtype, op, 1, 1), "warp", warp_grid(width), warp_threads, 0, width, vec=1)
    if k <= _warp_tier_max_k(dtype):
        cols = max(2, _pow2_ceil(-(-k // 32)))
        v = vec if can_vectorise and cols >= vec else 1
        if v > 1 or cols <= _WARP_SCALAR_MAX_COLS[dtype]:
            return Launch(_row_kernel_warp(dtype, op, v, cols // v), "warp", warp_grid(32), warp_threads, 0, 32,
                          vec=v)

    v = vec if can_vectorise else 1
    if op in _SPLIT_OPS:
        split = _split_plan(op, n, k, dtype, v, props)
        if split is not None:
            return split
    block = _block_size(v, k, c["CSM_MAX_THREADS"])  # <= CSM_MAX_THREADS_VEC when v > 1
    n_rows_cached = 2 if op.endswith("backward") else 1
    cached = c["CSM_SCRATCH"] * acc + n_rows_cached * k * _cache_size(dtype)
    reserved = props.get("reservedSharedMemPerBlock", _RESERVED_SMEM_DEFAULT)
    if cached <= props["sharedMemPerBlockOptin"] and cached + reserved <= props["sharedMemPerMultiprocessor"]:
        return Launch(_row_kernel_block(dtype, op, v, True), "block-smem", _grid(props, n, block, cached), block, cached, 0,
                      vec=v)
    smem = c["CSM_SCRATCH"] * acc
    return Launch(_row_kernel_block(dtype, op, v, False), "block-l2", _grid(props, n, block, smem), block, smem, 0,
                  vec=v)


def _split_plan(op: str, n: int, k: int, dtype: np.dtype, v: int, props: dict):
    """The split tier's Launch for an (n, k) problem, or None when the rows
    fill the device by themselves or are too short for two chunks."""
    sms = props["multiProcessorCount"]
    if n >= _SPLIT_ROWS_PER_SM * sms:
        return None
    c = constants()
    min_chunk = max(v, _SPLIT_MIN_CHUNK_BYTES // dtype.itemsize // v * v)
    max_threads = c["CSM_MAX_THREADS_VEC"] if v > 1 else c["CSM_MAX_THREADS"]
    smem = c["CSM_SCRATCH"] * _acc_size(dtype)
    wave = sms * max(1, _resident_blocks(props, min(max_threads, _block_size(v, min_chunk, max_threads)), smem))
    chunks = min(-(-wave // n), k // min_chunk)
    if chunks < 2:
        return None
    chunk = -(-k // chunks)
    chunk = -(-chunk // v) * v  # a multiple of the vector width
    chunks = -(-k // chunk)
    block = _block_size(v, chunk, c["CSM_MAX_THREADS"])
    partial, finish = _split_kernels(dtype, op, v)
    finish_items = n if op in _REDUCE_OPS else n * chunks
    return Launch(partial, "split", _grid(props, n * chunks, block, smem), block, smem, 0,
                  chunk, finish, _grid(props, finish_items, block, 0), vec=v)


def split_workspace_size(launch: Launch, n: int, k: int) -> int:
    """Accumulator values the split tier's partials take: (max, sum) per chunk."""
    return 2 * n * -(-k // launch.chunk) if launch.chunk else 0


# ---------------------------------------------------------------- seams


def _device_of(a):
    """The CuPy device that holds ``a``; also the context to launch in."""
    return a.device


@functools.lru_cache(maxsize=None)
def _device_properties(device_id: int) -> dict:
    import cupy

    return cupy.cuda.runtime.getDeviceProperties(device_id)


def build_module(device_id: int, code: str, names: tuple):
    """The one loader of every CUDA module (softmax's groups here, the loss's
    in _gpu_loss): the kernels ``names`` of the text ``code`` for
    ``device_id``'s architecture, from the disk cache (csoftmax/_gpu_cache.py)
    or compiled and stored there, loaded under that device."""
    import cupy

    from . import _gpu_cache

    props = _device_properties(device_id)
    arch = props["major"] * 10 + props["minor"] if "major" in props and "minor" in props else None
    with cupy.cuda.Device(device_id):
        return _gpu_cache.load_module(cupy, code, _OPTIONS, names, arch)


@functools.lru_cache(maxsize=None)
def _load_module(device_id: int, group: tuple):
    """One module per device and (op, dtype name[, part]) group, built on its
    first use: a call compiles the dozen kernels its operation and dtype may need,
    not all of them (NVRTC 13.5 on 2 cores: see README, GPU), and a later
    process loads them from the disk cache (csoftmax/_gpu_cache.py)."""
    return build_module(device_id, source(), group_names(*group))


# ---------------------------------------------------------------- launch


def _data_ptr(x) -> int:
    if is_gpu_array(x):
        return x.data.ptr
    return x.__array_interface__["data"][0]  # NumPy stand-ins of the emulator


# Kernels (RawKernel objects) by (device, name expression), and the dynamic
# shared memory limits already raised, by (device, name expression): both are
# properties of one device's loaded module, so both are keyed by the device.
_kernels: dict = {}
_raised_smem: dict = {}
# plan() results by (device, op, n, k, dtype, layout width): repeated calls of one
# shape skip the planning (9-15 us of Python). Bounded: cleared when full.
_plans: dict = {}
_PLANS_MAX = 4096

# A null device pointer, for "no mask". CuPy packs a NumPy uint64 scalar as
# its 8 bytes, which the kernel reads as `const unsigned char*` (so in every
# CuPy version; only recent ones pack None as a null pointer).
NULL = np.uint64(0)


def cached_kernel(kernels: dict, load, device_id: int, group: tuple, name: str):
    """The kernel ``name`` of the module ``load(device_id, group)``, looked
    up once per (device, name) in ``kernels``; call under that device. (The
    one kernel cache of softmax's and the loss's modules, each with its own
    dict and loader seam.)"""
    key = (device_id, name)
    kernel = kernels.get(key)
    if kernel is None:
        kernel = kernels[key] = load(device_id, group).get_function(name)
    return kernel


def _kernel(device_id: int, group: tuple, name: str):
    """The kernel ``name`` of group ``group`` on ``device_id``; call under that device."""
    return cached_kernel(_kernels, _load_module, device_id, group, name)


def check_same_device(named, fname: str) -> None:
    """ValueError naming the arguments when the CuPy arrays among ``named``
    ((name, array or None) pairs) are not all on one device."""
    ids = [(name, _device_of(x).id) for name, x in named if x is not None]
    if len({i for _, i in ids}) > 1:
        where = ", ".join(f"{name} on device {i}" for name, i in ids)
        raise ValueError(f"{fname}: the arrays must be on one device, got {where}")


class _NoDevice:
    """The scope of a call with no CuPy array: nothing to enter."""

    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def device_scope(named, fname: str):
    """The device context a public call on CuPy arrays runs in.

    ``named``: (argument name, value) pairs; the CuPy arrays among them must
    share one device (else ValueError naming them), and everything the call
    does -- copies, allocations, kernel lookup, the launch -- happens under
    that device, whichever device is current when the call starts.
    """
    arrays = [(name, x) for name, x in named if x is not None and is_gpu_array(x)]
    if not arrays:
        return _NoDevice()
    check_same_device(arrays, fname)
    return _device_of(arrays[0][1])


def mask_args(mask, n: int, k: int) -> tuple:
    """(pointer argument, row stride in elements) of a mask for an (n, k) problem.

    ``mask`` is None, or a uint8 array of shape (k,) or (n, k) with unit
    column stride (any row stride, 0 included: a broadcast (k,) mask).
    """
    if mask is None:
        return NULL, np.int64(0)
    if mask.dtype != np.uint8:
        raise TypeError(f"mask: the kernels take a uint8 mask, not {mask.dtype}")
    if mask.shape == (k,) or (mask.ndim == 2 and mask.shape == (n, k)):
        if k > 1 and mask.strides[-1] != 1:
            raise ValueError(f"mask: the column stride must be 1 byte, got {mask.strides[-1]}")
        ldm = mask.strides[0] if mask.ndim == 2 and n > 1 else 0
        return mask, np.int64(ldm)
    raise ValueError(f"mask: shape {mask.shape} is neither ({k},) nor ({n}, {k})")


def out_shape(op: str, n: int, k: int) -> tuple:
    """The shape of ``op``'s result for an (n, k) input."""
    if op == _JACOBIAN:
        return (n, k, k)
    if op in _REDUCE_OPS:
        return (n,)
    return (n, k)


def row_stride(x):
    """The row stride of ``x`` in elements, as the row kernels take it, or
    None when they cannot: a 2-D array needs a unit column stride and a
    non-negative row stride that is a whole number of elements (0 included:
    a row broadcast to every row); a 1-D array (logsumexp's output) a
    positive stride of whole elements. A single row, or a single column,
    has no stride that matters."""
    item = x.itemsize
    shape, strides = x.shape, x.strides
    if len(shape) == 2:
        n, k = shape
        if k > 1 and strides[1] != item:
            return None
        if n <= 1:
            return k
        s = strides[0]
        return s // item if s >= 0 and s % item == 0 else None
    if len(shape) == 1:
        s = strides[0]
        if shape[0] <= 1:
            return 1
        return s // item if s > 0 and s % item == 0 else None
    return None


def _widths(dtype: np.dtype) -> tuple:
    """The vector widths (elements per access) the row kernels are built
    for, widest first: the 16-byte one and 1."""
    vec = _vector_width(dtype)
    return (vec, 1) if vec > 1 else (1,)


# dtype -> its widths above 1, with their bytes (run() asks on every call)
_WIDER = {dt: tuple((w, w * dt.itemsize) for w in _widths(dt) if w > 1) for dt in NATIVE_DTYPES}


def layout_width(dtype, k: int, ptrs, lds) -> int:
    """The widest of the kernels' widths w that K, every row stride in
    ``lds`` and every pointer in ``ptrs`` (at w * itemsize bytes) allow:
    what ``plan`` takes as ``aligned``."""
    wider = _WIDER.get(dtype)
    if wider is None:
        dtype = np.dtype(dtype)
        wider = tuple((w, w * dtype.itemsize) for w in _widths(dtype) if w > 1)
    for w, nbytes in wider:
        if k % w == 0:
            for ld in lds:
                if ld % w:
                    break
            else:
                for p in ptrs:
                    if p % nbytes:
                        break
                else:
                    return w
    return 1


def kernel_args(op: str, launch: Launch, a, b, out, mask, lds=None) -> tuple:
    """The argument tuples of ``launch``'s kernel(s), in the order of their
    signatures in cuda/softmax.cu: the row kernels take (a, b, out, mask,
    ldm, lda, ldb, ldo, n_rows, k[, width]); the split tier's partial
    (a, ws, mask, ldm, lda, n_rows, k, chunk) and finish (a, out, ws, mask,
    ldm, lda, ldo, n_rows, k, chunk) -- with ``ws`` a placeholder (None) that
    ``run`` fills in; the Jacobian's (x, out, mask, ldm, n_rows, k[, width])
    on C-contiguous arrays. Every row stride is in elements; ``lds``: the
    (lda, ldb, ldo) that ``run`` already has, else computed here."""
    n, k = a.shape
    mask_ptr, ldm = mask_args(mask, n, k)
    if op == _JACOBIAN:
        scalars = (ldm, np.int64(n), np.int32(k))
        if launch.width:
            scalars += (np.int32(launch.width),)
        return ((a, out, mask_ptr) + scalars,)
    if lds is None:
        lds = _row_strides(a, b, out)
    lda, ldb, ldo = lds
    lda, ldb, ldo = np.int64(lda), np.int64(ldb), np.int64(ldo)
    if launch.chunk:
        tail = (np.int64(n), np.int32(k), np.int32(launch.chunk))
        return ((a, None, mask_ptr, ldm, lda) + tail, (a, out, None, mask_ptr, ldm, lda, ldo) + tail)
    b = a if b is None else b
    scalars = (np.int64(n), np.int32(k))
    if launch.width:
        scalars += (np.int32(launch.width),)
    return ((a, b, out, mask_ptr, ldm, lda, ldb, ldo) + scalars,)


def _row_strides(a, b, out) -> tuple:
    """(lda, ldb, ldo) of a row operation; ldb = lda without a gradient."""
    lda = _checked_stride(a, "a")
    return lda, lda if b is None else _checked_stride(b, "b"), _checked_stride(out, "out")


def _checked_stride(x, name: str) -> int:
    ld = row_stride(x)
    if ld is None:
        raise ValueError(f"{name}: the GPU kernels take a unit column stride and a non-negative row stride "
                         f"of whole elements, got strides {x.strides}")
    return ld


def run(op: str, a, b, out, num_threads: int = 0, fresh: bool = False, mask=None) -> None:
    """Compute ``op`` on the (N, K) array ``a`` (and gradient ``b``) into ``out``.

    All arrays are of one native dtype with unit column stride and any
    non-negative row stride (``row_stride``; C-contiguous for the
    Jacobian); ``out`` has the shape ``out_shape(op, N, K)``: (N, K),
    (N, K, K) for the Jacobian, (N,) for logsumexp, and rows that do not
    overlap. ``b`` is None for the forward operations. ``mask`` (where=)
    is None or a uint8 array of shape (K,) or (N, K) with unit column stride.
    ``num_threads`` and ``fresh`` (``out`` was just allocated) are the CPU
    backend's knobs, part of the shared backend signature; the GPU has no
    use for them. Everything happens under the device that holds ``a``:
    kernel lookup, the shared memory opt-in and the launch.
    """
    n, k = a.shape
    check_same_device((("a", a), ("b", b), ("out", out), ("mask", mask)), op)
    device = _device_of(a)
    props = _device_properties(device.id)
    lds = None
    if op == _JACOBIAN:
        width = 1  # the Jacobian kernels have no vector path
    else:
        lds = lda, ldb, ldo = _row_strides(a, b, out)
        if op in _REDUCE_OPS:  # one scalar per row out: only the input's layout counts
            width = layout_width(a.dtype, k, (_data_ptr(a),), (lda,))
        elif b is None:
            width = layout_width(a.dtype, k, (_data_ptr(a), _data_ptr(out)), (lda, ldo))
        else:
            width = layout_width(a.dtype, k, (_data_ptr(a), _data_ptr(b), _data_ptr(out)), (lda, ldb, ldo))
    key = (device.id, op, n, k, a.dtype.char, width)
    launch = _plans.get(key)
    if launch is None:
        if len(_plans) >= _PLANS_MAX:
            _plans.clear()
        launch = _plans[key] = plan(op, n, k, a.dtype, width, props)
    args = kernel_args(op, launch, a, b, out, mask, lds)
    if launch.chunk:
        _run_split(op, launch, device, a, args)
        return
    with device:
        kernel = _kernel(device.id, kernel_group(op, a.dtype, launch.kernel), launch.kernel)
        if launch.shared_mem > props["sharedMemPerBlock"]:
            key = (device.id, launch.kernel)
            if _raised_smem.get(key, 0) < launch.shared_mem:
                # Above 48 KiB a kernel must opt in to more dynamic shared memory.
                kernel.max_dynamic_shared_size_bytes = launch.shared_mem
                _raised_smem[key] = launch.shared_mem
        kernel((launch.grid,), (launch.block,), args[0], shared_mem=launch.shared_mem)


def _workspace(a, size: int, dtype):
    """Scratch memory on ``a``'s device (call under that device)."""
    if is_gpu_array(a):
        import cupy

        return cupy.empty((size,), dtype=dtype)
    return np.empty((size,), dtype=dtype)  # NumPy stand-ins of the emulator


def _run_split(op, launch, device, a, args) -> None:
    """The split tier's two launches: chunk partials, then merge and write."""
    n, k = a.shape
    acc = np.float64 if a.dtype == np.float64 else np.float32
    partial_args, finish_args = args
    group = (op, a.dtype.name)
    with device:
        ws = _workspace(a, split_workspace_size(launch, n, k), acc)
        partial = _kernel(device.id, group, launch.kernel)
        finish = _kernel(device.id, group, launch.finish)
        partial((launch.grid,), (launch.block,), partial_args[:1] + (ws,) + partial_args[2:],
                shared_mem=launch.shared_mem)
        finish((launch.finish_grid,), (launch.block,), finish_args[:2] + (ws,) + finish_args[3:], shared_mem=0)


def info() -> dict:
    """What ``csoftmax.show_config()`` reports about the GPU backend; never raises."""
    report = {"cupy": None, "gpu": False, "device": None, "compute_capability": None, "reason": None}
    try:
        try:
            import cupy
        except ImportError:
            report["reason"] = "CuPy is not installed"
            return report
        report["cupy"] = cupy.__version__
        count = cupy.cuda.runtime.getDeviceCount()
        if count < 1:
            report["reason"] = "no CUDA device"
            return report
        device_id = cupy.cuda.runtime.getDevice()
        props = cupy.cuda.runtime.getDeviceProperties(device_id)
        name = props.get("name", b"")
        report["device"] = name.decode(errors="replace") if isinstance(name, bytes) else str(name)
        report["compute_capability"] = f"{props['major']}.{props['minor']}"
        report["gpu"] = True
    except Exception as exc:  # show_config must describe a broken setup, not crash on it
        report["reason"] = f"{type(exc).__name__}: {exc}"
    return report
