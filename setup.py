"""Build of the csoftmax extensions: Cython kernels with OpenMP where available.

Environment switches (read at build time):
  CSOFTMAX_REQUIRE_OPENMP=1  a compiler without OpenMP is a build error (CI, wheels)
  CSOFTMAX_DISABLE_OPENMP=1  build without OpenMP (serial kernels, still vectorised)
  CSOFTMAX_DEBUG=1           keep debug information (-g); by default GCC and Clang
                             builds have none (-g0, and on Linux the linker drops
                             any that a library object brings): the wheel is a
                             third of the size. The symbol table stays, so that
                             profilers and backtraces name the kernels.
  CSOFTMAX_BUILD_JOBS=N      compiler processes at once (default: the CPU count);
                             `build_ext --parallel N` sets it too

The kernels of each instruction set and dtype are a translation unit of their
own (csoftmax/_rows_<isa>_<dtype>.c): with the extensions and their C files
compiled in parallel, two cores share the compiler's work evenly.

No fast-math flags (they break NaN/inf semantics) and no host-specific -march
(wheels must run on any x86-64): the kernels pick AVX2/AVX-512 at run time.
"""
import os
import re
import sys
import tempfile
import heapq
import itertools
import textwrap
import threading
import types
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

OPENMP_PROBE = textwrap.dedent("""
    #include <omp.h>
    int main(void) {
        int n = 0;
        #pragma omp parallel reduction(+:n)
        n += 1;
        return omp_get_max_threads() > 0 && n > 0 ? 0 : 1;
    }
""")


def _flag(name):
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _openmp_flags(compiler):
    """(compile, link) flags that enable OpenMP for this compiler, or None."""
    ctype = compiler.compiler_type
    if ctype == "msvc":
        return ["/openmp"], []
    if sys.platform == "darwin":
        # Apple clang has no -fopenmp driver flag; Homebrew's libomp provides it.
        prefix = os.environ.get("LIBOMP_PREFIX", "/opt/homebrew/opt/libomp")
        return ([f"-I{prefix}/include", "-Xpreprocessor", "-fopenmp"],
                [f"-L{prefix}/lib", "-lomp"])
    return ["-fopenmp"], ["-fopenmp"]


def _jobs():
    try:
        n = int(os.environ.get("CSOFTMAX_BUILD_JOBS", ""))
    except ValueError:
        n = 0
    return n if n > 0 else (os.cpu_count() or 1)


# Seconds of GCC 12 -O3 (measured on 2-core Zen 4, one build) of the slowest
# translation units; the scheduler starts the longest first, so that on 2
# cores the short Cython modules fill in around them. Any other source counts
# as 1.
COMPILE_COST = {"_rows_avx2_f64.c": 85, "_rows_avx2_f32.c": 80, "_rows_avx512_f32.c": 71,
                "_rows_avx512_f64.c": 65, "_rows_baseline_f32.c": 55,
                "_rows_baseline_f64.c": 45, "_engine.c": 4, "_entry.c": 3}


class _CompileSlots:
    """At most `n` compiler processes at once, across all extensions; a waiting
    compile with a higher cost goes first."""

    def __init__(self, n):
        self.free = n
        self.waiting = []  # heap of (-cost, ticket)
        self.tickets = itertools.count()
        self.cv = threading.Condition()

    def run(self, cost, fn):
        with self.cv:
            me = (-cost, next(self.tickets))
            heapq.heappush(self.waiting, me)
            self.cv.notify_all()
            while not (self.free and self.waiting[0] == me):
                self.cv.wait()
            heapq.heappop(self.waiting)
            self.free -= 1
            self.cv.notify_all()
        try:
            return fn()
        finally:
            with self.cv:
                self.free += 1
                self.cv.notify_all()


