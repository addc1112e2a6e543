"""Classification evaluator: accuracy plus whatever the application's metric function adds, printed in Dassl's
block format.

The printed block keeps the ``* key: value%`` lines that parse_test_res-style parsers read
(docs/engine_api.md#evaluation-and-log-lines), with two decimals, and
adds a line for each calibration metric the registered function returns (ece, mce, ... ; nll, brier). The engine
imports nothing from the project: the application registers its metric function (:func:`set_metric_function`);
the default is Dassl's plain accuracy and macro-F1.
"""
from __future__ import annotations

import os.path as osp
from collections import OrderedDict
from typing import Callable

import numpy as np
import torch

from common.atomic import atomic_torch_save
from common.errors import UserError

from ..utils.registry import Registry

EVALUATOR_REGISTRY = Registry("EVALUATOR")

# Printed after accuracy / error / macro_f1, in this order, when compute_metrics returns them.
PERCENT_KEYS = ("ece", "mce", "adaptive_ece", "classwise_ece")
PLAIN_KEYS = ("nll", "brier")


def plain_metrics(logits: np.ndarray, labels: np.ndarray, n_bins: int = 10) -> dict:
    """Dassl's own metrics: accuracy and macro-F1 (over the classes present in labels or predictions), in %."""
    preds = logits.argmax(axis=1)
    f1s = []
    for c in np.union1d(labels, preds):
        tp = float(np.sum((preds == c) & (labels == c)))
        denom = float(np.sum(preds == c) + np.sum(labels == c))
        f1s.append(2.0 * tp / denom if denom else 0.0)
    return {"accuracy": 100.0 * float(np.mean(preds == labels)), "macro_f1": 100.0 * float(np.mean(f1s))}


MetricFunction = Callable[..., dict]
_metric_function: MetricFunction = plain_metrics


def set_metric_function(fn: MetricFunction | None) -> None:
    """Register ``fn(logits, labels, n_bins=...) -> {"accuracy", "macro_f1", ...}`` (percentages; extra keys are
    printed when listed in PERCENT_KEYS / PLAIN_KEYS); None restores :func:`plain_metrics`."""
    global _metric_function
    _metric_function = fn or plain_metrics


def _compute_metrics(logits: np.ndarray, labels: np.ndarray, n_bins: int) -> dict:
    """The one place that computes metrics: the registered metric function."""
    return _metric_function(logits, labels, n_bins=n_bins)


class EvaluatorBase:
    """Accumulate model outputs with ``process`` and summarise them with ``evaluate``."""

    def __init__(self, cfg):
        self.cfg = cfg

    def reset(self) -> None:
        raise NotImplementedError

    def process(self, mo, gt) -> None:
        raise NotImplementedError

    def evaluate(self) -> OrderedDict:
        raise NotImplementedError


def _to_numpy(x, dtype) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu() if dtype == np.float32 else x.detach().cpu()
        x = x.numpy()
    return np.asarray(x, dtype=dtype)


@EVALUATOR_REGISTRY.register()
class Classification(EvaluatorBase):
    """Keeps every logit and label (``.logits`` float32 N×C, ``.labels`` int64 N after evaluate)."""

    def __init__(self, cfg, lab2cname=None, **kwargs):
        super().__init__(cfg)
        self._lab2cname = lab2cname
        self._per_class_res = cfg.TEST.PER_CLASS_RESULT
        bins = cfg.TEST.get("ECE_BINS", 10)
        if not isinstance(bins, int) or bins < 1:  # checked here, before training, not at the first evaluation
            raise UserError(f"TEST.ECE_BINS must be a positive integer (default 10), got {bins!r}")
        self.reset()

    def reset(self) -> None:
        self._logits: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []
        self.logits: np.ndarray | None = None
        self.labels: np.ndarray | None = None

    def process(self, mo, gt) -> None:
        """mo: logits B×C (tensor or array); gt: labels B."""
        if isinstance(mo, (tuple, list)):
            mo = mo[0]
        self._logits.append(_to_numpy(mo, np.float32))
        self._labels.append(_to_numpy(gt, np.int64).reshape(-1))

    def evaluate(self) -> OrderedDict:
        if not self._logits:
            raise RuntimeError("Classification.evaluate() called before any process()")
        logits = np.concatenate(self._logits, axis=0)
        labels = np.concatenate(self._labels, axis=0)
        self.logits, self.labels = logits, labels
        metrics = dict(_compute_metrics(logits, labels, n_bins=self.cfg.TEST.ECE_BINS))

        preds = logits.argmax(axis=1)
        total = int(labels.shape[0])
        correct = int((preds == labels).sum())
        acc = float(metrics.pop("accuracy"))
        results = OrderedDict(accuracy=acc, error_rate=100.0 - acc, macro_f1=float(metrics.pop("macro_f1")))
        results.update(metrics)

        lines = ["=> result", f"* total: {total:,}", f"* correct: {correct:,}", f"* accuracy: {acc:.2f}%",
                 f"* error: {100.0 - acc:.2f}%", f"* macro_f1: {results['macro_f1']:.2f}%"]
        lines += [f"* {k}: {float(results[k]):.2f}%" for k in PERCENT_KEYS if k in results]
        lines += [f"* {k}: {float(results[k]):.4f}" for k in PLAIN_KEYS if k in results]
        print("\n".join(lines))

        if self._per_class_res:
            results["perclass_accuracy"] = self._print_per_class(preds, labels)
        if self.cfg.TEST.COMPUTE_CMAT:
            self._save_cmat(preds, labels, logits.shape[1])
        return results

    def _print_per_class(self, preds: np.ndarray, labels: np.ndarray) -> float:
        print("=> per-class result")
        accs = []
        for label in np.unique(labels):
            mask = labels == label
            total, correct = int(mask.sum()), int((preds[mask] == label).sum())
            acc = 100.0 * correct / total
            accs.append(acc)
            name = self._lab2cname.get(int(label), "") if self._lab2cname else ""
            print(f"* class: {label} ({name})\ttotal: {total:,}\tcorrect: {correct:,}\tacc: {acc:.2f}%")
        mean_acc = float(np.mean(accs))
        print(f"* average: {mean_acc:.2f}%")
        return mean_acc

    def _save_cmat(self, preds: np.ndarray, labels: np.ndarray, num_classes: int) -> None:
        """Row-normalised confusion matrix (rows = true class) to OUTPUT_DIR/cmat.pt."""
        n = max(num_classes, int(labels.max()) + 1)
        cmat = np.zeros((n, n), dtype=np.float64)
        np.add.at(cmat, (labels, preds), 1)
        cmat = cmat / np.maximum(cmat.sum(axis=1, keepdims=True), 1)
        save_path = osp.join(self.cfg.OUTPUT_DIR, "cmat.pt")
        atomic_torch_save(save_path, cmat)
        print(f'Confusion matrix is saved to "{save_path}"')
