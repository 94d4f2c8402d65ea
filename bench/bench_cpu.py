#!/usr/bin/env python
"""CPU benchmark: csoftmax against NumPy, SciPy, Numba, PyTorch and JAX.

    python bench/bench_cpu.py            # full suite
    python bench/bench_cpu.py --quick    # a subset, about a minute
    python bench/bench_cpu.py --threads 1 --ops softmax,jacobian --out /tmp/r

Writes results.md, results.json and softmax_float32_gbps.png to --out
(default bench/results/, git-ignored); progress goes to stderr.

Method (docs/design.md, "Measuring speed"):
* Inputs are fixed-seed N(0, 4^2) logits; the backward ops get y = the
  forward output (rounded to the dtype) and g ~ N(0, 1).
* Each implementation is called once to warm up (JIT compiles, thread pools
  start, pages fault in); that result is checked against a float64 NumPy
  reference.  A wrong result, or NaN/inf where the reference is finite, is
  marked WRONG and never ranked.
* Then it is timed in samples; a sample loops over enough calls to last
  about a millisecond, so tiny shapes give per-call times; samples go on
  until the entry has run min_time (0.2 s full) and has min_samples.  We
  report the median per-call time.
* GB/s = (bytes read + bytes written) / time, counting each input and output
  array once: the least traffic the op needs.
* Every cell also times a same-size memory pass in the same run: a copy
  (softmax, log_softmax), a three-array add (backward), a fill of the
  (N, K, K) output (Jacobian; plus np.empty + fill for allocating calls).
  At t threads the reference is the fastest such pass with at most t threads
  (NumPy's single-threaded one, or a Numba prange split into t parts), so
  ratios at each thread count compare like with like.
* Thread control: csoftmax num_threads=, numba.set_num_threads,
  torch.set_num_threads.  NumPy, SciPy and the tutorial's serial Numba code
  are single-threaded: measured once, at the first thread count, and shown
  at the others.  JAX fixes its thread count when XLA starts, so it runs in
  one subprocess per thread count, with XLA_FLAGS and CPU affinity set.
"""
from __future__ import annotations

import argparse
import datetime
import functools
import contextlib
import gc
import io
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers  # noqa: E402
from csoftmax import _reference  # noqa: E402

SHAPES = {
    "forward": [(1, 10), (64, 10), (1024, 10), (4096, 128), (16384, 1000),
                (1024, 32768), (100000, 64), (2048, 4096)],
    "jacobian": [(64, 10), (1000, 100), (256, 512), (10000, 32)],
}
# --quick: the per-call overhead, one cache-resident and one DRAM-sized
# shape per op, float32 only.
QUICK_SHAPES = {
    "forward": [(1, 10), (4096, 128), (16384, 1000)],
    "jacobian": [(64, 10), (1000, 100)],
}
TIMING = {
    # min_time: seconds of calls per entry; min_samples; max_time: stop after
    # this long once 3 samples exist (slow peers); sample: seconds per sample.
    "full": dict(min_time=0.2, min_samples=5, max_time=2.0, sample=2e-3),
    "quick": dict(min_time=0.03, min_samples=3, max_time=0.25, sample=1e-3),
}
SCALE = 4.0  # logits ~ N(0, SCALE^2): rows have a clear max, exps spread widely

