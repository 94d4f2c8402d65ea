"""The registry of operations (csoftmax/_ops.h) is the one list every layer
derives from: the engine's op codes and names, the GPU's kernel choice, the
public functions and the Cython API."""
import inspect
import re
from pathlib import Path

import pytest

import csoftmax
from csoftmax import _engine, _gpu

PUBLIC = [name for name, op in _engine.OPS.items() if op["gpu"] is not None]


def test_codes_follow_the_registry_order():
    assert [op["code"] for op in _engine.OPS.values()] == list(range(len(_engine.OP_NAMES)))
    assert tuple(_engine.OPS) == _engine.OP_NAMES


@pytest.mark.parametrize("name", PUBLIC)
def test_every_public_operation_is_a_function_with_its_arity(name):
    fn = getattr(csoftmax, name)
    params = [p for p in inspect.signature(fn).parameters.values()
              if p.kind == p.POSITIONAL_OR_KEYWORD and p.name != "axis"]
    assert len(params) == _engine.OPS[name]["arity"]
    assert name in csoftmax.__all__


@pytest.mark.parametrize("name", PUBLIC)
def test_every_public_operation_has_cython_entry_points(name):
    pxd = Path(csoftmax.__file__).with_name("kernels.pxd").read_text()
    for suffix in ("f32", "f64"):
        assert re.search(rf"cdef int {name}_{suffix}\(", pxd), f"{name}_{suffix}"


def test_gpu_kernels_and_codes_come_from_the_registry():
    rows = {n for n, op in _engine.OPS.items() if op["gpu"] == "rows"}
    assert set(_gpu._ROW_OPS) == rows
    consts = _gpu.constants()  # raises when softmax.cu disagrees
    for name in rows:
        assert consts["CSM_" + name.upper()] == _engine.OPS[name]["code"]
