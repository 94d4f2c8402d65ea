"""Peer implementations that bench_cpu.py times csoftmax against.

Every implementation is an ``Impl``: ``make(inputs, threads)`` sets the peer's
thread count, prepares what the call needs (outputs, tensors) *outside* the
timed region, and returns a zero-argument callable.  Calling it does the work
once and returns the result (a NumPy array, a torch tensor or a JAX array;
``to_numpy`` converts it for the accuracy check, outside the timed region).

Inputs are a dict: ``{"x": x}`` for softmax, log_softmax and the Jacobian,
``{"y": y, "g": g}`` for the two backward ops (y is the forward output).

Libraries are optional: ``load_libraries`` imports what is installed and
records why the rest is skipped.  JAX is not imported here in the main
process: its CPU thread count is fixed when XLA starts, so bench_cpu.py runs
the JAX peers in one subprocess per thread count (see ``jax_impls``).
"""
from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

OPS = ("softmax", "log_softmax", "softmax_backward", "log_softmax_backward", "jacobian")
BACKWARD_OPS = ("softmax_backward", "log_softmax_backward")

# Rows below this many elements in total run the numba kernels serially:
# PyTorch's CPU softmax uses a grain of about 32768 elements per task for the
# same reason (starting threads costs more than the work).
NUMBA_GRAIN = 32768


@dataclass
class Impl:
    name: str  # column label in the tables
    family: str  # csoftmax, numpy, scipy, numba, torch, jax
    threaded: bool  # honours the thread count (else measured once, at the first count)
    alloc: bool  # allocates its result each call (False: writes into a preallocated out=)
    make: Callable  # make(inputs, threads) -> zero-arg callable returning the result
    note: str = ""


@dataclass
class Libraries:
    mods: dict = field(default_factory=dict)  # family -> module
    skipped: dict = field(default_factory=dict)  # family -> reason

    def have(self, family):
        return family in self.mods


def load_libraries(families=("csoftmax", "scipy", "numba", "torch")):
    libs = Libraries()
    names = {"scipy": "scipy.special"}
    for fam in families:
        try:
            libs.mods[fam] = importlib.import_module(names.get(fam, fam))
        except Exception as exc:  # ImportError, or a broken install
            libs.skipped[fam] = f"not importable: {type(exc).__name__}: {exc}"
    return libs


def to_numpy(res):
    if isinstance(res, np.ndarray):
        return res
    if hasattr(res, "detach"):  # torch
        return res.detach().numpy()
    return np.asarray(res)  # JAX and anything array-like


def out_shape(op, inputs):
    a = inputs["x"] if "x" in inputs else inputs["y"]
    if op == "jacobian":
        n, k = a.shape
        return (n, k, k)
    return a.shape


# --------------------------------------------------------------------------
# NumPy: the tutorials' functions where they exist, else the plain formula.
# --------------------------------------------------------------------------
def _np_log_softmax(x):
    # The same stable formula as the tutorial's softmax, in the order
    # x - max - log(sum) (PyTorch issue 11752: keeps [1000, 1] exact).
    z = x - np.max(x, axis=1, keepdims=True)
    return z - np.log(np.sum(np.exp(z), axis=1, keepdims=True))


def _np_softmax_backward(y, g):
    return y * (g - np.sum(g * y, axis=1, keepdims=True))


def _np_log_softmax_backward(y, g):
    return g - np.exp(y) * np.sum(g, axis=1, keepdims=True)


def numpy_impls(op):
    from csoftmax._tutorial import softmax_grad_numpy, softmax_numpy

    def plain(fn):
        return lambda inp, t: functools.partial(fn, inp["x"])

    def two(fn):
        return lambda inp, t: functools.partial(fn, inp["y"], inp["g"])

    if op == "softmax":
        return [Impl("numpy (tutorial)", "numpy", False, True, plain(softmax_numpy))]
    if op == "log_softmax":
        return [Impl("numpy (formula)", "numpy", False, True, plain(_np_log_softmax))]
    if op == "softmax_backward":
        return [Impl("numpy (formula)", "numpy", False, True, two(_np_softmax_backward))]
    if op == "log_softmax_backward":
        return [Impl("numpy (formula)", "numpy", False, True, two(_np_log_softmax_backward))]
    if op == "jacobian":
        return [Impl("numpy (tutorial)", "numpy", False, True, plain(softmax_grad_numpy))]
    return []


