"""calibration.regularizers: hand values, gradient signs, fp32 under fp16 inputs, exact zeros, the registry."""
import math

import pytest
import torch
import torch.nn.functional as F
from yacs.config import CfgNode as CN

from common.errors import UserError
from calibration.regularizers import (CALIB_DEFAULTS, CALIB_NAMES, MBLSObjective, PenaltyObjective,
                                      TCPTObjective, ZSNormObjective, add_calib_config, build_objective,
                                      margin_mean_var, mbls_loss, mbls_penalty, penalty_loss, resolve_calib_name,
                                      text_moment_matching, zs_norm_logits)
from tests import references

torch.set_num_threads(1)

# 3 x 4 logits, labels (0, 2, 1):
#   m_0 = 2 - max(1, 0, -1) = 1;  m_1 = 1 - max(0, 3, 1) = -2;  m_2 = 2 - max(1, 4, 0) = -2
#   mean = -1;  population var = (2^2 + 1 + 1) / 3 = 2
#   L = -0.1 * (-1) + 0.01 * 2 = 0.12
Z = torch.tensor([[2.0, 1.0, 0.0, -1.0], [0.0, 3.0, 1.0, 1.0], [1.0, 2.0, 4.0, 0.0]])
Y = torch.tensor([0, 2, 1])

# 2 classes in 2-D: T = [[1,0],[0,1]], F0 = [[1,0],[-1,0]]
#   mu_T = (.5, .5), mu_F = (0, 0): mean cost .5
#   Sigma_T = [[.25,-.25],[-.25,.25]], Sigma_F = [[1,0],[0,0]]: diff [[-.75,-.25],[-.25,.25]], sum sq .75
#   L_mom = 1.25
T2 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
F2 = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])


def test_margin_mean_var_hand_value():
    assert margin_mean_var(Z, Y, 0.1, 0.01).item() == pytest.approx(0.12)
    assert margin_mean_var(Z, Y, 1.0, 0.0).item() == pytest.approx(1.0)  # -mean
    assert margin_mean_var(Z, Y, 0.0, 1.0).item() == pytest.approx(2.0)  # var, divisor B


def test_margin_variance_of_one_sample_is_zero():
    z = torch.tensor([[3.0, -1.0, 7.5]])
    y = torch.tensor([1])
    assert margin_mean_var(z, y, 0.0, 1.0).item() == 0.0
    assert margin_mean_var(z, y, 0.1, 0.01).item() == pytest.approx(-0.1 * (-1.0 - 7.5))


def test_margin_gradient_increases_the_margin():
    z = Z.clone().requires_grad_(True)
    margin_mean_var(z, Y, 0.1, 0.0).backward()
    # -alpha/B on each true logit, +alpha/B on each runner-up, 0 elsewhere
    g = z.grad
    assert g[0, 0].item() == pytest.approx(-0.1 / 3) and g[0, 1].item() == pytest.approx(0.1 / 3)
    assert g[1, 2].item() == pytest.approx(-0.1 / 3) and g[1, 1].item() == pytest.approx(0.1 / 3)
    assert g[0, 2].item() == 0.0 and g[0, 3].item() == 0.0
    before = (Z.gather(1, Y[:, None]).squeeze(1) - Z.scatter(1, Y[:, None], -math.inf).max(1).values).mean()
    z2 = Z - 1.0 * g
    after = (z2.gather(1, Y[:, None]).squeeze(1) - z2.scatter(1, Y[:, None], -math.inf).max(1).values).mean()
    assert after > before


def test_text_moment_matching_hand_value_and_zero():
    assert text_moment_matching(T2, F2).item() == pytest.approx(1.25)
    t = F.normalize(torch.randn(7, 5, generator=torch.Generator().manual_seed(0)), dim=-1)
    assert text_moment_matching(t, t.clone()).item() == 0.0


def test_text_moment_matching_gradient_flows_to_tuned():
    t = T2.clone().requires_grad_(True)
    text_moment_matching(t, F2).backward()
    assert t.grad is not None and t.grad.abs().sum() > 0


def test_fp16_inputs_give_fp32_results():
    z16, t16, f16 = Z.half(), T2.half(), F2.half()
    lm = margin_mean_var(z16, Y, 0.1, 0.01)
    lmom = text_moment_matching(t16, f16)
    assert lm.dtype == torch.float32 and lmom.dtype == torch.float32
    assert lm.item() == pytest.approx(0.12, rel=1e-6)  # Z, T2, F2 are exact in fp16: the hand values, in fp32
    assert lmom.item() == pytest.approx(1.25, rel=1e-6)
    # a covariance difference whose square underflows in fp16 (6e-8 is fp16's smallest subnormal) survives
    a = torch.tensor([[1.0, 0.0], [0.999, 0.0447]]).half()
    b = torch.tensor([[1.0, 0.0], [0.999, 0.0448]]).half()
    assert text_moment_matching(a, b).item() > 0.0
    obj = TCPTObjective()
    terms = obj(z16, Y, t16, f16)
    assert all(v.dtype == torch.float32 for v in terms.values())
    zs16 = (Z * 0.5).half()
    for o in (MBLSObjective(), ZSNormObjective(), PenaltyObjective()):
        assert all(v.dtype == torch.float32 for v in o(z16, Y, None, None, zs_logits=zs16).values())


