"""toy-clip: the shipped checkpoint loads through clip.load as a normal open_clip CLIP and transfers zero-shot to
the Toy classes prompt tuning never sees; the checkpoint format round-trips; the pre-training shortcuts are exact."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from open_clip.model import CLIP

import clip
from toy import backbone, data, world
from toy.pretrain import (CompactTokenEmbedding, PretrainConfig, _param_groups, caption_vocabulary, draw_pool,
                          encode_text_prefix, normalise, pretrain)
from toy.zeroshot import clip_transform, zeroshot_accuracy

CHANCE = 100.0 / 24  # each half is a 24-way problem
# The shipped model scores 57.3 % (new) and 66.0 % (base) on the full Toy test split, whose faded colours
# (toy.data.SATURATION) pre-training never saw. 45 % (over 10x chance) leaves room for sampling (10 images per
# class here) and for library drift, and still fails a model that learned only colours or transfers nothing.
MIN_NEW = 45.0
MIN_BASE = 45.0


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    return clip.load("toy-clip")


@pytest.fixture(scope="module")
def test_split(tmp_path_factory):
    """The first 10 test images of every class: the same files as in the full Toy tree (per-image seeds)."""
    counts = data.COUNTS
    data.COUNTS = {"train": 1, "val": 1, "test": 10}
    try:
        root = tmp_path_factory.mktemp("toy")
        split = json.loads(data.generate(root, progress=False).read_text())
    finally:
        data.COUNTS = counts
    return root / data.IMAGE_DIR, split["test"]


def test_loads_as_a_normal_clip(model):
    assert isinstance(model, CLIP) and not model.training
    assert tuple(model.visual.image_size) == (224, 224)
    assert model.token_embedding.num_embeddings == 49408 and model.positional_embedding.shape[0] == 77
    with torch.no_grad():
        text = model.encode_text(clip.tokenize(["a photo of a red circle.", "itap of a dotted blue star."]))
        image = model.encode_image(torch.zeros(1, 3, 224, 224))
    assert text.shape == (2, backbone.EMBED_DIM) and image.shape == (1, backbone.EMBED_DIM)
    assert 1.0 < model.logit_scale.exp().item() <= 100.0 + 1e-3


def test_checkpoint_is_small_and_half_precision():
    assert backbone.CHECKPOINT.stat().st_size < 10 * 2 ** 20
    ckpt = backbone.read_checkpoint()
    assert ckpt["token_rows"].dtype == torch.float16 and len(ckpt["token_ids"]) < 200
    assert ckpt["meta"]["config"] == vars(PretrainConfig())  # the tool's defaults reproduce it


def test_loads_in_fp16(model):
    half = clip.load("toy-clip", precision="fp16")
    assert half.visual.conv1.weight.dtype == torch.float16
    assert torch.equal(half.token_embedding.weight, model.token_embedding.weight)  # embeddings stay fp32


@pytest.mark.parametrize("half, minimum", [("new", MIN_NEW), ("base", MIN_BASE)])
def test_zero_shot_far_above_chance(model, test_split, half, minimum):
    """The single template on the Toy test split, each half relabelled 0..23 as base-to-novel does."""
    image_dir, test = test_split
    lo = 0 if half == "base" else world.NUM_BASE
    names = world.classnames()[lo:lo + 24]
    items = [(rel, label - lo) for rel, label, _ in test if lo <= label < lo + 24]
    assert len(items) == 240
    acc = zeroshot_accuracy(model, items, names, root=str(image_dir))
    assert acc > minimum > 10 * CHANCE


def test_prefix_text_pass_equals_the_full_pass(model):
    ids = clip.tokenize(["a.", "a photo of the small checkered purple hexagon.", "art of the red cross."])
    with torch.no_grad():
        assert torch.allclose(encode_text_prefix(model, ids), model.encode_text(ids), atol=1e-5)


def test_pool_images_are_what_the_test_transform_feeds():
    """The pool stores drawings after the transform's PIL resize; normalising a batch of them reproduces the
    pipeline's test transform of the same drawings (pre-training sees the pixels prompt tuning sees)."""
    pool, _ = draw_pool(1, np.random.default_rng(3), progress=False)
    rng = np.random.default_rng(3)
    ref = torch.stack([clip_transform()(world.render(c, rng)[0]) for c in world.WORLD[:5]])
    assert pool.dtype == torch.uint8 and pool.shape == (len(world.WORLD), 3, 224, 224)
    assert torch.allclose(normalise(pool[:5]), ref, atol=1e-5)


def test_caption_vocabulary_covers_every_caption():
    vocab = set(caption_vocabulary().tolist())
    rng = np.random.default_rng(0)
    captions = [world.caption(world.WORLD[rng.integers(len(world.WORLD))], world.Scene(size, bg), rng)
                for size in world.SIZES for bg in world.BACKGROUNDS for _ in range(200)]
    assert set(clip.tokenize(captions).unique().tolist()) <= vocab
    assert len(vocab) < 60  # the point: a few dozen rows instead of 49,408


