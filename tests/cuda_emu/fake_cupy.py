"""A CuPy stand-in over the emulator, with several fake devices.

``FakeCuPy(props_per_device)`` is a module-like object that csoftmax imports
as ``cupy`` (tests put it in ``sys.modules``): its ``ndarray`` is a NumPy
subclass whose type lives in module "cupy", so csoftmax's public functions
take the GPU path, and its ``RawModule`` builds the emulated kernels of the
unchanged .cu text. Each array belongs to one device. Like CuPy, new arrays go
to the current device; unlike CuPy, which checks only some operations, every
operation here requires the arrays it touches to be on the current device,
and the kernel lookup, the shared memory opt-in and the launch require the
module's own device to be current. A violation raises ``WrongDevice`` and is
recorded in ``violations``; ``calls`` records (what, current device) for
every operation, so a test can see where each happened.
"""
from __future__ import annotations

import hashlib
import json
import sys
import types

import numpy as np

from .module import EmuModule


class WrongDevice(RuntimeError):
    """An operation touched an array (or a module) of a device that is not current."""


class _State:
    def __init__(self):
        self.current = 0
        self.calls = []
        self.violations = []


_state = _State()


def _need(device_id, what):
    _state.calls.append((what, _state.current))
    if device_id != _state.current:
        msg = f"{what}: on device {device_id} while device {_state.current} is current"
        _state.violations.append(msg)
        raise WrongDevice(msg)


class Device:
    """cupy.cuda.Device: an id and a context that makes it current."""

    def __init__(self, device_id=None):
        self.id = _state.current if device_id is None else int(device_id)
        self._saved = []

    def __enter__(self):
        self._saved.append(_state.current)
        _state.current = self.id
        return self

    def __exit__(self, *exc):
        _state.current = self._saved.pop()
        return False

    def use(self):
        _state.current = self.id

    def __eq__(self, other):
        return isinstance(other, Device) and other.id == self.id

    def __hash__(self):
        return hash(self.id)

    def __repr__(self):
        return f"<CUDA Device {self.id}>"


class ndarray(np.ndarray):
    """A device array: NumPy memory, a device id, CuPy's type module."""

    def __array_finalize__(self, obj):
        if isinstance(obj, ndarray):
            # views, copies and conversions of a device array
            _need(obj._device_id, "array operation")
        self._device_id = _state.current

    @property
    def device(self):
        return Device(self._device_id)

    @property
    def data(self):
        return types.SimpleNamespace(ptr=self.__array_interface__["data"][0])

    def __setitem__(self, key, value):
        _need(self._device_id, "setitem")
        if isinstance(value, ndarray):
            _need(value._device_id, "setitem source")
        np.ndarray.__setitem__(self, key, value)

    def get(self):
        return np.array(self.view(np.ndarray))


ndarray.__module__ = "cupy._core.core"


def _wrap(host, device_id=None):
    arr = np.asarray(host).view(ndarray)
    arr._device_id = _state.current if device_id is None else device_id
    return arr


class _Function:
    """What RawModule.get_function returns: the emulated kernel, tied to the module's device."""

    def __init__(self, kernel, device_id):
        self._kernel = kernel
        self._device_id = device_id

    @property
    def max_dynamic_shared_size_bytes(self):
        return self._kernel.max_dynamic_shared_size_bytes

    @max_dynamic_shared_size_bytes.setter
    def max_dynamic_shared_size_bytes(self, value):
        _need(self._device_id, "kernel attribute")
        self._kernel.max_dynamic_shared_size_bytes = value

    def __call__(self, grid, block, args, *, shared_mem=0, stream=None):
        _need(self._device_id, "launch")
        for arg in args:
            if isinstance(arg, ndarray):
                _need(arg._device_id, "launch argument")
        self._kernel(grid, block, [a.view(np.ndarray) if isinstance(a, ndarray) else a for a in args],
                     shared_mem=shared_mem)


