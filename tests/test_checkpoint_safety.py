"""Opening a checkpoint never runs code from it (weights_only=True with an allow-list), and the checkpoints this
engine and Dassl write keep loading."""
from __future__ import annotations

import pytest
import torch

from dassl.optim import build_lr_scheduler
from dassl.utils import load_checkpoint, save_checkpoint
from dassl.utils.torchtools import TRUST_ENV, UnsafeCheckpointError, last_checkpoint, prune_checkpoints


class Payload:
    """Unpickling calls ``open(path, "w")``: the file appears only if the loader ran code from the checkpoint."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_crafted_checkpoint_runs_no_code(tmp_path, monkeypatch):
    monkeypatch.delenv(TRUST_ENV, raising=False)
    marker = tmp_path / "pwned"
    path = tmp_path / "model.pth.tar-1"
    torch.save({"state_dict": {"ctx": torch.zeros(2)}, "epoch": 1, "meta": Payload(marker)}, path)
    with pytest.raises(UnsafeCheckpointError, match=TRUST_ENV) as err:
        load_checkpoint(str(path))
    assert not marker.exists()
    assert "could run code" in str(err.value) and "open" in str(err.value) and str(path) in str(err.value)
    # the explicit opt-in unpickles it (and so runs the payload): that is what the opt-in means
    monkeypatch.setenv(TRUST_ENV, "1")
    load_checkpoint(str(path))
    assert marker.exists()


def test_dassl_format_checkpoint_loads(tmp_path, monkeypatch):
    """Dassl's save_model: state_dict (an OrderedDict of every tensor), epoch, optimizer, and the scheduler's
    ``__dict__`` with the pickled successor object (and its optimizer), as the CoOp family's released prompts."""
    monkeypatch.delenv(TRUST_ENV, raising=False)
    from yacs.config import CfgNode as CN

    o = CN({"NAME": "sgd", "LR": 0.002, "WEIGHT_DECAY": 5e-4, "MOMENTUM": 0.9, "SGD_DAMPNING": 0.0,
            "SGD_NESTEROV": False, "RMSPROP_ALPHA": 0.99, "ADAM_BETA1": 0.9, "ADAM_BETA2": 0.999,
            "STAGED_LR": False, "NEW_LAYERS": (), "BASE_LR_MULT": 0.1, "LR_SCHEDULER": "cosine", "STEPSIZE": (-1,),
            "GAMMA": 0.1, "MAX_EPOCH": 50, "WARMUP_EPOCH": 1, "WARMUP_TYPE": "constant", "WARMUP_CONS_LR": 1e-5,
            "WARMUP_MIN_LR": 1e-5, "WARMUP_RECOUNT": True})
    model = torch.nn.Sequential(torch.nn.Linear(4, 3))
    optim = torch.optim.SGD(model.parameters(), lr=0.002, momentum=0.9)
    sched = build_lr_scheduler(optim, o)
    model(torch.randn(2, 4)).sum().backward()
    optim.step()
    sched.step()
    dassl_sched = {k: v for k, v in sched.__dict__.items() if k != "optimizer"}  # Dassl's state_dict()
    folder = tmp_path / "prompt_learner"
    folder.mkdir()
    torch.save({"state_dict": model.state_dict(), "epoch": 50, "optimizer": optim.state_dict(),
                "scheduler": dassl_sched, "val_result": None}, folder / "model.pth.tar-50")
    (folder / "checkpoint").write_text("model.pth.tar-50\n")
    ckpt = load_checkpoint(last_checkpoint(str(folder)))
    assert ckpt["epoch"] == 50 and torch.equal(ckpt["state_dict"]["0.weight"], model[0].weight)
    assert isinstance(ckpt["scheduler"]["successor"], torch.optim.lr_scheduler.CosineAnnealingLR)


def test_prune_keeps_last_and_frequency(tmp_path):
    for e in range(1, 6):
        save_checkpoint({"state_dict": {"w": torch.ones(1)}, "epoch": e}, str(tmp_path))
        prune_checkpoints(str(tmp_path), f"model.pth.tar-{e}", 2)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["checkpoint", "model.pth.tar-2", "model.pth.tar-4", "model.pth.tar-5"]
    assert last_checkpoint(str(tmp_path)) == str(tmp_path / "model.pth.tar-5")


def test_dassl_format_prompts_evaluate_through_train_py(tmp_path, monkeypatch):
    """A CoOp-family release (``prompt_learner/model.pth.tar-50``: Dassl's dict, with the class-dependent token
    buffers and the pickled scheduler successor) evaluates with the built-in CoOp, as our own checkpoint does."""
    import collections
    import sys

    import numpy as np

    import train
    from tests.helpers import coop_argv, make_image_folder

    monkeypatch.delenv(TRUST_ENV, raising=False)

    def cli(*args):
        saved = sys.stdout
        try:
            return train.cli([str(a) for a in args])
        finally:
            sys.stdout = saved

    root = make_image_folder(tmp_path / "data", n_classes=4, per_class=8, size=16)
    opts = ("DATASET.NUM_SHOTS", "2", "OPTIM.MAX_EPOCH", "1", "USE_CUDA", "False")
    ours = tmp_path / "ours"
    assert cli(*coop_argv(root, ours, opts=opts + ("DATASET.SUBSAMPLE_CLASSES", "base"))) == 0
    ctx = load_checkpoint(str(ours / "prompt_learner" / "model.pth.tar-1"))["state_dict"]["ctx"]

    param = torch.nn.Parameter(ctx.clone())
    optim = torch.optim.SGD([param], lr=0.002, momentum=0.9)
    param.grad = torch.ones_like(param)
    optim.step()
    successor = torch.optim.lr_scheduler.CosineAnnealingLR(optim, 50)
    dassl = {"state_dict": collections.OrderedDict(ctx=ctx, token_prefix=torch.zeros(2, 1, ctx.shape[1]),
                                                   token_suffix=torch.zeros(2, 60, ctx.shape[1])),
             "epoch": 50, "optimizer": optim.state_dict(), "val_result": None,
             "scheduler": {"successor": successor, "warmup_epoch": 1, "cons_lr": 1e-5, "base_lrs": [0.002],
                           "last_epoch": 50, "_step_count": 51}}
    release = tmp_path / "release" / "prompt_learner"
    release.mkdir(parents=True)
    torch.save(dassl, release / "model.pth.tar-50")
    (release / "checkpoint").write_text("model.pth.tar-50\n")

    new = ("DATASET.SUBSAMPLE_CLASSES", "new")
    assert cli(*coop_argv(root, tmp_path / "a", "--eval-only", "--model-dir", ours, "--load-epoch", 1,
                          opts=opts + new)) == 0
    assert cli(*coop_argv(root, tmp_path / "b", "--eval-only", "--model-dir", release.parent, "--load-epoch", 50,
                          opts=opts + new)) == 0
    a, b = np.load(tmp_path / "a" / "predictions.npz"), np.load(tmp_path / "b" / "predictions.npz")
    assert np.array_equal(a["logits"], b["logits"])
