"""experiments/lockstep_groups.py: which runs of a sweep train in lockstep (pure functions over train.py args)."""
from __future__ import annotations

import pytest

from experiments.lockstep_groups import LockstepSettingError, lockstep_groups, lockstep_key, parse_mode

COMMON = ["--root", "data", "--seed", "1", "--backbone", "toy-clip", "--dataset-config-file", "d.yaml"]
TAIL = ["TRAIN.NUM_THREADS", "1", "DATASET.NUM_SHOTS", "16", "DATASET.SUBSAMPLE_CLASSES", "base"]


def run(out, *extra, trainer="CoOp", cfg="coop.yaml", seed="1", tail=TAIL):
    args = list(COMMON)
    args[3] = seed
    return [*args, "--trainer", trainer, "--config-file", cfg, *extra, "--output-dir", out, *tail]


def test_variants_of_one_method_and_seed_group_together():
    specs = [run("p1"), run("c1", "--calib"), run("m1", "--calib", "mbls"),
             run("p2", seed="2"), run("c2", "--calib", seed="2"),
             run("new", "--eval-only", "--model-dir", "p1")]
    assert lockstep_groups(specs) == [[0, 1, 2], [3, 4], [5]]
    assert lockstep_groups(specs, "off") == [[i] for i in range(6)]


def test_loss_weights_are_loss_only_but_data_options_are_not():
    a = run("a")
    b = run("b", "--calib", tail=TAIL + ["TRAINER.CALIB.ALPHA", "0.2"])
    c = run("c", tail=TAIL + ["INPUT.RRCROP_SCALE", "(0.5, 1.0)"])
    d = run("d", tail=["DATASET.NUM_SHOTS", "8"] + TAIL[2:])
    assert lockstep_groups([a, b, c, d]) == [[0, 1], [2], [3]]


def test_calib_value_is_not_mistaken_for_a_key_and_the_bare_flag_before_options_works():
    bare = run("b", "--calib")
    assert lockstep_key(bare) == lockstep_key(run("x")) == lockstep_key(run("y", "--calib", "zs_norm"))
    before_opts = [*COMMON, "--trainer", "CoOp", "--config-file", "coop.yaml", "--output-dir", "z", "--calib",
                   *TAIL]
    assert lockstep_key(before_opts) == lockstep_key(run("x"))


def test_image_prompted_and_unknown_methods_train_alone():
    specs = [run("a", trainer="MaPLe"), run("b", "--calib", trainer="MaPLe"), run("c", trainer="Mine"),
             run("d", trainer="Mine")]
    assert lockstep_groups(specs) == [[0], [1], [2], [3]]


def test_methods_mode_groups_text_only_methods_with_the_same_data():
    specs = [run("coop", trainer="CoOp", cfg="coop.yaml"), run("kg", trainer="KgCoOp", cfg="kg.yaml"),
             run("pd", trainer="ProDA", cfg="proda.yaml"), run("mp", trainer="MaPLe", cfg="maple.yaml")]
    assert lockstep_groups(specs) == [[0], [1], [2], [3]]
    assert lockstep_groups(specs, "methods") == [[0, 1, 2], [3]]
    batch = {"coop": 32, "kg": 32, "pd": 4}  # what the configs resolve to
    key = lambda args: batch[args[args.index("--output-dir") + 1]]  # noqa: E731
    assert lockstep_groups(specs, "methods", data_key=key) == [[0, 1], [2], [3]]


def test_group_size_is_capped():
    specs = [run(f"o{i}", "--calib", f"b{i}") for i in range(5)]
    assert lockstep_groups(specs, max_group=2) == [[0, 1], [2, 3], [4]]


@pytest.mark.parametrize("text, mode", [("", "variants"), ("1", "variants"), ("0", "off"), ("off", "off"),
                                        ("methods", "methods"), (" Methods ", "methods")])
def test_parse_mode(text, mode):
    assert parse_mode(text) == mode


def test_parse_mode_rejects_other_values():
    with pytest.raises(LockstepSettingError, match="LOCKSTEP='maybe'"):
        parse_mode("maybe")


