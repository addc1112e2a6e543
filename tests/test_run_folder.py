"""Issue 14, items 3 and 4: a rerun into a finished folder validates everything before it touches the folder, and
the previous record moves aside only when the new run starts; eval-only runs take their training settings from the
checkpoint, and a contradicting command line is one error naming the key and both values."""
from __future__ import annotations

import json
import sys

import pytest
import torch

import train
from tests.helpers import coop_argv, make_image_folder

RECORD = ("results.json", "predictions.npz", "config.yaml", "log.txt")
OPTS = ("DATASET.NUM_SHOTS", "2", "OPTIM.MAX_EPOCH", "1")


def run(argv) -> int:
    saved = sys.stdout
    try:
        return train.cli([str(a) for a in argv])
    finally:
        sys.stdout = saved


def snapshot(folder):
    return {name: (folder / name).read_bytes() for name in RECORD}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, one_thread):
    tmp = tmp_path_factory.mktemp("runfolder")
    data = make_image_folder(tmp / "data", n_classes=4, per_class=6, size=16)
    base = tmp / "base"
    assert run(coop_argv(data, base, opts=OPTS + ("DATASET.SUBSAMPLE_CLASSES", "base"))) == 0
    return data, base


def test_invalid_rerun_touches_nothing(trained, tmp_path, capsys):
    data, base = trained
    before = snapshot(base)
    # a typo in --root, then another config (a --calib run into a plain run's folder): errors, folder untouched
    assert run(coop_argv(tmp_path / "dta", base, opts=OPTS + ("DATASET.SUBSAMPLE_CLASSES", "base"))) == 1
    assert run(coop_argv(data, base, "--calib", opts=OPTS + ("DATASET.SUBSAMPLE_CLASSES", "base"))) == 1
    err = capsys.readouterr().err
    assert "cannot resume" in err and "TRAINER.CALIB.NAME" in err
    assert snapshot(base) == before and not (base / "previous").exists()


def test_valid_rerun_moves_the_previous_record_aside(trained, tmp_path):
    data, _ = trained
    out = tmp_path / "run"
    argv = coop_argv(data, out, opts=OPTS + ("DATASET.SUBSAMPLE_CLASSES", "base"))
    assert run(argv) == 0
    before = snapshot(out)
    assert run(argv) == 0
    (prev,) = (out / "previous").iterdir()
    assert {p.name for p in prev.iterdir()} >= set(RECORD)
    assert {name: (prev / name).read_bytes() for name in RECORD} == before
    log = (out / "log.txt").read_text()
    # the new log starts with what was printed while validating, and says where the old record went
    assert log.index("** Arguments **") < log.index(f"The previous record of this folder moved to {prev}")
    assert json.loads((out / "results.json").read_text())["metrics"]


def test_eval_only_contradicting_the_checkpoint_is_one_error(trained, tmp_path, capsys):
    data, base = trained
    new = tmp_path / "new"
    code = run(coop_argv(data, new, "--calib", "--eval-only", "--model-dir", base,
                         opts=OPTS + ("DATASET.SUBSAMPLE_CLASSES", "new")))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1
    assert "TRAINER.CALIB.NAME: the checkpoint was trained with '' (not set), this command says 'tcpt'" in err[0]
    assert not (new / "results.json").exists()
    code = run(coop_argv(data, new, "--eval-only", "--model-dir", base,
                         opts=("DATASET.NUM_SHOTS", "2", "OPTIM.MAX_EPOCH", "7", "DATASET.SUBSAMPLE_CLASSES", "new")))
    assert code == 1 and "OPTIM.MAX_EPOCH: the checkpoint was trained with 1, this command says 7" in \
        capsys.readouterr().err


def test_eval_only_takes_the_training_settings(trained, tmp_path, capsys):
    data, base = trained
    new = tmp_path / "new"
    # no OPTIM.MAX_EPOCH (the config file says 50) and no DATASET.NUM_SHOTS: both come from the checkpoint
    assert run(coop_argv(data, new, "--eval-only", "--model-dir", base, opts=("DATASET.SUBSAMPLE_CLASSES", "new"))) == 0
    out = capsys.readouterr().out
    assert "Note: eval-only takes the training settings of" in out and "OPTIM.MAX_EPOCH 1 (config files: 50)" in out
    rec = json.loads((new / "results.json").read_text())["run"]
    trained_rec = json.loads((base / "results.json").read_text())["run"]
    assert (rec["max_epoch"], rec["shots"], rec["calib"]) == (1, 2, None)
    assert rec["identity"]["model"] == trained_rec["identity"]["id"]
    ckpt_meta = torch.load(base / "prompt_learner" / "model.pth.tar-1", weights_only=True)["meta"]
    assert ckpt_meta["identity"]["id"] == trained_rec["identity"]["id"]


def test_checkpoints_of_other_code_are_not_resumed(trained, tmp_path, monkeypatch, capsys):
    """A stale run that the sweep reruns trains again from scratch: its checkpoints (made by other code) move aside
    with its record instead of being resumed and merely re-evaluated."""
    from runs import identity

    data, _ = trained
    out = tmp_path / "run"
    argv = coop_argv(data, out, opts=OPTS + ("DATASET.SUBSAMPLE_CLASSES", "base"))
    assert run(argv) == 0
    old_ckpt = (out / "prompt_learner" / "model.pth.tar-1").read_bytes()
    monkeypatch.setattr(identity, "code_sha256", lambda: "0" * 64)
    assert run(argv) == 0
    log = (out / "log.txt").read_text()
    assert "training from scratch" in log and "Resuming from" not in log and "epoch [1/1]" in log
    (prev,) = (out / "previous").iterdir()
    assert (prev / "prompt_learner" / "model.pth.tar-1").read_bytes() == old_ckpt
    rec = json.loads((out / "results.json").read_text())["run"]["identity"]
    assert rec["code_sha256"] == "0" * 64
