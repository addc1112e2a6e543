"""tools/launch.py with fake train commands: the local work queue (GPU slots, dependencies, skipping finished
runs, failures) and the SLURM backend (the generated script, a fake sbatch on PATH, the script run by bash)."""
from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

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
    jobs = launch.parse_commands(["# comment", ""] + b2n_lines(2) + ["TAG=x " + cmd("out/other")])
    assert len(jobs) == 5
    assert jobs[1].deps == [0] and jobs[3].deps == [2] and jobs[0].deps == []
    assert jobs[4].env == {"TAG": "x"} and jobs[4].argv[0] == "python"
    assert jobs[1].label == "CoOp dtd seed 1 new"
    with pytest.raises(launch.LaunchError, match="no --output-dir"):
        launch.parse_commands(["python train.py --seed 1"])
    with pytest.raises(launch.LaunchError, match="two commands write to"):
        launch.parse_commands([cmd("out/a"), cmd("out/a", seed=2)])


def test_local_queue_runs_bases_before_their_evals_on_each_gpu(fake):
    lines = b2n_lines(3) + ["TAG=hello " + cmd("out/tagged")]
    out = io.StringIO()
    assert launch.run_local(launch.parse_commands(lines), ["0", "1"], poll=0.05, out=out) == 0
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
    assert launch.run_local(launch.parse_commands(lines), ["0"], out=out) == 0
    assert "7 finished already, 0 to run" in out.getvalue() and "start" not in out.getvalue()


def test_local_failure_skips_dependents_and_finished_runs(fake):
    Path("out/train_base/seed2").mkdir(parents=True)
    Path("out/train_base/seed2/results.json").write_text(json.dumps({"metrics": {"accuracy": 1, "ece": 1}}))
    lines = b2n_lines(2)
    lines[0] += " --fail"
    out = io.StringIO()
    assert launch.run_local(launch.parse_commands(lines), ["cpu"], poll=0.05, out=out) == 1
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


def test_slurm_print_shows_one_chain_per_array_task(fake, capsys):
    lines = b2n_lines(3)
    Path("out/train_base/seed3").mkdir(parents=True)
    Path("out/train_base/seed3/results.json").write_text("{}")
    Path("cmds.txt").write_text("\n".join(lines) + "\n")
    assert launch.main(slurm_args("--print")) == 0
    script = capsys.readouterr().out
    for line in ("#SBATCH --array=0-2%4", "#SBATCH --partition=gpu", "#SBATCH --time=2:00:00",
                 "#SBATCH --gpus-per-task=1", "#SBATCH --cpus-per-task=6", "#SBATCH --mem=32G",
                 "#SBATCH --account=lab", "echo setup-ran"):
        assert line in script.splitlines()
    task0 = script[script.index("\n0)"):script.index("\n1)")]
    assert task0.count("\n    run ") == 2 and task0.index("train_base/seed1") < task0.index("test_new/seed1")
    assert task0.strip().split("\n")[1].endswith(" &&")   # a failure stops the chain
    task2 = script[script.index("\n2)"):script.index("\n*)")]
    assert "train_base/seed3" not in task2.split("fake_train.py")[0] and "test_new/seed3" in task2
    assert not Path("slurm_logs").exists()                    # --print writes nothing


def test_slurm_submits_with_a_fake_sbatch_and_the_script_runs(fake, monkeypatch, capsys):
    bin_dir = fake / "bin"
    bin_dir.mkdir()
    sbatch = bin_dir / "sbatch"
    sbatch.write_text('#!/bin/bash\necho "$@" > "$SBATCH_RECORD/args"\nfor a in "$@"; do last="$a"; done\n'
                      'cp "$last" "$SBATCH_RECORD/script.sh"\necho "Submitted batch job 4242"\n')
    sbatch.chmod(sbatch.stat().st_mode | stat.S_IEXEC)
    record = fake / "record"
    record.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SBATCH_RECORD", str(record))
    lines = b2n_lines(2)
    Path("cmds.txt").write_text("\n".join(lines) + "\n")
    assert launch.main(slurm_args()) == 0
    out = capsys.readouterr().out
    assert "Submitted batch job 4242: 2 array task(s), 4 run(s)" in out
    args = (record / "args").read_text().split()
    assert len(args) == 1 and args[0].endswith(".sbatch") and Path(args[0]).parent.name == "slurm_logs"
    script = (record / "script.sh").read_text()
    assert script.startswith("#!/bin/bash\n#SBATCH --job-name=prompt-sweep\n#SBATCH --array=0-1%4\n")
    # run array task 1 as SLURM would (python = the test's interpreter via PATH)
    py_dir = fake / "py"
    py_dir.mkdir()
    (py_dir / "python").symlink_to(sys.executable)
    env = dict(os.environ, SLURM_ARRAY_TASK_ID="1", PATH=f"{py_dir}{os.pathsep}{os.environ['PATH']}")
    res = subprocess.run(["bash", str(record / "script.sh")], env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "setup-ran" in res.stdout and res.stdout.count("done: ") == 2
    assert result("out/test_new/seed2")["time"] > result("out/train_base/seed2")["time"]
    assert not Path("out/train_base/seed1/results.json").exists()       # task 0 not run
    res = subprocess.run(["bash", str(record / "script.sh")], env=env, capture_output=True, text=True, timeout=60)
    assert res.stdout.count("skip (finished)") == 2                      # a rerun task skips finished runs
    # a failing training run stops its chain
    Path("cmds.txt").write_text(lines[0] + " --fail\n" + lines[1] + "\n")
    assert launch.main(slurm_args()) == 0
    capsys.readouterr()
    env["SLURM_ARRAY_TASK_ID"] = "0"
    res = subprocess.run(["bash", str(record / "script.sh")], env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode != 0 and "FAILED (exit code 4)" in res.stdout and "something broke" in res.stdout
    assert not Path("out/test_new/seed1").exists()


def test_slurm_without_sbatch_is_one_clear_error(fake, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(fake / "empty"))
    Path("cmds.txt").write_text(b2n_lines(1)[0] + "\n")
    assert launch.main(slurm_args()) == 2
    assert "sbatch not found on PATH" in capsys.readouterr().err
