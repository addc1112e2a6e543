"""toy/headroom.py and tools/toy_headroom.py: the zero-shot vs linear-probe yardstick, and the README block writer
it shares with tools/update_readme.py (experiments/readme_blocks.py)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from experiments.readme_blocks import BlockError, replace_block
from toy import world
from toy.headroom import attribute_accuracy, fit_probe, headroom

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import toy_headroom  # noqa: E402
from update_readme import runs_time  # noqa: E402


def test_probe_without_steps_is_zero_shot():
    init = F.normalize(torch.randn(5, 8), dim=-1)
    assert torch.equal(fit_probe(torch.randn(10, 8), torch.arange(10) % 5, init, 20.0, steps=0), init)


def test_probe_fixes_a_wrong_start():
    """Two well-separated clusters whose zero-shot weights are swapped: the probe must end right on all points."""
    torch.manual_seed(0)
    centres = torch.eye(4)[:2]
    feats = F.normalize(centres.repeat_interleave(20, 0) + 0.1 * torch.randn(40, 4), dim=-1)
    targets = torch.arange(2).repeat_interleave(20)
    init = centres.flip(0)  # zero-shot gets every point wrong
    assert ((feats @ init.t()).argmax(1) == targets).sum() == 0
    w = fit_probe(feats, targets, init, scale=20.0, steps=200)
    assert ((feats @ w.t()).argmax(1) == targets).all()
    assert torch.allclose(w.norm(dim=-1), torch.ones(2))


@pytest.fixture(scope="module")
def model():
    import clip

    return clip.load("toy-clip")


def test_headroom_shape_and_fading_matters(model):
    res = headroom(model, 1.0, shots=1, test_per_class=2, steps=0)
    assert set(res) == {"base", "new"} and set(res["base"]) == {"zero_shot", "probe"}
    assert res["base"]["probe"] == res["base"]["zero_shot"]  # no steps: the probe is zero-shot
    grey = headroom(model, 0.0, shots=1, test_per_class=2, steps=0)  # no colour left: colour names can't help
    assert grey["base"]["zero_shot"] < res["base"]["zero_shot"]
    with pytest.raises(ValueError, match="shots"):
        headroom(model, 1.0, shots=10_000)


def test_attribute_accuracy_of_toy_clip(model):
    acc = attribute_accuracy(model, per_class=1)
    assert set(acc) == {"colour", "shape", "pattern"}
    assert acc["colour"] > 90 and acc["shape"] > 100 / 6  # colour near perfect; shapes above chance


def test_fade_keeps_grey_and_removes_colour():
    img, _ = world.render(world.CLASSES[0], np.random.default_rng(0))
    assert world.fade(img, 1.0) is img
    grey = torch.tensor(np.asarray(world.fade(img, 0.0))).float()
    assert (grey.max(-1).values - grey.min(-1).values).max() <= 1  # every pixel grey, to rounding
    half = torch.tensor(np.asarray(world.fade(img, 0.5))).float()
    orig = torch.tensor(np.asarray(img)).float()
    spread = lambda a: (a.max(-1).values - a.min(-1).values).mean()  # noqa: E731
    assert spread(half) == pytest.approx(spread(orig) / 2, abs=1.0)


def test_tool_prints_and_writes_the_block(tmp_path, capsys, monkeypatch):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{toy_headroom.BEGIN}\nold\n{toy_headroom.END}\noutro\n")
    fake = {"base": {"zero_shot": 60.0, "probe": 80.0}, "new": {"zero_shot": 50.0, "probe": 70.25}}
    monkeypatch.setattr("toy.headroom.headroom", lambda model, s, shots, n: fake)
    monkeypatch.setattr("toy.headroom.attribute_accuracy", lambda model, s, n: {"colour": 99.0, "shape": 40.0 * s,
                                                                                 "pattern": 90.0})
    monkeypatch.setattr("clip.load", lambda name: None)
    assert toy_headroom.main(["--saturation", "1", "0.5", "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("intro\n" + toy_headroom.BEGIN) and text.endswith(toy_headroom.END + "\noutro\n")
    assert "old" not in text and "| 0.5 " in text and "70.2" in text and "16-shot probe" in text
    assert "| shape       | 6         | 40.0" in text and "| 20.0 " in text  # attribute rows, one column per saturation
    assert "70.2" in capsys.readouterr().out


def test_replace_block_needs_both_markers(tmp_path):
    f = tmp_path / "x.md"
    f.write_text("no markers")
    with pytest.raises(BlockError, match="no <a> ... <b> block"):
        replace_block(f, "<a>", "<b>", "body")
    f.write_text("<b> end before begin <a>")
    with pytest.raises(BlockError, match="in that order"):
        replace_block(f, "<a>", "<b>", "body")
    assert f.read_text() == "<b> end before begin <a>"


def test_tool_rejects_more_images_than_the_dataset_has(capsys):
    with pytest.raises(SystemExit) as exit_:
        toy_headroom.main(["--shots", "31"])
    assert exit_.value.code == 2
    assert "--shots must be 1..30 and --test-per-class 1..20" in capsys.readouterr().err


def test_runs_time_sums_the_records_timings(tmp_path):
    import json

    def record(folder, trainer, dataset, timings):
        (tmp_path / folder).mkdir(parents=True)
        run = {"trainer": trainer, "dataset": dataset, "timings": timings}
        (tmp_path / folder / "results.json").write_text(json.dumps({"run": run}))

    record("a", "CoOp", "Toy", {"train_seconds": 100.0, "eval_seconds": 2.0})
    record("b", "ZeroshotCLIP", "Toy", {"train_seconds": None, "eval_seconds": 1.0})
    record("c", "CoOp", "Caltech101", {"train_seconds": 50.0, "eval_seconds": 1.0})
    record("d", "KgCoOp", "Toy", {"train_seconds": 70.0, "eval_seconds": 1.0})
    assert runs_time(tmp_path, ["CoOp", "ZeroshotCLIP"], "Toy") == (2, 103.0)
