"""Method-level checks of the deep-prompt methods (IVLP / language-only, VPT, MaPLe, PromptSRC) on tiny backbones.

Where prompts enter is checked with forward hooks on the resblocks of a 3-layer tiny model (so a depth-2 method
leaves one layer that must carry the prompts forward). The generic invariants (one step, --calib terms, base ->
novel) are in test_methods_common.py.
"""
from __future__ import annotations

import math
import sys

import pytest
import torch
import torch.nn.functional as F
from open_clip.model import CLIPTextCfg, CLIPVisionCfg

import clip
from clip.backbones import TINY_EMBED_DIM, TINY_TEXT, TINY_VIT
from common.errors import UserError
from tests.helpers import IMAGEFOLDER_CFG, REPO, make_image_folder
import train

torch.set_num_threads(1)

CFG = {
    "IVLP": REPO / "configs/trainers/IVLP/vit_b16_c2_ep20_batch4_4+4ctx.yaml",
    "LP": REPO / "configs/trainers/IVLP/vit_b16_c2_ep5_batch4_4ctx_language_only.yaml",
    "VPT": REPO / "configs/trainers/VPT/vit_b16_c2_ep5_batch4_4.yaml",
    "MaPLe": REPO / "configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml",
    "PromptSRC": REPO / "configs/trainers/PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx.yaml",
}
CLASSNAMES = ["red_thing", "green thing", "blue"]
TINY3 = "tiny-vit-3layers"


def _tiny3(device, precision, seed):
    return clip.build_clip(TINY_EMBED_DIM, CLIPVisionCfg(**dict(TINY_VIT, layers=3)),
                           CLIPTextCfg(**dict(TINY_TEXT, layers=3)), device=device, precision=precision, seed=seed)


clip.register_backbone(TINY3, _tiny3, overwrite=True)



@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("deep_data"), n_classes=5, per_class=8)  # base 3, new 2


def make_cfg(trainer, config, *opts, backbone="tiny-vit", extra=()):
    argv = ["--trainer", "IVLP" if trainer == "LP" else trainer, "--backbone", backbone,
            "--config-file", str(CFG[config]), *extra, *opts]
    return train.setup_cfg(train.parse_args(argv))


def build_model(trainer, *opts, backbone="tiny-vit", config=None):
    """The method's PromptModel on a fresh frozen CLIP (no dataset, no trainer)."""
    from dassl.engine import TRAINER_REGISTRY
    from trainers.templates import zeroshot_text_features

    cfg = make_cfg(trainer, config or trainer, *opts, backbone=backbone)
    clip_model = clip.load(backbone)
    clip_model.requires_grad_(False)
    zs = zeroshot_text_features(clip_model, CLASSNAMES, ["a photo of a {}."])
    cls = TRAINER_REGISTRY.get(cfg.TRAINER.NAME).model_class
    torch.manual_seed(0)
    return cls(cfg, CLASSNAMES, clip_model, zs)


def build_trainer(trainer, root, out, *opts, extra=()):
    from dassl.engine import build_trainer as build

    node = {"LP": "IVLP"}.get(trainer, trainer).upper()
    argv = ["--root", str(root), "--seed", "1", "--dataset-config-file", IMAGEFOLDER_CFG, "--output-dir", str(out),
            "DATASET.NUM_SHOTS", "2", "DATASET.SUBSAMPLE_CLASSES", "base", "DATALOADER.TRAIN_X.BATCH_SIZE", "2",
            "DATALOADER.TEST.BATCH_SIZE", "16", "DATALOADER.NUM_WORKERS", "0", "OPTIM.MAX_EPOCH", "1",
            f"TRAINER.{node}.PREC", "fp32", *opts]
    return build(make_cfg(trainer, trainer, *argv, extra=extra))


class BlockRecorder:
    """Inputs and outputs (batch-first) of every resblock of a transformer, from the latest call."""

    def __init__(self, transformer):
        self.first = getattr(transformer, "batch_first", True)
        self.inputs, self.outputs, self.handles = {}, {}, []
        for i, block in enumerate(transformer.resblocks):
            self.handles.append(block.register_forward_pre_hook(self._pre(i)))
            self.handles.append(block.register_forward_hook(self._post(i)))

    def _bf(self, x):
        return x.detach().clone() if self.first else x.detach().transpose(0, 1).clone()

    def _pre(self, i):
        def hook(module, args):
            self.inputs[i] = self._bf(args[0])
        return hook

    def _post(self, i):
        def hook(module, args, output):
            self.outputs[i] = self._bf(output)
        return hook

    def close(self):
        for h in self.handles:
            h.remove()


