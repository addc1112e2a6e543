"""Method-specific checks of CoCoOp, KgCoOp, ProGrad and ProDA (tiny-vit, generated dataset).

The generic invariants (one step moves only learnable tensors, --calib adds exact terms, base->novel CLI with
prompt-only checkpoints) are in tests/test_methods_common.py; here: what each paper defines.
"""
from __future__ import annotations


import pytest
import torch
import torch.nn.functional as F

import clip
from common.errors import UserError
from tests.helpers import IMAGEFOLDER_CFG, REPO, make_image_folder
import train

torch.set_num_threads(1)

CONFIGS = {"CoCoOp": "CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml", "KgCoOp": "KgCoOp/vit_b16_ep100_ctxv1.yaml",
           "ProGrad": "ProGrad/vit_b16_c16_ep100_batch32.yaml", "ProDA": "ProDA/vit_b16_c16_ep100_batch4.yaml"}
NODES = {"CoCoOp": "COCOOP", "KgCoOp": "KGCOOP", "ProGrad": "PROGRAD", "ProDA": "PRODA"}



@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("text_methods"), n_classes=4, per_class=4)


def build(name, root, out, *extra, opts=()):
    from dassl.engine import build_trainer

    argv = ["--root", str(root), "--seed", "1", "--trainer", name, "--backbone", "tiny-vit",
            "--dataset-config-file", IMAGEFOLDER_CFG, "--config-file", str(REPO / "configs/trainers" / CONFIGS[name]),
            "--output-dir", str(out), *extra, "DATASET.NUM_SHOTS", "2", "OPTIM.MAX_EPOCH", "1",
            "DATALOADER.TRAIN_X.BATCH_SIZE", "4", "DATALOADER.NUM_WORKERS", "0", "TEST.FEATURE_CACHE", "False",
            f"TRAINER.{NODES[name]}.PREC", "fp32", *opts]
    torch.manual_seed(0)
    return build_trainer(train.setup_cfg(train.parse_args(argv)))


def a_batch(trainer):
    torch.manual_seed(0)
    return trainer.parse_batch_train(next(iter(trainer.train_loader_x)))


def grads_of(trainer, image, label, **kwargs):
    """Run the shared step's backward_and_update with the optimiser step disabled; return the learnable grads."""
    trainer.set_model_mode("train")
    loss, terms, out = trainer.compute_loss(image, label)
    step, trainer.optim.step = trainer.optim.step, lambda *a, **k: None
    try:
        trainer.backward_and_update(loss, terms)
    finally:
        trainer.optim.step = step
    return {n: p.grad.detach().clone() for n, p in trainer.learnable_named_parameters()}, terms, out


def grads_by_hand(trainer, loss):
    params = trainer.learnable_parameters()
    return dict(zip([n for n, _ in trainer.learnable_named_parameters()],
                    torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)))