JAX_XLA_FLAGS = {
    1: "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def kind_of(op):
    return "jacobian" if op == "jacobian" else "forward"


# --------------------------------------------------------------------------
# Inputs, float64 reference, accuracy check
# --------------------------------------------------------------------------
def make_inputs(op, shape, dtype, seed):
    rng = np.random.default_rng([seed, shape[0], shape[1]])
    x = (rng.standard_normal(shape) * SCALE).astype(dtype)
    if op not in peers.BACKWARD_OPS:
        return {"x": x}
    x64 = x.astype(np.float64)
    y = _reference.reference("softmax" if op == "softmax_backward" else "log_softmax", x64).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    return {"y": y, "g": g}


def reference(op, inp):
    """(float64 reference, absolute scale for the check)."""
    if op in peers.BACKWARD_OPS:
        ref = _reference.reference(op, inp["y"], inp["g"])
        # The terms cancel; errors scale with |g|, not with the result.
        return ref, float(np.abs(ref).max() + np.abs(inp["g"].astype(np.float64)).max())
    ref = _reference.reference("softmax_jacobian" if op == "jacobian" else op, inp["x"])
    return ref, float(np.abs(ref).max()) if ref.size else 1.0


def tolerance(dtype, k):
    # A few ulp per element plus the rounding of a K-term sum (which grows
    # like sqrt(K) ulp for sums of random-signed rounding errors).
    return float((32 * math.sqrt(k) + 64) * np.finfo(dtype).eps)


def check(res, ref, scale, dtype, k):
    """(status, err, reason).  err = max |r - ref| / (|ref| + scale*eps_rel)."""
    res = peers.to_numpy(res)
    if res.shape != ref.shape:
        return "WRONG", None, f"shape {res.shape} != {ref.shape}"
    r = res.astype(np.float64)
    bad = ~np.isfinite(r) & np.isfinite(ref)
    if bad.any():
        return "WRONG", None, f"{int(bad.sum())} NaN/inf where the reference is finite"
    tol = tolerance(dtype, k)
    err = float((np.abs(r - ref) / (np.abs(ref) + scale)).max()) if r.size else 0.0
    if res.dtype != dtype:
        # Accept only if the accuracy is still that of the requested dtype.
        if err > tol:
            return "WRONG", err, f"returns {res.dtype}, error {err:.1e} > tol {tol:.1e}"
    if err > tol:
        return "WRONG", err, f"error {err:.1e} > tol {tol:.1e}"
    return "ok", err, ""


# --------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------
def time_call(fn, p):
    """Median seconds per call, after one warm-up call (done by the caller)."""
    t0 = time.perf_counter()
    fn()
    one = time.perf_counter() - t0
    inner = 1 if one >= p["sample"] else max(1, int(p["sample"] / max(one, 5e-8)))
    samples = []
    gc_was = gc.isenabled()
    gc.disable()  # as timeit does: no collector pauses inside a sample
    try:
        start = time.perf_counter()
        while True:
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            samples.append((time.perf_counter() - t0) / inner)
            elapsed = time.perf_counter() - start
            if len(samples) >= p["min_samples"] and elapsed >= p["min_time"]:
                break
            if len(samples) >= 3 and elapsed >= p["max_time"]:
                break
    finally:
        if gc_was:
            gc.enable()
    q = statistics.quantiles(samples, n=4) if len(samples) >= 2 else [samples[0]] * 3
    return {"time_s": statistics.median(samples), "q1_s": q[0], "q3_s": q[2],
            "samples": len(samples), "calls_per_sample": inner}


def traffic_bytes(op, shape, itemsize):
    n, k = shape
    if op == "jacobian":
        return (n * k + n * k * k) * itemsize  # read x, write J
    if op in peers.BACKWARD_OPS:
        return 3 * n * k * itemsize  # read y, g; write out
    return 2 * n * k * itemsize  # read x; write out


# --------------------------------------------------------------------------
# Same-size memory references
# --------------------------------------------------------------------------
def reference_passes(op, inp, threads, nb):
    """{ref kind: [(method label, threads used, callable, bytes)]}."""
    a = inp["y"] if op in peers.BACKWARD_OPS else inp["x"]
    isz = a.itemsize
    cands = {}
    if op == "jacobian":
        shape = peers.out_shape(op, inp)
        o = np.empty(shape, a.dtype)
        o.fill(0)  # fault the pages in once: "fill" is the out= case
        nbytes = o.size * isz
        cands["fill"] = [("out.fill(0)", 1, functools.partial(o.fill, 0), 0)]
        cands["empty+fill"] = [("np.empty + fill", 1, lambda: np.empty(shape, a.dtype).fill(0), 0)]
        if nb and threads > 1:
            pf = nb["par_fill"]
            flat = o.reshape(-1)
            cands["fill"].append((f"numba prange fill, {threads} parts", threads,
                                  functools.partial(pf, flat, 0.0, threads), 0))
            cands["empty+fill"].append((f"np.empty + numba prange fill, {threads} parts", threads,
                                        lambda: pf(np.empty(shape, a.dtype).reshape(-1), 0.0, threads), 0))
        return {k: [(m, t, f, nbytes) for m, t, f, _ in v] for k, v in cands.items()}
    if op in peers.BACKWARD_OPS:
        y, g = inp["y"], inp["g"]
        o = np.empty_like(y)
        nbytes = 3 * y.size * isz
        c = [("np.add(y, g, out=o)", 1, functools.partial(np.add, y, g, out=o), nbytes)]
        if nb and threads > 1:
            c.append((f"numba prange add, {threads} parts", threads,
                      functools.partial(nb["par_add"], y.reshape(-1), g.reshape(-1), o.reshape(-1), threads),
                      nbytes))
        return {"add": c}
    x = inp["x"]
    dst = np.empty_like(x)
    nbytes = 2 * x.size * isz
    c = [("np.copyto(dst, x)", 1, functools.partial(np.copyto, dst, x), nbytes)]
    if nb and threads > 1:
        c.append((f"numba prange copy, {threads} parts", threads,
                  functools.partial(nb["par_copy"], dst.reshape(-1), x.reshape(-1), threads), nbytes))
    return {"copy": c}


def measure_references(op, shape, dtype, inp, threads, libs, tp):
    nb = None
    if libs.have("numba") and threads > 1:
        libs.mods["numba"].set_num_threads(threads)
        nb = peers._numba_kernels()
    out = {}
    for kind, cands in reference_passes(op, inp, threads, nb).items():
        timed = []
        for method, t_used, fn, nbytes in cands:
            fn()
            m = time_call(fn, tp)
            m.update(method=method, threads_used=t_used, gbps=nbytes / m["time_s"] / 1e9)
            timed.append(m)
        best = min(timed, key=lambda m: m["time_s"])
        out[kind] = dict(best, candidates=timed)
    return out


def ref_kind_for(op, impl_alloc):
    if op == "jacobian":
        return "empty+fill" if impl_alloc else "fill"
    return "add" if op in peers.BACKWARD_OPS else "copy"


# --------------------------------------------------------------------------
# Measuring the implementations of one cell
# --------------------------------------------------------------------------
def measure_impl(impl, op, shape, dtype, inp, ref, scale, threads, tp):
    entry = {"impl": impl.name, "family": impl.family, "alloc": impl.alloc,
             "threads_used": threads if impl.threaded else 1, "note": impl.note}
    try:
        fn = impl.make(inp, threads)
        res = fn()  # warm-up, and the result we check
    except Exception as exc:
        entry.update(status="ERROR", reason=f"{type(exc).__name__}: {exc}"[:300])
        return entry
    status, err, reason = check(res, ref, scale, np.dtype(dtype), shape[1])
    del res
    entry.update(status=status, err=err, tol=tolerance(np.dtype(dtype), shape[1]), reason=reason)
    try:
        entry.update(time_call(fn, tp))
    except Exception as exc:
        entry.update(status="ERROR", reason=f"{type(exc).__name__}: {exc}"[:300])
        return entry
    entry["gbps"] = traffic_bytes(op, shape, np.dtype(dtype).itemsize) / entry["time_s"] / 1e9
    return entry


def cells_for(args):
    ops = args.ops
    shapes = QUICK_SHAPES if args.quick else SHAPES
    return [(op, s, dt) for op in ops for s in shapes[kind_of(op)] for dt in args.dtypes]


def merge_rounds(rounds):
    """Keep, per entry and per reference, the round with the lowest median.

    On a shared (virtual) machine another tenant can take a core for a
    while; repeating the sweep and keeping the best round filters that out
    (for peers and references alike, so ratios stay fair)."""
    if len(rounds) == 1:
        return rounds[0]
    entries, refs = {}, {}
    for part in rounds:
        for e in part["entries"]:
            k = (e["op"], tuple(e["shape"]), e["dtype"], e["threads"], e["impl"])
            old = entries.get(k)
            if old is None or ("time_s" in e and e["time_s"] < old.get("time_s", math.inf)):
                entries[k] = e
        for r in part["references"]:
            k = (r["op"], tuple(r["shape"]), r["dtype"], r["threads"])
            if k not in refs:
                refs[k] = dict(r)
                continue
            for kind, m in r.items():
                if isinstance(m, dict) and m["time_s"] < refs[k][kind]["time_s"]:
                    refs[k][kind] = m
    for e in entries.values():
        e["rounds"] = len(rounds)
    return {"entries": list(entries.values()), "references": list(refs.values())}


def run_main_process(args, libs, tp, results):
    """All cells for the in-process peers, thread counts innermost."""
    cells = cells_for(args)
    t_start = time.perf_counter()
    for ci, (op, shape, dtype) in enumerate(cells, 1):
        inp = make_inputs(op, shape, dtype, args.seed)
        ref, scale = reference(op, inp)
        impls = [i for i in peers.main_impls(op, libs) if args.wants(i)]
        single_done = {}  # unthreaded impl name -> its entry at the first thread count
        for t in args.threads:
            refs = measure_references(op, shape, dtype, inp, t, libs, tp)
            results["references"].append({"op": op, "shape": list(shape), "dtype": dtype,
                                          "threads": t, **refs})
            for impl in impls:
                if not impl.threaded and impl.name in single_done:
                    e = dict(single_done[impl.name], reused_from_threads=args.threads[0])
                else:
                    time.sleep(0.005)  # let a previous peer's OpenMP spin-waits run out
                    e = measure_impl(impl, op, shape, dtype, inp, ref, scale, t, tp)
                    if not impl.threaded:
                        single_done[impl.name] = e
                e = dict(e, op=op, shape=list(shape), dtype=dtype, threads=t)
                results["entries"].append(e)
                if args.verbose:
                    log(f"    {impl.name:18s} {fmt_entry(e)}")
            log(f"[{ci:3d}/{len(cells)} {fmt_clock(time.perf_counter() - t_start)}] "
                f"{op} {fmt_shape(shape)} {dtype} t={t}: {cell_summary(results, op, shape, dtype, t)}")
        del inp, ref
        gc.collect()


# --------------------------------------------------------------------------
# JAX, one subprocess per thread count
# --------------------------------------------------------------------------
def run_jax(args, tp, results):
    for t in args.threads:
        spec = {"cells": [[op, list(s), dt] for op, s, dt in cells_for(args)],
                "threads": t, "timing": tp, "seed": args.seed}
        env = dict(os.environ)
        # One thread: the XLA flags that switch off its Eigen/intra-op pools,
        # and affinity to one core so nothing can use a second.  More threads:
        # XLA's defaults, limited to t cores by affinity.
        if t in JAX_XLA_FLAGS:
            env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + JAX_XLA_FLAGS[t]).strip()
        cpus = sorted(os.sched_getaffinity(0))[:t]
        log(f"JAX worker: {t} thread(s), CPUs {cpus}, XLA_FLAGS={env.get('XLA_FLAGS', '')!r}")
        proc = subprocess.run(
            [sys.executable, __file__, "--_jax-worker", json.dumps(spec)],
            env=env, stdout=subprocess.PIPE, text=True,
            preexec_fn=lambda: os.sched_setaffinity(0, cpus),
        )
        if proc.returncode != 0:
            results["skipped"]["jax"] = f"worker for {t} thread(s) exited with {proc.returncode}"
            log(f"JAX worker failed (exit {proc.returncode}); JAX results for t={t} omitted")
            continue
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        if "skipped" in out:
            results["skipped"]["jax"] = out["skipped"]
            log(f"JAX skipped: {out['skipped']}")
            return
        results["entries"].extend(out["entries"])
        results["machine"]["versions"].update(out["versions"])
        results["jax_threads"][str(t)] = {"cpus": cpus, "xla_flags": env.get("XLA_FLAGS", "")}


