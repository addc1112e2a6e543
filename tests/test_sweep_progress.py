"""The sweep's console shows a running run's epoch and ETA (experiments/progress.py), and its thread policy
(experiments/run_policy.py: THREADS -> TRAIN.NUM_THREADS) reaches train.py."""
from __future__ import annotations

import io
import re
import sys
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from tests.helpers import make_image_folder
from experiments import progress, run_policy
from tools import sweep as sweep_tool

ENGINE_LINE = ("epoch [{e}/20] batch [10/12] time 0.051 (0.060) data 0.001 (0.002) loss 1.2000 (1.3000) "
               "lr 2.0000e-03 eta {eta}")
FAKE_RUN = """\
import sys, time
for e in range(1, 4):
    print("epoch [%d/3] batch [1/1] time 0.1 (0.1) data 0.0 (0.0) loss 1.0 (1.0) lr 1e-3 eta 0:00:%02d"
          % (e, 9 - 3 * e), flush=True)
    time.sleep(0.4)
print("Finish training", flush=True)
time.sleep(0.4)
sys.exit(3)
"""


def test_read_progress_takes_the_last_engine_line(tmp_path):
    log = tmp_path / "console.log"
    assert progress.read_progress(log) is None                       # not written yet
    log.write_text("Loading CLIP ...\n")
    assert progress.read_progress(log) is None
    log.write_text("\n".join([ENGINE_LINE.format(e=2, eta="0:01:10"), ENGINE_LINE.format(e=3, eta="0:00:41"),
                              "* accuracy: 50.0%"]) + "\n")
    assert progress.read_progress(log) == "epoch 3/20  ETA 0:00:41"
    log.write_text(ENGINE_LINE.format(e=20, eta="0:00:00") + "\nFinish training\nEvaluate on the *test* set\n")
    assert progress.read_progress(log) == "evaluating"
    log.write_text("x" * (3 * progress.TAIL_BYTES) + "\n" + ENGINE_LINE.format(e=7, eta="0:00:05") + "\n")
    assert progress.read_progress(log) == "epoch 7/20  ETA 0:00:05"   # only the tail is read
    log.write_text("drawing the Toy dataset into d/toy:  50%|#####     | 1449/2880 [01:16<00:59, 24.28img/s]\r"
                   "drawing the Toy dataset into d/toy:  51%|#####     | 1461/2880 [01:17<01:00, 23.54img/s]")
    assert progress.read_progress(log) == "drawing the Toy dataset into d/toy 50%  ETA 01:00"


@pytest.mark.parametrize("tty", [False, True])
def test_run_logged_shows_each_epoch_and_returns_the_exit_code(tmp_path, tty):
    (tmp_path / "fake.py").write_text(FAKE_RUN)
    out = io.StringIO()
    rc = progress.run_logged([sys.executable, str(tmp_path / "fake.py")], tmp_path / "console.log", "  train",
                             out=out, interval=0.05, tty=tty)
    assert rc == 3
    assert "Finish training" in (tmp_path / "console.log").read_text()
    text = out.getvalue()
    if not tty:   # one line per epoch, in order, no "evaluating" line
        assert text.splitlines() == [f"  train epoch {e}/3  ETA 0:00:{9 - 3 * e:02d}" for e in (1, 2, 3)]
    else:         # one line rewritten in place, cleared at the end
        assert "\n" not in text and "\r  train epoch 3/3  ETA 0:00:00" in text and "\r  train evaluating" in text
        assert text.endswith("\r")


def test_thread_policy():
    assert run_policy.thread_opts(None, "toy-clip") == ["TRAIN.NUM_THREADS", "1"]
    assert run_policy.thread_opts(None, "tiny-vit") == ["TRAIN.NUM_THREADS", "1"]
    assert run_policy.thread_opts(None, "ViT-B/16") == [] and run_policy.thread_opts(None, None) == []
    assert run_policy.thread_opts(2, "toy-clip") == ["TRAIN.NUM_THREADS", "2"]
    assert run_policy.thread_opts(0, "toy-clip") == []
    assert [run_policy.parse_threads(t) for t in ("", "auto", "0", "3")] == [None, 0, 0, 3]
    for bad in ("-1", "two"):
        with pytest.raises(run_policy.ThreadsError, match="THREADS="):
            run_policy.parse_threads(bad)


def _commands(env: dict[str, str]) -> list[str]:
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert sweep_tool.main(["base2novel", "coop", env.pop("DATASET", "toy")], env=dict(env, DRY_RUN="1")) == 0
    return buf.getvalue().splitlines()


def test_sweep_puts_the_thread_count_in_every_command(capsys):
    toy = _commands({"SEEDS": "1", "CALIB": "off"})
    assert len(toy) == 2 and all(" TRAIN.NUM_THREADS 1 " in c for c in toy)
    assert all(" TRAIN.NUM_THREADS 2 " in c for c in _commands({"SEEDS": "1", "CALIB": "off", "THREADS": "2"}))
    real = _commands({"SEEDS": "1", "CALIB": "off", "DATASET": "caltech101"})
    assert not any("TRAIN.NUM_THREADS" in c for c in real)                  # ViT-B/16: torch's default
    # the user's OPTS come last and win
    opts = _commands({"SEEDS": "1", "CALIB": "off", "OPTS": "TRAIN.NUM_THREADS 4"})
    assert all(c.index("TRAIN.NUM_THREADS 1") < c.index("TRAIN.NUM_THREADS 4") for c in opts)
    assert sweep_tool.main(["base2novel", "coop", "toy"], env={"THREADS": "many", "DRY_RUN": "1"}) == 2
    assert capsys.readouterr().err.startswith("error: THREADS='many'")


def test_sweep_console_shows_epoch_and_eta_of_a_tiny_run(tmp_path, monkeypatch, capsys):
    """Through tools/sweep.py: a tiny-vit run of 5 epochs; the console (not a TTY here) shows epoch lines with the
    engine's ETA between the unit line and the result line, and train.py applied one torch thread."""
    data = make_image_folder(tmp_path / "data", n_classes=4, per_class=8)
    monkeypatch.setattr(progress, "run_logged", _fast(progress.run_logged))
    env = dict(DATA=str(data), OUTPUT=str(tmp_path / "out"), BACKBONE="tiny-vit", SEEDS="1", CALIB="off", SHOTS="2",
               OPTS="OPTIM.MAX_EPOCH 5 DATALOADER.NUM_WORKERS 0 DATALOADER.TRAIN_X.BATCH_SIZE 2",
               CALIB_PROMPT_CACHE=str(tmp_path / "cache"))
    assert sweep_tool.main(["base2novel", "coop", "imagefolder"], env=env) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "[1/1] coop imagefolder seed 1 plain"
    epochs = [l for l in lines if re.fullmatch(r"  train_base +epoch [1-5]/5  ETA \d+:\d\d:\d\d", l)]
    assert epochs, "\n".join(lines)
    result = next(i for i, l in enumerate(lines) if l.startswith("  train_base ") and "acc " in l)
    assert lines.index(epochs[-1]) < result
    log = next((tmp_path / "out").rglob("train_base/**/console.log")).read_text()
    assert "torch threads: 1 (TRAIN.NUM_THREADS 1)" in log


def _fast(fn):
    def run(*a, **k):
        k["interval"] = 0.02
        return fn(*a, **k)
    return run
