"""The disk cache of compiled kernel groups (csoftmax/_gpu_cache.py).

A second process must load a group from disk without compiling; anything
that changes the machine code must miss; a corrupt, unreadable or
unwritable cache must fall back to compiling without an error. Most tests
drive ``_gpu_cache.load_module`` with a counting NVRTC stand-in
(tests/cuda_emu/fake_cupy.py FakeNVRTC) and a minimal CuPy whose
``RawModule(path=)`` accepts only that stand-in's cubins; the end-to-end
tests run the public functions through the CuPy stand-in over the emulator;
the NVRTC tests compile a real group with the pinned NVRTC (test-gpu extra).
"""
import json
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest

import csoftmax
from csoftmax import _gpu, _gpu_cache
from cuda_emu import devices, fake_cupy
from cuda_emu.fake_cupy import FakeCuPy, FakeNVRTC

NAMES = _gpu.group_names("softmax", np.float32)
ARCH = 90


class MiniCuPy:
    """Just ``RawModule``: code modules are recorded, file modules must be
    FakeNVRTC cubins (anything else is refused, as the driver would)."""

    def __init__(self, refuse_files=False):
        self.code_modules = []
        self.file_modules = []
        self.refuse_files = refuse_files

    def RawModule(self, code=None, options=(), name_expressions=(), path=None):
        if path is None:
            self.code_modules.append(tuple(name_expressions))
            return types.SimpleNamespace(get_function=lambda name: ("code", name))
        data = Path(path).read_bytes()
        if self.refuse_files or not data.startswith(FakeNVRTC.MAGIC):
            raise RuntimeError("CUDA_ERROR_INVALID_IMAGE")
        self.file_modules.append(path)
        lowered = set(json.loads(data[len(FakeNVRTC.MAGIC):])["lowered"].values())

        def get_function(name):
            if name not in lowered:
                raise KeyError(name)
            return ("file", name)

        return types.SimpleNamespace(get_function=get_function)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty cache directory and a counting NVRTC."""
    monkeypatch.setenv(_gpu_cache.ENV, str(tmp_path / "cache"))
    nvrtc = FakeNVRTC()
    monkeypatch.setattr(_gpu_cache, "compiler", lambda: nvrtc)
    return types.SimpleNamespace(dir=tmp_path / "cache", nvrtc=nvrtc)


def _load(cupy, source=None, options=_gpu._OPTIONS, names=NAMES, arch=ARCH):
    return _gpu_cache.load_module(cupy, _gpu.source() if source is None else source, options, names, arch)


def _entries(directory):
    return sorted(p.name for p in Path(directory).iterdir()) if Path(directory).exists() else []


def _check_module(module, names=NAMES):
    for name in names:
        kind, lowered = module.get_function(name)
        assert kind == "file" and lowered.startswith("_Z_emu_")


def test_a_cache_hit_loads_the_cubin_without_compiling(cache):
    cupy = MiniCuPy()
    _check_module(_load(cupy))
    assert len(cache.nvrtc.compiled) == 1
    files = _entries(cache.dir)
    assert len(files) == 2 and {Path(f).suffix for f in files} == {".cubin", ".json"}
    # a later process: same inputs, nothing compiled, the stored file loaded
    cupy2 = MiniCuPy()
    _check_module(_load(cupy2))
    assert len(cache.nvrtc.compiled) == 1
    assert cupy2.file_modules == [str(cache.dir / next(f for f in files if f.endswith(".cubin")))]
    assert not cupy2.code_modules
    # the options are CuPy's: -arch, -ftz=true, default device execution space, then ours
    assert cache.nvrtc.compiled[0][1] == (f"-arch=sm_{ARCH}",) + _gpu_cache.CUPY_FLAGS + _gpu._OPTIONS


CHANGES = {
    "source": dict(source=_gpu.source() + "\n// changed\n"),
    "options": dict(options=_gpu._OPTIONS + ("-DCSM_CHANGED=1",)),
    "arch": dict(arch=80),
    "names": dict(names=NAMES[:-1]),
}


@pytest.mark.parametrize("change", [*CHANGES, "nvrtc version"])
def test_a_change_of_anything_that_decides_the_code_misses(cache, change):
    _load(MiniCuPy())
    if change == "nvrtc version":
        cache.nvrtc._version = (99, 1)
        kw = {}
    else:
        kw = CHANGES[change]
    cupy = MiniCuPy()
    module = _load(cupy, **kw)
    _check_module(module, kw.get("names", NAMES))
    assert len(cache.nvrtc.compiled) == 2
    assert len(_entries(cache.dir)) == 4  # a second entry beside the first
    # and the first is still there, a hit
    _load(MiniCuPy())
    assert len(cache.nvrtc.compiled) == 2


def _corrupt(directory, how):
    (cubin,) = Path(directory).glob("*.cubin")
    (meta,) = Path(directory).glob("*.json")
    data = cubin.read_bytes()
    if how == "truncated cubin":
        cubin.write_bytes(data[: len(data) // 2])
    elif how == "flipped byte in cubin":
        cubin.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    elif how == "empty metadata":
        meta.write_bytes(b"")
    elif how == "metadata not json":
        meta.write_bytes(b"\x00\xffnot json")
    elif how == "metadata of another shape":
        meta.write_text(json.dumps([1, 2, 3]))
    elif how == "a name missing":
        m = json.loads(meta.read_text())
        del m["lowered"][NAMES[0]]
        meta.write_text(json.dumps(m))
    elif how == "old format":
        m = json.loads(meta.read_text())
        m["format"] = 0
        meta.write_text(json.dumps(m))
    elif how == "cubin deleted":
        cubin.unlink()
    elif how == "metadata deleted":
        meta.unlink()
    elif how == "cubin the driver refuses":
        # sound by its checksum, refused by the loader
        bad = b"\x7fELF not a cubin for this device"
        m = json.loads(meta.read_text())
        m["cubin_sha256"] = __import__("hashlib").sha256(bad).hexdigest()
        cubin.write_bytes(bad)
        meta.write_text(json.dumps(m))
    else:
        raise AssertionError(how)


CORRUPTIONS = ("truncated cubin", "flipped byte in cubin", "empty metadata", "metadata not json",
               "metadata of another shape", "a name missing", "old format", "cubin deleted",
               "metadata deleted", "cubin the driver refuses")


@pytest.mark.parametrize("how", CORRUPTIONS)
def test_a_corrupt_entry_is_compiled_again_without_an_error(cache, how):
    _load(MiniCuPy())
    _corrupt(cache.dir, how)
    cupy = MiniCuPy()
    _check_module(_load(cupy))
    assert len(cache.nvrtc.compiled) == 2 and not cupy.code_modules
    # the entry was rewritten: the next process hits it
    _check_module(_load(MiniCuPy()))
    assert len(cache.nvrtc.compiled) == 2


@pytest.mark.parametrize("where", ("under a regular file", "a regular file"))
def test_an_unwritable_cache_compiles_and_loads_without_an_error(tmp_path, monkeypatch, where):
    # (root ignores permission bits, so a path no one can create stands in)
    blocker = tmp_path / "file"
    blocker.write_bytes(b"x")
    monkeypatch.setenv(_gpu_cache.ENV, str(blocker / "cache" if where == "under a regular file" else blocker))
    nvrtc = FakeNVRTC()
    monkeypatch.setattr(_gpu_cache, "compiler", lambda: nvrtc)
    cupy = MiniCuPy()
    _check_module(_load(cupy))
    _check_module(_load(cupy))
    assert len(nvrtc.compiled) == 2  # nothing could be kept
    assert len(cupy.file_modules) == 2 and not cupy.code_modules  # each from a private copy
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"] and blocker.read_bytes() == b"x"


def test_a_cache_that_cannot_be_written_after_compiling_loads_a_private_copy(cache, monkeypatch):
    def full_disk(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_gpu_cache, "_store", full_disk)
    cupy = MiniCuPy()
    _check_module(_load(cupy))
    assert len(cache.nvrtc.compiled) == 1 and len(cupy.file_modules) == 1
    assert not os.path.exists(cupy.file_modules[0])  # the private copy is gone again


def test_the_cache_directory_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(_gpu_cache.ENV, str(tmp_path / "mine"))
    assert _gpu_cache.cache_dir() == str(tmp_path / "mine")
    monkeypatch.setenv(_gpu_cache.ENV, "~/kernels")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert _gpu_cache.cache_dir() == str(tmp_path / "home" / "kernels")
    monkeypatch.delenv(_gpu_cache.ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert _gpu_cache.cache_dir() == str(tmp_path / "xdg" / "csoftmax" / "cuda")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert _gpu_cache.cache_dir() == str(tmp_path / "home" / ".cache" / "csoftmax" / "cuda")
    monkeypatch.setenv(_gpu_cache.ENV, "")
    assert _gpu_cache.cache_dir() is None


def test_an_empty_cache_setting_keeps_nothing_on_disk(tmp_path, monkeypatch):
    monkeypatch.setenv(_gpu_cache.ENV, "")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    nvrtc = FakeNVRTC()
    monkeypatch.setattr(_gpu_cache, "compiler", lambda: nvrtc)
    _check_module(_load(MiniCuPy()))
    _check_module(_load(MiniCuPy()))
    assert len(nvrtc.compiled) == 2 and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("why", ("no NVRTC binding", "architecture NVRTC cannot target", "compile error",
                                 "ROCm"))
def test_without_a_usable_nvrtc_cupy_compiles_as_before(cache, monkeypatch, why):
    cupy = MiniCuPy()
    if why == "ROCm":
        cupy.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(is_hip=True))
    elif why == "no NVRTC binding":
        def missing():
            raise ImportError("No module named 'cupy_backends'")

        monkeypatch.setattr(_gpu_cache, "compiler", missing)
    elif why == "architecture NVRTC cannot target":
        cache.nvrtc.archs = (75, 80)
    else:
        def broken(*args):
            raise RuntimeError("NVRTC_ERROR_COMPILATION")

        monkeypatch.setattr(cache.nvrtc, "compile", broken)
    module = _load(cupy)
    assert cupy.code_modules == [NAMES] and module.get_function(NAMES[0]) == ("code", NAMES[0])
    assert _entries(cache.dir) == []


def test_the_key_is_the_same_in_another_process(cache, tmp_path):
    # No per-process salt (str hashes, ids) in the key: a second interpreter
    # finds the entry the first one wrote and compiles nothing.
    _load(MiniCuPy())
    script = textwrap.dedent(f"""
        import sys, time
        sys.path[:0] = {[str(Path(__file__).parent), str(Path(__file__).parents[1])]!r}
        from test_gpu_cache import MiniCuPy, _load, _check_module
        from cuda_emu.fake_cupy import FakeNVRTC
        from csoftmax import _gpu_cache
        nvrtc = FakeNVRTC()
        _gpu_cache.compiler = lambda: nvrtc
        cupy = MiniCuPy()
        _check_module(_load(cupy))
        print(len(nvrtc.compiled), len(cupy.file_modules))
    """)
    env = dict(os.environ, **{_gpu_cache.ENV: str(cache.dir)})
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0", "1"]


# ---- end to end: the public functions on the CuPy stand-in ---------------------

pytestmark_emulator = pytest.mark.skipif(
    not __import__("shutil").which("g++"), reason="the CUDA emulator needs g++ with OpenMP")


@pytest.fixture
def cp(cache, monkeypatch):
    yield from fake_cupy.installed(
        monkeypatch, (devices.EMULATED, dict(devices.EMULATED, name=b"emulated-1")), nvrtc=cache.nvrtc)


def _new_process(monkeypatch):
    """Forget everything a process keeps in memory: modules, kernels, plans."""
    _gpu._load_module.cache_clear()
    monkeypatch.setattr(_gpu, "_kernels", {})
    monkeypatch.setattr(_gpu, "_raised_smem", {})
    monkeypatch.setattr(_gpu, "_plans", {})


@pytestmark_emulator
def test_public_calls_load_their_group_from_the_cache_in_a_later_process(cp, cache, monkeypatch):
    host = np.random.default_rng(5).standard_normal((6, 300)).astype(np.float32)
    expected = csoftmax.softmax(host)
    np.testing.assert_allclose(csoftmax.softmax(cp.asarray(host)).get(), expected, rtol=2e-6, atol=1e-7)
    assert [names for names, _ in cache.nvrtc.compiled] == [NAMES]
    assert not cp.modules  # no RawModule(code=...): the stored cubin was loaded
    _new_process(monkeypatch)
    got = csoftmax.softmax(cp.asarray(host))
    np.testing.assert_allclose(got.get(), expected, rtol=2e-6, atol=1e-7)
    assert len(cache.nvrtc.compiled) == 1 and len(cp.file_loads) == 2
    # the second device of the same architecture loads the same entry
    with cp.cuda.Device(1):
        x1 = cp.asarray(host)
    np.testing.assert_allclose(csoftmax.softmax(x1).get(), expected, rtol=2e-6, atol=1e-7)
    assert len(cache.nvrtc.compiled) == 1 and [d for d, _ in cp.file_loads] == [0, 0, 1]
    assert not cp.violations


@pytestmark_emulator
def test_the_loss_kernels_share_the_loader_and_its_disk_cache(cp, cache, monkeypatch):
    from csoftmax import _gpu_loss

    _gpu_loss._load_module.cache_clear()
    monkeypatch.setattr(_gpu_loss, "_kernels", {})
    monkeypatch.setattr(_gpu_loss, "_raised_smem", {})
    rng = np.random.default_rng(6)
    logits = rng.standard_normal((5, 37)).astype(np.float32)
    labels = rng.integers(0, 37, 5)
    expected = csoftmax.softmax_cross_entropy(logits, labels)
    got = csoftmax.softmax_cross_entropy(cp.asarray(logits), cp.asarray(labels))
    np.testing.assert_allclose(float(got.get()), expected, rtol=1e-5)
    assert len(cache.nvrtc.compiled) == 1 and not cp.modules  # compiled once, through the cache
    # a later process: the loss module comes from the disk
    _gpu_loss._load_module.cache_clear()
    monkeypatch.setattr(_gpu_loss, "_kernels", {})
    got = csoftmax.softmax_cross_entropy(cp.asarray(logits), cp.asarray(labels))
    np.testing.assert_allclose(float(got.get()), expected, rtol=1e-5)
    assert len(cache.nvrtc.compiled) == 1 and len(cp.file_loads) == 2
    _gpu_loss._load_module.cache_clear()
    assert not cp.violations


# ---- the real compiler: NVRTC (test-gpu extra) ---------------------------------

def _nvrtc_compiler():
    from cuda_emu import nvrtc

    try:
        return nvrtc.Compiler()
    except ImportError as exc:
        if os.environ.get("CSOFTMAX_REQUIRE_NVRTC", "").strip().lower() in ("1", "true", "yes", "on"):
            raise
        pytest.skip(f"NVRTC is not installed (the test-gpu extra): {type(exc).__name__}: {exc}")


def test_nvrtc_compiles_a_group_once_and_a_later_load_finds_every_kernel(tmp_path, monkeypatch):
    compiler = _nvrtc_compiler()
    monkeypatch.setenv(_gpu_cache.ENV, str(tmp_path))
    monkeypatch.setattr(_gpu_cache, "compiler", lambda: compiler)
    cp = FakeCuPy([devices.REAL["H100"]])  # RawModule(path=) of a real cubin: its symbols, no run
    module = _load(cp)
    (cubin,) = tmp_path.glob("*.cubin")
    assert cubin.read_bytes().startswith(b"\x7fELF") and len(compiler.compiled) == 1
    again = _load(cp)
    assert len(compiler.compiled) == 1
    for name in NAMES:
        assert again.get_function(name).name == module.lowered[name]
