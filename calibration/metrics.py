"""Classification and calibration metrics on saved logits (numpy only, float64).

Conventions (docs/method_notes.md#metrics):
- confidence = max softmax of the logits, prediction = argmax (the first index on ties, as ``np.argmax``);
- percentages for accuracy, macro-F1 and every calibration error; NLL and Brier plain;
- equal-width bins over [0, 1]: bin b is ``(lo_b, hi_b]`` (lower edge exclusive, upper edge inclusive), a
  confidence of exactly 0 falls in the first bin and a confidence of exactly 1.0 in the last one. Nothing is
  dropped: the official TCPT code loses conf = 0 and the DAC code loses conf = 1.0 (docs/method_notes.md#metrics).

Every binned metric goes through :func:`bin_indices`, so the edge rule lives in one place.
"""
from __future__ import annotations

import math
from typing import Iterable

import numpy as np

__all__ = [
    "log_softmax", "softmax", "bin_indices", "bin_edges", "binned_calibration_error", "adaptive_ece",
    "classwise_ece", "macro_f1", "nll", "brier", "margins", "reliability_data", "compute_metrics",
    "aggregate", "harmonic_mean", "METRIC_KEYS", "check_logits", "check_labels",
]

# The keys of compute_metrics, in the order tables print them.
METRIC_KEYS = ("accuracy", "macro_f1", "ece", "mce", "mce_weighted", "adaptive_ece", "classwise_ece", "nll",
               "brier")


# --------------------------------------------------------------------------------------------------- helpers
def check_logits(logits, name: str = "logits", float64: bool = True) -> np.ndarray:
    """``logits`` as a float64 N x C array (no copy if it is one; with ``float64=False`` in its own real dtype,
    never copied), or ValueError naming ``name``: it must be a non-empty 2-D array of real numbers, all finite."""
    z = np.asarray(logits)
    if z.ndim != 2 or z.shape[0] == 0 or z.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty N x C array, got shape {z.shape}")
    if z.dtype == np.bool_ or not (np.issubdtype(z.dtype, np.floating) or np.issubdtype(z.dtype, np.integer)):
        raise ValueError(f"{name} must be real numbers, got dtype {z.dtype}")
    # One reduction: a NaN or inf makes the sum non-finite (so can an overflow of huge finite values: count then).
    with np.errstate(over="ignore", invalid="ignore"):
        total = z.sum() if np.issubdtype(z.dtype, np.floating) else 0.0  # integers are always finite
    if not np.isfinite(total):
        bad = int(np.count_nonzero(~np.isfinite(z)))
        if bad:
            raise ValueError(f"{name} contain NaN or inf ({bad} of {z.size} values)")
    return z.astype(np.float64, copy=False) if float64 else z


def check_labels(labels, n: int, n_classes: int, name: str = "labels", against: str = "logits") -> np.ndarray:
    """``labels`` as int64 of shape (n,) with every value in [0, n_classes), or ValueError naming ``name``.
    Integer-valued floats are accepted (labels saved as float)."""
    y = np.asarray(labels)
    if y.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) to match {against} ({n} rows), got {y.shape}")
    if y.dtype == np.bool_ or not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
        raise ValueError(f"{name} must be integer class indices, got dtype {y.dtype}")
    if not np.issubdtype(y.dtype, np.integer):
        if not (np.all(np.isfinite(y)) and np.all(np.equal(np.mod(y, 1), 0))):
            raise ValueError(f"{name} must be integer class indices, got non-integer values")
    y = y.astype(np.int64)
    outside = (y < 0) | (y >= n_classes)
    if outside.any():
        raise ValueError(f"{name} must lie in [0, {n_classes}) for the {n_classes} columns of {against}, got "
                         f"[{y.min()}, {y.max()}] ({int(outside.sum())} of {n} outside)")
    return y


