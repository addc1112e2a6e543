"""Truncation of the text tower at the EOT (MODEL.TEXT_TRUNCATE_EOT) and its activation checkpointing
(MODEL.TEXT_CHECKPOINT_CHUNK) are exact: every method, tiny-vit, against the full 77-position path.

Bounds: fp32, <= 1e-5 relative (norm of the difference over the norm of the reference) for the frozen and zero-shot
text features, the evaluation logits, every loss term (the --calib terms included), every gradient and one
optimiser step's update. fp16 (weights as OpenAI's build, on this CPU): <= 4e-3 relative, four fp16 epsilons; the
summation order over fewer key positions is the only difference, so the error is rounding of the 16-bit tower.
"""
from __future__ import annotations

import pytest
import torch

import clip
import train
from tests.helpers import make_image_folder
from tests.test_methods_common import METHODS, argv_for

torch.set_num_threads(1)

FP32_REL = 1e-5
FP16_REL = 4e-3
OFF = ("MODEL.TEXT_TRUNCATE_EOT", "False")


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("truncation_data"), n_classes=6, per_class=6)


def build(name, root, out, *extra, opts=()):
    from dassl.engine import build_trainer

    torch.manual_seed(0)
    return build_trainer(train.setup_cfg(train.parse_args(argv_for(name, root, out, *extra, opts=opts))))


def a_batch(trainer):
    torch.manual_seed(0)
    return trainer.parse_batch_train(next(iter(trainer.train_loader_x)))


def one_step(trainer, image, label):
    """Loss terms, gradients and the parameter update of one real optimiser step."""
    trainer.set_model_mode("train")
    before = {n: p.detach().clone() for n, p in trainer.learnable_named_parameters()}
    torch.manual_seed(1)
    loss, terms, out = trainer.compute_loss(image, label)
    trainer.backward_and_update(loss, terms)
    grads = {n: p.grad.detach().clone() for n, p in trainer.learnable_named_parameters() if p.grad is not None}
    update = {n: p.detach() - before[n] for n, p in trainer.learnable_named_parameters()}
    return {k: v.detach() for k, v in terms.items()}, out.logits.detach(), grads, update


@pytest.mark.parametrize("name", METHODS + ["ZeroshotCLIP"])
def test_truncated_step_equals_the_77_position_step(name, data_root, tmp_path):
    calib = () if name == "ZeroshotCLIP" else ("--calib",)
    if name == "ZeroshotCLIP":
        from tests.helpers import IMAGEFOLDER_CFG, REPO
        from dassl.engine import build_trainer

        def make(out, opts=()):
            argv = ["--root", str(data_root), "--seed", "1", "--trainer", name, "--backbone", "tiny-vit",
                    "--dataset-config-file", IMAGEFOLDER_CFG, "--config-file",
                    str(REPO / "configs/trainers/ZeroshotCLIP/vit_b16.yaml"), "--output-dir", str(out),
                    "--eval-only", "DATALOADER.NUM_WORKERS", "0", "TEST.FEATURE_CACHE", "False", *opts]
            return build_trainer(train.setup_cfg(train.parse_args(argv)))
        cut, full = make(tmp_path / "cut"), make(tmp_path / "full", OFF)
    else:
        cut = build(name, data_root, tmp_path / "cut", *calib)
        full = build(name, data_root, tmp_path / "full", *calib, opts=OFF)
        full.model.load_state_dict(cut.model.state_dict())
    assert cut.model.text_encoder.truncate_eot and not full.model.text_encoder.truncate_eot
    assert rel(cut.zs_text_features, full.zs_text_features) <= FP32_REL  # frozen F0 / zero-shot weights

    image, label = a_batch(cut)
    for t in (cut, full):
        t.set_model_mode("eval")
    with torch.no_grad():
        torch.manual_seed(2)
        logits_cut = cut.model_inference(image).logits
        torch.manual_seed(2)
        logits_full = full.model_inference(image).logits
    assert rel(logits_cut, logits_full) <= FP32_REL
    if name == "ZeroshotCLIP":
        return

    terms_c, train_logits_c, grads_c, update_c = one_step(cut, image, label)
    terms_f, train_logits_f, grads_f, update_f = one_step(full, image, label)
    assert rel(train_logits_c, train_logits_f) <= FP32_REL
    assert set(terms_c) == set(terms_f) and {"margin", "mom"} <= set(terms_c)
    for k in terms_f:  # a term that is zero up to rounding (KgCoOp's mom: 1e-14) is compared absolutely
        assert rel(terms_c[k], terms_f[k]) <= FP32_REL or (terms_c[k] - terms_f[k]).abs() <= 1e-7, k
    assert set(grads_c) == set(grads_f) and grads_f
    for n in grads_f:
        assert rel(grads_c[n], grads_f[n]) <= FP32_REL, n
    params_c, params_f = dict(cut.learnable_named_parameters()), dict(full.learnable_named_parameters())
    for n in update_f:  # the update lr*g, read back as p_after - p_before: within 1e-5 plus the rounding of p
        assert rel(params_c[n], params_f[n]) <= FP32_REL, n
        slack = FP32_REL * update_f[n].abs().max() + 4 * torch.finfo(torch.float32).eps * params_f[n].abs().max()
        assert (update_c[n] - update_f[n]).abs().max() <= slack, n


