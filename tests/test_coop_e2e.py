"""The walking skeleton end to end: CoOp on tiny-vit on a generated folder dataset, base training then eval-only
on the new classes, with and without --calib; the invariants of prompt tuning; the run record."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import train
from tests.helpers import coop_argv, make_image_folder, run_train

pytestmark = [pytest.mark.slow, pytest.mark.e2e]  # pytest.ini: the quick tier skips these



@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("imagefolder"))


BASE_OPTS = ("DATASET.NUM_SHOTS", "4", "DATASET.SUBSAMPLE_CLASSES", "base", "OPTIM.MAX_EPOCH", "2")


@pytest.fixture(scope="module")
def base_runs(data_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    dirs = {}
    for variant, extra in (("plain", ()), ("calib", ("--calib",))):
        base = out / variant / "base"
        assert run_train(coop_argv(data_root, base, *extra, opts=BASE_OPTS)) == 0
        new = out / variant / "new"
        assert run_train(coop_argv(data_root, new, *extra, "--eval-only", "--model-dir", str(base), "--load-epoch", "2",
                             opts=("DATASET.NUM_SHOTS", "4", "DATASET.SUBSAMPLE_CLASSES", "new"))) == 0
        dirs[variant] = (base, new)
    return dirs


METRIC_KEYS = {"accuracy", "macro_f1", "ece", "mce", "mce_weighted", "adaptive_ece", "classwise_ece", "nll", "brier"}


@pytest.mark.parametrize("variant", ["plain", "calib"])
def test_run_records_complete(base_runs, variant):
    base, new = base_runs[variant]
    for d, subsample in ((base, "base"), (new, "new")):
        res = json.loads((d / "results.json").read_text())
        assert METRIC_KEYS <= set(res["metrics"])
        run_info = res["run"]
        assert run_info["trainer"] == "CoOp" and run_info["subsample"] == subsample
        assert run_info["shots"] == 4 and run_info["seed"] == 1 and run_info["backbone"] == "tiny-vit"
        assert run_info["calib"] == ("tcpt" if variant == "calib" else None)
        assert {"git_commit", "versions", "precision"} <= set(run_info)
        assert len(run_info["backbone_weights"]) == 16  # one tiny-vit: the same weights in every run
        assert run_info["backbone_weights"] == json.loads((base_runs["plain"][0] / "results.json").read_text())[
            "run"]["backbone_weights"]
        log = (d / "log.txt").read_text()
        assert "* accuracy:" in log and "* ece:" in log
        assert (d / "config.yaml").exists()
        pred = np.load(d / "predictions.npz")
        assert pred["logits"].dtype == np.float32 and pred["labels"].dtype == np.int64
        assert pred["logits"].shape == (len(pred["labels"]), 3)
        assert pred["zs_logits"].shape == pred["logits"].shape
        assert pred["text_features"].shape == pred["zs_text_features"].shape
        acc = 100 * (pred["logits"].argmax(1) == pred["labels"]).mean()
        assert res["metrics"]["accuracy"] == pytest.approx(acc)
    assert "val_logits" in np.load(base / "predictions.npz")
    model_dir = json.loads((new / "results.json").read_text())["run"]["model_dir"]
    assert not Path(model_dir).is_absolute() and (new / model_dir).resolve() == base.resolve()  # no machine path


def test_checkpoint_holds_prompts_only(base_runs):
    base, _ = base_runs["calib"]
    ckpt = torch.load(base / "prompt_learner" / "model.pth.tar-2", map_location="cpu", weights_only=False)
    assert set(ckpt["state_dict"]) == {"ctx"}
    assert ckpt["state_dict"]["ctx"].shape[0] == 16
    assert (base / "prompt_learner" / "model.pth.tar-2").stat().st_size < 200_000


def _trainer(data_root, out, *extra, opts=BASE_OPTS):
    args = train.parse_args(coop_argv(data_root, out, *extra, opts=opts))
    cfg = train.setup_cfg(args)
    from dassl.engine import build_trainer

    return build_trainer(cfg)


def test_training_changes_only_prompts(data_root, tmp_path):
    torch.manual_seed(0)
    trainer = _trainer(data_root, tmp_path / "t", "--calib", opts=BASE_OPTS[:4] + ("OPTIM.MAX_EPOCH", "1"))
    clip_before = {k: v.clone() for k, v in trainer.model.clip.state_dict().items()}
    learn_before = {n: p.detach().clone() for n, p in trainer.learnable_named_parameters()}
    assert list(learn_before) == ["ctx"]
    trainer.max_epoch = 1
    trainer.before_train()
    trainer.set_model_mode("train")
    batch = next(iter(trainer.train_loader_x))
    trainer.batch_idx, trainer.num_batches = 0, 1
    trainer.forward_backward(batch)
    for k, v in trainer.model.clip.state_dict().items():
        assert torch.equal(v, clip_before[k]), k
    assert not torch.equal(trainer.model.prompts_ctx if hasattr(trainer.model, "prompts_ctx") else trainer.model.ctx,
                           learn_before["ctx"])
    assert all(not p.requires_grad for p in trainer.model.clip.parameters())


def test_calib_terms_add_exactly(data_root, tmp_path):
    plain = _trainer(data_root, tmp_path / "p")
    calib = _trainer(data_root, tmp_path / "c", "--calib")
    zero = _trainer(data_root, tmp_path / "z", "--calib", opts=BASE_OPTS + (
        "TRAINER.CALIB.LAMBDA_MARGIN", "0.0", "TRAINER.CALIB.LAMBDA_MOM", "0.0"))
    with torch.no_grad():
        for t in (calib, zero):
            t.model.ctx.copy_(plain.model.ctx)
    batch = next(iter(plain.train_loader_x))
    image, label = plain.parse_batch_train(batch)
    loss_p, terms_p, out_p = plain.compute_loss(image, label)
    loss_c, terms_c, out_c = calib.compute_loss(image, label)
    loss_z, _, _ = zero.compute_loss(image, label)
    assert torch.equal(loss_z, loss_p)
    from tests import references

    expected = 1.0 * references.margin_mean_var(out_c.logits, label, 0.1, 0.01) + 5.0 * references.moment_matching(
        out_c.text_features, calib.zs_text_features)
    assert (loss_c - loss_p).item() == pytest.approx(expected, abs=1e-5)
    assert set(terms_c) == {"ce", "margin", "mom"}


def test_checkpoint_round_trip_reproduces_logits(base_runs, data_root, tmp_path):
    base, _ = base_runs["plain"]
    again = tmp_path / "again"
    argv = coop_argv(data_root, again, "--eval-only", "--model-dir", str(base), "--load-epoch", "2",
                     opts=("DATASET.NUM_SHOTS", "4", "DATASET.SUBSAMPLE_CLASSES", "base"))
    assert run_train(argv) == 0
    a = np.load(base / "predictions.npz")["logits"]
    b = np.load(again / "predictions.npz")["logits"]
    np.testing.assert_array_equal(a, b)


def test_missing_checkpoint_is_one_clear_error(data_root, tmp_path, capsys):
    argv = coop_argv(data_root, tmp_path / "x", "--eval-only", "--model-dir", str(tmp_path / "nothing"),
                     "--load-epoch", "2", opts=("DATASET.NUM_SHOTS", "4", "DATASET.SUBSAMPLE_CLASSES", "new"))
    assert run_train(argv) == 1
    err = capsys.readouterr().err
    assert "no checkpoint at" in err and "Traceback" not in err
    assert not (tmp_path / "x" / "results.json").exists()


def test_zero_shot_clip_runs(data_root, tmp_path):
    argv = ["--root", str(data_root), "--seed", "1", "--trainer", "ZeroshotCLIP", "--backbone", "tiny-vit",
            "--dataset-config-file", str(train.__file__).replace("train.py", "configs/datasets/imagefolder.yaml"),
            "--config-file", str(train.__file__).replace("train.py", "configs/trainers/ZeroshotCLIP/vit_b16.yaml"),
            "--output-dir", str(tmp_path / "zs"), "--eval-only", "DATALOADER.NUM_WORKERS", "0",
            "DATASET.SUBSAMPLE_CLASSES", "new"]
    assert run_train(argv) == 0
    pred = np.load(tmp_path / "zs" / "predictions.npz")
    np.testing.assert_allclose(pred["logits"], pred["zs_logits"], rtol=1e-5, atol=1e-4)
