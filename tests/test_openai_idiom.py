"""OpenAI's ``clip`` package API and attribute semantics (clip/model.py, clip/clip.py), held numerically to our own
encoders: the CoOp-family TextEncoder / prompt learner / image path of tests/data/trainers/openai_idiom_coop.py
(sequence-first transformer, ``model.dtype`` casts) give the features ``clip.TextEncoder`` / ``clip.VisionEncoder``
give, on tiny-vit and toy-clip, in fp32 and fp16 (CPU fp16 kernels), and on a model built by ``clip.build_model``.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from yacs.config import CfgNode as CN

import clip
import clip.backbones
from common.errors import UserError
from trainers.prompts import TextPrompts

pytestmark = pytest.mark.usefixtures("one_thread")
IDIOM_FILE = Path(__file__).resolve().parent / "data" / "trainers" / "openai_idiom_coop.py"
CLASSNAMES = ["red circle", "blue_square", "small green triangle"]
N_CTX = 4


@pytest.fixture(scope="module")
def idiom():
    """The OpenAI-idiom module's classes (imported through the plugin loader, as train.py --trainer-file does)."""
    from trainers.plugins import import_file

    import_file(IDIOM_FILE)
    return next(m for n, m in sys.modules.items() if n.startswith("trainer_plugins.openai_idiom_coop"))


def _cfg(n_ctx=N_CTX):
    cfg = CN()
    cfg.TRAINER = CN({"COOP": CN({"N_CTX": n_ctx, "PREC": "fp32"})})
    cfg.INPUT = CN({"SIZE": (224, 224)})
    return cfg


def _ours_text(model, ctx):
    enc = clip.TextEncoder(model)
    enc.truncate_eot = False  # the idiom runs all 77 positions; truncation's bounds: tests/test_truncation.py
    prompts = TextPrompts(enc, CLASSNAMES, N_CTX)
    return enc(prompts.assemble(ctx), prompts.eot_idx)


def _idiom_text(idiom, model, ctx):
    learner = idiom.PromptLearner(_cfg(), CLASSNAMES, model, ctx_vectors=ctx.clone())
    return idiom.TextEncoder(model)(learner(), learner.tokenized_prompts)


def _images(n=3, seed=0):
    return torch.randn(n, 3, 224, 224, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", ["tiny-vit", "toy-clip"])
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_openai_idiom_text_and_image_features_equal_ours(idiom, name, precision):
    model = clip.load(name, precision=precision)
    ctx = torch.randn(N_CTX, clip.TextEncoder(model).width, generator=torch.Generator().manual_seed(1)) * 0.02
    x = _images()
    with torch.no_grad():
        ours, theirs = _ours_text(model, ctx), _idiom_text(idiom, model, ctx)
        assert theirs.dtype == ours.dtype == model.dtype
        torch.testing.assert_close(theirs.float(), ours.float(), atol=1e-5, rtol=0)
        image_ours = clip.VisionEncoder(model)(x)
        torch.testing.assert_close(model.visual(x.type(model.dtype)).float(), image_ours.float(), atol=1e-5, rtol=0)
        torch.testing.assert_close(model.encode_image(x).float(), image_ours.float(), atol=1e-5, rtol=0)  # casts


def _idiom_vit(model, image, prompts=None):
    """A VPT-style image forward in OpenAI's idiom: the tower walked by hand, visual prompts appended after the
    patch tokens (no positional embedding), the blocks run sequence-first."""
    v = model.visual
    x = v.conv1(image.type(model.dtype))
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)  # [B, grid**2, width]
    cls = v.class_embedding.to(x.dtype) + torch.zeros(x.shape[0], 1, x.shape[-1], dtype=x.dtype)
    x = torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype)
    if prompts is not None:
        x = torch.cat([x, prompts.type(model.dtype).expand(x.shape[0], -1, -1)], dim=1)
    x = v.ln_pre(x)
    x = x.permute(1, 0, 2)  # NLD -> LND
    x = v.transformer(x)
    x = x.permute(1, 0, 2)  # LND -> NLD
    return v.ln_post(x[:, 0, :]) @ v.proj