def scipy_impls(op, special):
    # scipy's default is axis=None (the whole array); ours is the last axis.
    if op == "softmax":
        f = special.softmax
    elif op == "log_softmax":
        f = special.log_softmax
    else:
        return []
    return [Impl("scipy", "scipy", False, True, lambda inp, t: functools.partial(f, inp["x"], axis=-1))]


# --------------------------------------------------------------------------
# csoftmax: the library under test, allocating and with out=.
# --------------------------------------------------------------------------
_CS_FUNCS = {
    "softmax": "softmax",
    "log_softmax": "log_softmax",
    "softmax_backward": "softmax_backward",
    "log_softmax_backward": "log_softmax_backward",
    "jacobian": "softmax_jacobian",
}


def csoftmax_impls(op, cs):
    fname = _CS_FUNCS[op]
    if not hasattr(cs, fname):
        return []

    def make(with_out):
        def mk(inp, t):
            f = getattr(cs, fname)
            args = (inp["y"], inp["g"]) if op in BACKWARD_OPS else (inp["x"],)
            # Closures, not functools.partial: a partial with keywords builds
            # a kwargs dict on every call (~0.15 us here) that a caller
            # writing f(x, num_threads=t) never pays; the other peers' partials
            # are positional and keep the vectorcall fast path.
            if with_out:
                o = np.empty(out_shape(op, inp), dtype=args[0].dtype)
                return lambda: f(*args, out=o, num_threads=t)
            return lambda: f(*args, num_threads=t)

        return mk

    return [
        Impl("csoftmax", "csoftmax", True, True, make(False)),
        Impl("csoftmax out=", "csoftmax", True, False, make(True)),
    ]


# --------------------------------------------------------------------------
# Numba: the tutorial's @njit versions and hand-tuned prange kernels.
# Compiled lazily (first use), so importing this module stays cheap.
# --------------------------------------------------------------------------
_NB = {}


