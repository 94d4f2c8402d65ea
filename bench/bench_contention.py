#!/usr/bin/env python
"""Contention benchmark: csoftmax's default thread count against one thread
while other processes keep the CPUs busy.

    python bench/bench_contention.py            # under a minute
    python bench/bench_contention.py --quick    # about 20 s

A user's machine is rarely idle. A parallel kernel that splits its rows evenly
among its threads (a static schedule) is only as fast as its slowest thread:
when another process shares one core, the thread on that core gets about half
of it and every other thread waits for it at the end of the loop. This script
measures how much of that reaches a caller, under three loads:

  none         the baseline: nothing else runs (apart from whatever the
               machine already runs: see the load average printed first).
  1 pinned     one busy-loop process pinned to one CPU with
               os.sched_setaffinity: the worst case for a static schedule.
  all CPUs     one busy-loop process pinned to each CPU this process may use.

Under each load, for float32 softmax at 4096x128 and 16384x1000 into a
preallocated `out=`, it takes samples of csoftmax.softmax(x, out=o) with
num_threads=1 and with the default thread count (num_threads=None), the two
alternating so that both see the same load, and prints the median time per
call of each. A sample times enough calls to last about 2 ms. The target is
that the default never costs much more than one thread: default / 1 thread
<= 1.5 under every load (below 1 means the threads help).

The busy-loop processes are daemons started with the "spawn" method and are
terminated (then killed) in a finally block, also on Ctrl-C. The table depends
on the OpenMP runtime's settings, printed with it: OMP_WAIT_POLICY and
GOMP_SPINCOUNT (how long idle threads spin before they sleep), OMP_NUM_THREADS,
OMP_PROC_BIND, OMP_DYNAMIC. Linux only (sched_setaffinity).
"""
import argparse
import multiprocessing
import os
import platform
import statistics
import sys
import time

import numpy as np

import csoftmax
from csoftmax import kernels

SHAPES = [(4096, 128), (16384, 1000)]
TARGET = 1.5
ENV_KNOBS = ["OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS", "OMP_PROC_BIND",
             "OMP_DYNAMIC", "CSOFTMAX_ISA"]
SAMPLE_S = 0.002  # each sample lasts at least this long


