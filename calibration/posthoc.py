"""Post-hoc calibrators on saved predictions (numpy only; no model, no GPU) (docs/method_notes.md#post-hoc-calibrators).

All three keep the argmax of every sample: TS divides by one positive scalar, DAC multiplies each row by a
positive factor, SaLS applies a positive affine map per row.

- :class:`TemperatureScaling`: one scalar T minimising the NLL of ``logits / T`` (fitted on the base run's
  few-shot val split, applied to base and novel test logits).
- :class:`DAC`: distance-aware calibration (ICML'24) for novel classes; stacks on TS.
- :class:`SaLS`: the ZS-Norm min-max map applied to test logits (needs the zero-shot logits of the test images).
"""
from __future__ import annotations

import math

import numpy as np

from calibration.metrics import check_labels, check_logits, log_softmax

__all__ = ["TemperatureScaling", "DAC", "SaLS", "check_features"]


def _nll_at(logits: np.ndarray, labels: np.ndarray, log_t: float) -> float:
    lp = log_softmax(logits * math.exp(-log_t))
    return float(-lp[np.arange(len(labels)), labels].mean())


class TemperatureScaling:
    """One temperature T > 0 minimising the NLL; ``transform(z) = z / T``.

    The search is deterministic and needs no gradient: a grid over log T in [log t_min, log t_max] (the NLL of
    ``z / T`` is convex in 1/T, hence unimodal in log T), then golden-section refinement around the best grid
    point. If the optimum lies beyond a bound (e.g. a perfectly separated val set wants T -> 0), T stops there.
    """

    def __init__(self, t_min: float = 1e-2, t_max: float = 1e2, grid: int = 81, tol: float = 1e-7):
        if not 0 < t_min < t_max:
            raise ValueError(f"need 0 < t_min < t_max, got {t_min}, {t_max}")
        self.t_min, self.t_max, self.grid, self.tol = float(t_min), float(t_max), int(grid), float(tol)
        self.temperature_: float | None = None

    def fit(self, logits, labels) -> "TemperatureScaling":
        """Fit T on finite N x C ``logits`` and N integer ``labels`` in [0, C) (ValueError otherwise)."""
        z = check_logits(logits)
        y = check_labels(labels, z.shape[0], z.shape[1])
        lo, hi = math.log(self.t_min), math.log(self.t_max)
        grid = np.linspace(lo, hi, self.grid)
        values = [_nll_at(z, y, g) for g in grid]
        if not np.all(np.isfinite(values)):
            raise ValueError(f"logits too large to scale (|logit| up to {np.abs(z).max():.3g}; 1/T goes up to "
                             f"{1 / self.t_min:g}): the NLL overflows")
        i = int(np.argmin(values))
        a, b = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
        # Golden-section search on [a, b] (the minimum is bracketed by the grid neighbours of the best point).
        inv_phi = (math.sqrt(5) - 1) / 2
        c, d = b - inv_phi * (b - a), a + inv_phi * (b - a)
        fc, fd = _nll_at(z, y, c), _nll_at(z, y, d)
        while b - a > self.tol:
            if fc <= fd:
                b, d, fd = d, c, fc
                c = b - inv_phi * (b - a)
                fc = _nll_at(z, y, c)
            else:
                a, c, fc = c, d, fd
                d = a + inv_phi * (b - a)
                fd = _nll_at(z, y, d)
        best = min([(values[i], grid[i]), (fc, c), (fd, d)])[1]
        self.temperature_ = float(math.exp(best))
        return self

    def transform(self, logits) -> np.ndarray:
        if self.temperature_ is None:
            raise RuntimeError("TemperatureScaling.transform called before fit")
        return check_logits(logits) / self.temperature_


def check_features(x, name: str = "text features") -> np.ndarray:
    """Finite, non-empty C x E float64 features with no all-zero row (a zero row has no direction), or
    ValueError naming ``name``."""
    try:
        x = check_logits(x, name)  # the same shape/dtype/finiteness rule as logits
    except ValueError as e:
        raise ValueError(str(e).replace("N x C", "C x E")) from None
    zero = np.flatnonzero(~np.any(x != 0, axis=1))
    if zero.size:
        rows = f"{zero.size} such row" + ("s" if zero.size > 1 else "")
        raise ValueError(f"{name} row {int(zero[0])} is all zeros ({rows}): a feature needs a direction")
    return x


