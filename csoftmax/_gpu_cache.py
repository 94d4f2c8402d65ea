"""The disk cache of compiled CUDA kernel groups.

``csoftmax._gpu`` builds one module per device and (operation, dtype) group
of template kernels, selected by name expressions. CuPy (up to 14.1 at
least) keeps such modules in memory only, so every new process compiled its
groups again with NVRTC: about 1 s per group (README, GPU). This module
compiles a group as CuPy would -- CuPy's own NVRTC binding, CuPy's flags --
and keeps the cubin and the lowered (mangled) kernel names on disk. A later
process loads the cubin with ``cupy.RawModule(path=...)`` and looks its
kernels up by their lowered names: no compiler runs.

An entry is two files named by one key, the SHA-256 of everything that
decides the machine code: this cache's format, the source text, the compile
options, the target architecture (sm_XY), the NVRTC version and the name
expressions. ``<key>.cubin`` holds the code; ``<key>.json`` (written last,
each file by an atomic rename) the lowered names and the cubin's SHA-256,
which every load checks, so a torn or corrupt entry is a miss.

The directory is ``$CSOFTMAX_CACHE_DIR`` when that is set (empty: no disk
cache), else ``$XDG_CACHE_HOME/csoftmax/cuda``, else
``~/.cache/csoftmax/cuda``. Nothing here raises: an unusable NVRTC binding,
an architecture NVRTC cannot target (CuPy then compiles PTX), a cache that
cannot be read or written, a corrupt entry -- each falls back to compiling,
in the worst case through ``cupy.RawModule(code=...)``, the path without a
disk cache.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile

# Bumped when the entry layout or its meaning changes: old entries then miss.
FORMAT = 1
ENV = "CSOFTMAX_CACHE_DIR"
# What CuPy adds to a RawModule's options when it compiles with NVRTC
# (cupy/cuda/compiler.py: -ftz=true always, --device-as-default-execution-space
# with NVRTC 12 and newer), so a cached cubin is the code CuPy itself would
# build. tests/cuda_emu/nvrtc.py compiles with the same flags.
CUPY_FLAGS = ("-ftz=true", "--device-as-default-execution-space")


def cache_dir():
    """The directory of the entries, or None when the disk cache is off."""
    configured = os.environ.get(ENV)
    if configured is not None:
        return os.path.abspath(os.path.expanduser(configured)) if configured.strip() else None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "csoftmax", "cuda")


class _CuPyNVRTC:
    """CuPy's own NVRTC binding (cupy_backends.cuda.libs.nvrtc): the
    compiler CuPy would run, from whatever NVRTC library CuPy loads."""

    def __init__(self):
        from cupy_backends.cuda.libs import nvrtc

        self._nvrtc = nvrtc
        # CuPy renamed the misspelt addAddNameExpression in v9.
        self._add_name = getattr(nvrtc, "addNameExpression", None) or nvrtc.addAddNameExpression

    def version(self) -> tuple:
        return tuple(self._nvrtc.getVersion())

    def supports(self, arch: int) -> bool:
        archs = getattr(self._nvrtc, "getSupportedArchs", None)  # NVRTC >= 11.2
        return archs is None or arch in tuple(archs())

    def compile(self, source: str, names, options) -> tuple:
        nvrtc = self._nvrtc
        prog = nvrtc.createProgram(source, "softmax.cu", (), ())
        try:
            for name in names:
                self._add_name(prog, name)
            nvrtc.compileProgram(prog, list(options))
            cubin = bytes(nvrtc.getCUBIN(prog))
            lowered = {name: nvrtc.getLoweredName(prog, name) for name in names}
        finally:
            nvrtc.destroyProgram(prog)
        return cubin, lowered


@functools.lru_cache(maxsize=1)
def _cupy_nvrtc():
    return _CuPyNVRTC()


def compiler():
    """The NVRTC front end (version, supports, compile); raises when CuPy's
    binding is missing. A seam: the tests put the cuda-bindings NVRTC or a
    counting stand-in here."""
    return _cupy_nvrtc()


def key(source: str, options, arch: int, nvrtc_version, names) -> str:
    """The entry name: SHA-256 of everything that decides the cubin."""
    h = hashlib.sha256()
    for part in (f"csoftmax-cuda-cache {FORMAT}", source, "\0".join(options), f"sm_{arch}",
                 ".".join(map(str, nvrtc_version)), "\0".join(names)):
        h.update(part.encode())
        h.update(b"\x1f")
    return h.hexdigest()


def _read(directory: str, name: str, names) -> tuple | None:
    """(cubin path, lowered names) of a sound entry, or None."""
    try:
        with open(os.path.join(directory, name + ".json"), encoding="utf-8") as f:
            meta = json.load(f)
        path = os.path.join(directory, name + ".cubin")
        with open(path, "rb") as f:
            cubin = f.read()
        lowered = meta["lowered"]
        if (meta.get("format") != FORMAT or hashlib.sha256(cubin).hexdigest() != meta["cubin_sha256"]
                or not all(isinstance(lowered.get(n), str) for n in names)):
            return None
        return path, {n: lowered[n] for n in names}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _write_atomically(path: str, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _store(directory: str, name: str, cubin: bytes, lowered: dict) -> str:
    """Write an entry (cubin first, the metadata that vouches for it last);
    returns the cubin's path. Raises OSError when the directory is unusable."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, name + ".cubin")
    _write_atomically(path, cubin)
    meta = {"format": FORMAT, "cubin_sha256": hashlib.sha256(cubin).hexdigest(), "lowered": lowered}
    _write_atomically(os.path.join(directory, name + ".json"), json.dumps(meta, indent=1).encode())
    return path


