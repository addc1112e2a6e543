"""Parameters that belong to classes (issue 24, item 1): rows are mapped by class name when prompts load onto
another class set, unseen classes get the method's declared rule, and base/new with unequal class counts never
falls back to position or blames N_CTX."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import train
from dassl.engine import TRAINER_REGISTRY
from tests.helpers import coop_argv, make_image_folder
from trainers import PromptModel, PromptTrainer


class ResidualModel(PromptModel):
    """TaskRes-style: a learnable residual per class on the frozen zero-shot classifier (docs/adding_a_method.md)."""

    def __init__(self, cfg, classnames, clip_model, zs_text_features):
        super().__init__(cfg, classnames, clip_model, zs_text_features)
        self.residual = nn.Parameter(torch.zeros(zs_text_features.shape, dtype=torch.float32))

    def class_specific(self):
        return {"residual": "zero"}  # a class without a learned residual is zero-shot

    def encode_text(self):
        return F.normalize(self.zs_text_features + self.cfg.TRAINER.RESIDUALX.ALPHA * self.residual, dim=-1)


@TRAINER_REGISTRY.register()
class ResidualX(PromptTrainer):
    model_class = ResidualModel
    cfg_node = "RESIDUALX"
    cfg_defaults = {"ALPHA": 0.5, "PREC": "fp32"}


class UndeclaredModel(ResidualModel):
    def class_specific(self):
        return {}  # forgot to declare: loading onto another class count must say so, not blame N_CTX


@TRAINER_REGISTRY.register()
class UndeclaredX(ResidualX):
    model_class = UndeclaredModel


OPTS = ("DATASET.NUM_SHOTS", "2", "OPTIM.MAX_EPOCH", "1", "OPTIM.LR", "0.5", "DATALOADER.TRAIN_X.BATCH_SIZE", "4",
        "USE_CUDA", "False")


def cli(root, out, *extra, trainer, subsample, opts=()):
    return train.cli([str(a) for a in coop_argv(root, out, *extra, trainer=trainer,
                                                opts=OPTS + ("DATASET.SUBSAMPLE_CLASSES", subsample) + opts)])


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("data"), n_classes=5, per_class=8)  # 3 base, 2 new


@pytest.fixture(scope="module")
def base(root, tmp_path_factory):
    out = tmp_path_factory.mktemp("base")
    assert cli(root, out, trainer="ResidualX", subsample="base") == 0
    return out


def test_rows_map_by_class_name_and_unseen_classes_are_zero(root, base):
    ckpt = torch.load(base / "prompt_learner" / "model.pth.tar-1", weights_only=True)
    saved, rows = ckpt["meta"]["classnames"], ckpt["state_dict"]["residual"]
    assert rows.abs().sum() > 0  # training moved it
    cfg = train.setup_cfg(train.parse_args([str(a) for a in coop_argv(
        root, base / "probe", trainer="ResidualX", opts=OPTS + ("DATASET.SUBSAMPLE_CLASSES", "all"))]))
    from dassl.engine import build_trainer

    trainer = build_trainer(cfg)
    trainer.load_model(str(base), epoch=1)
    current = list(trainer.dm.dataset.classnames)
    assert len(current) == 5 and set(saved) < set(current)
    for i, name in enumerate(current):
        expected = rows[saved.index(name)] if name in saved else torch.zeros_like(rows[0])
        assert torch.equal(trainer.model.residual[i].detach(), expected), name


def test_new_classes_are_zero_shot(root, base, tmp_path):
    new = tmp_path / "new"
    assert cli(root, new, "--eval-only", "--model-dir", base, "--load-epoch", 1, trainer="ResidualX",
               subsample="new") == 0
    pred = np.load(new / "predictions.npz")
    assert pred["logits"].shape[1] == 2
    np.testing.assert_allclose(pred["logits"], pred["zs_logits"], rtol=0, atol=1e-4)


def test_undeclared_rows_name_the_class_count_not_n_ctx(root, tmp_path, capsys):
    base = tmp_path / "base"
    assert cli(root, base, trainer="UndeclaredX", subsample="base") == 0
    capsys.readouterr()
    rc = cli(root, tmp_path / "new", "--eval-only", "--model-dir", base, "--load-epoch", 1, trainer="UndeclaredX",
             subsample="new")
    err = capsys.readouterr().err
    assert rc == 1 and "one row per class" in err and "class_specific" in err
    assert "N_CTX" not in err and "depth" not in err


def test_coop_csc_refuses_unseen_classes(root, tmp_path, capsys):
    base = tmp_path / "base"
    csc = ("TRAINER.COOP.CSC", "True")
    assert cli(root, base, trainer="CoOp", subsample="base", opts=csc) == 0
    capsys.readouterr()
    rc = cli(root, tmp_path / "new", "--eval-only", "--model-dir", base, "--load-epoch", 1, trainer="CoOp",
             subsample="new", opts=csc)
    err = capsys.readouterr().err
    assert rc == 1 and "CSC True" in err and "cannot evaluate classes it was not trained on" in err
    assert "N_CTX" not in err
    # its own classes evaluate (rows mapped by name, here in the same order)
    assert cli(root, tmp_path / "again", "--eval-only", "--model-dir", base, "--load-epoch", 1, trainer="CoOp",
               subsample="base", opts=csc) == 0


def test_engine_default_load_says_when_per_class_rows_load_by_position(capsys):
    """A ported (non-PromptTrainer) trainer loads with Dassl's rule: rows of another class set are named, and a
    class-count mismatch is one UserError rather than torch's traceback."""
    from types import SimpleNamespace

    from dassl.engine.trainer import TrainerBase
    from common.errors import UserError

    trainer = TrainerBase()
    trainer.register_model("head", nn.Linear(2, 3))
    trainer.dm = SimpleNamespace(dataset=SimpleNamespace(classnames=["d", "e", "f"]))
    same_count = {"state_dict": {"weight": torch.zeros(3, 2), "bias": torch.zeros(3)},
                  "meta": {"classnames": ["a", "b", "c"]}}
    trainer.load_state("head", same_count, "ckpt")
    assert "['weight'] have one row per trained class; they load by position" in capsys.readouterr().out
    other_count = {"state_dict": {"weight": torch.zeros(4, 2)}, "meta": {"classnames": list("abcd")}}
    with pytest.raises(UserError, match='"ckpt" does not fit model head'):
        trainer.load_state("head", other_count, "ckpt")
