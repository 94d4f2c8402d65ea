"""float64 reference of softmax_cross_entropy and its gradient, for clarity.

torch.nn.functional.cross_entropy's formulas written out in NumPy, with the
mask (where=) semantics of csoftmax (optax's): what the tests compare the
kernels with, with or without torch installed. NaN and inf follow from IEEE
arithmetic, as in torch; warnings are silenced.
"""
import numpy as np


def softmax_cross_entropy(logits, target, axis=-1, *, label_smoothing=0.0, ignore_index=None,
                          weight=None, reduction="mean", where=None):
    """(loss, grad) in float64; grad = d(loss)/d(logits) (for "none": of the sum)."""
    x = np.asarray(logits, dtype=np.float64)
    ax = axis % x.ndim
    on = np.ones(x.shape, bool) if where is None else np.broadcast_to(where, x.shape)
    x = np.moveaxis(x, ax, -1)
    on = np.moveaxis(on, ax, -1)
    K = x.shape[-1]
    w = np.ones(K) if weight is None else np.asarray(weight, dtype=np.float64)
    eps = float(label_smoothing)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        m = np.max(np.where(on, x, -np.inf), axis=-1, keepdims=True) if K else np.zeros(
            x.shape[:-1] + (1,))
        e = np.where(on, np.exp(x - m), 0.0)
        s = e.sum(-1, keepdims=True)
        logp = np.where(on, (x - m) - np.log(s), -np.inf)
        p = np.where(on, e / s, 0.0)
        kc = on.sum(-1)
        ek = np.where(kc > 0, eps / np.maximum(kc, 1), 0.0)
        target = np.asarray(target)
        if target.dtype.kind in "iu":
            y = target.astype(np.int64)
            ign = (y == ignore_index) if ignore_index is not None else np.zeros(y.shape, bool)
            yc = np.where(ign, 0, y)
            onehot = np.arange(K) == yc[..., None]
            wy = w[yc] if K else np.zeros(y.shape)
            lpy = np.take_along_axis(logp, yc[..., None], -1)[..., 0] if K else np.zeros(y.shape)
            nll = -(wy * lpy)
            yon = np.take_along_axis(on, yc[..., None], -1)[..., 0] if K else np.zeros(y.shape, bool)
            if eps > 0:
                smooth = -np.sum(np.where(on, w * logp, 0.0), -1)
                loss = (1 - eps) * nll + ek * np.where(kc > 0, smooth, 0.0)
                t = (1 - eps) * (wy * yon)[..., None] * onehot + ek[..., None] * w * on
            else:
                loss = nll
                t = (wy * yon)[..., None] * onehot
            loss = np.where(ign, 0.0, loss)
            t = np.where(ign[..., None], 0.0, t)
            # An ignored row's gradient is torch's 0 - exp(logp) * 0: NaN
            # where the row's log-softmax is NaN.
            keep = ~ign[..., None]
            ign_nan = ign[..., None] & np.isnan(s)
            W = np.sum(np.where(ign, 0.0, wy))
        else:
            tt = np.moveaxis(target.astype(np.float64), ax, -1)
            q = np.where(on, w * ((1 - eps) * tt + ek[..., None]), 0.0)
            loss = -np.sum(np.where(on, q * logp, 0.0), -1)
            t = q
            keep = np.ones(loss.shape + (1,), bool)
            ign_nan = np.zeros(keep.shape, bool)
            W = float(loss.size)
        scale = 1.0 / W if reduction == "mean" else 1.0
        g = np.where(keep & on, scale * (p * t.sum(-1, keepdims=True) - t), 0.0)
        g = np.where(ign_nan & on, np.nan, g)
        grad = np.moveaxis(g, -1, ax)
        if reduction == "mean":
            return np.sum(loss) / W, grad
        if reduction == "sum":
            return np.sum(loss), grad
        return loss, grad
