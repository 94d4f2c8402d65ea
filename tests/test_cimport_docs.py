"""The example project of docs/cimport.md builds as documented and computes the
right numbers.

The page gives each file of the project as a fenced block after a line that
names it (`mylib/losses.pyx`:, `setup.py`:, `pyproject.toml`:), and then the
usage lines (a python block that imports mylib.losses). This test writes those
files, exactly as the page shows them, into a temporary folder and builds them
the way the page says to build against an installed csoftmax:
`pip install --no-build-isolation .`, here with `--target` (into a folder of
its own, not this environment) and `--no-deps` (csoftmax and numpy are here
already). The build runs in a subprocess in that folder, without PYTHONPATH,
so the .pxd files come from wherever `import csoftmax` finds the package. The
usage lines then run in another subprocess, from another folder, and their
results are compared with a float64 NumPy reference.

Needs a C compiler, Cython and setuptools (the `test` extra) and docs/ (the
sdist has it; a copy of tests/ alone skips). About 15 s on 2 cores.
"""
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

DOC = Path(__file__).resolve().parent.parent / "docs" / "cimport.md"
FILES = ("mylib/losses.pyx", "setup.py", "pyproject.toml")


def _doc_text():
    if not DOC.is_file():
        pytest.skip("docs/cimport.md is not here (tests run outside the source tree)")
    return DOC.read_text(encoding="utf-8")


def example_files():
    """{file name: content} of the example project, from the fenced block after
    the line that names each file."""
    text = _doc_text()
    files = {}
    for name in FILES:
        pattern = r"^`" + re.escape(name) + r"`:[^\n]*\n\s*```\w*\n(.*?)^```"
        found = re.findall(pattern, text, flags=re.M | re.S)
        assert len(found) == 1, f"docs/cimport.md: expected one block for {name}, found {len(found)}"
        files[name] = found[0]
    return files


def usage_block():
    blocks = re.findall(r"^```python\n(.*?)^```", _doc_text(), flags=re.M | re.S)
    usage = [b for b in blocks if "from mylib.losses import" in b]
    assert len(usage) == 1, "docs/cimport.md: expected one python block using mylib.losses"
    return usage[0]


def test_doc_names_every_file_of_the_example():
    files = example_files()
    assert "from csoftmax.kernels cimport" in files["mylib/losses.pyx"]
    assert 'name = "mylib"' in files["pyproject.toml"]


def _ref_log_softmax(x):
    x = np.asarray(x, dtype=np.float64)
    m = x.max(axis=-1, keepdims=True)
    return (x - m) - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


@pytest.fixture(scope="module")
def built_example(tmp_path_factory):
    files = example_files()
    project = tmp_path_factory.mktemp("cimport_doc_example")
    for name, content in files.items():
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(content, encoding="utf-8")
    target = project.parent / (project.name + "_site")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps",
         "--no-index", "--target", str(target), "."],
        cwd=project, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (
        f"building the docs/cimport.md example failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return target


def test_doc_example_builds_and_matches_numpy(built_example, tmp_path):
    results = tmp_path / "results.npz"
    script = usage_block() + textwrap.dedent(f"""
        from mylib.losses import softmax_inplace
        ce = cross_entropy(logits, labels)
        x = np.random.default_rng(2).standard_normal((300, 50)).astype(np.float32)
        y_default, y_two = x.copy(), x.copy()
        softmax_inplace(y_default)
        softmax_inplace(y_two, 2)
        np.savez({str(results)!r}, logits=logits, labels=labels, ce=ce, x=x,
                 y_default=y_default, y_two=y_two)
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(built_example)
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"the usage lines failed:\n{proc.stdout}\n{proc.stderr}"

    r = np.load(results)
    logits, labels = r["logits"], r["labels"]
    assert logits.shape == (1000, 10)
    want = -_ref_log_softmax(logits)[np.arange(len(labels)), labels].mean()
    assert abs(float(r["ce"]) - want) <= 1e-12 * abs(want)
    e = np.exp(r["x"].astype(np.float64) - r["x"].max(axis=-1, keepdims=True))
    ref = e / e.sum(axis=-1, keepdims=True)
    for y in (r["y_default"], r["y_two"]):
        assert y.dtype == np.float32
        np.testing.assert_allclose(y, ref, rtol=2e-6, atol=0)
    assert np.array_equal(r["y_default"], r["y_two"])