def _normalize(x, name: str = "text features") -> np.ndarray:
    x = check_features(x, name)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances between rows of a (C x E) and b (K x E), without a C x K x E temporary."""
    sq = (a ** 2).sum(1)[:, None] + (b ** 2).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(sq, 0.0))


class DAC:
    """Distance-aware calibration (docs/method_notes.md#post-hoc-calibrators): per test class j, with the k nearest base
    classes,
    ``s(j) = exp(-mean_k ||t_k - t_j||)`` on normalised features, ``gamma_j = s_ft(j) / s_zs(j)``; each sample's
    logits are multiplied by ``gamma`` of its predicted class (a per-sample temperature ``1/gamma``).

    A test class whose tuned features lie within ``base_tol`` of a base class's is that base class and gets
    ``gamma = 1`` exactly (the DAC code's hard-coded "base class aware" rule, tolerance 0.05). The nearest
    classes are chosen separately in the tuned and the frozen space, as in the DAC code.
    """

    def __init__(self, k: int = 5, base_tol: float = 0.05):
        if int(k) < 1:
            raise ValueError(f"DAC needs k >= 1, got {k}")
        self.k, self.base_tol = int(k), float(base_tol)
        self.base_tuned_: np.ndarray | None = None
        self.base_zs_: np.ndarray | None = None

    def fit(self, base_text_features_tuned, base_text_features_zs) -> "DAC":
        t = _normalize(base_text_features_tuned, "base tuned text features")
        f = _normalize(base_text_features_zs, "base zero-shot text features")
        if t.shape[0] != f.shape[0]:
            raise ValueError(f"base tuned ({t.shape}) and zero-shot ({f.shape}) features must have the same "
                             "number of classes")
        self.base_tuned_, self.base_zs_ = t, f
        return self

    def class_factors(self, text_features_tuned, text_features_zs) -> np.ndarray:
        """gamma (C,) for the test classes."""
        if self.base_tuned_ is None:
            raise RuntimeError("DAC.class_factors called before fit")
        t = _normalize(text_features_tuned, "tuned text features")
        f = _normalize(text_features_zs, "zero-shot text features")
        if t.shape[0] != f.shape[0]:
            raise ValueError(f"tuned ({t.shape}) and zero-shot ({f.shape}) test features differ in class count")
        if t.shape[1] != self.base_tuned_.shape[1] or f.shape[1] != self.base_zs_.shape[1]:
            raise ValueError("test and base text features differ in embedding width")
        k = min(self.k, self.base_tuned_.shape[0])
        d_ft = np.sort(_distances(t, self.base_tuned_), axis=1)
        d_zs = np.sort(_distances(f, self.base_zs_), axis=1)
        # s_ft / s_zs = exp(mean d_zs - mean d_ft)
        gamma = np.exp(d_zs[:, :k].mean(1) - d_ft[:, :k].mean(1))
        gamma[d_ft[:, 0] < self.base_tol] = 1.0
        return gamma

    def transform(self, logits, text_features_tuned, text_features_zs) -> np.ndarray:
        z = check_logits(logits)
        gamma = self.class_factors(text_features_tuned, text_features_zs)
        if z.shape[1] != gamma.shape[0]:
            raise ValueError(f"logits {z.shape} do not match {gamma.shape[0]} test classes")
        return z * gamma[z.argmax(axis=1)][:, None]


class SaLS:
    """ZS-Norm at test time: per sample, ``(z - min z) / (max z - min z) * (max z_zs - min z_zs) + min z_zs``.

    Same map as :func:`calibration.regularizers.zs_norm_logits` (tested to agree); a row with max z = min z maps
    to ``min z_zs``. Keeps the argmax unless a zero-shot row is constant (never with real CLIP logits).
    """

    def fit(self, *args, **kwargs) -> "SaLS":
        return self  # nothing to fit

    def transform(self, logits, zs_logits) -> np.ndarray:
        z, zs = check_logits(logits), check_logits(zs_logits, "zs_logits")
        if z.shape != zs.shape:
            raise ValueError(f"logits {z.shape} and zs_logits {zs.shape} must be N x C of the same shape")
        z_min = z.min(1, keepdims=True)
        z_rng = z.max(1, keepdims=True) - z_min
        zs_min = zs.min(1, keepdims=True)
        zs_rng = zs.max(1, keepdims=True) - zs_min
        return (z - z_min) / np.where(z_rng > 0, z_rng, 1.0) * zs_rng + zs_min
