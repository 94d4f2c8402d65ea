"""Time csoftmax's GPU kernels against CuPy baselines, next to a copy of the same size.

    python bench/bench_gpu.py [--dtype float32] [--elements 67108864] [--json PATH]

Rows of K = 16 ... 65536 elements, N = elements / K rows. For each K it
reports the time and the bandwidth, (bytes read + bytes written) / time, of:

- csoftmax kernel (csoftmax._gpu.run into a preallocated output: the launch path only),
- csoftmax API (csoftmax.softmax(x): validation, allocation and launch),
- the tutorials' ``softmax_cupy`` (csoftmax._tutorial),
- ``cupyx.scipy.special.softmax(x, axis=1)``,
- ``torch.softmax`` on the same memory (DLPack), where PyTorch with CUDA is installed,
- a device-to-device copy of the same bytes: the bandwidth to aim at
  (the goal: >= 85 % of it).

The Jacobian is compared with the tutorials' ``softmax_grad_cupy`` and with a
``fill`` of its (N, K, K) output. Without a CUDA GPU the script says so and
exits with status 1. No numbers are recorded here until a GPU run exists.
"""
from __future__ import annotations

import argparse
import json
import sys


def _need_gpu():
    try:
        import cupy
    except Exception as exc:
        sys.exit(f"bench_gpu: CuPy is not importable ({type(exc).__name__}: {exc}); nothing to measure")
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            raise RuntimeError("no device")
    except Exception as exc:
        sys.exit(f"bench_gpu: no CUDA GPU ({type(exc).__name__}: {exc}); nothing to measure")
    return cupy


# Back-to-back calls between one pair of CUDA events: the GPU time of many
# launches in a row, so Python dispatch overlaps the kernels instead of being
# counted as GPU time (cupyx.profiler.benchmark times one call at a time).
_CALLS = 20