def image_batch(n=2):
    return torch.randn(n, 3, 224, 224, generator=torch.Generator().manual_seed(3))


def _check_carried(rec, layer, keep):
    """Block ``layer``'s input equals the previous block's output on the token rows ``keep``."""
    assert torch.equal(rec.inputs[layer][:, keep], rec.outputs[layer - 1][:, keep])


def check_text_layers(model, rec, deep, n, depth, ctx, phrase="a photo of a"):
    """Rows 1..n hold ctx (+ positional embedding) at layer 0 and deep[i-1] at layers 1..depth-1; every other row
    and every layer >= depth is the previous block's output."""
    clip_model = model.clip
    ids = clip.tokenize([f"{phrase} {c.replace('_', ' ')}." for c in CLASSNAMES])
    frozen0 = clip_model.token_embedding(ids) + clip_model.positional_embedding
    x0 = rec.inputs[0]
    length = x0.shape[1]  # the tower runs up to the last EOT only (MODEL.TEXT_TRUNCATE_EOT)
    assert length == int(model.prompts.eot_idx.max()) + 1 if hasattr(model, "prompts") else length <= 77
    frozen0 = frozen0[:, :length]
    assert torch.allclose(x0[:, 1:1 + n], (ctx + clip_model.positional_embedding[1:1 + n]).expand(3, -1, -1))
    assert torch.equal(x0[:, :1], frozen0[:, :1]) and torch.allclose(x0[:, 1 + n:], frozen0[:, 1 + n:])
    rows = torch.arange(length)
    other = (rows < 1) | (rows > n)
    for layer in range(1, len(rec.inputs)):
        if layer < depth:
            assert torch.equal(rec.inputs[layer][:, 1:1 + n], deep[layer - 1].expand(3, -1, -1)), layer
            assert not torch.allclose(rec.outputs[layer - 1][:, 1:1 + n], deep[layer - 1].expand(3, -1, -1))
            _check_carried(rec, layer, other)
        else:
            _check_carried(rec, layer, slice(None))


def check_vision_layers(model, rec, frozen_rec, first, deep, n, depth):
    """The last n tokens are ln_pre(first) at layer 0 and deep[i-1] at layers 1..depth-1; patch/class tokens are the
    frozen ones at layer 0 and the previous block's output after; layers >= depth carry everything forward."""
    visual = model.clip.visual
    x0 = rec.inputs[0]
    assert x0.shape[1] == frozen_rec.inputs[0].shape[1] + n
    assert torch.allclose(x0[:, :-n], frozen_rec.inputs[0], atol=1e-6)
    assert torch.allclose(x0[:, -n:], visual.ln_pre(first).expand(x0.shape[0], -1, -1), atol=1e-6)
    for layer in range(1, len(rec.inputs)):
        if layer < depth:
            assert torch.equal(rec.inputs[layer][:, -n:], deep[layer - 1].expand(x0.shape[0], -1, -1)), layer
            _check_carried(rec, layer, slice(0, x0.shape[1] - n))
        else:
            _check_carried(rec, layer, slice(None))


def record(model, image):
    text_rec, vis_rec = BlockRecorder(model.clip.transformer), BlockRecorder(model.clip.visual.transformer)
    try:
        with torch.no_grad():
            model.encode_text()
            model.encode_image(image)
    finally:
        text_rec.close(), vis_rec.close()
    frozen = BlockRecorder(model.clip.visual.transformer)
    try:
        with torch.no_grad():
            model.clip.encode_image(image)
    finally:
        frozen.close()
    return text_rec, vis_rec, frozen