def test_mbls_hand_value():
    # row 0 max 3: gaps (0, 2, 13) -> relu(gap - 10) = (0, 0, 3); row 1 all equal: 0. mean over 6 = .5
    z = torch.tensor([[3.0, 1.0, -10.0], [0.0, 0.0, 0.0]])
    y = torch.tensor([0, 2])
    assert mbls_penalty(z, 10.0).item() == pytest.approx(0.5)
    ce = ((math.log(math.exp(3) + math.exp(1) + math.exp(-10)) - 3) + math.log(3)) / 2
    assert mbls_loss(z, y, 0.1, 10.0).item() == pytest.approx(ce + 0.05)
    # margin 0: gaps (0, 2, 13, 0, 0, 0) / 6
    assert mbls_penalty(z, 0.0).item() == pytest.approx(15 / 6)
    assert MBLSObjective(0.1, 10.0)(z, y, None, None) == {"mbls": pytest.approx(torch.tensor(0.05))}


def test_zs_norm_hand_value_and_range():
    # z (4, 0, 2) -> (z - 0)/4 = (1, 0, .5) -> * (1 - (-1)) + (-1) = (1, -1, 0)
    z = torch.tensor([[4.0, 0.0, 2.0]])
    zs = torch.tensor([[1.0, -1.0, 0.0]])
    assert zs_norm_logits(z, zs).tolist() == [[1.0, -1.0, 0.0]]
    out = ZSNormObjective()(z, torch.tensor([2]), None, None, zs_logits=zs)
    assert set(out) == {"ce"}
    assert out["ce"].item() == pytest.approx(math.log(math.e + math.exp(-1) + 1.0))
    g = torch.Generator().manual_seed(1)
    z, zs = 30 * torch.randn(6, 9, generator=g), 25 + 3 * torch.randn(6, 9, generator=g)
    zn = zs_norm_logits(z, zs)
    assert torch.allclose(zn.min(1).values, zs.min(1).values, atol=1e-5)
    assert torch.allclose(zn.max(1).values, zs.max(1).values, atol=1e-5)
    assert torch.equal(zn.argmax(1), z.argmax(1))
    # a constant row maps to min zs, not NaN
    assert zs_norm_logits(torch.ones(1, 9), zs[:1]).tolist() == [[zs[0].min().item()] * 9]


def test_penalty_hand_value():
    # max zs 2, min zs -1: relu(z - 2) = (3, 0, 0), relu(-1 - z) = (0, 0, 2): 10 * (3/3 + 2/3) = 50/3
    z = torch.tensor([[5.0, 0.0, -3.0]])
    zs = torch.tensor([[2.0, 1.0, -1.0]])
    assert penalty_loss(z, zs, 10.0).item() == pytest.approx(50 / 3)
    assert PenaltyObjective(10.0)(z, torch.tensor([0]), None, None, zs_logits=zs)["penalty"].item() == \
        pytest.approx(50 / 3)
    # inside the zero-shot range: no penalty
    assert penalty_loss(torch.tensor([[1.0, 0.0, -0.5]]), zs).item() == 0.0


def test_tcpt_objective_terms_and_weights():
    obj = TCPTObjective(alpha=0.1, beta=0.01, lambda_margin=2.0, lambda_mom=5.0)
    terms = obj(Z, Y, T2, F2)
    assert set(terms) == {"margin", "mom"}
    assert terms["margin"].item() == pytest.approx(2.0 * 0.12)
    assert terms["mom"].item() == pytest.approx(5.0 * 1.25)
    # cosine switch: margins of z / s
    cos = TCPTObjective(0.1, 0.01, 1.0, 0.0, margin_logits="cosine")(Z * 100, Y, T2, F2, logit_scale=100.0)
    assert cos["margin"].item() == pytest.approx(0.12, rel=1e-5)
    with pytest.raises(ValueError, match="logit_scale"):
        TCPTObjective(margin_logits="cosine")(Z, Y, T2, F2)