@pytest.mark.parametrize("name", ["tiny-vit", "toy-clip"])
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_openai_idiom_image_tower_walk_equals_vision_encoder(name, precision):
    model = clip.load(name, precision=precision)
    enc = clip.VisionEncoder(model)
    prompts = torch.randn(2, enc.width, generator=torch.Generator().manual_seed(3)) * 0.02
    x = _images()
    with torch.no_grad():
        torch.testing.assert_close(_idiom_vit(model, x).float(), enc(x).float(), atol=1e-5, rtol=0)
        torch.testing.assert_close(_idiom_vit(model, x, prompts).float(), enc(x, prompts).float(), atol=1e-5, rtol=0)


def test_the_sequence_first_transformer_is_what_made_the_difference(idiom):
    """Run batch-first through the text blocks (what the idiom did on a plain open_clip model), the features are far
    from CLIP's: the test above can fail."""
    model = clip.load("toy-clip")
    ctx = torch.zeros(N_CTX, 128)
    with torch.no_grad():
        ours = _ours_text(model, ctx)
        learner = idiom.PromptLearner(_cfg(), CLASSNAMES, model, ctx_vectors=ctx)
        x = learner() + model.positional_embedding
        x = model.transformer.forward_batch_first(x.permute(1, 0, 2)).permute(1, 0, 2)  # no mask, wrong layout
        wrong = model.ln_final(x)[torch.arange(3), learner.tokenized_prompts.argmax(-1)] @ model.text_projection
    cos = torch.nn.functional.cosine_similarity(wrong, ours, dim=-1)
    assert cos.max() < 0.9, cos


@pytest.mark.parametrize("name", ["tiny-vit", "toy-clip"])
def test_our_models_compute_exactly_open_clip(name):
    """The OpenAI-compatible model (clip.load) and the builder's plain open_clip model: bit-identical features."""
    plain = clip.backbones.get_backbone(name)("cpu", "fp32", 0)
    model = clip.load(name)
    assert type(plain).__name__ == "CLIP" and type(plain).__module__ == "open_clip.model"
    ids = clip.tokenize(["a photo of a red circle.", "a blue square on a white background"])
    x = _images(2)
    with torch.no_grad():
        truncated = model.encode_text(ids)  # positions 0..max(EOT) only: equal within float rounding
        torch.testing.assert_close(truncated, plain.encode_text(ids), rtol=1e-5, atol=1e-6)
        clip.set_text_options(model, truncate_eot=False)  # all 77 positions: open_clip's computation to the bit
        assert torch.equal(model.encode_text(ids), plain.encode_text(ids))
        enc = clip.TextEncoder(model)
        assert torch.equal(enc(enc.embed(ids), ids.argmax(-1)), plain.encode_text(ids))
        assert torch.equal(model.encode_image(x), plain.encode_image(x))
        assert torch.equal(clip.VisionEncoder(model)(x), plain.encode_image(x))
    assert model.state_dict().keys() == plain.state_dict().keys()


def test_attribute_semantics():
    model = clip.load("tiny-vit")
    assert model.dtype == torch.float32 and model.visual.input_resolution == 224
    model.half()
    assert model.dtype == torch.float16 and model.transformer.attn_mask.dtype == torch.float16
    model.float()
    assert model.dtype == torch.float32
    # sequence-first: [L, N, D] in and out, and the causal mask inside (a later token cannot change an earlier one)
    x = torch.randn(77, 2, 128)
    y = model.transformer(x)
    x2 = x.clone()
    x2[40:] = torch.randn(37, 2, 128)
    with torch.no_grad():
        assert y.shape == (77, 2, 128)
        assert torch.equal(model.transformer(x2)[:40], y[:40]) and not torch.equal(model.transformer(x2)[40:], y[40:])
    with pytest.raises(TypeError):
        model.transformer(x, attn_mask=None)  # OpenAI's transformer takes no mask: loud, not silently batch-first
    assert model.visual.transformer.attn_mask is None  # the image tower's: sequence-first, no mask
    rn = clip.load("tiny-rn")
    assert rn.visual.input_resolution == 224 and rn.dtype == torch.float32


