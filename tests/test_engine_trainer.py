"""dassl.engine: a minimal TrainerX subclass trains, checkpoints, resumes, loads and tests."""
import os
import re

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from common.errors import MissingFileError, UserError
from dassl.config import get_cfg_default
from dassl.data.datasets import DATASET_REGISTRY, DatasetBase, Datum
from dassl.engine import TRAINER_REGISTRY, TrainerX, build_trainer
import dassl.evaluation.evaluator as evaluator_module
from dassl.metrics import compute_accuracy
from dassl.optim import build_lr_scheduler, build_optimizer
from dassl.utils import load_checkpoint, save_checkpoint

CLASSES = ("ant", "bee", "cow")


@DATASET_REGISTRY.register()
class EngineTrainerToy(DatasetBase):
    """root/<class>/*.png; train = test = all 9 images, val = 3."""

    def __init__(self, cfg):
        items = []
        for label, name in enumerate(CLASSES):
            for i in range(3):
                items.append(Datum(os.path.join(cfg.DATASET.ROOT, name, f"{i}.png"), label, 0, name))
        super().__init__(train_x=items, val=items[::3], test=items)


@TRAINER_REGISTRY.register()
class EngineTestLinear(TrainerX):
    def check_cfg(self, cfg):
        assert not hasattr(self, "cfg")  # called before self.cfg exists
        self.checked = cfg.TRAINER.NAME

    def build_model(self):
        torch.manual_seed(0)
        self.model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, self.num_classes))
        self.model.register_buffer("token_prefix", torch.zeros(self.num_classes, 2))  # class-count dependent
        self.optim = build_optimizer(self.model, self.cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, self.cfg.OPTIM)
        self.register_model("linear", self.model, self.optim, self.sched)
        self.seen_lrs = []

    def forward_backward(self, batch):
        image, label = self.parse_batch_train(batch)[:2]
        self.seen_lrs.append(self.get_current_lr())
        output = self.model(image)
        loss = F.cross_entropy(output, label)
        self.model_backward_and_update(loss)
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
        return {"loss": loss.item(), "acc": compute_accuracy(output, label)[0].item()}


@pytest.fixture(autouse=True)
def fake_metrics(monkeypatch):
    def fake(logits, labels, n_bins):
        return {"accuracy": 100.0 * float((logits.argmax(1) == labels).mean()), "macro_f1": 50.0, "ece": 1.0}

    monkeypatch.setattr(evaluator_module, "_compute_metrics", fake)


@pytest.fixture
def data_root(tmp_path):
    rng = np.random.default_rng(0)
    for name in CLASSES:
        os.makedirs(tmp_path / "data" / name)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "data" / name / f"{i}.png")
    return tmp_path


def make_cfg(root, max_epoch=2, **test):
    cfg = get_cfg_default()
    cfg.DATASET.ROOT = str(root / "data")
    cfg.DATASET.NAME = "EngineTrainerToy"
    cfg.OUTPUT_DIR = str(root / "out")
    cfg.TRAINER.NAME = "EngineTestLinear"
    cfg.USE_CUDA = False
    cfg.INPUT.SIZE = (8, 8)
    cfg.INPUT.TRANSFORMS = ("normalize",)
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.DATALOADER.TRAIN_X.BATCH_SIZE = 4  # 9 images -> 2 batches (drop_last)
    cfg.DATALOADER.TEST.BATCH_SIZE = 4
    o = cfg.OPTIM
    o.NAME, o.LR, o.MAX_EPOCH, o.LR_SCHEDULER = "sgd", 0.1, max_epoch, "cosine"
    o.WARMUP_EPOCH, o.WARMUP_TYPE, o.WARMUP_CONS_LR = 1, "constant", 1e-5
    cfg.TRAIN.PRINT_FREQ = 5
    for k, v in test.items():
        setattr(cfg.TEST, k, v)
    return cfg


TRAIN_LINE = re.compile(r"^epoch \[(\d+)/(\d+)\] batch \[(\d+)/(\d+)\] time [\d.]+ \([\d.]+\) data [\d.]+ \([\d.]+\) "
                        r"loss [\d.]+ \([\d.]+\) acc [\d.]+ \([\d.]+\) lr (\d\.\d{4}e-\d\d) eta \d+:\d\d:\d\d$")


