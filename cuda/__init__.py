"""CUDA kernel sources of csoftmax, installed as the package data ``csoftmax.cuda``.

The ``.cu`` files here are read with ``importlib.resources`` and compiled at run
time by ``cupy.RawModule``; this file exists so that editable installs can find them.
"""
