"""CPU emulation of csoftmax's CUDA kernels, for tests on machines without a GPU.

``install(monkeypatch, props)`` puts an emulated module behind the seams of
``csoftmax._gpu`` so that its unchanged planning and launch code drives the
unchanged ``.cu`` text compiled with g++ (see build.py and emu_runtime.h).
"""
from __future__ import annotations

import numpy as np

from .module import EmuError, EmuKernel, EmuModule

__all__ = ["EmuError", "EmuKernel", "EmuModule", "FakeDevice", "install", "guarded", "check_guards"]


class FakeDevice:
    """Stands in for cupy.cuda.Device: an id and a no-op context."""

    id = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def install(monkeypatch, module, props):
    """Route csoftmax._gpu's launches to ``module`` on a device with ``props``."""
    from csoftmax import _gpu

    monkeypatch.setattr(_gpu, "_device_of", lambda a: FakeDevice())
    monkeypatch.setattr(_gpu, "_device_properties", lambda device_id: props)
    monkeypatch.setattr(_gpu, "_load_module", lambda device_id, group: module)
    monkeypatch.setattr(_gpu, "_raised_smem", {})
    monkeypatch.setattr(_gpu, "_kernels", {})
    monkeypatch.setattr(_gpu, "_plans", {})


# Guard zones: 64 bytes on each side keep the view 16-byte aligned.
GUARD_BYTES = 64


def guarded(shape, dtype, fill, misalign=0, pad=0):
    """(buffer, view): a view of ``shape`` inside a buffer with guard zones,
    the buffer filled with ``fill``. ``misalign`` elements shift the view off
    16-byte alignment, to force the kernels' scalar path; ``pad`` elements
    after each row of a 2-D view give it a row stride of K + pad (a row-sliced
    view, x[:, :K] of a wider array), the gaps filled with ``fill`` too."""
    dtype = np.dtype(dtype)
    if pad:
        n, k = shape
        size = n * (k + pad)
    else:
        size = int(np.prod(shape))
    guard = GUARD_BYTES // dtype.itemsize
    raw = np.empty((size + 2 * guard + misalign) * dtype.itemsize + 64, np.uint8)
    start = (-raw.ctypes.data) % 64
    buffer = raw[start:start + (size + 2 * guard + misalign) * dtype.itemsize].view(dtype)
    buffer[...] = fill
    flat = buffer[guard + misalign:guard + misalign + size]
    view = flat.reshape(n, k + pad)[:, :k] if pad else flat.reshape(shape)
    return buffer, view


def check_guards(buffer, view, fill):
    """Assert that nothing outside ``view`` (any strides) changed in ``buffer``."""
    start = (view.__array_interface__["data"][0] - buffer.__array_interface__["data"][0]) // buffer.itemsize
    inside = np.zeros(buffer.shape, bool)
    np.lib.stride_tricks.as_strided(inside[start:], shape=view.shape,
                                    strides=tuple(s // buffer.itemsize for s in view.strides))[...] = True
    outside = buffer[~inside]
    expected = np.full_like(outside, fill)
    same = (outside == expected) | (np.isnan(outside) & np.isnan(expected))
    if not same.all():
        first = int(np.flatnonzero(~inside)[np.argwhere(~same)[0][0]])
        raise AssertionError(f"write outside the output at buffer index {first} "
                             f"(the view starts at {start}, strides {view.strides})")