def jax_worker(spec_json):
    spec = json.loads(spec_json)
    try:
        import jax
        import jaxlib
    except Exception as exc:
        print(json.dumps({"skipped": f"not importable: {type(exc).__name__}: {exc}"}))
        return
    # Without x64, JAX silently computes float64 inputs in float32.
    jax.config.update("jax_enable_x64", True)
    t = spec["threads"]
    entries = []
    t0 = time.perf_counter()
    cells = spec["cells"]
    for ci, (op, shape, dtype) in enumerate(cells, 1):
        shape = tuple(shape)
        inp = make_inputs(op, shape, dtype, spec["seed"])
        ref, scale = reference(op, inp)
        for impl in peers.jax_impls(op):
            e = measure_impl(impl, op, shape, dtype, inp, ref, scale, t, spec["timing"])
            entries.append(dict(e, op=op, shape=list(shape), dtype=dtype, threads=t))
            log(f"[jax {ci:3d}/{len(cells)} {fmt_clock(time.perf_counter() - t0)}] "
                f"{op} {fmt_shape(shape)} {dtype} t={t}: {impl.name} {fmt_entry(entries[-1])}")
    print(json.dumps({"entries": entries,
                      "versions": {"jax": jax.__version__, "jaxlib": jaxlib.__version__}}))


