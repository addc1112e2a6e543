"""The calibration baselines end to end: train-time ``--calib mbls|zs_norm|penalty`` through train.py, then post-hoc
``tools/calibrate.py --method ts|dac|ts+dac|sals`` on a base run and its eval-only novel run."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

import train
from tests.helpers import coop_argv, make_image_folder
from tests.test_methods_common import METHODS, build
from tools import calibrate

pytestmark = [pytest.mark.slow, pytest.mark.e2e]  # pytest.ini: the quick tier skips these

OPTS = ("DATASET.NUM_SHOTS", "2", "OPTIM.MAX_EPOCH", "1", "DATALOADER.TRAIN_X.BATCH_SIZE", "4",
        "TRAINER.COOP.PREC", "fp32")



@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("baselines_data"), n_classes=6, per_class=8)


@pytest.mark.parametrize("name", ["mbls", "zs_norm", "penalty"])
def test_train_time_baseline_then_posthoc(name, data_root, tmp_path, capsys):
    base, new = tmp_path / "base", tmp_path / "new"
    assert train.cli(coop_argv(data_root, base, "--calib", name, opts=OPTS + ("DATASET.SUBSAMPLE_CLASSES", "base"))) == 0
    assert train.cli(coop_argv(data_root, new, "--calib", name, "--eval-only", "--model-dir", str(base),
                               opts=OPTS + ("DATASET.SUBSAMPLE_CLASSES", "new"))) == 0
    assert json.loads((base / "results.json").read_text())["run"]["calib"] == name
    log = (base / "log.txt").read_text()
    assert {"mbls": "mbls", "penalty": "penalty", "zs_norm": "loss "}[name] in log
    for method in ("ts", "dac", "ts+dac", "sals"):
        for run in (base, new):
            capsys.readouterr()
            assert calibrate.main([str(run), "--method", method, "--json"]) == 0
            out = json.loads(capsys.readouterr().out)
            before = json.loads((run / "results.json").read_text())["metrics"]
            assert out["metrics"]["accuracy"] == pytest.approx(before["accuracy"])
            assert (run / f"results_{method.replace('+', '_')}.json").exists()


@pytest.mark.parametrize("name", METHODS)
def test_every_method_trains_with_the_zero_shot_baselines(name, data_root, tmp_path):
    """zs_norm and penalty need zero-shot logits of the batch: every method provides them (a frozen pass only for
    methods whose image tower is prompted) and the terms are finite."""
    trainer = build(name, data_root, tmp_path / "t", "--calib", "penalty")
    torch.manual_seed(0)
    image, label = trainer.parse_batch_train(next(iter(trainer.train_loader_x)))
    loss, terms, out = trainer.compute_loss(image, label)
    assert "penalty" in terms and torch.isfinite(loss)
    zs = trainer.zero_shot_logits(image, out)
    assert zs.shape == out.logits.shape
    with torch.no_grad():
        f = torch.nn.functional.normalize(trainer.model.clip.encode_image(image).float(), dim=-1)
    np.testing.assert_allclose(zs.numpy(), (trainer.model.logit_scale * f @ trainer.zs_text_features.t()).numpy(),
                               rtol=1e-4, atol=1e-3)
