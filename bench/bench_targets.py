#!/usr/bin/env python
"""csoftmax under every ISA the CPU has, against its peers and the machine's
limits measured in the same run, with issue 14's speed targets checked.

    python bench/bench_targets.py                    # every case, 1 and 2 threads
    python bench/bench_targets.py --quick            # six cases, short timing: < 1 min
    python bench/bench_targets.py --cases backward,tiny --threads 1
    python bench/readme_table.py bench/results/targets.json   # the README's table

Writes a markdown report to stdout and to --out (default
bench/results/targets.md) and the raw numbers next to it (targets.json);
progress goes to stderr. The cases and targets are in targets_cases.py, the
report in targets_report.py.

Processes (csoftmax reads CSOFTMAX_ISA once, at import; JAX fixes its thread
count when XLA starts):
* a "peers" worker: NumPy, SciPy, Numba (the tutorial's kernels and the best
  hand-written ones, numba_best.py), torch, and the limits (copy, fill, a
  3-array pass, np.exp of the same array). It never imports csoftmax, so the
  OpenMP settings csoftmax loads with cannot touch the peers;
* one csoftmax worker per ISA that csoftmax reports this CPU can run
  (kernels.supported_isas(), cross-checked with /proc/cpuinfo);
* one JAX worker per thread count (XLA_FLAGS and CPU affinity set);
* on a CPU with AVX-512, a second peers worker and JAX worker set pinned to
  AVX2 (PIN_ENV: NumPy's dispatch, torch's kernels, Numba's and XLA's code
  generation), so that the AVX2 column is measured against what the peers
  run on an AVX2 machine, not against their AVX-512 code. Their entries are
  named "<peer> [avx2]" and serve that column only (--no-pinned-peers: off).
This process only schedules: for every case and thread count it runs
--rounds rounds, and in each round every worker times each of its
implementations once, in a rotated order. Results are the best per-call time
over all rounds (each sample is a loop of many calls lasting --sample-ms), so
peers, limits and csoftmax are interleaved in time and a burst of load on a
shared machine hits them alike. Every implementation is warmed up (compile,
thread pools, page faults) and its result is checked against a float64
reference before it is timed; a wrong result is reported and never ranked.

Thread control: csoftmax num_threads=, numba.set_num_threads,
torch.set_num_threads, XLA flags for JAX. Single-threaded implementations
(NumPy, SciPy, the tutorial's Numba, the 1-thread limits) are timed at the
first thread count and shown at the others. A limit at t threads is the
fastest of its methods with at most t threads.
"""
from __future__ import annotations

import argparse
import datetime
import gc
import importlib.util
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import targets_cases  # noqa: E402

SCALE = 4.0  # logits ~ N(0, SCALE^2), as bench_cpu.py
TIMING = {
    # sample_ms: length of one sample (a loop of calls); samples: min and max
    # per implementation per round; round_ms: keep sampling until this long.
    "full": dict(rounds=5, sample_ms=5.0, min_samples=2, max_samples=5, round_ms=25.0, rotate_mib=1024),
    # quick: no rotated copies (rotate_mib=0), so large cases may sit in a big LLC.
    "quick": dict(rounds=2, sample_ms=2.0, min_samples=1, max_samples=2, round_ms=2.0, rotate_mib=0),
}
GAP_S = 0.02  # between workers: another process's OpenMP threads stop spinning
JAX_XLA_FLAGS = {1: "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"}

# What keeps each peer to AVX2 on an AVX-512 CPU (each checked on this
# machine: np.exp of 4096 x 128 float32 254 -> 318 us, torch reports "AVX2",
# Numba's assembly has no zmm register, XLA takes the flag).
AVX512_NPY = "AVX512F AVX512CD AVX512_KNL AVX512_KNM AVX512_SKX AVX512_CLX AVX512_CNL AVX512_ICL AVX512_SPR"
HASWELL_FEATURES = ("+64bit,+avx,+avx2,+bmi,+bmi2,+cmov,+cx16,+f16c,+fma,+fsgsbase,+lzcnt,+mmx,+movbe,"
                    "+popcnt,+sse,+sse2,+sse3,+sse4.1,+sse4.2,+ssse3,+xsave,-avx512f")
