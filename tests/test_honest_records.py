"""Honest run records (issue 14, item 6): the record says what the run actually did.

Skipped unreadable test images are listed and not counted in ``num_test``; OPTIM.MAX_EPOCH < 1 cannot train
(eval-only and zero-shot runs still work); ``shots`` is what the few-shot draw used, with a warning when a class has
fewer images than requested; ImageFolder refuses two folders with one class name and says when its images changed
since the split was saved. Everything runs ``train.cli`` in-process on tiny-vit and generated image folders.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import train
from tests.helpers import coop_argv, make_image_folder
from tests.test_reliability import assert_one_clear_error, run

torch.set_num_threads(1)
FAST = ("DATASET.NUM_SHOTS", "2", "USE_CUDA", "False", "OPTIM.MAX_EPOCH", "1")


def argv(root, out, *extra, opts=(), **kw):
    return coop_argv(root, out, *extra, opts=FAST + tuple(opts), **kw)


def record(out) -> dict:
    return json.loads((Path(out) / "results.json").read_text())["run"]


def saved_split(root) -> dict:
    return json.loads((root / "split_imagefolder.json").read_text())


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("data"), n_classes=3, per_class=8, size=16)


@pytest.fixture(scope="module")
def trained(data_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("trained")
    assert run(argv(data_root, out))[0] == 0
    return out


# ------------------------------------------------------------------------------------ skipped images are counted
@pytest.mark.parametrize("cache", ["True", "False"])
def test_skipped_test_images_are_listed_and_not_counted(tmp_path, cache):
    """On main: ``num_test 12`` recorded, 11 scored. Now num_test = rows of predictions.npz = images scored."""
    root = make_image_folder(tmp_path / "data", n_classes=2, per_class=10, size=16)
    assert run(argv(root, tmp_path / "split", "--no-train"))[0] == 0
    test = saved_split(root)["test"]
    bad = test[1][0]
    data = (root / bad).read_bytes()
    (root / bad).write_bytes(data[: len(data) // 2])
    out = tmp_path / "run"
    opts = ("DATALOADER.SKIP_BAD_IMAGES", "True", "TEST.FEATURE_CACHE", cache,
            "TEST.FEATURE_CACHE_DIR", str(tmp_path / "cache"))
    assert run(argv(root, out, opts=opts))[0] == 0
    info = record(out)
    labels = np.load(out / "predictions.npz")["labels"]
    assert info["num_test"] == len(labels) == len(test) - 1
    assert info["num_skipped"] == 1 and info["skipped"]["test"] == [bad]
    assert "* total: {:,}".format(len(test) - 1) in (out / "log.txt").read_text()


def test_a_run_without_skips_records_none(trained, data_root):
    info = record(trained)
    assert info["num_skipped"] == 0 and info["skipped"] == {}
    assert info["num_test"] == len(saved_split(data_root)["test"])


# ----------------------------------------------------------------------------------------- MAX_EPOCH < 1
@pytest.mark.parametrize("epochs", ["0", "-3"])
def test_training_without_epochs_is_one_clear_error_before_anything_is_written(data_root, tmp_path, capsys, epochs):
    """On main: exit 0 and a complete-looking record of untrained prompts."""
    out = tmp_path / "run"
    rc, err = run(argv(data_root, out, opts=("OPTIM.MAX_EPOCH", epochs)), capsys)
    assert_one_clear_error(rc, err, f"OPTIM.MAX_EPOCH must be at least 1 to train, got {epochs}", "--eval-only")
    assert not out.exists()


def test_the_trainer_refuses_to_train_without_epochs(data_root, tmp_path):
    from common.errors import UserError
    from dassl.engine import build_trainer

    cfg = train.setup_cfg(train.parse_args(argv(data_root, tmp_path / "run", opts=("OPTIM.MAX_EPOCH", "0"))))
    trainer = build_trainer(cfg)
    with pytest.raises(UserError, match="OPTIM.MAX_EPOCH must be at least 1"):
        trainer.train()


@pytest.mark.parametrize("epochs", ["0", "-3"])
def test_eval_only_and_zero_shot_work_with_any_max_epoch(data_root, trained, tmp_path, epochs, capsys):
    opts = ("OPTIM.MAX_EPOCH", epochs)
    # Eval-only of trained prompts takes MAX_EPOCH from the checkpoint (issue 14 item 4): a contradicting value is
    # the checkpoint's error, not the "cannot train" one, which would wrongly name training.
    rc, err = run(argv(data_root, tmp_path / "eval", "--eval-only", "--model-dir", trained, opts=opts), capsys)
    assert rc != 0 and "the checkpoint was trained with" in err and "at least 1" not in err
    cases = {
        "zero-shot": argv(data_root, tmp_path / "zero-shot", opts=opts, trainer="ZeroshotCLIP"),
        "zero-shot eval-only": argv(data_root, tmp_path / "zs-eval", "--eval-only", opts=opts, trainer="ZeroshotCLIP"),
    }
    for name, args in cases.items():
        assert run(args)[0] == 0, name
        assert record(args[args.index("--output-dir") + 1])["max_epoch"] == int(epochs), name


def test_promptsrc_builds_for_evaluation_with_no_epochs():
    """PromptSRC's epoch weights (GPA) over zero epochs: an empty list, not a crash of eval-only runs."""
    from trainers.promptsrc import gpa_weights

    assert gpa_weights(0, 15.0, 1.0) == [] and gpa_weights(-3, 15.0, 1.0) == []
    assert gpa_weights(2, 1.0, 1.0) == pytest.approx([1 / (1 + np.exp(-0.5)), np.exp(-0.5) / (1 + np.exp(-0.5))])


