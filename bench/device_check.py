"""Check and time csoftmax on one GPU, in one command, and write one report.

    python bench/device_check.py [--report device_check.md] [--budget 540]
    python bench/device_check.py --dry-run      # no GPU: the CuPy stand-in, to try the report code

Parts, in order, each in its own process with its own time box (a failure
or a timeout is reported and the next part runs; the whole stays inside
--budget seconds, 9 minutes by default):

1. env       Python, NumPy, CuPy, torch, the device, the CUDA tools found.
2. build     ``python setup.py build_ext --inplace`` when csoftmax is not built.
3. tests     tests/test_gpu_device.py (the real-device tests), then the other
             tests/test_gpu_*.py (NVRTC, emulator, stand-in) with what time is left.
4. checks    special values (NaN, +-inf, +-1e30, subnormals, all -inf rows),
             views (row- and column-sliced, transposed, 3-D axis, out= views,
             in place) and streams (a non-default stream after a slow producer,
             two streams at once), against the CPU backend.
5. timing    softmax, log_softmax, both backward passes, logsumexp, the
             Jacobian and softmax_cross_entropy (where it takes CuPy arrays) at
             16384x1000, 1024x32768, 8x2^20 and 64x50257 float32, against torch
             and cupyx.scipy.special, with a device-to-device copy of the same
             bytes timed in the same run: 20 back-to-back calls between CUDA
             events, rotating input buffers past L2 (bench/bench_gpu.py's
             _time); csoftmax's kernel path (preallocated out) and its public
             API apart; host time per small call.
6. sanitizer compute-sanitizer memcheck and racecheck on a small driver that
             runs every kernel tier, when the tool exists.

The report is markdown (default device_check.md in the current directory);
the exit status is 0 when the report was written, whatever it found.
Without a GPU the script says so and exits with status 2 (--dry-run aside).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent

# Seconds each part may take at most (the budget may cut them shorter).
# The GPU's own parts first; the GPU-less suite (NVRTC, emulator, stand-in),
# which the normal test command also runs, gets what is left.
PART_LIMITS = {"env": 60, "build": 240, "tests-device": 120, "checks": 60, "timing": 150,
               "sanitizer": 150, "tests-other": 150}
# What a part needs left to be worth starting.
PART_MINIMUM = {"env": 10, "build": 60, "tests-device": 30, "checks": 20, "timing": 30,
                "sanitizer": 30, "tests-other": 30}

# The shapes: a batch of rows, long rows, few very long rows, a
# vocabulary-sized logit row (GPT-2's 50257).
SHAPES = ((16384, 1000), (1024, 32768), (8, 1 << 20), (64, 50257))
DRY_SHAPES = ((64, 100), (8, 300))


# ---------------------------------------------------------------- set-up

def _dry_cupy():
    """The CuPy stand-in of tests/cuda_emu, with the bits of CuPy the checks
    and the timing use (streams, events, random): times are host times."""
    sys.path.insert(0, str(ROOT / "tests"))
    import types

    import numpy as np
    from cuda_emu import devices
    from cuda_emu.fake_cupy import FakeCuPy

    fake = FakeCuPy([devices.EMULATED])

    class Event:
        def record(self, stream=None):
            self.t = time.perf_counter()

        def synchronize(self):
            pass

    class Stream:
        def __init__(self, non_blocking=False):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def synchronize(self):
            pass

    fake.cuda.Event = Event
    fake.cuda.Stream = Stream
    fake.cuda.get_elapsed_time = lambda a, b: (b.t - a.t) * 1e3
    fake.cuda.runtime.deviceSynchronize = lambda: None
    fake.float32 = np.float32
    fake.copyto = lambda dst, src: np.copyto(dst.view(np.ndarray), src.view(np.ndarray))
    fake.empty_like = lambda a: fake.empty(a.shape, a.dtype)
    fake.get_default_memory_pool = lambda: types.SimpleNamespace(free_all_blocks=lambda: None)

    class _Rng:
        def __init__(self, seed):
            self._rng = np.random.default_rng(seed)

        def standard_normal(self, shape, dtype=np.float32):
            return fake.asarray(self._rng.standard_normal(shape).astype(dtype))

    fake.random = types.SimpleNamespace(default_rng=_Rng)
    sys.modules["cupy"] = fake
    return fake


def _cupy(dry):
    if dry:
        return _dry_cupy()
    import cupy

    return cupy


# ---------------------------------------------------------------- parts (run in a child process)

def _save(args, partial):
    """Write a part's results so far: a part stopped at its time box still
    reports what it measured."""
    tmp = args.result + ".tmp"
    with open(tmp, "w") as f:
        json.dump(partial, f, default=str)
    os.replace(tmp, args.result)


def part_env(args):
    import numpy as np

    info = {"python": platform.python_version(), "numpy": np.__version__, "platform": platform.platform()}
    try:
        cp = _cupy(args.dry_run)
        info["cupy"] = cp.__version__
        props = cp.cuda.runtime.getDeviceProperties(0)
        name = props.get("name", b"")
        info["device"] = name.decode(errors="replace") if isinstance(name, bytes) else str(name)
        info["compute capability"] = f"{props['major']}.{props['minor']}"
        info["SMs"] = props["multiProcessorCount"]
        info["devices"] = cp.cuda.runtime.getDeviceCount()
        for key, label in (("totalGlobalMem", "memory GiB"), ("l2CacheSize", "L2 MiB")):
            if key in props:
                info[label] = round(props[key] / (2**30 if "GiB" in label else 2**20), 1)
        try:
            info["driver"] = cp.cuda.runtime.driverGetVersion()
            info["runtime"] = cp.cuda.runtime.runtimeGetVersion()
        except Exception:
            pass
    except Exception as exc:
        info["cupy"] = f"unusable: {type(exc).__name__}: {exc}"
    try:
        import torch

        info["torch"] = f"{torch.__version__} (CUDA {torch.version.cuda}, available: {torch.cuda.is_available()})"
    except Exception as exc:
        info["torch"] = f"not importable ({type(exc).__name__})"
    for tool in ("compute-sanitizer", "nvcc", "nvidia-smi"):
        info[tool] = shutil.which(tool) or "not found"
    return info


def part_build(args):
    probe = subprocess.run([sys.executable, "-c", "import csoftmax._entry"], cwd=ROOT,
                           capture_output=True, text=True)
    if probe.returncode == 0:
        return {"status": "already built"}
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace", "-j", str(os.cpu_count() or 1)],
                         cwd=ROOT, capture_output=True, text=True)
    return {"status": "built" if out.returncode == 0 else f"FAILED (status {out.returncode})",
            "seconds": round(time.perf_counter() - t, 1), "log tail": out.stdout[-1500:] + out.stderr[-1500:]}


def _pytest(files, limit, extra=()):
    with tempfile.TemporaryDirectory() as tmp:
        junit = os.path.join(tmp, "junit.xml")
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}",
               *extra, *files]
        t = time.perf_counter()
        try:
            out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=limit)
            status, text = out.returncode, out.stdout + out.stderr
        except subprocess.TimeoutExpired as exc:
            status, text = "timed out", (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        counts, failures = {}, []
        if os.path.exists(junit):
            import xml.etree.ElementTree as ET

            for case in ET.parse(junit).iter("testcase"):
                kind = "passed"
                for tag in ("failure", "error", "skipped"):
                    if case.find(tag) is not None:
                        kind = tag
                counts[kind] = counts.get(kind, 0) + 1
                if kind in ("failure", "error"):
                    failures.append(f"{case.get('classname')}::{case.get('name')}")
        return {"status": status, "seconds": round(time.perf_counter() - t, 1), "counts": counts,
                "failures": failures[:40], "tail": text[-2500:]}


def part_tests_device(args):
    return _pytest(["tests/test_gpu_device.py"], args.limit - 5)


def part_tests_other(args):
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_gpu_*.py")
                   if p.name != "test_gpu_device.py")
    extra = ()
    try:
        import xdist  # noqa: F401 -- pytest-xdist: the emulator tests on every core

        extra = ("-n", str(min(8, os.cpu_count() or 1)))
    except ImportError:
        pass
    return _pytest(files, args.limit - 5, extra)


def _compare(got, want, dtype):
    """(ok, what) for a device result against the CPU backend's."""
    import numpy as np

    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        return False, f"shape {got.shape} vs {want.shape}"
    if not np.array_equal(np.isnan(got), np.isnan(want)):
        return False, "NaN at other places"
    inf = np.isinf(want)
    if not np.array_equal(got[inf], want[inf]):
        return False, "infinities differ"
    fin = ~(np.isnan(want) | inf)
    tol = {np.dtype(np.float16): 2e-3, np.dtype(np.float32): 2e-5, np.dtype(np.float64): 1e-12}[np.dtype(dtype)]
    # -ftz=true: the GPU flushes float32 subnormals, the CPU keeps them.
    atol = 1e-37 if np.dtype(dtype) == np.float32 else 0.0
    err = np.abs(got[fin] - want[fin]) - (tol * np.abs(want[fin]) + atol)
    worst = float(err.max()) if err.size else -1.0
    return worst <= tol, f"worst excess {worst:.3g}"


