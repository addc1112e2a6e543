"""tools/launch.py --backend slurm against a real one-node SLURM cluster (tests/slurm_cluster.py, started by the
``slurm_cluster`` fixture): a DRY_RUN toy sweep (CoOp, tiny-vit, 1 epoch, 2 shots) submitted as a job array and
followed to the end, a re-submission that skips finished runs, a failed task reported with its log tail, and
cancellation (Ctrl-C of the launcher, ``--cancel``) ending the running jobs."""
from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import time
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from tests.helpers import make_image_folder
from experiments import launch_slurm
from tools import launch
from tools import sweep as sweep_tool

REPO = Path(__file__).resolve().parents[1]
OPTS = "OPTIM.MAX_EPOCH 1 DATALOADER.NUM_WORKERS 0 DATALOADER.TRAIN_X.BATCH_SIZE 4 DATALOADER.TEST.BATCH_SIZE 32"
SLEEPER = """\
import os, sys, time
out = sys.argv[sys.argv.index('--output-dir') + 1]
os.makedirs(out, exist_ok=True)
with open(os.path.join(out, 'pid'), 'w') as f:
    f.write(str(os.getpid()))
time.sleep(600)
"""


def slurm_args(log_dir: Path, *extra: str) -> list[str]:
    return ["cmds.txt", "--backend", "slurm", "--partition", "debug", "--time", "15", "--cpus-per-task", "1",
            "--gpus-per-task", "0", "--log-dir", str(log_dir), "--poll", "0.5", *extra]


def dry_run(tmp_path: Path, **env: str) -> list[str]:
    data = make_image_folder(tmp_path / "data", n_classes=4, per_class=8)
    env = dict(DATA=str(data), OUTPUT=str(tmp_path / "output"), BACKBONE="tiny-vit", SHOTS="2", OPTS=OPTS,
               PYTHON=sys.executable, DRY_RUN="1", **env)
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert sweep_tool.main(["base2novel", "coop", "imagefolder"], env=env) == 0
    return buf.getvalue().splitlines()


def launch_main(argv: list[str]) -> tuple[int, str]:
    buf = io.StringIO()
    with redirect_stdout(buf):
        rc = launch.main(argv)
    return rc, buf.getvalue()


def alive(pid: int) -> bool:
    try:
        state = [s for s in Path(f"/proc/{pid}/status").read_text().splitlines() if s.startswith("State:")]
    except OSError:
        return False
    return bool(state) and "Z" not in state[0].split()[1]   # a zombie has ended


def wait_for(predicate, timeout: float, what: str) -> None:
    t0 = time.time()
    while not predicate():
        if time.time() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.3)


def squeue_active() -> list[str]:
    res = subprocess.run(["squeue", "-h", "-o", "%i %T"], capture_output=True, text=True, check=True)
    return res.stdout.splitlines()


def test_parse_time_and_sbatch_args():
    assert [launch_slurm.parse_time(t) for t in ("30", "4:00:00", "1-00:00:00", "90:30", "1-2", "0:00:01")] == \
        [30, 240, 1440, 91, 1560, 1]
    assert launch_slurm.parse_time(None) is None
    with pytest.raises(ValueError, match="--time '4h'"):
        launch_slurm.parse_time("4h")
    assert launch_slurm.sbatch_extra(["--qos=normal", "--exclusive", "--mail-type=END"]) == \
        {"qos": "normal", "exclusive": True, "mail_type": "END"}


def test_print_lists_the_array_tasks_and_submits_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    lines = dry_run(tmp_path, SEEDS="1 2", CALIB="off")
    Path("cmds.txt").write_text("\n".join(lines) + "\n")
    rc, out = launch_main(slurm_args(tmp_path / "logs", "--time", "4:00:00", "--print"))
    assert rc == 0
    assert out.splitlines()[0].startswith("# 2 array task(s), 4 run(s); per task: --cpus-per-task=1 "
                                          "--gpus-per-task=0 --time=240 --partition=debug")
    task0 = out[out.index("task 0:"):out.index("task 1:")]
    assert task0.index("train_base") < task0.index("test_new")
    assert not (tmp_path / "logs").exists()


