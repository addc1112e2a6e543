"""Lockstep training (runs/lockstep.py, ``train.py ... --and ...``): runs that differ only in their loss share one
data stream and one frozen image pass, and each writes exactly its lone run's predictions, bit for bit (CPU)."""
from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest
import torch

import train
from tests.helpers import REPO, coop_argv, make_image_folder, run_train

PRODA_CFG = str(REPO / "configs/trainers/ProDA/vit_b16_c16_ep100_batch4.yaml")
# the same data settings for every run (ProDA's config has batch 4, CoOp's 32); a checkpoint every epoch (resume)
OPTS = ("DATASET.NUM_SHOTS", "4", "DATASET.SUBSAMPLE_CLASSES", "base", "OPTIM.MAX_EPOCH", "2",
        "DATALOADER.TRAIN_X.BATCH_SIZE", "4", "TRAIN.CHECKPOINT_FREQ", "1", "TRAIN.NUM_THREADS", "1")


def proda_argv(root, out, *extra):
    argv = coop_argv(root, out, *extra, trainer="ProDA",
                     opts=OPTS + ("TRAINER.PRODA.N_PROMPT", "8", "TRAINER.PRODA.PROMPT_BS", "4"))
    argv[argv.index("--config-file") + 1] = PRODA_CFG
    return argv


def variants(root, out):
    """plain CoOp, CoOp --calib, and two ProDA runs (each draws random permutations every step: they must not
    draw from each other's stream), plain and with the train-time baseline mbls."""
    return {"plain": coop_argv(root, out / "plain", opts=OPTS),
            "calib": coop_argv(root, out / "calib", "--calib", opts=OPTS),
            "proda": proda_argv(root, out / "proda"),
            "proda_mbls": proda_argv(root, out / "proda_mbls", "--calib", "mbls")}


def assert_same_predictions(a, b):
    pa, pb = np.load(a / "predictions.npz"), np.load(b / "predictions.npz")
    assert sorted(pa.files) == sorted(pb.files)
    for key in pa.files:
        assert np.array_equal(pa[key], pb[key]), f"{key} differs between {a} and {b}"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("imagefolder"))


@pytest.fixture(scope="module")
def alone(data_root, tmp_path_factory, one_thread):
    out = tmp_path_factory.mktemp("alone")
    for argv in variants(data_root, out).values():
        assert run_train(argv) == 0
    return out


@pytest.mark.slow
@pytest.mark.e2e
def test_lockstep_equals_lone_runs_bit_for_bit(data_root, alone, tmp_path, one_thread):
    runs = variants(data_root, tmp_path)
    assert run_train(train.lockstep_argv(list(runs.values()))) == 0
    for name in runs:
        assert_same_predictions(alone / name, tmp_path / name)
        log = (tmp_path / name / "log.txt").read_text()
        assert "epoch [2/2]" in log and "* accuracy:" in log and "Training 4 runs in lockstep" not in log
        res = json.loads((tmp_path / name / "results.json").read_text())["run"]
        lone = json.loads((alone / name / "results.json").read_text())["run"]
        assert res["identity"] == lone["identity"] and (tmp_path / name / "config.yaml").is_file()
    # every member's checkpoint holds what its lone run's holds (parameters, optimiser, RNG and data-stream state)
    for name in runs:
        ours = torch.load(next((tmp_path / name).glob("*/model.pth.tar-2")), weights_only=False)
        theirs = torch.load(next((alone / name).glob("*/model.pth.tar-2")), weights_only=False)
        for k in theirs["state_dict"]:
            assert torch.equal(ours["state_dict"][k], theirs["state_dict"][k])
        for k, g in theirs["rng"]["generators"].items():
            assert torch.equal(ours["rng"]["generators"][k], g), k
        assert torch.equal(ours["rng"]["torch"], theirs["rng"]["torch"])

    # finished members are skipped; a group whose members resume from different epochs trains each from where
    # it stopped: plain from its epoch-1 checkpoint (joining at epoch 2), calib from scratch, and both still
    # equal their lone runs
    stamps = {name: (tmp_path / name / "results.json").stat().st_mtime_ns for name in runs}
    assert run_train(train.lockstep_argv(list(runs.values()))) == 0
    assert stamps == {name: (tmp_path / name / "results.json").stat().st_mtime_ns for name in runs}
    for name in ("plain", "calib"):
        for f in ("results.json", "predictions.npz"):
            (tmp_path / name / f).unlink()
    (next((tmp_path / "plain").glob("*/checkpoint"))).write_text("model.pth.tar-1\n")
    shutil.rmtree(next(p for p in (tmp_path / "calib").iterdir() if (p / "checkpoint").is_file()))
    assert run_train(train.lockstep_argv(list(runs.values()))) == 0
    for name in runs:
        assert_same_predictions(alone / name, tmp_path / name)