def _spin(cpu, started):
    """A busy loop, pinned to `cpu` (None: wherever the OS puts it)."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    started.set()
    while True:
        pass


class BusyLoad:
    """Busy-loop processes, one per entry of `cpus`, for the life of a with block."""

    def __init__(self, cpus):
        self.cpus = list(cpus)
        self.procs = []

    def __enter__(self):
        ctx = multiprocessing.get_context("spawn")
        try:
            for cpu in self.cpus:
                started = ctx.Event()
                p = ctx.Process(target=_spin, args=(cpu, started), daemon=True)
                p.start()
                self.procs.append(p)
                deadline = time.monotonic() + 30
                while not started.wait(0.05):
                    if not p.is_alive() or time.monotonic() > deadline:
                        raise RuntimeError(f"a busy-loop process did not start (cpu {cpu})")
            time.sleep(0.2)  # let the scheduler settle
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        for p in self.procs:
            if p.is_alive():
                p.terminate()
        for p in self.procs:
            p.join(2)
            if p.is_alive():
                p.kill()
                p.join(2)
        self.procs = []


def _sample(fn, inner):
    t0 = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - t0) / inner


def measure(x, out, min_samples, max_samples, budget_s):
    """(median 1-thread, median default, samples): alternating samples of the
    two, at least min_samples of each, then more until budget_s or max_samples."""
    one = lambda: csoftmax.softmax(x, out=out, num_threads=1)  # noqa: E731
    default = lambda: csoftmax.softmax(x, out=out)  # noqa: E731
    one()
    default()  # warm-up: the thread pool starts, the pages of out fault in
    inner = max(1, int(np.ceil(SAMPLE_S / max(_sample(one, 1), 1e-7))))
    t_one, t_default = [], []
    deadline = time.perf_counter() + budget_s
    while len(t_one) < min_samples or (time.perf_counter() < deadline
                                       and len(t_one) < max_samples):
        t_one.append(_sample(one, inner))
        t_default.append(_sample(default, inner))
    return statistics.median(t_one), statistics.median(t_default), len(t_one)


def _fmt(seconds):
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} us"
    return f"{seconds * 1e3:.2f} ms"


def _header(cpus):
    cfg = csoftmax.show_config(print_=False)
    print("# csoftmax contention benchmark")
    print()
    print(f"- csoftmax {cfg['version']}, ISA {cfg['isa']} (supported: "
          f"{', '.join(cfg['supported_isas'])}), OpenMP {cfg['openmp']}, "
          f"default threads {cfg['threads']}")
    print(f"- CPUs this process may use: {len(cpus)} {sorted(cpus)}; "
          f"os.cpu_count() {os.cpu_count()}; {platform.machine()} {platform.processor() or ''}".rstrip())
    try:
        loadavg = os.getloadavg()
    except OSError:
        loadavg = None
    print("- load average before the run: "
          + (" ".join(f"{v:.2f}" for v in loadavg) if loadavg else "n/a"))
    if loadavg and loadavg[0] > 0.5:
        print(f"- note: the machine was not idle (load average {loadavg[0]:.2f}): other "
              f"processes share the CPUs under every load, the 'none' baseline included")
    print(f"- Python {platform.python_version()}, NumPy {np.__version__}, "
          f"{platform.system()} {platform.release()}")
    print("- environment: " + ", ".join(f"{k}={os.environ.get(k, '(unset)')}" for k in ENV_KNOBS))
    build = cfg.get("build") or {}
    if build:
        print(f"- build: {build.get('compiler', '?')}; cflags {build.get('cflags', '?')}")
    print()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="30 samples per cell and a shorter budget (about 20 s)")
    ap.add_argument("--cpu", type=int, default=None,
                    help="the CPU for the '1 pinned' load (default: the last one this process may use)")
    args = ap.parse_args(argv)
    if not hasattr(os, "sched_setaffinity"):
        sys.exit("bench_contention.py needs os.sched_setaffinity (Linux)")

    cpus = sorted(os.sched_getaffinity(0))
    pinned = cpus[-1] if args.cpu is None else args.cpu
    min_samples, max_samples, budget_s = (30, 30, 1.0) if args.quick else (50, 200, 8.0)
    loads = [("none", []), (f"1 pinned (CPU {pinned})", [pinned]),
             (f"all CPUs ({len(cpus)} pinned)", cpus)]

    _header(cpus)
    rng = np.random.default_rng(0)
    inputs = {s: (4 * rng.standard_normal(s)).astype(np.float32) for s in SHAPES}
    outs = {s: np.empty(s, np.float32) for s in SHAPES}
    threads = kernels.max_threads()

    rows = []
    t_start = time.perf_counter()
    for name, load_cpus in loads:
        sys.stderr.write(f"load: {name} ...\n")
        with BusyLoad(load_cpus):
            for shape in SHAPES:
                one, default, n = measure(inputs[shape], outs[shape],
                                          min_samples, max_samples, budget_s)
                rows.append((name, shape, one, default, n))
    elapsed = time.perf_counter() - t_start

    print(f"softmax float32 into a preallocated out=; median time per call over n samples; "
          f"default = num_threads=None ({threads} threads); target: default / 1 thread <= {TARGET}")
    print()
    print("| load | shape | n | 1 thread | default | default / 1 thread | <= 1.5 |")
    print("|---|---|---|---|---|---|---|")
    for name, shape, one, default, n in rows:
        ratio = default / one
        ok = "yes" if ratio <= TARGET else "**no**"
        print(f"| {name} | {shape[0]}x{shape[1]} | {n} | {_fmt(one)} | {_fmt(default)} "
              f"| {ratio:.2f} | {ok} |")
    print()
    print(f"measured in {elapsed:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