def test_tcpt_instance_conditional_features():
    g = torch.Generator().manual_seed(2)
    feats = F.normalize(torch.randn(3, 2, 2, generator=g), dim=-1)  # B x C x E
    mean_t = F.normalize(feats.mean(0), dim=-1)
    m = TCPTObjective(instance_t="mean")(Z[:, :2], torch.tensor([0, 1, 0]), feats, F2)["mom"]
    assert m.item() == pytest.approx(5.0 * references.moment_matching(mean_t, F2), rel=1e-5)
    last = TCPTObjective(instance_t="last")(Z[:, :2], torch.tensor([0, 1, 0]), feats, F2)["mom"]
    assert last.item() == pytest.approx(5.0 * references.moment_matching(feats[-1], F2), rel=1e-5)
    assert m.item() != pytest.approx(last.item())  # the two rules differ on this batch
    # a batch of one: mean and last agree (the official code's CoCoOp setting)
    one = feats[:1]
    assert TCPTObjective(instance_t="mean")(Z[:1, :2], Y[:1] * 0, one, F2)["mom"].item() == \
        pytest.approx(TCPTObjective(instance_t="last")(Z[:1, :2], Y[:1] * 0, one, F2)["mom"].item())


def test_zero_weights_give_exact_zeros():
    z = Z.clone().requires_grad_(True)
    cases = [
        (TCPTObjective(lambda_margin=0.0, lambda_mom=0.0), {"margin", "mom"}),
        (TCPTObjective(alpha=0.0, beta=0.0, lambda_mom=0.0), {"margin", "mom"}),
        (MBLSObjective(alpha=0.0), {"mbls"}),
        (PenaltyObjective(weight=0.0), {"penalty"}),
    ]
    for obj, keys in cases:
        terms = obj(z, Y, T2, F2, zs_logits=Z * 0.5)
        assert set(terms) == keys
        for v in terms.values():
            assert v.item() == 0.0 and not torch.signbit(v)
        # zero terms add no gradient either: the sum is a constant or its d/dz is exactly 0
        total = sum(terms.values())
        if total.requires_grad:
            grad = torch.autograd.grad(total, z, allow_unused=True)[0]
            assert grad is None or not grad.any()
    # no text features needed when the moment weight is 0
    assert TCPTObjective(lambda_mom=0.0)(Z, Y, None, None)["mom"].item() == 0.0


def test_zs_objectives_need_zs_logits():
    assert ZSNormObjective.needs_zs_logits and PenaltyObjective.needs_zs_logits
    assert not TCPTObjective.needs_zs_logits and not MBLSObjective.needs_zs_logits
    with pytest.raises(ValueError, match="zs_logits"):
        ZSNormObjective()(Z, Y, None, None)


def test_resolve_calib_name():
    for alias in ("tcpt", "TCPT", "paper", " Paper "):
        assert resolve_calib_name(alias) == "tcpt"
    assert resolve_calib_name("ZS-Norm") == "zs_norm" and resolve_calib_name("MBLS") == "mbls"
    # "" is TRAINER.CALIB.NAME's default (off) and train.py resolves it on every run: it must stay off
    for off in ("", None, "none", "OFF"):
        assert resolve_calib_name(off) == ""
    with pytest.raises(UserError) as e:
        resolve_calib_name("penalti")
    msg = str(e.value)
    assert all(n in msg for n in CALIB_NAMES) and 'Did you mean "penalty"?' in msg


def _cfg(**calib):
    cfg = CN()
    cfg.TRAINER = CN()
    add_calib_config(cfg)
    for k, v in calib.items():
        cfg.TRAINER.CALIB[k] = v
    return cfg


def test_add_calib_config_and_build_objective():
    cfg = _cfg()
    assert dict(cfg.TRAINER.CALIB) == CALIB_DEFAULTS
    assert build_objective(cfg) is None
    add_calib_config(cfg)  # idempotent, keeps values
    obj = build_objective(_cfg(NAME="tcpt", ALPHA=0.5))
    assert isinstance(obj, TCPTObjective) and obj.alpha == 0.5 and obj.beta == 0.01
    assert obj.lambda_margin == 1.0 and obj.lambda_mom == 5.0
    assert isinstance(build_objective(_cfg(NAME="Paper")), TCPTObjective)
    m = build_objective(_cfg(NAME="mbls", MBLS_MARGIN=0.0))
    assert isinstance(m, MBLSObjective) and m.margin == 0.0 and m.alpha == 0.1
    assert isinstance(build_objective(_cfg(NAME="zs_norm")), ZSNormObjective)
    p = build_objective(_cfg(NAME="penalty"))
    assert isinstance(p, PenaltyObjective) and p.weight == 10.0 and p.needs_zs_logits
    assert build_objective(CN()) is None  # no TRAINER.CALIB node: no objective
    with pytest.raises(UserError, match="INSTANCE_T"):
        build_objective(_cfg(NAME="tcpt", INSTANCE_T="first"))
    with pytest.raises(UserError, match="Unknown calibration objective"):
        build_objective(_cfg(NAME="focal"))
