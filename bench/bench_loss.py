#!/usr/bin/env python
"""Softmax cross-entropy, loss plus gradient: csoftmax against its peers.

    python bench/bench_loss.py                 # every shape, 1 and 2 threads
    python bench/bench_loss.py --threads 1 --shapes 32x10,64x10 --rounds 5

One run, every entry measured in the same rounds, interleaved, so ratios
compare like with like on a machine that other processes share. Per entry
and round: best of several samples, each a loop lasting about `--sample`
seconds; the table shows the best over the rounds (and the median of the
rounds' bests). Entries, all float32 logits with int64 labels, reduction
"mean", the gradient of the mean loss w.r.t. the logits:

* csoftmax: softmax_cross_entropy(x, y, return_grad=True), fresh gradient;
  and with grad_out= reusing one buffer (a training loop's call);
* csoftmax softmax alone on the same input (the issue's yardstick: the loss
  plus gradient within 1.2x of it at 16384 x 1000);
* torch: F.cross_entropy(x, y) forward plus backward (autograd), on tensors
  made once (torch.from_numpy, no copy), torch.set_num_threads(t);
* optax: softmax_cross_entropy_with_integer_labels value_and_grad, jitted,
  where installed (JAX fixes its thread count at start: shown for the
  default only);
* NumPy: the textbook formula (max, exp, sum, log; p - onehot) / N.

Each implementation's loss and gradient are checked against csoftmax's
float64 reference before timing.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys

import numpy as np

import _timing
import csoftmax
from csoftmax._loss_reference import softmax_cross_entropy as reference

SHAPES = [(32, 10), (64, 10), (256, 100), (1024, 1000), (16384, 1000)]


def numpy_xent(x, y):
    """The NumPy formula a training loop writes: mean loss and its gradient."""
    n = x.shape[0]
    z = x - x.max(axis=1, keepdims=True)
    e = np.exp(z)
    s = e.sum(axis=1, keepdims=True)
    loss = np.mean(np.log(s[:, 0]) - z[np.arange(n), y])
    grad = e / s
    grad[np.arange(n), y] -= 1
    grad /= n
    return loss, grad


def peers(x, y, threads):
    """{name: callable returning (loss, grad)} for the peers installed here."""
    out = {"numpy formula": lambda: numpy_xent(x, y)}
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        torch = None
    if torch is not None:
        torch.set_num_threads(threads)
        xt = torch.from_numpy(x).requires_grad_(True)
        yt = torch.from_numpy(y)

        def torch_fb():
            xt.grad = None
            loss = F.cross_entropy(xt, yt)
            loss.backward()
            return loss.detach().numpy(), xt.grad.numpy()
        out["torch fwd+bwd"] = torch_fb
    try:
        import jax
        import optax
    except ImportError:
        optax = None
    if optax is not None:
        f = jax.jit(jax.value_and_grad(
            lambda z, t: optax.softmax_cross_entropy_with_integer_labels(z, t).mean()))
        xj, yj = jax.numpy.asarray(x), jax.numpy.asarray(y)

        def optax_vg():
            loss, grad = f(xj, yj)
            grad.block_until_ready()
            return np.asarray(loss), np.asarray(grad)
        out["optax (jit)"] = optax_vg
    return out


def fmt(s):
    return f"{s * 1e6:.1f} us" if s < 1e-3 else f"{s * 1e3:.2f} ms"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--shapes", default=",".join(f"{n}x{k}" for n, k in SHAPES))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--sample", type=float, default=0.02, help="seconds per sample loop")
    args = ap.parse_args(argv)
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    threads = [int(t) for t in args.threads.split(",")]
    print(f"csoftmax {csoftmax.__version__}, ISA {csoftmax.show_config(print_=False)['isa']}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; float32, "
          f"reduction='mean', loss + gradient; best of {args.rounds} rounds (median of the "
          "rounds' bests in brackets)\n")
    for t in threads:
        print(f"threads = {t}\n")
        print("| shape | csoftmax | csoftmax grad_out= | csoftmax softmax | xent / softmax "
              "| torch fwd+bwd | torch / csoftmax | NumPy formula | optax (jit) |")
        print("|---|---|---|---|---|---|---|---|---|")
        for n, k in shapes:
            rng = np.random.default_rng(0)
            x = (2 * rng.standard_normal((n, k))).astype(np.float32)
            y = rng.integers(0, k, n)
            gbuf = np.empty_like(x)
            entries = {
                "csoftmax": lambda: csoftmax.softmax_cross_entropy(
                    x, y, return_grad=True, num_threads=t),
                "csoftmax grad_out=": lambda: csoftmax.softmax_cross_entropy(
                    x, y, return_grad=True, grad_out=gbuf, num_threads=t),
                "csoftmax softmax": lambda: csoftmax.softmax(x, num_threads=t),
            }
            entries.update(peers(x, y, t))
            want_loss, want_grad = reference(x, y)
            for name, fn in entries.items():
                if name == "csoftmax softmax":
                    continue
                loss, grad = fn()
                if not (np.allclose(loss, want_loss, rtol=1e-4)
                        and np.allclose(grad, want_grad, rtol=1e-3, atol=1e-6 / n)):
                    sys.exit(f"bench_loss: {name} is wrong at {n}x{k}")
            bests = {name: [] for name in entries}
            for _ in range(args.rounds):
                for name, fn in entries.items():
                    bests[name].append(_timing.calibrated(fn, args.sample, 3))
            b = {name: min(v) for name, v in bests.items()}
            med = {name: statistics.median(v) for name, v in bests.items()}

            def cell(name):
                if name not in b:
                    return "-"
                return f"{fmt(b[name])} ({fmt(med[name])})"
            tratio = f"{b['torch fwd+bwd'] / b['csoftmax']:.1f}x" if "torch fwd+bwd" in b else "-"
            print(f"| {n}x{k} | {cell('csoftmax')} | {cell('csoftmax grad_out=')} "
                  f"| {cell('csoftmax softmax')} | {b['csoftmax'] / b['csoftmax softmax']:.2f} "
                  f"| {cell('torch fwd+bwd')} | {tratio} | {cell('numpy formula')} "
                  f"| {cell('optax (jit)')} |", flush=True)
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
