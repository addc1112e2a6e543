"""TRAINER.CALIB.FROZEN_TARGET_PREC (docs/faithfulness.md): the paper's code computes the frozen target F0 with a
zero-shot CLIP that stays fp16 whatever PREC says; ``fp16`` reproduces it next to an fp32 model (also on a CPU),
``model`` (the default) keeps F0 in the run's own precision."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import clip
from common.errors import UserError
from dassl.engine import build_trainer
from tests.helpers import coop_argv, make_image_folder
import train
from trainers.templates import zeroshot_text_features


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("f0_data"), n_classes=4, per_class=3)


def build(root, out, *opts):
    argv = coop_argv(root, out, "--calib", opts=("TEST.FEATURE_CACHE", "False", *opts))
    return build_trainer(train.setup_cfg(train.parse_args(argv)))


def by_hand(model, trainer) -> torch.Tensor:
    """F0 written out: the dataset's template per class name, CLIP's own encode_text, L2-normalised."""
    template = trainer.frozen_target_templates()[0]
    names = [c.replace("_", " ") for c in trainer.dm.dataset.classnames]
    with torch.no_grad():
        return F.normalize(model.encode_text(clip.tokenize([template.format(n) for n in names])).float(), dim=-1)


@pytest.fixture(scope="module")
def trainers(data_root, tmp_path_factory):
    torch.set_num_threads(1)
    return {v: build(data_root, tmp_path_factory.mktemp(f"f0_{v}"), *(
        () if v is None else ("TRAINER.CALIB.FROZEN_TARGET_PREC", v))) for v in (None, "fp16", "fp32")}


def test_fp16_target_is_the_fp16_text_tower_next_to_an_fp32_model(trainers):
    t = trainers["fp16"]
    assert t.precision == "fp32" and t.model.clip.text_projection.dtype == torch.float32  # the model is untouched
    # the paper's zero-shot CLIP: OpenAI's fp16 build of the same weights (matrices fp16, LayerNorm in fp32)
    half = clip.load("tiny-vit", precision="fp16")
    assert half.text_projection.dtype == torch.float16
    torch.testing.assert_close(t.zs_text_features, by_hand(half, t), rtol=1e-6, atol=1e-7)  # fp32 eps, not 1e-3
    fp32 = by_hand(clip.load("tiny-vit", precision="fp32"), t)
    rel = ((t.zs_text_features - fp32).norm() / fp32.norm()).item()
    assert 1e-4 < rel < 1e-2  # fp16 rounding through the tower: ~1e-3 relative (measured 8.6e-4 here)


def test_default_and_fp32_target_are_the_fp32_computation(trainers):
    fp32 = by_hand(clip.load("tiny-vit", precision="fp32"), trainers[None])
    assert trainers[None].cfg.TRAINER.CALIB.FROZEN_TARGET_PREC == "model"
    torch.testing.assert_close(trainers[None].zs_text_features, fp32, rtol=1e-6, atol=1e-7)
    assert torch.equal(trainers["fp32"].zs_text_features, trainers[None].zs_text_features)
    # the default path runs the model's own tower, no copy: identical to the call without a precision
    t = trainers[None]
    plain = zeroshot_text_features(t.model.clip, t.dm.dataset.classnames, t.frozen_target_templates())
    assert torch.equal(plain, t.zs_text_features)


def test_fp32_target_next_to_a_low_precision_model():
    """``fp32`` under a low-precision model (TCPT's fp32 ProGrad teacher under PREC fp16): the model's weights
    computed in fp32, i.e. the fp32 model with the low-precision tensors rounded by hand."""
    low = clip.load("tiny-vit", precision="bf16")
    names, templates = ["dog", "cat"], ["a photo of a {}."]
    got = zeroshot_text_features(low, names, templates, precision="fp32")
    rounded = clip.load("tiny-vit", precision="fp32")
    low_params = dict(low.named_parameters())
    with torch.no_grad():
        for n, p in rounded.named_parameters():
            p.copy_(low_params[n].float())  # bf16 matrices -> their rounded values; fp32 tensors unchanged
    assert sum(p.dtype == torch.bfloat16 for p in low_params.values()) > 10
    torch.testing.assert_close(got, zeroshot_text_features(rounded, names, templates), rtol=1e-6, atol=1e-6)
    in_bf16 = zeroshot_text_features(low, names, templates)
    assert (got - in_bf16).norm() > 1e-3  # not the bf16 computation
    assert low.text_projection.dtype == torch.bfloat16  # the model itself stays as it was


def test_unknown_value_is_one_error(data_root, tmp_path):
    with pytest.raises(UserError, match="TRAINER.CALIB.FROZEN_TARGET_PREC must be one of model, fp16, fp32"):
        build(data_root, tmp_path, "TRAINER.CALIB.FROZEN_TARGET_PREC", "half")