# --------------------------------------------------------------------------------------------------- IVLP / LP
@pytest.mark.parametrize("depth_t,depth_v", [(2, 3), (3, 2)])
def test_ivlp_prompts_replace_exact_rows_in_exact_layers(depth_t, depth_v):
    model = build_model("IVLP", "TRAINER.IVLP.N_CTX_TEXT", "2", "TRAINER.IVLP.N_CTX_VISION", "3",
                        "TRAINER.IVLP.PROMPT_DEPTH_TEXT", str(depth_t), "TRAINER.IVLP.PROMPT_DEPTH_VISION",
                        str(depth_v), backbone=TINY3)
    assert len(model.text_deep) == depth_t - 1 and len(model.visual_prompts.deep) == depth_v - 1
    assert model.image_prompted
    image = image_batch()
    text_rec, vis_rec, frozen = record(model, image)
    check_text_layers(model, text_rec, list(model.text_deep), 2, depth_t, model.ctx)
    check_vision_layers(model, vis_rec, frozen, model.visual_prompts.prompt, list(model.visual_prompts.deep), 3,
                        depth_v)


def test_ivlp_init_uses_first_tokens_and_keeps_rest_fixed():
    model = build_model("IVLP", "TRAINER.IVLP.N_CTX_TEXT", "2")
    emb = model.clip.token_embedding(clip.tokenize(["a photo"]))[0, 1:3]
    assert torch.equal(model.ctx.detach(), emb)
    ids = clip.tokenize(["of a red thing."])[0]
    n = int(ids.argmax())  # "of a red thing ." then EOT
    assert torch.equal(model.prompts.ids[0, 3:3 + n], ids[1:1 + n])
    # 4+4 config: the whole phrase is learnable, the fixed text is "{class}."
    model4 = build_model("IVLP")
    assert torch.equal(model4.ctx.detach(), model4.clip.token_embedding(clip.tokenize(["a photo of a"]))[0, 1:5])
    # more than 4 tokens: random "X" context, the phrase is ignored
    model6 = build_model("IVLP", "TRAINER.IVLP.N_CTX_TEXT", "6")
    assert int(model6.prompts.ids[0, 1]) == int(clip.tokenize(["x"])[0, 1])


def test_language_only_has_frozen_image_tower():
    model = build_model("LP", config="LP")
    assert model.visual_prompts is None and not model.image_prompted
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert sorted(names) == ["ctx", "text_deep.0"]  # depth 12 clipped to the 2 layers of tiny-vit
    image = image_batch()
    with torch.no_grad():
        expected = F.normalize(model.clip.encode_image(image), dim=-1)
        assert torch.allclose(model.encode_image(image), expected, atol=1e-6)


# --------------------------------------------------------------------------------------------------- MaPLe
def test_maple_vision_prompts_are_projections_of_text_prompts():
    model = build_model("MaPLe", "TRAINER.MAPLE.PROMPT_DEPTH", "2", backbone=TINY3)
    image = image_batch()
    text_rec, vis_rec, frozen = record(model, image)
    deep_text = list(model.compound_prompts_text)
    check_text_layers(model, text_rec, deep_text, 2, 2, model.ctx)
    with torch.no_grad():
        first = model.ctx @ model.proj.weight.t() + model.proj.bias
        lin = model.compound_prompt_projections[0]
        deep = [deep_text[0] @ lin.weight.t() + lin.bias]
    check_vision_layers(model, vis_rec, frozen, first, deep, 2, 2)

    # coupling: the image loss alone reaches the text prompts through the projections
    model.zero_grad()
    model.encode_image(image).sum().backward()
    assert model.ctx.grad is not None and model.ctx.grad.abs().sum() > 0
    assert model.compound_prompts_text[0].grad.abs().sum() > 0


def test_maple_projections_start_identical_and_stray_quote_switch():
    model = build_model("MaPLe", "TRAINER.MAPLE.PROMPT_DEPTH", "3", backbone=TINY3)
    a, b = model.compound_prompt_projections
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    assert not torch.equal(a.weight, model.proj.weight)
    assert len(model.compound_prompts_text) == 2
    assert not torch.equal(model.compound_prompts_text[0], model.compound_prompts_text[1])
    # TCPT's config value: the ctx becomes the tokens ' and a, and "photo of a" stays fixed
    quoted = build_model("MaPLe", "TRAINER.MAPLE.CTX_INIT", "\u2018a photo of a")
    ids = clip.tokenize(["'a"])[0, 1:3]
    assert torch.equal(quoted.ctx.detach(), quoted.clip.token_embedding(ids))
    assert int(quoted.prompts.ids[0, 3]) == int(clip.tokenize(["photo"])[0, 1])