def _check(logits, labels=None, names: tuple[str, str] = ("logits", "labels"),
           float64: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    z = check_logits(logits, names[0], float64)
    if labels is None:
        return z, None
    return z, check_labels(labels, z.shape[0], z.shape[1], names[1], names[0])


def log_softmax(logits) -> np.ndarray:
    """Row-wise log-softmax in float64, stable (max subtracted before exp)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def softmax(logits) -> np.ndarray:
    """Row-wise softmax in float64 (exp of :func:`log_softmax`)."""
    return np.exp(log_softmax(logits))


def bin_edges(n_bins: int) -> np.ndarray:
    """The ``n_bins + 1`` equal-width edges over [0, 1]."""
    if int(n_bins) < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    return np.linspace(0.0, 1.0, int(n_bins) + 1)


def bin_indices(conf, n_bins: int = 10) -> np.ndarray:
    """Equal-width bin of each confidence: bin b holds ``edges[b] < c <= edges[b+1]``; c = 0 goes to bin 0.

    Values are clipped to [0, 1] first (softmax can only leave that range by rounding), so c = 1.0 lands in the
    last bin and every value lands in exactly one bin.
    """
    c = np.clip(np.asarray(conf, dtype=np.float64), 0.0, 1.0)
    edges = bin_edges(n_bins)
    # searchsorted(side="left") = first edge >= c, so c in (edges[b], edges[b+1]] gives b + 1.
    return np.clip(np.searchsorted(edges, c, side="left") - 1, 0, len(edges) - 2)


def _bin_sums(conf: np.ndarray, hit: np.ndarray, idx: np.ndarray, n_bins: int):
    count = np.bincount(idx, minlength=n_bins).astype(np.float64)
    sum_conf = np.bincount(idx, weights=conf, minlength=n_bins)
    sum_hit = np.bincount(idx, weights=hit.astype(np.float64), minlength=n_bins)
    return count, sum_conf, sum_hit


def binned_calibration_error(conf, hit, n_bins: int = 10) -> dict[str, float]:
    """ECE, MCE and mass-weighted MCE (fractions, not percent) of confidences vs 0/1 outcomes.

    ``ece = sum_b (n_b/N) |acc_b - conf_b|``; ``mce = max_b |acc_b - conf_b|`` over non-empty bins (standard);
    ``mce_weighted = max_b (n_b/N) |acc_b - conf_b|`` (what the TCPT/DAC code logs as "MCE"; that code bins
    it as ``[lo, hi)``, we keep one bin rule for every metric).
    """
    conf = np.asarray(conf, dtype=np.float64)
    hit = np.asarray(hit, dtype=np.float64)
    count, sum_conf, sum_hit = _bin_sums(conf, hit, bin_indices(conf, n_bins), int(n_bins))
    nonempty = count > 0
    # |acc_b - conf_b| * n_b = |sum_hit_b - sum_conf_b|: no division by empty bins.
    weighted_gap = np.abs(sum_hit - sum_conf) / conf.size
    gap = np.abs(sum_hit[nonempty] - sum_conf[nonempty]) / count[nonempty]
    return {"ece": float(weighted_gap.sum()), "mce": float(gap.max()), "mce_weighted": float(weighted_gap.max())}


def adaptive_ece(conf, hit, n_bins: int = 10) -> float:
    """Equal-mass ECE (fraction): sort the samples by confidence, split them into ``n_bins`` contiguous groups
    whose sizes differ by at most one (the first ``N mod n_bins`` groups hold one more, as ``np.array_split``),
    then the ECE sum ``sum_g |sum hit_g - sum conf_g| / N``. Groups are empty only when N < n_bins.

    Tie rule: samples of equal confidence are ordered misses before hits (a sort on (confidence, hit)), so a
    group boundary that falls inside a run of ties splits it the same way whatever the input order: the value
    does not depend on the order of the samples.

    Differs slightly from the TCPT code's quantile-edge binning (sklearn KBinsDiscretizer), which merges duplicate
    edges; with distinct confidences and N divisible by n_bins the two agree.
    """
    conf = np.asarray(conf, dtype=np.float64)
    hit = np.asarray(hit, dtype=np.float64)
    order = np.lexsort((hit, conf))  # primary key: confidence; ties: misses (0) before hits (1)
    sizes = np.full(int(n_bins), conf.size // int(n_bins))
    sizes[: conf.size % int(n_bins)] += 1
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))[sizes > 0]
    gap = np.add.reduceat(hit[order], starts) - np.add.reduceat(conf[order], starts)
    return float(np.abs(gap).sum() / conf.size)


# Rows per block in compute_metrics / classwise_ece: about 2**20 values (8 MiB of float64), so the softmax of a
# block stays in cache and no N x C float array is ever allocated (on some VMs first-touching fresh memory costs
# more than all the arithmetic).
_BLOCK_VALUES = 2 ** 20


def _blocks(n: int, c: int):
    step = max(1, _BLOCK_VALUES // max(c, 1))
    for start in range(0, n, step):
        yield start, min(n, start + step)


def _class_bin_sums(p: np.ndarray, n_bins: int, colsum: np.ndarray, upper: np.ndarray) -> None:
    """Add a block of probabilities (rows x C, C-contiguous) to the per-class sums classwise ECE needs: ``colsum``
    (C) and ``upper`` (C x n_bins, the mass in bins >= 1). A probability above the first bin (``p > 1/n_bins``)
    occurs fewer than n_bins times per row, so only those entries are binned one by one."""
    colsum += p.sum(axis=0)
    where = np.flatnonzero(p > bin_edges(n_bins)[1])  # flat indices: ~10x faster than a 2-D np.nonzero
    values = p.ravel()[where]
    flat = (where % p.shape[1]) * n_bins + bin_indices(values, n_bins)
    upper += np.bincount(flat, weights=values, minlength=upper.size).reshape(upper.shape)


def _classwise_from_sums(colsum, upper, labels, p_true, n_bins: int) -> float:
    """Classwise ECE from :func:`_class_bin_sums`' totals, the labels and each row's probability of its label."""
    c, n = colsum.shape[0], labels.shape[0]
    sum_p = upper.copy()
    sum_p[:, 0] = colsum - upper[:, 1:].sum(axis=1)  # the first bin: everything else
    # the one-hot targets: one 1 per row, in class y_i at the bin of p_{i, y_i}
    sum_y = np.bincount(labels * n_bins + bin_indices(p_true, n_bins), minlength=c * n_bins).reshape(c, n_bins)
    return float((np.abs(sum_y - sum_p).sum(axis=1) / n).mean())


def classwise_ece(probs, labels, n_bins: int = 10) -> float:
    """Classwise ECE (fraction): for every class c (all C columns), the equal-width ECE of ``p_ic`` against
    ``1[y_i = c]``; then the mean over classes (Kull et al., 2019). Same bin rule as ECE.

    Sparse in the bins: only probabilities above the first bin are binned one by one; the first bin's mass of a
    class is its column sum minus the rest. Read block by block (a few passes per block, no N x C temporary).
    """
    p = np.asarray(probs, dtype=np.float64)
    n, c = p.shape
    y = np.asarray(labels, dtype=np.int64)
    nb = int(n_bins)
    colsum, upper = np.zeros(c), np.zeros((c, nb))
    for start, stop in _blocks(n, c):
        _class_bin_sums(np.ascontiguousarray(p[start:stop]), nb, colsum, upper)
    return _classwise_from_sums(colsum, upper, y, p[np.arange(n), y], nb)


def macro_f1(y_true, y_pred) -> float:
    """Macro-F1 in percent over the labels present in ``y_true`` (sklearn ``labels=unique(y_true)``).

    F1 per label = 2 TP / (2 TP + FP + FN) = 2 TP / (#true + #predicted), never 0/0 for a present label."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    size = int(max(y_true.max(initial=0), y_pred.max(initial=0))) + 1
    n_true = np.bincount(y_true, minlength=size)
    n_pred = np.bincount(y_pred, minlength=size)
    tp = np.bincount(y_true[y_true == y_pred], minlength=size)
    present = n_true > 0
    return 100.0 * float(np.mean(2 * tp[present] / (n_true[present] + n_pred[present])))


def _nll(logp: np.ndarray, y: np.ndarray) -> float:
    return float(-logp[np.arange(len(y)), y].mean())


def _brier(p: np.ndarray, y: np.ndarray) -> float:
    gap = p.copy()
    gap[np.arange(len(y)), y] -= 1.0
    return float((gap ** 2).sum(axis=1).mean())


def nll(logits, labels) -> float:
    """Mean negative log-likelihood of the true label."""
    z, y = _check(logits, labels)
    return _nll(log_softmax(z), y)


def brier(logits, labels) -> float:
    """Multi-class Brier score: ``mean_i sum_c (p_ic - 1[y_i = c])^2`` (range [0, 2])."""
    z, y = _check(logits, labels)
    return _brier(softmax(z), y)


def margins(logits, labels) -> np.ndarray:
    """Top-1 margin per sample, ``z_y - max_{j != y} z_j`` (positive iff correctly and uniquely classified)."""
    z, y = _check(logits, labels)
    if z.shape[1] < 2:
        raise ValueError("margins need at least 2 classes")
    rows = np.arange(len(y))
    true = z[rows, y].copy()
    z = z.copy()
    z[rows, y] = -np.inf
    return true - z.max(axis=1)


def reliability_data(logits, labels, n_bins: int = 10) -> dict[str, np.ndarray]:
    """Per equal-width bin: ``count`` (int), mean ``confidence`` and ``accuracy`` (fractions; NaN for an empty
    bin), plus ``edges`` (n_bins + 1). Same bin rule as ECE, so ``sum count/N * |accuracy - confidence|`` over
    non-empty bins is the ECE."""
    z, y = _check(logits, labels)
    p = softmax(z)
    conf, pred = p.max(axis=1), p.argmax(axis=1)
    count, sum_conf, sum_hit = _bin_sums(conf, pred == y, bin_indices(conf, n_bins), int(n_bins))
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.where(count > 0, sum_conf / count, np.nan)
        acc = np.where(count > 0, sum_hit / count, np.nan)
    return {"edges": bin_edges(n_bins), "count": count.astype(np.int64), "confidence": mean_conf,
            "accuracy": acc}


def compute_metrics(logits, labels, n_bins: int = 10) -> dict[str, float]:
    """Every metric of docs/method_notes.md#metrics for scaled logits (N x C) and integer labels (N).

    Returns ``accuracy``, ``macro_f1``, ``ece``, ``mce``, ``mce_weighted``, ``adaptive_ece``, ``classwise_ece``
    in percent and ``nll``, ``brier`` plain. Equal-width bins are ``(lo, hi]`` with confidence 0 in the first
    bin and confidence 1.0 in the last; ``n_bins`` sets both the equal-width and the equal-mass bin counts.

    Built for ImageNet-size inputs (docs/performance.md): the rows are read in blocks of about 2**20 values; each
    block's softmax (``p = exp(z - max z) / sum``, in float64) goes into one reused buffer, from which every
    metric takes what it needs (per row: prediction, confidence, ``p_y``, ``log p_y = z_y - max z - log sum``,
    ``sum p^2``; per class: the sums of classwise ECE). No N x C array is allocated.
    """
    z, y = _check(logits, labels, float64=False)  # float32 logits are read as they are, never copied
    n, c = z.shape
    nb = int(n_bins)
    pred = np.empty(n, dtype=np.int64)
    conf, p_true, log_p_true, sq_sum = (np.empty(n) for _ in range(4))
    colsum, upper = np.zeros(c), np.zeros((c, nb))
    buf = np.empty((min(n, max(1, _BLOCK_VALUES // c)), c))
    for start, stop in _blocks(n, c):
        zb, yb = z[start:stop], y[start:stop]
        rows = np.arange(stop - start)
        z_max = zb.max(axis=1).astype(np.float64)  # exact: the max is one of the values
        p = buf[: stop - start]
        np.subtract(zb, z_max[:, None], out=p, dtype=np.float64)
        np.exp(p, out=p)
        total = p.sum(axis=1)
        p /= total[:, None]
        pb = p.argmax(axis=1)
        pred[start:stop] = pb
        conf[start:stop] = p[rows, pb]
        p_true[start:stop] = p[rows, yb]
        # log p_y = z_y - max z - log sum exp(z - max z), without the log of every entry
        log_p_true[start:stop] = zb[rows, yb].astype(np.float64) - z_max - np.log(total)
        sq_sum[start:stop] = np.einsum("ij,ij->i", p, p)
        _class_bin_sums(p, nb, colsum, upper)
    hit = (pred == y).astype(np.float64)
    binned = binned_calibration_error(conf, hit, nb)
    return {
        "accuracy": 100.0 * float(hit.mean()),
        "macro_f1": macro_f1(y, pred),
        "ece": 100.0 * binned["ece"],
        "mce": 100.0 * binned["mce"],
        "mce_weighted": 100.0 * binned["mce_weighted"],
        "adaptive_ece": 100.0 * adaptive_ece(conf, hit, nb),
        "classwise_ece": 100.0 * _classwise_from_sums(colsum, upper, y, p_true, nb),
        "nll": float(-log_p_true.mean()),
        # Brier: sum_c (p_c - 1[y = c])^2 = sum_c p_c^2 - 2 p_y + 1
        "brier": float((sq_sum - 2.0 * p_true + 1.0).mean()),
    }


# ------------------------------------------------------------------------------------------------ aggregation
def aggregate(values: Iterable[float]) -> tuple[float, float]:
    """Mean and population std (ddof = 0) over seeds, as the TCPT aggregation (``np.std``)."""
    v = np.asarray(list(values), dtype=np.float64)
    if v.size == 0:
        raise ValueError("aggregate() needs at least one value")
    return float(v.mean()), float(v.std(ddof=0))


def harmonic_mean(b: float, n: float) -> float:
    """HM = 2 B N / (B + N) of base and novel accuracy (computed from the seed means); 0 when B + N = 0."""
    b, n = float(b), float(n)
    if math.isnan(b) or math.isnan(n):
        return float("nan")
    return 0.0 if b + n == 0 else 2.0 * b * n / (b + n)
