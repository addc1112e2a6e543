"""One id for one set of options (issue 24 item 3) and one rule for identity-changing settings (issue 23 item 4):
the folder's options id is the record's ``run.identity.options_id`` and the table's ``opts <id>``; the settings the
sweep applies itself (the toy protocol's epochs, the thread policy) are ``sweep_options``, announced on the console,
never options; a ``THREADS`` other than the policy's gets a folder of its own and leaves the old record in place."""
from __future__ import annotations

import json
import sys

import pytest

import train
from experiments import sweep
from experiments.run_status import Checker
from tests.helpers import coop_argv, make_image_folder
from tools import parse_results
from tools import sweep as sweep_tool
from runs import identity


def _plan(env: dict, method: str = "coop", dataset: str = "toy"):
    s = sweep.Settings.from_env(env)
    return s, sweep.plan("base2novel", [method, dataset], s)[1]


def _write_current_records(units) -> None:
    """Records whose identity is what each run would record now (as a finished sweep leaves them)."""
    checker = Checker()
    for unit in units:
        for run in unit.runs:
            run.out_dir.mkdir(parents=True, exist_ok=True)
            base = next((r.args for r in unit.runs if r.out_dir == run.depends), None)
            info = {"trainer": "CoOp", "dataset": "Toy", "subsample": run.args[-1], "shots": 16, "seed": 1,
                    "calib": None, "backbone": "toy-clip", "config": "vit_b16_ep50", "max_epoch": 20,
                    "identity": checker.expected(run.args, model_args=base)}
            (run.out_dir / "results.json").write_text(json.dumps({"metrics": {"accuracy": 70.0, "ece": 3.0},
                                                                  "run": info}))


@pytest.fixture
def started(monkeypatch):
    """The sweep's runs, faked: recorded and failed (nothing written)."""
    from experiments import progress

    calls = []
    monkeypatch.setattr(progress, "run_logged", lambda argv, *a, **k: calls.append(argv) or 1)
    return calls


@pytest.fixture
def env(tmp_path, monkeypatch):
    # the split hash is not what these tests are about, and reading the toy's would draw the toy world (~20 s)
    monkeypatch.setattr(identity, "split_sha256", lambda cfg: None)
    return {"OUTPUT": str(tmp_path / "out"), "DATA": str(tmp_path / "no-data"), "SEEDS": "1", "CALIB": "off"}


def test_folder_record_and_table_share_one_options_id(env):
    checker = Checker()
    # the toy sweep without OPTS: no options (its own settings are sweep_options), the CoOp layout
    _, units = _plan(env)
    train_run = units[0].training
    expected = checker.expected(train_run.args)
    assert expected["options"] == {} and expected["options_id"] is None
    assert expected["sweep_options"] == {"OPTIM.MAX_EPOCH": 20, "INPUT.RRCROP_SCALE": [0.5, 1.0],
                                         "TRAIN.NUM_THREADS": 1}
    assert expected["config"]["OPTIM.MAX_EPOCH"] == 20
    assert train_run.out_dir.parent.name == "vit_b16_ep50_toy-clip"
    # with OPTS: the folder's suffix is the record's options_id; a key the user sets is the user's, not the sweep's
    _, units = _plan(dict(env, OPTS="OPTIM.MAX_EPOCH 5 OPTIM.LR 0.5"))
    for run in units[0].runs:
        ident = checker.expected(run.args, model_args=units[0].training.args if run.depends else None)
        assert ident["options"] == {"OPTIM.MAX_EPOCH": 5, "OPTIM.LR": 0.5}
        assert run.out_dir.parent.name == f"vit_b16_ep50_toy-clip_{ident['options_id']}"
        assert "OPTIM.MAX_EPOCH" not in ident["sweep_options"] and ident["config"]["OPTIM.MAX_EPOCH"] == 5


def test_train_py_records_sweep_settings_apart_from_options(tmp_path, one_thread, capsys):
    """``--sweep-opt`` is merged before the KEY VALUE options (which win) and recorded as sweep_options."""
    data = make_image_folder(tmp_path / "data", n_classes=4, per_class=6, size=16)
    out = tmp_path / "run"
    argv = coop_argv(data, out, "--sweep-opt", "OPTIM.MAX_EPOCH", "3", "--sweep-opt", "OPTIM.LR", "0.1",
                     opts=("OPTIM.MAX_EPOCH", "1", "DATASET.NUM_SHOTS", "2", "DATASET.SUBSAMPLE_CLASSES", "base"))
    saved = sys.stdout
    try:
        assert train.cli(argv) == 0
    finally:
        sys.stdout = saved
    run = json.loads((out / "results.json").read_text())["run"]
    assert run["max_epoch"] == 1 and run["identity"]["config"]["OPTIM.LR"] == 0.1
    assert run["identity"]["options"] == {"OPTIM.MAX_EPOCH": 1}
    assert run["identity"]["options_id"] == identity.options_id(["OPTIM.MAX_EPOCH", "1"])
    assert run["identity"]["sweep_options"] == {"OPTIM.LR": 0.1}
    assert run["identity"] == Checker().expected(argv)
    capsys.readouterr()
    bad = coop_argv(data, tmp_path / "bad", "--sweep-opt", "OPTIM.MAX_EPOHC", "3")
    assert train.cli(bad) == 1
    assert 'Error: --sweep-opt: unknown config key OPTIM.MAX_EPOHC; did you mean "OPTIM.MAX_EPOCH"?' in \
        capsys.readouterr().err


