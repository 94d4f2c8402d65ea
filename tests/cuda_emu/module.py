"""Stand-ins for cupy.RawModule and cupy.RawKernel that run the emulated kernels.

NumPy arrays stand in for CuPy arrays. A call checks what CUDA or CuPy would
check or silently get wrong: the argument types against the kernel signature
(a Python int is passed as long long, as CuPy does), dynamic shared memory
above 48 KiB without the opt-in attribute, and the launch shape.
"""
from __future__ import annotations

import ctypes
import os

import numpy as np

from .build import C_TYPES, build

# libgomp reads its wait policy once, when it starts: passive waiting (sleep
# at barriers) is what makes hundreds of threads on two cores affordable.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")


# The one optional output of any kernel: the gradient (argument 6) of the
# cross-entropy's loss kernels (cuda/cross_entropy.cu), nullptr when the
# caller wants no gradient.
OPTIONAL_OUTPUT = ("csm_xent_", 6)


class EmuError(RuntimeError):
    """A launch that would fail, hang or race on a GPU."""


_libs: dict = {}


def _load(path):
    if path not in _libs:
        lib = ctypes.CDLL(str(path))
        lib.emu_name.restype = ctypes.c_char_p
        lib.emu_smem_capacity.restype = ctypes.c_longlong
        lib.emu_launch.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint, ctypes.c_ulonglong, ctypes.c_int,
                                   ctypes.POINTER(ctypes.c_void_p), ctypes.c_char_p, ctypes.c_int]
        _libs[path] = lib
    return _libs[path]


def _signature(lib, index):
    buf = ctypes.create_string_buffer(4096)
    lib.emu_signature(index, buf, len(buf))
    return buf.value.decode().split(",")


# Kernels that take a row stride argument for each array (lda, ldb, ldo in
# cuda/softmax.cu): their arrays may have any non-negative row stride with a
# unit column stride (1-D: a positive stride).
ROW_STRIDED = ("csm_rows_",)


def _row_strided(value) -> bool:
    s, item = value.strides, value.itemsize
    if value.ndim == 1:
        return value.shape[0] <= 1 or (s[0] > 0 and s[0] % item == 0)
    return (value.ndim == 2 and (value.shape[1] <= 1 or s[1] == item)
            and (value.shape[0] <= 1 or (s[0] >= 0 and s[0] % item == 0)))


def _argument(value, row_strided=False):
    """(C type the launch passes, ctypes storage) for one kernel argument, as
    CuPy packs it. ``row_strided``: the kernel takes a row stride per array."""
    if isinstance(value, np.ndarray):
        ctype = {v: k for k, v in C_TYPES.items()}.get(value.dtype.name)
        if ctype is None:
            raise EmuError(f"array of dtype {value.dtype} has no kernel element type")
        if (not value.flags.c_contiguous and not (ctype == "unsigned char" and value.strides[-1:] in ((), (1,)))
                and not (row_strided and _row_strided(value))):
            # RawKernel ignores strides; the exceptions are a mask, passed
            # with its own row stride argument and a unit column stride, and
            # the arrays of the row kernels, which take a row stride each.
            raise EmuError("RawKernel ignores strides: arrays must be C-contiguous "
                           "(the row kernels: unit column stride and a non-negative row stride)")
        return ctype + "*", ctypes.c_void_p(value.__array_interface__["data"][0]), value
    if isinstance(value, (bool, np.bool_)):
        raise EmuError("bool kernel arguments are not used by csoftmax")
    if isinstance(value, np.int32):
        return "int", ctypes.c_int32(int(value)), None
    if isinstance(value, np.uint32):
        return "unsigned int", ctypes.c_uint32(int(value)), None
    if isinstance(value, np.uint64):
        # CuPy packs the 8 bytes as they are: 0 is a null pointer, the only
        # use csoftmax has for a uint64 argument.
        if int(value) != 0:
            raise EmuError("a uint64 kernel argument is csoftmax's null pointer and must be 0")
        return "nullptr", ctypes.c_void_p(None), None
    if isinstance(value, (np.int64, int)):
        return "long long", ctypes.c_int64(int(value)), None
    if isinstance(value, np.float32):
        return "float", ctypes.c_float(float(value)), None
    if isinstance(value, (np.float64, float)):
        return "double", ctypes.c_double(float(value)), None
    raise EmuError(f"cannot pass {type(value).__name__} to a kernel")


