"""calibration.metrics: hand-computed values, bin edges (conf 0 and 1), empty bins, extremes."""
import math

import numpy as np
import pytest

from calibration.metrics import (adaptive_ece, aggregate, bin_indices, brier, classwise_ece, compute_metrics,
                                 harmonic_mean, log_softmax, macro_f1, margins, nll, reliability_data, softmax)


def two_class_logits(confs, preds):
    """Logits of a 2-class problem with max-softmax = conf and argmax = pred: [logit(p), 0] (or swapped)."""
    rows = []
    for c, p in zip(confs, preds):
        row = [0.0, 0.0]
        row[p] = math.log(c / (1 - c))
        rows.append(row)
    return np.array(rows)


def test_softmax_stable_and_normalised():
    z = np.array([[1000.0, 0.0, -1000.0], [1.0, 2.0, 3.0]])
    p = softmax(z)
    assert np.all(np.isfinite(p)) and np.allclose(p.sum(1), 1.0)
    assert p[0, 0] == 1.0  # exp(-1000) underflows: confidence exactly 1
    assert np.allclose(log_softmax(z)[1], np.array([1, 2, 3]) - math.log(math.exp(1) + math.exp(2) + math.exp(3)))


def test_bin_rule_edges():
    # bins (lo, hi]; 0 -> first bin; 1.0 -> last bin; an upper edge belongs to its lower bin.
    conf = np.array([0.0, 0.05, 0.1, 0.1000001, 0.5, 0.95, 1.0])
    assert bin_indices(conf, 10).tolist() == [0, 0, 0, 1, 4, 9, 9]
    assert bin_indices(np.array([0.0, 1.0]), 1).tolist() == [0, 0]
    assert bin_indices(np.array([0.25, 0.2500001, 0.75]), 4).tolist() == [0, 1, 2]


def test_confidence_one_counted_in_last_bin():
    # conf exactly 1.0, correct -> ECE 0 and the sample is in bin 9 (the DAC code drops it)
    z = np.array([[1000.0, 0.0], [0.0, 1000.0]])
    y = np.array([0, 1])
    rd = reliability_data(z, y, 10)
    assert rd["count"].tolist() == [0] * 9 + [2]
    assert compute_metrics(z, y)["ece"] == 0.0


def test_worst_calibration_is_100():
    z = np.array([[1000.0, 0.0], [0.0, 1000.0], [1000.0, 0.0]])
    y = np.array([1, 0, 1])  # always wrong with confidence 1
    m = compute_metrics(z, y)
    assert m["accuracy"] == 0.0
    assert m["ece"] == pytest.approx(100.0) and m["mce"] == pytest.approx(100.0)
    assert m["mce_weighted"] == pytest.approx(100.0) and m["adaptive_ece"] == pytest.approx(100.0)


def test_perfect_calibration_is_zero():
    # 4 samples at conf 0.75 with 3 correct: acc = conf in the only non-empty bin
    z = two_class_logits([0.75] * 4, [0, 0, 0, 0])
    y = np.array([0, 0, 0, 1])
    m = compute_metrics(z, y)
    assert m["ece"] == pytest.approx(0.0, abs=1e-10) and m["mce"] == pytest.approx(0.0, abs=1e-10)
    assert m["accuracy"] == 75.0


def test_ece_mce_hand_values_and_empty_bins():
    # conf 0.85 (correct), 0.85 (wrong), 0.65 (correct), 0.65 (wrong):
    # bin 8: acc .5 conf .85 gap .35, mass .5; bin 6: acc .5 conf .65 gap .15, mass .5
    # ECE = .5*.35 + .5*.15 = 25%; MCE = 35%; weighted MCE = .5*35 = 17.5%; 8 bins are empty.
    z = two_class_logits([0.85, 0.85, 0.65, 0.65], [0, 1, 0, 1])
    y = np.array([0, 0, 0, 0])
    m = compute_metrics(z, y)
    assert m["ece"] == pytest.approx(25.0)
    assert m["mce"] == pytest.approx(35.0)
    assert m["mce_weighted"] == pytest.approx(17.5)
    rd = reliability_data(z, y, 10)
    assert rd["count"].tolist() == [0, 0, 0, 0, 0, 0, 2, 0, 2, 0]
    assert np.isnan(rd["accuracy"][0]) and np.isnan(rd["confidence"][0])
    assert rd["accuracy"][8] == pytest.approx(0.5) and rd["confidence"][8] == pytest.approx(0.85)
    ok = rd["count"] > 0
    ece = np.sum(rd["count"][ok] / 4 * np.abs(rd["accuracy"][ok] - rd["confidence"][ok]))
    assert 100 * ece == pytest.approx(m["ece"])
    # 15 bins moves nothing across a bin boundary here: same ECE
    assert compute_metrics(z, y, n_bins=15)["ece"] == pytest.approx(25.0)


