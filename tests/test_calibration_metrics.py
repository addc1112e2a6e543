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
    with pytest.raises(ValueError, match="NaN or inf"):
        compute_metrics(np.array([[0.0, -np.inf]]), np.array([0]))
    # huge but finite logits are accepted (their sum overflows; the check counts non-finite values then)
    assert compute_metrics(np.array([[1e308, 1e308], [1e308, 0.0]]), np.array([0, 0]))["accuracy"] == 100.0


def test_aggregate_and_harmonic_mean():
    mean, std = aggregate([1.0, 2.0, 3.0])
    assert mean == 2.0 and std == pytest.approx(math.sqrt(2 / 3))  # population std
    assert harmonic_mean(80.0, 70.0) == pytest.approx(2 * 80 * 70 / 150)
    assert harmonic_mean(0.0, 0.0) == 0.0


# ------------------------------------------------------------------ independent references (loops, no shared code)
def _ref_bin(c, n_bins):
    """Bin of a confidence by the written rule: (lo, hi], 0 in the first bin."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    for b in range(n_bins):
        if c <= edges[b + 1]:
            return b
    return n_bins - 1


def _ref_ece(conf, target, n_bins):
    bins = {}
    for c, t in zip(conf, target):
        bins.setdefault(_ref_bin(c, n_bins), []).append((c, t))
    n = len(conf)
    gaps = {b: abs(sum(t for _, t in v) / len(v) - sum(c for c, _ in v) / len(v)) for b, v in bins.items()}
    return (sum(len(bins[b]) / n * g for b, g in gaps.items()), max(gaps.values()),
            max(len(bins[b]) / n * g for b, g in gaps.items()))


def _ref_metrics(z, y, n_bins):
    n, c = z.shape
    p = np.array([[math.exp(v - max(row)) for v in row] for row in z.tolist()])
    p /= p.sum(1, keepdims=True)
    pred = [int(np.argmax(row)) for row in p]
    conf = [p[i, pred[i]] for i in range(n)]
    hit = [float(pred[i] == y[i]) for i in range(n)]
    ece, mce, mcew = _ref_ece(conf, hit, n_bins)
    # equal mass: sorted by (confidence, hit), sizes differ by at most one, larger groups first
    pairs = sorted(zip(conf, hit))
    sizes = [n // n_bins + (1 if g < n % n_bins else 0) for g in range(n_bins)]
    aece, start = 0.0, 0
    for s in sizes:
        grp = pairs[start:start + s]
        start += s
        aece += abs(sum(h for _, h in grp) - sum(cf for cf, _ in grp)) / n
    cw = 0.0  # per class, the ECE sum of p_ik against 1[y_i = k] (unnormalised gaps, no empty-bin division)
    for k in range(c):
        for b in range(n_bins):
            idx = [i for i in range(n) if _ref_bin(p[i, k], n_bins) == b]
            cw += abs(sum(float(y[i] == k) for i in idx) - sum(p[i, k] for i in idx)) / n / c
    f1 = []
    for lab in sorted(set(y.tolist())):
        tp = sum(1 for i in range(n) if pred[i] == lab and y[i] == lab)
        fp = sum(1 for i in range(n) if pred[i] == lab and y[i] != lab)
        fn = sum(1 for i in range(n) if pred[i] != lab and y[i] == lab)
        f1.append(2 * tp / (2 * tp + fp + fn))
    return {"accuracy": 100 * np.mean(hit), "macro_f1": 100 * np.mean(f1), "ece": 100 * ece, "mce": 100 * mce,
            "mce_weighted": 100 * mcew, "adaptive_ece": 100 * aece, "classwise_ece": 100 * cw,
            "nll": -np.mean([math.log(p[i, y[i]]) for i in range(n)]),
            "brier": np.mean([sum((p[i, k] - (y[i] == k)) ** 2 for k in range(c)) for i in range(n)])}


@pytest.mark.parametrize("n, c, scale, n_bins", [(300, 7, 2.0, 10), (250, 40, 4.0, 15), (120, 2, 1.0, 1),
                                                 (97, 3, 8.0, 4), (5, 6, 1.0, 10)])
def test_compute_metrics_matches_loop_reference(n, c, scale, n_bins):
    rng = np.random.default_rng(n + c)
    z = rng.normal(scale=scale, size=(n, c))
    y = rng.integers(0, c, size=n)
    got, ref = compute_metrics(z, y, n_bins), _ref_metrics(z, y, n_bins)
    for key in ref:
        assert got[key] == pytest.approx(ref[key], abs=1e-9), key


def test_classwise_ece_one_bin_and_exact_edges():
    # one bin: per class |#labels - sum of p| / N, averaged: class 0 |1 - .9|, class 1 |1 - 1.1| -> .1 / 2 = .05
    probs = np.array([[0.6, 0.4], [0.3, 0.7]])
    assert classwise_ece(probs, np.array([0, 1]), 1) == pytest.approx((abs(1 - 0.9) + abs(1 - 1.1)) / 2 / 2)
    # row 0: uniform logits over 10 classes, p = 1/10 exactly: the first bin's upper edge, so bin 0 (with row 1's
    # p = .05 of the same class); row 1: p = (.05, .55, .05 x 8). Labels 0, 1.
    # class 0: bin 0 holds .1 (label) and .05: |1 - .15| = .85 (it would be .95 if .1 fell in bin 1)
    # class 1: bin 0 .1 (no label) + bin 5 .55 (label): .1 + .45; classes 2-9: |0 - .15| each
    z = np.stack([np.zeros(10), np.log([0.05, 0.55] + [0.05] * 8)])
    expected = (0.85 + 0.55 + 8 * 0.15) / 2 / 10
    assert compute_metrics(z, np.array([0, 1]))["classwise_ece"] == pytest.approx(100 * expected)


def test_adaptive_ece_does_not_depend_on_input_order():
    # 6 samples at conf .6 (3 hits) and 2 at .9: a 3-group split cuts the tie run; any order gives one value
    conf = np.array([0.6] * 6 + [0.9, 0.9])
    hit = np.array([1, 0, 1, 0, 1, 0, 1, 1], dtype=float)
    # sorted (misses first): .6x0 .6x0 .6x0 | .6x1 .6x1 .6x1 | .9x1 .9x1 with sizes 3, 3, 2:
    # |0 - 1.8| + |3 - 1.8| + |2 - 1.8| = 3.2 over 8
    assert adaptive_ece(conf, hit, 3) == pytest.approx(3.2 / 8)
    rng = np.random.default_rng(0)
    for _ in range(20):
        perm = rng.permutation(8)
        assert adaptive_ece(conf[perm], hit[perm], 3) == adaptive_ece(conf, hit, 3)
    z = two_class_logits(conf, [0] * 8)
    y = (1 - hit).astype(int)
    values = {compute_metrics(z[perm], y[perm], 3)["adaptive_ece"] for perm in (rng.permutation(8) for _ in range(20))}
    assert len(values) == 1


def test_float32_and_integer_logits():
    z = np.array([[2.0, 0.5, -1.0], [0.0, 1.0, 3.0]])
    y = np.array([0, 1])
    assert compute_metrics(z.astype(np.float32), y) == pytest.approx(compute_metrics(z, y), abs=1e-9)
    assert compute_metrics(np.array([[2, 0], [0, 2]]), y[:2] * 0)["accuracy"] == 50.0


@pytest.mark.parametrize("block_values", [7, 64, 1000])
def test_blocks_give_the_one_block_values(block_values, monkeypatch):
    import calibration.metrics as metrics

    rng = np.random.default_rng(block_values)
    z = rng.normal(scale=3.0, size=(97, 40)).astype(np.float32)
    y = rng.integers(0, 40, size=97)
    whole = compute_metrics(z, y, 10)
    ref = _ref_metrics(z.astype(np.float64), y, 10)
    probs = softmax(z)
    cw = classwise_ece(probs, y, 10)
    monkeypatch.setattr(metrics, "_BLOCK_VALUES", block_values)  # 1 row, 1 row, 25 rows per block
    assert compute_metrics(z, y, 10) == pytest.approx(whole, abs=1e-12)
    assert compute_metrics(z, y, 10) == pytest.approx(ref, abs=1e-9)
    assert classwise_ece(probs, y, 10) == pytest.approx(cw, abs=1e-14)