class CachedModule:
    """A module loaded from a cubin: kernels by name expression, as
    ``cupy.RawModule(code=..., name_expressions=...)`` hands them out."""

    def __init__(self, module, lowered: dict, path: str):
        self.module = module
        self.lowered = lowered
        self.path = path

    def get_function(self, name: str):
        return self.module.get_function(self.lowered[name])


def _load(cupy, path: str, lowered: dict) -> CachedModule:
    module = CachedModule(cupy.RawModule(path=path), lowered, path)
    # CuPy loads a file module on its first lookup: do one now, so that a
    # cubin the driver refuses is a miss here, not an error at launch.
    module.get_function(next(iter(lowered)))
    return module


def load_module(cupy, source: str, options, names, arch):
    """A module of the kernels ``names`` for sm_``arch`` (None: unknown), on
    the current device: from the disk cache, else compiled (and stored), else -- when
    that cannot be done -- ``cupy.RawModule(code=...)``."""
    names = tuple(names)
    try:
        if arch is None:
            raise LookupError("the device's compute capability is unknown")
        if getattr(getattr(getattr(cupy, "cuda", None), "runtime", None), "is_hip", False) is True:
            raise LookupError("ROCm: hiprtc makes no cubin")
        nvrtc = compiler()
        if not nvrtc.supports(arch):
            raise LookupError(f"NVRTC cannot target sm_{arch}")
        full = (f"-arch=sm_{arch}",) + CUPY_FLAGS + tuple(options)
        name = key(source, full, arch, nvrtc.version(), names)
    except Exception:  # noqa: BLE001 -- no usable binding: CuPy's own path
        return cupy.RawModule(code=source, options=tuple(options), name_expressions=names)

    directory = cache_dir()
    if directory is not None:
        hit = _read(directory, name, names)
        if hit is not None:
            try:
                return _load(cupy, *hit)
            except Exception:  # noqa: BLE001 -- a cubin the driver refuses: recompile
                pass
    try:
        cubin, lowered = nvrtc.compile(source, names, full)
    except Exception:  # noqa: BLE001 -- CuPy compiles again and reports the error its way
        return cupy.RawModule(code=source, options=tuple(options), name_expressions=names)
    if directory is not None:
        try:
            return _load(cupy, _store(directory, name, cubin, lowered), lowered)
        except Exception:  # noqa: BLE001 -- an unwritable cache: load from a private copy
            pass
    with tempfile.TemporaryDirectory(prefix="csoftmax-cubin-") as tmp:
        path = os.path.join(tmp, "module.cubin")
        with open(path, "wb") as f:
            f.write(cubin)
        try:
            return _load(cupy, path, lowered)
        except Exception:  # noqa: BLE001
            return cupy.RawModule(code=source, options=tuple(options), name_expressions=names)
