"""Builds consumer.pyx against the installed csoftmax, as a downstream package would.

    python setup.py build_ext --inplace

tests/test_cimport.py copies this file and consumer.pyx into a temporary
directory and runs exactly that; docs/cimport.md shows the same lines.
"""
import importlib.util
import os
import sys

from Cython.Build import cythonize
from setuptools import Extension, setup

# Cython finds csoftmax/kernels.pxd by searching sys.path, which covers a normal
# install (site-packages). An editable install (pip install -e) is found through
# an import hook that Cython does not consult, so name the package's parent
# directory explicitly; for a normal install that is site-packages itself.
csoftmax_root = os.path.dirname(os.path.dirname(importlib.util.find_spec("csoftmax").origin))

# OpenMP makes the consumer's own prange parallel; without it the loop runs
# serially and is still correct. Apple clang has no -fopenmp (see docs/cimport.md).
if sys.platform == "win32":
    openmp = dict(extra_compile_args=["/openmp"])
elif sys.platform == "darwin":
    openmp = {}
else:
    openmp = dict(extra_compile_args=["-fopenmp"], extra_link_args=["-fopenmp"])

setup(
    name="csoftmax-consumer",
    ext_modules=cythonize(
        [Extension("consumer", ["consumer.pyx"], **openmp)],
        include_path=[csoftmax_root],
        compiler_directives={"language_level": 3},
        # consumer.c.dep lists the .pxd files Cython used; the test checks that
        # they are the installed package's (not needed in a real project).
        depfile=True,
    ),
)