# --------------------------------------------------------------------------
# Ranking, formatting, outputs
# --------------------------------------------------------------------------
def rank(results):
    """Fill ratio_to_ref and speedup_vs_best_peer; pick the best correct peer per cell."""
    refs = {(r["op"], tuple(r["shape"]), r["dtype"], r["threads"]): r for r in results["references"]}
    groups = {}
    for e in results["entries"]:
        groups.setdefault((e["op"], tuple(e["shape"]), e["dtype"], e["threads"]), []).append(e)
    best = {}
    for key, es in groups.items():
        r = refs.get(key)
        for e in es:
            if "time_s" in e and r:
                kind = ref_kind_for(e["op"], e["alloc"])
                e["ref_kind"] = kind
                e["ratio_to_ref"] = e["time_s"] / r[kind]["time_s"]
        ok_peers = [e for e in es if e["family"] != "csoftmax" and e.get("status") == "ok" and "time_s" in e]
        if ok_peers:
            b = min(ok_peers, key=lambda e: e["time_s"])
            best[key] = b
            for e in es:
                if "time_s" in e:
                    e["speedup_vs_best_peer"] = b["time_s"] / e["time_s"]
    results["best_peer"] = [{"op": k[0], "shape": list(k[1]), "dtype": k[2], "threads": k[3],
                             "impl": b["impl"], "time_s": b["time_s"]} for k, b in best.items()]
    return refs, groups, best