def _special_rows(k, dtype):
    import numpy as np

    finfo = np.finfo(dtype)
    rng = np.random.default_rng(7)
    rows = [rng.standard_normal(k)]
    specials = [np.nan, np.inf, -np.inf, 1e30 if dtype != np.float16 else 6e4, -1e30 if dtype != np.float16 else -6e4,
                float(finfo.smallest_subnormal), -float(finfo.smallest_subnormal), 0.0]
    for v in specials:
        r = rng.standard_normal(k)
        r[k // 3] = v
        rows.append(r)
    rows.append(np.full(k, -np.inf))
    rows.append(np.full(k, float(finfo.smallest_subnormal)))
    big = rng.standard_normal(k)
    big[::2] = 1e30 if dtype != np.float16 else 6e4
    rows.append(big)
    return np.array(rows).astype(dtype)


def part_checks(args):
    import numpy as np

    cp = _cupy(args.dry_run)
    import csoftmax

    results = []

    def record(group, name, func):
        try:
            ok, what = func()
        except Exception as exc:
            ok, what = False, f"{type(exc).__name__}: {exc}"[:200]
        results.append({"group": group, "case": name, "ok": bool(ok), "detail": what})
        _save(args, {"results": results})

    ops = ("softmax", "log_softmax", "softmax_backward", "log_softmax_backward", "logsumexp", "softmax_jacobian")
    ks = (7, 300) if args.dry_run else (7, 33, 1000, 5000, 40000)
    for dtype in (np.float16, np.float32, np.float64):
        for op in ops:
            for k in ks:
                if op == "softmax_jacobian" and k > 1000:
                    continue
                x = _special_rows(k, dtype)
                args_h = [x]
                if op.endswith("backward"):
                    fwd = csoftmax.softmax(x) if op == "softmax_backward" else csoftmax.log_softmax(x)
                    g = np.random.default_rng(1).standard_normal(x.shape).astype(dtype)
                    args_h = [fwd, g]
                fn = getattr(csoftmax, op)

                def case(fn=fn, args_h=args_h, dtype=dtype):
                    got = fn(*[cp.asarray(a) for a in args_h])
                    return _compare(got.get(), fn(*args_h), dtype)

                record("special values", f"{op} {np.dtype(dtype).name} K={k}", case)

    rng = np.random.default_rng(3)
    h = rng.standard_normal((64, 300)).astype(np.float32)
    g = rng.standard_normal((64, 300)).astype(np.float32)
    views = {
        "row-sliced x[::2]": (lambda d: d[::2], lambda a: a[::2], -1),
        "column-sliced x[:, 1:]": (lambda d: d[:, 1:], lambda a: a[:, 1:], -1),
        "transposed x.T, axis=0": (lambda d: d.T, lambda a: a.T, 0),
        "3-D, axis=1": (lambda d: d.reshape(8, 8, 300).transpose(0, 2, 1),
                        lambda a: a.reshape(8, 8, 300).transpose(0, 2, 1), 1),
        "unaligned x[:, 1:-3]": (lambda d: d[:, 1:-3], lambda a: a[:, 1:-3], -1),
    }
    for name, (dview, hview, axis) in views.items():
        for op in ("softmax", "log_softmax_backward"):
            def case(op=op, dview=dview, hview=hview, axis=axis):
                fn = getattr(csoftmax, op)
                dargs = [dview(cp.asarray(a)) for a in ((h,) if op == "softmax" else (h, g))]
                hargs = [np.ascontiguousarray(hview(a)) for a in ((h,) if op == "softmax" else (h, g))]
                return _compare(fn(*dargs, axis=axis).get(), fn(*hargs, axis=axis), np.float32)

            record("views", f"{op}: {name}", case)

    def out_view():
        big = cp.asarray(np.zeros((64, 600), np.float32))
        out = big[:, ::2]
        r = csoftmax.softmax(cp.asarray(h), out=out)
        return _compare(r.get(), csoftmax.softmax(h), np.float32)

    def in_place():
        d = cp.asarray(h)
        csoftmax.log_softmax(d, out=d)
        return _compare(d.get(), csoftmax.log_softmax(h), np.float32)

    record("views", "out= a column-strided view", out_view)
    record("views", "in place (out is x)", in_place)

    # Streams: a kernel on a non-default stream must run after the work
    # queued before it on that stream, and two streams must not mix.
    def streams(two):
        n, k = (2048, 4096) if not args.dry_run else (8, 64)
        hosts = [np.random.default_rng(s).standard_normal((n, k)).astype(np.float32) for s in (1, 2)]
        outs = []
        streams_ = [cp.cuda.Stream(non_blocking=True) for _ in range(2 if two else 1)]
        for s, host in zip(streams_, hosts):
            with s:
                d = cp.empty((n, k), np.float32)
                src = cp.asarray(host)
                for _ in range(20):  # slow producer: many copies queued on this stream
                    cp.copyto(d, src)
                outs.append(csoftmax.softmax(d))
        for s in streams_:
            s.synchronize()
        worst = []
        for o, host in zip(outs, hosts):
            ok, what = _compare(o.get(), csoftmax.softmax(host), np.float32)
            if not ok:
                return ok, what
            worst.append(what)
        return True, "; ".join(worst)

    record("streams", "non-default stream after a slow producer", lambda: streams(False))
    record("streams", "two non-default streams at once", lambda: streams(True))
    return {"results": results}


def _bench_gpu():
    sys.path.insert(0, str(BENCH))
    import bench_gpu

    return bench_gpu


def _peer_table(cp, dry):
    """op -> {peer name: (make(x, g) -> call, moved bytes per element factor)}."""
    peers = {}
    try:
        from cupyx.scipy import special as cs

        peers["cupyx"] = {
            "softmax": lambda x, g: (lambda: cs.softmax(x, axis=1)),
            "log_softmax": lambda x, g: (lambda: cs.log_softmax(x, axis=1)),
            "logsumexp": lambda x, g: (lambda: cs.logsumexp(x, axis=1)),
        }
    except Exception:
        pass
    if not dry:
        try:
            import torch

            if torch.cuda.is_available():
                tf = torch.nn.functional

                def t(a):
                    return torch.from_dlpack(a)

                peers["torch"] = {
                    "softmax": lambda x, g: (lambda tx=t(x): torch.softmax(tx, dim=1)),
                    "log_softmax": lambda x, g: (lambda tx=t(x): torch.log_softmax(tx, dim=1)),
                    "softmax_backward": lambda x, g: (
                        lambda ty=t(x), tg=t(g): torch._softmax_backward_data(tg, ty, 1, ty.dtype)),
                    "log_softmax_backward": lambda x, g: (
                        lambda ty=t(x), tg=t(g): torch._log_softmax_backward_data(tg, ty, 1, ty.dtype)),
                    "logsumexp": lambda x, g: (lambda tx=t(x): torch.logsumexp(tx, dim=1)),
                    "softmax_cross_entropy": lambda x, g: (
                        lambda tx=t(x), tt=torch.zeros(x.shape[0], dtype=torch.int64, device=t(x).device):
                        tf.cross_entropy(tx, tt)),
                }
        except Exception:
            pass
    return peers


def part_timing(args):
    import numpy as np

    cp = _cupy(args.dry_run)
    import csoftmax
    from csoftmax import _gpu

    timer = _bench_gpu()._time
    repeat = 8 if args.dry_run else 40
    props = cp.cuda.runtime.getDeviceProperties(0)
    l2 = props.get("l2CacheSize", 50 * 2**20)
    peers = _peer_table(cp, args.dry_run)
    rows, deadline = [], time.monotonic() + args.limit - 15
    shapes = DRY_SHAPES if args.dry_run else SHAPES
    ops = ("softmax", "log_softmax", "softmax_backward", "log_softmax_backward", "logsumexp",
           "softmax_cross_entropy")
    for n, k in shapes:
        nbytes = n * k * 4
        nbuf = int(min(16, max(2, -(-3 * l2 // nbytes))))
        rng = cp.random.default_rng(0)
        xs = [rng.standard_normal((n, k), dtype=cp.float32) for _ in range(nbuf)]
        gs = [rng.standard_normal((n, k), dtype=cp.float32) for _ in range(nbuf)]
        dst = cp.empty((n, k), np.float32)
        copy = timer(lambda x: cp.copyto(dst, x), repeat, xs)
        copy_gbps = 2 * nbytes / copy / 1e9
        for op in ops:
            if time.monotonic() > deadline:
                rows.append({"shape": f"{n}x{k}", "op": op, "skipped": "time box"})
                _save(args, {"rows": rows})
                continue
            backward = op.endswith("backward")
            reduce_ = op in ("logsumexp", "softmax_cross_entropy")
            moved = nbytes * (3 if backward else 1) + (n * 4 if reduce_ else nbytes)
            row = {"shape": f"{n}x{k}", "op": op, "copy GB/s": round(copy_gbps)}
            if op in _gpu.OPS:
                # the kernel tier the shape gets: 8x2^20 and 64x50257 split
                # their rows over several blocks (softmax, log_softmax, logsumexp)
                try:
                    row["tier"] = _gpu.plan(op, n, k, np.float32, True, props).tier
                except Exception as exc:
                    row["tier"] = f"{type(exc).__name__}"

            def entry(label, seconds):
                row[label] = {"us": round(seconds * 1e6, 1), "GB/s": round(moved / seconds / 1e9),
                              "% of copy": round(100 * moved / seconds / 1e9 / copy_gbps)}

            bufs = list(zip(xs, gs))
            try:
                if op == "softmax_cross_entropy":
                    target = cp.asarray(np.zeros(n, np.int64))
                    entry("csoftmax API", timer(lambda b: csoftmax.softmax_cross_entropy(b[0], target), repeat, bufs))
                else:
                    # the kernel path: _gpu.run into an output of each buffer's own
                    outs = [cp.empty(_gpu.out_shape(op, n, k), np.float32) for _ in bufs]
                    triples = [(x, g, o) for (x, g), o in zip(bufs, outs)]
                    entry("csoftmax kernel", timer(
                        lambda b: _gpu.run(op, b[0], b[1] if backward else None, b[2]), repeat, triples))
                    del outs, triples
                    fn = getattr(csoftmax, op)
                    entry("csoftmax API", timer(lambda b: fn(*(b if backward else b[:1])), repeat, bufs))
            except Exception as exc:
                row["csoftmax API"] = f"{type(exc).__name__}: {exc}"[:160]
            for peer, table in peers.items():
                make = table.get(op)
                if make is None:
                    continue
                try:
                    calls = [make(x, g) for x, g in bufs]
                    entry(peer, timer(lambda c: c(), repeat, calls))
                except Exception as exc:
                    row[peer] = f"{type(exc).__name__}: {exc}"[:160]
            rows.append(row)
            _save(args, {"rows": rows})
        del xs, gs, dst
        cp.get_default_memory_pool().free_all_blocks()
    # Jacobian: against a fill of its output.
    jac = []
    for n, k in ((4096, 64), (256, 512)) if not args.dry_run else ((16, 16),):
        x = cp.random.default_rng(0).standard_normal((n, k), dtype=cp.float32)
        out = cp.empty((n, k, k), np.float32)
        fill = timer(lambda: out.fill(0), repeat)
        ours = timer(lambda: _gpu.run("softmax_jacobian", x, None, out), repeat)
        jac.append({"shape": f"{n}x{k}", "fill us": round(fill * 1e6, 1), "csoftmax us": round(ours * 1e6, 1),
                    "% of fill": round(100 * fill / ours)})
        _save(args, {"rows": rows, "jacobian": jac})
    # Host time per small call (1 x 10): the launch path, what the GPU cannot hide.
    x = cp.asarray(np.random.default_rng(0).standard_normal((1, 10)).astype(np.float32))
    out = cp.empty((1, 10), np.float32)
    host = {}
    for label, call in (("csoftmax.softmax(x)", lambda: csoftmax.softmax(x)),
                        ("csoftmax.softmax(x, out=out)", lambda: csoftmax.softmax(x, out=out)),
                        ("_gpu.run", lambda: _gpu.run("softmax", x, None, out))):
        best = float("inf")
        for _ in range(5):
            t = time.perf_counter()
            for _ in range(2000):
                call()
            cp.cuda.runtime.deviceSynchronize()
            best = min(best, (time.perf_counter() - t) / 2000)
        host[label] = round(best * 1e6, 2)
    if "torch" in peers:
        import torch

        tx = torch.from_dlpack(x)
        best = float("inf")
        for _ in range(5):
            t = time.perf_counter()
            for _ in range(2000):
                torch.softmax(tx, dim=1)
            torch.cuda.synchronize()
            best = min(best, (time.perf_counter() - t) / 2000)
        host["torch.softmax(x)"] = round(best * 1e6, 2)
    return {"rows": rows, "jacobian": jac, "host us per 1x10 call": host}


SANITIZER_DRIVER = textwrap.dedent("""
    # Every kernel tier once, small: what compute-sanitizer checks ((2, 9000)
    # float64 and (2, 70000) take the split tier for the forward ops).
    import numpy as np, cupy as cp, csoftmax
    rng = np.random.default_rng(0)
    for dtype in (np.float16, np.float32, np.float64):
        for n, k in ((5, 7), (9, 33), (4, 1000), (3, 1025), (2, 9000), (2, 70000)):
            x = cp.asarray(rng.standard_normal((n, k)).astype(dtype))
            g = cp.asarray(rng.standard_normal((n, k)).astype(dtype))
            m = cp.asarray(rng.random((n, k)) > 0.3)
            for f in (csoftmax.softmax, csoftmax.log_softmax):
                f(x); f(x, where=m)
            csoftmax.softmax_backward(x, g); csoftmax.log_softmax_backward(x, g)
            csoftmax.logsumexp(x)
            if k <= 1025:
                csoftmax.softmax_jacobian(x)
    cp.cuda.runtime.deviceSynchronize()
    print("driver done")
""")


def part_sanitizer(args):
    tool = shutil.which("compute-sanitizer")
    if tool is None:
        return {"status": "compute-sanitizer not found"}
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        driver = os.path.join(tmp, "driver.py")
        Path(driver).write_text(SANITIZER_DRIVER)
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        per_tool = max(20, (args.limit - 10) // 2)
        for check in ("memcheck", "racecheck"):
            t = time.perf_counter()
            try:
                out = subprocess.run([tool, "--tool", check, "--print-limit", "20", sys.executable, driver],
                                     capture_output=True, text=True, timeout=per_tool, env=env, cwd=tmp)
                text = out.stdout + out.stderr
                summary = [line for line in text.splitlines() if "SUMMARY" in line]
                res[check] = {"status": out.returncode, "summary": summary, "seconds": round(time.perf_counter() - t),
                              "tail": text[-1200:]}
            except subprocess.TimeoutExpired:
                res[check] = {"status": "timed out", "seconds": per_tool}
    return res


PARTS = {"env": part_env, "build": part_build, "tests-device": part_tests_device,
         "checks": part_checks, "timing": part_timing, "sanitizer": part_sanitizer,
         "tests-other": part_tests_other}


# ---------------------------------------------------------------- the parent: time boxes and the report

def _run_part(name, limit, dry):
    with tempfile.TemporaryDirectory() as tmp:
        result = os.path.join(tmp, "result.json")
        cmd = [sys.executable, str(Path(__file__).resolve()), "--part", name, "--result", result,
               "--limit", str(int(limit))] + (["--dry-run"] if dry else [])
        t = time.perf_counter()
        try:
            out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=limit)
            data = {}
            if os.path.exists(result):
                with open(result) as f:
                    data = json.load(f)
            if out.returncode != 0:
                data["error"] = (f"the part exited with status {out.returncode}"
                                 + (" (partial results below)" if data else ""))
                data["tail"] = (out.stdout + out.stderr)[-2000:]
        except subprocess.TimeoutExpired:
            data = {}
            if os.path.exists(result):
                with open(result) as f:
                    data = json.load(f)  # what the part had measured so far
            data["error"] = f"timed out after {limit:.0f} s" + (" (partial results below)" if data else "")
        data["_seconds"] = round(time.perf_counter() - t, 1)
        return data


def _fmt_cell(v):
    if isinstance(v, dict) and "us" in v:
        return f"{v['us']:.1f} us, {v['GB/s']} GB/s, {v['% of copy']} %"
    return str(v)


def render(results, budget, dry) -> str:
    lines = ["# csoftmax device check" + (" (DRY RUN: CuPy stand-in, no GPU; numbers mean nothing)" if dry else ""),
             "", f"Written {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())} by "
             f"`python bench/device_check.py{' --dry-run' if dry else ''}`; budget {budget} s.", ""]
    lines += ["## Parts", "", "| part | seconds | outcome |", "|---|---|---|"]
    for name, data in results.items():
        if "error" in data:
            outcome = f"FAILED: {data['error']}"
        elif "skipped" in data:
            outcome = f"skipped: {data['skipped']}"
        elif name.startswith("tests"):
            outcome = f"status {data.get('status')}, {data.get('counts')}"
        elif name == "checks":
            bad = [r for r in data["results"] if not r["ok"]]
            outcome = f"{len(data['results']) - len(bad)} of {len(data['results'])} passed"
        else:
            outcome = "done"
        lines.append(f"| {name} | {data.get('_seconds', '')} | {outcome} |")
    env = results.get("env", {})
    if "error" not in env and "skipped" not in env:
        lines += ["", "## Environment", ""] + [f"- {k}: {v}" for k, v in env.items() if not k.startswith("_")]
    for name in ("build", "tests-device", "tests-other"):
        data = results.get(name, {})
        if data and "skipped" not in data:
            lines += ["", f"## {name}", ""]
            for key in ("status", "seconds", "counts"):
                if key in data:
                    lines.append(f"- {key}: {data[key]}")
            if data.get("failures"):
                lines += ["- failures:"] + [f"  - `{f}`" for f in data["failures"]]
            tail = data.get("tail") or data.get("log tail")
            if tail:
                lines += ["", "```", tail.strip()[-2000:], "```"]
            if "error" in data:
                lines.append(f"- error: {data['error']}")
    checks = results.get("checks", {})
    if "error" in checks:
        lines += ["", f"Checks: {checks['error']}"]
    if "results" in checks:
        lines += ["", "## Special values, views, streams", "", "| group | case | ok | detail |", "|---|---|---|---|"]
        shown = [r for r in checks["results"] if not r["ok"]] or []
        passed = [r for r in checks["results"] if r["ok"]]
        for r in shown + [r for r in passed if r["group"] != "special values"]:
            lines.append(f"| {r['group']} | {r['case']} | {'yes' if r['ok'] else 'NO'} | {r['detail']} |")
        n_special = sum(1 for r in passed if r["group"] == "special values")
        lines.append(f"| special values | {n_special} cases (every op, dtype, K) | yes | |")
    timing = results.get("timing", {})
    if "rows" in timing:
        labels = []
        for r in timing["rows"]:
            for key in r:
                if key not in ("shape", "op", "copy GB/s", "skipped") and key not in labels:
                    labels.append(key)
        lines += ["", "## Timing (float32; CUDA events, 20 back-to-back calls, rotating buffers; "
                      "GB/s = bytes read + written / time; % of a device-to-device copy of the same size)", "",
                  "| shape | op | copy GB/s | " + " | ".join(labels) + " |",
                  "|---|---|---|" + "---|" * len(labels)]
        for r in timing["rows"]:
            if "skipped" in r:
                lines.append(f"| {r['shape']} | {r['op']} | skipped: {r['skipped']} |")
                continue
            lines.append(f"| {r['shape']} | {r['op']} | {r['copy GB/s']} | "
                         + " | ".join(_fmt_cell(r.get(lbl, "")) for lbl in labels) + " |")
        lines += ["", "Targets of the issue (softmax float32):", ""]
        by = {(r["shape"], r["op"]): r for r in timing["rows"]}
        for shape in ("16384x1000", "1024x32768"):
            r = by.get((shape, "softmax"), {})
            got = r.get("csoftmax kernel")
            verdict = (f"{got['% of copy']} % of copy: {'met' if got['% of copy'] >= 85 else 'NOT met'}"
                       if isinstance(got, dict) else "not measured")
            lines.append(f"- {shape} at >= 85 % of copy: {verdict}")
        r = by.get(("8x1048576", "softmax"), {})
        ours, torch_ = r.get("csoftmax kernel"), r.get("torch")
        if isinstance(ours, dict) and isinstance(torch_, dict):
            lines.append(f"- 8x2^20 ahead of torch: {ours['us']} us vs {torch_['us']} us: "
                         f"{'met' if ours['us'] < torch_['us'] else 'NOT met'}")
        else:
            lines.append("- 8x2^20 ahead of torch: not measured")
        if timing.get("jacobian"):
            lines += ["", "| Jacobian shape | fill us | csoftmax us | % of fill |", "|---|---|---|---|"]
            for j in timing["jacobian"]:
                lines.append(f"| {j['shape']} | {j['fill us']} | {j['csoftmax us']} | {j['% of fill']} |")
        if "host us per 1x10 call" in timing:
            lines += ["", "Host time per 1x10 float32 call (us, best of 5 x 2000 calls):", ""]
            lines += [f"- {k}: {v}" for k, v in timing["host us per 1x10 call"].items()]
        if "error" in timing:
            lines += ["", f"- {timing['error']}"]
    elif timing:
        lines += ["", "## Timing", "", f"- {timing.get('error') or timing.get('skipped')}"]
    san = results.get("sanitizer", {})
    if san:
        lines += ["", "## compute-sanitizer", ""]
        for key, val in san.items():
            if key.startswith("_"):
                continue
            if isinstance(val, dict):
                lines.append(f"- {key}: status {val.get('status')}, {val.get('seconds')} s, {val.get('summary')}")
                if val.get("status") not in (0, None):
                    lines += ["", "```", str(val.get("tail", "")).strip(), "```"]
            else:
                lines.append(f"- {key}: {val}")
    return "\n".join(lines) + "\n"


def _have_gpu():
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0, None
    except Exception as exc:
        return False, f"{type(exc).__name__}: {exc}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", default="device_check.md", help="the markdown report to write")
    parser.add_argument("--budget", type=float, default=540, help="seconds for everything (default 540)")
    parser.add_argument("--dry-run", action="store_true", help="no GPU: run on the CuPy stand-in")
    parser.add_argument("--skip", default="", help="comma-separated parts to leave out")
    parser.add_argument("--part", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--limit", type=float, default=60, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.part:  # a child: one part, its result as JSON
        result = PARTS[args.part](args)
        with open(args.result, "w") as f:
            json.dump(result, f, default=str)
        return 0

    if not args.dry_run:
        ok, why = _have_gpu()
        if not ok:
            print(f"device_check: no usable CUDA GPU ({why or 'no device'}); nothing to check. "
                  "Use --dry-run to try the report code on the CuPy stand-in.", file=sys.stderr)
            return 2
    start = time.monotonic()
    skip = {s for s in args.skip.split(",") if s}
    if args.dry_run:
        skip |= {"tests-other", "sanitizer"}  # the emulator suite is the normal test command's
    results = {}
    for name in PARTS:
        left = args.budget - (time.monotonic() - start)
        if name in skip:
            results[name] = {"skipped": "--skip" if not args.dry_run or name not in ("tests-other", "sanitizer")
                             else "dry run"}
            continue
        if left < PART_MINIMUM[name]:
            results[name] = {"skipped": f"budget spent ({left:.0f} s left)"}
            continue
        print(f"device_check: {name} (up to {min(PART_LIMITS[name], left):.0f} s)", file=sys.stderr, flush=True)
        results[name] = _run_part(name, min(PART_LIMITS[name], left), args.dry_run)
    report = render(results, args.budget, args.dry_run)
    Path(args.report).write_text(report)
    print(report)
    print(f"device_check: wrote {args.report} in {time.monotonic() - start:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