PIN_ENV = {"avx2": {"NPY_DISABLE_CPU_FEATURES": AVX512_NPY, "ATEN_CPU_CAPABILITY": "avx2",
                    "NUMBA_CPU_NAME": "haswell", "NUMBA_CPU_FEATURES": HASWELL_FEATURES,
                    "XLA_FLAGS": "--xla_cpu_max_isa=AVX2"}}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Inputs, reference, check (the same as bench_cpu.py's, without importing
# csoftmax: the reference module is pure NumPy and is loaded from its file)
# --------------------------------------------------------------------------
def _load_reference():
    path = HERE.parent / "csoftmax" / "_reference.py"
    spec = importlib.util.spec_from_file_location("_csoftmax_reference", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


BACKWARD = ("softmax_backward", "log_softmax_backward")


def make_inputs(op, shape, dtype, seed, ref_mod):
    rng = np.random.default_rng([seed, shape[0], shape[1]])
    x = (rng.standard_normal(shape) * SCALE).astype(dtype)
    if op not in BACKWARD:
        return {"x": x}
    fwd = "softmax" if op == "softmax_backward" else "log_softmax"
    y = ref_mod.reference(fwd, x.astype(np.float64)).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    return {"y": y, "g": g}


def reference(op, inp, ref_mod):
    if op in BACKWARD:
        ref = ref_mod.reference(op, inp["y"], inp["g"])
        return ref, float(np.abs(ref).max() + np.abs(inp["g"].astype(np.float64)).max())
    ref = ref_mod.reference("softmax_jacobian" if op == "jacobian" else op, inp["x"])
    return ref, float(np.abs(ref).max()) if ref.size else 1.0


def check(res, ref, scale, dtype, k):
    """(status, err, reason): a few ulp per element plus a K-term sum's rounding."""
    if hasattr(res, "detach"):
        res = res.detach().numpy()
    res = np.asarray(res)
    if res.shape != ref.shape:
        return "WRONG", None, f"shape {res.shape} != {ref.shape}"
    r = res.astype(np.float64)
    bad = ~np.isfinite(r) & np.isfinite(ref)
    if bad.any():
        return "WRONG", None, f"{int(bad.sum())} NaN/inf where the reference is finite"
    tol = float((32 * math.sqrt(k) + 64) * np.finfo(dtype).eps)
    err = float((np.abs(r - ref) / (np.abs(ref) + scale)).max()) if r.size else 0.0
    if err > tol:
        return "WRONG", err, f"error {err:.1e} > tol {tol:.1e}" + (
            f" (returns {res.dtype})" if res.dtype != dtype else "")
    return "ok", err, ""


# --------------------------------------------------------------------------
# Worker side
# --------------------------------------------------------------------------
class Limit:
    """A machine limit as an implementation: family 'limit'."""

    def __init__(self, kind, method, threads_used, make):
        self.name = f"{kind} [{method}]"
        self.family = "limit"
        self.kind = kind
        self.method = method
        self.threaded = threads_used > 1
        self.threads_used = threads_used
        self.alloc = kind == "empty+fill"
        self.make = make  # make(buffers, t) -> callable
        self.note = ""


def limit_impls(op, nb, threads):
    """The limits of `op`, each with a 1-thread method and, where numba is
    there, a prange method per thread count > 1."""
    import concurrent.futures

    kinds = targets_cases.LIMITS_FOR[op]
    out = []
    if "copy" in kinds:
        out.append(Limit("copy", "np.copyto", 1, lambda b, t: lambda: np.copyto(b["dst"], b["a"])))
    if "add" in kinds:
        out.append(Limit("add", "np.add out=", 1, lambda b, t: lambda: np.add(b["a"], b["b"], out=b["dst"])))
    if "fill" in kinds:
        out.append(Limit("fill", "ndarray.fill", 1, lambda b, t: lambda: b["o"].fill(0)))
    if "fill≠0" in kinds:
        out.append(Limit("fill≠0", "ndarray.fill", 1, lambda b, t: lambda: b["o"].fill(1)))
    if "empty+fill" in kinds:
        out.append(Limit("empty+fill", "np.empty + fill", 1,
                         lambda b, t: lambda: np.empty(b["o"].shape, b["o"].dtype).fill(0)))
    if "np.exp" in kinds:
        out.append(Limit("np.exp", "np.exp out=", 1, lambda b, t: lambda: np.exp(b["a"], out=b["dst"])))
    for t in threads:
        if t == 1:
            continue
        if nb is not None:
            def flat(a):
                return a.reshape(-1)
            if "copy" in kinds:
                out.append(Limit("copy", f"numba prange, {t} parts", t,
                                 lambda b, t_, t=t: _nb_call(nb["par_copy"], flat(b["dst"]), flat(b["a"]), t)))
            if "add" in kinds:
                out.append(Limit("add", f"numba prange, {t} parts", t,
                                 lambda b, t_, t=t: _nb_call(nb["par_add"], flat(b["a"]), flat(b["b"]),
                                                             flat(b["dst"]), t)))
            if "fill" in kinds:
                out.append(Limit("fill", f"numba prange, {t} parts", t,
                                 lambda b, t_, t=t: _nb_call(nb["par_fill"], flat(b["o"]), 0.0, t)))
            if "fill≠0" in kinds:
                out.append(Limit("fill≠0", f"numba prange, {t} parts", t,
                                 lambda b, t_, t=t: _nb_call(nb["par_fill"], flat(b["o"]), 1.0, t)))
            if "empty+fill" in kinds:
                def mk_ef(b, t_, t=t):
                    pf, shape, dt = nb["par_fill"], b["o"].shape, b["o"].dtype
                    return lambda: pf(np.empty(shape, dt).reshape(-1), 0.0, t)
                out.append(Limit("empty+fill", f"np.empty + numba prange fill, {t} parts", t, mk_ef))
        if "np.exp" in kinds:
            def mk_exp(b, t_, t=t):
                # NumPy releases the GIL in ufunc loops: t Python threads, one
                # contiguous part each.
                pool = concurrent.futures.ThreadPoolExecutor(t)
                a, d = b["a"].reshape(-1), b["dst"].reshape(-1)
                cuts = [a.size * i // t for i in range(t + 1)]
                parts = [(a[lo:hi], d[lo:hi]) for lo, hi in zip(cuts, cuts[1:])]

                def call():
                    for f in [pool.submit(np.exp, x, out=o) for x, o in parts]:
                        f.result()
                return call
            out.append(Limit("np.exp", f"{t} Python threads", t, mk_exp))
    return out


def own_limit_impls(op, threads):
    """Limits timed inside each csoftmax worker. What an allocation costs
    depends on the process: where freed pages come back already faulted in,
    np.empty is nearly free; where they come back fresh, every page faults.
    The peers' worker, after the JIT compilers' and frameworks' allocations,
    is often the first kind and csoftmax's lean worker the second (the same
    40 MB np.empty + fill took 0.9-2 ms in one and 5-9 ms in the other), so
    the allocating-call target compares the call with np.empty + fill timed
    in the call's own process."""
    if "empty+fill" not in targets_cases.LIMITS_FOR[op]:
        return []
    import concurrent.futures

    kind = targets_cases.OWN_EMPTY_FILL
    out = [Limit(kind, "np.empty + fill", 1,
                 lambda b, t: lambda: np.empty(b["o"].shape, b["o"].dtype).fill(0))]
    for t in threads:
        if t == 1:
            continue

        def mk(b, t_, t=t):
            # ndarray.fill releases the GIL: t Python threads, one part each.
            pool = concurrent.futures.ThreadPoolExecutor(t)
            shape, dt = b["o"].shape, b["o"].dtype

            def call():
                a = np.empty(shape, dt).reshape(-1)
                cuts = [a.size * i // t for i in range(t + 1)]
                for f in [pool.submit(a[lo:hi].fill, 0) for lo, hi in zip(cuts, cuts[1:])]:
                    f.result()
            return call
        out.append(Limit(kind, f"np.empty + fill, {t} Python threads", t, mk))
    return out


def _nb_call(fn, *args):
    return lambda: fn(*args)


class Worker:
    """State of one worker process: its implementations, the current case's
    input sets, and each implementation's callables per thread count."""

    def __init__(self, kind, peers_filter, threads):
        self.kind = kind
        self.threads = threads
        self.ref_mod = _load_reference()
        self.info = {"kind": kind, "skipped": {}, "versions": {"numpy": np.__version__}}
        self.case = None
        self.wants = peers_filter
        self.nb = None
        if kind == "peers":
            import peers

            self.peers = peers
            # Only the libraries asked for (--peers); numba also for the
            # limits' multi-threaded passes.
            fams = [f for f in ("scipy", "numba", "torch")
                    if peers_filter(f) or (f == "numba" and max(threads) > 1)]
            self.libs = peers.load_libraries(fams)
            self.info["skipped"].update(self.libs.skipped)
            for fam, mod in self.libs.mods.items():
                top = sys.modules.get(fam) or mod
                self.info["versions"][fam] = getattr(top, "__version__", "?")
            if self.libs.have("numba"):
                self.nb = peers._numba_kernels()
                self.nb["par_fill"](np.zeros(4), 0.0, 1)  # the threading layer starts on first use
                self.info["numba_threading_layer"] = self.libs.mods["numba"].threading_layer()
            if self.libs.have("torch"):
                self.info["torch_threads_default"] = self.libs.mods["torch"].get_num_threads()
        elif kind == "csoftmax":
            import peers
            import csoftmax

            self.peers = peers
            self.cs = csoftmax
            self.info["versions"]["csoftmax"] = csoftmax.__version__
            self.info["isa"] = csoftmax.kernels.isa()
            self.info["csoftmax_path"] = str(Path(csoftmax.__file__).parent)
            self.info["supported_isas"] = csoftmax.kernels.supported_isas()
        elif kind == "jax":
            import peers
            import jax
            import jaxlib

            jax.config.update("jax_enable_x64", True)  # else float64 runs in float32
            self.peers = peers
            self.info["versions"].update(jax=jax.__version__, jaxlib=jaxlib.__version__)

    def impls(self, op):
        p = self.peers
        if self.kind == "csoftmax":
            return p.csoftmax_impls(op, self.cs) + own_limit_impls(op, self.threads)
        if self.kind == "jax":
            return p.jax_impls(op)
        out = [i for i in p.main_impls(op, self.libs, with_out=True) if self.wants(i.name)]
        return out + limit_impls(op, self.nb, self.threads)

    def set_case(self, spec):
        self.case = None
        gc.collect()
        op, shape, dtype = spec["op"], tuple(spec["shape"]), spec["dtype"]
        base = make_inputs(op, shape, dtype, spec["seed"], self.ref_mod)
        ref, scale = reference(op, base, self.ref_mod)
        oshape = self.peers.out_shape(op, base)
        a = base["y"] if "y" in base else base["x"]
        sets, bufs = [], []
        for r in range(spec["rotate_sets"]):
            inp = base if r == 0 else {k: v.copy() for k, v in base.items()}
            inp = dict(inp, out=np.zeros(oshape, dtype))  # zeros: the pages are faulted in
            sets.append(inp)
            ai = inp["y"] if "y" in inp else inp["x"]
            same = inp["out"] if inp["out"].shape == ai.shape else np.zeros_like(ai)
            bufs.append({"a": ai, "b": inp.get("g", ai), "dst": same, "o": inp["out"]})
        self.case = {"spec": spec, "op": op, "shape": shape, "dtype": dtype, "k": shape[1],
                     "sets": sets, "bufs": bufs, "ref": ref, "scale": scale,
                     "impls": self.impls(op), "state": {}, "a_dtype": a.dtype}
        return {"ok": True, "impls": [i.name for i in self.case["impls"]]}

    def _prepare(self, impl, t):
        c = self.case
        entry = {"impl": impl.name, "family": impl.family, "alloc": bool(impl.alloc),
                 "threads_used": (impl.threads_used if impl.family == "limit"
                                  else (t if impl.threaded else 1)), "note": getattr(impl, "note", "")}
        if impl.family == "limit":
            entry.update(kind=impl.kind, method=impl.method)
        try:
            if impl.family == "limit":
                fns = [impl.make(b, t) for b in c["bufs"]]
            else:
                fns = [impl.make(s if not impl.alloc else {k: v for k, v in s.items() if k != "out"}, t)
                       for s in c["sets"]]
            res = fns[0]()  # warm-up (compiles, thread pools, page faults), and the checked result
            if impl.family != "limit":
                status, err, reason = check(res, c["ref"], c["scale"], c["a_dtype"], c["k"])
                entry.update(status=status, err=err, reason=reason)
            else:
                entry.update(status="ok")
            del res
            # Every rotated set once (warms its pages), timed for the calibration.
            times = []
            for f in fns[1:] if len(fns) > 1 else fns:
                t0 = time.perf_counter()
                f()
                times.append(time.perf_counter() - t0)
        except Exception as exc:
            entry.update(status="ERROR", reason=f"{type(exc).__name__}: {exc}"[:300])
            return {"entry": entry, "fns": None}
        st = {"entry": entry, "fns": fns, "pos": 0, "inner": None}
        tp = c["spec"]["timing"]
        # Calls per sample: enough to last sample_ms. Fast calls get one
        # untimed sample more (branch predictors, allocator caches).
        one = min(times)
        st["inner"] = max(1, int(tp["sample_ms"] * 1e-3 / max(one, 5e-8)))
        if st["inner"] > 1:
            self._sample(st)
        return st

    def _sample(self, st):
        fns, r, inner = st["fns"], len(st["fns"]), st["inner"]
        seq = [fns[(st["pos"] + i) % r] for i in range(inner)]
        st["pos"] = (st["pos"] + inner) % r
        gc_was = gc.isenabled()
        gc.disable()  # as timeit does: no collector pauses inside a sample
        try:
            t0 = time.perf_counter()
            for f in seq:
                f()
            dt = time.perf_counter() - t0
        finally:
            if gc_was:
                gc.enable()
        return dt / inner

    def round(self, t, first_t):
        c = self.case
        tp = c["spec"]["timing"]
        entries = []
        for impl in c["impls"]:
            unthreaded = impl.family != "limit" and not impl.threaded
            if impl.family == "limit" and impl.threads_used > t:
                continue
            if unthreaded and t != first_t:
                continue  # the parent shows the first thread count's entry
            if impl.family == "limit" and impl.threads_used == 1 and t != first_t:
                continue
            key = (impl.name, t if not unthreaded else first_t)
            st = c["state"].get(key)
            if st is None:
                time.sleep(0.005)  # a previous implementation's spin-waits run out
                st = c["state"][key] = self._prepare(impl, t)
            e = dict(st["entry"])
            if st["fns"] is not None:
                samples = []
                start = time.perf_counter()
                while len(samples) < tp["max_samples"]:
                    samples.append(self._sample(st))
                    if (len(samples) >= tp["min_samples"]
                            and time.perf_counter() - start >= tp["round_ms"] * 1e-3):
                        break
                e.update(samples=samples, calls_per_sample=st["inner"])
            entries.append(e)
        return {"entries": entries}


def worker_main(kind, peers_words, threads):
    # The protocol runs over the original stdout; everything else that
    # libraries print goes to stderr.
    proto = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)

    def send(obj):
        proto.write(json.dumps(obj, default=str) + "\n")
        proto.flush()

    words = [w for w in peers_words.split(",") if w]

    def wants(name):
        return not words or any(w in name.lower() for w in words)

    try:
        w = Worker(kind, wants, threads)
    except Exception as exc:
        send({"skipped": f"{type(exc).__name__}: {exc}"[:300]})
        return
    send({"ready": True, "info": w.info})
    for line in sys.stdin:
        cmd = json.loads(line)
        try:
            if cmd["cmd"] == "case":
                send(w.set_case(cmd["case"]))
            elif cmd["cmd"] == "round":
                send(w.round(cmd["threads"], cmd["first_threads"]))
            elif cmd["cmd"] == "quit":
                break
        except Exception as exc:
            send({"error": f"{type(exc).__name__}: {exc}"[:500]})


# --------------------------------------------------------------------------
# Scheduler side
# --------------------------------------------------------------------------
class Proc:
    def __init__(self, label, kind, env, args, cpus=None, only_threads=None, pin=None):
        self.label, self.kind, self.only_threads, self.pin = label, kind, only_threads, pin
        cmd = [sys.executable, str(Path(__file__).resolve()), "--_worker", kind,
               "--threads", ",".join(map(str, args.threads)), "--peers", args.peers or ""]
        self.p = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                  preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)
        self.ok, self.info, self.skipped = False, {}, "not started"

    def greet(self):
        hello = self.recv()
        self.ok = bool(hello and hello.get("ready"))
        self.info = hello.get("info", {}) if hello else {}
        self.skipped = None if self.ok else (hello or {}).get("skipped", "worker did not start")

    def recv(self):
        line = self.p.stdout.readline()
        return json.loads(line) if line else None

    def ask(self, obj):
        """The worker's answer; None if it died (a crash in a library is
        reported, and the run goes on without that worker's numbers)."""
        try:
            self.p.stdin.write(json.dumps(obj) + "\n")
            self.p.stdin.flush()
            return self.recv()
        except (OSError, ValueError):
            return None

    def close(self):
        try:
            if self.p.poll() is None:
                self.p.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.p.stdin.flush()
            self.p.wait(timeout=30)
        except Exception:
            self.p.kill()


def cpu_flags():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


# What /proc/cpuinfo must list for csoftmax's ISA names (the kernels' target
# attributes: AVX2 kernels use FMA; AVX-512 ones F, BW, DQ and VL).
ISA_FLAGS = {"baseline": set(), "avx2": {"avx2", "fma"}, "avx512": {"avx512f", "avx512bw", "avx512dq", "avx512vl"}}


def probe_isas(env):
    """csoftmax's ISAs this CPU runs (csoftmax asks the CPU itself), each
    cross-checked with /proc/cpuinfo; (list, note)."""
    code = "import csoftmax, json; print(json.dumps(csoftmax.kernels.supported_isas()))"
    try:
        out = subprocess.run([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, timeout=120, cwd=str(HERE))
        if out.returncode != 0:
            return [], "csoftmax not importable: " + (out.stderr.strip().splitlines() or ["?"])[-1][:300]
        isas = json.loads(out.stdout.strip().splitlines()[-1])
    except Exception as exc:
        return [], f"csoftmax not importable: {type(exc).__name__}: {exc}"
    flags = cpu_flags()
    if not flags:
        return isas, "no /proc/cpuinfo: csoftmax's own CPU probe decides"
    agree = [i for i in isas if ISA_FLAGS.get(i, set()) <= flags]
    note = "" if agree == isas else f"csoftmax reports {isas}, /proc/cpuinfo agrees on {agree}"
    return agree, note


def machine_info():
    info = {"platform": platform.platform(), "python": sys.version.split()[0],
            "logical_cpus": os.cpu_count(), "usable_cpus": len(os.sched_getaffinity(0)),
            "cpu_model": platform.processor() or "unknown"}
    cores = set()
    try:
        phys = None
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
            elif line.startswith("physical id"):
                phys = line.split(":", 1)[1].strip()
            elif line.startswith("core id"):
                cores.add((phys, line.split(":", 1)[1].strip()))
    except OSError:
        pass
    info["physical_cores"] = len(cores) or None
    flags = cpu_flags()
    info["isa_flags"] = [f for f in ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512dq",
                                     "avx512vl", "avx512_bf16", "avx512_fp16") if f in flags]
    info["caches"] = caches()
    llc = max(info["caches"], key=lambda c: c["level"]) if info["caches"] else None
    info["llc_bytes"] = llc["bytes"] if llc else None
    info["llc_text"] = (f"L{llc['level']} {llc['bytes'] / 2**20:.0f} MiB shared by CPUs {llc['shared']}"
                        if llc else "unknown")
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["mem_gib"] = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return info


def caches():
    out = []
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    for d in sorted(base.glob("index*")):
        try:
            typ = (d / "type").read_text().strip()
            if typ == "Instruction":
                continue
            size = (d / "size").read_text().strip()
            mult = {"K": 2**10, "M": 2**20, "G": 2**30}.get(size[-1], 1)
            out.append({"level": int((d / "level").read_text()), "type": typ,
                        "bytes": int(size.rstrip("KMG")) * mult,
                        "shared": (d / "shared_cpu_list").read_text().strip()})
        except (OSError, ValueError):
            continue
    if not out:
        try:
            n = os.sysconf("SC_LEVEL3_CACHE_SIZE")
            if n > 0:
                out.append({"level": 3, "type": "Unified", "bytes": n, "shared": "?"})
        except (ValueError, OSError):
            pass
    return out


def loadavg():
    try:
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None


def rotate_sets(case, llc, cap_mib):
    """How many copies of the case's inputs and output to cycle through: enough
    to exceed 1.5x the last-level cache, within cap_mib."""
    if not case["rotate"]:
        return 1, "in cache by intent"
    if cap_mib <= 0:
        return 1, "no rotation (--rotate-mib 0, the quick mode's default): may sit in the LLC"
    n, k = case["shape"]
    isz = np.dtype(case["dtype"]).itemsize
    n_in = 2 if case["op"] in BACKWARD else 1
    out = {"jacobian": n * k * k, "logsumexp": n}.get(case["op"], n * k)
    one = (n_in * n * k + out) * isz
    if not llc:
        return 2, "LLC size unknown: 2 sets"
    want = math.ceil(1.5 * llc / one)
    cap = max(1, int(cap_mib * 2**20 // one))
    r = max(1, min(want, cap))
    note = f"{r} set(s) of {one / 2**20:.0f} MiB = {r * one / 2**20:.0f} MiB"
    if r < want:
        note += f" (capped by --rotate-mib {cap_mib}: below 1.5x LLC, partly in cache)"
    return r, note


def harness_overhead(sample_ms):
    """Seconds per call that the timing loop itself adds (a no-op closure
    through the same loop), included in every time reported."""
    st = {"fns": [lambda: None], "pos": 0, "inner": max(1, int(sample_ms * 1e-3 / 3e-8))}
    w = Worker.__new__(Worker)
    return min(w._sample(st) for _ in range(5))


def run(args):
    tp = dict(TIMING["quick" if args.quick else "full"])
    for k in ("rounds", "sample_ms", "rotate_mib"):
        if getattr(args, k) is not None:
            tp[k] = getattr(args, k)
    cases = targets_cases.select(args.cases, args.quick)
    if not cases:
        raise SystemExit(f"no case matches --cases {args.cases}")
    t_start = time.perf_counter()
    machine = machine_info()
    machine["loadavg_start"] = loadavg()
    base_env = dict(os.environ)
    base_env.pop("CSOFTMAX_ISA", None)
    isas, isa_note = probe_isas(base_env)
    if not isas:
        # Not installed: the clone's own csoftmax (built with build_ext --inplace).
        root_env = dict(base_env, PYTHONPATH=os.pathsep.join(
            [str(HERE.parent)] + ([base_env["PYTHONPATH"]] if base_env.get("PYTHONPATH") else [])))
        isas, note2 = probe_isas(root_env)
        if isas:
            base_env, isa_note = root_env, f"csoftmax from {HERE.parent} (PYTHONPATH)"
        else:
            isa_note = f"{isa_note}; from {HERE.parent}: {note2}"
    if args.isas:
        isas = [i for i in isas if i in args.isas]
    isas = isas[::-1]  # widest first, as the report's columns
    results = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "command": " ".join(["bench_targets.py"] + args.argv),
               "config": {"quick": args.quick, "threads": args.threads, "timing": tp, "seed": args.seed,
                          "input_scale": SCALE, "peers": args.peers},
               "machine": machine, "isas": isas, "isa_note": isa_note, "workers": {}, "cases": []}
    words = [w for w in (args.peers or "").split(",") if w]
    procs = []
    log(f"bench_targets ({'quick' if args.quick else 'full'}): {len(cases)} cases, threads {args.threads}, "
        f"ISAs {isas}; starting workers")
    try:
        # Started together (imports and JIT compiles overlap), then greeted.
        pins = [None] + [i for i in PIN_ENV if i in isas and "avx512" in isas and not args.no_pinned_peers]
        results["pinned_peers"] = {i: PIN_ENV[i] for i in pins if i}

        def pinned(env, pin):
            if not pin:
                return dict(env)
            env = dict(env, **{k: v for k, v in PIN_ENV[pin].items() if k != "XLA_FLAGS"})
            env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + PIN_ENV[pin]["XLA_FLAGS"]).strip()
            return env

        for pin in pins:
            tag = f" [{pin}]" if pin else ""
            procs.append(Proc("peers" + tag, "peers", pinned(base_env, pin), args, pin=pin))
        for isa in isas:
            procs.append(Proc(f"csoftmax [{isa}]", "csoftmax", dict(base_env, CSOFTMAX_ISA=isa), args))
        if not words or any(w in "jax" for w in words):
            ncpu = sorted(os.sched_getaffinity(0))
            for pin in pins:
                tag = f" [{pin}]" if pin else ""
                for t in args.threads:
                    env = pinned(base_env, pin)
                    if t in JAX_XLA_FLAGS:
                        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + JAX_XLA_FLAGS[t]).strip()
                    procs.append(Proc(f"jax [{t}T]{tag}", "jax", env, args, cpus=ncpu[:t], only_threads=t,
                                      pin=pin))
                    results["workers_xla_flags"] = results.get("workers_xla_flags", {})
                    results["workers_xla_flags"][f"jax [{t}T]{tag}"] = {"xla_flags": env.get("XLA_FLAGS", ""),
                                                                        "cpus": ncpu[:t]}
        for p in procs:
            p.greet()
            results["workers"][p.label] = {"ok": p.ok, "skipped": p.skipped, "info": p.info}
            if p.kind == "csoftmax" and p.ok and p.info.get("isa") != p.label[10:-1]:
                p.ok, p.skipped = False, f"CSOFTMAX_ISA not honoured: runs {p.info.get('isa')}"
                results["workers"][p.label].update(ok=False, skipped=p.skipped)
            if not p.ok:
                log(f"skipping {p.label}: {p.skipped}")
        live = [p for p in procs if p.ok]
        first_t = args.threads[0]
        for ci, case in enumerate(cases, 1):
            nsets, rnote = rotate_sets(case, machine["llc_bytes"], tp["rotate_mib"])
            spec = dict(case, seed=args.seed, rotate_sets=nsets, timing=tp)
            crec = dict(case, rotate_sets=nsets, rotate_note=rnote, runs={})
            results["cases"].append(crec)
            for p in live:
                rep = p.ask({"cmd": "case", "case": spec})
                if not rep or "error" in rep:
                    log(f"  {p.label}: {rep}")
            for t in args.threads:
                merged = {}
                for r in range(tp["rounds"]):
                    order = [p for p in live if p.only_threads in (None, t)]
                    k = r % len(order)
                    for p in order[k:] + order[:k]:
                        rep = p.ask({"cmd": "round", "threads": t, "first_threads": first_t})
                        time.sleep(GAP_S)
                        if not rep or "error" in rep:
                            log(f"  {p.label} t={t}: {rep}")
                            continue
                        for e in rep["entries"]:
                            if p.kind == "csoftmax":
                                isa = p.label[10:-1]
                                e["impl"] = (f"{e['impl']} [{isa}]" if e["family"] == "limit"
                                             else e["impl"].replace("csoftmax", f"csoftmax [{isa}]"))
                                e["isa"] = isa
                            elif p.pin:
                                e["impl"] = f"{e['impl']} [{p.pin}]"
                                e["peer_isa"] = p.pin
                            m = merged.setdefault(e["impl"], dict(e, samples=[], worker=p.label))
                            m["samples"] += e.get("samples", [])
                for e in merged.values():
                    s = e.pop("samples")
                    if s:
                        e.update(best_s=min(s), median_s=float(np.median(s)), n_samples=len(s))
                crec["runs"][str(t)] = merged
                # The first thread count's unthreaded entries stand at the others.
                if t != first_t:
                    for name, e in crec["runs"][str(first_t)].items():
                        if name not in merged and (e["threads_used"] == 1):
                            merged[name] = dict(e, reused_from=first_t)
                log(f"[{ci:2d}/{len(cases)} {time.perf_counter() - t_start:5.0f} s] {case['id']} t={t}: "
                    + summary(crec, t))
    finally:
        for p in procs:
            p.close()
    machine["loadavg_end"] = loadavg()
    results["harness_overhead_s"] = harness_overhead(tp["sample_ms"])
    results["wall_s"] = time.perf_counter() - t_start
    return results


def summary(crec, t):
    runs = crec["runs"][str(t)]
    cs = {n: e["best_s"] for n, e in runs.items() if n.startswith("csoftmax") and "best_s" in e}
    peers = {n: e["best_s"] for n, e in runs.items()
             if e["family"] not in ("csoftmax", "limit") and e.get("status") == "ok" and "best_s" in e}
    parts = []
    if cs:
        n = min(cs, key=cs.get)
        parts.append(f"{n} {cs[n] * 1e6:.4g} us")
    if peers:
        n = min(peers, key=peers.get)
        parts.append(f"best peer {n} {peers[n] * 1e6:.4g} us")
    return ", ".join(parts)


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="the 'quick' cases, 2 short rounds: under a minute")
    ap.add_argument("--cases", default="", help="comma-separated ops, tags (tiny, backward, incache, mid, "
                    "large, jacobian, quick, smoke), dtypes or case ids; default: all (--quick: quick)")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--isas", default="", help="only these of the CPU's ISAs (default: every one)")
    ap.add_argument("--peers", default="", help="only peers whose name contains one of these words "
                    "(csoftmax and the limits always run), e.g. numpy,torch")
    ap.add_argument("--rounds", type=int, default=None, help="rounds per case and thread count")
    ap.add_argument("--sample-ms", type=float, default=None, help="length of one timed sample")
    ap.add_argument("--rotate-mib", type=int, default=None,
                    help="most MiB of rotated input/output copies per process (default 1024; quick 0: none)")
    ap.add_argument("--no-pinned-peers", action="store_true",
                    help="do not time the peers a second time pinned to AVX2 on an AVX-512 CPU")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--out", default=str(HERE / "results" / "targets.md"),
                    help="markdown report (the JSON goes next to it, .json)")
    ap.add_argument("--_worker", dest="worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.argv = list(argv)
    args.threads = [int(t) for t in args.threads.split(",") if t.strip()]
    if args.worker:
        return args
    ncpu = len(os.sched_getaffinity(0))
    if not args.threads or any(t < 1 or t > ncpu for t in args.threads):
        ap.error(f"--threads must lie in 1..{ncpu} (usable CPUs)")
    args.cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    args.isas = [c.strip() for c in args.isas.split(",") if c.strip()]
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.worker:
        return worker_main(args.worker, args.peers, args.threads)
    import targets_report

    results = run(args)
    md = targets_report.markdown(results)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(md)
    out.with_suffix(".json").write_text(json.dumps(results, indent=1, default=str))
    print(md)
    log(f"done in {results['wall_s']:.0f} s: {out}, {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
