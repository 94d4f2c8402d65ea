"""Compile a .cu text with g++ into a shared library of emulated kernels.

The translation unit is: cuda_builtins.h, the unchanged kernel text, the
dynamic shared memory array, emu_launch.h and one table entry per name
expression (the same strings CuPy's RawModule gets). Builds are cached by the
hash of everything that goes into them, in a directory that lives for the
test session (or $CSOFTMAX_EMU_CACHE, to keep them across sessions).
"""
from __future__ import annotations

import hashlib
import os
import re
import subprocess
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
HEADERS = ("cuda_builtins.h", "emu_runtime.h", "emu_launch.h")

# The emulator's own map from kernel element types to NumPy dtypes, kept apart
# from csoftmax._gpu's so that a wrong map there shows up as a signature
# mismatch here.
C_TYPES = {"float": "float32", "double": "float64", "csm_half": "float16", "unsigned char": "uint8",
           "long long": "int64"}

# Room for the largest dynamic shared memory request of any real device
# (227 KiB on sm_90/sm_100) plus the guard zone.
SMEM_BYTES = 232448 + 256

# C++20 for atomic wait (futex) in the barriers; -O1 halves the build
# time of -O2 here, and the emulator's time goes to barriers anyway;
# -ffp-contract=off keeps a * b + c unfused, as __fmul_rn promises.
CXXFLAGS = ["-std=c++20", "-O1", "-fopenmp", "-fPIC", "-shared", "-ffp-contract=off", "-fno-fast-math",
            "-Wno-unknown-pragmas"]

_SHARED = re.compile(r"\b(extern\s+)?__shared__\b[^;]*?(\w+)\s*\[\s*\]\s*;")


def _smem_symbol(source: str) -> str:
    """The name of the file-scope `extern __shared__ T name[];` array."""
    uses = re.findall(r"__shared__", source)
    found = _SHARED.findall(source)
    if len(uses) != 1 or len(found) != 1 or not found[0][0]:
        raise ValueError("the emulator supports exactly one file-scope `extern __shared__ ... name[];`")
    return found[0][1]


def translation_unit(source_path: Path, source: str, names, extra: str = "") -> str:
    lines = ['#include "cuda_builtins.h"', f'#include "{source_path.name}"']
    lines.append(f"unsigned char {_smem_symbol(source)}[{SMEM_BYTES}] __attribute__((aligned(16)));")
    lines.append('#include "emu_launch.h"')
    for ctype in C_TYPES:
        if ctype not in ("float", "double", "unsigned char", "long long") and re.search(rf"\bstruct {ctype}\b", source):
            lines.append(f"template <> struct emu::type_name<{ctype}> {{ static std::string get() {{ return \"{ctype}\"; }} }};")
    lines.append("static const emu::Entry emu_table[] = {")
    lines += [f"    EMU_KERNEL({name})," for name in names]
    lines.append("};")
    lines.append(f"EMU_EXPORTS(emu_table, {_smem_symbol(source)})")
    lines.append(extra)
    return "\n".join(lines) + "\n"


def cache_dir() -> Path:
    root = os.environ.get("CSOFTMAX_EMU_CACHE")
    if root:
        path = Path(root)
    else:
        path = Path(tempfile.gettempdir()) / f"csoftmax-emu-{os.getuid()}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def build(source: str, names, tag: str = "kernels", extra: str = "") -> Path:
    """Return the path of a shared library emulating `names` from `source`;
    `extra` is C++ appended to the translation unit (test-only entry points)."""
    names = list(names)
    digest = hashlib.sha256()
    for part in [source, "\n".join(names), extra, " ".join(CXXFLAGS)] + [(HERE / h).read_text() for h in HEADERS]:
        digest.update(part.encode())
        digest.update(b"\0")
    key = digest.hexdigest()[:20]
    lib = cache_dir() / f"{tag}-{key}.so"
    if lib.exists():
        return lib
    work = Path(tempfile.mkdtemp(prefix=f"{tag}-", dir=cache_dir()))
    cu = work / "kernels.cu"
    cu.write_text(source)
    tu = work / "emu.cpp"
    tu.write_text(translation_unit(cu, source, names, extra))
    out = work / "emu.so"
    cmd = ["g++", *CXXFLAGS, f"-I{HERE}", f"-I{work}", str(tu), "-o", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"emulator build failed:\n{' '.join(cmd)}\n{proc.stderr[-6000:]}")
    os.replace(out, lib)  # atomic: parallel sessions never load a half-written library
    return lib