def fmt_time(s):
    if s is None:
        return "–"
    if s < 1e-3:
        return f"{s * 1e6:.3g} µs"
    if s < 1:
        return f"{s * 1e3:.3g} ms"
    return f"{s:.3g} s"


def fmt_clock(s):
    return f"{int(s // 60)}:{int(s % 60):02d}"


def fmt_shape(shape):
    return "×".join(str(d) for d in shape)


def fmt_entry(e):
    if e.get("status") == "ERROR":
        return "ERROR " + e.get("reason", "")
    s = fmt_time(e.get("time_s"))
    return s if e.get("status") == "ok" else f"WRONG {s} ({e.get('reason')})"


def cell_summary(results, op, shape, dtype, t):
    es = [e for e in results["entries"]
          if e["op"] == op and tuple(e["shape"]) == tuple(shape) and e["dtype"] == dtype and e["threads"] == t]
    r = [r for r in results["references"]
         if r["op"] == op and tuple(r["shape"]) == tuple(shape) and r["dtype"] == dtype and r["threads"] == t]
    parts = []
    if r:
        kind = ref_kind_for(op, False)
        parts.append(f"ref {fmt_time(r[-1][kind]['time_s'])}")
    cs = [e for e in es if e["impl"] == "csoftmax"]
    if cs:
        parts.append(f"csoftmax {fmt_entry(cs[0])}")
    ok = [e for e in es if e["family"] != "csoftmax" and e.get("status") == "ok" and "time_s" in e]
    if ok:
        b = min(ok, key=lambda e: e["time_s"])
        parts.append(f"best peer {b['impl']} {fmt_time(b['time_s'])}")
    wrong = [e["impl"] for e in es if e.get("status") in ("WRONG", "ERROR")]
    if wrong:
        parts.append("WRONG/ERROR: " + ", ".join(wrong))
    return " | ".join(parts)


