"""dassl.evaluation: the Classification evaluator's results and its Dassl-style printout."""
import re
from collections import OrderedDict

import numpy as np
import pytest
import torch

from common.errors import UserError
from dassl.config import get_cfg_default
from dassl.evaluation import EVALUATOR_REGISTRY, Classification, build_evaluator
import dassl.evaluation.evaluator as evaluator_module

# parse_test_res.py's regex (docs/engine_api.md#evaluation-and-log-lines)
def parse(keyword, text):
    return [float(m) for m in re.findall(rf"\* {keyword}: ([\.\deE+-]+)%", text)]


def fake_compute_metrics(logits, labels, n_bins=10):
    """Stands in for calibration.metrics.compute_metrics (same keys, known values)."""
    acc = 100.0 * float((logits.argmax(1) == labels).mean())
    return {"accuracy": acc, "macro_f1": 12.3456, "ece": 7.891, "mce": 20.0, "mce_weighted": 3.0,
            "adaptive_ece": 6.5, "classwise_ece": 1.25, "nll": 0.123456, "brier": 0.5, "n_bins_seen": n_bins}


@pytest.fixture
def fake_metrics(monkeypatch):
    monkeypatch.setattr(evaluator_module, "_compute_metrics",
                        lambda logits, labels, n_bins: fake_compute_metrics(logits, labels, n_bins))


def batches():
    # 4 samples, predictions 0, 1, 2, 2; labels 0, 1, 1, 2 -> 3 correct
    logits = torch.tensor([[3.0, 0, 0], [0, 2.0, 0], [0, 0, 1.0], [0, 0.5, 4.0]], dtype=torch.float16)
    labels = torch.tensor([0, 1, 1, 2])
    return [(logits[:2], labels[:2]), (logits[2:], labels[2:])]


def test_results_order_arrays_and_printout(fake_metrics, capsys):
    cfg = get_cfg_default()
    cfg.TEST.ECE_BINS = 15
    ev = build_evaluator(cfg, lab2cname={0: "a", 1: "b", 2: "c"})
    assert isinstance(ev, Classification) and "Loading evaluator: Classification" in capsys.readouterr().out
    for logits, labels in batches():
        ev.process(logits, labels)
    res = ev.evaluate()
    out = capsys.readouterr().out
    assert isinstance(res, OrderedDict)
    assert list(res)[:3] == ["accuracy", "error_rate", "macro_f1"]
    assert res["accuracy"] == 75.0 and res["error_rate"] == 25.0 and res["n_bins_seen"] == 15
    assert list(res)[3:] == ["ece", "mce", "mce_weighted", "adaptive_ece", "classwise_ece", "nll", "brier",
                             "n_bins_seen"]
    assert ev.logits.dtype == np.float32 and ev.logits.shape == (4, 3)
    assert ev.labels.dtype == np.int64 and ev.labels.tolist() == [0, 1, 1, 2]
    assert out.splitlines() == [
        "=> result", "* total: 4", "* correct: 3", "* accuracy: 75.00%", "* error: 25.00%", "* macro_f1: 12.35%",
        "* ece: 7.89%", "* mce: 20.00%", "* adaptive_ece: 6.50%", "* classwise_ece: 1.25%", "* nll: 0.1235",
        "* brier: 0.5000",
    ]
    assert parse("accuracy", out) == [75.0] and parse("ece", out) == [7.89] and parse("macro_f1", out) == [12.35]
    ev.reset()
    assert ev.logits is None
    with pytest.raises(RuntimeError):
        ev.evaluate()


def test_thousands_separator_and_per_class(fake_metrics, capsys, tmp_path):
    cfg = get_cfg_default()
    cfg.TEST.PER_CLASS_RESULT = True
    cfg.TEST.COMPUTE_CMAT = True
    cfg.OUTPUT_DIR = str(tmp_path)
    cfg.VERBOSE = False
    ev = Classification(cfg, lab2cname={0: "a", 1: "b"})
    labels = np.array([0] * 1000 + [1] * 234)
    logits = np.zeros((1234, 2), np.float32)
    logits[:1000, 0] = 1  # class 0 all right
    logits[1000:1100, 1] = 1  # class 1: 100 of 234 right
    logits[1100:, 0] = 1
    ev.process(logits, labels)
    res = ev.evaluate()
    out = capsys.readouterr().out
    assert "* total: 1,234" in out and "* correct: 1,100" in out
    assert "* class: 1 (b)\ttotal: 234\tcorrect: 100\tacc: 42.74%" in out
    assert res["perclass_accuracy"] == pytest.approx((100 + 100 * 100 / 234) / 2)
    cmat = torch.load(tmp_path / "cmat.pt", weights_only=False)
    assert cmat[1].tolist() == pytest.approx([134 / 234, 100 / 234]) and cmat[0].tolist() == [1.0, 0.0]


def test_real_compute_metrics_contract(capsys, monkeypatch):
    metrics = pytest.importorskip("calibration.metrics")
    monkeypatch.setattr(evaluator_module, "_metric_function", metrics.compute_metrics)  # what train.py registers
    cfg = get_cfg_default()
    ev = Classification(cfg)
    for logits, labels in batches():
        ev.process(logits, labels)
    res = ev.evaluate()
    out = capsys.readouterr().out
    assert res["accuracy"] == pytest.approx(75.0) and list(res)[0] == "accuracy"
    for key in ("ece", "mce", "adaptive_ece", "classwise_ece"):
        assert len(parse(key, out)) == 1
    assert re.search(r"\* nll: \d+\.\d{4}\n", out) and re.search(r"\* brier: \d+\.\d{4}\n", out)


def test_unknown_evaluator():
    cfg = get_cfg_default()
    cfg.TEST.EVALUATOR = "Clasification"
    with pytest.raises(UserError, match='Did you mean "Classification"'):
        build_evaluator(cfg)
    assert "Classification" in EVALUATOR_REGISTRY


def test_engine_default_metrics_are_dassls_plain_ones(capsys, monkeypatch):
    """The engine imports nothing from the project: without a registered metric function, accuracy and macro-F1."""
    monkeypatch.setattr(evaluator_module, "_metric_function", evaluator_module.plain_metrics)
    ev = Classification(get_cfg_default())
    for logits, labels in batches():
        ev.process(logits, labels)
    res = ev.evaluate()
    out = capsys.readouterr().out
    assert list(res) == ["accuracy", "error_rate", "macro_f1"] and res["accuracy"] == pytest.approx(75.0)
    # predictions 0,1,2,2 vs labels 0,1,1,2: F1 per class 1, 2/3, 2/3 (sklearn's macro average)
    assert res["macro_f1"] == pytest.approx(100 * (1 + 2 / 3 + 2 / 3) / 3) and "* ece" not in out
