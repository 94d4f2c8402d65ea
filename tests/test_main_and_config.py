"""The main job, show_config() and the ISA switch."""
import os
import subprocess
import sys

import numpy as np
import pytest

import csoftmax
from csoftmax import kernels


def test_show_config_reports_the_build():
    cfg = csoftmax.show_config(print_=False)
    assert cfg["version"] == csoftmax.__version__
    assert isinstance(cfg["openmp"], bool)
    assert cfg["threads"] >= 1
    assert cfg["isa"] in cfg["supported_isas"]
    assert cfg["supported_isas"][0] == "baseline"
    assert "cflags" in cfg["build"] and "-ffast-math" not in cfg["build"]["cflags"]
    assert "-march=native" not in cfg["build"]["cflags"]
    assert "gpu" in cfg


def test_show_config_prints(capsys):
    csoftmax.show_config()
    assert "isa" in capsys.readouterr().out


def test_the_widest_supported_isa_is_chosen_by_default():
    if os.environ.get("CSOFTMAX_ISA"):
        pytest.skip("CSOFTMAX_ISA forces a choice in this run")
    assert kernels.isa() == kernels.supported_isas()[-1]


@pytest.mark.parametrize("name", kernels.supported_isas())
def test_environment_variable_forces_the_isa(name):
    code = "import csoftmax; print(csoftmax.show_config(print_=False)['isa'])"
    env = dict(os.environ, CSOFTMAX_ISA=name)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == name


def test_unknown_isa_in_the_environment_fails_the_import_clearly():
    env = dict(os.environ, CSOFTMAX_ISA="sse9")
    r = subprocess.run([sys.executable, "-c", "import csoftmax"], env=env,
                       capture_output=True, text=True)
    assert r.returncode != 0 and "CSOFTMAX_ISA='sse9'" in r.stderr


def test_select_isa_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown ISA"):
        kernels.select_isa("sse9")


def test_main_job_prints_config_example_and_table():
    r = subprocess.run([sys.executable, "-m", "csoftmax", "--budget", "0.02"],
                       capture_output=True, text=True, check=True, timeout=120)
    out = r.stdout
    assert "isa" in out
    for p in ("0.191", "0.628", "0.119", "0.062"):
        assert p in out
    assert "speed-up" in out and "Softmax_grad" in out


def test_main_job_reports_best_times_and_says_which():
    # The table's times are the best (minimum) over the samples; the header says so.
    r = subprocess.run([sys.executable, "-m", "csoftmax", "--budget", "0.02"],
                       capture_output=True, text=True, check=True, timeout=120)
    assert "best time per call (the minimum over the samples)" in r.stdout
    assert "csoftmax median" in r.stdout


def _fake_time(best, median):
    return lambda fn, budget: (best, median)


def test_main_job_flags_noisy_timings(monkeypatch, capsys):
    from csoftmax import __main__ as main_job
    monkeypatch.setattr(main_job, "_time", _fake_time(1e-3, 2.5e-3))
    monkeypatch.setattr(main_job, "_load_average", lambda: 0.0)
    main_job.benchmark(budget=0.0)
    out = capsys.readouterr().out
    assert "note: timings are noisy: a median is up to 2.5x the best time" in out


def test_main_job_flags_a_busy_machine(monkeypatch, capsys):
    from csoftmax import __main__ as main_job
    monkeypatch.setattr(main_job, "_time", _fake_time(1e-3, 1.01e-3))
    monkeypatch.setattr(main_job, "_load_average", lambda: 9.5)
    monkeypatch.setattr(main_job, "_cpu_count", lambda: 2)
    main_job.benchmark(budget=0.0)
    assert ("note: this machine is busy (load average 9.5 on 2 cores); timings are noisy"
            in capsys.readouterr().out)


def test_main_job_prints_no_note_on_a_quiet_machine(monkeypatch, capsys):
    from csoftmax import __main__ as main_job
    monkeypatch.setattr(main_job, "_time", _fake_time(1e-3, 1.1e-3))
    monkeypatch.setattr(main_job, "_load_average", lambda: 0.5)
    main_job.benchmark(budget=0.0)
    assert "note:" not in capsys.readouterr().out


def test_busy_note_without_a_load_average():
    from csoftmax.__main__ import busy_note
    assert busy_note([1.0, 1.2], load=None, cpus=4) is None
    assert "noisy" in busy_note([1.0, 3.0], load=None, cpus=4)
