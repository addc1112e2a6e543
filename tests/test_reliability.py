"""Reliability (issue "bad input, interruption, determinism"): every user mistake is one clear message and exit 1;
a NaN/inf stops the run and keeps the last checkpoint good; checkpoints are verified (sha256, config); the seed
fixes the few-shot draw, the initialisation and the data order, and --deterministic makes runs identical.

Everything runs ``train.cli`` in-process on tiny-vit and a generated 4-class image folder (2 shots, 1-2 epochs).
The kill/resume tests with real processes are in test_reliability_interrupt.py.
"""
from __future__ import annotations

import json
import re
import shutil
import sys

import numpy as np
import pytest
import torch

import train
from dassl.utils import state_sha256
from tests.helpers import coop_argv, make_image_folder

SHOTS = ("DATASET.NUM_SHOTS", "2", "USE_CUDA", "False")
CKPT = "prompt_learner"



def run(argv, capsys=None):
    """train.cli in-process; returns (exit code, captured stderr)."""
    saved = sys.stdout
    try:
        rc = train.cli([str(a) for a in argv])
    finally:
        sys.stdout = saved
    return rc, (capsys.readouterr().err if capsys is not None else "")


def argv(root, out, *extra, epochs=1, opts=(), **kw):
    return coop_argv(root, out, *extra, opts=SHOTS + ("OPTIM.MAX_EPOCH", str(epochs)) + tuple(opts), **kw)


