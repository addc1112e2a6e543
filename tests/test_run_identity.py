"""Issue 14, item 1: a run is "done" only when its record's identity (resolved config, data split, code, library
versions, the prompts it evaluates) is what the run would be now; OPTS get their own folders; parse_results never
averages runs of other options together."""
from __future__ import annotations

import json
import sys

import pytest

import train
from tests.helpers import REPO, coop_argv, make_image_folder
from experiments import children, sweep
from experiments.run_status import Checker
from tools import parse_results
from tools import sweep as sweep_tool
from runs import identity


def test_options_id_decodes_values_and_ignores_throughput_keys():
    assert identity.options_id([]) is None
    assert identity.options_id(["DATALOADER.NUM_WORKERS", "8", "TRAIN.PRINT_FREQ", "5"]) is None
    a = identity.options_id(["OPTIM.LR", "0.5", "DATALOADER.NUM_WORKERS", "0"])
    assert a == identity.options_id(["OPTIM.LR", "0.50"]) and len(a) == 8
    assert a != identity.options_id(["OPTIM.LR", "0.05"])
    # shots and subsample are fields of their own in the record, not options
    assert identity.options(["DATASET.NUM_SHOTS", "4", "DATASET.SUBSAMPLE_CLASSES", "new", "OPTIM.MAX_EPOCH", "5"]) \
        == {"OPTIM.MAX_EPOCH": 5}


def test_differences_name_the_components_and_keys():
    base = {"config": {"OPTIM.LR": 0.002, "SEED": 1}, "config_sha256": "a", "split_sha256": "s", "code_sha256": "c",
            "versions": {"torch": "2.1"}, "model": None}
    assert identity.differences(base, dict(base)) == []
    other = dict(base, config={"OPTIM.LR": 0.5, "SEED": 1}, config_sha256="b", code_sha256="d",
                 versions={"torch": "2.4"})
    diffs = identity.differences(base, other)
    assert diffs[0] == "config (OPTIM.LR: 0.002 -> 0.5)"
    assert any(d.startswith("code") for d in diffs) and "versions (torch 2.1 -> 2.4)" in diffs
    assert identity.differences(None, base) == ["the record has no identity (made before run identities)"]
    # an unreadable data root (expected split None) is not compared
    assert identity.differences(base, dict(base, split_sha256=None)) == []


def _finished(units):
    checker = Checker()
    for unit in units:
        for run in unit.runs:
            run.out_dir.mkdir(parents=True, exist_ok=True)
            base = next((r.args for r in unit.runs if r.out_dir == run.depends), None)
            info = {"trainer": "CoOp", "dataset": "Caltech101", "subsample": run.args[-1], "shots": 16,
                    "seed": int(run.args[run.args.index("--seed") + 1]), "calib": None, "backbone": "ViT-B/16",
                    "config": "vit_b16_ep50", "max_epoch": 50, "identity": checker.expected(run.args, model_args=base)}
            (run.out_dir / "results.json").write_text(json.dumps({"metrics": {"accuracy": 70.0, "ece": 3.0},
                                                                  "run": info}))


@pytest.fixture
def started(monkeypatch):
    calls = []

    def fake_run(argv, *args, **kw):
        calls.append(argv)
        return 1  # "failed": nothing is written

    from experiments import progress

    monkeypatch.setattr(progress, "run_logged", fake_run)  # how the sweep starts a run (in children.start's group)
    return calls


def test_sweep_reruns_stale_records_and_names_the_difference(tmp_path, capsys, started):
    env = {"OUTPUT": str(tmp_path / "out"), "DATA": str(tmp_path / "no-data"), "SEEDS": "1", "CALIB": "off"}
    _, units, _ = sweep.plan("base2novel", ["coop", "caltech101"], sweep.Settings.from_env(env))
    _finished(units)
    assert sweep.execute(units, sweep.Settings.from_env(env)) == 0 and not started
    assert capsys.readouterr().out.count("done already") == 2

    # the training run's record was made with another learning rate: it and its evaluation are stale
    base, new = units[0].runs
    rec = json.loads((base.out_dir / "results.json").read_text())
    rec["run"]["identity"]["config"]["OPTIM.LR"] = 0.5
    rec["run"]["identity"]["config_sha256"] = "other"
    (base.out_dir / "results.json").write_text(json.dumps(rec))
    s = sweep.Settings.from_env(env)
    assert sweep.execute(units, s) == 1
    out = capsys.readouterr().out
    assert "stale record (differs in: config (OPTIM.LR: 0.5 -> 0.002)); running it again" in out
    assert len(started) == 1 and str(base.out_dir) in started[0]

    # ON_MISMATCH=error: refused, nothing started
    started.clear()
    assert sweep.execute(units, sweep.Settings.from_env(dict(env, ON_MISMATCH="error"))) == 1
    out = capsys.readouterr().out
    assert "not run again (ON_MISMATCH=error)" in out and not started
    with pytest.raises(sweep.SweepError, match="ON_MISMATCH"):
        sweep.Settings.from_env(dict(env, ON_MISMATCH="maybe"))