# --------------------------------------------------------------------------------------------------- VPT
def test_vpt_text_side_is_constant(data_root, tmp_path):
    trainer = build_trainer("VPT", data_root, tmp_path, extra=("--calib",))
    model = trainer.model
    names = {n for n, _ in trainer.learnable_named_parameters()}
    assert names == {"visual_prompts.prompt", "visual_prompts.deep.0"}
    ids = clip.tokenize([f"a photo of a {c.replace('_', ' ')}." for c in trainer.dm.dataset.classnames])
    with torch.no_grad():
        expected = F.normalize(model.clip.encode_text(ids), dim=-1)
    assert torch.allclose(model.prepare(), expected, atol=1e-6)

    image, label = trainer.parse_batch_train(next(iter(trainer.train_loader_x)))
    loss, terms, out = trainer.compute_loss(image, label)
    assert not out.text_features.requires_grad and not terms["mom"].requires_grad  # L_mom: a constant
    assert terms["margin"].requires_grad
    before = {n: p.detach().clone() for n, p in trainer.learnable_named_parameters()}
    trainer.set_model_mode("train")
    trainer.batch_idx, trainer.num_batches = 0, 2
    trainer.forward_backward({"img": image, "label": label})
    assert all(not torch.equal(p, before[n]) for n, p in trainer.learnable_named_parameters())
    assert torch.equal(model.prepare(), out.text_features)


# --------------------------------------------------------------------------------------------------- PromptSRC
def test_promptsrc_template_lists():
    from trainers.promptsrc import PROMPTSRC_TEMPLATES, SCL_TEMPLATE_SETS
    from trainers.templates import IMAGENET_TEMPLATES

    assert len(PROMPTSRC_TEMPLATES) == 60 and PROMPTSRC_TEMPLATES[0] == "a photo of a {}."
    assert PROMPTSRC_TEMPLATES[1:] == [t for t in IMAGENET_TEMPLATES if t != "a photo of a {}."][:59]
    assert len(set(PROMPTSRC_TEMPLATES)) == 60
    assert len(SCL_TEMPLATE_SETS[80]) == 80 and IMAGENET_TEMPLATES[39] == "a photo of a {}."


def test_promptsrc_scl_terms_by_hand():
    from trainers.promptsrc import PROMPTSRC_TEMPLATES

    model = build_model("PromptSRC")
    model.train()
    image, label = image_batch(3), torch.tensor([0, 2, 1])
    out = model(image, label)
    assert set(out.losses) == {"scl_text", "scl_image", "scl_logits"}

    clip_model = model.clip
    with torch.no_grad():
        t = model.encode_text()
        f = model.encode_image(image)
        f0 = F.normalize(clip_model.encode_image(image), dim=-1)
        total = 0
        for template in PROMPTSRC_TEMPLATES:  # mean of UNnormalised features, then normalised
            total = total + clip_model.encode_text(clip.tokenize([template.format(c.replace("_", " "))
                                                                  for c in CLASSNAMES]))
        fixed = F.normalize(total / len(PROMPTSRC_TEMPLATES), dim=-1)
        z, z0 = 100 * f @ t.t(), 100 * f0 @ fixed.t()
        p, p0 = z.softmax(-1), z0.softmax(-1)
        kl = (p0 * (p0.log() - p.log())).sum() / (3 * 3)
    assert torch.allclose(out.logits, z, atol=1e-4)
    assert out.losses["scl_text"].item() == pytest.approx(25 * (t - fixed).abs().mean().item(), rel=1e-5)
    assert out.losses["scl_image"].item() == pytest.approx(10 * (f - f0).abs().mean().item(), rel=1e-5)
    assert out.losses["scl_logits"].item() == pytest.approx(kl.item(), rel=1e-4)
    assert out.losses["scl_text"].item() > 0 and out.losses["scl_image"].item() > 0
    # the terms carry gradient to the prompts; the frozen references do not
    out.losses["scl_image"].backward()
    assert model.visual_prompts.prompt.grad.abs().sum() > 0
    fixed_once = model.fixed_embeddings
    model(image, label)
    assert model.fixed_embeddings is fixed_once  # computed once
    model.eval()
    assert model(image).losses == {}


