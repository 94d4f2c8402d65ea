"""The markdown report of bench_targets.py's results, and the targets check.

Sections: Machine, Summary, one table per op (every case and thread count:
the limits, csoftmax per ISA allocating and with out=, every peer, the
fastest peer, a FLAG where csoftmax is not the fastest), Targets (issue 14's
numeric goals, PASS/MISS per ISA and thread count), Notes.
"""
import json

import targets_cases

LOAD_WARN = 1.5  # 1-minute load average above which the times are noise


def fmt_time(s):
    if s is None:
        return "–"
    if s < 1e-3:
        return f"{s * 1e6:.3g} µs"
    if s < 1:
        return f"{s * 1e3:.3g} ms"
    return f"{s:.3g} s"


def isa_label(isa):
    return {"avx512": "AVX-512", "avx2": "AVX2", "baseline": "baseline"}.get(isa, isa)


# --------------------------------------------------------------------------
# Lookups in one case's run at one thread count
# --------------------------------------------------------------------------
def runs_for(runs, isa):
    """The entries that an ISA's column is judged against: csoftmax's, the
    limits timed in that ISA's csoftmax worker (own_limit_impls in
    bench_targets.py), and the peers and limits pinned to that ISA where the
    run has them (see PIN_ENV in bench_targets.py), else the unpinned ones."""
    pinned = any(e.get("peer_isa") == isa for e in runs.values())

    def keep(e):
        if e["family"] == "csoftmax":
            return True
        if e["family"] == "limit" and e.get("isa"):
            return e["isa"] == isa
        return e.get("peer_isa") == (isa if pinned else None)
    return {n: e for n, e in runs.items() if keep(e)}


def limit(runs, kind, t):
    """(best seconds, method) of the fastest method of a limit with <= t threads."""
    es = [e for e in runs.values() if e["family"] == "limit" and e.get("kind") == kind
          and e["threads_used"] <= t and "best_s" in e]
    if not es:
        return None, None
    e = min(es, key=lambda e: e["best_s"])
    return e["best_s"], e["method"]


def cs_entry(runs, isa, variant):
    name = f"csoftmax [{isa}]" + (" out=" if variant == "out" else "")
    e = runs.get(name)
    return e if e and e.get("status") == "ok" and "best_s" in e else None


def cs_best(runs, isa):
    es = [e for e in (cs_entry(runs, isa, "alloc"), cs_entry(runs, isa, "out")) if e]
    return min(es, key=lambda e: e["best_s"]) if es else None


def best_peer(runs, alloc_only=False):
    es = [e for e in runs.values() if e["family"] not in ("csoftmax", "limit")
          and e.get("status") == "ok" and "best_s" in e and (e["alloc"] or not alloc_only)]
    return min(es, key=lambda e: e["best_s"]) if es else None


def flags(runs, isa):
    """Why csoftmax under `isa` is not the fastest here ([] when it is)."""
    runs = runs_for(runs, isa)
    out = []
    b, bp = cs_best(runs, isa), best_peer(runs)
    if b and bp and bp["best_s"] < b["best_s"]:
        out.append(f"{bp['impl']} {b['best_s'] / bp['best_s']:.2f}× faster")
    a, ap = cs_entry(runs, isa, "alloc"), best_peer(runs, alloc_only=True)
    if a and ap and ap["best_s"] < a["best_s"] and not out:
        out.append(f"allocating: {ap['impl']} {a['best_s'] / ap['best_s']:.2f}× faster")
    return out


# --------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------
def evaluate(results):
    """[{target, case, threads, isa, value, bound, status, text}] for every
    target, measured case, thread count and ISA."""
    cases = {c["id"]: c for c in results["cases"]}
    rows = []
    for tg in targets_cases.TARGETS:
        for cid in targets_cases.target_cases(tg):
            c = cases.get(cid)
            for t in results["config"]["threads"]:
                bound = tg["bound"].get(t)
                if bound is None:
                    continue
                for isa in results["isas"]:
                    row = {"target": tg["id"], "case": cid, "threads": t, "isa": isa, "bound": bound,
                           "kind": tg["kind"], "value": None, "status": "not measured", "ref": ""}
                    runs = c["runs"].get(str(t)) if c else None
                    if runs:
                        _check(tg, runs, isa, t, row)
                    rows.append(row)
    return rows


