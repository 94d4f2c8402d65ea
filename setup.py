"""Build of the csoftmax extensions: Cython kernels with OpenMP where available.

Environment switches (read at build time):
  CSOFTMAX_REQUIRE_OPENMP=1  a compiler without OpenMP is a build error (CI, wheels)
  CSOFTMAX_DISABLE_OPENMP=1  build without OpenMP (serial kernels, still vectorised)

No fast-math flags (they break NaN/inf semantics) and no host-specific -march
(wheels must run on any x86-64): the kernels pick AVX2/AVX-512 at run time.
"""
import os
import sys
import tempfile
import textwrap

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
    def build_extensions(self):
        comp = self.compiler
        if comp.compiler_type == "msvc":
            cflags, ldflags = ["/O2", "/fp:precise"], []
        else:
            # -fno-math-errno and -fno-trapping-math let the vectoriser
            # if-convert the clamps in exp; neither changes IEEE results.
            cflags = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-std=gnu11"]
            ldflags = []
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
        self._write_build_info(comp, cflags, ldflags, omp is not None)
        super().build_extensions()

    def _write_build_info(self, comp, cflags, ldflags, openmp):
        exe = getattr(comp, "compiler", None) or [comp.compiler_type]
        info = {
            "compiler": " ".join(exe) if isinstance(exe, list) else str(exe),
            "cflags": " ".join(cflags),
            "ldflags": " ".join(ldflags),
            "openmp": openmp,
            "numpy": np.__version__,
        }
        text = ('"""Written by setup.py at build time; do not edit."""\n'
                f"BUILD = {info!r}\n")
        for root in {os.path.join(self.build_lib, "csoftmax"), "csoftmax"}:
            if os.path.isdir(root):
                with open(os.path.join(root, "_build_info.py"), "w") as f:
                    f.write(text)


def extensions():
    common = dict(include_dirs=["csoftmax", np.get_include()],
                  define_macros=[("NPY_NO_DEPRECATED_API", "NPY_2_0_API_VERSION")])
    names = ["_engine", "kernels", "_cpu", "_entry"]
    exts = [Extension(f"csoftmax.{n}", [f"csoftmax/{n}.pyx"], **common) for n in names]
    return cythonize(exts, compiler_directives={"language_level": 3},
                     include_path=["."])


setup(
    ext_modules=extensions(),
    cmdclass={"build_ext": BuildExt},
)