def test_gpa_weights_by_hand():
    from trainers.promptsrc import gpa_weights

    a = math.exp(-0.5)
    assert gpa_weights(3, 2, 1) == pytest.approx([a / (1 + 2 * a), 1 / (1 + 2 * a), a / (1 + 2 * a)])
    w = gpa_weights(20, 15, 1)
    assert w[14] == pytest.approx(0.399, abs=1e-3) and w[13] == pytest.approx(0.242, abs=1e-3)
    assert gpa_weights(5, 45, 1) == pytest.approx([0, 0, 0, 0, 1])  # far mean: no 0/0
    with pytest.raises(UserError, match="GPA_STD"):
        gpa_weights(3, 2, 0)


class Interrupt(Exception):
    pass


def _snapshotting(trainer, snaps, stop_at_epoch=None):
    """Record the learnable tensors after each epoch's last step (what GPA aggregates)."""
    step = trainer.forward_backward

    def forward_backward(batch):
        if stop_at_epoch is not None and trainer.epoch + 1 == stop_at_epoch:
            raise Interrupt
        summary = step(batch)
        if trainer.batch_idx + 1 == trainer.num_batches:
            snaps[trainer.epoch + 1] = {n: p.detach().clone() for n, p in trainer.learnable_named_parameters()}
        return summary
    trainer.forward_backward = forward_backward


def test_gpa_aggregate_is_gaussian_average_across_resume(data_root, tmp_path):
    from trainers.promptsrc import gpa_weights

    opts = ("OPTIM.MAX_EPOCH", "3", "TRAIN.CHECKPOINT_FREQ", "1", "TRAINER.PROMPTSRC.GPA_MEAN", "2",
            "TRAINER.PROMPTSRC.GPA_STD", "1", "TEST.NO_TEST", "True")
    snaps = {}
    first = build_trainer("PromptSRC", data_root, tmp_path, *opts)
    _snapshotting(first, snaps, stop_at_epoch=3)
    with pytest.raises(Interrupt):
        first.train()
    resumed = build_trainer("PromptSRC", data_root, tmp_path, *opts)  # resumes after epoch 2
    _snapshotting(resumed, snaps)
    resumed.train()
    assert sorted(snaps) == [1, 2, 3]
    w = gpa_weights(3, 2, 1)
    final = dict(resumed.learnable_named_parameters())
    for name, p in final.items():
        expected = sum(w[e - 1] * snaps[e][name] for e in (1, 2, 3))
        assert torch.allclose(p.detach(), expected, atol=1e-7), name
        assert not torch.allclose(p.detach(), snaps[3][name], atol=1e-5), name  # the aggregate is not epoch 3
    folder = tmp_path / "VLPromptLearner"
    for epoch in (1, 2):  # intermediate checkpoints: that epoch's own prompts
        state = torch.load(folder / f"model.pth.tar-{epoch}", map_location="cpu", weights_only=False)["state_dict"]
        assert all(torch.equal(state[n], snaps[epoch][n]) for n in final)
    state = torch.load(folder / "model.pth.tar-3", map_location="cpu", weights_only=False)["state_dict"]
    assert set(state) == set(final)  # learnable tensors only
    assert all(torch.equal(state[n], final[n].detach()) for n in final)  # the epoch-E checkpoint holds GPA


def test_gpa_scope_all_keeps_frozen_weights(data_root, tmp_path):
    trainer = build_trainer("PromptSRC", data_root, tmp_path, "OPTIM.MAX_EPOCH", "2", "TEST.NO_TEST", "True",
                            "TRAINER.PROMPTSRC.GPA_SCOPE", "all", "TRAINER.PROMPTSRC.GPA_MEAN", "1")
    frozen = {k: v.clone() for k, v in trainer.model.clip.state_dict().items()}
    assert len(trainer.gpa.tensors) > 10  # the whole model, each shared tower tensor once
    snaps = {}
    _snapshotting(trainer, snaps)
    trainer.train()
    w = trainer.gpa_weights
    for name, p in trainer.learnable_named_parameters():
        assert torch.allclose(p.detach(), w[0] * snaps[1][name] + w[1] * snaps[2][name], atol=1e-7)
    for k, v in trainer.model.clip.state_dict().items():
        if v.is_floating_point():
            assert torch.allclose(v, frozen[k], rtol=1e-6, atol=1e-7), k