# ----------------------------------------------------------------------------------------- shots actually used
def test_shots_is_what_the_draw_used_with_a_warning(tmp_path, capsys):
    """Two classes of 8 images (4 train each), one of 5 (2 train): NUM_SHOTS 3 uses 3, 3 and 2. On main the
    record said shots 3 (and 100 for NUM_SHOTS 100), silently."""
    root = make_image_folder(tmp_path / "data", n_classes=3, per_class=8, size=16)
    for p in sorted((root / "blue_thing").glob("*.png"))[5:]:
        p.unlink()
    zs = {"trainer": "ZeroshotCLIP"}
    for shots, used, short in (("3", 2, 1), ("100", 2, 3), ("2", 2, 0), ("-1", -1, 0)):
        out = tmp_path / f"shots{shots}"
        capsys.readouterr()
        assert run(argv(root, out, opts=("DATASET.NUM_SHOTS", shots), **zs))[0] == 0
        printed = capsys.readouterr().out
        info = record(out)
        assert (info["shots"], info["shots_requested"]) == (used, int(shots))
        warned = [line for line in printed.splitlines() if line.startswith("Warning: DATASET.NUM_SHOTS")]
        if short:
            assert len(warned) == 1 and f"{short} of 3 ImageFolder classes" in warned[0]
            assert "fewest: 'blue thing' with 2" in warned[0] and "shots is 2" in warned[0]
        else:
            assert warned == []
    # base and new runs of one draw record the same shots (counted before the base/new split)
    for sub in ("base", "new"):
        out = tmp_path / f"sub_{sub}"
        assert run(argv(root, out, opts=("DATASET.NUM_SHOTS", "3", "DATASET.SUBSAMPLE_CLASSES", sub), **zs))[0] == 0
        assert record(out)["shots"] == 2


# ----------------------------------------------------------------------------------------- ImageFolder checks
@pytest.mark.parametrize("first,second", [("red_apple", "red apple"), ("Red_Apple", "red  apple")])
def test_imagefolder_class_name_collision_is_one_clear_error(tmp_path, capsys, first, second):
    """On main: two classes with one name, silently."""
    root = make_image_folder(tmp_path / "data", n_classes=2, per_class=6, size=16)
    shutil.move(root / "red_thing", root / first)
    shutil.copytree(root / first, root / second)
    rc, err = run(argv(root, tmp_path / "run"), capsys)
    assert_one_clear_error(rc, err, f"'{first}'" if first < second else f"'{second}'",
                           f"'{second}'" if first < second else f"'{first}'", "same class name 'red apple'",
                           "rename one of them")
    assert not (root / "split_imagefolder.json").exists()


def test_imagefolder_images_added_after_the_split_are_reported(data_root, trained, tmp_path, capsys):
    """On main: the saved split was reused and the new images ignored without a word."""
    root = tmp_path / "data"
    shutil.copytree(data_root, root)
    split_file = root / "split_imagefolder.json"
    before = split_file.read_text()
    for i in range(2):
        shutil.copy(root / "red_thing" / "img_000.png", root / "red_thing" / f"new_{i}.png")
    capsys.readouterr()
    assert run(argv(root, tmp_path / "run", trainer="ZeroshotCLIP"))[0] == 0
    warned = [line for line in capsys.readouterr().out.splitlines() if "not in the saved split" in line]
    assert len(warned) == 1, warned
    assert warned[0].startswith(f"Warning: 2 image(s) under {root}") and "red_thing/new_0.png" in warned[0]
    assert f"rm '{split_file}'" in warned[0]
    assert split_file.read_text() == before  # the saved split still wins: earlier runs stay comparable
    split_file.unlink()  # the documented re-split
    assert run(argv(root, tmp_path / "again", trainer="ZeroshotCLIP"))[0] == 0
    listed = {p for part in saved_split(root).values() for p, _, _ in part}
    assert {"red_thing/new_0.png", "red_thing/new_1.png"} <= listed


def test_imagefolder_image_removed_after_the_split_is_an_error_saying_how_to_resplit(data_root, tmp_path, capsys):
    root = tmp_path / "data"
    shutil.copytree(data_root, root)
    train_image = saved_split(root)["train"][0][0]  # not in any few-shot subset the run uses
    (root / train_image).unlink()
    rc, err = run(argv(root, tmp_path / "run", opts=("DATASET.NUM_SHOTS", "1")), capsys)
    assert_one_clear_error(rc, err, "1 of", str(root / train_image), "saved split",
                           f"rm '{root / 'split_imagefolder.json'}'")