def test_compact_token_embedding_is_the_same_optimisation():
    """AdamW on the caption rows alone moves the embedding exactly as AdamW on the full table (rows without a
    gradient and without weight decay never move), and a token outside the vocabulary is an error, not a zero."""
    ids = clip.tokenize(["a photo of a red circle.", "itap of the striped blue star.", "a plain green cross."])
    trained = []
    for compact in (False, True):
        model = backbone.build_architecture(0)
        full = model.token_embedding
        if compact:
            model.token_embedding = CompactTokenEmbedding(full, caption_vocabulary())
        opt = torch.optim.AdamW(_param_groups(model, 0.1), lr=1e-2)
        for _ in range(3):
            opt.zero_grad()
            encode_text_prefix(model, ids).pow(2).sum().backward()
            opt.step()
        if compact:
            model.token_embedding.write_back(full)
        trained.append(full.weight.detach())
    assert torch.allclose(trained[0], trained[1], atol=1e-6)
    assert not torch.equal(trained[0], backbone.build_architecture(0).token_embedding.weight)
    with pytest.raises(RuntimeError, match="caption_vocabulary"):
        CompactTokenEmbedding(full, caption_vocabulary())(clip.tokenize(["a photo of a zebra."]))


@pytest.mark.slow
def test_checkpoint_round_trip(tmp_path):
    """Two tiny steps: the saved form rebuilds the trained model (fp16 matrices) and its untouched token rows."""
    model, ckpt = pretrain(PretrainConfig(steps=2, batch_size=8, warmup=1, per_class=1, eval_per_class=1),
                           progress=False)
    backbone.save_checkpoint(ckpt, tmp_path / "t.pt")
    loaded = backbone.load_toy_clip(tmp_path / "t.pt")
    init = backbone.build_architecture(0)
    ids = ckpt["token_ids"].long()
    untouched = torch.ones(49408, dtype=torch.bool)
    untouched[ids] = False
    assert torch.equal(loaded.token_embedding.weight[untouched], init.token_embedding.weight[untouched])
    assert torch.equal(model.token_embedding.weight[untouched], init.token_embedding.weight[untouched])
    for name, p in model.state_dict().items():
        assert torch.allclose(loaded.state_dict()[name], p, atol=2e-3, rtol=1e-2), name
    assert set(ckpt["meta"]["zero_shot_accuracy"]) == {"base", "new", "all"}


def test_missing_or_foreign_checkpoint_is_a_user_error(tmp_path):
    from common.errors import UserError

    with pytest.raises(UserError, match="pretrain_toy_clip.py"):
        backbone.read_checkpoint(tmp_path / "absent.pt")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="not a toy-clip/1 checkpoint"):
        backbone.read_checkpoint(tmp_path / "other.pt")


@pytest.mark.slow
def test_pretraining_is_deterministic_and_restores_the_thread_count():
    cfg = PretrainConfig(steps=2, batch_size=8, warmup=1, per_class=1, eval_per_class=1)
    threads = torch.get_num_threads()
    first, second = (pretrain(cfg, progress=False)[1] for _ in range(2))
    assert torch.get_num_threads() == threads
    assert torch.equal(first["token_ids"], second["token_ids"])
    assert torch.equal(first["token_rows"], second["token_rows"])
    for name, tensor in first["state_dict"].items():
        assert torch.equal(tensor, second["state_dict"][name]), name


def test_pretrain_tool_shows_and_writes_the_record(tmp_path, capsys):
    from tools import pretrain_toy_clip

    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{pretrain_toy_clip.BEGIN}\nstale\n{pretrain_toy_clip.END}\nrest\n")
    assert pretrain_toy_clip.main(["--show", "--readme", str(readme)]) == 0
    meta = backbone.read_checkpoint()["meta"]
    body = readme.read_text()
    assert "stale" not in body and body.startswith("intro\n") and body.endswith("rest\n")
    assert f"{meta['train_seconds']:,.0f} s" in body and f"{meta['zero_shot_accuracy']['new']:.1f}" in body
    assert "toy/assets/toy_clip.pt" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--batch-size", "193"], "--batch-size must be at most 192"),
    (["--threads", "0"], "--threads must be at least 1"),
    (["--per-class", "0"], "--per-class must be at least 1"),
])
def test_pretrain_tool_rejects_impossible_settings_in_one_line(argv, message, capsys):
    from tools import pretrain_toy_clip

    with pytest.raises(SystemExit) as exit_info:
        pretrain_toy_clip.main(argv + ["--out", "unused.pt"])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