def test_lockstep_refuses_runs_of_other_data_settings(tmp_path, capsys):
    root = make_image_folder(tmp_path / "data", n_classes=2, per_class=2)
    a = coop_argv(root, tmp_path / "a", opts=OPTS)
    b = coop_argv(root, tmp_path / "b", "--calib", opts=OPTS)
    b[b.index("--seed") + 1] = "2"
    assert run_train(train.lockstep_argv([a, b])) == 1
    err = capsys.readouterr().err
    assert "SEED: 1 (run 1) vs 2 (run 2)" in err and "LOCKSTEP=0" in err
    assert not (tmp_path / "a").exists()  # nothing touched


def test_lockstep_refuses_evaluations_and_shared_folders(tmp_path, capsys):
    root = make_image_folder(tmp_path / "data", n_classes=2, per_class=2)
    a = coop_argv(root, tmp_path / "a", opts=OPTS)
    assert run_train(train.lockstep_argv([a, coop_argv(root, tmp_path / "a", "--calib", opts=OPTS)])) == 1
    assert "same --output-dir" in capsys.readouterr().err
    ev = coop_argv(root, tmp_path / "e", "--eval-only", "--model-dir", str(tmp_path / "a"), opts=OPTS)
    assert run_train(train.lockstep_argv([a, ev])) == 1
    assert "--eval-only" in capsys.readouterr().err


def test_split_and_join_are_inverse():
    runs = [["--seed", "1", "--output-dir", "a"], ["--calib", "--output-dir", "b"], ["--output-dir", "c"]]
    assert train.split_lockstep(train.lockstep_argv(runs)) == runs
    assert train.split_lockstep(["--seed", "1"]) == [["--seed", "1"]]


@pytest.mark.slow
def test_image_prompted_methods_are_refused(tmp_path, capsys, one_thread):
    root = make_image_folder(tmp_path / "data", n_classes=4, per_class=4)
    cfg = str(REPO / "configs/trainers/VPT/vit_b16_c2_ep5_batch4_4.yaml")
    runs = []
    for name, extra in (("plain", ()), ("calib", ("--calib",))):
        argv = coop_argv(root, tmp_path / name, *extra, trainer="VPT", opts=OPTS)
        argv[argv.index("--config-file") + 1] = cfg
        runs.append(argv)
    assert run_train(train.lockstep_argv(runs)) == 1
    assert "prompts the image tower" in capsys.readouterr().err
    assert not (tmp_path / "plain" / "log.txt").exists()  # refused before any folder was started


