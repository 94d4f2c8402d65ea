"""CUDA kernel sources of csoftmax, installed as the package data ``csoftmax.cuda``.

The ``.cu`` files here are read with ``importlib.resources`` and compiled at run
time by ``cupy.RawModule``; this file exists so that editable installs can find
them (setuptools maps ``csoftmax.cuda`` onto this folder).

From the repository root this folder is also importable as a top-level
``cuda`` package, which would hide NVIDIA's ``cuda`` namespace package
(``cuda.bindings``, ``cuda.pathfinder``, which CuPy and the NVRTC tests
import). Extending ``__path__`` pkgutil-style merges the two, so
``cuda.bindings`` resolves either way.
"""
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
