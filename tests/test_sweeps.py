"""tools/sweep.py and scripts/*.sh: the planned train.py commands and layout (DRY_RUN), skipping finished runs,
failure handling, and the errors a user can cause. No training here (see test_sweeps_e2e.py)."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from experiments import children, sweep, methods, protocols, settings
from tools import sweep as sweep_tool

REPO = Path(__file__).resolve().parents[1]


SANDBOX: dict[str, str] = {}   # this test's OUTPUT and DATA (set by at_repo_root)


@pytest.fixture(autouse=True)
def at_repo_root(monkeypatch, tmp_path):
    """Commands show paths relative to the checkout, as a user sees them; the sweeps' default OUTPUT and DATA are
    this test's folders, never the checkout's output/ (a user's records there would change what is planned)."""
    monkeypatch.chdir(REPO)
    monkeypatch.setitem(SANDBOX, "OUTPUT", str(tmp_path / "output"))
    monkeypatch.setitem(SANDBOX, "DATA", str(tmp_path / "data"))


def isolated(env: dict | None = None, **more) -> dict:
    """``env`` with this test's OUTPUT and DATA unless it sets its own."""
    return {**SANDBOX, **(env or {}), **more}


def shown(line: str) -> str:
    """A command line as it reads with the default OUTPUT (output) and DATA (./data)."""
    return line.replace(SANDBOX["OUTPUT"], "output").replace(SANDBOX["DATA"], "./data")


def dry(capsys, *argv, **env) -> list[str]:
    env = isolated({"DRY_RUN": "1", **env})
    if capsys is None:  # the commands as a list, without printing them
        _, units, _ = sweep.plan(argv[0], argv[1:], sweep.Settings.from_env(env))
        return [shown(run.command(env.get("PYTHON", "python"))) for unit in units for run in unit.runs]
    rc = sweep_tool.main(list(argv), env=env)
    out = capsys.readouterr().out
    assert rc == 0, out
    return [shown(line) for line in out.splitlines()]


def opt(words: list[str], key: str) -> str:
    return words[words.index(key) + 1]


def test_dry_run_coop_commands_and_layout(capsys):
    lines = dry(capsys, "base2novel", "coop", "caltech101")
    assert len(lines) == 3 * 2 * 2                       # seeds x (plain, calib) x (base, new)
    cfg, ds = "configs/trainers/CoOp/vit_b16_ep50.yaml", "configs/datasets/caltech101.yaml"
    base1 = "output/base2new/train_base/caltech101/shots_16/CoOp/vit_b16_ep50/seed1"
    assert lines[0] == (f"python train.py --root ./data --seed 1 --trainer CoOp --dataset-config-file {ds} "
                        f"--config-file {cfg} --output-dir {base1} DATASET.NUM_SHOTS 16 "
                        "DATASET.SUBSAMPLE_CLASSES base")
    assert lines[1] == (f"python train.py --root ./data --seed 1 --trainer CoOp --dataset-config-file {ds} "
                        f"--config-file {cfg} --output-dir {base1.replace('train_base', 'test_new')} --eval-only "
                        f"--model-dir {base1} DATASET.NUM_SHOTS 16 DATASET.SUBSAMPLE_CLASSES new")
    calib = [shlex.split(l) for l in lines[2:4]]
    for words in calib:
        assert "--calib" in words and opt(words, "--calib").startswith("--")   # the bare flag = tcpt
        assert "/CoOp/vit_b16_ep50_calib/seed1" in opt(words, "--output-dir")
    assert opt(calib[1], "--model-dir") == opt(calib[0], "--output-dir")
    assert [opt(shlex.split(l), "--seed") for l in lines] == ["1"] * 4 + ["2"] * 4 + ["3"] * 4
    assert "--load-epoch" not in " ".join(lines)         # the last checkpoint the base run saved


def test_dry_run_baseline_variant_backbone_and_env(capsys):
    lines = dry(capsys, "base2novel", "CoOp", "Caltech101", CALIB="zs-norm", SEEDS="2", BACKBONE="ViT-L/14",
                DATA="/d", OUTPUT="/o", SHOTS="4", OPTS="OPTIM.MAX_EPOCH 5 TRAINER.COOP.N_CTX 4")
    assert len(lines) == 2
    base, new = (shlex.split(l) for l in lines)
    for words in (base, new):
        assert opt(words, "--calib") == "zs_norm" and opt(words, "--backbone") == "ViT-L/14"
        assert opt(words, "--root") == "/d" and opt(words, "--seed") == "2"
        assert words[-8:] == ["OPTIM.MAX_EPOCH", "5", "TRAINER.COOP.N_CTX", "4", "DATASET.NUM_SHOTS", "4",
                              "DATASET.SUBSAMPLE_CLASSES", words[-1]]
    assert opt(base, "--output-dir") == \
        "/o/base2new/train_base/caltech101/shots_4/CoOp/vit_b16_ep50_ViT-L-14_calib-zs_norm_71c0bd02/seed2"  # OPTS id
    assert opt(new, "--model-dir") == opt(base, "--output-dir")


def test_calib_values():
    assert settings.parse_calib("") == [None, "tcpt"]
    assert settings.parse_calib("both") == [None, "tcpt"]
    assert settings.parse_calib("on") == ["tcpt"] and settings.parse_calib("OFF") == [None]
    assert settings.parse_calib("off mbls,penalty") == [None, "mbls", "penalty"]
    with pytest.raises(sweep.SweepError, match="CALIB='ts'"):
        settings.parse_calib("ts")


def test_opts_num_shots_sets_the_layout_and_conflicts_are_errors(capsys):
    lines = dry(capsys, "base2novel", "coop", "caltech101", SEEDS="1", CALIB="off",
                OPTS="DATASET.NUM_SHOTS 2 OPTIM.MAX_EPOCH 1")
    words = shlex.split(lines[0])
    assert "/shots_2/" in opt(words, "--output-dir") and words.count("DATASET.NUM_SHOTS") == 1
    assert opt(words, "DATASET.NUM_SHOTS") == "2"
    for env, msg in (({"SHOTS": "4", "OPTS": "DATASET.NUM_SHOTS 2"}, "disagree"),
                     ({"OPTS": "DATASET.SUBSAMPLE_CLASSES all"}, "SUBSAMPLE_CLASSES"),
                     ({"OPTS": "OPTIM.MAX_EPOCH"}, "KEY VALUE"), ({"OPTS": "max_epoch 3"}, "not a config key"),
                     ({"SEEDS": "one"}, "SEEDS"), ({"SHOTS": "1 2"}, "one K")):
        assert sweep_tool.main(["base2novel", "coop", "caltech101"], env=isolated({"DRY_RUN": "1", **env})) == 2
        assert msg in capsys.readouterr().err


def test_user_errors_name_the_fix(capsys):
    assert sweep_tool.main(["base2novel", "coopp", "caltech101"], env=isolated({"DRY_RUN": "1"})) == 2
    err = capsys.readouterr().err
    assert 'Unknown method "coopp"' in err and 'Did you mean "coop"?' in err
    assert sweep_tool.main(["base2novel", "coop", "caltec101"], env=isolated({"DRY_RUN": "1"})) == 2
    assert 'Did you mean "caltech101"?' in capsys.readouterr().err
    assert sweep_tool.main(["base2novel", "coop", "caltech101"], env=isolated({"DRY_RUN": "1", "CFG": "nope"})) == 2
    err = capsys.readouterr().err
    assert "config 'nope' of trainer CoOp not found; tried " in err and "configs/trainers/CoOp/nope.yaml" in err
    assert "vit_b16_ep50" in err and "CFG=" in err
    assert sweep_tool.main(["base2novel", "coop"], env=isolated({"DRY_RUN": "1"})) == 2
    assert "usage: base2novel METHOD DATASET" in capsys.readouterr().err


def test_method_table_is_complete():
    assert set(methods.METHODS) == {"coop", "cocoop", "kgcoop", "prograd", "proda", "maple", "ivlp", "vpt",
                                  "promptsrc", "zsclip"}
    assert methods.METHODS["maple"] == methods.Method("MaPLe", "vit_b16_c2_ep5_batch4_2ctx",
                                                  cross_dataset="vit_b16_c2_ep5_batch4_2ctx_cross_datasets")
    assert methods.resolve_method("PromptSRC")[0] == "promptsrc"
    assert [protocols.DATASETS[d] for d in sweep.BASE2NOVEL_DATASETS][:2] == ["ImageNet", "Caltech101"]


def test_toy_defaults_to_its_backbone():
    p = sweep.Planner("coop", sweep.Settings())
    assert p.backbone("toy") == "toy-clip" and p.backbone("caltech101") is None
    p = sweep.Planner("coop", sweep.Settings(backbone="tiny-vit"))
    assert p.backbone("toy") == "tiny-vit"
    cfg = protocols.method_config(p.method, "vit_b16_ep50")
    assert p.cfg_name(cfg, "tcpt", "toy-clip") == "vit_b16_ep50_toy-clip_calib"
    assert p.cfg_name(cfg, None, "ViT-B/16") == "vit_b16_ep50"      # the config's own backbone: no suffix


def test_zero_shot_runs_once_per_split(capsys):
    lines = dry(capsys, "base2novel", "zsclip", "dtd")
    assert len(lines) == 2                               # deterministic: one seed, no calib variants
    for line, sub in zip(lines, ("base", "new")):
        words = shlex.split(line)
        assert "--eval-only" in words and "--model-dir" not in words and "--calib" not in words
        assert opt(words, "--trainer") == "ZeroshotCLIP" and words[-1] == sub
        assert opt(words, "--config-file") == "configs/trainers/ZeroshotCLIP/vit_b16.yaml"
        assert opt(words, "DATASET.NUM_SHOTS") == "0" and "/shots_0/ZeroshotCLIP/vit_b16/seed1" in line
    assert len(dry(capsys, "few_shot", "zsclip", "dtd")) == 1


def test_cross_dataset_and_domain_generalization_share_the_imagenet_run(capsys):
    xd = [shlex.split(l) for l in dry(capsys, "cross_dataset", "coop", SEEDS="1", CALIB="on")]
    assert len(xd) == 1 + 10
    src = opt(xd[0], "--output-dir")
    assert src == "output/imagenet/CoOp/vit_b16_ep50_calib_16shots/seed1" and xd[0][-1] == "all"
    assert "--eval-only" not in xd[0]
    targets = [Path(opt(w, "--dataset-config-file")).stem for w in xd[1:]]
    assert targets == list(protocols.CROSS_DATASET_TARGETS)
    for w, t in zip(xd[1:], targets):
        assert opt(w, "--model-dir") == src and w[-1] == "all"
        assert opt(w, "--output-dir") == f"output/evaluation/CoOp/vit_b16_ep50_calib_16shots/{t}/seed1"
    dg = [shlex.split(l) for l in dry(capsys, "domain_generalization", "coop", SEEDS="1", CALIB="on")]
    assert dg[0] == xd[0] and len(dg) == 5
    assert [Path(opt(w, "--dataset-config-file")).stem for w in dg[1:]] == list(protocols.DOMAIN_TARGETS)


# The config of every method x protocol (tools/sweep.py METHODS); None = no published recipe: an error.
PROTOCOL_CONFIGS = {
    "coop": ("vit_b16_ep50", "vit_b16_ep50", "vit_b16_ep50"),
    "cocoop": ("vit_b16_c4_ep10_batch1_ctxv1", "vit_b16_c4_ep10_batch1_ctxv1", None),
    "kgcoop": ("vit_b16_ep100_ctxv1", None, None),
    "prograd": ("vit_b16_c16_ep100_batch32", None, None),
    "proda": ("vit_b16_c16_ep100_batch4", None, None),
    "maple": ("vit_b16_c2_ep5_batch4_2ctx", "vit_b16_c2_ep5_batch4_2ctx_cross_datasets", None),
    "ivlp": ("vit_b16_c2_ep5_batch4_2+2ctx", None, None),
    "vpt": ("vit_b16_c2_ep5_batch4_4", None, None),
    "promptsrc": ("vit_b16_c2_ep20_batch4_4+4ctx", "vit_b16_c2_ep20_batch4_4+4ctx_cross_datasets",
                  "vit_b16_c2_ep50_batch4_4+4ctx_few_shot"),
    "zsclip": ("vit_b16", "vit_b16", "vit_b16"),
}


@pytest.mark.parametrize("method", sorted(PROTOCOL_CONFIGS))
def test_config_per_method_and_protocol(method, capsys):
    b2n, xd, fs = PROTOCOL_CONFIGS[method]
    # domain generalization evaluates the ImageNet run of cross_dataset: the same config
    expected = {"base2novel": b2n, "cross_dataset": xd, "domain_generalization": xd, "few_shot": fs}
    for command, cfg in expected.items():
        argv = [command, method] + (["caltech101"] if command in ("base2novel", "few_shot") else [])
        rc = sweep_tool.main(argv, env=isolated({"DRY_RUN": "1", "SEEDS": "1", "CALIB": "off", "SHOTS": "16"}))
        out, err = capsys.readouterr()
        if cfg is None:  # one clear line naming the protocol and the fix, nothing planned
            assert rc == 2 and out == "" and len(err.strip().splitlines()) == 1, (command, err)
            assert f"{methods.METHODS[method].trainer} has no" in err and "CFG=" in err
            assert f"CFG={PROTOCOL_CONFIGS[method][0]}" in err
            # CFG runs it with the user's config
            rc = sweep_tool.main(argv, env=isolated({"DRY_RUN": "1", "SEEDS": "1", "CALIB": "off", "SHOTS": "16",
                                       "CFG": PROTOCOL_CONFIGS[method][0]}))
            out = capsys.readouterr().out
            assert rc == 0 and f"/{PROTOCOL_CONFIGS[method][0]}.yaml" in out
            continue
        assert rc == 0, err
        configs = {opt(shlex.split(line), "--config-file") for line in out.splitlines()}
        assert configs == {f"configs/trainers/{methods.METHODS[method].trainer}/{cfg}.yaml"}, command
        assert (REPO / next(iter(configs))).is_file()


def test_missing_protocol_config_message():
    with pytest.raises(sweep.SweepError) as e:
        protocols.method_config(methods.METHODS["maple"], None, "few_shot")
    assert str(e.value) == ("MaPLe has no few-shot config: its reference code publishes no recipe for this protocol "
                            "(its class sets no sweep_few_shot_config). Set CFG=<name> to run it with a config of "
                            "configs/trainers/MaPLe/ you choose, e.g. CFG=vit_b16_c2_ep5_batch4_2ctx (its "
                            "base-to-novel config).")
    with pytest.raises(sweep.SweepError, match="KgCoOp has no cross-dataset / domain-generalization"):
        protocols.method_config(methods.METHODS["kgcoop"], None, "cross_dataset")


def test_promptsrc_protocol_configs_hold_the_reference_values():
    import yaml

    def load(name):
        return yaml.safe_load((REPO / "configs/trainers/PromptSRC" / f"{name}.yaml").read_text())

    b2n, xd, fs = (load(c) for c in PROTOCOL_CONFIGS["promptsrc"])
    node = {k: (d["TRAINER"]["PROMPTSRC"], d["OPTIM"]) for k, d in (("b2n", b2n), ("xd", xd), ("fs", fs))}
    for key, (src, optim) in node.items():
        assert (optim["LR"], src["N_CTX_TEXT"], src["N_CTX_VISION"], src["TEXT_LOSS_WEIGHT"],
                src["IMAGE_LOSS_WEIGHT"], src["CTX_INIT"], src["PREC"]) == (0.0025, 4, 4, 25, 10, "a photo of a",
                                                                             "fp16"), key
    assert (xd["OPTIM"]["MAX_EPOCH"], xd["TRAINER"]["PROMPTSRC"]["PROMPT_DEPTH_TEXT"],
            xd["TRAINER"]["PROMPTSRC"]["PROMPT_DEPTH_VISION"], xd["TRAINER"]["PROMPTSRC"]["GPA_MEAN"],
            xd["TRAINER"]["PROMPTSRC"]["GPA_STD"]) == (20, 3, 3, 6, 10)
    assert (fs["OPTIM"]["MAX_EPOCH"], fs["TRAINER"]["PROMPTSRC"]["PROMPT_DEPTH_TEXT"],
            fs["TRAINER"]["PROMPTSRC"]["PROMPT_DEPTH_VISION"], fs["TRAINER"]["PROMPTSRC"]["GPA_MEAN"],
            fs["TRAINER"]["PROMPTSRC"]["GPA_STD"]) == (50, 9, 9, 30, 30)
    # everything else is the base-to-novel config's
    for other in (xd, fs):
        assert {k: v for k, v in other.items() if k not in ("OPTIM", "TRAINER")} == \
            {k: v for k, v in b2n.items() if k not in ("OPTIM", "TRAINER")}


def test_promptsrc_few_shot_gpa_per_dataset(capsys):
    """PromptSRC's few-shot config comment: GPA 45/5 on Cars, Flowers, Aircraft, DTD, EuroSAT; 30/30 elsewhere."""
    for dataset, gpa in (("dtd", ("45", "5")), ("caltech101", None)):
        words = shlex.split(dry(capsys, "few_shot", "promptsrc", dataset, SEEDS="1", CALIB="off", SHOTS="4")[0])
        if gpa is None:
            assert "TRAINER.PROMPTSRC.GPA_MEAN" not in words
        else:
            assert (opt(words, "TRAINER.PROMPTSRC.GPA_MEAN"), opt(words, "TRAINER.PROMPTSRC.GPA_STD")) == gpa
    # the user's OPTS come later and win; a user CFG gets no per-dataset options
    words = shlex.split(dry(capsys, "few_shot", "promptsrc", "dtd", SEEDS="1", CALIB="off", SHOTS="4",
                            OPTS="TRAINER.PROMPTSRC.GPA_MEAN 40")[0])
    assert words.index("40") > words.index("45")
    words = dry(capsys, "few_shot", "promptsrc", "dtd", SEEDS="1", CALIB="off", SHOTS="4",
                CFG="vit_b16_c2_ep20_batch4_4+4ctx")[0]
    assert "GPA_MEAN" not in words


def test_few_shot_k_loop(capsys):
    lines = [shlex.split(l) for l in dry(capsys, "few_shot", "coop", "dtd", SEEDS="1", CALIB="off")]
    assert [opt(w, "DATASET.NUM_SHOTS") for w in lines] == ["1", "2", "4", "8", "16"]
    assert opt(lines[0], "--output-dir") == "output/dtd/CoOp/vit_b16_ep50_1shots/seed1"
    assert all(w[-1] == "all" and "--eval-only" not in w for w in lines)
    lines = dry(capsys, "few_shot", "coop", "dtd", SEEDS="1 2", CALIB="both", SHOTS="4")
    assert len(lines) == 4


def fake_finished(units, acc=70.0):
    from experiments.run_status import Checker

    checker = Checker()
    for unit in units:
        for run in unit.runs:
            base = next((r.args for r in unit.runs if r.out_dir == run.depends), None)
            run.out_dir.mkdir(parents=True, exist_ok=True)
            words = run.args
            info = {"trainer": words[words.index("--trainer") + 1], "dataset": "Caltech101",
                    "subsample": words[-1], "shots": 16, "seed": int(words[words.index("--seed") + 1]),
                    "calib": "tcpt" if "--calib" in words else None, "backbone": "ViT-B/16",
                    "config": "vit_b16_ep50", "max_epoch": 50,
                    "identity": checker.expected(run.args, model_args=base)}  # what train.py would record
            (run.out_dir / "results.json").write_text(json.dumps(
                {"metrics": {"accuracy": acc + info["seed"], "ece": 3.0}, "run": info, "split": "test"}))


def test_second_invocation_skips_finished_runs(tmp_path, capsys, monkeypatch):
    env = {"OUTPUT": str(tmp_path / "out"), "DATA": str(tmp_path / "no-data")}
    _, units, _ = sweep.plan("base2novel", ["coop", "caltech101"], sweep.Settings.from_env(env))
    fake_finished(units)

    def no_subprocess(*a, **k):
        raise AssertionError("a finished run was started again")

    monkeypatch.setattr(subprocess, "run", no_subprocess)
    monkeypatch.setattr(children, "start", no_subprocess)
    t0 = time.time()
    assert sweep_tool.main(["base2novel", "coop", "caltech101"], env=env) == 0
    assert time.time() - t0 < 10
    out = capsys.readouterr().out
    assert out.count("done already") == 12 and "[6/6] coop caltech101 seed 3 calib" in out
    assert "acc 73.00  ece 3.00" in out
    table = out[out.index("Base acc"):]
    assert "72.00 ± 0.82" in table and "TCPT" in table   # seeds 71, 72, 73 from results.json


def fake_unit(tmp_path, name, code, depends=None):
    out = tmp_path / name
    args = ["-c", code]
    run = sweep.Run(out, args, "train_base", depends)
    run.argv = lambda python, a=args: [python, *a]      # no train.py: a tiny fake command
    return run


WRITE = ("import json, os, sys; d = sys.argv[1]; os.makedirs(d, exist_ok=True); "
         "json.dump({'metrics': {'accuracy': 50.0, 'ece': 1.0}}, open(os.path.join(d, 'results.json'), 'w'))")


def test_failure_shows_tail_and_command_then_goes_on(tmp_path, capsys):
    bad = fake_unit(tmp_path, "bad", "import sys; print('line one'); print('the real error'); sys.exit(3)")
    orphan = fake_unit(tmp_path, "orphan", WRITE, depends=tmp_path / "bad")
    good = fake_unit(tmp_path, "good", WRITE)
    good.args.append(str(good.out_dir))
    units = [sweep.Unit("first", [bad, orphan]), sweep.Unit("second", [good])]
    assert sweep.execute(units, sweep.Settings()) == 1
    out = capsys.readouterr().out
    assert "FAILED (exit code 3" in out and "the real error" in out and "command: python" in out
    assert "skipped: its training run" in out
    assert "[2/2] second" in out and (tmp_path / "good" / "results.json").exists()
    assert not (tmp_path / "orphan" / "results.json").exists()
    assert "2 run(s) did not complete" in out
    # STOP_ON_ERROR=1: nothing after the first failure
    (tmp_path / "good" / "results.json").unlink()
    assert sweep.execute(units, sweep.Settings(stop_on_error=True)) == 1
    assert "[2/2]" not in capsys.readouterr().out and not (tmp_path / "good" / "results.json").exists()


def test_shell_script_dry_run_and_usage(tmp_path):
    env = dict(os.environ, **isolated(), DRY_RUN="1", SEEDS="1", CALIB="on", PYTHON=sys.executable)
    res = subprocess.run(["bash", "scripts/base2novel.sh", "coop", "caltech101"], capture_output=True, text=True,
                         env=env, cwd=REPO, timeout=60)
    assert res.returncode == 0, res.stderr
    expected = dry(None, "base2novel", "coop", "caltech101", SEEDS="1", CALIB="on", PYTHON=sys.executable)
    assert [shown(line) for line in res.stdout.splitlines()] == expected
    res = subprocess.run(["bash", "scripts/few_shot.sh", "coop"], capture_output=True, text=True, env=env,
                         cwd=REPO, timeout=60)
    assert res.returncode == 2 and "usage: few_shot METHOD DATASET" in res.stderr


def test_an_interpreter_without_the_requirements_is_one_line(monkeypatch, capsys):
    """The method table comes from the trainer registry (torch); run by a python without the requirements (no venv
    active), the sweep says so in one line instead of a traceback."""
    monkeypatch.setitem(sys.modules, "trainers.plugins", None)  # its import now raises ModuleNotFoundError
    assert sweep_tool.main(["base2novel", "coop", "toy"], env=isolated({"DRY_RUN": "1"})) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not installed for" in err and "activate the project's environment" in err
