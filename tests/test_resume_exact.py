"""A default run resumes exactly (issue 24, item 2): a run stopped after any epoch and run again with the same
command ends with the same record, bit for bit on the CPU, as one that never stopped; checkpoint cadence is not
part of the run identity, and only the last checkpoint is kept by default."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest

import train
from tests.helpers import coop_argv, make_image_folder

EPOCHS = 3
# a cosine schedule with warmup, augmentation and shuffling: every RNG and every state a resume must restore
OPTS = ("DATASET.NUM_SHOTS", "2", "OPTIM.MAX_EPOCH", str(EPOCHS), "USE_CUDA", "False",
        "DATALOADER.TRAIN_X.BATCH_SIZE", "2")


class Stop(KeyboardInterrupt):
    """What a pre-empted job looks like to the trainer."""


def run(root, out, workers=0) -> int:
    saved = sys.stdout
    try:
        # coop_argv sets NUM_WORKERS 0; the last value wins
        return train.cli([str(a) for a in coop_argv(root, out, "--calib",
                                                    opts=OPTS + ("DATALOADER.NUM_WORKERS", str(workers)))])
    finally:
        sys.stdout = saved


def record(out):
    results = json.loads((out / "results.json").read_text())
    with np.load(out / "predictions.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    return results, arrays


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("data"), n_classes=4, per_class=8, size=16)


@pytest.fixture(scope="module")
def uninterrupted(data_root, tmp_path_factory):
    """The reference runs, by loader worker count (0: in the main process; 2: persistent worker processes, whose
    augmentation streams a resume replays)."""
    refs = {}

    def get(workers):
        if workers not in refs:
            refs[workers] = tmp_path_factory.mktemp(f"ref{workers}")
            assert run(data_root, refs[workers], workers) == 0
        return refs[workers]
    return get


@pytest.mark.slow
@pytest.mark.parametrize("stop_after,workers", [(1, 0), (2, 0), (1, 2)])
def test_a_stopped_run_resumes_to_the_same_record(data_root, uninterrupted, tmp_path, monkeypatch, stop_after,
                                                  workers):
    from trainers.base import PromptTrainer

    def stop(self):
        if self.epoch == stop_after:  # epochs 1..stop_after finished and checkpointed
            raise Stop

    monkeypatch.setattr(PromptTrainer, "before_epoch", stop, raising=False)
    out = tmp_path / "run"
    assert run(data_root, out, workers) == 130
    assert not (out / "results.json").exists()
    assert sorted(p.name for p in (out / "prompt_learner").iterdir()) == ["checkpoint", f"model.pth.tar-{stop_after}"]
    monkeypatch.undo()

    assert run(data_root, out, workers) == 0  # the same command
    assert f"Resumed at epoch {stop_after}" in (out / "log.txt").read_text()
    (res, arrays), (ref_res, ref_arrays) = record(out), record(uninterrupted(workers))
    assert res["metrics"] == ref_res["metrics"]
    assert res["run"]["identity"] == ref_res["run"]["identity"]
    assert sorted(arrays) == sorted(ref_arrays)
    for k in arrays:
        assert np.array_equal(arrays[k], ref_arrays[k]), k
    # by default only the last checkpoint stays
    assert sorted(p.name for p in (out / "prompt_learner").iterdir()) == ["checkpoint", f"model.pth.tar-{EPOCHS}"]


def test_checkpoint_cadence_is_not_identity():
    """Asking for more checkpoints after the fact keeps the run's folder and identity (so it can still resume)."""
    from runs.identity import identity_free, options, options_id

    assert identity_free("TRAIN.CHECKPOINT_FREQ")
    assert options(["TRAIN.CHECKPOINT_FREQ", "5"]) == {} and options_id(["TRAIN.CHECKPOINT_FREQ", "5"]) is None
