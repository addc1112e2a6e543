"""Drop-in trainers (trainers/plugins.py, trainers/calib_hook.py, the engine's run record): a CoOp-family trainer
file in OpenAI's idiom, given with --trainer-file, trains, evaluates on new classes and leaves a run record the
tools read; --calib on it is one clear error unless it uses the documented hook; a broken method file is named and
leaves the other methods usable; a new method sweeps with no table edit."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import train
from tests.helpers import REPO, coop_argv, make_image_folder

IDIOM_FILE = Path(__file__).resolve().parent / "data" / "trainers" / "openai_idiom_coop.py"
OPTS = ("DATASET.NUM_SHOTS", "2", "OPTIM.MAX_EPOCH", "1", "DATALOADER.TRAIN_X.BATCH_SIZE", "4",
        "TRAINER.COOP.N_CTX", "4", "TRAINER.COOP.PREC", "fp32")

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("dropin_data"), n_classes=4, per_class=8)


@pytest.fixture
def clip_cache(tmp_path, monkeypatch):
    """OpenAI's loader writes named backbones to ~/.cache/clip: keep it in the test's folder."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def _run(root, out, trainer, *extra, opts=()):
    return train.cli(coop_argv(root, out, "--trainer-file", str(IDIOM_FILE), *extra, trainer=trainer,
                               opts=OPTS + tuple(opts)))


def test_openai_idiom_trainer_trains_evaluates_and_records(data_root, tmp_path, clip_cache, capsys):
    base, new = tmp_path / "base", tmp_path / "new"
    assert _run(data_root, base, "IdiomCoOp", opts=("DATASET.SUBSAMPLE_CLASSES", "base")) == 0
    assert _run(data_root, new, "IdiomCoOp", "--eval-only", "--model-dir", str(base), "--load-epoch", "1",
                opts=("DATASET.SUBSAMPLE_CLASSES", "new")) == 0
    for run, n_classes in ((base, 2), (new, 2)):
        res = json.loads((run / "results.json").read_text())
        assert res["run"]["trainer"] == "IdiomCoOp" and res["run"]["calib"] is None
        assert res["run"]["precision"] == "fp32"  # what ran: its weights' dtype (it reads TRAINER.COOP.PREC)
        assert res["run"]["trainer_file"]["path"] == "tests/data/trainers/openai_idiom_coop.py"
        assert res["run"]["num_classes"] == n_classes and res["run"]["dataset"] == "ImageFolder"
        pred = np.load(run / "predictions.npz")
        assert pred["logits"].shape == (res["run"]["num_test"], n_classes) and pred["labels"].dtype == np.int64
        # the record's metrics are the logits' own
        acc = 100.0 * np.mean(pred["logits"].argmax(1) == pred["labels"])
        assert res["metrics"]["accuracy"] == pytest.approx(acc)
        assert "* accuracy" in (run / "log.txt").read_text()
    model_dir = json.loads((new / "results.json").read_text())["run"]["model_dir"]
    assert not Path(model_dir).is_absolute() and (new / model_dir).resolve() == base.resolve()  # no machine path
    assert "val_logits" in np.load(base / "predictions.npz")  # after training: post-hoc TS can be fitted
    from tools import calibrate

    assert calibrate.main([str(new), "--method", "ts", "--base-run", str(base)]) == 0
    assert (new / "results_ts.json").is_file()


def test_calib_on_a_plain_trainer_is_one_clear_error(data_root, tmp_path, clip_cache, capsys):
    assert _run(data_root, tmp_path / "x", "IdiomCoOp", "--calib", opts=("DATASET.SUBSAMPLE_CLASSES", "base")) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--calib tcpt" in err[0] and "CalibHook" in err[0]
    assert not (tmp_path / "x" / "results.json").exists()


def test_calib_through_the_hook(data_root, tmp_path, clip_cache):
    out = tmp_path / "c"
    assert _run(data_root, out, "IdiomCoOpCalib", "--calib", opts=("DATASET.SUBSAMPLE_CLASSES", "base")) == 0
    log = (out / "log.txt").read_text()
    assert "margin" in log and "mom" in log  # the terms are in the step's summary
    res = json.loads((out / "results.json").read_text())
    assert res["run"]["calib"] == "tcpt"
    pred = np.load(out / "predictions.npz")
    assert pred["zs_text_features"].shape == (2, 64) and float(pred["logit_scale"]) == pytest.approx(100.0)


