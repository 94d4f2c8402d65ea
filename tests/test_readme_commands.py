"""The README's two command lines, run as a user runs them.

README.md's "Two commands" section gives the main-job line and the test line,
each in a fenced bash block. The slow test clones this repository (its
committed HEAD: uncommitted changes are not in the clone), creates a fresh
virtual environment without system site packages, and runs both lines verbatim
with `bash -c` in the clone's root, in order, as a user would after
`git clone` and activating the venv. The nested test run is restricted with
PYTEST_ADDOPTS to a few fast test files, and CSOFTMAX_NESTED_README_RUN makes
this test skip itself there, so the suite is not run twice.

.ci/run, itself a fresh clone and venv, sets CSOFTMAX_CI_FRESH_CLONE: the
slow test skips there, and .ci/run checks the main job's output itself.

The cheap tests check that .ci/run runs the README's test line verbatim and
that importing csoftmax from a source folder without compiled modules says
what to run.

Run from a copy of tests/ against an installed wheel (tools/wheel_check.py,
cibuildwheel), there is no README and no repository: those tests are skipped.
"""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import csoftmax

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
CI_RUN = ROOT / ".ci" / "run"
NESTED = "CSOFTMAX_NESTED_README_RUN"
# Set by .ci/run, which is itself a fresh clone and venv running the README's
# test line verbatim, and then runs the main-job line's `python -m csoftmax`
# against that install: the nested clone here would build everything a
# second time (about 230 s of CI's 20 minutes) to check the same two lines.
CI_IS_THE_FRESH_CLONE = "CSOFTMAX_CI_FRESH_CLONE"
# The nested run of the README's test line: two fast files (a few seconds).
NESTED_PYTEST_ADDOPTS = "tests/test_errors.py tests/test_compat.py -q -p no:cacheprovider"
TIMEOUT_S = 900
PROBABILITIES = ("0.191", "0.628", "0.119", "0.062")


def readme_commands():
    """(main-job line, test line): the command lines of the bash blocks in
    README.md's "Two commands" section, in order."""
    if not README.is_file():
        pytest.skip("README.md is not here (tests run outside the source tree)")
    text = README.read_text(encoding="utf-8")
    m = re.search(r"^## Two commands\n(.*?)(?=^## )", text, flags=re.M | re.S)
    assert m, 'README.md has no "## Two commands" section'
    blocks = re.findall(r"^```bash\n(.*?)^```", m.group(1), flags=re.M | re.S)
    lines = []
    for block in blocks:
        cmd = [ln for ln in block.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        assert len(cmd) == 1, f"expected one command line per block, got {cmd}"
        lines.append(cmd[0])
    assert len(lines) == 2, f'expected two bash blocks in "Two commands", got {lines}'
    return lines[0], lines[1]


def test_readme_section_has_the_two_command_lines():
    main_line, test_line = readme_commands()
    assert "python -m csoftmax" in main_line
    assert "pytest" in test_line


def test_ci_runs_the_readme_test_line_verbatim():
    if not CI_RUN.is_file():
        pytest.skip(".ci/run is not here (tests run outside the source tree)")
    _, test_line = readme_commands()
    lines = [ln.strip() for ln in CI_RUN.read_text(encoding="utf-8").splitlines()]
    assert test_line in lines, f".ci/run does not run the README's test line: {test_line}"


def test_ci_runs_the_readme_main_job_after_its_install():
    # With CSOFTMAX_CI_FRESH_CLONE, .ci/run checks the main job in place of
    # the nested fresh clone: the job it runs must be the main line's.
    if not CI_RUN.is_file():
        pytest.skip(".ci/run is not here (tests run outside the source tree)")
    main_line, test_line = readme_commands()
    install, job = [part.strip() for part in main_line.split("&&")]
    assert install.replace("-e .", '-e ".[test]"') == test_line.split("&&")[0].strip()
    text = CI_RUN.read_text(encoding="utf-8")
    assert f"export {CI_IS_THE_FRESH_CLONE}=1" in text
    assert any(ln.strip().startswith(job + " ") or ln.strip() == job for ln in text.splitlines()), job
    for p in PROBABILITIES:
        assert p in text


def test_import_from_an_unbuilt_source_folder_says_what_to_run(tmp_path):
    # The situation of `python -m csoftmax` after a plain `pip install .` in
    # the root of a clone: the source folder comes first on sys.path.
    src = Path(csoftmax.__file__).parent
    dst = tmp_path / "csoftmax"
    dst.mkdir()
    for pattern in ("*.py", "*.pyx"):
        for f in src.glob(pattern):
            shutil.copy(f, dst / f.name)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # -S: no site-packages, so no installed csoftmax either (an editable
    # install's import hook would supply the compiled modules to the copy).
    r = subprocess.run([sys.executable, "-S", "-c", "import csoftmax"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: csoftmax:"), r.stderr
    assert "`python -m pip install -e .` in " + str(tmp_path) in last, r.stderr
    assert "During handling" not in r.stderr  # raised from None: one clear error


def _repository_or_skip():
    if os.environ.get(NESTED):
        pytest.skip("inside the nested run of the README's test line")
    if os.environ.get(CI_IS_THE_FRESH_CLONE):
        pytest.skip(".ci/run is the fresh clone: it runs the README's lines itself")
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    if not (ROOT / ".git").exists():
        pytest.skip("the tests do not run from a git checkout of csoftmax")
    r = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--show-toplevel", "HEAD"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"git cannot read the repository: {r.stderr.strip()}")
    top, head = r.stdout.split()
    if Path(top).resolve() != ROOT:
        pytest.skip(f"the tests are not at the top of a git repository ({top})")
    return head


def _run(line, cwd, env):
    print(f"$ {line}", flush=True)
    r = subprocess.run(["bash", "-c", line], cwd=cwd, env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=TIMEOUT_S)
    return r.returncode, r.stdout


@pytest.mark.slow
def test_readme_command_lines_run_in_a_fresh_clone_and_venv(tmp_path):
    head = _repository_or_skip()
    main_line, test_line = readme_commands()

    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", "--no-checkout", str(ROOT), str(clone)],
                   check=True, timeout=300)
    subprocess.run(["git", "-C", str(clone), "checkout", "--quiet", "--detach", head],
                   check=True, timeout=300)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)

    # What `. venv/bin/activate` does, and nothing of this process's own
    # environment that would change where Python or pytest look.
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "PYTEST_ADDOPTS", "PYTHONSTARTUP")
           and not k.startswith("PYTEST_")}
    env["VIRTUAL_ENV"] = str(venv)
    env["PATH"] = str(venv / "bin") + os.pathsep + env.get("PATH", "")

    rc, out = _run(main_line, clone, env)
    assert rc == 0, f"the main-job line failed ({rc}):\n{out[-6000:]}"
    for p in PROBABILITIES:
        assert p in out, f"the classic example's {p} is missing:\n{out[-6000:]}"
    # The venv's csoftmax is the clone's, built in place.
    r = subprocess.run(["python", "-c", "import csoftmax; print(csoftmax.__file__)"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.strip()).resolve().parent == (clone / "csoftmax").resolve()

    env[NESTED] = "1"
    env["PYTEST_ADDOPTS"] = NESTED_PYTEST_ADDOPTS
    rc, out = _run(test_line, clone, env)
    assert rc != 5, f"the test line ran no test:\n{out[-6000:]}"
    assert rc == 0, f"the test line failed ({rc}):\n{out[-6000:]}"
    assert re.search(r"\b\d+ passed\b", out), out[-6000:]