def _check(tg, runs, isa, t, row):
    runs = runs_for(runs, isa)
    if tg["kind"] == "limit":
        e = cs_entry(runs, isa, tg["variant"])
        lim, method = limit(runs, tg["limit"], t)
        if e and lim:
            row["value"] = e["best_s"] / lim
            row["ref"] = f"{tg['limit']} {fmt_time(lim)}"
            row["status"] = "PASS" if row["value"] <= row["bound"] else "MISS"
    elif tg["kind"] == "peer":
        e, bp = cs_best(runs, isa), best_peer(runs)
        if e and bp:
            row["value"] = bp["best_s"] / e["best_s"]
            row["ref"] = f"{bp['impl']} {fmt_time(bp['best_s'])}"
            row["status"] = "PASS" if row["value"] >= row["bound"] else "MISS"
        elif e:
            row["status"] = "no peer"
    elif tg["kind"] == "abs":
        e = cs_entry(runs, isa, tg["variant"])
        if e:
            row["value"] = e["best_s"]
            row["status"] = "PASS" if row["value"] <= row["bound"] else "MISS"


def fmt_target_value(row):
    if row["value"] is None:
        return row["status"]
    if row["kind"] == "abs":
        v, b = fmt_time(row["value"]), f"≤ {fmt_time(row['bound'])}"
    elif row["kind"] == "peer":
        v, b = f"{row['value']:.2f}×", f"≥ {row['bound']:g}×"
    else:
        v, b = f"{row['value']:.2f}×", f"≤ {row['bound']:g}×"
    return f"{v} {row['status']}" if row["status"] == "PASS" else f"**{v} MISS** ({b})"


