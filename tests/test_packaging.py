"""What the installed package ships besides code: type stubs that agree with
the compiled functions, the py.typed marker and the public .pxd files.

Run against a wheel (tools/wheel_check.sh) these check the wheel's contents;
under an editable install they check the source tree.
"""
import ast
import importlib
import inspect
from pathlib import Path

import pytest

import csoftmax

PACKAGE_DIR = Path(csoftmax.__file__).parent
STUBBED = ["csoftmax", "csoftmax.kernels", "csoftmax.compat"]


def _stub(module_name):
    name = "__init__" if module_name == "csoftmax" else module_name.rsplit(".", 1)[1]
    return ast.parse((PACKAGE_DIR / f"{name}.pyi").read_text())


def _stub_signatures(tree):
    """{name: [(param, kind, default)]} of the module-level functions of a stub;
    overloads of one function must all have the same parameters."""
    sigs = {}
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef):
            continue
        a = node.args
        positional = a.posonlyargs + a.args
        pos_defaults = [None] * (len(positional) - len(a.defaults)) + a.defaults
        params = [(p.arg, "positional", d) for p, d in zip(positional, pos_defaults)]
        params += [(p.arg, "keyword", d) for p, d in zip(a.kwonlyargs, a.kw_defaults)]
        params = [(n, k, None if d is None else ast.literal_eval(d)) for n, k, d in params]
        assert sigs.setdefault(node.name, params) == params, f"overloads of {node.name} differ"
    return sigs


def _runtime_signature(func):
    params = []
    for p in inspect.signature(func).parameters.values():
        kind = "keyword" if p.kind is p.KEYWORD_ONLY else "positional"
        params.append((p.name, kind, None if p.default is p.empty else p.default))
    return params


@pytest.mark.parametrize("module_name", STUBBED)
def test_type_stubs_match_runtime_signatures(module_name):
    module = importlib.import_module(module_name)
    stubbed = _stub_signatures(_stub(module_name))
    assert stubbed, f"{module_name}: its stub declares no functions"
    for name, params in stubbed.items():
        assert _runtime_signature(getattr(module, name)) == params, name


@pytest.mark.parametrize("module_name", STUBBED)
def test_type_stubs_cover_every_public_function(module_name):
    module = importlib.import_module(module_name)
    public = {n for n, v in vars(module).items()
              if not n.startswith("_") and callable(v) and not inspect.ismodule(v)
              and getattr(v, "__module__", module_name).startswith("csoftmax")}
    assert public <= set(_stub_signatures(_stub(module_name)))


def test_type_stub_all_matches_runtime_all():
    tree = _stub("csoftmax")
    declared = [ast.literal_eval(n.value) for n in tree.body
                if isinstance(n, ast.Assign) and n.targets[0].id == "__all__"]
    assert declared == [csoftmax.__all__]


@pytest.mark.parametrize("name", ["__init__.pxd", "kernels.pxd", "py.typed",
                                  "__init__.pyi", "kernels.pyi", "compat.pyi"])
def test_installed_package_ships_cimport_api_and_type_information(name):
    assert (PACKAGE_DIR / name).is_file()
