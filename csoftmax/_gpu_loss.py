"""GPU backend of softmax_cross_entropy: launches the kernels of ``cuda/cross_entropy.cu``.

``softmax_cross_entropy`` is the CuPy door of the public function (called by
_loss_semantics for CuPy arrays): every argument is checked, the labels
included (on the device, one reduction, read back before anything else is
launched), before anything is written; the call is then reduced to
C-contiguous (N, K) rows as the CPU path does, and ``run`` launches:

1. integer labels: ``csm_xent_labels`` (one block) -> the first bad row, the
   "mean" divisor W and the sum of the weights; read back (one sync);
2. the loss kernel (warp or block tier, as softmax's planning) -> the per-row
   losses as float64 (N,) and, optionally, the gradient;
3. "sum"/"mean": ``csm_xent_total`` (one block of a fixed 256 threads: the
   same order of additions, so the same bits, on every run and device).

cross_entropy.cu is compiled as one text after softmax.cu (it reuses its
helpers), one module per device and loss kernel (with the label check and
total kernels of its dtype), on first use: a call compiles 3 kernels, and a
later process loads them from the disk cache (the one loader,
_gpu.build_module). Planning reuses csoftmax._gpu's (tiers, grid, block, shared
memory); the device seams (``_gpu._device_of``, ``_gpu._device_properties``)
are _gpu's, and ``_load_module`` here is this module's own seam.
"""
from __future__ import annotations

import functools
import importlib.resources
import math
import re

import numpy as np

from . import _gpu

FNAME = "softmax_cross_entropy"

# The kernels' accumulator (and weight) dtype: float for float16/float32,
# double for float64, as softmax.cu's csm_acc.
_ACC = {
    np.dtype(np.float16): np.dtype(np.float32),
    np.dtype(np.float32): np.dtype(np.float32),
    np.dtype(np.float64): np.dtype(np.float64),
}
# Rows up to this length take the warp tier (a row per warp, or per group of
# lanes for K <= 32): PyTorch's persistent-softmax limit of 1024 elements,
# which softmax's warp tier uses too; longer rows take a block per row.
_WARP_TIER_MAX_K = 1024


@functools.lru_cache(maxsize=None)
def own_source() -> str:
    """cuda/cross_entropy.cu alone."""
    return importlib.resources.files("csoftmax.cuda").joinpath("cross_entropy.cu").read_text(encoding="utf-8")


@functools.lru_cache(maxsize=None)
def source() -> str:
    """What NVRTC compiles: softmax.cu's text, then cross_entropy.cu's."""
    return _gpu.source() + "\n" + own_source()


@functools.lru_cache(maxsize=None)
def constants() -> dict:
    """The ``CSM_* = N,`` constants of both files."""
    found = dict(_gpu.constants())
    found.update({name: int(v) for name, v in re.findall(r"^\s*(CSM_\w+) = (\d+),", own_source(), re.M)})
    return found


def _soft(soft: bool) -> str:
    return "true" if soft else "false"


def _warp_kernel(dtype, soft, vec) -> str:
    return f"csm_xent_warp<{_gpu._CTYPE[dtype]}, {_soft(soft)}, {vec}>"


def _block_kernel(dtype, soft, vec, cache) -> str:
    return f"csm_xent_block<{_gpu._CTYPE[dtype]}, {_soft(soft)}, {vec}, {_soft(cache)}>"


def _labels_kernel(dtype) -> str:
    return f"csm_xent_labels<{_gpu._CTYPE[_ACC[dtype]]}>"


_TOTAL = "csm_xent_total"


def module_names(dtype, loss_kernel: str) -> tuple:
    """What one lazily compiled module holds: the loss kernel a call needs,
    and the label check and total kernels (NVRTC 13.5, sm_90, loaded 2-core
    box: ~1-2 s, against 5-11 s for all 14 kernels of a dtype)."""
    return (loss_kernel, _labels_kernel(np.dtype(dtype)), _TOTAL)