def test_table_labels_runs_by_the_folder_id_and_names_sweep_settings(tmp_path, capsys):
    for name, options_id, acc in (("vit_b16_ep50", None, 60.0), ("vit_b16_ep50_94eae833", "94eae833", 80.0)):
        d = tmp_path / name / "seed1"
        d.mkdir(parents=True)
        ident = {"options_id": options_id, "sweep_options": {"OPTIM.MAX_EPOCH": 20, "TRAIN.NUM_THREADS": 1}}
        run = {"trainer": "CoOp", "dataset": "Toy", "subsample": "base", "seed": 1, "shots": 16,
               "backbone": "toy-clip", "config": "vit_b16_ep50", "max_epoch": 20, "calib": None, "identity": ident}
        (d / "results.json").write_text(json.dumps({"metrics": {"accuracy": acc, "ece": 1.0}, "run": run}))
    assert parse_results.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "CoOp [vit_b16_ep50, 20 ep, opts 94eae833]" in out and "CoOp [vit_b16_ep50, 20 ep, opts none]" in out
    assert "settings the sweep applied itself (not options): OPTIM.MAX_EPOCH 20" in out
    assert parse_results.main([str(tmp_path), "--json"]) == 0
    blocks = json.loads(capsys.readouterr().out)["groups"][0]["blocks"]
    assert {b["options_id"] for b in blocks} == {None, "94eae833"}
    assert all(b["sweep_options"] == {"OPTIM.MAX_EPOCH": 20, "TRAIN.NUM_THREADS": 1} for b in blocks)


def test_the_sweep_says_when_it_replaces_the_configs_epochs(env, started, capsys):
    assert sweep_tool.main(["base2novel", "coop", "toy"], env=env) == 1  # the faked runs fail
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("note: the sweep sets OPTIM.MAX_EPOCH 20 (replacing vit_b16_ep50.yaml's 50), "
                            "INPUT.RRCROP_SCALE (0.5, 1.0)")
    assert "TRAIN.NUM_THREADS" not in first
    # the user's OPTS win, and the note leaves out what they set
    assert sweep_tool.main(["base2novel", "coop", "toy"], env=dict(env, OPTS="OPTIM.MAX_EPOCH 5")) == 1
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("note: the sweep sets INPUT.RRCROP_SCALE") and "MAX_EPOCH" not in first
    # a dataset without settings of the sweep's own: no note
    assert sweep_tool.main(["base2novel", "coop", "caltech101"], env=env) == 1
    assert capsys.readouterr().out.startswith("[1/1] coop caltech101 seed 1 plain")


def test_threads_get_their_own_folder_and_leave_the_record_where_it_was(env, started, capsys):
    _, units = _plan(env)
    _write_current_records(units)
    old = {run.out_dir: (run.out_dir / "results.json").read_bytes() for run in units[0].runs}
    # THREADS=2: another folder (the id of TRAIN.NUM_THREADS 2), the old records untouched
    s, threads = _plan(dict(env, THREADS="2"))
    suffix = identity.options_id(["TRAIN.NUM_THREADS", "2"])
    for a, b in zip(units[0].runs, threads[0].runs):
        assert b.out_dir.parent == a.out_dir.parent.with_name(f"{a.out_dir.parent.name}_{suffix}")
        assert Checker().expected(b.args, model_args=threads[0].training.args if b.depends else None)[
            "options_id"] == suffix
    assert sweep.execute(threads, s) == 1
    assert [str(threads[0].training.out_dir) in " ".join(argv) for argv in started] == [True]
    assert "stale" not in capsys.readouterr().out
    for folder, content in old.items():
        assert (folder / "results.json").read_bytes() == content and not (folder / "previous").exists()
    # THREADS equal to the policy's count: the same folders, finished already
    started.clear()
    s, same = _plan(dict(env, THREADS="1"))
    assert [r.out_dir for r in same[0].runs] == list(old)
    assert sweep.execute(same, s) == 0 and not started
    assert capsys.readouterr().out.count("done already") == 2
    # THREADS=0 (torch's default) differs from the toy policy: a folder of its own too
    assert _plan(dict(env, THREADS="0"))[1][0].training.out_dir.parent.name.startswith("vit_b16_ep50_toy-clip_")


def test_units_are_specs_that_group_by_everything_but_the_loss(env):
    _, units = _plan(dict(env, CALIB="both mbls", SEEDS="1 2"))
    groups: dict = {}
    for unit in units:
        groups.setdefault(unit.key_without_loss(), []).append(unit.calib)
    assert list(groups.values()) == [[None, "tcpt", "mbls"]] * 2
    unit = units[0]
    assert (unit.protocol, unit.trainer, unit.dataset, unit.seed, unit.shots, unit.backbone) == (
        "base2novel", "CoOp", "toy", 1, 16, "toy-clip")
    assert unit.training is unit.runs[0] and [r.kind for r in unit.evaluations] == ["test_new"]