def _accepts(param: str, passed: str, array, optional_out: bool = False) -> bool:
    if param.endswith("*"):
        if passed == "nullptr":
            # No output is optional, except the cross-entropy's gradient.
            return param.startswith("const ") or optional_out
        if not passed.endswith("*"):
            return False
        if not param.startswith("const ") and array is not None and not array.flags.writeable:
            return False
        return param.removeprefix("const ") == passed
    return param == passed


class EmuKernel:
    """What ``RawModule.get_function`` returns: callable as ``kernel(grid, block, args, shared_mem=)``."""

    def __init__(self, lib, index, name, props):
        self._lib = lib
        self._index = index
        self.name = name
        self.signature = _signature(lib, index)
        self.max_dynamic_shared_size_bytes = 0
        self._props = props
        self.launches = []  # (grid, block, shared_mem) of every launch, for the tests

    def _word(self):
        # The poison pattern's word: 8 bytes for kernels on double data (they
        # accumulate in double), else 4 (float, and float16 accumulating in float).
        return 8 if any(p.removeprefix("const ") == "double*" for p in self.signature) else 4

    def __call__(self, grid, block, args, *, shared_mem=0, stream=None):
        grid, block = tuple(grid), tuple(block)
        if len(grid) != 1 or len(block) != 1:
            raise EmuError(f"the emulator runs 1-D launches only, got grid={grid} block={block}")
        if len(args) != len(self.signature):
            raise EmuError(f"{self.name} takes {len(self.signature)} arguments, launch passes {len(args)}")
        storage, pointers = [], []
        for position, (param, value) in enumerate(zip(self.signature, args)):
            passed, cvalue, array = _argument(value, self.name.startswith(ROW_STRIDED))
            optional = self.name.startswith(OPTIONAL_OUTPUT[0]) and position == OPTIONAL_OUTPUT[1]
            if not _accepts(param, passed, array, optional):
                raise EmuError(f"{self.name} argument {position}: kernel takes {param}, launch passes {passed} "
                               f"({type(value).__name__})")
            storage.append(cvalue)
            pointers.append(ctypes.cast(ctypes.pointer(cvalue), ctypes.c_void_p))
        # Without opting in, a kernel gets sharedMemPerBlock (48 KiB on every
        # CUDA device) of dynamic shared memory.
        limit = max(self._props["sharedMemPerBlock"], self.max_dynamic_shared_size_bytes)
        if shared_mem > limit:
            raise EmuError(f"{self.name}: {shared_mem} bytes of dynamic shared memory without raising "
                           f"max_dynamic_shared_size_bytes (now {self.max_dynamic_shared_size_bytes})")
        optin = self._props["sharedMemPerBlockOptin"]
        if self.max_dynamic_shared_size_bytes > optin:
            raise EmuError(f"{self.name}: max_dynamic_shared_size_bytes {self.max_dynamic_shared_size_bytes} "
                           f"exceeds the device's {optin}")
        self.launches.append((grid[0], block[0], shared_mem))
        argv = (ctypes.c_void_p * max(1, len(pointers)))(*[p.value for p in pointers])
        err = ctypes.create_string_buffer(1024)
        rc = self._lib.emu_launch(self._index, grid[0], block[0], shared_mem, self._word(), argv, err, len(err))
        del storage
        if rc:
            raise EmuError(f"{self.name} grid={grid[0]} block={block[0]} shared_mem={shared_mem}: "
                           f"{err.value.decode()}")


class EmuModule:
    """What ``cupy.RawModule(code=..., name_expressions=...)`` gives, emulated."""

    def __init__(self, code: str, name_expressions, props: dict, tag: str = "kernels", extra: str = ""):
        self.name_expressions = list(name_expressions)
        self._lib = _load(build(code, self.name_expressions, tag, extra))
        self.lib = self._lib
        self._props = props
        self._kernels = {}
        count = self._lib.emu_count()
        if count != len(self.name_expressions):
            raise EmuError("emulator table and name expressions disagree")

    def get_function(self, name: str) -> EmuKernel:
        if name not in self._kernels:
            try:
                index = self.name_expressions.index(name)
            except ValueError:
                raise EmuError(f"{name!r} is not among the module's name expressions") from None
            self._kernels[name] = EmuKernel(self._lib, index, name, self._props)
        return self._kernels[name]
