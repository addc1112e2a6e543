"""A new method sweeps with no table edit (tools/sweep.py METHODS comes from the trainer registry): a trainer file
dropped in through $CALIB_PROMPT_TRAINERS that names its config (``sweep_config``) runs through
``bash scripts/base2novel.sh <method> toy`` like a built-in method."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

sys.path.insert(0, str(REPO / "tools"))
import sweep as sweep_tool  # noqa: E402
from experiments import sweep, methods  # noqa: E402

METHOD_FILE = '''
from pathlib import Path

from dassl.engine import TRAINER_REGISTRY
from trainers import PromptTrainer
from trainers.coop import CoOpModel


@TRAINER_REGISTRY.register()
class SweepNew(PromptTrainer):
    model_class = CoOpModel          # CoOp's prompts, reading TRAINER.COOP
    cfg_node = "COOP"
    sweep_config = str(Path(__file__).with_name("sweepnew.yaml"))   # or a name in configs/trainers/SweepNew/
'''


@pytest.fixture
def new_method(tmp_path, monkeypatch):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "sweepnew.py").write_text(METHOD_FILE)
    yaml = (REPO / "configs/trainers/CoOp/vit_b16_ep50.yaml").read_text().replace("N_CTX: 16", "N_CTX: 4")
    (folder / "sweepnew.yaml").write_text(yaml)
    monkeypatch.setenv("CALIB_PROMPT_TRAINERS", str(folder))
    from dassl.engine import TRAINER_REGISTRY

    before = set(TRAINER_REGISTRY.registered_names())
    yield folder
    for name in set(TRAINER_REGISTRY.registered_names()) - before:  # leave the registry as other tests expect it
        del TRAINER_REGISTRY._obj_map[name]


def test_the_built_in_methods_keep_their_names():
    assert list(methods.METHODS)[:10] == list(methods.PAPER_ORDER)
    # the light name table (tools/parse_results.py reads it without importing the trainers) agrees with the classes
    assert {u: methods.METHODS[u].trainer for u in methods.PAPER_ORDER} == methods.PAPER_METHODS
    assert methods.trainer_name("KGCOOP") == "KgCoOp" and methods.trainer_name("zsclip") == "ZeroshotCLIP"
    assert methods.resolve_method("ZeroshotCLIP") == ("zsclip", methods.Method("ZeroshotCLIP", "vit_b16", "vit_b16", "vit_b16"))
    assert "shifted" not in methods.METHODS  # a registered trainer without sweep_config is not listed ...


def test_a_registered_trainer_without_a_config_needs_cfg():
    from dassl.engine import TRAINER_REGISTRY

    assert "ZeroshotCLIP2" in TRAINER_REGISTRY  # ... but resolves by name, and asks for CFG
    assert methods.resolve_method("zeroshotclip2") == ("zeroshotclip2", methods.Method("ZeroshotCLIP2", ""))
    with pytest.raises(sweep.SweepError, match="names no default config: set CFG"):
        sweep.plan("base2novel", ["zeroshotclip2", "toy"], sweep.Settings())
    assert sweep_tool.main(["base2novel", "nosuchmethod", "toy"], env={"DRY_RUN": "1"}) == 2


def test_new_method_dry_run(new_method, capsys):
    assert sweep_tool.main(["base2novel", "sweepnew", "toy"], env=dict(os.environ, DRY_RUN="1", SEEDS="1", CALIB="on")) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and all("--trainer SweepNew" in line and "--calib" in line for line in lines)
    assert f"--config-file {new_method / 'sweepnew.yaml'}" in lines[0]
    assert "sweepnew" in methods.METHODS


@pytest.mark.slow
@pytest.mark.e2e
def test_new_method_through_the_script(new_method, tmp_path):
    env = dict(os.environ, DATA=str(tmp_path / "data"), OUTPUT=str(tmp_path / "out"), SEEDS="1", CALIB="on",
               SHOTS="1", OPTS="OPTIM.MAX_EPOCH 1", CALIB_PROMPT_CACHE=str(tmp_path / "cache"),
               PYTHON=sys.executable, OMP_NUM_THREADS="1")
    done = subprocess.run(["bash", str(REPO / "scripts/base2novel.sh"), "sweepnew", "toy"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    layout = "*/toy/shots_1/SweepNew/sweepnew_toy-clip_calib_*/seed1/results.json"  # _<id8>: OPTS (run identity)
    runs = sorted((tmp_path / "out" / "base2new").glob(layout))
    assert len(runs) == 2
    for path in runs:
        run = json.loads(path.read_text())["run"]
        assert run["trainer"] == "SweepNew" and run["calib"] == "tcpt" and run["backbone"] == "toy-clip"
    assert "SweepNew" in done.stdout  # the summary table names it


def test_a_config_named_beside_the_drop_in_file(tmp_path, monkeypatch, capsys):
    """``sweep_config = "sweeprel.yaml"`` (a file name, not a path) resolves next to the trainer's file; a name that
    is nowhere is one error naming every path tried (trainers.plugins.trainer_config)."""
    folder = tmp_path / "rel"
    folder.mkdir()
    source = METHOD_FILE.replace("SweepNew", "SweepRel").replace(
        'str(Path(__file__).with_name("sweepnew.yaml"))', '"sweeprel.yaml"')
    (folder / "sweeprel.py").write_text(source + "\n\n@TRAINER_REGISTRY.register()\nclass SweepRelMissing(SweepRel):"
                                                 "\n    sweep_config = 'nothere'\n")
    (folder / "sweeprel.yaml").write_text((REPO / "configs/trainers/CoOp/vit_b16_ep50.yaml").read_text())
    monkeypatch.setenv("CALIB_PROMPT_TRAINERS", str(folder))
    from dassl.engine import TRAINER_REGISTRY

    try:
        env = dict(os.environ, DRY_RUN="1", SEEDS="1")
        assert sweep_tool.main(["base2novel", "sweeprel", "toy"], env=env) == 0
        assert f"--config-file {folder / 'sweeprel.yaml'}" in capsys.readouterr().out
        assert sweep_tool.main(["base2novel", "sweeprelmissing", "toy"], env=env) == 2
        err = capsys.readouterr().err
        tried = [REPO / "configs/trainers/SweepRelMissing/nothere.yaml", folder / "nothere.yaml", folder / "nothere"]
        assert "config 'nothere' of trainer SweepRelMissing not found; tried " + ", ".join(map(str, tried)) in err
    finally:
        for name in ("SweepRel", "SweepRelMissing"):
            TRAINER_REGISTRY._obj_map.pop(name, None)