@pytest.mark.slow
@pytest.mark.e2e
def test_sweep_trains_a_methods_variants_in_lockstep(tmp_path):
    """LOCKSTEP (default on): the plain and --calib training runs of one seed run as one train.py; their units
    then find the calib run done; the evaluations run as before."""
    import os
    import subprocess

    data = make_image_folder(tmp_path / "data", n_classes=4, per_class=8)
    out = tmp_path / "output"
    env = dict(os.environ, DATA=str(data), OUTPUT=str(out), BACKBONE="tiny-vit", SEEDS="1", CALIB="both",
               SHOTS="2", PYTHON=sys.executable, OPTS="OPTIM.MAX_EPOCH 1 DATALOADER.NUM_WORKERS 0 "
               "DATALOADER.TRAIN_X.BATCH_SIZE 4 DATALOADER.TEST.BATCH_SIZE 32")
    res = subprocess.run([sys.executable, "tools/sweep.py", "base2novel", "coop", "imagefolder"], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("in lockstep with") == 1
    assert len(list(out.rglob("results.json"))) == 4
    assert "Training 2 runs in lockstep" in "".join(p.read_text() for p in out.rglob("console.log"))


@pytest.mark.slow
@pytest.mark.e2e
def test_slurm_task_trains_its_group_in_lockstep(data_root, tmp_path, one_thread, capsys):
    """run_chain (inside an array task) trains the merged task's training runs in one process, then the
    evaluations; finished runs are skipped."""
    from experiments.commands import parse_commands
    from experiments.launch_slurm import payload, run_chain

    opts = OPTS[:2] + ("DATASET.SUBSAMPLE_CLASSES", "base") + OPTS[4:]
    lines = []
    for name, extra in (("plain", ()), ("calib", ("--calib",))):
        base = coop_argv(data_root, tmp_path / name, *extra, opts=opts)
        new = coop_argv(data_root, tmp_path / f"{name}_new", *extra, "--eval-only", "--model-dir",
                        str(tmp_path / name), opts=OPTS[:2] + ("DATASET.SUBSAMPLE_CLASSES", "new"))
        lines += [" ".join([sys.executable, "train.py", *base]), " ".join([sys.executable, "train.py", *new])]
    jobs = parse_commands(lines)
    order = [jobs[0], jobs[2], jobs[1], jobs[3]]  # merge_chains' order: the group, then the evaluations
    done = run_chain(str(REPO), [payload(j, jobs) for j in order])
    assert len(done) == 4 and all((tmp_path / n / "results.json").is_file()
                                  for n in ("plain", "calib", "plain_new", "calib_new"))
    printed = capsys.readouterr().out
    assert "run in lockstep:" in printed and printed.count("skip (finished)") == 2


@pytest.mark.slow
@pytest.mark.e2e
def test_a_failing_member_stops_alone(data_root, alone, tmp_path, one_thread, capsys):
    """A member whose loss becomes NaN stops with its error in its log; the others finish with their lone runs'
    predictions; the command exits 1 naming the failed run."""
    plain = coop_argv(data_root, tmp_path / "plain", opts=OPTS)
    wild = coop_argv(data_root, tmp_path / "wild", "--calib", opts=OPTS + ("OPTIM.LR", "1e30"))
    assert run_train(train.lockstep_argv([wild, plain])) == 1
    err = capsys.readouterr().err
    assert "wild failed at epoch" in err and "non-finite loss" in err
    assert "non-finite loss" in (tmp_path / "wild" / "log.txt").read_text()
    assert not (tmp_path / "wild" / "results.json").exists()
    assert_same_predictions(alone / "plain", tmp_path / "plain")


@pytest.mark.slow
@pytest.mark.e2e
def test_a_group_resumed_with_persistent_workers_equals_its_lone_runs(data_root, tmp_path, one_thread):
    """With persistent loader workers the augmentation streams live in the worker processes; a group whose members
    all resume at epoch 1 replays the shared loader's first epoch (as a lone run's resume does) and still writes its
    lone runs' predictions bit for bit."""
    opts = OPTS + ("DATALOADER.NUM_WORKERS", "2")
    runs = {"plain": coop_argv(data_root, tmp_path / "g" / "plain", opts=opts),
            "calib": coop_argv(data_root, tmp_path / "g" / "calib", "--calib", opts=opts)}
    for name, argv in runs.items():
        assert run_train([*argv[:argv.index("--output-dir") + 1], str(tmp_path / "alone" / name),
                    *argv[argv.index("--output-dir") + 2:]]) == 0
    assert run_train(train.lockstep_argv(list(runs.values()))) == 0
    for name in runs:  # both stopped after epoch 1: the group starts at epoch 2
        for f in ("results.json", "predictions.npz"):
            (tmp_path / "g" / name / f).unlink()
        (next((tmp_path / "g" / name).glob("*/checkpoint"))).write_text("model.pth.tar-1\n")
    assert run_train(train.lockstep_argv(list(runs.values()))) == 0
    for name in runs:
        assert "Previous epoch: 1" in (tmp_path / "g" / name / "log.txt").read_text()
        assert_same_predictions(tmp_path / "alone" / name, tmp_path / "g" / name)