def test_records_without_identity_are_stale(tmp_path, capsys, started):
    env = {"OUTPUT": str(tmp_path / "out"), "DATA": str(tmp_path / "no-data"), "SEEDS": "1", "CALIB": "off"}
    _, units, _ = sweep.plan("base2novel", ["coop", "caltech101"], sweep.Settings.from_env(env))
    for run in units[0].runs:  # what every record of today's main looks like
        run.out_dir.mkdir(parents=True)
        (run.out_dir / "results.json").write_text(json.dumps({"metrics": {"accuracy": 1.0, "ece": 1.0}, "run": {}}))
    sweep.execute(units, sweep.Settings.from_env(env))
    assert "made before run identities" in capsys.readouterr().out and started


def test_opts_get_their_own_folders(tmp_path):
    env = {"OUTPUT": str(tmp_path / "out"), "SEEDS": "1", "CALIB": "off"}
    plain = sweep.plan("base2novel", ["coop", "imagefolder"], sweep.Settings.from_env(env))[1]
    opts = "OPTIM.MAX_EPOCH 5 OPTIM.LR 0.5 TRAINER.CALIB.LAMBDA_MOM 50.0"
    other = sweep.plan("base2novel", ["coop", "imagefolder"], sweep.Settings.from_env(dict(env, OPTS=opts)))[1]
    a, b = plain[0].runs[0].out_dir, other[0].runs[0].out_dir
    assert a.name == b.name == "seed1" and a.parent.name == "vit_b16_ep50"
    assert b.parent.name == f"vit_b16_ep50_{identity.options_id(opts.split())}"
    # a throughput option alone keeps the default layout
    workers = sweep.plan("base2novel", ["coop", "imagefolder"],
                         sweep.Settings.from_env(dict(env, OPTS="DATALOADER.NUM_WORKERS 0")))[1]
    assert workers[0].runs[0].out_dir == a


def _record(tmp_path, name, seed, acc, options_id):
    d = tmp_path / name / f"seed{seed}"
    d.mkdir(parents=True)
    run = {"trainer": "CoOp", "dataset": "Toy", "subsample": "base", "seed": seed, "shots": 16, "backbone": "toy-clip",
           "config": "vit_b16_ep50", "max_epoch": 20, "calib": None,
           "identity": {"options_id": options_id} if options_id else {}}
    (d / "results.json").write_text(json.dumps({"metrics": {"accuracy": acc, "ece": 1.0}, "run": run}))


def test_parse_results_never_averages_other_options(tmp_path, capsys):
    _record(tmp_path, "a", 1, 60.0, None)
    _record(tmp_path, "b", 1, 80.0, "1a2b3c4d")
    assert parse_results.main([str(tmp_path), "--json"]) == 0
    blocks = json.loads(capsys.readouterr().out)["groups"][0]["blocks"]
    assert sorted(b["options_id"] or "" for b in blocks) == ["", "1a2b3c4d"]
    means = sorted(b["variants"][0]["cells"]["base/self"]["Toy"]["accuracy"]["mean"] for b in blocks)
    assert means == [60.0, 80.0]  # not 70.00 ± 10.00
    assert parse_results.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "CoOp [vit_b16_ep50, 20 ep, opts 1a2b3c4d]" in out and "CoOp [vit_b16_ep50, 20 ep, opts none]" in out


