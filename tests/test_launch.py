"""tools/launch.py with fake train commands: the local work queue (GPU slots, dependencies, skipping finished
runs, failures); the SLURM backend runs against a real cluster in tests/test_launch_slurm.py."""
from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

import pytest

from experiments import commands, launch_local
from tools import launch

FAKE_TRAIN = """\
import json, os, sys, time
a = sys.argv
out = a[a.index('--output-dir') + 1]
if '--fail' in a:
    print('something broke in', out)
    sys.exit(4)
if '--model-dir' in a and not os.path.exists(os.path.join(a[a.index('--model-dir') + 1], 'results.json')):
    print('base run not finished')
    sys.exit(5)
time.sleep(0.2)
os.makedirs(out, exist_ok=True)
with open(os.path.join(out, 'results.json'), 'w') as f:
    json.dump({'metrics': {'accuracy': 50.0, 'ece': 2.0}, 'gpu': os.environ.get('CUDA_VISIBLE_DEVICES'),
               'tag': os.environ.get('TAG'), 'time': time.time()}, f)
"""


@pytest.fixture
def fake(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fake_train.py").write_text(FAKE_TRAIN)
    return tmp_path


def cmd(out: str, *extra: str, seed: int = 1) -> str:
    return (f"python fake_train.py --trainer CoOp --seed {seed} --dataset-config-file configs/datasets/dtd.yaml "
            f"--output-dir {out} {' '.join(extra)}").strip()


def b2n_lines(n_seeds=3) -> list[str]:
    lines = []
    for s in range(1, n_seeds + 1):
        base = f"out/train_base/seed{s}"
        lines += [cmd(base, "DATASET.SUBSAMPLE_CLASSES base", seed=s),
                  cmd(f"out/test_new/seed{s}", f"--eval-only --model-dir {base} DATASET.SUBSAMPLE_CLASSES new", seed=s)]
    return lines


def result(path) -> dict:
    return json.loads((Path(path) / "results.json").read_text())


def test_parse_commands_dependencies_and_errors(fake):
    jobs = commands.parse_commands(["# comment", ""] + b2n_lines(2) + ["TAG=x " + cmd("out/other")])
    assert len(jobs) == 5
    assert jobs[1].deps == [0] and jobs[3].deps == [2] and jobs[0].deps == []
    assert jobs[4].env == {"TAG": "x"} and jobs[4].argv[0] == "python"
    assert jobs[1].label == "CoOp dtd seed 1 new"
    # the sweep's Run (whose done is the one finished-test) gets train.py's arguments, whatever the interpreter
    run = jobs[1].as_run()
    assert run.args[:2] == ["--trainer", "CoOp"] and run.out_dir == jobs[1].output_dir
    assert run.depends == jobs[0].output_dir
    assert commands.parse_commands(["/opt/py/bin/python3 x/train.py --seed 1 --output-dir o"])[0].as_run().args == \
        ["--seed", "1", "--output-dir", "o"]
    with pytest.raises(commands.LaunchError, match="no --output-dir"):
        commands.parse_commands(["python train.py --seed 1"])
    with pytest.raises(commands.LaunchError, match="two commands write to"):
        commands.parse_commands([cmd("out/a"), cmd("out/a", seed=2)])


def test_local_queue_runs_bases_before_their_evals_on_each_gpu(fake):
    lines = b2n_lines(3) + ["TAG=hello " + cmd("out/tagged")]
    out = io.StringIO()
    assert launch_local.run_local(commands.parse_commands(lines), ["0", "1"], poll=0.05, out=out) == 0
    for s in (1, 2, 3):
        base, new = result(f"out/train_base/seed{s}"), result(f"out/test_new/seed{s}")
        assert new["time"] > base["time"]
        assert {base["gpu"], new["gpu"]} <= {"0", "1"}
    assert {result(f"out/train_base/seed{s}")["gpu"] for s in (1, 2, 3)} == {"0", "1"}   # both slots used
    assert result("out/tagged")["tag"] == "hello"
    text = out.getvalue()
    assert "[7/7]" in text and "acc 50.00  ece 2.00" in text and "7/7 complete" in text
    assert (fake / "out/train_base/seed1/console.log").exists()
    # again: everything is finished, nothing runs
    out = io.StringIO()
    assert launch_local.run_local(commands.parse_commands(lines), ["0"], out=out) == 0
    assert "7 finished already, 0 to run" in out.getvalue() and "start" not in out.getvalue()


def test_local_failure_skips_dependents_and_finished_runs(fake):
    Path("out/train_base/seed2").mkdir(parents=True)
    Path("out/train_base/seed2/results.json").write_text(json.dumps({"metrics": {"accuracy": 1, "ece": 1}}))
    lines = b2n_lines(2)
    lines[0] += " --fail"
    out = io.StringIO()
    assert launch_local.run_local(commands.parse_commands(lines), ["cpu"], poll=0.05, out=out) == 1
    text = out.getvalue()
    assert "FAILED (exit code 4" in text and "something broke in out/train_base/seed1" in text
    assert "command: " + lines[0] in text
    assert "skipped: CoOp dtd seed 1 new" in text
    assert result("out/test_new/seed2")["gpu"] == ""                       # cpu slot: no GPU visible
    assert result("out/train_base/seed2") == {"metrics": {"accuracy": 1, "ece": 1}}   # not rerun
    assert not Path("out/test_new/seed1/results.json").exists()


def test_eval_without_its_training_run_is_blocked(fake, capsys):
    line = cmd("out/test_new/seed1", "--eval-only --model-dir out/train_base/seed1")
    assert launch.main(["-", "--gpus", "cpu"], stdin=io.StringIO(line + "\n")) == 1
    assert "blocked" in capsys.readouterr().out


def slurm_args(*extra) -> list[str]:
    return ["cmds.txt", "--backend", "slurm", "--partition", "gpu", "--time", "2:00:00", "--mem", "32G",
            "--account", "lab", "--cpus-per-task", "6", "--max-parallel", "4", "--setup", "echo setup-ran", *extra]


def test_slurm_without_sbatch_is_one_clear_error(fake, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(fake / "empty"))
    Path("cmds.txt").write_text(b2n_lines(1)[0] + "\n")
    assert launch.main(slurm_args()) == 2
    assert "sbatch not found on PATH" in capsys.readouterr().err


def test_slurm_usage_errors_are_one_line_when_run_as_a_script(fake):
    import subprocess

    Path("cmds.txt").write_text(b2n_lines(1)[0] + "\n")
    res = subprocess.run([sys.executable, str(Path(launch.__file__)), "cmds.txt", "--backend", "slurm", "--time", "4h"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip() == ("error: --time '4h': expected MM, HH:MM:SS or D-HH:MM:SS (SLURM's format), "
                                  "e.g. 4:00:00")
