"""docs/adding_a_method.md, executed: a new method defined here, outside trainers/, in a few dozen lines, gets
--calib, every metric, the run record and eval-only on new classes from train.py with no other code."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from torch import nn

import train
from dassl.engine import TRAINER_REGISTRY
from tests.helpers import REPO, coop_argv, make_image_folder
from trainers import PromptModel, PromptOutput, PromptTrainer
from trainers.prompts import TextPrompts


# ---- the whole method -------------------------------------------------------------------------------------------
class ShiftedPromptModel(PromptModel):
    """CoOp-style context plus a learnable shift of the image features, pulled towards zero by its own loss."""

    def __init__(self, cfg, classnames, clip_model, zs_text_features):
        super().__init__(cfg, classnames, clip_model, zs_text_features)
        node = cfg.TRAINER.SHIFTED
        self.prompts = TextPrompts(self.text_encoder, classnames, n_ctx=node.N_CTX)
        self.ctx = nn.Parameter(torch.randn(node.N_CTX, self.text_encoder.width) * 0.02)
        self.shift = nn.Parameter(torch.zeros(self.image_encoder.output_dim))

    def encode_text(self):
        return self.encode_prompts(self.prompts.assemble(self.ctx), self.prompts.eot_idx)

    def forward(self, image=None, label=None, *, prepared=None, image_features=None) -> PromptOutput:
        text = self.prepare() if prepared is None else prepared
        f = self.encode_image(image) if image_features is None else image_features
        f = nn.functional.normalize(f + self.shift, dim=-1)
        losses = {"shift_l2": self.cfg.TRAINER.SHIFTED.W * self.shift.pow(2).sum()} if self.training else {}
        return PromptOutput(self.logit_scale * f @ text.t(), text, f, losses)


@TRAINER_REGISTRY.register()
class Shifted(PromptTrainer):
    model_class = ShiftedPromptModel
    cfg_node = "SHIFTED"
    cfg_defaults = {"N_CTX": 4, "W": 1.0, "PREC": "fp32"}
# -----------------------------------------------------------------------------------------------------------------



def test_new_method_runs_through_train_py_with_calib(tmp_path):
    root = make_image_folder(tmp_path / "data", n_classes=5, per_class=8)
    base, new = tmp_path / "base", tmp_path / "new"
    opts = ("DATASET.NUM_SHOTS", "2", "OPTIM.MAX_EPOCH", "1", "DATALOADER.TRAIN_X.BATCH_SIZE", "4")
    assert train.cli(coop_argv(root, base, "--calib", trainer="Shifted",
                               opts=opts + ("DATASET.SUBSAMPLE_CLASSES", "base"))) == 0
    assert train.cli(coop_argv(root, new, "--calib", "--eval-only", "--model-dir", str(base), trainer="Shifted",
                               opts=opts + ("DATASET.SUBSAMPLE_CLASSES", "new"))) == 0
    log = (base / "log.txt").read_text()
    assert "shift_l2" in log and "margin" in log and "mom" in log  # its own term and --calib's, in the step
    for run in (base, new):
        res = json.loads((run / "results.json").read_text())
        assert res["run"]["trainer"] == "Shifted" and res["run"]["calib"] == "tcpt"
        assert {"accuracy", "ece", "nll", "brier"} <= set(res["metrics"])
    state = torch.load(base / "prompt_learner" / "model.pth.tar-1", map_location="cpu", weights_only=False)
    assert set(state["state_dict"]) == {"ctx", "shift"}
    assert np.load(new / "predictions.npz")["logits"].shape[1] == 2


# ---- docs/adding_a_method.md section 4, executed as written ------------------------------------------------------
DOC = REPO / "docs" / "adding_a_method.md"
_DOC_NS: dict = {}


def doc_examples() -> dict:
    """Run every ```python block marked <!-- tested --> of the doc once (they register their trainers)."""
    if not _DOC_NS:
        text = DOC.read_text()
        blocks = re.findall(r"<!-- tested -->\n```python\n(.*?)```", text, re.S)
        assert len(blocks) == 2, "docs/adding_a_method.md lost a tested example"
        _DOC_NS["__name__"] = "adding_a_method_doc"
        for code in blocks:
            exec(compile(code, str(DOC), "exec"), _DOC_NS)
    return _DOC_NS


def _fp16_on_cpu(monkeypatch):
    """PREC fp16 semantics on the CPU: fp16 CLIP, fp16 learnable parameters (except fp32_params), fp16 kernels."""
    import trainers.base as base

    monkeypatch.setattr(base, "resolve_precision", lambda prec, device: str(prec).lower())


def _zeroshot(root, out, subsample):
    assert train.cli(coop_argv(root, out, "--eval-only", trainer="ZeroshotCLIP",
                               opts=("DATASET.NUM_SHOTS", "2", "DATASET.SUBSAMPLE_CLASSES", subsample))) == 0
    return np.load(out / "predictions.npz")["logits"]


@pytest.mark.parametrize("prec", ["fp32", "fp16"])
@pytest.mark.parametrize("trainer,node", [("ClipAdapter", "ADAPTER"), ("VisualTokens", "VISUALTOKENS")])
def test_doc_examples_train_with_calib_and_record_true_zero_shot_logits(trainer, node, prec, tmp_path, monkeypatch):
    ns = doc_examples()
    if prec == "fp16":
        _fp16_on_cpu(monkeypatch)
    root = make_image_folder(tmp_path / "data", n_classes=5, per_class=8)
    base, new = tmp_path / "base", tmp_path / "new"
    opts = ("DATASET.NUM_SHOTS", "2", "OPTIM.MAX_EPOCH", "1", "DATALOADER.TRAIN_X.BATCH_SIZE", "4",
            f"TRAINER.{node}.PREC", prec)
    assert train.cli(coop_argv(root, base, "--calib", "penalty", trainer=trainer,
                               opts=opts + ("DATASET.SUBSAMPLE_CLASSES", "base"))) == 0
    assert train.cli(coop_argv(root, new, "--eval-only", "--model-dir", str(base), trainer=trainer,
                               opts=opts + ("DATASET.SUBSAMPLE_CLASSES", "new"))) == 0
    assert json.loads((base / "results.json").read_text())["run"]["precision"] == prec
    log = (base / "log.txt").read_text()
    penalty = [float(m) for m in re.findall(r"penalty [\d.e+-]+ \(([\d.e+-]+)\)", log)]
    assert penalty and penalty[-1] > 0  # the zero-shot logits are frozen CLIP's, not the tuned ones
    model_cls = ns[trainer].model_class
    learn = {n: p.dtype for n, p in torch.load(base / "prompt_learner" / "model.pth.tar-1", map_location="cpu",
                                                weights_only=False)["state_dict"].items()}
    want = {n: torch.float32 if (prec == "fp32" or n.startswith(model_cls.fp32_params)) else torch.float16
            for n in learn}
    assert learn == want
    for run, subsample in ((base, "base"), (new, "new")):
        pred = np.load(run / "predictions.npz")
        assert not np.allclose(pred["zs_logits"], pred["logits"])
        if prec == "fp32":  # the recorded zero-shot logits are ZeroshotCLIP's, on the same images
            zs = _zeroshot(root, tmp_path / f"zs_{subsample}", subsample)
            np.testing.assert_allclose(pred["zs_logits"], zs, atol=1e-4)


def test_without_fp32_params_the_adapter_fails_loudly_under_fp16(tmp_path, monkeypatch):
    """What fp32_params is for: the adapter made fp16 meets the fp32 features (the crash the doc prevents)."""
    ns = doc_examples()
    _fp16_on_cpu(monkeypatch)
    monkeypatch.setattr(ns["AdapterModel"], "fp32_params", ())
    root = make_image_folder(tmp_path / "data", n_classes=4, per_class=8)
    opts = ("DATASET.NUM_SHOTS", "2", "OPTIM.MAX_EPOCH", "1", "DATASET.SUBSAMPLE_CLASSES", "base")
    with pytest.raises(RuntimeError, match="dtype"):
        train.cli(coop_argv(root, tmp_path / "x", trainer="ClipAdapter", opts=opts))
