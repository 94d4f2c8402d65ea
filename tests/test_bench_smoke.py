"""bench/bench_targets.py runs end to end and its report has every section.

A smoke test, not a timed test: the harness's quick mode on the two tiny
'smoke' cases, one thread, one round, NumPy as the only peer (the other
peers' imports and JIT compiles would take longer than the whole run; a peer
that is not installed is skipped by the harness anyway). It checks the
report's structure, that csoftmax was timed under every ISA this CPU runs,
that the targets section judges what was measured, and that
bench/readme_table.py turns the JSON into a README table with the ISA
columns. Under 15 s on a 2-core machine.
"""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import csoftmax

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench" / "bench_targets.py"
TABLE = ROOT / "bench" / "readme_table.py"
LABEL = {"avx512": "AVX-512", "avx2": "AVX2", "baseline": "baseline"}

pytestmark = pytest.mark.skipif(not BENCH.is_file(), reason="bench/ is not here (tests run outside the source tree)")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "targets.md"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("CSOFTMAX_ISA", None)
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--cases", "smoke", "--threads", "1", "--rounds", "1",
         "--sample-ms", "0.5", "--peers", "numpy", "--out", str(out)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    md = out.read_text()
    assert proc.stdout.strip() == md.strip()  # the report also goes to stdout
    return md, json.loads(out.with_suffix(".json").read_text())


def test_report_has_every_section(report):
    md, _ = report
    for heading in ("## Machine", "## Summary", "## Results", "### softmax", "## Targets (issue 14)"):
        assert re.search(rf"^{re.escape(heading)}", md, flags=re.M), heading
    assert "Load average" in md and "last-level cache" in md


def test_csoftmax_is_timed_under_every_isa_of_this_cpu(report):
    md, res = report
    isas = csoftmax.kernels.supported_isas()
    assert sorted(res["isas"]) == sorted(isas)
    for isa in isas:
        assert f"| {LABEL[isa]} | {LABEL[isa]} out= |" in md
        for case in res["cases"]:
            runs = case["runs"]["1"]
            for name in (f"csoftmax [{isa}]", f"csoftmax [{isa}] out="):
                assert runs[name]["status"] == "ok" and runs[name]["best_s"] > 0, (case["id"], name)


def test_peers_and_limits_are_measured_in_the_same_run(report):
    _, res = report
    for case in res["cases"]:
        runs = case["runs"]["1"]
        assert any(e["family"] == "numpy" and e.get("best_s") for e in runs.values())
        kinds = {e.get("kind") for e in runs.values() if e["family"] == "limit" and e.get("best_s")}
        assert {"copy", "np.exp"} <= kinds, kinds


def test_targets_judge_the_measured_tiny_cases(report):
    md, _ = report
    rows = [ln for ln in md.splitlines() if ln.startswith("| softmax 1×10 f32 allocating")]
    assert rows, "no target row for the 1x10 call"
    assert all(("PASS" in r or "MISS" in r) for r in rows)
    assert "Not measured in this run" in md  # the large cases were not in this run


