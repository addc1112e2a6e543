"""The toy world's two facts, end to end with the shipped toy-clip through the quick start's own path
(tools/sweep.py -> train.py, the Toy dataset drawn on first use): zero-shot transfers to the new classes far above
chance, and CoOp's prompts tuned on the base classes beat zero-shot on them.

One seed, no --calib, and 10 epochs instead of the quick start's 20 keep it near a minute on 2 cores; the
quick start's 3-seed numbers (README) show the gap at 20 epochs.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import sweep as sweep_tool  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.e2e]  # pytest.ini: the quick tier skips these

CHANCE = 100.0 / 24  # each half is a 24-way problem
# Accuracy points CoOp must gain on base. With the shipped checkpoint, 10 epochs gave +3.3, +3.8 and +2.9 over
# seeds 1-3 when written (the previous checkpoint, same recipe but other bits, gave +5.6 to +8.1: how much of the
# faded-colour headroom CoOp takes varies between equally trained toy-clips).
MARGIN = 2.0


def _result(out: Path, stage: str, trainer: str) -> dict:
    found = sorted((out / "base2new" / stage / "toy").glob(f"*/{trainer}/*/seed1/results.json"))
    assert len(found) == 1, found
    return json.loads(found[0].read_text())


@pytest.fixture(scope="module")
def toy_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy_e2e")
    env = dict(os.environ, DATA=str(root / "data"), OUTPUT=str(root / "output"), SEEDS="1", CALIB="off",
               OPTS="OPTIM.MAX_EPOCH 10", CALIB_PROMPT_CACHE=str(root / "cache"), PYTHON=sys.executable)
    for method in ("zsclip", "coop"):
        assert sweep_tool.main(["base2novel", method, "toy"], env=env) == 0
    out = root / "output"
    return {(trainer, stage): _result(out, stage, trainer)
            for trainer in ("ZeroshotCLIP", "CoOp") for stage in ("train_base", "test_new")}


def test_runs_use_toy_clip_and_the_toy_protocol(toy_runs):
    run = toy_runs["CoOp", "train_base"]["run"]
    assert run["backbone"] == "toy-clip" and run["subsample"] == "base" and run["shots"] == 16
    assert toy_runs["ZeroshotCLIP", "test_new"]["run"]["subsample"] == "new"


def test_zero_shot_on_new_classes_is_far_above_chance(toy_runs):
    assert toy_runs["ZeroshotCLIP", "test_new"]["metrics"]["accuracy"] > 10 * CHANCE


def test_coop_beats_zero_shot_on_base_classes(toy_runs):
    zs = toy_runs["ZeroshotCLIP", "train_base"]["metrics"]["accuracy"]
    coop = toy_runs["CoOp", "train_base"]["metrics"]["accuracy"]
    assert coop > zs + MARGIN, (coop, zs)