def write_markdown(results, path):
    refs, groups, best = rank(results)
    m = results["machine"]
    L = []
    L.append(f"# csoftmax CPU benchmark ({'quick' if results['config']['quick'] else 'full'})")
    L.append("")
    L.append(f"- Date: {results['date']}; command: `{results['command']}`; wall time {fmt_clock(results['wall_s'])}")
    L.append(f"- CPU: {m['cpu_model']}, {m['cpu_count']} logical CPUs ({m['affinity']} usable), "
             f"{m.get('mem_gib', '?')} GiB; ISA flags: {', '.join(m['isa_flags']) or 'baseline'}")
    la0, la1 = m.get("loadavg_start"), m.get("loadavg_end")
    if la0:
        busy = " — **the machine was busy before the run started: treat the times as noisy**" \
            if la0[0] > 0.5 * m["affinity"] else ""
        L.append(f"- Load average (1/5/15 min) at start {la0}, at end {la1}{busy}")
    L.append("- Versions: " + ", ".join(f"{k} {v}" for k, v in sorted(m["versions"].items())))
    if results.get("csoftmax_config") is not None:
        L.append(f"- csoftmax show_config(): `{json.dumps(results['csoftmax_config'], default=str)}`")
    for fam, why in sorted(results["skipped"].items()):
        L.append(f"- Skipped {fam}: {why}")
    for t, j in sorted(results["jax_threads"].items()):
        L.append(f"- JAX at {t} thread(s): separate process on CPUs {j['cpus']}, XLA_FLAGS=`{j['xla_flags']}`")
    if results["config"]["repeat"] > 1:
        L.append(f"- In-process sweep repeated {results['config']['repeat']} times; each entry and reference "
                 "shows its best round (JAX: one round)")
    L.append(f"- Timing harness overhead: {fmt_time(results['harness_overhead_s'])} per call (included in every time)")
    L.append("")
    L.append("Cells show the median time per call and, in brackets, its ratio to the same-size memory "
             "reference measured in the same run at the same thread count (copy for softmax/log_softmax, "
             "`np.add(y, g, out=o)` for backward, `fill` of the (N,K,K) output for the Jacobian, "
             "`np.empty`+fill for allocating Jacobian calls). GB/s = (bytes read + written) / time. "
             "*speed-up* = fastest correct peer's time / csoftmax's time (> 1: csoftmax faster). "
             "WRONG entries failed the float64-reference check and are not ranked. "
             "Single-threaded peers (NumPy, SciPy, the tutorial's Numba) show their 1-thread time in the 2-thread rows.")
    L.append("")
    ops = [op for op in peers.OPS if any(e["op"] == op for e in results["entries"])]
    for op in ops:
        es_op = [e for e in results["entries"] if e["op"] == op]
        names = []
        for e in es_op:
            if e["impl"] not in names:
                names.append(e["impl"])
        peer_names = [n for n in names if not n.startswith("csoftmax")]
        cs_names = [n for n in names if n.startswith("csoftmax")]
        refname = {"jacobian": "fill / empty+fill", "softmax_backward": "add", "log_softmax_backward": "add"}.get(op, "copy")
        L.append(f"## {op}")
        L.append("")
        hdr = ["shape", "dtype", "thr", f"ref ({refname})", "ref GB/s"]
        for n in cs_names:
            hdr += [n, f"{n} GB/s"]
        hdr += ["best peer", "speed-up"] + peer_names
        L.append("| " + " | ".join(hdr) + " |")
        L.append("|" + "---|" * len(hdr))
        keys = sorted({(tuple(e["shape"]), e["dtype"], e["threads"]) for e in es_op},
                      key=lambda k: (SHAPES_ORDER.get(k[0], 99), k[1], k[2]))
        for shape, dtype, t in keys:
            key = (op, shape, dtype, t)
            by = {e["impl"]: e for e in groups.get(key, [])}
            r = refs.get(key)
            row = [fmt_shape(shape), dtype, str(t)]
            if r:
                if op == "jacobian":
                    row += [f"{fmt_time(r['fill']['time_s'])} / {fmt_time(r['empty+fill']['time_s'])}",
                            f"{r['fill']['gbps']:.1f}"]
                else:
                    k = ref_kind_for(op, False)
                    row += [fmt_time(r[k]["time_s"]), f"{r[k]['gbps']:.1f}"]
            else:
                row += ["–", "–"]
            for n in cs_names:
                e = by.get(n)
                row += [cell_text(e), f"{e['gbps']:.1f}" if e and "gbps" in e else "–"]
            b = best.get(key)
            cs = by.get("csoftmax")
            row.append(f"{b['impl']} {fmt_time(b['time_s'])}" if b else "–")
            row.append(f"**{cs['speedup_vs_best_peer']:.2f}×**" if cs and "speedup_vs_best_peer" in cs else "–")
            for n in peer_names:
                row.append(cell_text(by.get(n)))
            L.append("| " + " | ".join(row) + " |")
        L.append("")
    notes = {}
    for e in results["entries"]:
        if e.get("note"):
            notes[f"{e['impl']} ({e['op']})"] = e["note"]
    wrong = {}
    for e in results["entries"]:
        if e.get("status") in ("WRONG", "ERROR"):
            wrong.setdefault((e["impl"], e["op"], e["status"], e.get("reason", "")), []).append(
                f"{fmt_shape(e['shape'])} {e['dtype']} t={e['threads']}")
    if notes or wrong:
        L.append("## Notes")
        L.append("")
        for k, v in sorted(notes.items()):
            L.append(f"- {k}: {v}")
        for (impl, op, st, why), where in sorted(wrong.items()):
            L.append(f"- {st}: {impl} {op} — {why} — {', '.join(sorted(set(where)))}")
        L.append("")
    Path(path).write_text("\n".join(L))


SHAPES_ORDER = {s: i for i, s in enumerate(SHAPES["forward"] + SHAPES["jacobian"])}


