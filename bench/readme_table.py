#!/usr/bin/env python
"""Write README.md's benchmark table from bench_targets.py's JSON results.

    python bench/bench_targets.py --out bench/results/targets.md
    python bench/readme_table.py bench/results/targets.json             # rewrites README.md
    python bench/readme_table.py a.json b.json --readme README.md --dry-run

The table goes between the README's markers
<!-- bench_targets table: start --> and <!-- bench_targets table: end -->;
everything else in the README stays as it is. One column per ISA (AVX-512,
AVX2) of each report, with the machine named above the table; give two
reports (an AVX-512 machine and an AVX2-only one) to show both machines.
"""
import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import targets_cases  # noqa: E402
from targets_report import best_peer, cs_best, cs_entry, fmt_time, limit, runs_for  # noqa: E402

START = "<!-- bench_targets table: start -->"
END = "<!-- bench_targets table: end -->"
SHOWN_ISAS = ("avx512", "avx2")
LABEL = {"avx512": "AVX-512", "avx2": "AVX2"}


def machine_line(res):
    m = res["machine"]
    v = {}
    for w in res["workers"].values():
        v.update(w.get("info", {}).get("versions", {}))
    vers = ", ".join(f"{k} {v[k]}" for k in ("numpy", "scipy", "numba", "torch", "jax") if k in v)
    la = m.get("loadavg_start")
    return (f"{m['cpu_model']}, {m.get('physical_cores') or '?'} cores ({m['usable_cpus']} usable), "
            f"last-level cache {m['llc_text']}, {m.get('mem_gib', '?')} GiB; "
            f"{res['date'][:10]}, Python {m['python']}, {vers}; load average at start {la}")


def table(reports):
    cols = [(ri, isa) for ri, r in enumerate(reports) for isa in SHOWN_ISAS if isa in r["isas"]]
    tag = (lambda ri: "") if len(reports) == 1 else (lambda ri: f" (machine {chr(65 + ri)})")
    L = []
    for ri, r in enumerate(reports):
        L.append(f"Machine{tag(ri)}: {machine_line(r)}.  ")
    missing = [LABEL[i] for i in SHOWN_ISAS if not any(i in r["isas"] for r in reports)]
    if missing:
        L.append(f"No machine here runs {', '.join(missing)}: {'that column is' if len(missing) == 1 else 'those columns are'} absent.  ")
    L.append("Each ISA's cell: csoftmax allocating · with `out=`, and in brackets `out=` against the op's "
             "limit measured in the same run (a copy for softmax and log_softmax, `np.exp` for logsumexp, "
             "the 3-array add for the backward ops, a fill of the output for the Jacobian). *speed-up* = "
             "fastest correct peer at its best variant / csoftmax's faster variant; on an AVX-512 CPU the AVX2 "
             "column's peers and limits are timed pinned to AVX2 (NumPy, torch, Numba and XLA told not to "
             "use AVX-512), as they would run on an AVX2 machine. Every case, "
             "FLAGs and the targets: `bench/results/targets.md`.")
    L.append("")
    hdr = ["op", "shape", "dtype", "threads", f"limit{tag(0)}"]
    hdr += [f"{LABEL[isa]}{tag(ri)}: csoftmax · `out=`" for ri, isa in cols]
    hdr += [f"fastest peer{tag(ri)}" for ri in range(len(reports))]
    hdr += [f"speed-up {LABEL[isa]}{tag(ri)}" for ri, isa in cols]
    L += ["| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
    base = reports[0]
    for c in base["cases"]:
        for t in base["config"]["threads"]:
            row = [c["op"], f"{c['shape'][0]}×{c['shape'][1]}", c["dtype"], str(t)]
            prim = targets_cases.PRIMARY_LIMIT[c["op"]]
            runs0 = c["runs"].get(str(t), {})
            lim0 = limit(runs_for(runs0, None), prim, t)[0]
            row.append(f"{prim} {fmt_time(lim0)}" if lim0 else "–")
            per = []
            for r in reports:
                rc = next((x for x in r["cases"] if x["id"] == c["id"]), None)
                per.append(rc["runs"].get(str(t), {}) if rc else {})
            for ri, isa in cols:
                runs = runs_for(per[ri], isa)
                lim = limit(runs, prim, t)[0]
                a, o = cs_entry(runs, isa, "alloc"), cs_entry(runs, isa, "out")
                txt = f"{fmt_time(a['best_s']) if a else '–'} · {fmt_time(o['best_s']) if o else '–'}"
                if o and lim:
                    txt += f" ({o['best_s'] / lim:.2f}× {prim})"
                row.append(txt)
            for runs in per:
                bp = best_peer(runs_for(runs, None))
                row.append(f"{bp['impl']} {fmt_time(bp['best_s'])}" if bp else "–")
            for ri, isa in cols:
                b, bp = cs_best(per[ri], isa), best_peer(runs_for(per[ri], isa))
                row.append(f"**{bp['best_s'] / b['best_s']:.2f}×**" if b and bp else "–")
            L.append("| " + " | ".join(row) + " |")
    return "\n".join(L)


def replace(readme_text, new):
    if START not in readme_text or END not in readme_text:
        raise SystemExit(f"README has no {START} ... {END} markers")
    head, rest = readme_text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{new}\n{END}{tail}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("reports", nargs="+", help="bench_targets.py JSON results (targets.json)")
    ap.add_argument("--readme", default=str(HERE.parent / "README.md"))
    ap.add_argument("--dry-run", action="store_true", help="print the table, change nothing")
    args = ap.parse_args(argv)
    reports = [json.loads(Path(p).read_text()) for p in args.reports]
    new = table(reports)
    if args.dry_run:
        print(new)
        return
    path = Path(args.readme)
    path.write_text(replace(path.read_text(), new))
    print(f"wrote the table ({new.count(chr(10)) - 2} lines) into {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