# --------------------------------------------------------------------------------------------------- all methods
def _n(*shape):
    return math.prod(shape)


@pytest.mark.parametrize("method,expected", [
    ("IVLP", {"ctx": _n(4, 128), "text_deep.0": _n(4, 128), "visual_prompts.prompt": _n(4, 128),
              "visual_prompts.deep.0": _n(4, 128)}),
    ("LP", {"ctx": _n(4, 128), "text_deep.0": _n(4, 128)}),
    ("VPT", {"visual_prompts.prompt": _n(8, 128), "visual_prompts.deep.0": _n(8, 128)}),
    ("MaPLe", {"ctx": _n(2, 128), "proj.weight": _n(128, 128), "proj.bias": 128, "compound_prompts_text.0": 256,
               "compound_prompt_projections.0.weight": _n(128, 128), "compound_prompt_projections.0.bias": 128}),
    ("PromptSRC", {"ctx": _n(4, 128), "text_deep.0": _n(4, 128), "visual_prompts.prompt": _n(4, 128),
                   "visual_prompts.deep.0": _n(4, 128)}),
])
def test_checkpoint_holds_exactly_the_learnable_tensors(method, expected, data_root, tmp_path, capsys):
    trainer = build_trainer(method, data_root, tmp_path)
    assert "exceeds the backbone's 2 layers" in capsys.readouterr().out  # published depths clipped, with a note
    state = trainer.checkpoint_state()
    assert {k: v.numel() for k, v in state.items()} == expected
    assert {n for n, _ in trainer.learnable_named_parameters()} == set(expected)
    assert all(not p.requires_grad for p in trainer.model.clip.parameters())


def test_fp16_keeps_deep_prompts_fp32_masters(data_root, tmp_path, monkeypatch):
    """PREC fp16 (the reference path): ctx/proj in fp16 like the model, deep prompts fp32 as the reference."""
    import trainers.base as base

    monkeypatch.setattr(base, "resolve_precision", lambda prec, device: "fp16")
    maple = build_trainer("MaPLe", data_root, tmp_path / "m")
    dtypes = {n: p.dtype for n, p in maple.learnable_named_parameters()}
    assert dtypes["ctx"] == dtypes["proj.weight"] == torch.float16
    assert dtypes["compound_prompts_text.0"] == dtypes["compound_prompt_projections.0.weight"] == torch.float32
    ivlp = build_trainer("IVLP", data_root, tmp_path / "i")
    dtypes = {n: p.dtype for n, p in ivlp.learnable_named_parameters()}
    assert dtypes.pop("ctx") == torch.float16 and set(dtypes.values()) == {torch.float32}


@pytest.mark.parametrize("method,opts,match", [
    ("IVLP", ("TRAINER.IVLP.PROMPT_DEPTH_TEXT", "0"), "PROMPT_DEPTH_TEXT"),
    ("IVLP", ("TRAINER.IVLP.N_CTX_VISION", "0"), "N_CTX_VISION"),
    ("IVLP", ("TRAINER.IVLP.N_CTX_TEXT", "3", "TRAINER.IVLP.CTX_INIT", "a photo"), "CTX_INIT"),
    ("VPT", ("TRAINER.VPT.PROMPT_DEPTH_VISION", "0"), "PROMPT_DEPTH_VISION"),
    ("PromptSRC", ("TRAINER.PROMPTSRC.SCL_TEMPLATES", "7"), "SCL_TEMPLATES"),
])
def test_config_errors_name_the_key(method, opts, match):
    with pytest.raises(UserError, match=match):
        build_model(method, *opts)


def test_vision_prompts_need_a_vit():
    with pytest.raises(UserError, match="ViT"):
        build_model("MaPLe", backbone="tiny-rn")
    lp = build_model("LP", config="LP", backbone="tiny-rn")  # language-only runs on a ResNet
    assert not lp.image_prompted