def test_openai_package_api(tmp_path):
    from clip import clip as openai_clip
    from clip.simple_tokenizer import SimpleTokenizer

    assert openai_clip.tokenize is clip.tokenize and "ViT-B/16" in openai_clip.available_models()
    assert openai_clip._MODELS["ViT-B/16"].endswith("/ViT-B-16.pt") and "toy-clip" in openai_clip._MODELS
    assert SimpleTokenizer().encode("Basset_Hound dog") == SimpleTokenizer().encode("basset_hound   dog")
    assert len(SimpleTokenizer().encode("a photo of a cat")) == 5
    # a named backbone: _download materialises its state dict (once; same content -> same file)
    path = openai_clip._download(openai_clip._MODELS["tiny-vit"], root=str(tmp_path))
    assert openai_clip._download(openai_clip._MODELS["tiny-vit"], root=str(tmp_path)) == path
    with pytest.raises(RuntimeError):
        torch.jit.load(path, map_location="cpu")  # not a JIT archive: the CoOp loader falls back to torch.load
    built = openai_clip.build_model(torch.load(path, map_location="cpu"))
    assert built.dtype == torch.float16 and not built.training  # OpenAI's build_model: fp16
    ref = clip.load("tiny-vit", precision="fp16")
    assert all(torch.equal(a, b) for a, b in zip(built.state_dict().values(), ref.state_dict().values()))
    model, preprocess = openai_clip.load("tiny-vit", device="cpu")
    assert model.dtype == torch.float32 and preprocess.transforms[0].size == 224
    m2 = clip.load("tiny-vit")
    clip.model.convert_weights(m2)
    assert m2.dtype == torch.float16 and m2.ln_final.weight.dtype == torch.float32


def test_download_of_openai_weights_is_the_clear_error(tmp_path, monkeypatch):
    """No download in tests: with HOME empty and no network the error names the places and the fix."""
    from clip import clip as openai_clip

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("CLIP_WEIGHTS", raising=False)
    monkeypatch.delenv("CLIP_CACHE_DIR", raising=False)
    monkeypatch.setattr("open_clip.pretrained.download_pretrained", lambda *a, **k: (_ for _ in ()).throw(
        OSError("offline")))
    with pytest.raises(UserError, match="ViT-B-16.pt"):
        openai_clip._download(openai_clip._MODELS["ViT-B/16"])
    (tmp_path / ".cache" / "clip").mkdir(parents=True)
    weights = tmp_path / ".cache" / "clip" / "ViT-B-16.pt"
    weights.write_bytes(b"x")
    assert openai_clip._download(openai_clip._MODELS["ViT-B/16"]) == str(weights)
    with pytest.raises(UserError, match="not a URL of clip._MODELS"):
        openai_clip._download("https://example.com/other.pt")


@pytest.mark.parametrize("name", ["tiny-vit", "toy-clip"])
def test_build_model_then_float_matches_our_encoders(idiom, name, tmp_path):
    """CoOp's load_clip_to_cpu path (build_model -> fp16, then .float() for PREC fp32/amp): the idiom's features
    equal our encoders' on that same model."""
    from clip import clip as openai_clip

    sd = torch.load(openai_clip._download(openai_clip._MODELS[name], root=str(tmp_path)), map_location="cpu")
    model = openai_clip.build_model(sd).float()
    ctx = torch.randn(N_CTX, clip.TextEncoder(model).width, generator=torch.Generator().manual_seed(2)) * 0.02
    with torch.no_grad():
        torch.testing.assert_close(_idiom_text(idiom, model, ctx), _ours_text(model, ctx), atol=1e-5, rtol=0)