def test_readme_table_has_the_isa_columns(report, tmp_path):
    _, res = report
    js = tmp_path / "targets.json"
    js.write_text(json.dumps(res))
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- bench_targets table: start -->\nold\n<!-- bench_targets table: end -->\nrest\n")
    subprocess.run([sys.executable, str(TABLE), str(js), "--readme", str(readme)], check=True,
                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("rest\n") and "\nold\n" not in text
    assert res["machine"]["cpu_model"] in text
    for isa in ("avx512", "avx2"):
        if isa in res["isas"]:
            assert f"{LABEL[isa]}: csoftmax" in text
    assert "| softmax | 1×10 | float32 | 1 |" in text


def test_on_an_avx512_cpu_the_avx2_column_has_peers_pinned_to_avx2(report):
    _, res = report
    if not {"avx512", "avx2"} <= set(res["isas"]):
        pytest.skip("the pinned peers run only on a CPU with AVX-512")
    assert "avx2" in res["pinned_peers"]
    for case in res["cases"]:
        pinned = [e for e in case["runs"]["1"].values() if e.get("peer_isa") == "avx2"]
        assert any(e["family"] == "numpy" and e.get("best_s") for e in pinned), case["id"]
        assert any(e.get("kind") == "np.exp" and e.get("best_s") for e in pinned), case["id"]


def test_each_isa_column_is_judged_against_its_own_pinned_peers():
    sys.path.insert(0, str(ROOT / "bench"))
    from targets_report import best_peer, flags, runs_for

    def entry(impl, s, family="torch", **kw):
        return dict(impl=impl, best_s=s, family=family, status="ok", alloc=True, threads_used=1, **kw)

    runs = {"csoftmax [avx512]": entry("csoftmax [avx512]", 2.0, "csoftmax"),
            "csoftmax [avx2]": entry("csoftmax [avx2]", 3.0, "csoftmax"),
            "torch": entry("torch", 1.0),
            "torch [avx2]": entry("torch [avx2]", 4.0, peer_isa="avx2")}
    assert best_peer(runs_for(runs, "avx512"))["impl"] == "torch"
    assert best_peer(runs_for(runs, "avx2"))["impl"] == "torch [avx2]"
    assert flags(runs, "avx512") and not flags(runs, "avx2")
    # No pinned peers for an ISA: its column is judged against the unpinned ones.
    assert best_peer(runs_for(runs, "baseline"))["impl"] == "torch"


def test_the_allocating_jacobian_is_judged_against_empty_and_fill_in_its_own_process():
    # np.empty + fill costs what the process's allocator makes it cost: the
    # allocating target compares the call with the one timed in the same
    # csoftmax worker, never with a cheaper one from the peers' process.
    sys.path.insert(0, str(ROOT / "bench"))
    import targets_cases
    from targets_report import _check

    own = targets_cases.OWN_EMPTY_FILL

    def lim(impl, s, kind, **kw):
        return dict(impl=impl, best_s=s, family="limit", kind=kind, method="m", status="ok",
                    alloc=True, threads_used=1, **kw)

    runs = {"csoftmax [avx512]": dict(impl="csoftmax [avx512]", best_s=6.0, family="csoftmax",
                                      status="ok", alloc=True, threads_used=1),
            "empty+fill [np.empty + fill]": lim("empty+fill [np.empty + fill]", 1.0, "empty+fill"),
            f"{own} [avx512]": lim(f"{own} [avx512]", 5.0, own, isa="avx512"),
            f"{own} [avx2]": lim(f"{own} [avx2]", 0.5, own, isa="avx2")}
    tg = next(t for t in targets_cases.TARGETS if t["id"] == "jacobian-alloc")
    row = {"bound": 1.3}
    _check(tg, runs, "avx512", 1, row)
    assert row["value"] == pytest.approx(6.0 / 5.0) and row["status"] == "PASS"


OFFSETS = ROOT / "bench" / "bench_offsets.py"


def test_offsets_bench_times_every_function_at_every_offset():
    # bench_offsets.py's quick mode, one round: a row per function, vector ISA
    # and thread count, the five layouts timed (logsumexp, whose output is a
    # value per row, the three where the output lies as the input does), each
    # as a ratio to both on a line.
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("CSOFTMAX_ISA", None)
    proc = subprocess.run([sys.executable, str(OFFSETS), "--quick", "--reps", "1"], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if re.match(r"^\w+\s+1024 x 1000\s", line)]
    isas = [i for i in csoftmax.kernels.supported_isas() if i != "baseline"] or ["baseline"]
    funcs = ["softmax", "log_softmax", "logsumexp", "softmax_backward", "log_softmax_backward"]
    assert sorted((r.split()[0], r.split()[4], r.split()[5]) for r in rows) == sorted(
        (f, i, t) for f in funcs for i in isas for t in ("1", "2"))
    for row in rows:
        cells = row.split("|")[1:]
        timed = [c for c in cells if c.strip()]
        assert len(cells) == 5 and len(timed) == (3 if row.startswith("logsumexp") else 5), row
        assert "(1.00x)" in cells[0], row
        assert all(re.fullmatch(r"\s*\d+\.\d \(\d+\.\d\dx\)\s*", c) for c in timed), row