def _parallel_compile(compiler, jobs):
    """Make compiler.compile() compile the sources of one extension in parallel,
    at most `jobs` compiler processes at once across all extensions, which
    setuptools builds on parallel threads (build_ext.parallel)."""
    if compiler.compiler_type == "msvc" or getattr(compiler, "_csm_parallel", False):
        return
    slots = _CompileSlots(jobs)
    serial_compile = compiler._compile

    def compile(self, sources, output_dir=None, macros=None, include_dirs=None, debug=0,
                extra_preargs=None, extra_postargs=None, depends=None):
        macros, objects, extra_postargs, pp_opts, build = self._setup_compile(
            output_dir, macros, include_dirs, sources, depends, extra_postargs)
        cc_args = self._get_cc_args(pp_opts, debug, extra_preargs)
        todo = [obj for obj in objects if obj in build]

        def one(obj):
            src, ext = build[obj]
            cost = COMPILE_COST.get(os.path.basename(src), 1)
            slots.run(cost, lambda: serial_compile(obj, src, ext, cc_args, extra_postargs, pp_opts))

        with ThreadPoolExecutor(max(1, len(todo))) as pool:
            # result() re-raises the first compile error here.
            for f in [pool.submit(one, obj) for obj in todo]:
                f.result()
        return objects

    compiler.compile = types.MethodType(compile, compiler)
    compiler._csm_parallel = True


def _probe(compiler, cflags, ldflags):
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write(OPENMP_PROBE)
        try:
            objs = compiler.compile([src], output_dir=tmp, extra_postargs=cflags)
            compiler.link_executable(objs, os.path.join(tmp, "probe"),
                                     extra_postargs=ldflags)
        except Exception:  # any compile or link failure means "no OpenMP"
            return False
    return True


class BuildExt(build_ext):
    def finalize_options(self):
        super().finalize_options()
        # Compiler processes at once: `--parallel N`, else CSOFTMAX_BUILD_JOBS,
        # else the CPU count (pip passes no option).
        if not self.parallel:
            self.parallel = _jobs()
        elif self.parallel is True:
            self.parallel = os.cpu_count() or 1

    def build_extensions(self):
        comp = self.compiler
        debug = _flag("CSOFTMAX_DEBUG")
        if comp.compiler_type == "msvc":
            cflags, ldflags = ["/O2", "/fp:precise"], []
        else:
            # -fno-math-errno and -fno-trapping-math let the vectoriser
            # if-convert the clamps in exp; neither changes IEEE results.
            # Not -fschedule-insns -fsched-pressure (GCC's scheduling before
            # register allocation, off on x86): the same bits, but mixed on
            # AMD Zen 4, one thread, in cache, best of three alternations,
            # AVX2 float64 kernels, time with / without: log_softmax and
            # logsumexp 0.90-0.93, softmax_backward 32 x 1000 1.13, softmax
            # 32 x 1000 and 4 x 8192 1.05, the rest 0.97-1.00; the AVX2
            # float32 and AVX-512 kernels within the host's noise.
            cflags = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-std=gnu11"]
            ldflags = []
            if not debug:
                # Python's CFLAGS carry -g; the last -g option wins.
                cflags.append("-g0")
                if sys.platform.startswith("linux"):
                    ldflags.append("-Wl,--strip-debug")
        jobs = int(self.parallel or 1)
        if jobs > 1 and comp.compiler_type != "msvc":
            # Every extension on a thread of its own, so that all their sources
            # are queued at once; the slots keep `jobs` compilers running.
            _parallel_compile(comp, jobs)
            self.parallel = len(self.extensions)
        omp = None
        if not _flag("CSOFTMAX_DISABLE_OPENMP"):
            omp = _openmp_flags(comp)
            if not _probe(comp, *omp):
                omp = None
        if omp is None:
            if _flag("CSOFTMAX_REQUIRE_OPENMP"):
                raise RuntimeError("csoftmax: CSOFTMAX_REQUIRE_OPENMP is set, but the "
                                   f"compiler ({comp.compiler_type}) has no usable OpenMP")
            if comp.compiler_type != "msvc":
                cflags.append("-fopenmp-simd")  # keep `#pragma omp simd` working
        else:
            cflags += omp[0]
            ldflags += omp[1]
        for ext in self.extensions:
            ext.extra_compile_args = cflags + list(ext.extra_compile_args or [])
            ext.extra_link_args = ldflags + list(ext.extra_link_args or [])
        self._write_build_info(comp, cflags, ldflags, omp is not None, debug)
        super().build_extensions()

    def _write_build_info(self, comp, cflags, ldflags, openmp, debug):
        exe = getattr(comp, "compiler", None) or [comp.compiler_type]
        info = {
            "compiler": " ".join(exe) if isinstance(exe, list) else str(exe),
            "cflags": " ".join(cflags),
            "ldflags": " ".join(ldflags),
            "openmp": openmp,
            "debug": debug,
            "numpy": np.__version__,
        }
        text = ('"""Written by setup.py at build time; do not edit."""\n'
                f"BUILD = {info!r}\n")
        for root in {os.path.join(self.build_lib, "csoftmax"), "csoftmax"}:
            if os.path.isdir(root):
                with open(os.path.join(root, "_build_info.py"), "w") as f:
                    f.write(text)