def cell_text(e):
    if e is None:
        return "–"
    if e.get("status") == "ERROR":
        return "ERROR"
    t = fmt_time(e.get("time_s"))
    ratio = f" ({e['ratio_to_ref']:.1f}×)" if "ratio_to_ref" in e else ""
    return f"{t}{ratio}" if e.get("status") == "ok" else f"WRONG {t}"


def write_plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dtype = "float32"
    es = [e for e in results["entries"] if e["op"] == "softmax" and e["dtype"] == dtype and "gbps" in e]
    if not es:
        return False
    threads = sorted({e["threads"] for e in es})
    # One point per K: the largest N*K shape with that K (the small ones
    # measure call overhead, which the tables show).
    shapes = {}
    for e in es:
        n, k = e["shape"]
        if k not in shapes or n * k > shapes[k][0] * shapes[k][1]:
            shapes[k] = (n, k)
    ks = sorted(shapes)
    fig, axes = plt.subplots(1, len(threads), figsize=(6.5 * len(threads), 4.8), sharey=True, squeeze=False)
    for ax, t in zip(axes[0], threads):
        impls = []
        for e in es:
            if e["threads"] == t and e["impl"] not in impls:
                impls.append(e["impl"])
        for name in impls:
            xs, ys, wx, wy = [], [], [], []
            for k in ks:
                e = next((e for e in es if e["threads"] == t and e["impl"] == name
                          and tuple(e["shape"]) == shapes[k]), None)
                if e is None:
                    continue
                (xs if e["status"] == "ok" else wx).append(k)
                (ys if e["status"] == "ok" else wy).append(e["gbps"])
            style = dict(lw=2.5, color="black") if name == "csoftmax" else dict(lw=1.2)
            line, = ax.plot(xs, ys, marker="o", label=name, **style)
            if wx:
                ax.plot(wx, wy, "x", color=line.get_color(), ms=9, label=f"{name} (WRONG)")
        rx, ry = [], []
        for k in ks:
            r = next((r for r in results["references"] if r["op"] == "softmax" and r["dtype"] == dtype
                      and r["threads"] == t and tuple(r["shape"]) == shapes[k]), None)
            if r:
                rx.append(k)
                ry.append(r["copy"]["gbps"])
        ax.plot(rx, ry, "k--", lw=1, label="same-size copy (reference)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(ks)
        ax.set_xticklabels([f"{k}\n({shapes[k][0]}×{k})" for k in ks], fontsize=7)
        ax.set_xlabel("K (row length); shape N×K below")
        ax.set_title(f"softmax {dtype}, {t} thread{'s' if t > 1 else ''}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("GB/s = (bytes read + written) / median time")
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.suptitle(f"{results['machine']['cpu_model']} — {results['date']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# --------------------------------------------------------------------------
# Machine information
# --------------------------------------------------------------------------
def machine_info(libs):
    info = {"platform": platform.platform(), "python": sys.version.split()[0],
            "cpu_count": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)),
            "cpu_model": platform.processor() or "unknown", "isa_flags": []}
    try:
        txt = Path("/proc/cpuinfo").read_text()
        for line in txt.splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                info["isa_flags"] = [f for f in ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw",
                                                 "avx512vl", "avx512_bf16") if f in flags]
                break
    except OSError:
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["mem_gib"] = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    v = {"numpy": np.__version__}
    for fam, mod in libs.mods.items():
        top = sys.modules.get(fam) or mod
        v[fam] = getattr(top, "__version__", "?")
    if "numba" in libs.mods:
        import llvmlite

        v["llvmlite"] = llvmlite.__version__
    try:
        import matplotlib

        v["matplotlib"] = matplotlib.__version__
    except ImportError:
        pass
    info["versions"] = v
    info["loadavg_start"] = read_loadavg()
    info["env"] = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS",
                                              "NUMBA_NUM_THREADS", "XLA_FLAGS", "CSOFTMAX_ISA") if k in os.environ}
    return info


def read_loadavg():
    # Other tenants' load is the main source of noise on a small shared VM.
    try:
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None


def harness_overhead(tp):
    fn = functools.partial(len, ())
    fn()
    return time_call(fn, tp)["time_s"]


