"""python -m csoftmax: the configuration, the classic example, a short training run with the
fused softmax cross-entropy, and a short benchmark."""
import argparse
import os
import sys
import time

import numpy as np

import csoftmax
from csoftmax._tutorial import softmax_grad_numpy, softmax_numpy

# (operation, shape) pairs of the short benchmark: small, medium and large
# batches, as a network from scratch meets them (10 classes, 1000 classes).
SHAPES = {
    "softmax": [(64, 10), (1024, 10), (4096, 128), (16384, 1000)],
    "jacobian": [(64, 10), (1000, 100), (10000, 32)],
}
BUDGET_S = 0.4  # per timed entry: the whole run stays well under 30 s
# A median this many times the best sample means the samples disagree: some
# other process took the CPU for part of the run.
NOISY_SPREAD = 1.5


def _time(fn, budget):
    """(best, median) seconds per call, over repeats filling about `budget` seconds."""
    fn()  # warm-up (first-touch allocation, thread start)
    t0 = time.perf_counter()
    fn()
    once = max(time.perf_counter() - t0, 1e-7)
    inner = max(1, int(0.01 / once))  # batch tiny calls to ~10 ms per sample
    samples = []
    deadline = time.perf_counter() + budget
    while len(samples) < 5 or (time.perf_counter() < deadline and len(samples) < 200):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - t0) / inner)
    return float(np.min(samples)), float(np.median(samples))


def _cpu_count():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _load_average():
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # Windows has no load average
        return None


def busy_note(spreads, load=None, cpus=None):
    """The warning line for a busy or noisy machine, or None.

    spreads: median / best of each timed entry. load: the 1-minute load
    average (None where the OS has none); cpus: the CPUs this process may use.
    """
    cpus = _cpu_count() if cpus is None else cpus
    worst = max(spreads, default=1.0)
    if load is not None and load > cpus:
        return (f"note: this machine is busy (load average {load:.1f} on {cpus} cores); "
                f"timings are noisy (median up to {worst:.1f}x the best)")
    if worst > NOISY_SPREAD:
        return (f"note: timings are noisy: a median is up to {worst:.1f}x the best time "
                f"(other processes took the CPU); the best times are the more reliable")
    return None


def _progress(i, n, label):
    width = 30
    done = int(width * i / n)
    sys.stderr.write(f"\r[{'#' * done}{'.' * (width - done)}] {i}/{n} {label:<40}")
    sys.stderr.flush()


def example():
    labels = ["cat", "dog", "tiger", "none"]
    logits = np.array([[1.25, 2.44, 0.78, 0.12]])
    probs = csoftmax.softmax(logits)[0]
    print("\nClassic example: softmax of logits", logits[0].tolist())
    for name, z, p in zip(labels, logits[0], probs):
        print(f"  {name:<6} logit {z:5.2f}  ->  p = {p:.3f}")
    print(f"  sum = {probs.sum():.6f}")
    return probs


# The training example: softmax regression on a synthetic dataset (Gaussian
# blobs, one per class), minibatch SGD, a few epochs; about 0.1 s in all.
TRAIN = dict(n=4096, features=32, classes=10, batch=64, epochs=4, lr=0.5, seed=1)


def _blobs(n, features, classes, seed):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, features)).astype(np.float32)
    y = rng.integers(0, classes, n)
    x = centres[y] + 1.5 * rng.standard_normal((n, features)).astype(np.float32)
    return x, y


def numpy_loss_and_grad(logits, y):
    """The NumPy formula: mean cross-entropy and its gradient w.r.t. the logits."""
    n = logits.shape[0]
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    s = e.sum(axis=1, keepdims=True)
    loss = np.mean(np.log(s[:, 0]) - z[np.arange(n), y])
    grad = e / s
    grad[np.arange(n), y] -= 1
    return loss, grad / n


def fused_loss_and_grad(logits, y):
    return csoftmax.softmax_cross_entropy(logits, y, return_grad=True)


