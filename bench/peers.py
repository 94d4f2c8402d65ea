"""Peer implementations that bench_cpu.py times csoftmax against.

Every implementation is an ``Impl``: ``make(inputs, threads)`` sets the peer's
thread count, prepares what the call needs (outputs, tensors) *outside* the
timed region, and returns a zero-argument callable.  Calling it does the work
once and returns the result (a NumPy array, a torch tensor or a JAX array;
``to_numpy`` converts it for the accuracy check, outside the timed region).

Inputs are a dict: ``{"x": x}`` for softmax, log_softmax, logsumexp and the
Jacobian, ``{"y": y, "g": g}`` for the two backward ops (y is the forward
output).  It may also hold ``"out"``: a preallocated output that the ``out=``
variants write into (bench_targets.py shares one between implementations and
rotates several); without it each ``out=`` variant allocates its own.

``main_impls(op, libs)`` gives the allocating calls (what bench_cpu.py times);
``main_impls(op, libs, with_out=True)`` adds each peer's ``out=`` variant where
it has one (numba, torch), so that a peer is timed at its best.

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
# bench_targets.py also times logsumexp (one value per row).
ALL_OPS = OPS + ("logsumexp",)
BACKWARD_OPS = ("softmax_backward", "log_softmax_backward")



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
    if op == "logsumexp":
        return a.shape[:1]
    return a.shape


def _out(inp, op):
    """The shared preallocated output if the caller gave one, else a new one."""
    if "out" in inp:
        return inp["out"]
    a = inp["x"] if "x" in inp else inp["y"]
    return np.empty(out_shape(op, inp), dtype=a.dtype)


# --------------------------------------------------------------------------
# NumPy: the tutorials' functions where they exist, else the plain formula.
# --------------------------------------------------------------------------
def _np_log_softmax(x):
    # The same stable formula as the tutorial's softmax, in the order
    # x - max - log(sum) (PyTorch issue 11752: keeps [1000, 1] exact).
    z = x - np.max(x, axis=1, keepdims=True)
    return z - np.log(np.sum(np.exp(z), axis=1, keepdims=True))


def _np_logsumexp(x):
    m = np.max(x, axis=1, keepdims=True)
    return (m + np.log(np.sum(np.exp(x - m), axis=1, keepdims=True)))[:, 0]


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
    if op == "logsumexp":
        return [Impl("numpy (formula)", "numpy", False, True, plain(_np_logsumexp))]
    return []


def scipy_impls(op, special):
    # scipy's default is axis=None (the whole array); ours is the last axis.
    if op == "softmax":
        f = special.softmax
    elif op == "log_softmax":
        f = special.log_softmax
    elif op == "logsumexp":
        f = special.logsumexp
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
    "logsumexp": "logsumexp",
}


def csoftmax_impls(op, cs):
    fname = _CS_FUNCS[op]
    if not hasattr(cs, fname):
        return []

    def make(with_out):
        def mk(inp, t):
            f = getattr(cs, fname)
            # Closures that name their arguments, not functools.partial nor
            # f(*args, ...): a partial with keywords, and any call that
            # unpacks *args beside keywords (CALL_FUNCTION_EX), builds a
            # kwargs dict on every call (0.15-0.18 us per 1 x 10 softmax
            # here, with out= and num_threads=) that a caller writing
            # f(x, out=o, num_threads=t) never pays; the other peers' partials
            # are positional and keep the vectorcall fast path too.
            if op in BACKWARD_OPS:
                y, g = inp["y"], inp["g"]
                if with_out:
                    o = _out(inp, op)
                    return lambda: f(y, g, out=o, num_threads=t)
                return lambda: f(y, g, num_threads=t)
            x = inp["x"]
            if with_out:
                o = _out(inp, op)
                return lambda: f(x, out=o, num_threads=t)
            return lambda: f(x, num_threads=t)

        return mk

    return [
        Impl("csoftmax", "csoftmax", True, True, make(False)),
        Impl("csoftmax out=", "csoftmax", True, False, make(True)),
    ]


# --------------------------------------------------------------------------
# Numba: the tutorial's @njit versions, the limits' prange passes (here) and
# the best hand-written kernels (numba_best.py).  Compiled lazily (first use),
# so importing this module stays cheap; cached under bench/__pycache__.
# --------------------------------------------------------------------------
_NB = {}


def _numba_kernels():
    if _NB:
        return _NB
    from numba import njit, prange

    # The tutorial (crysx_nn activation.py) decorates with fastmath=True and
    # subtracts the max of the whole batch, not of each row: fine for these
    # inputs, but rows far below the global max underflow to 0/0 = NaN.
    @njit(cache=True, fastmath=True)
    def tut_softmax(x):
        e_x = np.exp(x - np.max(x))
        return e_x / e_x.sum(axis=1).reshape((-1, 1))

    # The tutorial's Jacobian: einsum is not supported by Numba, so it fills
    # diag and outer-product tensors with loops; they are float32 whatever the
    # input dtype (so float64 results lose precision: flagged by the check).
    @njit(cache=True, fastmath=True)
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

    # Same-size references for two threads: each thread takes one contiguous
    # part of the flattened array ("split halves"), as a copy/add/fill would.
    @njit(parallel=True, cache=True)
    def par_copy(dst, src, parts):
        n = src.size
        for p in prange(parts):
            lo = p * n // parts
            hi = (p + 1) * n // parts
            dst[lo:hi] = src[lo:hi]

    @njit(parallel=True, cache=True)
    def par_add(a, b, o, parts):
        n = a.size
        for p in prange(parts):
            lo = p * n // parts
            hi = (p + 1) * n // parts
            for i in range(lo, hi):
                o[i] = a[i] + b[i]

    @njit(parallel=True, cache=True)
    def par_fill(o, v, parts):
        n = o.size
        for p in prange(parts):
            lo = p * n // parts
            hi = (p + 1) * n // parts
            o[lo:hi] = v

    _NB.update(
        tut_softmax=tut_softmax,
        tut_softmax_grad=tut_softmax_grad,
        par_copy=par_copy,
        par_add=par_add,
        par_fill=par_fill,
    )
    return _NB


def numba_impls(op, numba, with_out=False):
    import numba_best

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

    def make(preallocated):
        def mk(inp, t):
            numba.set_num_threads(t)
            args = (inp["y"], inp["g"]) if op in BACKWARD_OPS else (inp["x"],)
            kern = numba_best.kernel(op, t, args[0].size)
            shape, dtype = out_shape(op, inp), args[0].dtype
            if preallocated:
                o = _out(inp, op)

                def call():
                    kern(*args, o)
                    return o
            else:
                def call():
                    o = np.empty(shape, dtype)
                    kern(*args, o)
                    return o

            return call

        return mk

    note = ("bench/numba_best.py: fused row passes, fastmath=False, eight accumulators; "
            f"prange over rows above {numba_best.GRAIN} elements")
    out.append(Impl("numba prange", "numba", True, True, make(False), note=note))
    if with_out:
        out.append(Impl("numba prange out=", "numba", True, False, make(True), note=note))
    return out


# --------------------------------------------------------------------------
# PyTorch (CPU).  torch.from_numpy shares memory, so no copy is timed.
# --------------------------------------------------------------------------
def torch_impls(op, torch, with_out=False):
    def prep(inp, t):
        torch.set_num_threads(t)
        return {k: torch.from_numpy(v) for k, v in inp.items()}

    # torch's out= overloads: (maker of the allocating call, of the out= call).
    if op in ("softmax", "log_softmax", "logsumexp"):
        f = {"softmax": torch.softmax, "log_softmax": torch.log_softmax, "logsumexp": torch.logsumexp}[op]

        def mk(inp, t):
            x = prep(inp, t)["x"]
            return functools.partial(f, x, -1)

        def mk_out(inp, t):
            tt = prep(dict(inp, out=_out(inp, op)), t)
            x, o = tt["x"], tt["out"]
            return lambda: f(x, -1, out=o)

        impls = [Impl("torch", "torch", True, True, mk)]
        if with_out:
            impls.append(Impl("torch out=", "torch", True, False, mk_out))
        return impls
    if op in BACKWARD_OPS:
        native = torch._softmax_backward_data if op == "softmax_backward" else torch._log_softmax_backward_data
        # The out= overloads name their output differently.
        out_kw = "grad_input" if op == "softmax_backward" else "out"

        def mk_native(inp, t):
            tt = prep(inp, t)
            return functools.partial(native, tt["g"], tt["y"], -1, tt["y"].dtype)

        def mk_native_out(inp, t):
            tt = prep(dict(inp, out=_out(inp, op)), t)
            g, y, o = tt["g"], tt["y"], tt["out"]
            return lambda: native(g, y, -1, y.dtype, **{out_kw: o})

        def mk_formula(inp, t):
            tt = prep(inp, t)
            y, g = tt["y"], tt["g"]
            if op == "softmax_backward":
                return lambda: y * (g - (g * y).sum(-1, keepdim=True))
            return lambda: g - torch.exp(y) * g.sum(-1, keepdim=True)

        impls = [
            Impl("torch (native)", "torch", True, True, mk_native,
                 note=f"torch.{native.__name__} (what autograd calls)"),
            Impl("torch (formula)", "torch", True, True, mk_formula),
        ]
        if with_out:
            impls.insert(1, Impl("torch (native) out=", "torch", True, False, mk_native_out,
                                 note=f"torch.{native.__name__}({out_kw}=)"))
        return impls
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


def main_impls(op, libs, with_out=False):
    """The implementations run in the main process, in table order; with_out
    adds the peers' out= variants."""
    impls = []
    if libs.have("csoftmax"):
        impls += csoftmax_impls(op, libs.mods["csoftmax"])
    impls += numpy_impls(op)
    if libs.have("scipy"):
        impls += scipy_impls(op, libs.mods["scipy"])
    if libs.have("numba"):
        impls += numba_impls(op, libs.mods["numba"], with_out)
    if libs.have("torch"):
        impls += torch_impls(op, libs.mods["torch"], with_out)
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
    elif op == "logsumexp":
        f, name, note = jax.jit(functools.partial(jax.nn.logsumexp, axis=-1)), "jax", ""
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