@pytest.mark.parametrize("name", ["CoOp", "CoCoOp", "MaPLe"])
def test_checkpointed_text_tower_is_exact(name, data_root, tmp_path):
    """MODEL.TEXT_CHECKPOINT_CHUNK: the tower over chunks of prompts, recomputed in backward; same step."""
    plain = build(name, data_root, tmp_path / "plain", "--calib")
    ckpt = build(name, data_root, tmp_path / "ckpt", "--calib", opts=("MODEL.TEXT_CHECKPOINT_CHUNK", "4"))
    ckpt.model.load_state_dict(plain.model.state_dict())
    assert ckpt.model.text_encoder.checkpoint_chunk == 4
    image, label = a_batch(plain)
    terms_p, _, grads_p, _ = one_step(plain, image, label)
    terms_k, _, grads_k, _ = one_step(ckpt, image, label)
    for k in terms_p:
        assert rel(terms_k[k], terms_p[k]) <= FP32_REL, k
    for n in grads_p:
        assert rel(grads_k[n], grads_p[n]) <= FP32_REL, n


def test_chunked_per_prompt_deep_prompts_are_sliced():
    """Per-prompt deep prompts [N, M, D] follow their prompts into the checkpointed chunks."""
    model = clip.load("tiny-vit")
    enc = clip.TextEncoder(model)
    ids = clip.tokenize(["X X cat.", "X X basset hound.", "X X a.", "X X dog on a long leash."])
    prompts = enc.embed(ids).clone().requires_grad_(True)
    deep = [torch.randn(4, 2, enc.width, requires_grad=True)]
    ref = enc(prompts, ids.argmax(-1), deep)
    enc.checkpoint_chunk = 3
    out = enc(prompts, ids.argmax(-1), deep)
    assert rel(out, ref) <= FP32_REL
    g_ref = torch.autograd.grad(ref.square().sum(), [prompts, deep[0]])
    g_out = torch.autograd.grad(out.square().sum(), [prompts, deep[0]])
    for a, b in zip(g_out, g_ref):
        assert rel(a, b) <= FP32_REL


def test_positions_cover_the_last_eot_and_the_deep_rows():
    enc = clip.TextEncoder(clip.load("tiny-vit"))
    eot = torch.tensor([5, 9, 7])
    assert enc.positions(eot, []) == 10
    assert enc.positions(eot, [torch.zeros(12, enc.width), None]) == 13  # rows 1..12 are computed as before
    enc.truncate_eot = False
    assert enc.positions(eot, []) == 77


@pytest.mark.parametrize("backbone", ["tiny-vit", "toy-clip"])
def test_fp16_truncation_within_the_stated_bound(backbone):
    from trainers.prompts import TextPrompts

    model = clip.load(backbone, precision="fp16")
    enc = clip.TextEncoder(model)
    assert enc.dtype == torch.float16
    prompts = TextPrompts(enc, ["cat", "basset hound", "a very long class name of many words"], 4)
    errors = []
    for seed in range(3):
        ctx = torch.randn(4, enc.width, generator=torch.Generator().manual_seed(seed)) * 0.02
        with torch.no_grad():
            enc.truncate_eot = True
            cut = enc(prompts.assemble(ctx), prompts.eot_idx).float()
            enc.truncate_eot = False
            full = enc(prompts.assemble(ctx), prompts.eot_idx).float()
        errors.append(rel(cut, full))
    assert max(errors) <= FP16_REL, errors


def test_text_tower_keys_are_part_of_the_run_identity():
    """Truncation and checkpointing change the last bits of a step (float summation order), which training
    amplifies (the toy table's CoOp seeds moved by up to 6 points when truncation came on): like the thread count,
    they are part of a run's identity, so a run made without them is another run (and another folder)."""
    from runs.identity import identity_free

    assert not identity_free("MODEL.TEXT_TRUNCATE_EOT") and not identity_free("MODEL.TEXT_CHECKPOINT_CHUNK")
    assert not identity_free("MODEL.BACKBONE.NAME") and identity_free("TEST.TEXT_CHUNK")


def test_negative_checkpoint_chunk_is_one_clear_error():
    from common.errors import UserError

    with pytest.raises(UserError, match="MODEL.TEXT_CHECKPOINT_CHUNK"):
        clip.set_text_options(clip.load("tiny-vit"), checkpoint_chunk=-1)


def test_length_groups_are_exact_and_keep_the_order():
    """TextEncoder.group_size: prompts sorted by length in groups, each cut at its own EOT, results put back in
    the callers' order; per-prompt deep prompts follow their prompts (also through checkpointed chunks)."""
    from trainers.prompts import TextPrompts

    enc = clip.TextEncoder(clip.load("tiny-vit"))
    names = ["cat", "basset hound", "a", "dog on a very long leash", "red fox", "x y z w v u", "owl", "sea lion"]
    prompts = TextPrompts(enc, names * 3, 4)
    ctx = (torch.randn(4, enc.width, generator=torch.Generator().manual_seed(0)) * 0.02).requires_grad_(True)
    deep = [torch.randn(len(names) * 3, 2, enc.width, generator=torch.Generator().manual_seed(1)).requires_grad_()]
    ref = enc(prompts.assemble(ctx), prompts.eot_idx, deep)
    g_ref = torch.autograd.grad(ref.square().sum(), [ctx, deep[0]])
    enc.group_size, enc.checkpoint_chunk = 5, 3
    out = enc(prompts.assemble(ctx), prompts.eot_idx, deep)
    g_out = torch.autograd.grad(out.square().sum(), [ctx, deep[0]])
    assert rel(out, ref) <= FP32_REL
    for a, b in zip(g_out, g_ref):
        assert rel(a, b) <= FP32_REL
