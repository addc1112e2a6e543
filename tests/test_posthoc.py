"""calibration.posthoc: TS lowers NLL and keeps argmax; DAC hand value and gamma = 1 for base classes; SaLS."""
import math

import numpy as np
import pytest

from calibration.metrics import compute_metrics, nll
from calibration.posthoc import DAC, SaLS, TemperatureScaling


def overconfident_set(n=600, c=5, true_t=3.0, seed=0):
    """Labels drawn from softmax(z); the logits handed out are true_t * z (over-confident by a factor true_t)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 1.5, size=(n, c))
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    y = np.array([rng.choice(c, p=row) for row in p])
    return true_t * z, y


def test_temperature_scaling_fixes_overconfidence():
    z, y = overconfident_set()
    ts = TemperatureScaling().fit(z, y)
    assert 2.4 < ts.temperature_ < 3.6  # recovers the factor
    zt = ts.transform(z)
    assert nll(zt, y) < nll(z, y) - 0.1
    assert np.array_equal(zt.argmax(1), z.argmax(1))
    assert compute_metrics(zt, y)["ece"] < compute_metrics(z, y)["ece"]
    # it is the NLL minimum: nudging T either way does not help
    for f in (0.98, 1.02):
        assert nll(z / (ts.temperature_ * f), y) >= nll(zt, y) - 1e-12
    # deterministic
    assert TemperatureScaling().fit(z, y).temperature_ == ts.temperature_


def test_temperature_scaling_underconfident_and_bounds():
    z, y = overconfident_set(true_t=0.25, seed=1)  # under-confident: T < 1
    assert TemperatureScaling().fit(z, y).temperature_ < 0.4
    # perfectly separated: NLL keeps falling as T -> 0, T stops at the lower bound
    z = np.array([[5.0, 0.0], [0.0, 5.0]])
    assert TemperatureScaling(t_min=0.05).fit(z, np.array([0, 1])).temperature_ == pytest.approx(0.05, rel=1e-5)
    with pytest.raises(RuntimeError):
        TemperatureScaling().transform(z)


def test_dac_hand_value():
    # base (tuned = frozen): e1, e2.  Test class: tuned (.6, .8), frozen (1/sqrt2, 1/sqrt2).
    # k=1: d_ft = |(.6,.8)-(0,1)| = sqrt(.4); d_zs = sqrt((1-1/sqrt2)^2 + 1/2) -> gamma = exp(d_zs - d_ft)
    # k=2: d_ft mean = (sqrt(.8) + sqrt(.4)) / 2, d_zs the same both ways
    base = np.eye(2)
    t = np.array([[0.6, 0.8]])
    f = np.array([[1 / math.sqrt(2), 1 / math.sqrt(2)]])
    d_zs = math.sqrt((1 - 1 / math.sqrt(2)) ** 2 + 0.5)
    g1 = DAC(k=1).fit(base, base).class_factors(t, f)
    assert g1[0] == pytest.approx(math.exp(d_zs - math.sqrt(0.4)))
    g2 = DAC(k=2).fit(base, base).class_factors(t, f)
    assert g2[0] == pytest.approx(math.exp(d_zs - (math.sqrt(0.8) + math.sqrt(0.4)) / 2))
    # unnormalised inputs are normalised first
    assert DAC(k=1).fit(3 * base, base).class_factors(5 * t, 2 * f)[0] == pytest.approx(g1[0])


def test_dac_base_class_factor_is_exactly_one_and_argmax_kept():
    rng = np.random.default_rng(3)
    base_t, base_z = rng.normal(size=(6, 16)), rng.normal(size=(6, 16))
    novel_t, novel_z = rng.normal(size=(4, 16)), rng.normal(size=(4, 16))
    novel_t[2], novel_z[2] = base_t[4], rng.normal(size=16)  # class 2 is base class 4 (tuned space)
    dac = DAC(k=5).fit(base_t, base_z)
    gamma = dac.class_factors(novel_t, novel_z)
    assert gamma[2] == 1.0
    assert np.all(gamma > 0) and np.sum(gamma == 1.0) == 1
    # a base run against itself: every factor is 1, logits unchanged
    assert np.all(dac.class_factors(base_t, base_z) == 1.0)
    z = rng.normal(0, 5, size=(50, 4))
    out = dac.transform(z, novel_t, novel_z)
    assert np.array_equal(out.argmax(1), z.argmax(1))
    pred = z.argmax(1)
    assert np.allclose(out, z * gamma[pred][:, None])
    assert np.array_equal(out[pred == 2], z[pred == 2])
    # stacks on TS
    zt = z / 1.7
    assert np.allclose(dac.transform(zt, novel_t, novel_z), out / 1.7)


def test_sals_matches_zs_norm_and_keeps_argmax():
    torch = pytest.importorskip("torch")
    from calibration.regularizers import zs_norm_logits

    rng = np.random.default_rng(4)
    z, zs = rng.normal(0, 10, size=(20, 7)), 20 + rng.normal(0, 3, size=(20, 7))
    out = SaLS().transform(z, zs)
    assert np.array_equal(out.argmax(1), z.argmax(1))
    assert np.allclose(out.min(1), zs.min(1)) and np.allclose(out.max(1), zs.max(1))
    ref = zs_norm_logits(torch.tensor(z), torch.tensor(zs)).double().numpy()
    assert np.allclose(out, ref, atol=1e-4)
    assert SaLS().transform(np.array([[4.0, 0.0, 2.0]]), np.array([[1.0, -1.0, 0.0]])).tolist() == \
        [[1.0, -1.0, 0.0]]


@pytest.mark.parametrize("logits, labels, match", [
    (np.zeros((3, 2)), np.array([0, 1, -1]), r"labels must lie in \[0, 2\)"),  # -1 used to wrap to the last class
    (np.zeros((3, 2)), np.array([0, 1, 2]), r"labels must lie in \[0, 2\)"),
    (np.array([[0.0, np.nan], [1.0, 0.0]]), np.array([0, 1]), "NaN or inf"),
    (np.zeros((3, 2)), np.array([0, 1]), r"shape \(3,\)"),
    (np.zeros((0, 2)), np.zeros(0, int), "non-empty"),
    (np.zeros(4), np.zeros(4, int), "N x C"),
    (np.zeros((2, 2)), np.array([0.5, 1.0]), "integer"),
])
def test_temperature_scaling_rejects_bad_input(logits, labels, match):
    with pytest.raises(ValueError, match=match):
        TemperatureScaling().fit(logits, labels)


def test_calibrators_reject_bad_input():
    ts = TemperatureScaling().fit(np.array([[2.0, 0.0], [0.0, 1.0]]), np.array([0, 0]))
    with pytest.raises(ValueError, match="NaN or inf"):
        ts.transform(np.array([[np.inf, 0.0]]))
    feats = np.eye(3)
    with pytest.raises(ValueError, match="base tuned text features row 1 is all zeros"):
        DAC().fit(feats * [[1], [0], [1]], feats)
    with pytest.raises(ValueError, match="same number of classes"):
        DAC().fit(feats, feats[:2])
    with pytest.raises(ValueError, match="k >= 1"):
        DAC(k=0)
    dac = DAC().fit(feats, feats)
    with pytest.raises(ValueError, match="zero-shot text features contain NaN"):
        dac.transform(np.zeros((1, 3)), feats, feats * np.nan)
    with pytest.raises(ValueError, match="zs_logits contain NaN"):
        SaLS().transform(np.zeros((2, 3)), np.full((2, 3), np.nan))
    with pytest.raises(ValueError, match="same shape"):
        SaLS().transform(np.zeros((2, 3)), np.zeros((2, 2)))