def new_folder(path, **kw):
    return make_image_folder(path, n_classes=4, per_class=8, size=16, **kw)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return new_folder(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def trained(data_root, tmp_path_factory):
    """A finished 2-epoch CoOp run with a checkpoint per epoch."""
    out = tmp_path_factory.mktemp("trained")
    rc, _ = run(argv(data_root, out, epochs=2, opts=("TRAIN.CHECKPOINT_FREQ", "1")))
    assert rc == 0
    return out


def load_ckpt(run_dir, epoch):
    return torch.load(run_dir / CKPT / f"model.pth.tar-{epoch}", map_location="cpu", weights_only=False)


def assert_one_clear_error(rc, err, *expected):
    assert rc == 1, err
    assert "Traceback" not in err and len(re.findall(r"(?:^|[\r\n])Error: ", err)) == 1, err
    for text in expected:
        assert text in err, f"{text!r} not in {err!r}"


# ---------------------------------------------------------------------------------------------- 1. user mistakes
CONFIG_MISTAKES = {
    "unknown trainer": (dict(trainer="CoOq"), (), ['Unknown trainer', 'Did you mean "CoOp"']),
    "unknown dataset": ({}, ("DATASET.NAME", "ImageFolderr"), ['Unknown dataset', 'Did you mean "ImageFolder"']),
    "unknown backbone": (dict(backbone="tiny-vitt"), (), ['CLIP backbone', 'Did you mean "tiny-vit"']),
    "opts: unknown key": ({}, ("OPTIM.LRR", "0.1"), ["command-line option", "OPTIM.LRR", 'did you mean "OPTIM.LR"']),
    "opts: int for float": ({}, ("OPTIM.LR", "1"), ["OPTIM.LR must be a float", "got an integer", "1.0"]),
    "opts: str for int": ({}, ("TRAINER.COOP.N_CTX", "four"), ["TRAINER.COOP.N_CTX must be an integer",
                                                               "got a string"]),
    "opts: bool for str": ({}, ("TRAINER.COOP.CTX_INIT", "True"), ["TRAINER.COOP.CTX_INIT must be a string",
                                                                    "got True or False"]),
    "opts: odd count": ({}, ("OPTIM.LR",), ["KEY VALUE pairs", "OPTIM.LR"]),
    "bad batch size": ({}, ("DATALOADER.TRAIN_X.BATCH_SIZE", "0"), ["BATCH_SIZE must be a positive integer"]),
    "bad workers": ({}, ("DATALOADER.NUM_WORKERS", "-1"), ["DATALOADER.NUM_WORKERS must be >= 0"]),
    "bad input size": ({}, ("INPUT.SIZE", "(224,)"), ["INPUT.SIZE must be two positive integers"]),
    "bad pixel std": ({}, ("INPUT.PIXEL_STD", "[0.2, 0.0, 0.2]"), ["INPUT.PIXEL_STD must hold 3 positive numbers"]),
    "size vs backbone": (dict(backbone="tiny-rn"), ("INPUT.SIZE", "(256, 256)"),
                         ["INPUT.SIZE (256, 256) does not match", "(224, 224)", "tiny-rn"]),
    "negative lr": ({}, ("OPTIM.LR", "-0.1"), ["OPTIM.LR", "Invalid learning rate"]),
    "ece bins": ({}, ("TEST.ECE_BINS", "0"), ["TEST.ECE_BINS must be a positive integer"]),
    "init weights": ({}, ("MODEL.INIT_WEIGHTS", "/nonexistent/w.pth"), ["MODEL.INIT_WEIGHTS", "/nonexistent/w.pth"]),
    "unknown calib": ({}, ("TRAINER.CALIB.NAME", "tcp"), ["tcp", "tcpt"]),
}


@pytest.mark.parametrize("case", list(CONFIG_MISTAKES))
def test_config_mistakes_are_one_message(case, data_root, tmp_path, capsys):
    kw, opts, expected = CONFIG_MISTAKES[case]
    rc, err = run(argv(data_root, tmp_path / "out", opts=opts, **kw), capsys)
    assert_one_clear_error(rc, err, *expected)
    assert not (tmp_path / "out" / "results.json").exists()


@pytest.mark.parametrize("text, expected", [
    ("OPTIM:\n  LRR: 0.1\n", ["unknown config key OPTIM.LRR", 'did you mean "OPTIM.LR"']),
    ("OPTIM:\n  MAX_EPOCH: 1.5\n", ["OPTIM.MAX_EPOCH must be an integer like its current value", "got a float"]),
    ("OPTIM:\n  LR: [0.1\n", ["line 3", "not valid YAML"]),
    ("- OPTIM\n", ["must be a YAML mapping of config keys"]),
])
def test_yaml_mistakes_name_file_and_key(text, expected, data_root, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    args = argv(data_root, tmp_path / "out")
    args[args.index("--config-file") + 1] = str(bad)
    rc, err = run(args, capsys)
    assert_one_clear_error(rc, err, str(bad), *expected)


def test_debug_shows_the_traceback(data_root, tmp_path, capsys):
    rc, err = run(argv(data_root, tmp_path / "out", "--debug", trainer="CoOq"), capsys)
    assert rc == 1 and "Traceback (most recent call last)" in err and 'Did you mean "CoOp"' in err


def test_output_dir_that_is_a_file(data_root, tmp_path, capsys):
    (tmp_path / "taken").write_text("x")
    rc, err = run(argv(data_root, tmp_path / "taken"), capsys)
    assert_one_clear_error(rc, err, "cannot create the output directory", "taken")


def test_resume_from_a_missing_folder(data_root, tmp_path, capsys):
    rc, err = run(argv(data_root, tmp_path / "out", "--resume", tmp_path / "typo"), capsys)
    assert_one_clear_error(rc, err, "--resume", "typo", "is not a folder")


def test_missing_data_folder_split_and_image(tmp_path, capsys):
    # an ImageFolder root that does not exist
    rc, err = run(argv(tmp_path / "nope", tmp_path / "o1"), capsys)
    assert_one_clear_error(rc, err, str(tmp_path / "nope"), "is not a folder")
    # a benchmark dataset: missing folder, then missing split file, both with the prepare_data command
    caltech = ("DATASET.NAME", "Caltech101")
    rc, err = run(argv(tmp_path, tmp_path / "o2", opts=caltech), capsys)
    assert_one_clear_error(rc, err, str(tmp_path / "caltech-101"),
                           f"python tools/prepare_data.py --dataset Caltech101 --root {tmp_path}")
    (tmp_path / "caltech-101" / "101_ObjectCategories").mkdir(parents=True)
    rc, err = run(argv(tmp_path, tmp_path / "o3", opts=caltech), capsys)
    assert_one_clear_error(rc, err, "split_zhou_Caltech101.json", "tools/prepare_data.py --dataset Caltech101")
    # an image named by the split that is gone
    root = new_folder(tmp_path / "folder")
    assert run(argv(root, tmp_path / "o4", "--no-train"))[0] == 0  # writes the split
    split = json.loads((root / "split_imagefolder.json").read_text())
    gone = root / split["test"][0][0]
    gone.unlink()
    rc, err = run(argv(root, tmp_path / "o5"), capsys)
    assert_one_clear_error(rc, err, "1 of", str(gone), "are missing")


@pytest.fixture(scope="module")
def corrupt_root(tmp_path_factory):
    """A folder whose first test image is truncated (PIL cannot decode it)."""
    tmp = tmp_path_factory.mktemp("corrupt")
    root = new_folder(tmp / "data")
    assert run(argv(root, tmp / "split", "--no-train"))[0] == 0
    split = json.loads((root / "split_imagefolder.json").read_text())
    bad = root / split["test"][0][0]
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    return root, bad


@pytest.mark.parametrize("workers", ["0", "1"])
def test_corrupt_image_is_named(corrupt_root, workers, tmp_path, capsys):
    """Also from a DataLoader worker: the message, not torch's wrapped worker traceback."""
    root, bad = corrupt_root
    rc, err = run(argv(root, tmp_path / "out", opts=("DATALOADER.NUM_WORKERS", workers)), capsys)
    assert_one_clear_error(rc, err, f'Cannot read image "{bad}"', "DATALOADER.SKIP_BAD_IMAGES True")
    assert "Caught BadImageError" not in err and "Original Traceback" not in err


def test_skip_bad_images_reports_the_count_in_the_log(corrupt_root, tmp_path):
    root, bad = corrupt_root
    out = tmp_path / "out"
    assert run(argv(root, out, opts=("DATALOADER.SKIP_BAD_IMAGES", "True")))[0] == 0
    log = (out / "log.txt").read_text()
    assert f'Skipped 1 unreadable image(s) (DATALOADER.SKIP_BAD_IMAGES): "{bad}"' in log
    assert "* total: 7" in log  # 8 test images, one skipped
    assert json.loads((out / "results.json").read_text())["metrics"]["accuracy"] >= 0


def test_missing_clip_weights_offline(data_root, tmp_path, capsys, monkeypatch):
    import open_clip.pretrained

    import clip.loading

    calls = []

    def no_network(*args, **kwargs):
        calls.append(args)
        raise RuntimeError("network disabled in tests")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for var in clip.loading.WEIGHT_DIR_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(clip.loading, "OPENAI_CACHE", str(tmp_path / "clip-cache"))
    monkeypatch.setattr(open_clip.pretrained, "download_pretrained", no_network)
    rc, err = run(argv(data_root, tmp_path / "out", backbone="ViT-B/16"), capsys)
    assert_one_clear_error(rc, err, "CLIP ViT-B/16", "not on disk", str(tmp_path / "clip-cache" / "ViT-B-16.pt"),
                           "To fix: download")
    assert len(calls) == 1


def test_class_name_longer_than_the_context(tmp_path, capsys):
    root = new_folder(tmp_path / "long")
    (root / "red_thing").rename(root / "_".join(["w"] * 80))
    rc, err = run(argv(root, tmp_path / "out"), capsys)
    assert_one_clear_error(rc, err, " ".join(["w"] * 80), "77")


# ------------------------------------------------------------------------------------------------ --eval-only
def test_eval_only_with_a_missing_checkpoint(data_root, trained, tmp_path, capsys):
    rc, err = run(argv(data_root, tmp_path / "a", "--eval-only", "--model-dir", tmp_path / "none", "--load-epoch", 2),
                  capsys)
    assert_one_clear_error(rc, err, "no checkpoint at", str(tmp_path / "none"))
    rc, err = run(argv(data_root, tmp_path / "b", "--eval-only", "--model-dir", trained, "--load-epoch", 7), capsys)
    assert_one_clear_error(rc, err, "model.pth.tar-7")


def test_eval_only_with_a_mismatched_checkpoint(data_root, trained, tmp_path, capsys):
    evaluate = ("--eval-only", "--model-dir", trained, "--load-epoch", 2)
    # explicit values that contradict the checkpoint's training config (runs/eval_only.py)
    rc, err = run(argv(data_root, tmp_path / "bb", *evaluate, epochs=2, backbone="tiny-rn"), capsys)
    assert_one_clear_error(rc, err, "MODEL.BACKBONE.NAME: the checkpoint was trained with 'tiny-vit', this command "
                                    "says 'tiny-rn'")
    rc, err = run(argv(data_root, tmp_path / "nctx", *evaluate, epochs=2, opts=("TRAINER.COOP.N_CTX", "4")), capsys)
    assert_one_clear_error(rc, err, "TRAINER.COOP.N_CTX: the checkpoint was trained with 16, this command says 4")
    # another method's checkpoint (its meta names the method)
    other = tmp_path / "other"
    shutil.copytree(trained, other)
    ckpt = load_ckpt(other, 2)
    ckpt["meta"]["trainer"] = "KgCoOp"
    torch.save(ckpt, other / CKPT / "model.pth.tar-2")
    rc, err = run(argv(data_root, tmp_path / "tr", "--eval-only", "--model-dir", other, "--load-epoch", 2, epochs=2),
                  capsys)
    assert_one_clear_error(rc, err, "trainer: checkpoint 'KgCoOp' vs this run 'CoOp'")
    assert not any((tmp_path / d / "results.json").exists() for d in ("bb", "nctx", "tr"))


# -------------------------------------------------------------------------------------------------- 2. NaN / inf
def test_nan_loss_names_epoch_step_and_terms_and_keeps_the_last_checkpoint(data_root, tmp_path, capsys, monkeypatch):
    from trainers.base import PromptTrainer

    loss_terms = PromptTrainer.loss_terms

    def nan_in_epoch_2_step_2(self, out, label):
        terms = loss_terms(self, out, label)
        if (self.epoch, self.batch_idx) == (1, 1):
            terms["ce"] = terms["ce"] * float("nan")
        return terms

    monkeypatch.setattr(PromptTrainer, "loss_terms", nan_in_epoch_2_step_2)
    out = tmp_path / "nan"
    rc, err = run(argv(data_root, out, "--calib", epochs=2,
                       opts=("TRAIN.CHECKPOINT_FREQ", "1", "DATALOADER.TRAIN_X.BATCH_SIZE", "4")), capsys)
    assert_one_clear_error(rc, err, "non-finite loss at epoch 2, step 2: ce=nan, margin=", ", mom=",
                           "last saved checkpoint is untouched")
    assert not (out / "results.json").exists()
    assert (out / CKPT / "checkpoint").read_text().strip() == "model.pth.tar-1"
    assert not (out / CKPT / "model.pth.tar-2").exists()
    monkeypatch.undo()
    rc, err = run(argv(data_root, tmp_path / "eval", "--calib", "--eval-only", "--model-dir", out, "--load-epoch", 1,
                       epochs=2), capsys)  # the training run's settings (runs/eval_only.py)
    assert rc == 0, err
    assert torch.isfinite(load_ckpt(out, 1)["state_dict"]["ctx"]).all()


def test_non_finite_parameters_are_never_saved(data_root, tmp_path, capsys, monkeypatch):
    from trainers.base import PromptTrainer

    update = PromptTrainer.backward_and_update

    def blow_up_in_epoch_2(self, loss, terms):
        update(self, loss, terms)
        if self.epoch == 1:
            with torch.no_grad():
                self.model.ctx.fill_(float("inf"))

    monkeypatch.setattr(PromptTrainer, "backward_and_update", blow_up_in_epoch_2)
    out = tmp_path / "inf"
    rc, err = run(argv(data_root, out, epochs=2, opts=("TRAIN.CHECKPOINT_FREQ", "1")), capsys)
    assert_one_clear_error(rc, err, "learnable parameters ['ctx'] became NaN/inf in epoch 2")
    assert (out / CKPT / "checkpoint").read_text().strip() == "model.pth.tar-1"
    assert not (out / CKPT / "model.pth.tar-2").exists() and not (out / "results.json").exists()


# --------------------------------------------------------------------------------------------------- 4. integrity
def test_checkpoint_records_sha256_and_config(trained):
    ckpt = load_ckpt(trained, 2)
    torch.load(trained / CKPT / "model.pth.tar-2", weights_only=True)  # plain data and tensors only
    assert set(ckpt["rng"]) >= {"python", "numpy", "torch", "generators"}
    assert ckpt["sha256"] == state_sha256(ckpt["state_dict"]) and len(ckpt["sha256"]) == 64
    assert ckpt["config"]["OPTIM.LR"] == 0.002 and ckpt["config"]["TRAINER.NAME"] == "CoOp"
    assert ckpt["config"]["DATASET.NUM_SHOTS"] == 2 and ckpt["epoch"] == 2
    assert ckpt["meta"]["backbone"] == "tiny-vit" and ckpt["meta"]["method_cfg"]["N_CTX"] == 16
    # the hash sees every value: one changed element changes it
    changed = dict(ckpt["state_dict"], ctx=ckpt["state_dict"]["ctx"].clone())
    changed["ctx"][3, 5] += 1e-6
    assert state_sha256(changed) != ckpt["sha256"]


def test_tampered_checkpoint_is_reported(data_root, trained, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(trained, copy)
    ckpt = load_ckpt(copy, 2)
    ckpt["state_dict"]["ctx"][0, 0] += 1.0
    torch.save(ckpt, copy / CKPT / "model.pth.tar-2")
    rc, err = run(argv(data_root, tmp_path / "e", "--eval-only", "--model-dir", copy, "--load-epoch", 2), capsys)
    assert_one_clear_error(rc, err, str(copy / CKPT / "model.pth.tar-2"), "does not match its recorded sha256")


def test_resume_refuses_a_checkpoint_of_another_config(data_root, trained, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(trained, copy)
    (copy / "results.json").unlink()
    rc, err = run(argv(data_root, copy, epochs=2, opts=("TRAIN.CHECKPOINT_FREQ", "1", "OPTIM.LR", "0.01")), capsys)
    assert_one_clear_error(rc, err, "cannot resume from", "OPTIM.LR: checkpoint 0.002 vs this run 0.01")
    # the same command resumes; keys that do not change training (here PRINT_FREQ, CHECKPOINT_FREQ) may differ
    rc, err = run(argv(data_root, copy, epochs=2, opts=("TRAIN.PRINT_FREQ", "5")), capsys)
    assert rc == 0, err
    assert "Resumed at epoch 2" in (copy / "log.txt").read_text() and (copy / "results.json").exists()


def test_tampered_fewshot_cache_is_detected_and_drawn_again(tmp_path):
    root = new_folder(tmp_path / "data")
    assert run(argv(root, tmp_path / "first", "--no-train"))[0] == 0
    cache = root / "split_fewshot" / "shot_2-seed_1.json"
    original = json.loads(cache.read_text())
    tampered = dict(original, train=[original["val"][0]] + original["train"][1:])  # content_sha256 kept
    cache.write_text(json.dumps(tampered))
    assert run(argv(root, tmp_path / "second", "--no-train"))[0] == 0
    log = (tmp_path / "second" / "log.txt").read_text()
    assert f"Few-shot cache {cache} was modified after it was written" in log
    assert json.loads(cache.read_text()) == original  # the same seed draws the same subset again


# ------------------------------------------------------------------------------------------------ 5. determinism
@pytest.fixture
def restore_determinism():
    yield
    torch.use_deterministic_algorithms(False)


def test_deterministic_runs_are_identical(data_root, tmp_path, restore_determinism):
    """Two shuffled batches per epoch, random crops and flips: still byte-identical."""
    opts = ("DATALOADER.TRAIN_X.BATCH_SIZE", "4", "TEST.FEATURE_CACHE", "False")
    for name in ("a", "b"):
        assert run(argv(data_root, tmp_path / name, "--deterministic", epochs=2, opts=opts))[0] == 0
    a, b = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("a", "b"))
    assert a["metrics"] == b["metrics"]
    np.testing.assert_array_equal(np.load(tmp_path / "a" / "predictions.npz")["logits"],
                                  np.load(tmp_path / "b" / "predictions.npz")["logits"])
    ca, cb = load_ckpt(tmp_path / "a", 2), load_ckpt(tmp_path / "b", 2)
    assert ca["sha256"] == cb["sha256"] and torch.equal(ca["state_dict"]["ctx"], cb["state_dict"]["ctx"])
    assert ca["optimizer"]["state"][0]["momentum_buffer"].abs().sum() > 0  # it did train


def test_seed_fixes_fewshot_draw_and_initialisation(tmp_path, monkeypatch):
    import dassl.engine

    built = []
    build = dassl.engine.build_trainer
    monkeypatch.setattr(dassl.engine, "build_trainer", lambda cfg: built.append(build(cfg)) or built[-1])

    def draw(root, seed):
        args = argv(root, tmp_path / f"out-{root.name}-{seed}", "--no-train")
        args[args.index("--seed") + 1] = str(seed)
        assert run(args)[0] == 0
        return (root / "split_fewshot" / f"shot_2-seed_{seed}.json").read_bytes(), built[-1].model.ctx.detach()

    cache1, ctx1 = draw(new_folder(tmp_path / "one"), 1)
    cache2, ctx2 = draw(new_folder(tmp_path / "two"), 1)  # an identical folder elsewhere: drawn afresh
    cache3, ctx3 = draw(tmp_path / "one", 2)
    assert cache1 == cache2 and torch.equal(ctx1, ctx2)
    assert json.loads(cache1)["train"] != json.loads(cache3)["train"] and not torch.equal(ctx1, ctx3)


class _Noise(torch.utils.data.Dataset):
    """Returns its index and random numbers drawn where a worker draws them (augmentations)."""

    def __init__(self, cfg, data_source, transform=None, is_train=False):
        self.data_source = data_source

    def __len__(self):
        return len(self.data_source)

    def __getitem__(self, i):
        return {"index": i, "torch": torch.rand(()), "numpy": float(np.random.rand())}


@pytest.mark.parametrize("workers", [0, 1])
def test_loader_order_and_worker_seeds_follow_the_run_seed(workers):
    from dassl.config import get_cfg_default
    from dassl.data import build_data_loader

    def epoch(seed):
        cfg = get_cfg_default()
        cfg.SEED, cfg.DATALOADER.NUM_WORKERS, cfg.USE_CUDA = seed, workers, False
        loader = build_data_loader(cfg, "RandomSampler", data_source=list(range(12)), batch_size=4,
                                   dataset_wrapper=_Noise)
        torch.rand(int(torch.randint(1, 50, ())))  # the global RNG has moved by an arbitrary amount
        batches = list(loader)
        order = torch.cat([b["index"] for b in batches]).tolist()
        if not workers:  # in the main process augmentations draw from the global RNG (seeded by train.py)
            return order,
        return (order, torch.cat([b["torch"] for b in batches]).tolist(),
                torch.cat([b["numpy"] for b in batches]).tolist())

    first, again, other = epoch(5), epoch(5), epoch(6)
    assert sorted(first[0]) == list(range(12)) and first[0] != list(range(12))
    assert first == again
    assert other[0] != first[0]
    if workers:  # worker RNGs (torch and numpy) come from the loader's seeded generator
        assert other[1] != first[1] and other[2] != first[2]


def test_log_shows_the_result_block_only_after_the_run_record(data_root, trained, tmp_path, monkeypatch):
    """Log parsers take "* accuracy:" as "finished": a run killed while writing its record must not print it."""
    from trainers.base import PromptTrainer

    evaluate = ("--eval-only", "--model-dir", trained, "--load-epoch", 2)

    def killed(self, *args, **kwargs):
        raise KeyboardInterrupt  # what a kill between the metrics and the record looks like to the trainer

    monkeypatch.setattr(PromptTrainer, "write_record", killed)
    rc, _ = run(argv(data_root, tmp_path / "killed", *evaluate, epochs=2))
    log = (tmp_path / "killed" / "log.txt").read_text()
    assert rc != 0 and "Evaluate on the *test* set" in log and "* accuracy:" not in log
    assert not (tmp_path / "killed" / "results.json").exists()

    monkeypatch.undo()
    rc, _ = run(argv(data_root, tmp_path / "done", *evaluate, epochs=2))
    log = (tmp_path / "done" / "log.txt").read_text()
    assert rc == 0 and log.index("Run record written") < log.index("* accuracy:")