def _numba_kernels():
    if _NB:
        return _NB
    from numba import njit, prange

    # The tutorial (crysx_nn activation.py) decorates with fastmath=True and
    # subtracts the max of the whole batch, not of each row: fine for these
    # inputs, but rows far below the global max underflow to 0/0 = NaN.
    @njit(cache=False, fastmath=True)
    def tut_softmax(x):
        e_x = np.exp(x - np.max(x))
        return e_x / e_x.sum(axis=1).reshape((-1, 1))

    # The tutorial's Jacobian: einsum is not supported by Numba, so it fills
    # diag and outer-product tensors with loops; they are float32 whatever the
    # input dtype (so float64 results lose precision: flagged by the check).
    @njit(cache=False, fastmath=True)
    def tut_softmax_grad(x):
        s = tut_softmax(x)
        a = np.eye(s.shape[-1])
        t1 = np.zeros((s.shape[0], s.shape[1], s.shape[1]), dtype=np.float32)
        t2 = np.zeros((s.shape[0], s.shape[1], s.shape[1]), dtype=np.float32)
        for i in range(s.shape[0]):
            for j in range(s.shape[1]):
                for k in range(s.shape[1]):
                    t1[i, j, k] = s[i, j] * a[j, k]
                    t2[i, j, k] = s[i, j] * s[i, k]
        return t1 - t2

    # Hand-tuned kernels.  fastmath without 'nnan'/'ninf': reassociation lets
    # LLVM vectorise the sums with several accumulators, while NaN and inf
    # keep their meaning.  error_model='numpy' drops the division-by-zero
    # checks.  Accumulators are typed by the input (x.dtype.type(0)), so
    # float32 rows are summed in float32 like the other peers do.
    fm = {"nsz", "arcp", "contract", "afn", "reassoc"}
    jit = functools.partial(njit, fastmath=fm, error_model="numpy", cache=False)

    @jit
    def row_softmax(x, o):
        m = x[0]
        for j in range(1, x.shape[0]):
            if x[j] > m:
                m = x[j]
        s = x.dtype.type(0)
        for j in range(x.shape[0]):
            e = np.exp(x[j] - m)
            o[j] = e
            s += e
        r = x.dtype.type(1) / s
        for j in range(x.shape[0]):
            o[j] *= r

    @jit
    def row_log_softmax(x, o):
        m = x[0]
        for j in range(1, x.shape[0]):
            if x[j] > m:
                m = x[j]
        s = x.dtype.type(0)
        for j in range(x.shape[0]):
            s += np.exp(x[j] - m)
        ls = np.log(s)
        for j in range(x.shape[0]):
            o[j] = (x[j] - m) - ls

    @jit
    def row_softmax_backward(y, g, o):
        d = y.dtype.type(0)
        for j in range(y.shape[0]):
            d += g[j] * y[j]
        for j in range(y.shape[0]):
            o[j] = y[j] * (g[j] - d)

    @jit
    def row_log_softmax_backward(y, g, o):
        s = g.dtype.type(0)
        for j in range(y.shape[0]):
            s += g[j]
        for j in range(y.shape[0]):
            o[j] = g[j] - np.exp(y[j]) * s

    @jit
    def block_jacobian(x, o):
        # o is the (K, K) block of one row.  Its first row holds s as scratch
        # (no per-row allocation), rows 1..K-1 are written from it, and row 0
        # last, in place: J[i, j] = s_i * (delta_ij - s_j).
        k = x.shape[0]
        row_softmax(x, o[0])
        for i in range(1, k):
            si = o[0, i]
            for j in range(k):
                o[i, j] = -si * o[0, j]
            o[i, i] += si
        s0 = o[0, 0]
        for j in range(k):
            o[0, j] = -s0 * o[0, j]
        o[0, 0] += s0

    def drivers(row1, row2=None):
        # A serial and a prange driver per op; the wrapper picks by size.
        if row2 is None:

            @jit
            def ser(x, o):
                for i in range(x.shape[0]):
                    row1(x[i], o[i])

            @njit(fastmath=fm, error_model="numpy", parallel=True)
            def par(x, o):
                for i in prange(x.shape[0]):
                    row1(x[i], o[i])

        else:

            @jit
            def ser(y, g, o):
                for i in range(y.shape[0]):
                    row2(y[i], g[i], o[i])

            @njit(fastmath=fm, error_model="numpy", parallel=True)
            def par(y, g, o):
                for i in prange(y.shape[0]):
                    row2(y[i], g[i], o[i])

        return ser, par

    # Same-size references for two threads: each thread takes one contiguous
    # part of the flattened array ("split halves"), as a copy/add/fill would.
    @njit(parallel=True, cache=False)
    def par_copy(dst, src, parts):
        n = src.size
        for p in prange(parts):
            lo = p * n // parts
            hi = (p + 1) * n // parts
            dst[lo:hi] = src[lo:hi]

    @njit(parallel=True, cache=False)
    def par_add(a, b, o, parts):
        n = a.size
        for p in prange(parts):
            lo = p * n // parts
            hi = (p + 1) * n // parts
            for i in range(lo, hi):
                o[i] = a[i] + b[i]

    @njit(parallel=True, cache=False)
    def par_fill(o, v, parts):
        n = o.size
        for p in prange(parts):
            lo = p * n // parts
            hi = (p + 1) * n // parts
            o[lo:hi] = v

    _NB.update(
        tut_softmax=tut_softmax,
        tut_softmax_grad=tut_softmax_grad,
        softmax=drivers(row_softmax),
        log_softmax=drivers(row_log_softmax),
        softmax_backward=drivers(None, row_softmax_backward),
        log_softmax_backward=drivers(None, row_log_softmax_backward),
        jacobian=drivers(block_jacobian),
        par_copy=par_copy,
        par_add=par_add,
        par_fill=par_fill,
    )
    return _NB


def numba_impls(op, numba):
    out = []

    if op == "softmax":
        out.append(
            Impl("numba (tutorial)", "numba", False, True,
                 lambda inp, t: functools.partial(_numba_kernels()["tut_softmax"], inp["x"]),
                 note="tutorial @njit(fastmath=True), max over the whole batch")
        )
    if op == "jacobian":
        out.append(
            Impl("numba (tutorial)", "numba", False, True,
                 lambda inp, t: functools.partial(_numba_kernels()["tut_softmax_grad"], inp["x"]),
                 note="tutorial @njit loops; float32 temporaries whatever the input dtype")
        )

    def make(inp, t):
        numba.set_num_threads(t)
        ser, par = _numba_kernels()[op]
        a = inp["y"] if op in BACKWARD_OPS else inp["x"]
        kern = ser if (t == 1 or a.size < NUMBA_GRAIN) else par
        shape = out_shape(op, inp)
        if op in BACKWARD_OPS:
            y, g = inp["y"], inp["g"]

            def call():
                o = np.empty(shape, a.dtype)
                kern(y, g, o)
                return o
        else:
            x = inp["x"]

            def call():
                o = np.empty(shape, a.dtype)
                kern(x, o)
                return o

        return call

    out.append(Impl("numba prange", "numba", True, True, make,
                    note="hand-tuned: row kernels, prange over rows above 32768 elements"))
    return out


