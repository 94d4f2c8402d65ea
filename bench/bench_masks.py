"""Masked softmax (where=) and logsumexp against their peers, in one run.

    python bench/bench_masks.py            # 1 and 2 threads, float32
    python bench/bench_masks.py --quick    # fewer shapes and repetitions

Cases, per thread count (each in a fresh subprocess, because JAX fixes its
thread pool when XLA starts, pinned to that many CPUs: XLA's flags alone
left its 1-thread logsumexp of 16384 x 1000 on both cores of a 2-core VM,
5.0 ms against 10.2 ms pinned):
  softmax with a padded-sequence mask (N, K): csoftmax's unmasked softmax (the
  1.3x target's baseline), csoftmax where= (allocating, and with out=),
  jax.nn.softmax(where=) under jax.jit, and torch's masked_fill(~mask, -inf)
  followed by softmax;
  the same with a random mask (a fifth of the elements masked, as dropout or
  an arbitrary attention mask leaves them), and csoftmax's softmax of the
  input with -inf where the mask is off (what a masked_fill gives);
  logsumexp: csoftmax, scipy.special.logsumexp, torch.logsumexp and
  jax.nn.logsumexp under jax.jit;
  log_softmax_backward of the -inf-filled input's log_softmax (y with -inf),
  out=, against the same call on a clean y and NumPy's formula;
  softmax_backward with the random mask (where=, out=) of the masked softmax,
  against the unmasked call, NumPy's formula with np.where and torch's
  native backward of the masked softmax (what autograd runs after a
  masked_fill: the masked y are 0).
Each entry is the best time per call over several rounds of back-to-back
calls. Peers that are not installed are left out and named. The summary says,
per case, whether csoftmax is the fastest and how masked compares with
unmasked.
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np

import _timing

SHAPES = [(32, 10), (64, 10), (256, 100), (1024, 1000), (4096, 128), (16384, 1000), (100000, 10)]
QUICK_SHAPES = [(64, 10), (4096, 128), (16384, 1000)]


def padded_mask(n, k, rng):
    lengths = rng.integers(1, k + 1, size=n)
    return np.arange(k) < lengths[:, None]


def worker(threads, shapes, budget):
    import csoftmax
    import scipy.special
    results, missing = [], {}
    try:
        import torch
        torch.set_num_threads(threads)
    except ImportError as exc:
        torch, missing["torch"] = None, str(exc)
    try:
        import jax
        import jax.numpy as jnp
        jax_softmax = jax.jit(lambda x, w: jax.nn.softmax(x, where=w))
        jax_lse = jax.jit(lambda x: jax.nn.logsumexp(x, axis=-1))
    except ImportError as exc:
        jax, missing["jax"] = None, str(exc)
    rng = np.random.default_rng(0)
    for n, k in shapes:
        x = rng.standard_normal((n, k)).astype(np.float32)
        w = padded_mask(n, k, rng)
        wr = rng.random((n, k)) > 0.2
        x_inf = np.where(wr, x, np.float32(-np.inf))
        out = np.empty_like(x)
        lse_out = np.empty(n, np.float32)
        # log_softmax_backward of a -inf-filled input's log_softmax (y holds
        # -inf where the input did), against the same call on a clean y.
        y, y_inf = csoftmax.log_softmax(x), csoftmax.log_softmax(x_inf)
        g = rng.standard_normal((n, k)).astype(np.float32)
        ym = csoftmax.softmax(x, where=wr)  # the masked softmax: 0 where masked
        cases = {
            ("softmax_masked", "csoftmax unmasked"): lambda: csoftmax.softmax(x, num_threads=threads),
            ("softmax_masked", "csoftmax where="): lambda: csoftmax.softmax(x, where=w, num_threads=threads),
            ("softmax_masked", "csoftmax where= out="):
                lambda: csoftmax.softmax(x, where=w, out=out, num_threads=threads),
            ("softmax_random_mask", "csoftmax unmasked"): lambda: csoftmax.softmax(x, num_threads=threads),
            ("softmax_random_mask", "csoftmax where="):
                lambda: csoftmax.softmax(x, where=wr, num_threads=threads),
            ("softmax_random_mask", "csoftmax where= out="):
                lambda: csoftmax.softmax(x, where=wr, out=out, num_threads=threads),
            ("softmax_random_mask", "csoftmax of -inf filled"):
                lambda: csoftmax.softmax(x_inf, out=out, num_threads=threads),
            ("logsumexp", "csoftmax"): lambda: csoftmax.logsumexp(x, num_threads=threads),
            ("logsumexp", "csoftmax out="):
                lambda: csoftmax.logsumexp(x, out=lse_out, num_threads=threads),
            ("logsumexp", "scipy"): lambda: scipy.special.logsumexp(x, axis=-1),
            ("log_softmax_backward_minus_inf", "csoftmax unmasked"):
                lambda: csoftmax.log_softmax_backward(y, g, out=out, num_threads=threads),
            ("log_softmax_backward_minus_inf", "csoftmax with -inf out="):
                lambda: csoftmax.log_softmax_backward(y_inf, g, out=out, num_threads=threads),
            ("log_softmax_backward_minus_inf", "numpy formula"):
                lambda: g - np.exp(y_inf) * g.sum(-1, keepdims=True),
            ("softmax_backward_masked", "csoftmax unmasked"):
                lambda: csoftmax.softmax_backward(ym, g, out=out, num_threads=threads),
            ("softmax_backward_masked", "csoftmax where= out="):
                lambda: csoftmax.softmax_backward(ym, g, where=wr, out=out, num_threads=threads),
            ("softmax_backward_masked", "numpy formula"):
                lambda: np.where(wr, ym * (g - (np.where(wr, g, 0) * ym).sum(-1, keepdims=True)), 0),
        }
        if torch is not None:
            tx, tnot = torch.from_numpy(x), torch.from_numpy(~w)
            cases[("softmax_masked", "torch masked_fill+softmax")] = \
                lambda: tx.masked_fill(tnot, float("-inf")).softmax(-1)
            trnot = torch.from_numpy(~wr)
            cases[("softmax_random_mask", "torch masked_fill+softmax")] = \
                lambda: tx.masked_fill(trnot, float("-inf")).softmax(-1)
            cases[("logsumexp", "torch")] = lambda: torch.logsumexp(tx, -1)
            tym, tg = torch.from_numpy(ym), torch.from_numpy(g)
            cases[("softmax_backward_masked", "torch native")] = \
                lambda: torch._softmax_backward_data(tg, tym, -1, tym.dtype)
        if jax is not None:
            jx, jw = jnp.asarray(x), jnp.asarray(w)
            cases[("softmax_masked", "jax where= (jit)")] = \
                lambda: jax_softmax(jx, jw).block_until_ready()
            jwr = jnp.asarray(wr)
            cases[("softmax_random_mask", "jax where= (jit)")] = \
                lambda: jax_softmax(jx, jwr).block_until_ready()
            cases[("logsumexp", "jax (jit)")] = lambda: jax_lse(jx).block_until_ready()
        for (case, impl), fn in cases.items():
            results.append({"case": case, "impl": impl, "shape": [n, k], "threads": threads,
                            "seconds": _timing.calibrated(fn, budget / 5, 5)})
    return {"results": results, "missing": missing}


def run_threads(threads, shapes, budget):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads),
               XLA_FLAGS=f"--xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'} "
                         f"intra_op_parallelism_threads={threads}")
    cpus = sorted(os.sched_getaffinity(0))[:threads] if hasattr(os, "sched_getaffinity") else None
    proc = subprocess.run([sys.executable, __file__, "--worker", str(threads),
                           "--shapes", json.dumps(shapes), "--budget", str(budget)],
                          env=env, capture_output=True, text=True, check=True,
                          preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fmt(s):
    return f"{s * 1e6:9.1f} us" if s < 1e-3 else f"{s * 1e3:9.2f} ms"


def report(runs):
    rows = [r for run in runs for r in run["results"]]
    missing = {k: v for run in runs for k, v in run["missing"].items()}
    print(f"float32; best time per call; peers missing: {missing or 'none'}")
    flags = []
    for case in ("softmax_masked", "softmax_random_mask", "logsumexp", "log_softmax_backward_minus_inf",
                 "softmax_backward_masked"):
        print(f"\n## {case}")
        keys = sorted({(tuple(r["shape"]), r["threads"]) for r in rows if r["case"] == case})
        for shape, t in keys:
            cell = {r["impl"]: r["seconds"] for r in rows
                    if r["case"] == case and tuple(r["shape"]) == shape and r["threads"] == t}
            ours = min(v for i, v in cell.items() if i.startswith("csoftmax") and "unmasked" not in i)
            peers = {i: v for i, v in cell.items() if not i.startswith("csoftmax")}
            line = f"{shape[0]:>6}x{shape[1]:<5} {t}T  " + "  ".join(
                f"{i}: {fmt(v)}" for i, v in cell.items())
            if peers:
                best_peer = min(peers, key=peers.get)
                line += f"  | vs fastest peer ({best_peer}): {peers[best_peer] / ours:.2f}x faster"
                if ours > peers[best_peer]:
                    flags.append(f"{case} {shape} {t}T: {best_peer} is faster")
            if case == "softmax_backward_masked":
                line += (f"  | masked/unmasked: "
                         f"{cell['csoftmax where= out='] / cell['csoftmax unmasked']:.2f}x")
            elif case.startswith("softmax"):
                line += (f"  | masked/unmasked: "
                         f"{cell['csoftmax where=' ] / cell['csoftmax unmasked']:.2f}x")
            elif case == "log_softmax_backward_minus_inf":
                line += (f"  | with -inf/without: "
                         f"{cell['csoftmax with -inf out='] / cell['csoftmax unmasked']:.2f}x")
            print(line)
    print("\nflags:", "; ".join(flags) if flags else "none (csoftmax fastest everywhere)")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    p.add_argument("--shapes", help=argparse.SUPPRESS)
    p.add_argument("--budget", type=float, default=0.3, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        shapes = [tuple(s) for s in json.loads(a.shapes)]
        print(json.dumps(worker(a.worker, shapes, a.budget)))
        return
    shapes = QUICK_SHAPES if a.quick else SHAPES
    budget = 0.1 if a.quick else a.budget
    runs = [run_threads(int(t), shapes, budget) for t in a.threads.split(",")]
    report(runs)


if __name__ == "__main__":
    main()
