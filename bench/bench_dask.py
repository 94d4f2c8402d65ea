#!/usr/bin/env python
"""softmax and log_softmax over a batch larger than a Dask worker's memory.

    python bench/bench_dask.py [--gib 4] [--k 1000] [--worker-memory 1GiB] [--dir DIR]

A float32 batch of --gib GiB (rows of K = --k classes) is written to a
memory-mapped file, then read by a dask.distributed LocalCluster of 2 worker
processes (1 thread each, --worker-memory each, so the batch is several times
a worker's limit). Each block is loaded in its worker straight from the file
(nothing passes through the client) and its result written into an output
file of the same size, so no worker ever holds more than a few blocks.

Timed, each on the same Dask array: csoftmax.softmax / log_softmax (a lazy
Dask graph, one map_blocks over whole rows), scipy.special.softmax /
log_softmax under SCIPY_ARRAY_API=1 (SciPy's array-API code on the Dask
array), and the same with the class axis split into 4 chunks (csoftmax
rechunks so every row is whole; SciPy reduces across chunks). Reported:
wall time, throughput (bytes read + written per second), and each worker's
peak resident memory (sampled every 200 ms), and the largest difference from
the NumPy path (csoftmax on the same rows) on 8 sampled row blocks read back
from the output file: 0 means bitwise equal. Best of --rounds runs per case.
Both files are deleted at the end.
"""
import argparse
import os
import shutil
import tempfile
import threading
import time

os.environ.setdefault("SCIPY_ARRAY_API", "1")  # before scipy is imported anywhere

import numpy as np  # noqa: E402


def _load(block_info=None, *, path, shape, item):
    """A block of the input, read in the worker from the memory-mapped file."""
    (r0, r1), (c0, c1) = block_info[None]["array-location"]
    m = np.memmap(path, mode="r", dtype=np.dtype(item), shape=shape)
    return np.array(m[r0:r1, c0:c1])


def _write(block, block_info=None, *, path, shape):
    """Writes a result block into the output file; returns a one-element
    block so that the graph's result stays small."""
    (r0, r1), (c0, c1) = block_info[0]["array-location"]
    m = np.memmap(path, mode="r+", dtype=block.dtype, shape=shape)
    m[r0:r1, c0:c1] = block
    del m  # the kernel writes the pages back; no msync in the timed loop
    return np.full((1, 1), np.float64(block[0, 0]))


def _rss():
    import psutil
    return psutil.Process().memory_info().rss