# --------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------
def machine_lines(results):
    m = results["machine"]
    L = [f"- Date (UTC): {results['date']}; command: `{results['command']}`; "
         f"wall time {results.get('wall_s', 0):.0f} s"]
    L.append(f"- CPU: {m['cpu_model']}; {m['logical_cpus']} logical CPUs, "
             f"{m.get('physical_cores') or '?'} physical cores, {m['usable_cpus']} usable; "
             f"last-level cache {m['llc_text']}; {m.get('mem_gib', '?')} GiB")
    L.append(f"- ISA flags: {', '.join(m['isa_flags']) or 'none of AVX'}; csoftmax ISAs measured: "
             f"{', '.join(isa_label(i) for i in results['isas']) or 'none'}"
             + (f" ({results['isa_note']})" if results.get("isa_note") else ""))
    la0, la1 = m.get("loadavg_start"), m.get("loadavg_end")
    warn = ""
    if any(la and la[0] > LOAD_WARN for la in (la0, la1)):
        warn = (f" — **WARNING: load average above {LOAD_WARN}: other work shared the CPUs, "
                "the times are noise**")
    L.append(f"- Load average (1/5/15 min) at start {la0}, at end {la1}{warn}")
    versions = {}
    for w in results["workers"].values():
        versions.update(w.get("info", {}).get("versions", {}))
    L.append("- Versions: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())))
    paths = {w["info"]["csoftmax_path"] for w in results["workers"].values() if w.get("info", {}).get("csoftmax_path")}
    if paths:
        L.append(f"- csoftmax imported from {', '.join(sorted(paths))}")
    for label, w in results["workers"].items():
        if not w["ok"]:
            L.append(f"- Skipped {label}: {w['skipped']}")
        for fam, why in sorted(w.get("info", {}).get("skipped", {}).items()):
            L.append(f"- Skipped {fam}: {why}")
        if w.get("info", {}).get("numba_threading_layer"):
            L.append(f"- Numba threading layer: {w['info']['numba_threading_layer']}")
    for pin, env in sorted(results.get("pinned_peers", {}).items()):
        L.append(f"- peers pinned to {isa_label(pin)} (\"<peer> [{pin}]\"): "
                 + ", ".join(f"{k}=`{v}`" for k, v in env.items()))
    for label, j in sorted(results.get("workers_xla_flags", {}).items()):
        L.append(f"- {label}: own process on CPUs {j['cpus']}, XLA_FLAGS=`{j['xla_flags']}`")
    tp = results["config"]["timing"]
    if results.get("harness_overhead_s") is not None:
        L.append(f"- Timing loop overhead: {fmt_time(results['harness_overhead_s'])} per call (a no-op "
                 "closure through the same loop; included in every time, as in a caller's loop)")
    L.append(f"- Timing: {tp['rounds']} rounds per case and thread count, workers in rotated order; "
             f"samples of ≥ {tp['sample_ms']:g} ms of calls, {tp['min_samples']}–{tp['max_samples']} "
             f"per implementation per round; best per-call time reported; "
             + (f"rotated copies ≤ {tp['rotate_mib']} MiB per process" if tp["rotate_mib"] > 0
                else "no rotated copies (every case may sit in the LLC)"))
    return L


def op_table(results, op):
    cases = [c for c in results["cases"] if c["op"] == op]
    isas = results["isas"]
    limits = targets_cases.LIMITS_FOR[op]
    prim = targets_cases.PRIMARY_LIMIT[op]
    peers = []
    for c in cases:
        for runs in c["runs"].values():
            for n, e in runs.items():
                if e["family"] not in ("csoftmax", "limit") and n not in peers:
                    peers.append(n)
    hdr = ["case", "thr"] + list(limits)
    for isa in isas:
        hdr += [f"{isa_label(isa)}", f"{isa_label(isa)} out="]
    hdr += ["fastest peer"] + [f"speed-up {isa_label(i)}" for i in isas] + ["FLAG"] + peers
    L = ["| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
    n_flag = {i: 0 for i in isas}
    for c in cases:
        for t in results["config"]["threads"]:
            runs = c["runs"].get(str(t))
            if not runs:
                continue
            row = [f"{c['shape'][0]}×{c['shape'][1]} {c['dtype']}", str(t)]
            native = runs_for(runs, None)
            lims = {k: limit(native, k, t)[0] for k in limits}
            row += [fmt_time(lims[k]) for k in limits]
            p = lims.get(prim)
            for isa in isas:
                mine = runs_for(runs, isa)
                for v in ("alloc", "out"):
                    e = cs_entry(mine, isa, v)
                    ref = limit(mine, prim if not (op == "jacobian" and v == "alloc")
                                else targets_cases.OWN_EMPTY_FILL, t)[0]
                    row.append(_cell(e, ref, runs.get(f"csoftmax [{isa}]" + (" out=" if v == "out" else ""))))
            bp = best_peer(native)
            row.append(f"{bp['impl']} {fmt_time(bp['best_s'])}" if bp else "–")
            fl = []
            for isa in isas:
                b, bpi = cs_best(runs, isa), best_peer(runs_for(runs, isa))
                row.append(f"{bpi['best_s'] / b['best_s']:.2f}×" if b and bpi else "–")
                f = flags(runs, isa)
                if f:
                    n_flag[isa] += 1
                    fl.append(f"{isa_label(isa)}: " + "; ".join(f))
            row.append(("**FLAG** " + " · ".join(fl)) if fl else "")
            for n in peers:
                row.append(_cell(runs.get(n), p if runs.get(n, {}).get("alloc") is False or op != "jacobian"
                                 else lims.get("empty+fill"), runs.get(n)))
            L.append("| " + " | ".join(row) + " |")
    return L, n_flag


def _cell(e, ref, raw):
    if e is None:
        if raw is None:
            return "–"
        return raw.get("status", "?") if raw.get("status") != "ok" else "–"
    s = fmt_time(e["best_s"])
    return f"{s} ({e['best_s'] / ref:.2f}×)" if ref else s


def markdown(results):
    quick = results["config"]["quick"]
    L = [f"# csoftmax against its peers and the machine's limits, per ISA ({'quick' if quick else 'full'})", ""]
    L += ["## Machine", ""] + machine_lines(results) + [""]
    ops = [op for op in ("softmax", "log_softmax", "logsumexp", "softmax_backward", "log_softmax_backward",
                         "jacobian") if any(c["op"] == op for c in results["cases"])]
    tables, flags_total = [], {i: 0 for i in results["isas"]}
    for op in ops:
        tl, nf = op_table(results, op)
        tables.append((op, tl))
        for i, n in nf.items():
            flags_total[i] += n
    rows = evaluate(results)
    L += ["## Summary", ""]
    n_cells = sum(len(c["runs"]) for c in results["cases"])
    L.append(f"- {len(results['cases'])} cases, {n_cells} case × thread-count cells.")
    for isa in results["isas"]:
        mine = [r for r in rows if r["isa"] == isa and r["status"] in ("PASS", "MISS")]
        met = sum(r["status"] == "PASS" for r in mine)
        L.append(f"- {isa_label(isa)}: csoftmax is not the fastest (FLAG) in {flags_total[isa]} of "
                 f"{n_cells} cells; targets met: {met} of {len(mine)} measured")
    L.append("")
    L += ["## Results", "",
          "Best time per call over all rounds; in brackets the ratio to the op's primary limit "
          "measured in the same run at the same thread count (copy for softmax and log_softmax, "
          "np.exp for logsumexp, the 3-array add for the backward ops, fill of the (N, K, K) output "
          "for the Jacobian with out= and np.empty + fill for allocating Jacobian calls). "
          "*speed-up* = fastest correct peer (any variant) / csoftmax's faster variant under that ISA; "
          "where the run has peers pinned to an ISA (\"<peer> [avx2]\"), that ISA's column, ratios, "
          "FLAGs and targets are judged against them and their limits. "
          "**FLAG**: csoftmax is not the fastest (or its allocating call loses to an allocating peer). "
          "Single-threaded peers show their 1-thread time at 2 threads.", ""]
    for k, v in targets_cases.LIMIT_TEXT.items():
        L.append(f"- *{k}*: {v}")
    L.append("")
    for op, tl in tables:
        L += [f"### {op}", ""] + tl + [""]
    L += ["## Targets (issue 14)", "",
          "Each target per ISA and thread count: the ratio (or time) and PASS/MISS; *not measured* "
          "where the run did not include the case.", ""]
    isas = results["isas"]
    hdr = ["target", "case", "thr", "reference"] + [isa_label(i) for i in isas]
    L += ["| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
    text = {t["id"]: t["text"] for t in targets_cases.TARGETS}
    by = {}
    for r in rows:
        by.setdefault((r["target"], r["case"], r["threads"]), {})[r["isa"]] = r
    unmeasured = {}
    for (tid, cid, t), per in by.items():
        if all(r["status"] == "not measured" for r in per.values()):
            unmeasured.setdefault(tid, set()).add(cid)
            continue
        ref = next((r["ref"] for r in per.values() if r["ref"]), "")
        L.append("| " + " | ".join([text[tid], cid, str(t), ref]
                                   + [fmt_target_value(per[i]) if i in per else "–" for i in isas]) + " |")
    L.append("")
    if unmeasured:
        L.append("Not measured in this run (the case was not selected): "
                 + "; ".join(f"{text[t]}: {', '.join(sorted(c))}" for t, c in unmeasured.items()) + ".")
        L.append("")
    notes = []
    for c in results["cases"]:
        if c["rotate"]:
            notes.append(f"- {c['id']}: rotated inputs/outputs: {c['rotate_note']}")
    seen = set()
    for c in results["cases"]:
        for t, runs in c["runs"].items():
            for n, e in runs.items():
                if e.get("status") in ("WRONG", "ERROR"):
                    notes.append(f"- {e['status']}: {n}, {c['id']} t={t}: {e.get('reason', '')}")
                if e.get("note") and (n, e["note"]) not in seen:
                    seen.add((n, e["note"]))
                    notes.append(f"- {n}: {e['note']}")
    if notes:
        L += ["## Notes", ""] + notes + [""]
    return "\n".join(L)


if __name__ == "__main__":  # re-render a saved report: python targets_report.py targets.json
    import sys

    print(markdown(json.loads(open(sys.argv[1]).read())))