# The row kernels, one translation unit per instruction set and dtype
# (csoftmax/_rows.h):
# extra C sources of csoftmax._engine, which holds the dispatch.
ROWS_SOURCES = [f"csoftmax/_rows_{isa}_{dt}.c" for isa in ("avx512", "avx2", "baseline")
                for dt in ("f64", "f32")]
ROWS_HEADERS = ["csoftmax/_ops.h", "csoftmax/_rows.h", "csoftmax/_rows_isa.h",
                "csoftmax/_rows_impl.h", "csoftmax/_masked_impl.h", "csoftmax/_loss.h",
                "csoftmax/_loss_impl.h", "csoftmax/_shares.h"]


def check_op_registry():
    """cuda/softmax.cu repeats the op codes of the registry (csoftmax/_ops.h)
    for its row kernels, since NVRTC compiles it without includes: a build
    fails here when the two disagree, before a GPU ever sees the kernels."""
    with open("csoftmax/_ops.h") as f:
        ops = re.findall(r"^\s*X\((\w+),\s*(\w+),\s*\d,\s*\w+,\s*(\w+),\s*\d\)", f.read(), re.M)
    with open("cuda/softmax.cu") as f:
        cu = dict(re.findall(r"^\s*CSM_(\w+) = (\d+),", f.read(), re.M))
    for code, (name, upper, gpu) in enumerate(ops):
        if gpu == "CSM_GPU_ROWS" and cu.get(upper) != str(code):
            raise SystemExit(f"csoftmax build: cuda/softmax.cu gives {name} the code "
                             f"{cu.get(upper)}, csoftmax/_ops.h {code}")
    if not ops:
        raise SystemExit("csoftmax build: no operation found in csoftmax/_ops.h")


check_op_registry()


def extensions():
    common = dict(include_dirs=["csoftmax", np.get_include()],
                  define_macros=[("NPY_NO_DEPRECATED_API", "NPY_2_0_API_VERSION")])
    names = ["_engine", "_loss", "kernels", "_cpu", "_entry", "_alloc"]
    exts = [Extension(f"csoftmax.{n}", [f"csoftmax/{n}.pyx"], **common) for n in names]
    exts[0].sources += ROWS_SOURCES
    exts[0].depends += ROWS_HEADERS
    # Cython's worker processes: on Linux only (fork; elsewhere spawn would
    # re-run the build script).
    nthreads = _jobs() if sys.platform.startswith("linux") else 0
    return cythonize(exts, compiler_directives={"language_level": 3},
                     include_path=["."], nthreads=nthreads)


setup(
    ext_modules=extensions(),
    cmdclass={"build_ext": BuildExt},
)