def test_slurm_tasks_hold_a_group_then_its_evaluations(tmp_path, monkeypatch, capsys):
    """One array task per group: the group's training runs first (trained in one process), then every member's
    evaluations; LOCKSTEP=0: one task per training run, as before."""
    from pathlib import Path

    from tools import launch

    monkeypatch.chdir(tmp_path)
    lines = []
    for seed in (1, 2):
        for name, calib in (("plain", ""), ("calib", " --calib")):
            base = f"out/base/{name}{seed}"
            head = f"python fake_train.py --trainer CoOp --seed {seed}{calib}"
            lines += [f"{head} --output-dir {base} DATASET.SUBSAMPLE_CLASSES base",
                      f"{head} --output-dir out/new/{name}{seed} --eval-only --model-dir {base} "
                      "DATASET.SUBSAMPLE_CLASSES new"]
    Path("cmds.txt").write_text("\n".join(lines) + "\n")
    args = ["cmds.txt", "--backend", "slurm", "--print"]
    assert launch.main(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("# 2 array task(s), 8 run(s)")
    task0 = out.split("task 0:")[1].split("task 1:")[0].split("\n")[1:5]
    assert [w.split("--output-dir ")[1].split()[0] for w in task0] == [
        "out/base/plain1", "out/base/calib1", "out/new/plain1", "out/new/calib1"]
    monkeypatch.setenv("LOCKSTEP", "0")
    assert launch.main(args) == 0
    assert capsys.readouterr().out.startswith("# 4 array task(s), 8 run(s)")
    monkeypatch.setenv("LOCKSTEP", "sometimes")
    assert launch.main(args) == 2
    assert "LOCKSTEP='sometimes'" in capsys.readouterr().err


FAKE_LOCKSTEP_TRAIN = """\
import json, os, sys
runs, cur = [[]], None
for w in sys.argv[1:]:
    runs.append([]) if w == '--and' else runs[-1].append(w)
for a in runs:
    out = a[a.index('--output-dir') + 1]
    if '--fail' in a:
        sys.exit(3)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, 'results.json'), 'w') as f:
        json.dump({'metrics': {'accuracy': 50.0, 'ece': 2.0}, 'group': len(runs)}, f)
"""


@pytest.mark.parametrize("lockstep, sizes", [("1", [2, 2, 1, 1]), ("0", [1, 1, 1, 1])])
def test_local_launcher_starts_a_group_as_one_process(tmp_path, monkeypatch, lockstep, sizes):
    import io
    import json
    from pathlib import Path

    from experiments import commands, launch_local

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LOCKSTEP", lockstep)
    Path("fake_train.py").write_text(FAKE_LOCKSTEP_TRAIN)
    lines = []
    for name, calib in (("plain", ""), ("calib", " --calib")):
        base = f"out/base/{name}"
        lines += [f"python fake_train.py --trainer CoOp --seed 1{calib} --output-dir {base} X.Y base",
                  f"python fake_train.py --trainer CoOp --seed 1{calib} --output-dir out/new/{name} --eval-only "
                  f"--model-dir {base} X.Y new"]
    out = io.StringIO()
    assert launch_local.run_local(commands.parse_commands(lines), ["cpu"], poll=0.05, out=out) == 0
    got = [json.loads((tmp_path / d / "results.json").read_text())["group"]
           for d in ("out/base/plain", "out/base/calib", "out/new/plain", "out/new/calib")]
    assert got == sizes, out.getvalue()
    assert ("(lockstep)" in out.getvalue()) == (lockstep == "1")


def test_local_launcher_runs_members_alone_when_their_group_fails(tmp_path, monkeypatch):
    import io
    import json
    from pathlib import Path

    from experiments import commands, launch_local

    monkeypatch.chdir(tmp_path)
    Path("fake_train.py").write_text(FAKE_LOCKSTEP_TRAIN.replace("    if '--fail' in a:",
                                                                 "    if len(runs) > 1:"))
    lines = [f"python fake_train.py --trainer CoOp --seed 1{c} --output-dir out/{n} X.Y 1"
             for n, c in (("a", ""), ("b", " --calib"))]
    out = io.StringIO()
    assert launch_local.run_local(commands.parse_commands(lines), ["cpu"], poll=0.05, out=out) == 0
    assert out.getvalue().count("not finished by its lockstep group") == 2
    assert [json.loads((tmp_path / f"out/{n}/results.json").read_text())["group"] for n in "ab"] == [1, 1]


def test_sweep_runs_a_member_alone_when_its_group_fails(tmp_path, monkeypatch, capsys):
    """tools/sweep.py: the first training run of a group starts the lockstep process; when that fails, the run is
    run alone, and its mate (its own unit, later) alone too; the evaluations follow."""
    import json

    from tests.helpers import make_image_folder
    from experiments import progress, sweep
    from experiments.run_status import Checker

    data = make_image_folder(tmp_path / "data", n_classes=4, per_class=4)
    s = sweep.Settings(data=str(data), output=tmp_path / "out", seeds=[1], calib=[None, "tcpt"],
                       backbone="tiny-vit")
    _, units, _ = sweep.plan("base2novel", ["coop", "imagefolder"], s)
    started = []

    def fake_run_logged(argv, log, head):
        args = argv[2:]
        started.append("--and" in args)
        if "--and" in args:
            return 1
        out = args[args.index("--output-dir") + 1]
        model = args[args.index("--model-dir") + 1] if "--model-dir" in args else None
        base = next((r.args for u in units for r in u.runs if str(r.out_dir) == model), None)
        ident = Checker().expected(args, model_args=base)
        (tmp_path / out).mkdir(parents=True, exist_ok=True)
        (tmp_path / out / "results.json").write_text(json.dumps(
            {"metrics": {"accuracy": 50.0, "ece": 1.0}, "run": {"identity": ident}}))
        return 0

    monkeypatch.setattr(progress, "run_logged", fake_run_logged)
    assert sweep.execute(units, s) == 0
    printed = capsys.readouterr().out
    assert "in lockstep with" in printed and "not finished by its lockstep group (exit code 1)" in printed
    assert started == [True, False, False, False, False]  # the group, then both trainings and both evaluations