@functools.lru_cache(maxsize=None)
def group_names(dtype) -> tuple:
    """The 14 instantiations the planner can choose for one dtype."""
    dtype = np.dtype(dtype)
    vec = _gpu._vector_width(dtype)
    names = []
    for soft in (False, True):
        names += [_warp_kernel(dtype, soft, 1), _warp_kernel(dtype, soft, vec)]
        for v in (1, vec):
            names += [_block_kernel(dtype, soft, v, cache) for cache in (True, False)]
    return tuple(names) + (_labels_kernel(dtype), _TOTAL)


@functools.lru_cache(maxsize=None)
def name_expressions() -> tuple:
    """Every instantiation, once (the labels kernel of float16 is float32's)."""
    names = []
    for dtype in _gpu.NATIVE_DTYPES:
        names += [n for n in group_names(dtype) if n not in names]
    return tuple(names)


def plan(n: int, k: int, dtype, soft: bool, aligned: bool, props: dict) -> _gpu.Launch:
    """The loss kernel and its launch for an (n, k) problem; ``aligned``: x,
    target and grad all 16-byte aligned. The rules are softmax's (_gpu.plan)."""
    dtype = np.dtype(dtype)
    if dtype not in _gpu._CTYPE:
        raise TypeError(f"the GPU kernels take {', '.join(map(str, _gpu.NATIVE_DTYPES))}, not {dtype}")
    if not (1 <= k <= _gpu._MAX_K and n >= 1):
        raise ValueError(f"the GPU kernels take 1 <= K <= {_gpu._MAX_K} and N >= 1, got N={n}, K={k}")
    c = constants()
    vec = _gpu._vector_width(dtype)
    v = vec if aligned and k % vec == 0 else 1
    if k <= _WARP_TIER_MAX_K:
        width = _gpu._pow2_ceil(k) if k <= 32 else 32
        threads = c["CSM_WARP_THREADS"]
        if width < 32:
            v = 1  # groups narrower than a warp: the scalar kernel (runtime width)
        grid = _gpu._grid(props, -(-n // (threads // width)), threads, 0)
        return _gpu.Launch(_warp_kernel(dtype, soft, v), "warp", grid, threads, 0, width, vec=v)
    acc = _ACC[dtype].itemsize
    # The block kernels' bound is CSM_MAX_THREADS_VEC (cross_entropy.cu, csm_xent_block).
    block = _gpu._block_size(v, k, c["CSM_MAX_THREADS_VEC"])
    cached = (c["CSM_SCRATCH"] + (2 if soft else 1) * k) * acc
    reserved = props.get("reservedSharedMemPerBlock", _gpu._RESERVED_SMEM_DEFAULT)
    if cached <= props["sharedMemPerBlockOptin"] and cached + reserved <= props["sharedMemPerMultiprocessor"]:
        return _gpu.Launch(_block_kernel(dtype, soft, v, True), "block-smem", _gpu._grid(props, n, block, cached),
                           block, cached, 0, vec=v)
    smem = c["CSM_SCRATCH"] * acc
    return _gpu.Launch(_block_kernel(dtype, soft, v, False), "block-l2", _gpu._grid(props, n, block, smem), block,
                       smem, 0, vec=v)


# ---------------------------------------------------------------- seam and caches


@functools.lru_cache(maxsize=None)
def _load_module(device_id: int, names: tuple):
    """One module per device and module_names() group, built on first use by
    _gpu's loader: from the disk cache, or compiled and stored there."""
    return _gpu.build_module(device_id, source(), names)


# RawKernel objects and raised shared memory limits by (device, name).
_kernels: dict = {}
_raised_smem: dict = {}


def _kernel(device_id: int, names: tuple, name: str):
    """Kernel ``name`` of the module ``names`` on ``device_id``; call under that device."""
    return _gpu.cached_kernel(_kernels, _load_module, device_id, names, name)


def _xp(a):
    if _gpu.is_gpu_array(a):
        import cupy

        return cupy
    return np  # the emulator's NumPy stand-ins


def _host(a):
    return a.get() if _gpu.is_gpu_array(a) else np.asarray(a)


class BadLabel(ValueError):
    """A label outside [0, K) that is not ignore_index; ``row`` is its row."""

    def __init__(self, row: int, value: int, k: int, ignore_index):
        ign = "" if ignore_index is None else f" and is not ignore_index ({ignore_index})"
        super().__init__(f"{FNAME}: target has the label {value} at flat index {row}, "
                         f"which is outside [0, {k}) (the number of classes){ign}")
        self.row = row


def run(x, labels, target, weight, mask, eps: float, ignore_index, reduction: str, grad=None):
    """The loss of C-contiguous (N, K) logits ``x`` (float16/32/64).

    labels: int64 (N,) or None; target: soft labels like ``x``, or None;
    weight: (K,) in the accumulator dtype (float32, float64 for float64) or
    None; mask: uint8 (K,) or (N, K) with unit column stride, or None;
    grad: a C-contiguous (N, K) array of x's dtype to write the gradient
    into, or None. Returns (per-row losses, float64 (N,); the reduced loss,
    a float64 0-d array, or None for "none"). Raises BadLabel (nothing
    launched but the label check) for a label out of range. N, K >= 1.
    """
    n, k = x.shape
    soft = target is not None
    xp = _xp(x)
    _gpu.check_same_device((("logits", x), ("target", labels if labels is not None else target),
                            ("weight", weight), ("where", mask), ("grad_out", grad)), FNAME)
    device = _gpu._device_of(x)
    props = _gpu._device_properties(device.id)
    c = constants()
    null = _gpu.NULL
    has_ignore = ignore_index is not None
    ign = np.int64(ignore_index if has_ignore else 0)
    arrays = [a for a in (x, target, grad) if a is not None]
    aligned = all(_gpu._data_ptr(a) % _gpu._VECTOR_BYTES == 0 for a in arrays)
    launch = plan(n, k, x.dtype, soft, aligned, props)
    group = module_names(x.dtype, launch.kernel)
    with device:
        W, wsum = float(n), float(k)
        if not soft:
            res = xp.empty(3, dtype=np.float64)
            kern = _kernel(device.id, group, _labels_kernel(x.dtype))
            kern((1,), (c["CSM_XENT_REDUCE_THREADS"],),
                 (labels, null if weight is None else weight, np.int64(n), np.int32(k), np.int32(has_ignore), ign,
                  res), shared_mem=c["CSM_SCRATCH"] * 8)
            W, bad, wsum = (float(v) for v in _host(res))
            if bad != math.inf:
                row = int(bad)
                raise BadLabel(row, int(_host(labels[row:row + 1])[0]), k, ignore_index)
        # W == 0 (every label ignored, or zero weights): 1 / 0 = inf, as torch's
        # grad_output / total_weight and the CPU kernel's.
        scale = (math.inf if W == 0 else 1.0 / W) if reduction == "mean" else 1.0
        mask_ptr, ldm = _gpu.mask_args(mask, n, k)
        loss = xp.empty(n, dtype=np.float64)
        args = (x, null if target is None else target, null if labels is None else labels,
                null if weight is None else weight, mask_ptr, ldm, null if grad is None else grad, loss,
                np.int64(n), np.int32(k), np.float64(eps), np.float64(scale), np.float64(wsum),
                np.int32(has_ignore), ign)
        if launch.width:
            args += (np.int32(launch.width),)
        kernel = _kernel(device.id, group, launch.kernel)
        if launch.shared_mem > props["sharedMemPerBlock"]:
            key = (device.id, launch.kernel)
            if _raised_smem.get(key, 0) < launch.shared_mem:
                kernel.max_dynamic_shared_size_bytes = launch.shared_mem
                _raised_smem[key] = launch.shared_mem
        kernel((launch.grid,), (launch.block,), args, shared_mem=launch.shared_mem)
        if reduction == "none":
            return loss, None
        total = xp.empty((), dtype=np.float64)
        divisor = W if reduction == "mean" else 1.0
        _kernel(device.id, group, _TOTAL)((1,), (c["CSM_XENT_REDUCE_THREADS"],),
                                          (loss, total, np.int64(n), np.float64(divisor)),
                                          shared_mem=c["CSM_SCRATCH"] * 8)
        return loss, total


# ---------------------------------------------------------------- the public door


def _span(a):
    """[low, high) byte range a CuPy array (or view) covers."""
    ptr = _gpu._data_ptr(a)
    lo = hi = ptr
    for n, s in zip(a.shape, a.strides):
        if n == 0:
            return ptr, ptr
        if s >= 0:
            hi += s * (n - 1)
        else:
            lo += s * (n - 1)
    return lo, hi + a.itemsize


def _overlap(a, b) -> bool:
    (alo, ahi), (blo, bhi) = _span(a), _span(b)
    return alo < bhi and blo < ahi and alo < ahi and blo < bhi


def _check_out(arr, name, shape, dtype):
    from . import _loss_semantics as sem

    if not _gpu.is_gpu_array(arr):
        raise TypeError(sem._err(f"{name} must be a CuPy array (the logits are), not {type(arr).__name__}"))
    if arr.shape != tuple(shape):
        raise ValueError(sem._err(f"{name} has shape {arr.shape}, expected {tuple(shape)}"))
    if arr.dtype != dtype:
        raise ValueError(sem._err(f"{name} has dtype {arr.dtype}, expected {dtype}"))


def softmax_cross_entropy(logits, target, axis, label_smoothing, ignore_index, weight, reduction,
                          return_grad, where, dtype, out, grad_out, num_threads):
    """softmax_cross_entropy on CuPy arrays (see _loss_semantics for the CPU
    twin and every message). logits, target, weight, where, out and grad_out
    must all be CuPy arrays (or None) on one device; the call runs under it."""
    from . import _loss_semantics as sem

    named = (("logits", logits), ("target", target), ("weight", weight), ("where", where), ("out", out),
             ("grad_out", grad_out))
    host = [name for name, a in named if a is not None and not _gpu.is_gpu_array(a)]
    if host:
        raise TypeError(sem._err(f"{', '.join(host)}: expected CuPy arrays, as the other array "
                                 "arguments are, not a mix of CuPy and host arrays"))
    with _gpu.device_scope(named, FNAME):
        return _here(sem, logits, target, axis, label_smoothing, ignore_index, weight, reduction,
                     return_grad, where, dtype, out, grad_out, num_threads)


def _here(sem, logits, target, axis, label_smoothing, ignore_index, weight, reduction, return_grad,
          where, dtype, out, grad_out, num_threads):
    import cupy as xp

    from . import _semantics

    _semantics._threads(num_threads, FNAME)  # checked; the GPU has no use for it
    if logits.ndim == 0:
        raise ValueError(sem._err("logits must have at least one dimension (the classes)"))
    rdtype = sem._result_dtype(logits, dtype)
    # float16 runs in its own kernels (accumulating in float); bfloat16 in float32.
    cdtype = rdtype if rdtype in _gpu.NATIVE_DTYPES else np.dtype(np.float32)
    ax = _semantics._axes(axis, logits.ndim, FNAME, single=True)[0]
    shape = logits.shape
    k = shape[ax]
    batch_shape = shape[:ax] + shape[ax + 1:]
    n = math.prod(batch_shape)
    if where is not None:
        if where.dtype != np.bool_:
            raise TypeError(sem._err(f"where must be a CuPy array of dtype bool, not dtype {where.dtype}"))
        try:
            full = np.broadcast_shapes(where.shape, shape)
        except ValueError:
            full = None
        if full != shape:
            raise ValueError(sem._err(f"where has shape {where.shape}, which does not broadcast "
                                      f"to the logits' shape {shape}"))
        where = xp.broadcast_to(where, shape)
    eps = sem._label_smoothing(label_smoothing)
    ignore = sem._ignore_index(ignore_index)
    reduction = sem._reduction(reduction)
    if not isinstance(return_grad, (bool, np.bool_)):
        raise TypeError(sem._err(f"return_grad must be a bool, not {type(return_grad).__name__}"))
    want_grad = bool(return_grad)
    if target.dtype.kind in "iu":
        soft = False
        if target.shape != batch_shape:
            raise ValueError(sem._err(f"target has shape {target.shape}; integer labels must have "
                                      f"the logits' shape without axis {ax}, {batch_shape}"))
    elif target.dtype.kind == "f":
        soft = True
        if target.shape != shape:
            raise ValueError(sem._err(f"target has shape {target.shape}; class probabilities must "
                                      f"have the logits' shape {shape}"))
        if ignore is not None:
            raise ValueError(sem._err("ignore_index applies to integer labels only; target holds "
                                      "class probabilities"))
    else:
        raise TypeError(sem._err(f"target has dtype {target.dtype}; expected integer class labels "
                                 "or floating point class probabilities"))
    acc = _ACC[cdtype]
    if weight is not None:
        if weight.dtype.kind not in "iuf":
            raise TypeError(sem._err(f"weight has dtype {weight.dtype}; expected real numbers"))
        if weight.shape != (k,):
            raise ValueError(sem._err(f"weight has shape {weight.shape}, expected ({k},) "
                                      "(one weight per class)"))
        weight = xp.ascontiguousarray(weight, dtype=acc)
        if k and not bool((weight >= 0).all()):  # one reduction, one sync
            raise ValueError(sem._err("weight must be non-negative (and not NaN)"))
    if out is not None:
        if reduction != "none":
            raise ValueError(sem._err(f"out is for reduction='none' (the per-row losses); "
                                      f"reduction={reduction!r} returns a scalar"))
        _check_out(out, "out", batch_shape, rdtype)
    if grad_out is not None:
        if not want_grad:
            raise ValueError(sem._err("grad_out is given but return_grad is False"))
        _check_out(grad_out, "grad_out", shape, rdtype)
    if out is not None and grad_out is not None and _overlap(out, grad_out):
        raise ValueError(sem._err("out and grad_out share memory"))

    # ---- C-contiguous rows (N, K) in the compute dtype ------------------------------
    perm = tuple(d for d in range(len(shape)) if d != ax) + (ax,)

    def rows(a, dt):
        a = a if ax == len(shape) - 1 else a.transpose(perm)
        return xp.ascontiguousarray(a.reshape(n, k), dtype=dt)

    if n == 0 or k == 0:
        loss_rows, total = _degenerate(xp, target, soft, n, k, ignore, reduction)
        grad = xp.full((n, k), 0.0, dtype=cdtype) if want_grad else None
    else:
        x2 = rows(logits, cdtype)
        labels2 = None if soft else xp.ascontiguousarray(target.reshape(n), dtype=np.int64)
        target2 = rows(target, cdtype) if soft else None
        mask2 = rows(where, np.uint8) if where is not None else None
        grad = xp.empty((n, k), dtype=cdtype) if want_grad else None
        try:
            loss_rows, total = run(x2, labels2, target2, weight, mask2, eps, ignore, reduction, grad)
        except BadLabel as exc:
            raise ValueError(str(exc)) from None

    # ---- results: CuPy arrays of the result dtype -----------------------------------
    if reduction == "none":
        loss = loss_rows.reshape(batch_shape)
        if out is not None:
            out[...] = loss
            loss = out
        else:
            loss = loss.astype(rdtype)
    else:
        loss = total.astype(rdtype)  # a 0-d CuPy array, as cupy.sum gives
    if not want_grad:
        return loss
    g = grad.reshape(batch_shape + (k,))
    if ax != len(shape) - 1:
        inverse = [0] * len(shape)
        for i, d in enumerate(perm):
            inverse[d] = i
        g = g.transpose(inverse)
    if grad_out is not None:
        grad_out[...] = g
        g = grad_out
    elif g.dtype != rdtype:
        g = g.astype(rdtype)
    return loss, g


def _degenerate(xp, target, soft, n, k, ignore, reduction):
    """No row or no class: losses 0 (soft labels over no class, an empty
    sum); integer labels with K = 0 are all out of range unless ignored; the
    mean of no counted row is 0 / 0 = NaN, as torch's."""
    W = float(n) if soft else 0.0
    if not soft and n:
        flat = target.reshape(-1).get()
        bad = (flat < 0) | (flat >= k)
        if ignore is not None:
            bad &= flat != ignore
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(str(BadLabel(i, int(flat[i]), k, ignore)))
        W = 0.0  # K = 0: every label was ignore_index
    loss_rows = xp.full((n,), 0.0, dtype=np.float64)
    if reduction == "none":
        return loss_rows, None
    value = (math.nan if W == 0 else 0.0) if reduction == "mean" else 0.0
    return loss_rows, xp.full((), value, dtype=np.float64)