class PeakSampler:
    """Each worker's peak RSS during a `with` block, polled by the client."""

    def __init__(self, client, interval=0.2):
        self.client, self.interval = client, interval

    def __enter__(self):
        self.peak = {}
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            try:
                for w, rss in self.client.run(_rss).items():
                    self.peak[w] = max(self.peak.get(w, 0), rss)
            except Exception:
                pass
            self._stop.wait(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        return False


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gib", type=float, default=4.0, help="input size in GiB (float32)")
    ap.add_argument("--k", type=int, default=1000, help="classes per row")
    ap.add_argument("--rows-per-chunk", type=int, default=16384)
    ap.add_argument("--worker-memory", default="1GiB")
    ap.add_argument("--dir", default=None, help="where the two data files go (default: a temp dir)")
    ap.add_argument("--skip-scipy", action="store_true")
    ap.add_argument("--rounds", type=int, default=2,
                    help="runs per case, alternating; the best is kept (the first run "
                         "of all also pays for the output file's first writes)")
    args = ap.parse_args()

    import dask.array as da
    import scipy
    import scipy.special
    from distributed import Client, LocalCluster

    import csoftmax

    k = args.k
    n = int(args.gib * 2**30 / (4 * k))
    shape, dtype = (n, k), np.dtype(np.float32)
    nbytes = n * k * 4
    tmp = tempfile.mkdtemp(prefix="csoftmax-bench-", dir=args.dir)
    src, dst = os.path.join(tmp, "x.f32"), os.path.join(tmp, "y.f32")
    free = shutil.disk_usage(tmp).free
    if 2 * nbytes > 0.5 * free:
        raise SystemExit(f"{2 * nbytes / 2**30:.1f} GiB of data files would take more than "
                         f"half the {free / 2**30:.1f} GiB free in {tmp}; use a smaller --gib")
    try:
        t0 = time.perf_counter()
        x = np.memmap(src, mode="w+", dtype=dtype, shape=shape)
        # One random tile, shifted per tile: random numbers for gigabytes
        # would take minutes on a small machine.
        step = 1 << 14
        tile = np.random.default_rng(0).standard_normal((step, k), dtype=np.float32) * 4
        for i, r in enumerate(range(0, n, step)):
            x[r:r + step] = tile[:min(step, n - r)] + np.float32((i % 97) / 8)
        x.flush()
        del x
        np.memmap(dst, mode="w+", dtype=dtype, shape=shape).flush()
        print(f"data: {n} x {k} float32 = {nbytes / 2**30:.2f} GiB in {tmp} "
              f"(written in {time.perf_counter() - t0:.1f} s)")
        print(f"cluster: LocalCluster, 2 worker processes x 1 thread, memory_limit "
              f"{args.worker_memory} each; csoftmax {csoftmax.__version__}, scipy "
              f"{scipy.__version__}, SCIPY_ARRAY_API={os.environ['SCIPY_ARRAY_API']}")

        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                          memory_limit=args.worker_memory, dashboard_address=None) as cluster, \
                Client(cluster) as client:
            client.run(_rss)  # psutil present in the workers
            # Warm-up: the workers import csoftmax, SciPy and Dask's pieces once.
            warm = da.ones((64, k), chunks=(32, k), dtype=dtype)
            csoftmax.softmax(warm).sum().compute()
            if not args.skip_scipy:
                scipy.special.softmax(warm, axis=1).sum().compute()

            def source(col_chunks):
                return da.map_blocks(_load, chunks=(_row_chunks(n, args.rows_per_chunk), col_chunks),
                                     dtype=dtype, meta=np.empty((0, 0), dtype),
                                     path=src, shape=shape, item=dtype.str)

            best_err = {}
            cases = [("csoftmax", "softmax", csoftmax.softmax, (k,)),
                     ("csoftmax", "log_softmax", csoftmax.log_softmax, (k,)),
                     ("csoftmax", "softmax, K in 4 chunks", csoftmax.softmax, _split(k, 4))]
            if not args.skip_scipy:
                cases += [("scipy", "softmax", lambda d: scipy.special.softmax(d, axis=1), (k,)),
                          ("scipy", "log_softmax", lambda d: scipy.special.log_softmax(d, axis=1), (k,)),
                          ("scipy", "softmax, K in 4 chunks",
                           lambda d: scipy.special.softmax(d, axis=1), _split(k, 4))]
            best = {}
            for rnd in range(args.rounds):
                for lib, what, f, col_chunks in cases:
                    d = source(col_chunks)
                    res = f(d)
                    if not isinstance(res, da.Array):
                        raise SystemExit(f"{lib} {what}: returned {type(res).__name__}, "
                                         "not a Dask array")
                    sink = res.map_blocks(_write, path=dst, shape=shape, dtype=np.float64,
                                          chunks=tuple((1,) * len(c) for c in res.chunks))
                    with PeakSampler(client) as ps:
                        t = time.perf_counter()
                        sink.sum().compute()
                        t = time.perf_counter() - t
                    peaks = sorted(ps.peak.values())
                    print(f"  round {rnd + 1}: {lib:9s} {what:24s} {t:7.2f} s  "
                          f"{2 * nbytes / t / 1e9:6.2f} GB/s  peak RSS per worker "
                          f"{', '.join(f'{p / 2**20:.0f} MiB' for p in peaks)}", flush=True)
                    key = (lib, what)
                    if key not in best or t < best[key][0]:
                        best[key] = (t, peaks)
                    if rnd == 0:
                        op = "log_softmax" if "log" in what else "softmax"
                        err = _check(src, dst, shape, dtype, args.rows_per_chunk, op)
                        best_err[key] = err
                        print(f"    max abs difference from the NumPy path on 8 sampled "
                              f"blocks: {err:.3g}", flush=True)
            rows = [(lib, what, t, 2 * nbytes / t / 1e9, peaks, best_err[(lib, what)])
                    for (lib, what), (t, peaks) in best.items()]
        print(f"\nbest of {args.rounds}; data {nbytes / 2**30:.2f} GiB, worker memory limit "
              f"{args.worker_memory}\n")
        print("| library | operation | time | GB/s (read + write) | peak RSS per worker "
              "| max abs diff from NumPy path |")
        print("|---|---|---|---|---|---|")
        for lib, what, t, gbs, peaks, err in rows:
            print(f"| {lib} | {what} | {t:.1f} s | {gbs:.2f} | "
                  f"{' / '.join(f'{p / 2**20:.0f} MiB' for p in peaks)} | {err:.2g} |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _row_chunks(n, c):
    return (c,) * (n // c) + ((n % c,) if n % c else ())


def _split(k, parts):
    base = k // parts
    return tuple(base + (1 if i < k % parts else 0) for i in range(parts))


def _check(src, dst, shape, dtype, rows_per_chunk, op):
    """The largest difference between the output file and the NumPy path
    (csoftmax on the same rows) on 8 sampled blocks: 0 means bitwise."""
    import csoftmax
    x = np.memmap(src, mode="r", dtype=dtype, shape=shape)
    y = np.memmap(dst, mode="r", dtype=dtype, shape=shape)
    err = 0.0
    for r in np.random.default_rng(1).integers(0, shape[0] - 1, size=8):
        r1 = min(r + rows_per_chunk, shape[0])
        expect = getattr(csoftmax, op)(np.array(x[r:r1]))
        err = max(err, float(np.max(np.abs(expect.astype(np.float64) - y[r:r1]))))
    return err


if __name__ == "__main__":
    main()