def test_calib_hook_adds_exactly_the_shared_objective():
    """calib_loss = the method's terms + build_objective's terms on (logits, labels, normalised text, F0)."""
    import torch
    from calibration.regularizers import build_objective
    from dassl.config import get_cfg_default
    from trainers.calib_hook import CalibHook

    cfg = get_cfg_default()
    train.extend_cfg(cfg)
    cfg.TRAINER.CALIB.NAME = "tcpt"
    hook = CalibHook()
    hook.cfg, hook.calib_objective = cfg, build_objective(cfg)
    hook.zs_text_features = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    hook.calib_clip = type("C", (), {"logit_scale": torch.tensor(np.log(100.0))})()
    logits, label, text = torch.randn(5, 3) * 10, torch.tensor([0, 1, 2, 0, 1]), torch.randn(3, 8)
    terms = {"ce": torch.nn.functional.cross_entropy(logits, label)}
    loss = hook.calib_loss(terms, logits, label, text)
    ref = build_objective(cfg)(logits, label, torch.nn.functional.normalize(text, dim=-1), hook.zs_text_features,
                               logit_scale=100.0)
    assert set(terms) == {"ce", "margin", "mom"}
    assert loss.item() == pytest.approx((terms["ce"] + ref["margin"] + ref["mom"]).item(), rel=1e-6)


def _broken_env(tmp_path):
    broken = tmp_path / "plugins" / "broken_method.py"
    broken.parent.mkdir()
    broken.write_text("import torch\nraise ImportError('cannot import name GradScaler from nowhere')\n")
    return dict(os.environ, CALIB_PROMPT_TRAINERS=str(broken.parent), HOME=str(tmp_path / "home")), broken


def test_a_broken_method_file_leaves_coop_working(data_root, tmp_path):
    env, broken = _broken_env(tmp_path)
    argv = coop_argv(data_root, tmp_path / "coop", opts=OPTS + ("DATASET.SUBSAMPLE_CLASSES", "base"))
    done = subprocess.run([sys.executable, str(REPO / "train.py"), *argv], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"{broken}" in done.stderr and "ImportError: cannot import name GradScaler" in done.stderr
    assert (tmp_path / "coop" / "results.json").is_file()
    # the trainer it would have defined: the unknown-name error names the broken file
    argv = coop_argv(data_root, tmp_path / "b", trainer="BrokenMethod")
    done = subprocess.run([sys.executable, str(REPO / "train.py"), *argv], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 1 and "failed to import" in done.stderr.splitlines()[-1]
    assert str(broken) in done.stderr.splitlines()[-1]


def test_a_broken_package_module_is_reported_not_raised(tmp_path, monkeypatch, capsys):
    """The loop over trainers/*.py uses the same guard: an exception inside a method module is named."""
    from dassl.engine.build import IMPORT_FAILURES
    from trainers import plugins

    (tmp_path / "badpkg").mkdir()
    (tmp_path / "badpkg" / "__init__.py").write_text("")
    (tmp_path / "badpkg" / "bad.py").write_text("x = 1 / 0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(plugins, "IMPORT_FAILURES", IMPORT_FAILURES)
    plugins.import_module("badpkg.bad", "trainers/bad.py")
    err = capsys.readouterr().err
    assert "trainers/bad.py failed to import (ZeroDivisionError: division by zero at bad.py:1)" in err
    assert IMPORT_FAILURES.pop("trainers/bad.py").startswith("ZeroDivisionError")


def test_trainer_file_errors_name_the_file(tmp_path, capsys):
    empty = tmp_path / "nothing.py"
    empty.write_text("X = 1\n")
    for path, match in ((tmp_path / "missing.py", "does not exist"), (empty, "registers no trainer")):
        assert train.cli(["--trainer-file", str(path), "--trainer", "CoOp"]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(path) in err[0] and match in err[0]


def test_pytest_collection_survives_a_broken_method_file(tmp_path):
    env, broken = _broken_env(tmp_path)
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "tests/test_prompts.py"],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


def test_calib_hook_target_follows_frozen_templates_and_prec():
    """The hook's F0 is PromptTrainer's: TRAINER.CALIB.FROZEN_TARGET_PREC fp16 runs the text tower in fp16 (on a
    copy), so a ported trainer gets the same target as a built-in one."""
    import torch
    import clip
    from dassl.config import get_cfg_default
    from trainers.calib_hook import CalibHook
    from trainers.templates import zeroshot_text_features

    cfg = get_cfg_default()
    train.extend_cfg(cfg)
    cfg.DATASET.NAME = "Caltech101"
    cfg.TRAINER.CALIB.NAME, cfg.TRAINER.CALIB.FROZEN_TARGET_PREC = "tcpt", "fp16"
    model = clip.load("tiny-vit")
    hook = CalibHook()
    hook.cfg, hook.device = cfg, torch.device("cpu")
    hook.dm = type("DM", (), {"dataset": type("D", (), {"classnames": ["cat", "dog", "red_apple"]})()})()
    hook.setup_calib(model)
    half = zeroshot_text_features(model, ["cat", "dog", "red_apple"], ["a photo of a {}."], precision="fp16")
    full = zeroshot_text_features(model, ["cat", "dog", "red_apple"], ["a photo of a {}."])
    assert torch.equal(hook.zs_text_features, half) and not torch.equal(half, full)