def test_adaptive_ece_hand_values():
    conf = np.array([0.97, 0.55, 0.95, 0.58])
    hit = np.array([1.0, 1.0, 1.0, 0.0])
    # 2 equal-mass bins: {.55 (hit), .58 (miss)}: |0.5 - .565| = .065; {.95, .97}: |1 - .96| = .04
    assert adaptive_ece(conf, hit, 2) == pytest.approx(0.5 * 0.065 + 0.5 * 0.04)
    # 10 bins on 4 samples: one sample per non-empty bin -> mean |hit - conf| = (.45 + .58 + .05 + .03) / 4
    assert adaptive_ece(conf, hit, 10) == pytest.approx((0.45 + 0.58 + 0.05 + 0.03) / 4)
    z = two_class_logits(conf, [0, 0, 0, 0])
    y = np.array([0, 0, 0, 1])
    assert compute_metrics(z, y, n_bins=2)["adaptive_ece"] == pytest.approx(100 * (0.5 * 0.065 + 0.5 * 0.04))


def test_classwise_ece_hand_value():
    probs = np.array([[0.75, 0.17, 0.08], [0.35, 0.57, 0.08]])
    y = np.array([0, 1])
    # class 0: p (.75 -> bin 7, .35 -> bin 3), targets (1, 0): .5*.25 + .5*.35 = .30
    # class 1: p (.17 -> bin 1, .57 -> bin 5), targets (0, 1): .5*.17 + .5*.43 = .30
    # class 2: p (.08, .08) both bin 0, targets (0, 0): gap .08
    expected = (0.30 + 0.30 + 0.08) / 3
    assert classwise_ece(probs, y, 10) == pytest.approx(expected)
    assert compute_metrics(np.log(probs), y)["classwise_ece"] == pytest.approx(100 * expected)


def test_nll_brier_hand_values():
    probs = np.array([[0.75, 0.17, 0.08], [0.35, 0.57, 0.08]])
    z = np.log(probs) + 3.0  # a shift per row changes nothing
    y = np.array([0, 1])
    assert nll(z, y) == pytest.approx((-math.log(0.75) - math.log(0.57)) / 2)
    # (.25^2 + .17^2 + .08^2 + .35^2 + .43^2 + .08^2) / 2 = (.0978 + .3138) / 2
    assert brier(z, y) == pytest.approx(0.2058)
    m = compute_metrics(z, y)
    assert m["nll"] == pytest.approx(nll(z, y)) and m["brier"] == pytest.approx(0.2058)


def test_macro_f1_over_present_labels():
    # label 0: TP1 FN1 -> F1 2/3; label 1: TP1 -> 1; predicted label 2 is absent from y_true: not averaged
    assert macro_f1([0, 0, 1], [0, 2, 1]) == pytest.approx(100 * (2 / 3 + 1) / 2)
    # label 0: 2/3; label 1: TP1 FP2 -> 2/(2+2) = .5; label 2: 0
    assert macro_f1([0, 0, 1, 2], [0, 1, 1, 1]) == pytest.approx(100 * (2 / 3 + 0.5 + 0) / 3)


def test_accuracy_and_argmax_ties():
    z = np.array([[1.0, 1.0], [0.0, 2.0], [3.0, 0.0]])
    y = np.array([0, 1, 1])  # tie -> argmax 0 (correct), correct, wrong
    assert compute_metrics(z, y)["accuracy"] == pytest.approx(200 / 3)


def test_margins():
    z = np.array([[2.0, 1.0, 0.0, -1.0], [0.0, 3.0, 1.0, 1.0], [1.0, 2.0, 4.0, 0.0]])
    assert margins(z, np.array([0, 2, 1])).tolist() == [1.0, -2.0, -2.0]


def test_input_validation():
    with pytest.raises(ValueError, match="labels must lie"):
        compute_metrics(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(ValueError, match="shape"):
        compute_metrics(np.zeros((2, 3)), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="NaN"):
        compute_metrics(np.array([[np.nan, 0.0]]), np.array([0]))


def test_aggregate_and_harmonic_mean():
    mean, std = aggregate([1.0, 2.0, 3.0])
    assert mean == 2.0 and std == pytest.approx(math.sqrt(2 / 3))  # population std
    assert harmonic_mean(80.0, 70.0) == pytest.approx(2 * 80 * 70 / 150)
    assert harmonic_mean(0.0, 0.0) == 0.0
