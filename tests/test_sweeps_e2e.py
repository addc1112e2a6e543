"""scripts/base2novel.sh end to end: real train.py runs (CoOp, tiny-vit, 1 epoch, 2 shots) on a generated image
folder, ending with the summary table; a second call skips every finished run and returns in seconds."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import make_image_folder

pytestmark = [pytest.mark.slow, pytest.mark.e2e]  # pytest.ini: the quick tier skips these

REPO = Path(__file__).resolve().parents[1]
OPTS = ("OPTIM.MAX_EPOCH 1 DATALOADER.NUM_WORKERS 0 DATALOADER.TRAIN_X.BATCH_SIZE 4 DATALOADER.TEST.BATCH_SIZE 32")


def _engine_crash(out: Path) -> str | None:
    """The last line of a traceback in some run's console.log: train.py crashed inside the engine/trainers, not in
    the sweep (a sweep mistake would be a UserError message, which has no traceback)."""
    for log in sorted(out.rglob("console.log")):
        text = log.read_text(errors="replace")
        if "Traceback (most recent call last)" in text:
            return f"train.py crashed ({log}): {text.strip().splitlines()[-1]}"
    return None


def test_base2novel_script_end_to_end(tmp_path):
    data = make_image_folder(tmp_path / "data", n_classes=4, per_class=8)
    out = tmp_path / "output"
    # CALIB=on keeps the test near a minute (4 train.py processes); the plain variant is the same code path
    env = dict(os.environ, DATA=str(data), OUTPUT=str(out), BACKBONE="tiny-vit", SEEDS="1 2", CALIB="on",
               SHOTS="2", OPTS=OPTS, PYTHON=sys.executable)
    res = subprocess.run(["bash", "scripts/base2novel.sh", "coop", "imagefolder"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
    # a crash fails the test; the message names the run whose train.py raised, when one did
    assert res.returncode == 0, (_engine_crash(out) or "") + "\n" + res.stdout + res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == "[1/2] coop imagefolder seed 1 calib" and "[2/2] coop imagefolder seed 2 calib" in lines
    runs = sorted(p.parent.relative_to(out).as_posix() for p in out.rglob("results.json"))
    cfg = "CoOp/vit_b16_ep50_tiny-vit_calib_f9dc8012"  # + the id of the result-changing OPTS (runs/identity.py)
    assert runs == [f"base2new/{k}/imagefolder/shots_2/{cfg}/seed{s}" for k in ("test_new", "train_base")
                    for s in (1, 2)]
    header = next(i for i, l in enumerate(lines) if "Base acc" in l)
    assert "Base-to-novel: 2 shots, backbone tiny-vit" in res.stdout
    row = lines[header + 2]
    assert "CoOp [vit_b16_ep50, 1 ep]" in row and "TCPT" in row and row.count("±") == 4
    # second call: every run is finished, nothing is trained, the same table comes back
    t0 = time.time()
    again = subprocess.run(["bash", "scripts/base2novel.sh", "coop", "imagefolder"], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert time.time() - t0 < 20
    assert again.stdout.count("done already") == 4
    assert row in again.stdout.splitlines()