def train(loss_and_grad, x, y, classes, batch, epochs, lr, seed):
    """Minibatch SGD on W, b; returns per-epoch (mean loss, accuracy, seconds)."""
    rng = np.random.default_rng(seed)
    w = np.zeros((x.shape[1], classes), np.float32)
    b = np.zeros(classes, np.float32)
    history = []
    for _ in range(epochs):
        order = rng.permutation(len(x))
        losses = []
        t0 = time.perf_counter()
        for i in range(0, len(x), batch):
            xb, yb = x[order[i:i + batch]], y[order[i:i + batch]]
            loss, g = loss_and_grad(xb @ w + b, yb)  # the step's loss and dL/dlogits
            w -= lr * (xb.T @ g)
            b -= lr * g.sum(axis=0)
            losses.append(float(loss))
        seconds = time.perf_counter() - t0
        acc = float(np.mean(np.argmax(x @ w + b, axis=1) == y))
        history.append((float(np.mean(losses)), acc, seconds))
    return history


def training_example(params=TRAIN):
    x, y = _blobs(params["n"], params["features"], params["classes"], params["seed"])
    args = (x, y, params["classes"], params["batch"], params["epochs"], params["lr"],
            params["seed"])
    fused = train(fused_loss_and_grad, *args)
    ref = train(numpy_loss_and_grad, *args)
    print(f"\nTraining example: softmax regression, {params['n']} samples x "
          f"{params['features']} features, {params['classes']} classes, batches of "
          f"{params['batch']}, float32; the loss and dL/dlogits from "
          f"softmax_cross_entropy(logits, y, return_grad=True) vs the NumPy formula")
    print(f"| epoch | loss (fused) | accuracy | time/epoch fused | loss (NumPy) | time/epoch NumPy |")
    print(f"|------:|-------------:|---------:|-----------------:|-------------:|-----------------:|")
    for e, ((lf, af, tf), (ln, _, tn)) in enumerate(zip(fused, ref), 1):
        print(f"| {e:>5} | {lf:>12.4f} | {af:>8.3f} | {_fmt(tf):>16} | {ln:>12.4f} | {_fmt(tn):>16} |")
    return fused, ref


def benchmark(budget=BUDGET_S, dtype=np.float32):
    rng = np.random.default_rng(0)
    entries = []
    for shape in SHAPES["softmax"]:
        entries.append(("softmax", shape, softmax_numpy, csoftmax.softmax))
    for shape in SHAPES["jacobian"]:
        entries.append(("Softmax_grad", shape, softmax_grad_numpy, csoftmax.softmax_jacobian))
    rows = []
    for i, (name, shape, ref, fast) in enumerate(entries):
        _progress(i, len(entries), f"{name} {shape}")
        x = rng.standard_normal(shape).astype(dtype)
        if not np.allclose(fast(x), ref(x), rtol=1e-4, atol=1e-6):
            raise AssertionError(f"csoftmax disagrees with the tutorial on {name} {shape}")
        best_ref, med_ref = _time(lambda: ref(x), budget)
        best_fast, med_fast = _time(lambda: fast(x), budget)
        rows.append((name, shape, best_ref, best_fast, med_ref, med_fast))
    _progress(len(entries), len(entries), "done")
    sys.stderr.write("\n")

    print(f"\nBenchmark ({np.dtype(dtype).name}, default threads: "
          f"{csoftmax.show_config(print_=False)['threads']}): tutorial NumPy vs csoftmax, "
          f"best time per call (the minimum over the samples), and csoftmax's median")
    print(f"| {'operation':<12} | {'shape':>13} | {'NumPy tutorial':>14} | {'csoftmax':>10} "
          f"| {'csoftmax median':>15} | {'speed-up':>8} |")
    print(f"|{'-' * 14}|{'-' * 15}|{'-' * 16}|{'-' * 12}|{'-' * 17}|{'-' * 10}|")
    for name, shape, best_ref, best_fast, _, med_fast in rows:
        print(f"| {name:<12} | {str(shape):>13} | {_fmt(best_ref):>14} | {_fmt(best_fast):>10} "
              f"| {_fmt(med_fast):>15} | {best_ref / best_fast:>7.1f}x |")
    spreads = [med / best for r in rows for best, med in ((r[2], r[4]), (r[3], r[5]))]
    note = busy_note(spreads, _load_average())
    if note:
        print(note)
    return rows


def _fmt(seconds):
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} us"
    return f"{seconds * 1e3:.2f} ms"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m csoftmax", description=__doc__)
    parser.add_argument("--no-bench", action="store_true", help="skip the benchmark")
    parser.add_argument("--budget", type=float, default=BUDGET_S,
                        help="seconds per timed entry (default %(default)s)")
    args = parser.parse_args(argv)
    csoftmax.show_config()
    example()
    training_example()
    if not args.no_bench:
        benchmark(args.budget)
    return 0


if __name__ == "__main__":
    sys.exit(main())