@pytest.mark.slow
@pytest.mark.e2e
def test_toy_sweep_runs_as_a_job_array_and_resubmission_skips_finished_runs(slurm_cluster, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    lines = dry_run(tmp_path, SEEDS="1 2", CALIB="off")
    assert len(lines) == 4
    Path("cmds.txt").write_text("\n".join(lines) + "\n")
    logs = tmp_path / "logs"
    rc, out = launch_main(slurm_args(logs))
    assert rc == 0, out + "\n" + slurm_cluster.log("slurmctld")
    assert "2 task(s), 4 run(s)" in out and "finished: 2/2 array task(s) complete" in out
    assert out.count("  done CoOp imagefolder seed ") == 4 and "acc " in out
    results = sorted(tmp_path.glob("output/base2new/*/imagefolder/shots_2/CoOp/*/seed*/results.json"))
    assert len(results) == 4
    wait_for(lambda: not squeue_active(), 60, "the array's tasks to leave the queue")
    # the same command again: every run is finished (Run.done), nothing is submitted
    rc, out = launch_main(slurm_args(logs))
    assert rc == 0 and "nothing to submit: 4 command(s) finished already" in out
    # one evaluation missing: only it is submitted; its training run is not redone
    new1 = next(p for p in results if "test_new" in str(p) and "seed1" in str(p))
    base1 = Path(str(new1).replace("test_new", "train_base"))
    base_mtime = base1.stat().st_mtime
    new1.unlink()
    rc, out = launch_main(slurm_args(logs))
    assert rc == 0 and "1 task(s), 1 run(s)" in out, out
    assert new1.is_file() and base1.stat().st_mtime == base_mtime


def test_a_failed_task_is_reported_with_its_log_tail(slurm_cluster, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    lines = dry_run(tmp_path, SEEDS="1", CALIB="off")
    lines[0] += " OPTIM.NO_SUCH_KEY 1"     # the training run fails: train.py's one-line error
    Path("cmds.txt").write_text("\n".join(lines) + "\n")
    rc, out = launch_main(slurm_args(tmp_path / "logs"))
    assert rc == 1, out
    assert "FAILED job " in out and "finished: 0/1 array task(s) complete, 1 failed" in out
    tail = out[out.index("FAILED job "):]
    assert "FAILED (exit code 1" in tail and "unknown config key OPTIM.NO_SUCH_KEY" in tail   # the run's console.log
    assert "Traceback" not in tail                               # not submitit's traceback of the chain's exception
    assert not list(tmp_path.glob("output/base2new/test_new/**/console.log"))   # its evaluation never started
    wait_for(lambda: not squeue_active(), 60, "the failed task to leave the queue")


def test_failure_report_is_the_runs_report_else_the_log_tail(tmp_path):
    log = tmp_path / "task.out"
    log.write_text("submitit INFO start\nrun: a\nFAILED (exit code 2, 3s) a; last lines of x:\n    boom\n"
                   "    command: python train.py\nsubmitit ERROR (time) - Submitted job triggered an exception\n"
                   "Traceback (most recent call last):\nChainFailed: a\n")
    assert launch_slurm.failure_report(log) == ("    FAILED (exit code 2, 3s) a; last lines of x:\n        boom\n"
                                                "        command: python train.py")
    log.write_text("submitit INFO start\nTraceback (most recent call last):\nImportError: no module x\n")
    assert launch_slurm.failure_report(log).endswith("    ImportError: no module x")
    assert "missing" in launch_slurm.failure_report(tmp_path / "none.out")


def _sleeper_commands(tmp_path: Path, n: int) -> list[Path]:
    (tmp_path / "sleeper.py").write_text(SLEEPER)
    outs = [tmp_path / f"sleep{i}" for i in range(n)]
    Path("cmds.txt").write_text("".join(f"{sys.executable} sleeper.py --seed {i} --output-dir {o}\n"
                                        for i, o in enumerate(outs)))
    return outs


def _pids(outs: list[Path]) -> list[int]:
    wait_for(lambda: all((o / "pid").is_file() and (o / "pid").read_text() for o in outs), 120,
             "the jobs to start")
    return [int((o / "pid").read_text()) for o in outs]


def test_ctrl_c_of_the_launcher_cancels_the_jobs(slurm_cluster, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    outs = _sleeper_commands(tmp_path, 2)
    proc = subprocess.Popen([sys.executable, str(REPO / "tools" / "launch.py"), *slurm_args(tmp_path / "logs")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=slurm_cluster.env)
    try:
        pids = _pids(outs)
        assert all(alive(p) for p in pids)
        proc.send_signal(signal.SIGINT)
        text, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, text
    assert "interrupted: cancelled job array" in text and "(scancel)" in text
    wait_for(lambda: not any(alive(p) for p in pids), 60, "scancel to end the running jobs' processes")
    wait_for(lambda: not squeue_active(), 60, "the queue to empty")


def test_cancel_command_ends_a_detached_submission(slurm_cluster, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    outs = _sleeper_commands(tmp_path, 1)
    logs = tmp_path / "logs"
    rc, out = launch_main(slurm_args(logs, "--detach"))
    assert rc == 0 and "--cancel --log-dir" in out
    pids = _pids(outs)
    rc, out = launch_main(["--backend", "slurm", "--cancel", "--log-dir", str(logs)])
    assert rc == 0 and out.startswith("cancelled job array ")
    wait_for(lambda: not any(alive(p) for p in pids), 60, "scancel to end the running job's process")
    wait_for(lambda: not squeue_active(), 60, "the queue to empty")
    rc, _ = launch_main(["--backend", "slurm", "--cancel", "--log-dir", str(tmp_path / "elsewhere")])
    assert rc == 2


@pytest.mark.parametrize("how", ["scancel", "sigkill"])
def test_a_job_cancelled_behind_the_launchers_back_is_reported(slurm_cluster, tmp_path, monkeypatch, how):
    monkeypatch.chdir(tmp_path)
    outs = _sleeper_commands(tmp_path, 1)
    proc = subprocess.Popen([sys.executable, str(REPO / "tools" / "launch.py"), *slurm_args(tmp_path / "logs")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=slurm_cluster.env)
    try:
        pids = _pids(outs)
        if how == "sigkill":   # the task's own python (submitit's, the run's parent) dies: nobody writes a result
            ppid = int(Path(f"/proc/{pids[0]}/stat").read_text().rsplit(")", 1)[1].split()[1])
            os.kill(ppid, signal.SIGKILL)
        else:
            subprocess.run(["scancel", "--user", str(os.getuid())], check=True)
        text, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, text
    # scancel's SIGTERM ends the run (submitit's own process outlives it and reports the chain), or the whole task
    if how == "sigkill":
        assert re.search(r"FAILED job \S+ \([A-Z_]+, no result\): python seed 0", text), text
    else:
        assert ("FAILED (killed by SIGTERM: cancelled, timed out or out of memory?" in text
                or "(CANCELLED, no result)" in text), text
    assert "finished: 0/1 array task(s) complete, 1 failed" in text
    if how == "sigkill":   # its orphaned child escapes proctrack/linuxproc (a cgroup cluster would end it)
        os.kill(pids[0], signal.SIGKILL)
    wait_for(lambda: not any(alive(p) for p in pids), 60, "the cancelled job's process to end")