# --------------------------------------------------------------------------
def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="subset: 3 forward / 2 Jacobian shapes, float32, short timing")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--ops", default=",".join(peers.OPS), help=f"comma-separated subset of {','.join(peers.OPS)}")
    ap.add_argument("--dtypes", default=None, help="float32,float64 (default; --quick: float32)")
    ap.add_argument("--peers", default=None,
                    help="only implementations whose name contains one of these comma-separated words "
                         "(csoftmax is always kept), e.g. torch,numba")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"),
                    help="output folder (default bench/results/)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--repeat", type=int, default=1,
                    help="run the in-process sweep this many times and keep each entry's best round "
                         "(for noisy shared machines; JAX runs once)")
    ap.add_argument("--min-time", type=float, default=None, help="seconds of calls per entry (override)")
    ap.add_argument("-v", "--verbose", action="store_true", help="a progress line per entry, not per cell")
    ap.add_argument("--_jax-worker", dest="jax_worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.jax_worker:
        return args
    args.threads = [int(t) for t in args.threads.split(",") if t.strip()]
    ncpu = len(os.sched_getaffinity(0))
    if any(t < 1 or t > ncpu for t in args.threads):
        ap.error(f"--threads must lie in 1..{ncpu} (usable CPUs)")
    ops = [o.strip() for o in args.ops.split(",") if o.strip()]
    ops = ["jacobian" if o in ("softmax_jacobian", "jac") else o for o in ops]
    bad = [o for o in ops if o not in peers.OPS]
    if bad:
        ap.error(f"unknown op(s) {bad}; choose from {peers.OPS}")
    args.ops = [o for o in peers.OPS if o in ops]
    args.dtypes = (args.dtypes or ("float32" if args.quick else "float32,float64")).split(",")
    words = [w.strip().lower() for w in (args.peers or "").split(",") if w.strip()]
    args.wants = lambda impl: (not words or impl.family == "csoftmax"
                               or any(w in impl.name.lower() for w in words))
    args.want_jax = not words or any(w in "jax" for w in words)
    return args


def main(argv=None):
    args = parse_args(argv if argv is not None else sys.argv[1:])
    if args.jax_worker:
        return jax_worker(args.jax_worker)
    tp = dict(TIMING["quick" if args.quick else "full"])
    if args.min_time is not None:
        tp["min_time"] = args.min_time
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    libs = peers.load_libraries()
    for fam, why in libs.skipped.items():
        log(f"skipping {fam}: {why}")
    if "csoftmax" in libs.skipped:
        log("WARNING: csoftmax itself is not importable; only the peers are measured")
    results = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]) if argv is None else " ".join(argv),
        "config": {"quick": args.quick, "threads": args.threads, "ops": args.ops, "dtypes": args.dtypes,
                   "timing": tp, "seed": args.seed, "input_scale": SCALE, "repeat": args.repeat},
        "machine": machine_info(libs),
        "skipped": dict(libs.skipped),
        "jax_threads": {},
        "references": [],
        "entries": [],
    }
    if libs.have("csoftmax"):
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # it also prints the config
                results["csoftmax_config"] = libs.mods["csoftmax"].show_config()
        except Exception as exc:
            results["csoftmax_config"] = f"show_config() failed: {exc}"
    if libs.have("numba"):
        peers._numba_kernels()["par_fill"](np.zeros(4), 0.0, 1)  # threading layer starts on first use
        results["machine"]["numba_threading_layer"] = libs.mods["numba"].threading_layer()
    if libs.have("torch"):
        results["machine"]["torch_parallel"] = libs.mods["torch"].__config__.parallel_info()
    results["harness_overhead_s"] = harness_overhead(tp)
    log(f"csoftmax CPU benchmark ({'quick' if args.quick else 'full'}): ops {args.ops}, "
        f"dtypes {args.dtypes}, threads {args.threads}; {len(cells_for(args))} cells")

    rounds = []
    for r in range(args.repeat):
        if args.repeat > 1:
            log(f"round {r + 1}/{args.repeat}")
        part = {"references": [], "entries": []}
        run_main_process(args, libs, tp, part)
        rounds.append(part)
    results.update(merge_rounds(rounds))
    if args.want_jax:
        run_jax(args, tp, results)
    else:
        results["skipped"]["jax"] = "not selected (--peers)"

    results["wall_s"] = time.perf_counter() - t_start
    results["machine"]["loadavg_end"] = read_loadavg()
    write_markdown(results, out / "results.md")  # also ranks the entries
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    plotted = False
    try:
        plotted = write_plot(results, out / "softmax_float32_gbps.png")
    except ImportError as exc:
        log(f"no plot: matplotlib not importable ({exc})")
    log(f"done in {fmt_clock(results['wall_s'])}: {out / 'results.md'}, {out / 'results.json'}"
        + (f", {out / 'softmax_float32_gbps.png'}" if plotted else ""))


if __name__ == "__main__":
    main()
