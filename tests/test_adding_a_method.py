"""docs/adding_a_method.md, executed: a new method defined here, outside trainers/, in a few dozen lines, gets
--calib, every metric, the run record and eval-only on new classes from train.py with no other code."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import train
from dassl.engine import TRAINER_REGISTRY
from tests.helpers import coop_argv, make_image_folder
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
    root = make_image_folder(tmp_path / "data", n_classes=4, per_class=8)
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