def test_train_save_resume_load(data_root, capsys):
    trainer = build_trainer(make_cfg(data_root))
    assert trainer.checked == "EngineTestLinear" and trainer.num_classes == 3
    trainer.train()
    out = capsys.readouterr().out
    lines = out.splitlines()

    train_lines = [TRAIN_LINE.match(line) for line in lines if line.startswith("epoch [")]
    assert len(train_lines) == 4 and all(train_lines)  # 2 epochs x 2 batches, fewer batches than PRINT_FREQ
    # as in Dassl the line is printed after forward_backward, so an epoch's last line shows the next lr
    assert [m.group(5) for m in train_lines] == ["1.0000e-05", "1.0000e-01", "1.0000e-01", "5.0000e-02"]
    assert trainer.seen_lrs == pytest.approx([1e-5, 1e-5, 0.1, 0.1])
    tail = [line for line in lines if line in ("Finish training", "Finished training", "Deploy the last-epoch model",
                                              "Evaluate on the *test* set", "=> result")]
    assert tail == ["Finish training", "Finished training", "Deploy the last-epoch model",
                    "Evaluate on the *test* set", "=> result"]
    assert re.match(r"^Elapsed: \d+:\d\d:\d\d$", lines[-1])

    folder = data_root / "out" / "linear"
    assert sorted(os.listdir(folder)) == ["checkpoint", "model.pth.tar-2"]  # CHECKPOINT_FREQ 0: last only
    ckpt = load_checkpoint(str(folder / "model.pth.tar-2"))
    assert ckpt["epoch"] == 2 and ckpt["val_result"] is None
    assert torch.equal(ckpt["state_dict"]["1.weight"], trainer.model[1].weight.detach())
    saved_weight = trainer.model[1].weight.detach().clone()

    # a 3-epoch run killed after epoch 2 resumes at epoch 3 on the live schedule
    cfg3 = make_cfg(data_root, max_epoch=3)
    cfg3.OUTPUT_DIR = str(data_root / "out3")
    cfg3.TRAIN.CHECKPOINT_FREQ = 1
    killed = build_trainer(cfg3)

    def die():
        if killed.epoch == 2:
            raise KeyboardInterrupt

    killed.before_epoch = die
    with pytest.raises(KeyboardInterrupt):
        killed.train()
    resumed = build_trainer(cfg3)
    resumed.train()
    out = capsys.readouterr().out
    assert "Found checkpoint" in out and "Previous epoch: 2" in out
    assert killed.seen_lrs + resumed.seen_lrs == pytest.approx([1e-5] * 2 + [0.1] * 2 + [0.075] * 2)
    resumed_lines = [line for line in out.split("Previous epoch: 2", 1)[1].splitlines() if line.startswith("epoch [")]
    assert len(resumed_lines) == 2 and all(line.startswith("epoch [3/3]") for line in resumed_lines)

    # re-running a finished run (start_epoch == max_epoch) only tests
    again = build_trainer(make_cfg(data_root, max_epoch=2))
    again.cfg.defrost()
    again.cfg.RESUME = str(data_root / "out")
    again.train()
    out = capsys.readouterr().out
    assert again.seen_lrs == [] and "Finish training" in out and "=> result" in out

    # eval-only: load_model with val_result None, class buffers of another shape are dropped
    ckpt["state_dict"]["token_prefix"] = torch.ones(5, 2)
    save_checkpoint(ckpt, str(data_root / "base_run" / "linear"), model_name="model.pth.tar-2")
    fresh = build_trainer(make_cfg(data_root))
    fresh.load_model(str(data_root / "base_run"), epoch=2)
    out = capsys.readouterr().out
    assert "(epoch=2)" in out and "val_result" not in out
    assert torch.equal(fresh.model[1].weight, saved_weight) and torch.equal(fresh.model.token_prefix,
                                                                            torch.zeros(3, 2))
    acc = fresh.test()
    assert acc == pytest.approx(100.0 * np.mean(fresh.evaluator.logits.argmax(1) == fresh.evaluator.labels))
    assert not fresh.model.training  # set_model_mode("eval") on the registered module
    with pytest.raises(MissingFileError, match="--load-epoch"):
        fresh.load_model(str(data_root / "base_run"))  # no model-best
    fresh.load_model("")
    assert "skipped" in capsys.readouterr().out


def test_best_val_and_checkpoint_freq(data_root, capsys):
    trainer = build_trainer(make_cfg(data_root, FINAL_MODEL="best_val"))
    trainer.cfg.defrost()
    trainer.cfg.TRAIN.CHECKPOINT_FREQ = 1
    trainer.cfg.TRAIN.PROGRESS_BAR = True  # tqdm on stderr; stdout lines unchanged
    trainer.train()
    out = capsys.readouterr().out
    assert sorted(os.listdir(data_root / "out" / "linear")) == [
        "checkpoint", "model-best.pth.tar", "model.pth.tar-1", "model.pth.tar-2"]
    assert out.count("Evaluate on the *val* set") == 2
    assert "Deploy the model with the best val performance" in out
    assert len([line for line in out.splitlines() if TRAIN_LINE.match(line)]) == 4
    assert re.search(r"model-best\.pth\.tar to linear \(epoch=\d, val_result=\d+\.\d\)", out)


def test_anomaly_and_unknown_trainer(data_root):
    trainer = build_trainer(make_cfg(data_root))
    with pytest.raises(FloatingPointError, match="infinite or NaN"):
        trainer.model_backward(torch.tensor(float("nan"), requires_grad=True))
    with pytest.raises(AssertionError):
        trainer.register_model("linear", trainer.model)
    assert trainer.get_model_names("linear") == ["linear"]
    cfg = make_cfg(data_root)
    cfg.TRAINER.NAME = "EngineTestLiner"
    with pytest.raises(UserError, match='Did you mean "EngineTestLinear"'):
        build_trainer(cfg)