class FakeCuPy(types.ModuleType):
    """The ``cupy`` module, as far as csoftmax uses it."""

    def __init__(self, props_per_device):
        super().__init__("cupy")
        self.__version__ = "99.0.0-emulated"
        self.ndarray = ndarray
        self._props = list(props_per_device)
        self.modules = []  # (device id, name expressions) of every RawModule built from code
        self.file_loads = []  # (device id, path) of every RawModule loaded from a file
        fake = self

        class _Runtime:
            @staticmethod
            def getDeviceCount():
                return len(fake._props)

            @staticmethod
            def getDevice():
                return _state.current

            @staticmethod
            def getDeviceProperties(device_id):
                return dict(fake._props[device_id])

        self.cuda = types.SimpleNamespace(Device=Device, runtime=_Runtime())

    # state
    @staticmethod
    def reset():
        _state.current = 0
        _state.calls.clear()
        _state.violations.clear()

    @property
    def calls(self):
        return _state.calls

    @property
    def violations(self):
        return _state.violations

    # allocation and conversion: on the current device
    def asarray(self, a, dtype=None):
        if isinstance(a, ndarray):
            _need(a._device_id, "asarray")
            return a if dtype is None or a.dtype == dtype else a.astype(dtype)
        _state.calls.append(("asarray from host", _state.current))
        return _wrap(np.array(a, dtype=dtype))

    def ascontiguousarray(self, a, dtype=None):
        _need(a._device_id, "ascontiguousarray")
        return _wrap(np.ascontiguousarray(a.view(np.ndarray), dtype=dtype))

    def broadcast_to(self, a, shape):
        # a view on a's device, as CuPy's
        _need(a._device_id, "broadcast_to")
        return _wrap(np.broadcast_to(a.view(np.ndarray), shape), a._device_id)

    def empty(self, shape, dtype=np.float64, order="C"):
        _state.calls.append(("empty", _state.current))
        return _wrap(np.empty(shape, dtype=dtype, order=order))

    def full(self, shape, value, dtype=None):
        _state.calls.append(("full", _state.current))
        return _wrap(np.full(shape, value, dtype=dtype))

    def RawModule(self, code=None, options=(), name_expressions=(), path=None):
        # The emulated library holds every kernel (one g++ build, shared by
        # all modules); a module hands out only the kernels it was built with.
        from csoftmax import _gpu, _gpu_loss

        device_id = _state.current
        if path is not None:
            return self._file_module(path, device_id)
        names = tuple(name_expressions)
        if code == _gpu_loss.source():  # softmax.cu + cross_entropy.cu: the loss kernels
            module = EmuModule(code, _gpu_loss.name_expressions(), self._props[device_id], tag="xent")
        else:
            module = EmuModule(code, _gpu.name_expressions(), self._props[device_id])
        self.modules.append((device_id, names))

        def get_function(name):
            _need(device_id, "get_function")
            if name not in names:
                raise KeyError(f"{name} is not among this module's name expressions")
            return _Function(module.get_function(name), device_id)

        return types.SimpleNamespace(get_function=get_function)

    # ---- cubin files (csoftmax/_gpu_cache.py) ------------------------------

    def _file_module(self, path, device_id):
        """``RawModule(path=...)``: a cubin of FakeNVRTC runs on the emulator,
        its kernels looked up by lowered name; a real cubin (NVRTC's ELF)
        only hands out the names its symbol table holds, and refuses to run."""
        with open(path, "rb") as f:
            data = f.read()
        self.file_loads.append((device_id, path))
        if data.startswith(FakeNVRTC.MAGIC):
            payload = json.loads(data[len(FakeNVRTC.MAGIC):])
            from csoftmax import _gpu, _gpu_loss

            by_lowered = {low: name for name, low in payload["lowered"].items()}
            if payload["source"] == _gpu_loss.source():  # the loss kernels
                module = EmuModule(payload["source"], _gpu_loss.name_expressions(), self._props[device_id],
                                   tag="xent")
            else:
                module = EmuModule(payload["source"], _gpu.name_expressions(), self._props[device_id])

            def get_function(lowered):
                _need(device_id, "get_function")
                return _Function(module.get_function(by_lowered[lowered]), device_id)

        elif data.startswith(b"\x7fELF"):

            def get_function(lowered):
                _need(device_id, "get_function")
                if lowered.encode() not in data:
                    raise KeyError(f"{lowered} is not in {path}")
                return _RealCubinKernel(lowered)

        else:
            raise ValueError(f"{path}: not a cubin (CUDA_ERROR_INVALID_IMAGE)")
        return types.SimpleNamespace(get_function=get_function)


class _RealCubinKernel:
    """A kernel of a real cubin: the stand-in can find it, not run it."""

    max_dynamic_shared_size_bytes = 0

    def __init__(self, name):
        self.name = name

    def __call__(self, *args, **kwargs):
        raise RuntimeError(f"{self.name}: a real cubin cannot run on the CPU emulator")


class FakeNVRTC:
    """A stand-in for CuPy's NVRTC binding (csoftmax._gpu_cache.compiler()):
    counts compilations and emits a "cubin" that FakeCuPy.RawModule(path=)
    runs on the emulator. ``archs``: the architectures it can target."""

    MAGIC = b"CSM-EMULATED-CUBIN\n"

    def __init__(self, version=(99, 0), archs=(75, 80, 86, 89, 90, 100)):
        self._version = tuple(version)
        self.archs = tuple(archs)
        self.compiled = []  # (names, options) of every compilation

    def version(self):
        return self._version

    def supports(self, arch):
        return arch in self.archs

    def compile(self, source, names, options):
        names = tuple(names)
        self.compiled.append((names, tuple(options)))
        lowered = {n: "_Z_emu_" + hashlib.sha256(n.encode()).hexdigest()[:16] for n in names}
        payload = {"source": source, "options": list(options), "lowered": lowered}
        return self.MAGIC + json.dumps(payload).encode(), lowered


def installed(monkeypatch, props_per_device, nvrtc=None):
    """A pytest fixture's body: ``yield from installed(monkeypatch, props)``.

    Puts a FakeCuPy over ``props_per_device`` in ``sys.modules`` as ``cupy``
    and gives csoftmax's GPU backend empty caches (device properties, modules,
    kernels, shared-memory opt-ins, plans) for the test, as in a new process;
    ``nvrtc`` replaces the stand-in's compiler when given. Yields the fake."""
    from csoftmax import _gpu, _gpu_loss

    fake = FakeCuPy(props_per_device)
    fake.reset()
    if nvrtc is not None:
        fake.nvrtc = nvrtc
    monkeypatch.setitem(sys.modules, "cupy", fake)

    def clear_caches():
        _gpu._device_properties.cache_clear()
        _gpu._load_module.cache_clear()
        _gpu_loss._load_module.cache_clear()

    clear_caches()
    for module in (_gpu, _gpu_loss):
        monkeypatch.setattr(module, "_kernels", {})
        monkeypatch.setattr(module, "_raised_smem", {})
    monkeypatch.setattr(_gpu, "_plans", {})
    yield fake
    clear_caches()
    fake.reset()