# --------------------------------------------------------------------------
# PyTorch (CPU).  torch.from_numpy shares memory, so no copy is timed.
# --------------------------------------------------------------------------
def torch_impls(op, torch):
    def prep(inp, t):
        torch.set_num_threads(t)
        return {k: torch.from_numpy(v) for k, v in inp.items()}

    if op == "softmax":
        def mk(inp, t):
            x = prep(inp, t)["x"]
            return functools.partial(torch.softmax, x, -1)
        return [Impl("torch", "torch", True, True, mk)]
    if op == "log_softmax":
        def mk(inp, t):
            x = prep(inp, t)["x"]
            return functools.partial(torch.log_softmax, x, -1)
        return [Impl("torch", "torch", True, True, mk)]
    if op in BACKWARD_OPS:
        native = torch._softmax_backward_data if op == "softmax_backward" else torch._log_softmax_backward_data

        def mk_native(inp, t):
            tt = prep(inp, t)
            return functools.partial(native, tt["g"], tt["y"], -1, tt["y"].dtype)

        def mk_formula(inp, t):
            tt = prep(inp, t)
            y, g = tt["y"], tt["g"]
            if op == "softmax_backward":
                return lambda: y * (g - (g * y).sum(-1, keepdim=True))
            return lambda: g - torch.exp(y) * g.sum(-1, keepdim=True)

        return [
            Impl("torch (native)", "torch", True, True, mk_native,
                 note=f"torch.{native.__name__} (what autograd calls)"),
            Impl("torch (formula)", "torch", True, True, mk_formula),
        ]
    if op == "jacobian":
        def mk(inp, t):
            x = prep(inp, t)["x"]

            def call():
                s = torch.softmax(x, -1)
                j = -s.unsqueeze(2) * s.unsqueeze(1)  # one (N, K, K) allocation
                j.diagonal(dim1=1, dim2=2).add_(s)
                return j

            return call

        return [Impl("torch (formula)", "torch", True, True, mk,
                     note="-s s^T, then += s on the diagonal")]
    return []


def main_impls(op, libs):
    """The implementations run in the main process, in table order."""
    impls = []
    if libs.have("csoftmax"):
        impls += csoftmax_impls(op, libs.mods["csoftmax"])
    impls += numpy_impls(op)
    if libs.have("scipy"):
        impls += scipy_impls(op, libs.mods["scipy"])
    if libs.have("numba"):
        impls += numba_impls(op, libs.mods["numba"])
    if libs.have("torch"):
        impls += torch_impls(op, libs.mods["torch"])
    return impls


# --------------------------------------------------------------------------
# JAX: only imported inside the per-thread-count worker subprocess.
# --------------------------------------------------------------------------
def jax_impls(op):
    import jax
    import jax.numpy as jnp

    if op == "softmax":
        f, name, note = jax.jit(functools.partial(jax.nn.softmax, axis=-1)), "jax", ""
    elif op == "log_softmax":
        f, name, note = jax.jit(functools.partial(jax.nn.log_softmax, axis=-1)), "jax", ""
    elif op == "softmax_backward":
        f = jax.jit(lambda y, g: y * (g - jnp.sum(g * y, axis=-1, keepdims=True)))
        name, note = "jax (formula)", "jitted formula"
    elif op == "log_softmax_backward":
        f = jax.jit(lambda y, g: g - jnp.exp(y) * jnp.sum(g, axis=-1, keepdims=True))
        name, note = "jax (formula)", "jitted formula"
    elif op == "jacobian":
        def jac(x):
            s = jax.nn.softmax(x, axis=-1)
            eye = jnp.eye(x.shape[-1], dtype=x.dtype)
            return s[:, :, None] * (eye - s[:, None, :])  # XLA fuses into one pass
        f, name, note = jax.jit(jac), "jax (formula)", "jitted s_i (delta_ij - s_j)"
    else:
        return []

    def mk(inp, t):
        args = [jax.device_put(inp[k]) for k in (("y", "g") if op in BACKWARD_OPS else ("x",))]
        # block_until_ready: JAX dispatches asynchronously; time the finished work.
        return lambda: f(*args).block_until_ready()

    return [Impl(name, "jax", True, True, mk, note=note)]
