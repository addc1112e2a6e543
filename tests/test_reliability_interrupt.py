"""Interruption with real processes: ``python train.py`` killed with SIGKILL after its first checkpoint leaves no
results.json; rerunning the same command resumes from the last checkpoint and ends exactly where an uninterrupted run
ends (lr trajectory, scheduler, parameters). A kill during the evaluation of a rerun leaves no results.json either.
"""
from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import pytest
import torch

import train
from tests.helpers import REPO, coop_argv, make_image_folder

EPOCHS = 3
LR_LINE = re.compile(r"^epoch \[(\d+)/\d+\] batch \[(\d+)/\d+\] .* lr (\S+) eta", re.M)



def argv(root, out):
    # 8 batches of 1 image per epoch: slow enough to be killed mid-run after the first checkpoint
    return coop_argv(root, out, opts=("DATASET.NUM_SHOTS", "2", "OPTIM.MAX_EPOCH", str(EPOCHS), "USE_CUDA", "False",
                                      "TRAIN.CHECKPOINT_FREQ", "1", "DATALOADER.TRAIN_X.BATCH_SIZE", "1"))


def run_inprocess(args) -> int:
    saved = sys.stdout
    try:
        return train.cli([str(a) for a in args])
    finally:
        sys.stdout = saved


def lrs(log: str) -> dict[tuple[int, int], str]:
    return {(int(e), int(b)): lr for e, b, lr in LR_LINE.findall(log)}


def ckpt(out, epoch):
    return torch.load(out / "prompt_learner" / f"model.pth.tar-{epoch}", map_location="cpu", weights_only=False)


@pytest.mark.slow
def test_sigkill_then_rerun_resumes_on_schedule(tmp_path):
    root = make_image_folder(tmp_path / "data", n_classes=4, per_class=8, size=16)
    ref, out = tmp_path / "uninterrupted", tmp_path / "killed"
    assert run_inprocess(argv(root, ref)) == 0

    # 1. a real process, SIGKILLed as soon as its first checkpoint exists
    pointer = out / "prompt_learner" / "checkpoint"
    with open(tmp_path / "stderr.txt", "w") as stderr:
        proc = subprocess.Popen([sys.executable, "train.py", *map(str, argv(root, out))], cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.time() + 300
        while not pointer.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        code = proc.wait()
    assert code == -signal.SIGKILL, f"ended before the kill:\n{(tmp_path / 'stderr.txt').read_text()[-3000:]}"
    assert not (out / "results.json").exists()
    saved = pointer.read_text().strip()
    k = int(saved.rsplit("-", 1)[1])
    assert 1 <= k < EPOCHS and not (out / "prompt_learner" / f"model.pth.tar-{EPOCHS}").exists()
    killed_log = (out / "log.txt").read_text()

    # 2. the same command again: resumes from epoch k and completes
    assert run_inprocess(argv(root, out)) == 0
    log = (out / "log.txt").read_text()
    assert f"Resumed at epoch {k}" in log and (out / "results.json").exists()
    assert any(p.name.startswith("log.txt-") for p in out.iterdir())  # the killed run's log is kept aside
    resumed = lrs(log)
    assert min(e for e, _ in resumed) == k + 1  # epochs 1..k are not trained again
    trajectory = {key: v for key, v in lrs(killed_log).items() if key[0] <= k} | resumed
    expected = lrs((ref / "log.txt").read_text())
    assert len(expected) == EPOCHS * 8 and trajectory == expected
    assert len(set(expected.values())) >= EPOCHS  # warmup lr, then cosine values: a schedule to get wrong

    final, final_ref = ckpt(out, EPOCHS), ckpt(ref, EPOCHS)
    assert final["scheduler"] == final_ref["scheduler"]
    assert final["optimizer"]["param_groups"] == final_ref["optimizer"]["param_groups"]
    # RNG states (data order, augmentations) were resumed too: the same parameters as the uninterrupted run
    torch.testing.assert_close(final["state_dict"]["ctx"], final_ref["state_dict"]["ctx"], rtol=0, atol=1e-6)

    # 3. once more, killed during evaluation (just before results.json is written): the stale one is gone
    kill_at_results = ("import os, signal, sys; import runs.record as r; "
                       "r.write_results = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL); "
                       "import train; sys.exit(train.cli(sys.argv[1:]))")
    done = subprocess.run([sys.executable, "-c", kill_at_results, *map(str, argv(root, out))], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    assert "Evaluate on the *test* set" in (out / "log.txt").read_text()
    assert (out / "predictions.npz").exists() and not (out / "results.json").exists()
    assert ckpt(out, EPOCHS)["sha256"] == final["sha256"]
