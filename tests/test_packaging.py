"""What the installed package ships besides code: type stubs that agree with
the compiled functions, the py.typed marker and the public .pxd files.

Run against a wheel (tools/wheel_check.py) these check the wheel's contents;
under an editable install they check the source tree, and that MANIFEST.in
puts the kernels' C units, not Cython's output, in the sdist.
"""
import ast
import os
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


# ---- the compiled modules and the source distribution ------------------------

SOURCE_TREE = (PACKAGE_DIR.parent / "setup.py").is_file()
ISA_UNITS = [f"csoftmax/_rows_{isa}_{dt}.c" for isa in ("baseline", "avx2", "avx512")
             for dt in ("f32", "f64")]


def _build_info():
    try:
        from csoftmax import _build_info
    except ImportError:
        pytest.skip("csoftmax/_build_info.py is absent (not built by setup.py)")
    return _build_info.BUILD


def _elf_section_names(data):
    """Section names of an ELF file's bytes (None if not ELF)."""
    import struct

    if data[:4] != b"\x7fELF":
        return None
    is64, e = data[4] == 2, "<" if data[5] == 1 else ">"
    shoff = struct.unpack_from(e + ("Q" if is64 else "I"), data, 0x28 if is64 else 0x20)[0]
    shentsize, shnum, shstrndx = struct.unpack_from(e + "HHH", data, 0x3A if is64 else 0x2E)
    layout = e + ("IIQQQQ" if is64 else "IIIIII")
    headers = [struct.unpack_from(layout, data, shoff + i * shentsize) for i in range(shnum)]
    _, _, _, _, stroff, strsize = headers[shstrndx]
    strtab = data[stroff:stroff + strsize]
    return [strtab[h[0]:strtab.index(b"\0", h[0])].decode("ascii", "replace") for h in headers]


def test_compiled_modules_have_no_debug_information_unless_asked():
    # setup.py compiles with -g0 (and links with --strip-debug on Linux) unless
    # CSOFTMAX_DEBUG=1; the symbol table stays, for profilers and the ISA check
    # of tools/wheel_check.py.
    debug = _build_info().get("debug")
    if debug is None:
        pytest.skip("built by a setup.py that did not record the debug switch")
    mods = sorted(PACKAGE_DIR.glob("*.so"))
    sections = {m.name: _elf_section_names(m.read_bytes()) for m in mods}
    sections = {k: v for k, v in sections.items() if v is not None}
    if not sections:
        pytest.skip("no ELF extension modules here (not Linux)")
    for name, secs in sections.items():
        has_debug = any(s.startswith((".debug_", ".zdebug_")) for s in secs)
        if not debug:
            assert not has_debug, f"{name}: debug sections in a release build: {secs}"
        assert ".symtab" in secs, f"{name}: the symbol table was stripped"


def test_installed_wheel_ships_no_c_sources():
    if SOURCE_TREE:
        pytest.skip("the source tree holds the C sources (an editable install)")
    assert sorted(p.name for p in PACKAGE_DIR.glob("*.c")) == []


def test_sdist_manifest_takes_the_isa_units_and_leaves_cython_output():
    # The sdist builds from its own files: the row kernels' translation units
    # (csoftmax/_rows_<isa>_<dtype>.c) must be in it, Cython's output must not.
    # (tools/wheel_check.py checks the sdist it builds the same way.)
    if not SOURCE_TREE:
        pytest.skip("no source tree beside the installed package")
    from setuptools.command.egg_info import FileList

    root = PACKAGE_DIR.parent
    cwd = os.getcwd()
    try:
        os.chdir(root)
        fl = FileList()
        fl.findall()  # every file under the current directory
        for line in (root / "MANIFEST.in").read_text().splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                fl.process_template_line(line)
    finally:
        os.chdir(cwd)
    files = {f.replace(os.sep, "/") for f in fl.files}
    for unit in ISA_UNITS:
        assert (root / unit).is_file(), unit
        assert unit in files, f"MANIFEST.in leaves {unit} out of the sdist"
    for pyx in PACKAGE_DIR.glob("*.pyx"):
        assert f"csoftmax/{pyx.stem}.c" not in files, f"Cython's output {pyx.stem}.c would ship"
    assert "csoftmax/_rows_impl.h" in files and "csoftmax/_rows_isa.h" in files