def _time(func, repeat, buffers=None):
    """Seconds per call of ``func(buffer)``: ``_CALLS`` calls in a row between
    two CUDA events, rotating over ``buffers`` (so a small input is not served
    from L2 by the previous call), best of ``repeat`` rounds."""
    import cupy as cp

    call = func
    if buffers is None:
        buffers, call = [None], (lambda b: func())
    for i in range(3):
        call(buffers[i % len(buffers)])
    start, end = cp.cuda.Event(), cp.cuda.Event()
    best = float("inf")
    for _ in range(max(1, repeat // 4)):
        start.record()
        for i in range(_CALLS):
            call(buffers[i % len(buffers)])
        end.record()
        end.synchronize()
        best = min(best, cp.cuda.get_elapsed_time(start, end) / 1e3 / _CALLS)
    return best


def _peers(cp, dtype):
    import csoftmax
    from csoftmax import _gpu, _tutorial

    peers = {}
    outs = {}

    def kernel(x):
        out = outs.get(x.data.ptr)
        if out is None:
            out = outs[x.data.ptr] = cp.empty_like(x)
        _gpu.run("softmax", x, None, out)
        return out

    peers["csoftmax kernel"] = kernel
    peers["csoftmax API"] = csoftmax.softmax
    peers["tutorial softmax_cupy"] = _tutorial.softmax_cupy
    try:
        from cupyx.scipy.special import softmax as cupyx_softmax

        peers["cupyx.scipy.special.softmax"] = lambda x: cupyx_softmax(x, axis=1)
    except ImportError:
        pass
    try:
        import torch

        if torch.cuda.is_available():
            peers["torch.softmax"] = lambda x: torch.softmax(torch.from_dlpack(x), dim=1)
    except ImportError:
        pass
    return peers


def bench_softmax(cp, dtype, elements, repeat):
    rows = []
    peers = _peers(cp, dtype)
    k = 16
    while k <= 65536:
        n = max(1, elements // k)
        x = cp.random.default_rng(0).standard_normal((n, k), dtype=cp.float32).astype(dtype)
        xs = [x, x.copy()]  # rotated between calls
        dst = cp.empty_like(x)
        moved = 2 * x.nbytes  # read x, write y
        copy = _time(lambda src: cp.copyto(dst, src), repeat, xs)
        row = {"K": k, "N": n, "copy_ms": copy * 1e3, "copy_GBps": moved / copy / 1e9}
        for name, func in peers.items():
            try:
                t = _time(func, repeat, xs)
                row[name] = {"ms": t * 1e3, "GBps": moved / t / 1e9, "of_copy": copy / t}
            except Exception as exc:  # a peer that cannot take this shape or dtype
                row[name] = {"error": f"{type(exc).__name__}: {exc}"[:120]}
        rows.append(row)
        del x, xs, dst
        cp.get_default_memory_pool().free_all_blocks()
        k *= 4
    return rows


def bench_jacobian(cp, dtype, elements, repeat):
    from csoftmax import _gpu, _tutorial

    rows = []
    for k in (16, 64, 256, 1024):
        n = max(1, elements // (k * k))
        x = cp.random.default_rng(0).standard_normal((n, k), dtype=cp.float32).astype(dtype)
        out = cp.empty((n, k, k), dtype)
        moved = x.nbytes + out.nbytes
        fill = _time(lambda: out.fill(0), repeat)
        ours = _time(lambda: _gpu.run("softmax_jacobian", x, None, out), repeat)
        row = {"K": k, "N": n, "fill_ms": fill * 1e3, "csoftmax_ms": ours * 1e3,
               "csoftmax_GBps": moved / ours / 1e9, "of_fill": fill / ours}
        try:
            tut = _time(lambda: _tutorial.softmax_grad_cupy(x), repeat)
            row["tutorial_ms"] = tut * 1e3
        except Exception as exc:  # out of memory: the tutorial allocates several (N, K, K) temporaries
            row["tutorial_error"] = f"{type(exc).__name__}"
        rows.append(row)
        del x, out
        cp.get_default_memory_pool().free_all_blocks()
    return rows


def _print_softmax(rows):
    names = [key for key in rows[0] if isinstance(rows[0][key], dict)]
    print("| K | N | copy GB/s | " + " | ".join(f"{name} ms (GB/s, % of copy)" for name in names) + " |")
    print("|---|---|---|" + "---|" * len(names))
    for row in rows:
        cells = []
        for name in names:
            r = row[name]
            cells.append(r["error"] if "error" in r else f"{r['ms']:.3f} ({r['GBps']:.0f}, {100 * r['of_copy']:.0f} %)")
        print(f"| {row['K']} | {row['N']} | {row['copy_GBps']:.0f} | " + " | ".join(cells) + " |")


def _print_jacobian(rows):
    print("| K | N | fill ms | csoftmax ms (GB/s, % of fill) | tutorial ms |")
    print("|---|---|---|---|---|")
    for r in rows:
        tut = f"{r['tutorial_ms']:.3f}" if "tutorial_ms" in r else r.get("tutorial_error", "")
        print(f"| {r['K']} | {r['N']} | {r['fill_ms']:.3f} | {r['csoftmax_ms']:.3f} "
              f"({r['csoftmax_GBps']:.0f}, {100 * r['of_fill']:.0f} %) | {tut} |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="float32", choices=("float16", "float32", "float64"))
    parser.add_argument("--elements", type=int, default=2**26,
                        help="elements per softmax input (default 2**26: 256 MB of float32, well past L2)")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    cp = _need_gpu()
    from csoftmax import _gpu

    info = _gpu.info()
    print(f"# {info['device']} (compute capability {info['compute_capability']}), CuPy {info['cupy']}, "
          f"{args.dtype}\n")
    soft = bench_softmax(cp, args.dtype, args.elements, args.repeat)
    _print_softmax(soft)
    print()
    jac = bench_jacobian(cp, args.dtype, args.elements * 2, args.repeat)
    _print_jacobian(jac)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"info": info, "dtype": args.dtype, "softmax": soft, "jacobian": jac}, f, indent=1)


if __name__ == "__main__":
    main()