def test_train_records_the_identity_the_sweep_expects(tmp_path, one_thread):
    """The sweep's in-process expectation (no model built) equals what train.py records, for a training run and
    for the evaluation of its prompts."""
    data = make_image_folder(tmp_path / "data", n_classes=4, per_class=6, size=16)
    base, new = tmp_path / "base", tmp_path / "new"
    opts = ("DATASET.NUM_SHOTS", "2", "OPTIM.MAX_EPOCH", "1", "DATASET.SUBSAMPLE_CLASSES", "base")
    base_args = coop_argv(data, base, opts=opts)
    new_args = coop_argv(data, new, "--eval-only", "--model-dir", str(base),
                         opts=opts[:4] + ("DATASET.SUBSAMPLE_CLASSES", "new"))
    saved = sys.stdout
    try:
        assert train.cli(base_args) == 0 and train.cli(new_args) == 0
    finally:
        sys.stdout = saved
    checker = Checker()
    rec_base = json.loads((base / "results.json").read_text())["run"]["identity"]
    rec_new = json.loads((new / "results.json").read_text())["run"]["identity"]
    assert rec_base == checker.expected(base_args)
    assert rec_new == checker.expected(new_args, model_args=base_args)
    assert rec_new["model"] == rec_base["id"] and rec_base["split_sha256"] and rec_base["options"] == {
        "OPTIM.MAX_EPOCH": 1}
    assert checker.status(base, base_args) == ("done", [])
    # another data root with other images: the split differs
    other = make_image_folder(tmp_path / "other", n_classes=5, per_class=6, size=16)
    state, diffs = Checker().status(base, coop_argv(other, base, opts=opts))
    assert state == "stale" and diffs == ["data split (DATA holds other data)"]


def test_dry_run_names_stale_records_without_running(tmp_path, capsys, started):
    env = {"OUTPUT": str(tmp_path / "out"), "DATA": str(tmp_path / "no-data"), "SEEDS": "1", "CALIB": "off"}
    _, units, _ = sweep.plan("base2novel", ["coop", "caltech101"], sweep.Settings.from_env(env))
    _finished(units)
    new = units[0].runs[1]
    rec = json.loads((new.out_dir / "results.json").read_text())
    rec["run"]["identity"]["model"] = "another-training"
    (new.out_dir / "results.json").write_text(json.dumps(rec))
    assert sweep_tool.main(["base2novel", "coop", "caltech101"], env=dict(env, DRY_RUN="1")) == 0
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 2 and not started
    assert err.splitlines() == [f"# stale record in {new.out_dir}: differs in the prompts it evaluates (its "
                                "training run changed)"]


def test_parse_results_ignores_moved_aside_records(tmp_path, capsys):
    _record(tmp_path, "a", 1, 60.0, None)
    old = tmp_path / "a" / "seed1" / "previous" / "20260101-000000"
    old.mkdir(parents=True)
    (old / "results.json").write_text((tmp_path / "a" / "seed1" / "results.json").read_text().replace("60.0", "10.0"))
    assert parse_results.main([str(tmp_path), "--json"]) == 0
    out, err = capsys.readouterr()
    (block,) = json.loads(out)["groups"][0]["blocks"]
    assert block["variants"][0]["cells"]["base/self"]["Toy"]["accuracy"]["values"] == [60.0] and not err


def test_launcher_reruns_stale_records(tmp_path, capsys, monkeypatch):
    import subprocess

    from tools import launch

    env = {"OUTPUT": str(tmp_path / "out"), "DATA": str(tmp_path / "no-data"), "SEEDS": "1", "CALIB": "off"}
    _, units, _ = sweep.plan("base2novel", ["coop", "caltech101"], sweep.Settings.from_env(env))
    _finished(units)
    base = units[0].runs[0]
    rec = json.loads((base.out_dir / "results.json").read_text())
    rec["run"]["identity"]["versions"]["torch"] = "1.0"
    (base.out_dir / "results.json").write_text(json.dumps(rec))
    cmds = tmp_path / "cmds.txt"
    cmds.write_text("\n".join(r.command(sys.executable) for u in units for r in u.runs) + "\n")
    started = []

    def fake_start(argv, **kw):
        started.append(argv)
        return subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(3)"], **kw)

    monkeypatch.setattr(children, "start", fake_start)
    monkeypatch.chdir(REPO)
    assert launch.main([str(cmds), "--gpus", "cpu"]) == 1
    out = capsys.readouterr().out
    assert "stale record: CoOp caltech101 seed 1 base (differs in: versions (torch 1.0 -> " in out
    assert "2 commands: 1 finished already, 1 to run" in out
    assert len(started) == 1 and str(base.out_dir) in started[0]