# ---------------------------------------------------------------------------------------------- checkpoints
EXPECTED_STATE = {
    "CoCoOp": {"ctx", "meta_net.linear1.weight", "meta_net.linear1.bias", "meta_net.linear2.weight",
               "meta_net.linear2.bias"},
    "KgCoOp": {"ctx"}, "ProGrad": {"ctx"}, "ProDA": {"ctx"},
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_checkpoint_holds_exactly_the_learnable_tensors(name, data_root, tmp_path):
    trainer = build(name, data_root, tmp_path)
    state = trainer.checkpoint_state()
    assert set(state) == EXPECTED_STATE[name]
    # nothing class-count dependent (prompt buffers, teacher/KG features) is persistent model state
    frozen = ("clip.", "text_encoder.", "image_encoder.")  # references to the frozen towers
    persistent = {k for k in trainer.model.state_dict() if not k.startswith(frozen)}
    assert persistent == EXPECTED_STATE[name]
    dt, e = trainer.model.text_encoder.width, trainer.model.image_encoder.output_dim
    shapes = {"CoCoOp": (4, dt), "KgCoOp": (4, dt), "ProGrad": (16, dt), "ProDA": (32, 16, dt)}
    assert tuple(state["ctx"].shape) == shapes[name]
    if name == "CoCoOp":  # meta-net E -> E/16 -> Dt
        assert tuple(state["meta_net.linear1.weight"].shape) == (e // 16, e)
        assert tuple(state["meta_net.linear2.weight"].shape) == (dt, e // 16)


# ---------------------------------------------------------------------------------------------- CoCoOp
def test_cocoop_text_features_per_image_and_meta_net_learns(data_root, tmp_path):
    trainer = build("CoCoOp", data_root, tmp_path)
    model = trainer.model
    image, label = a_batch(trainer)
    trainer.set_model_mode("train")
    out = model(image, label)
    B, C = image.shape[0], model.prompts.num_classes
    assert out.text_features.shape == (B, C, model.image_encoder.output_dim)
    assert torch.allclose(out.text_features.norm(dim=-1), torch.ones(B, C), atol=1e-5)
    assert not torch.allclose(out.text_features[0], out.text_features[1], atol=1e-6)
    logits = model.logit_scale * torch.einsum("be,bce->bc", out.image_features, out.text_features)
    assert torch.allclose(out.logits, logits, atol=1e-4)
    # image i's logits come from its own context ctx + meta_net(f_i): recompute image 1 alone
    alone = model.instance_text_features(out.image_features[1:2])
    assert torch.allclose(alone[0], out.text_features[1], atol=1e-5)

    grads, _, _ = grads_of(trainer, image, label)
    for n in EXPECTED_STATE["CoCoOp"]:
        assert grads[n].abs().sum() > 0, f"{n} got no gradient"
    assert getattr(model, "text_per_image", False)


def test_cocoop_eval_groups_images_like_training(data_root, tmp_path):
    trainer = build("CoCoOp", data_root, tmp_path, opts=("TEST.TEXT_CHUNK", "4"))  # groups of 1 image (C = 4)
    model = trainer.model
    image, label = a_batch(trainer)
    with torch.no_grad():
        model.train()
        full = model(image, label)
        model.eval()
        grouped = model(image_features=full.image_features)
    assert torch.allclose(full.logits, grouped.logits, atol=1e-4)


@pytest.mark.parametrize("instance_t", ["mean", "last"])
def test_cocoop_calib_t_from_instance_features(instance_t, data_root, tmp_path):
    from tests import references

    trainer = build("CoCoOp", data_root, tmp_path, "--calib", opts=("TRAINER.CALIB.INSTANCE_T", instance_t))
    image, label = a_batch(trainer)
    trainer.set_model_mode("train")
    torch.manual_seed(1)
    _, terms, out = trainer.compute_loss(image, label)
    t = out.text_features.detach()
    T = t[-1] if instance_t == "last" else F.normalize(t.mean(0), dim=-1)
    assert terms["mom"].item() == pytest.approx(5.0 * references.moment_matching(T, trainer.zs_text_features),
                                                abs=1e-6)


# ---------------------------------------------------------------------------------------------- KgCoOp
def test_kgcoop_term_is_eight_times_one_minus_mean_cosine(data_root, tmp_path):
    trainer = build("KgCoOp", data_root, tmp_path)
    model = trainer.model
    image, label = a_batch(trainer)
    with torch.no_grad():
        model.ctx.add_(0.05 * torch.randn_like(model.ctx))  # move away from the init
    trainer.set_model_mode("train")
    _, terms, out = trainer.compute_loss(image, label)
    # T0 by hand: frozen CLIP on KgCoOp's template ("a photo of a {}." for a folder dataset)
    names = [c.replace("_", " ") for c in trainer.dm.dataset.classnames]
    with torch.no_grad():
        t0 = F.normalize(model.clip.encode_text(clip.tokenize([f"a photo of a {n}." for n in names])).float(), dim=-1)
    cos = (out.text_features * t0).sum(-1)
    assert set(terms) == {"ce", "kg"}
    assert terms["kg"].item() == pytest.approx(8.0 * (1 - cos.mean().item()), abs=1e-5)
    assert terms["kg"].item() > 1e-4


def test_kgcoop_term_is_zero_when_ctx_spells_the_template(data_root, tmp_path):
    trainer = build("KgCoOp", data_root, tmp_path)  # ctx initialised from "a photo of a" = the template's words
    trainer.set_model_mode("train")
    image, label = a_batch(trainer)
    _, terms, _ = trainer.compute_loss(image, label)
    assert abs(terms["kg"].item()) < 1e-5


def test_kgcoop_templates_and_tcpt_hybrid(data_root, tmp_path):
    from trainers.kgcoop import kgcoop_template
    from trainers.proda import mean_abs_offdiag_cosine

    assert kgcoop_template("DescribableTextures") == "a photo of a {}, a type of texture."
    assert kgcoop_template("OxfordPets") == "a photo of a {}, a type of pet."
    trainer = build("KgCoOp", data_root, tmp_path, opts=("TRAINER.KGCOOP.LOSS", "tcpt_hybrid"))
    trainer.set_model_mode("train")
    image, label = a_batch(trainer)
    _, terms, out = trainer.compute_loss(image, label)
    assert set(terms) == {"ce", "div"}
    t = out.text_features.detach()
    cos = t @ t.t()
    C = t.shape[0]
    by_hand = (cos.abs().sum() - cos.diagonal().abs().sum()) / (C * (C - 1))
    assert terms["div"].item() == pytest.approx(0.1 * by_hand.item(), abs=1e-6)
    assert mean_abs_offdiag_cosine(torch.eye(3)).item() == 0.0
    assert mean_abs_offdiag_cosine(torch.ones(3, 2) / 2 ** 0.5).item() == pytest.approx(1.0)
    assert mean_abs_offdiag_cosine(torch.ones(1, 2)).item() == 0.0
    with pytest.raises(UserError, match="TRAINER.KGCOOP.LOSS"):
        build("KgCoOp", data_root, tmp_path / "bad", opts=("TRAINER.KGCOOP.LOSS", "kgg"))


# ---------------------------------------------------------------------------------------------- ProGrad
def test_projection_rule_on_constructed_vectors():
    from trainers.prograd import project_conflicting

    g, g_kl = torch.tensor([[1.0, 0.0]]), torch.tensor([[-1.0, 1.0]])  # conflicting: g·g_kl = -1
    p = project_conflicting(g, g_kl, 1.0)
    assert torch.allclose(p, torch.tensor([[0.5, 0.5]]))  # g - (g·û)û, û = (-1, 1)/√2
    assert (p * g_kl).sum().item() == pytest.approx(0.0, abs=1e-7)
    half = project_conflicting(g, g_kl, 0.5)
    assert torch.allclose(half, torch.tensor([[0.75, 0.25]]))
    assert (half * g_kl).sum().item() < 0  # λ < 1 removes only part of the conflict
    agree = torch.tensor([[1.0, 2.0]])
    assert torch.equal(project_conflicting(agree, g_kl, 1.0), agree)  # g·g_kl = 1 > 0: unchanged
    assert torch.equal(project_conflicting(g, torch.zeros(1, 2), 1.0), g)  # no direction: unchanged
    assert project_conflicting(None, g_kl) is None
    half_g = project_conflicting(g.half(), g_kl.half(), 1.0)
    assert half_g.dtype == torch.float16


def test_prograd_init_and_teacher(data_root, tmp_path):
    from trainers.prograd import prograd_template, soft_cross_entropy

    assert prograd_template("OxfordPets") == "a type of pet, a photo of a {}."
    assert prograd_template("DescribableTextures") == "a texture of {}."
    assert prograd_template("EuroSAT") == "a centered satellite photo of {}."
    trainer = build("ProGrad", data_root, tmp_path)
    model = trainer.model
    # "a photo of a {}." -> k = 4 words: 12 zero rows, then the embeddings of "a photo of a"
    phrase_emb = model.text_encoder.embed(clip.tokenize(["a photo of a"]))[0, 1:5].float()
    assert torch.equal(model.ctx[:12], torch.zeros_like(model.ctx[:12]))
    assert torch.allclose(model.ctx[12:], phrase_emb)

    image, label = a_batch(trainer)
    trainer.set_model_mode("train")
    _, terms, out = trainer.compute_loss(image, label)
    names = [c.replace("_", " ") for c in trainer.dm.dataset.classnames]
    with torch.no_grad():
        t0 = F.normalize(model.clip.encode_text(clip.tokenize([f"a photo of a {n}." for n in names])).float(), dim=-1)
        f = F.normalize(model.clip.encode_image(image).float(), dim=-1)
    z0 = model.logit_scale * f @ t0.t()
    p0 = F.softmax(z0, -1)
    by_hand = -(p0 * F.log_softmax(out.logits.detach(), -1)).sum(-1).mean()
    assert terms["kl"].item() == pytest.approx(by_hand.item(), rel=1e-5)
    assert soft_cross_entropy(z0, z0, 2.0).item() == pytest.approx(
        4.0 * -(F.softmax(z0 / 2, -1) * F.log_softmax(z0 / 2, -1)).sum(-1).mean().item(), rel=1e-6)


def test_prograd_phrase_longer_than_context_is_a_clear_error(data_root, tmp_path):
    with pytest.raises(UserError, match="N_CTX"):
        build("ProGrad", data_root, tmp_path, opts=("TRAINER.PROGRAD.N_CTX", "3"))


def _conflicting_ctx(trainer, image, label):
    """Perturb ctx until CE and KL gradients conflict (a case the projection must change)."""
    gen = torch.Generator().manual_seed(0)
    for _ in range(50):
        with torch.no_grad():
            trainer.model.ctx.add_(0.5 * torch.randn(trainer.model.ctx.shape, generator=gen))
        trainer.set_model_mode("train")
        _, terms, _ = trainer.compute_loss(image, label)
        g_ce = grads_by_hand(trainer, terms["ce"])["ctx"]
        g_kl = grads_by_hand(trainer, terms["kl"])["ctx"]
        if (g_ce * g_kl).sum() < 0:
            return g_ce, g_kl
    pytest.fail("no conflicting case found")


def test_prograd_update_has_no_component_against_teacher(data_root, tmp_path):
    trainer = build("ProGrad", data_root, tmp_path)
    image, label = a_batch(trainer)
    g_ce, g_kl = _conflicting_ctx(trainer, image, label)
    grads, _, _ = grads_of(trainer, image, label)
    g = grads["ctx"]
    assert (g * g_kl).sum().item() >= -1e-6 * g.norm().item() * g_kl.norm().item()
    unit = g_kl / g_kl.norm()
    assert torch.allclose(g, g_ce - (g_ce * unit).sum() * unit, atol=1e-6)
    assert not torch.allclose(g, g_ce)


def test_prograd_without_projection_is_the_plain_sum(data_root, tmp_path):
    trainer = build("ProGrad", data_root, tmp_path, opts=("TRAINER.PROGRAD.PROJECTION", "False"))
    image, label = a_batch(trainer)
    _conflicting_ctx(trainer, image, label)
    grads, terms, _ = grads_of(trainer, image, label)
    trainer.set_model_mode("train")
    _, terms, _ = trainer.compute_loss(image, label)
    expected = grads_by_hand(trainer, terms["ce"] + terms["kl"])["ctx"]
    assert torch.allclose(grads["ctx"], expected, atol=1e-6)


@pytest.mark.parametrize("after", [False, True])
def test_prograd_calib_before_or_after_projection(after, data_root, tmp_path):
    from trainers.prograd import project_conflicting

    trainer = build("ProGrad", data_root, tmp_path, "--calib",
                    opts=("TRAINER.PROGRAD.CALIB_AFTER_PROJECTION", str(after)))
    image, label = a_batch(trainer)
    _conflicting_ctx(trainer, image, label)
    grads, _, _ = grads_of(trainer, image, label)
    trainer.set_model_mode("train")
    _, terms, _ = trainer.compute_loss(image, label)
    assert set(terms) == {"ce", "kl", "margin", "mom"}
    g = lambda loss: grads_by_hand(trainer, loss)["ctx"]  # noqa: E731
    g_kl, calib = g(terms["kl"]), terms["margin"] + terms["mom"]
    if after:
        expected = project_conflicting(g(terms["ce"]), g_kl) + g(calib)
    else:
        expected = project_conflicting(g(terms["ce"] + calib), g_kl)
    assert torch.allclose(grads["ctx"], expected, atol=1e-5)


# ---------------------------------------------------------------------------------------------- ProDA
def test_proda_upper_bound_by_hand():
    from trainers.proda import upper_bound_logits

    # C = 2 classes, P = 2 prompts, E = 1: class 0 features (1, 3) -> δ = (-1, 1), Σ_00 = 2/3; class 1 constant.
    text = torch.tensor([[[1.0], [3.0]], [[0.5], [0.5]]])
    f = torch.tensor([[2.0]])  # f² = 4
    z = torch.tensor([[0.3, -0.2]])
    out = upper_bound_logits(z, text, f, torch.tensor([1]), scale=10.0)
    # y = 1: σ_0 = R_11 + R_00 - 2 R_10 = 0 + 4·2/3 - 0 = 8/3; σ_1 = 0 -> z̃_0 = 0.3 + ½·100·8/3
    assert out[0, 0].item() == pytest.approx(0.3 + 400 / 3, rel=1e-6)
    assert out[0, 1].item() == pytest.approx(-0.2)


def test_proda_upper_bound_matches_the_covariance_definition():
    from trainers.proda import upper_bound_logits

    g = torch.Generator().manual_seed(0)
    C, P, E, B = 3, 4, 5, 2
    t = F.normalize(torch.randn(C, P, E, generator=g, dtype=torch.float64), dim=-1)
    f = F.normalize(torch.randn(B, E, generator=g, dtype=torch.float64), dim=-1)
    y = torch.tensor([2, 0])
    z = torch.randn(B, C, generator=g, dtype=torch.float64)
    delta = t - t.mean(1, keepdim=True)
    sigma_d = torch.einsum("ckd,gkd->dcg", delta, delta) / (P + 1)  # E×C×C, divisor P+1
    R = torch.einsum("bd,dcg->bcg", f ** 2, sigma_d)
    expected = torch.empty(B, C, dtype=torch.float64)
    for i in range(B):
        for j in range(C):
            yi = y[i]
            expected[i, j] = z[i, j] + 0.5 * 100 ** 2 * (R[i, yi, yi] + R[i, j, j] - 2 * R[i, yi, j])
    out = upper_bound_logits(z, t, f, y, 100.0).double()  # fp32 inside; ½s² = 5000 amplifies rounding
    assert torch.allclose(out, expected, rtol=1e-5, atol=2e-3)
    assert torch.allclose(out.gather(1, y[:, None]), z.gather(1, y[:, None]), atol=1e-6)  # σ_y = 0


def test_proda_positions_and_prompt_batches(data_root, tmp_path):
    from trainers.proda import prompt_positions

    assert prompt_positions(32) == ["front"] * 8 + ["middle"] * 8 + ["end"] * 16
    assert prompt_positions(1) == ["end"]
    trainer = build("ProDA", data_root, tmp_path)
    model = trainer.model
    torch.manual_seed(3)
    expected = torch.randperm(32)
    torch.manual_seed(3)
    cycle = [model.next_prompt_batch() for _ in range(8)]  # 32 / 4 steps: consecutive slices of one permutation
    assert all(len(b) == 4 for b in cycle)
    assert torch.equal(torch.cat(cycle), expected)  # drawn from the torch RNG
    perm = model._perm
    model.next_prompt_batch()
    assert model._perm is not perm  # redrawn at the start of the next cycle


def test_proda_training_terms_and_test_classifier(data_root, tmp_path):
    from trainers.proda import mean_abs_offdiag_cosine, upper_bound_logits

    trainer = build("ProDA", data_root, tmp_path)
    model = trainer.model
    image, label = a_batch(trainer)
    trainer.set_model_mode("train")
    model._step = 0
    torch.manual_seed(5)
    _, terms, out = trainer.compute_loss(image, label)
    assert set(terms) == {"upper", "div"}  # the upper bound replaces CE
    idx = model._perm[:4].tolist()
    with torch.no_grad():
        text = model.class_prompt_features(idx)
        mean = text.mean(1)
        z = model.logit_scale * out.image_features @ mean.t()
        assert torch.allclose(out.logits, z, atol=1e-4)  # deployable logits
        assert torch.allclose(out.text_features, F.normalize(mean, dim=-1), atol=1e-6)
        upper = F.cross_entropy(upper_bound_logits(z, text, out.image_features, label, model.logit_scale), label)
        assert terms["upper"].item() == pytest.approx(upper.item(), rel=1e-5)
        # class-free prompts "[SOS][ctx_k][.][EOT]" for all K
        u = F.normalize(torch.stack([model.text_encoder(
            torch.cat([model.nc_prompts.token_prefix, model.ctx[k:k + 1].float(), model.nc_prompts.token_suffix], 1),
            model.nc_prompts.eot_idx) for k in range(32)])[:, 0].float(), dim=-1)
        assert terms["div"].item() == pytest.approx(0.1 * mean_abs_offdiag_cosine(u).item(), rel=1e-5)

        # test time: logits s·<f, μ> with μ the mean over all K prompts, not re-normalised
        model.eval()
        mu = torch.stack([model.class_prompt_features([k])[:, 0] for k in range(32)]).mean(0)
        assert mu.norm(dim=-1).max() < 0.999
        ev = model(image_features=out.image_features)
        assert torch.allclose(ev.logits, model.logit_scale * out.image_features @ mu.t(), atol=1e-4)


def test_proda_switches(data_root, tmp_path):
    trainer = build("ProDA", data_root, tmp_path, opts=("TRAINER.PRODA.CALIB_LOGITS", "surrogate"))
    image, label = a_batch(trainer)
    trainer.set_model_mode("train")
    _, terms, out = trainer.compute_loss(image, label)
    assert terms["upper"].item() == pytest.approx(F.cross_entropy(out.logits, label).item(), rel=1e-5)
    # the reference's tokenisation: "_" kept in the prompt tokens, class-token counts from the cleaned names
    from trainers.prompts import TextPrompts
    from trainers.proda import use_raw_classnames

    names = ["basset_hound", "red thing"]
    enc = trainer.model.text_encoder
    clean, raw = TextPrompts(enc, names, 4), TextPrompts(enc, names, 4)
    use_raw_classnames(raw, enc, names)
    assert torch.equal(raw.ids[0], clip.tokenize(["X X X X basset_hound."])[0])
    assert torch.equal(raw.ids[1], clean.ids[1]) and not torch.equal(raw.ids[0], clean.ids[0])
    assert raw.eot_idx[0] == clean.eot_idx[0] + 1  # "_" is one more token
    assert raw.name_lens == clean.name_lens
    assert torch.equal(raw.token_suffix[1], clean.token_suffix[1])
    assert "ids" not in raw.state_dict() and "token_suffix" not in raw.state_dict()  # still non-persistent
    raw_model = build("ProDA", data_root, tmp_path / "raw", opts=("TRAINER.PRODA.RAW_CLASSNAMES", "True"))
    assert raw_model.model.prompts.ids.shape == trainer.model.prompts.ids.shape
    with pytest.raises(UserError, match="PROMPT_BS"):
        build("ProDA", data_root, tmp_path / "bad", opts=("TRAINER.PRODA.PROMPT_BS", "33"))


@pytest.mark.parametrize("name,own", [("KgCoOp", "a photo of a {}, a type of texture."),
                                      ("ProGrad", "a texture of {}.")])
def test_frozen_target_switch(name, own, data_root, tmp_path):
    trainer = build(name, data_root, tmp_path)
    cfg = trainer.cfg.clone()
    cfg.defrost()
    cfg.DATASET.NAME = "DescribableTextures"
    trainer.cfg = cfg
    # the default: the single-template table (docs/method_notes.md#frozen-target-templates)
    assert trainer.frozen_target_templates() == ["{} texture."]
    cfg.TRAINER[NODES[name]].FROZEN_TARGET = "own"  # the TCPT code: the method's own table
    assert trainer.frozen_target_templates() == [own]
    cfg.TRAINER[NODES[name]].FROZEN_TARGET = "mine"
    with pytest.raises(UserError, match="FROZEN_TARGET"):
        trainer.frozen_target_templates()


def test_prograd_zero_weight_calib_after_projection_is_plain_prograd(data_root, tmp_path):
    from trainers.prograd import project_conflicting

    trainer = build("ProGrad", data_root, tmp_path, "--calib", opts=(
        "TRAINER.PROGRAD.CALIB_AFTER_PROJECTION", "True", "TRAINER.CALIB.LAMBDA_MARGIN", "0.0",
        "TRAINER.CALIB.LAMBDA_MOM", "0.0"))
    image, label = a_batch(trainer)
    grads, terms, _ = grads_of(trainer, image, label)  # constant (zero) terms: no gradient to add
    trainer.set_model_mode("train")
    _, terms, _ = trainer.compute_loss(image, label)
    g = lambda loss: grads_by_hand(trainer, loss)["ctx"]  # noqa: E731
    assert torch.allclose(grads["ctx"], project_conflicting(g(terms["ce"]), g(terms["kl"])), atol=1e-6)
