"""Bounded memory for many classes: at evaluation the text encoder sees at most TEST.TEXT_CHUNK prompts at a time
(docs/performance_text_chunk.md), and chunking does not change the text features."""
from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import clip
import train
from dassl.engine import TRAINER_REGISTRY
from trainers.coop import CoOpModel

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]


def model_cfg(method: str, chunk: int):
    files = sorted((REPO / "configs" / "trainers" / method).glob("vit_b16*.yaml"), key=lambda p: len(p.name))
    argv = ["--trainer", method, "--backbone", "tiny-vit", *(["--config-file", str(files[0])] if files else []),
            "TEST.TEXT_CHUNK", str(chunk)]
    return train.setup_cfg(train.parse_args(argv))


@contextlib.contextmanager
def text_batches(model):
    sizes = []
    handle = model.text_encoder.register_forward_hook(lambda m, inputs, out: sizes.append(inputs[0].shape[0]))
    try:
        yield sizes
    finally:
        handle.remove()


@pytest.fixture(scope="module")
def coop_1000():
    names = [f"thing number {i}" for i in range(1000)]
    with contextlib.redirect_stdout(io.StringIO()):
        model = CoOpModel(model_cfg("CoOp", 256), names, clip.load("tiny-vit"), torch.zeros(1000, 64))
    return model.eval()


def test_1000_classes_are_encoded_in_chunks_with_the_same_features(coop_1000):
    model = coop_1000
    assert model.text_chunk == 256  # read from TEST.TEXT_CHUNK
    with torch.no_grad(), text_batches(model) as sizes:
        chunked = model.prepare()
    assert sizes == [256, 256, 256, 232]
    model.text_chunk = 0  # off: one call over every class
    try:
        with torch.no_grad(), text_batches(model) as sizes:
            whole = model.prepare()
    finally:
        model.text_chunk = 256
    assert sizes == [1000]
    assert chunked.shape == (1000, 64)
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(chunked.norm(dim=-1), torch.ones(1000))


def test_training_encodes_every_class_at_once(coop_1000):
    """The training step needs one graph over all classes (the loss couples them), so it is never chunked."""
    names = [f"thing {i}" for i in range(40)]
    with contextlib.redirect_stdout(io.StringIO()):
        model = CoOpModel(model_cfg("CoOp", 16), names, clip.load("tiny-vit"), torch.zeros(40, 64)).train()
    with text_batches(model) as sizes:
        model.prepare()
    assert sizes == [40]


TEXT_METHODS = ["CoOp", "CoCoOp", "KgCoOp", "ProGrad", "IVLP", "MaPLe", "PromptSRC"]


@pytest.mark.parametrize("method", TEXT_METHODS)
def test_every_text_prompt_method_respects_the_chunk(method):
    """Each registered method's evaluation-time text side calls the encoder with <= TEXT_CHUNK prompts."""
    if method not in TRAINER_REGISTRY.registered_names():
        pytest.skip(f"{method} is not registered")
    n, chunk = 40, 16
    names = [f"thing {i}" for i in range(n)]
    zs = F.normalize(torch.randn(n, 64, generator=torch.Generator().manual_seed(0)), dim=-1)
    with contextlib.redirect_stdout(io.StringIO()):
        model = TRAINER_REGISTRY.get(method).model_class(model_cfg(method, chunk), names, clip.load("tiny-vit"), zs)
    model.eval()
    with torch.no_grad(), text_batches(model) as sizes:
        if getattr(model, "text_per_image", False):  # CoCoOp: text features per image, groups of images
            model(torch.zeros(2, 3, 224, 224))
        else:
            model.prepare()
    assert sizes and max(sizes) <= chunk
    assert sum(sizes) % n == 0  # every class encoded (once per image / prompt set)


def test_cocoop_logits_are_the_same_at_every_chunk():
    """TEST.TEXT_CHUNK only splits the evaluation's text-encoder calls (CoCoOp: groups of chunk // C images, or
    one image's classes split when C > chunk): the logits are the same at every chunk size."""
    n = 8
    names = [f"thing {i}" for i in range(n)]
    zs = F.normalize(torch.randn(n, 64, generator=torch.Generator().manual_seed(0)), dim=-1)
    with contextlib.redirect_stdout(io.StringIO()):
        model = TRAINER_REGISTRY.get("CoCoOp").model_class(model_cfg("CoCoOp", 0), names, clip.load("tiny-vit"), zs)
    model.eval()
    feats = F.normalize(torch.randn(5, 64, generator=torch.Generator().manual_seed(1)), dim=-1)
    with torch.no_grad():
        whole = model(image_features=feats).logits
        for chunk in (1, 3, n, 2 * n + 1, 3 * n, 5 * n, 1000):
            model.text_chunk = chunk
            with text_batches(model) as sizes:
                got = model(image_features=feats).logits
            assert max(sizes) <= chunk and sum(sizes) == 5 * n
            torch.testing.assert_close(got, whole, rtol=1e-5, atol=1e-5)


def test_default_chunk_is_chosen_by_device(monkeypatch):
    from trainers.base import TEXT_CHUNK_DEFAULTS, resolve_text_chunk

    cfg = model_cfg("CoCoOp", -1)
    assert train.setup_cfg(train.parse_args([])).TEST.TEXT_CHUNK == -1  # the default: by device
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_text_chunk(cfg) == TEXT_CHUNK_DEFAULTS["cpu"] == 50
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_text_chunk(cfg) == TEXT_CHUNK_DEFAULTS["cuda"] == 256
    cfg.defrost()
    cfg.USE_CUDA = False  # the trainer will run on the CPU
    assert resolve_text_chunk(cfg) == 50
    assert resolve_text_chunk(model_cfg("CoCoOp", 0)) == 0 and resolve_text_chunk(model_cfg("CoCoOp", 7)) == 7