def test_slurm_submission_reruns_stale_records(tmp_path, capsys, monkeypatch):
    """The SLURM backend's finished-test is the same identity check (tools.commands.job_status), at submission and
    inside the job (run_chain), so a re-submission after a code or library change does not reuse old records."""
    from experiments import commands, launch_slurm

    env = {"OUTPUT": str(tmp_path / "out"), "DATA": str(tmp_path / "no-data"), "SEEDS": "1", "CALIB": "off"}
    _, units, _ = sweep.plan("base2novel", ["coop", "caltech101"], sweep.Settings.from_env(env))
    _finished(units)
    base, new = units[0].runs
    rec = json.loads((new.out_dir / "results.json").read_text())
    rec["run"]["identity"]["versions"]["torch"] = "1.0"
    (new.out_dir / "results.json").write_text(json.dumps(rec))
    monkeypatch.chdir(REPO)
    jobs = commands.parse_commands([r.command(sys.executable) for u in units for r in u.runs])
    chain_list, blocked = commands.chains(jobs)
    assert not blocked and [[j.output_dir for j in c] for c in chain_list] == [[new.out_dir]]
    assert "stale record: CoOp caltech101 seed 1 new (differs in: versions (torch 1.0 -> " in capsys.readouterr().out
    # inside the job: the stale run is run again (its train.py here: a stand-in that fails), the current one skipped
    loads = [launch_slurm.payload(j, jobs) for j in jobs]
    for p in loads:
        p["argv"] = [sys.executable, "-c", "import sys; sys.exit(3)"]
    with pytest.raises(launch_slurm.ChainFailed, match="exit code 3"):
        launch_slurm.run_chain(str(REPO), loads)
    out = capsys.readouterr().out
    assert f"skip (finished): {jobs[0].label}" in out and f"run: {jobs[1].label}" in out


def test_a_dropin_trainer_file_is_part_of_the_code_identity(tmp_path):
    """A trainer loaded from outside the hashed folders (--trainer-file, trainers/contrib, $CALIB_PROMPT_TRAINERS)
    changes results as much as trainers/coop.py does: editing it must make its records stale."""
    from runs import identity
    from trainers.plugins import import_file

    file = tmp_path / "idtrainer.py"
    file.write_text("from dassl.engine import TRAINER_REGISTRY\nfrom trainers.coop import CoOp\n\n\n"
                    "@TRAINER_REGISTRY.register()\nclass IdentityProbeCoOp(CoOp):\n    pass\n")
    from dassl.engine import TRAINER_REGISTRY

    assert import_file(file) == ["IdentityProbeCoOp"]
    try:
        first = identity.trainer_source_sha256("IdentityProbeCoOp")
        assert first is not None and identity.trainer_source_sha256("CoOp") is None  # built-ins: in code_sha256
        file.write_text(file.read_text() + "\n# an edit\n")
        assert identity.trainer_source_sha256("IdentityProbeCoOp") not in (None, first)
    finally:  # leave the registry as other tests expect it (the sweep's methods come from it)
        del TRAINER_REGISTRY._obj_map["IdentityProbeCoOp"]


def test_registering_another_method_leaves_identities_alone(tmp_path):
    """Every config carries every registered method's TRAINER.<node> defaults; a drop-in method registered later
    (its own node) must not make CoOp's records stale, while CoOp's own section still counts."""
    from dassl.engine import TRAINER_REGISTRY
    from trainers.plugins import import_file

    data = make_image_folder(tmp_path / "data", n_classes=4, per_class=6, size=16)
    argv = coop_argv(data, tmp_path / "run")
    before = Checker().expected(argv)
    file = tmp_path / "other_method.py"
    file.write_text("from dassl.engine import TRAINER_REGISTRY\nfrom trainers.coop import CoOp\n\n\n"
                    "@TRAINER_REGISTRY.register()\nclass OtherNodeMethod(CoOp):\n    cfg_node = 'OTHERNODE'\n"
                    "    cfg_defaults = {'PREC': 'fp16', 'RATIO': 0.2}\n")
    assert import_file(file) == ["OtherNodeMethod"]
    try:
        after = Checker().expected(argv)
        assert "TRAINER.OTHERNODE.RATIO" not in after["config"] and after["id"] == before["id"]
        assert "TRAINER.COOP.N_CTX" in after["config"]  # the run's own section is part of it
        own = Checker().expected(coop_argv(data, tmp_path / "run", trainer="OtherNodeMethod"))
        assert own["config"]["TRAINER.OTHERNODE.RATIO"] == 0.2 and "TRAINER.COOP.N_CTX" not in own["config"]
    finally:
        del TRAINER_REGISTRY._obj_map["OtherNodeMethod"]
