"""Trainer files from other repositories run as written, or say why (trainers/plugins.py): CoOp's own ``coop.py`` /
``cocoop.py`` (which register the built-in names ``CoOp`` / ``CoCoOp``) and the paper's ``coop.py`` (helper module
``trainers.regularizers``, ``clip.build_model(state_dict, design_details)``), written for these tests in
tests/data/trainers/; one precision rule for built-in and ported trainers; the messages a drop-in file can cause."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import train
from tests.helpers import REPO, coop_argv, make_image_folder

DATA = Path(__file__).resolve().parent / "data" / "trainers"
COOP_REPO, PAPER = DATA / "coop_repo", DATA / "paper"
IDIOM_FILE = DATA / "openai_idiom_coop.py"
OPTS = ("DATASET.NUM_SHOTS", "2", "OPTIM.MAX_EPOCH", "1", "DATALOADER.TRAIN_X.BATCH_SIZE", "4",
        "TRAINER.COOP.N_CTX", "4")

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("ported_data"), n_classes=4, per_class=8)


@pytest.fixture
def clip_cache(tmp_path, monkeypatch):
    """OpenAI's loader writes named backbones to ~/.cache/clip: keep it in the test's folder."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.fixture
def fresh_registry():
    """A file that takes a built-in name replaces it for the process: put the registry, the loader's state and the
    helper modules back afterwards, so the other tests see the built-in trainers."""
    from dassl.engine import build
    from trainers import plugins

    state = [build.TRAINER_REGISTRY._obj_map, build.CLASHES, build.IMPORT_FAILURES, plugins._LOADED, plugins._MODULES,
             plugins._HELPERS, plugins._SIBLING_DIRS, plugins._OVERRIDES, plugins._CLASHING, plugins._FAILED]
    saved = [obj.copy() for obj in state]
    modules = set(sys.modules)
    yield plugins
    for obj, copy in zip(state, saved):
        obj.clear()
        obj.update(copy) if isinstance(obj, (dict, set)) else obj.extend(copy)
    for name in set(sys.modules) - modules:
        if name.startswith(("trainers.", "trainer_plugins.")):
            del sys.modules[name]


def _cli(root, out, trainer, *extra, opts=()):
    return train.cli(coop_argv(root, out, *extra, trainer=trainer, opts=OPTS + tuple(opts)))


def _record(run):
    return json.loads((Path(run) / "results.json").read_text())["run"]


def test_coop_repository_file_takes_its_name_and_runs_unmodified(data_root, tmp_path, clip_cache, fresh_registry,
                                                                  capsys):
    from runs import identity

    base, new = tmp_path / "base", tmp_path / "new"
    file = COOP_REPO / "coop.py"
    assert _cli(data_root, base, "CoOp", "--trainer-file", str(file),
                opts=("TRAINER.COOP.PREC", "fp32", "DATASET.SUBSAMPLE_CLASSES", "base")) == 0
    out = capsys.readouterr().out
    assert "registers CoOp, the name of trainers/coop.py (built-in): in this run CoOp is the file's class" in out
    run = _record(base)
    assert run["trainer"] == "CoOp" and run["precision"] == "fp32"
    assert run["trainer_file"] == {"path": "tests/data/trainers/coop_repo/coop.py",
                                   "sha256": hashlib.sha256(file.read_bytes()).hexdigest(),
                                   "beside": [],  # cocoop.py cannot be trainers.cocoop: that one is ours
                                   "replaces": "trainers/coop.py (built-in)"}
    assert run["identity"]["code_sha256"] != identity.code_sha256()  # the file is part of the run's identity
    assert run["method_cfg"]["N_CTX"] == 4  # the built-in's TRAINER.COOP section stays: the file reads it

    # novel classes without --load-epoch (what sweeps do): CoOp's load_model looks for model-best.pth.tar, which
    # this run did not write; the last checkpoint is loaded, as for a built-in trainer, with one note
    assert _cli(data_root, new, "CoOp", "--trainer-file", str(file), "--eval-only", "--model-dir", str(base),
                opts=("TRAINER.COOP.PREC", "fp32", "DATASET.SUBSAMPLE_CLASSES", "new")) == 0
    captured = capsys.readouterr()
    assert "looks for model-best.pth.tar" in captured.out and "epoch 1, as the built-in trainers do" in captured.out
    assert "Traceback" not in captured.err
    run = _record(new)
    assert run["load_epoch"] == 1 and run["model_dir"] == "../base" and run["num_classes"] == 2


def test_eval_only_without_checkpoints_is_one_message(data_root, tmp_path, clip_cache, fresh_registry, capsys):
    empty = tmp_path / "empty"
    (empty / "prompt_learner").mkdir(parents=True)
    assert _cli(data_root, tmp_path / "e", "CoOp", "--trainer-file", str(COOP_REPO / "coop.py"), "--eval-only",
                "--model-dir", str(empty), opts=("TRAINER.COOP.PREC", "fp32")) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "tests/data/trainers/coop_repo/coop.py's load_model looks for model-best.pth.tar" in \
        err[0] and "there is no checkpoint there" in err[0]
    assert not (tmp_path / "e").exists()  # refused before it started: no folder left behind


def test_cocoop_repository_file_runs_unmodified(data_root, tmp_path, clip_cache, fresh_registry):
    out = tmp_path / "cocoop"
    assert _cli(data_root, out, "CoCoOp", "--trainer-file", str(COOP_REPO / "cocoop.py"),
                opts=("TRAINER.COCOOP.N_CTX", "4", "TRAINER.COCOOP.PREC", "fp32",
                      "DATASET.SUBSAMPLE_CLASSES", "base")) == 0
    run = _record(out)
    assert run["trainer"] == "CoCoOp" and run["trainer_file"]["replaces"] == "trainers/cocoop.py (built-in)"
    assert run["num_classes"] == 2 and run["precision"] == "fp32"


def test_a_dropin_folder_clash_is_one_error_naming_both(data_root, tmp_path, fresh_registry, capsys):
    """In trainers/contrib/ or $CALIB_PROMPT_TRAINERS (the loader's non-strict import), a file registering a built-in
    name is a clash: asking for the name is one error naming both definitions and the fix; other names work, and
    giving the same file with --trainer-file makes it the file's for the run."""
    from dassl.engine import TRAINER_REGISTRY
    from trainers.cocoop import CoCoOp

    plugins = fresh_registry
    assert plugins.import_file(COOP_REPO / "cocoop.py", strict=False) == []
    warning = capsys.readouterr().err
    assert "registers CoCoOp, already defined by trainers/cocoop.py (built-in)" in warning
    assert TRAINER_REGISTRY.get("CoOp") is not None  # the other methods work
    assert _cli(data_root, tmp_path / "x", "CoCoOp") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0] == (
        "Error: trainer CoCoOp is defined twice: by trainers/cocoop.py (built-in) and by "
        "tests/data/trainers/coop_repo/cocoop.py, so --trainer CoCoOp would silently run one of them. Rename the class "
        "in tests/data/trainers/coop_repo/cocoop.py (e.g. CoCoOpMine), or run that file under the name CoCoOp for "
        "one run with --trainer-file tests/data/trainers/coop_repo/cocoop.py")
    assert not (tmp_path / "x").exists()
    assert TRAINER_REGISTRY._obj_map["CoCoOp"] is CoCoOp
    assert plugins.import_file(COOP_REPO / "cocoop.py") == ["CoCoOp"]  # now asked for by --trainer-file
    assert TRAINER_REGISTRY.get("CoCoOp") is not CoCoOp and "CoCoOp" not in plugins.CLASHES


@pytest.mark.slow
def test_environment_clash_through_train_py(data_root, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    shutil.copy(COOP_REPO / "cocoop.py", folder / "cocoop.py")
    env = dict(os.environ, CALIB_PROMPT_TRAINERS=str(folder), HOME=str(tmp_path / "home"))
    done = subprocess.run([sys.executable, str(REPO / "train.py"), *coop_argv(data_root, tmp_path / "r",
                                                                              trainer="CoCoOp")],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 1 and "trainer CoCoOp is defined twice" in last and str(folder / "cocoop.py") in last
    assert not (tmp_path / "r").exists()


def test_paper_file_with_helper_module_and_design_details(data_root, tmp_path, clip_cache, fresh_registry):
    out = tmp_path / "paper"
    assert _cli(data_root, out, "CoOp", "--trainer-file", str(PAPER / "coop.py"),
                opts=("DATASET.SUBSAMPLE_CLASSES", "base")) == 0  # the config's PREC fp16, on a CPU
    assert Path(sys.modules["trainers.regularizers"].__file__).resolve() == PAPER / "regularizers.py"
    assert "margin" in (out / "log.txt").read_text()  # its own loss term, from the helper module
    run = _record(out)
    assert run["trainer_file"]["beside"] == ["tests/data/trainers/paper/regularizers.py"]
    assert run["precision"] == "fp32"  # the built-ins' rule: PREC fp16 runs in fp32 on a CPU, recorded as such
    assert "Note: clip.build_model: fp32 weights on the CPU" in (out / "log.txt").read_text()


def test_helper_modules_count_in_the_identity_and_never_shadow_ours(tmp_path, fresh_registry, capsys):
    from runs import identity
    from trainers import templates

    plugins = fresh_registry
    folder = tmp_path / "paper"
    shutil.copytree(PAPER, folder)
    (folder / "templates.py").write_text("raise RuntimeError('a drop-in folder must not shadow trainers.templates')\n")
    (folder / "coop.py").write_text((folder / "coop.py").read_text() + "\nfrom trainers.templates import "
                                    "zeroshot_text_features  # ours\n")
    assert plugins.import_file(folder / "coop.py") == ["CoOp"]
    assert sys.modules["trainers.templates"] is templates
    first = identity.trainer_source_sha256("CoOp")
    (folder / "regularizers.py").write_text((folder / "regularizers.py").read_text() + "\n# an edit\n")
    assert identity.trainer_source_sha256("CoOp") not in (None, first)
    second = tmp_path / "second"  # another folder with a helper of the same name: said, not silently swapped
    second.mkdir()
    (second / "regularizers.py").write_text("X = 2\n")
    (second / "mine.py").write_text("from trainers.regularizers import margin_terms\nfrom dassl.engine import "
                                    "TRAINER_REGISTRY\nfrom trainers.coop import CoOp\n\n\n@TRAINER_REGISTRY."
                                    "register()\nclass SecondCoOp(CoOp):\n    pass\n")
    assert plugins.import_file(second / "mine.py") == ["SecondCoOp"]
    assert f"trainers.regularizers is already imported from {folder / 'regularizers.py'}, so " \
           f"{second / 'mine.py'} gets that module, not {second / 'regularizers.py'}" in capsys.readouterr().err


def test_one_precision_rule_for_built_in_and_ported_trainers(data_root, tmp_path, clip_cache, fresh_registry,
                                                             capsys):
    """PREC fp16 on a CPU: the built-in CoOp and CoOp's own file both run in fp32, say so, and record fp32."""
    opts = ("TRAINER.COOP.PREC", "fp16", "DATASET.SUBSAMPLE_CLASSES", "base")
    assert _cli(data_root, tmp_path / "builtin", "CoOp", opts=opts) == 0
    assert "running in fp32 on the CPU" in capsys.readouterr().out
    assert _cli(data_root, tmp_path / "ported", "CoOp", "--trainer-file", str(COOP_REPO / "coop.py"), opts=opts) == 0
    assert "fp32 weights on the CPU" in capsys.readouterr().out
    assert _record(tmp_path / "builtin")["precision"] == _record(tmp_path / "ported")["precision"] == "fp32"


def test_build_model_design_details():
    from clip import clip as openai_clip
    from common.errors import UserError

    sd = clip_state_dict()
    plain = openai_clip.build_model(sd)
    zero = {"trainer": "CoOp", "vision_depth": 0, "language_depth": 0, "vision_ctx": 0, "language_ctx": 0}
    built = openai_clip.build_model(sd, zero)
    assert built.dtype == torch.float16 and all(torch.equal(a, b) for a, b in
                                                zip(built.state_dict().values(), plain.state_dict().values()))
    with pytest.raises(UserError, match=r"--trainer MaPLe \(trainers/maple.py\).*docs/adding_a_method.md, \"Porting"):
        openai_clip.build_model(sd, dict(zero, trainer="MaPLe", maple_length=2))
    with pytest.raises(UserError, match=r"vision_depth=9, language_depth=9.*--trainer IVLP"):
        openai_clip.build_model(sd, dict(zero, trainer="IVLP", vision_depth=9, language_depth=9))


def clip_state_dict():
    import clip

    return {k: v.clone() for k, v in clip.load("tiny-vit").state_dict().items()}


def test_build_model_follows_the_run_precision_rule():
    from clip import clip as openai_clip
    from clip.model import build_precision

    with build_precision("fp32", "note"):
        assert openai_clip.build_model(clip_state_dict()).dtype == torch.float32
    assert openai_clip.build_model(clip_state_dict()).dtype == torch.float16  # outside a run: OpenAI's fp16


def test_a_syntax_error_names_the_file_and_line(tmp_path, fresh_registry, capsys):
    bad = tmp_path / "bad_method.py"
    bad.write_text("import torch\n\ndef build(:\n    pass\n")
    assert train.cli(["--trainer-file", str(bad), "--trainer", "CoOp"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{bad} failed to import: SyntaxError: " in err[0] and f"at {bad}:3: def build(:" in err[0]
    assert "frozen importlib" not in err[0]
    other = tmp_path / "other" / "bad_too.py"
    other.parent.mkdir()
    shutil.copy(bad, other)
    fresh_registry.import_file(other, strict=False)  # a drop-in folder's file: a warning naming file and line
    assert f"at {other}:3" in capsys.readouterr().err
    deep = tmp_path / "deep_error.py"  # raised inside a library: the file's own line first
    deep.write_text("import json\n\nSETTINGS = json.loads('{')\n")
    assert train.cli(["--trainer-file", str(deep), "--trainer", "CoOp"]) == 1
    err = capsys.readouterr().err
    assert f"JSONDecodeError: Expecting property name enclosed in double quotes: line 1 column 2 (char 1) at " \
           f"{deep}:3 (raised in decoder.py:" in err


def test_a_refused_run_leaves_no_folder_behind(data_root, tmp_path, clip_cache, capsys):
    nested = tmp_path / "a" / "b"
    argv = coop_argv(data_root, nested, "--trainer-file", str(IDIOM_FILE), "--calib", trainer="IdiomCoOp",
                     opts=OPTS + ("TRAINER.COOP.PREC", "fp32"))
    assert train.cli(argv) == 1
    assert "--calib" in capsys.readouterr().err and not (tmp_path / "a").exists()
    existing = tmp_path / "mine"
    existing.mkdir()
    argv[argv.index(str(nested))] = str(existing)
    assert train.cli(argv) == 1
    assert existing.is_dir() and os.listdir(existing) == []  # the user's folder stays, without a lock file


def test_a_method_zero_shot_classifier_ignores_the_calibration_switches():
    """trainers.zeroshot_classifier is the dataset's single template in the model's precision, whatever
    TRAINER.CALIB.FROZEN_TEMPLATES / FROZEN_TARGET_PREC say (those change F0, the --calib target, only)."""
    import clip
    from trainers import zeroshot_classifier
    from trainers.templates import frozen_templates, zeroshot_text_features

    model = clip.load("tiny-vit")
    names = ["cat", "dog", "red_apple"]
    own = zeroshot_classifier(model, names, "DescribableTextures")
    single = zeroshot_text_features(model, names, ["{} texture."])
    ensemble = zeroshot_text_features(model, names, frozen_templates("DescribableTextures", "ensemble"))
    assert torch.equal(own, single) and not torch.allclose(own, ensemble)
    # ZeroshotCLIP's single-template classifier is that one, not F0 (an ensemble F0 leaves the baseline alone)
    from dassl.config import get_cfg_default
    from trainers.zsclip import ZeroshotModel

    cfg = get_cfg_default()
    train.extend_cfg(cfg)
    cfg.DATASET.NAME, cfg.TRAINER.CALIB.FROZEN_TEMPLATES = "DescribableTextures", "ensemble"
    assert torch.equal(ZeroshotModel(cfg, names, model, ensemble).encode_text(), single)


def test_recorded_precision_is_what_ran():
    """run.precision of a trainer that declares none: its weights' dtype; amp only for fp32 weights on a GPU under
    PREC amp (on a CPU torch.cuda.amp.autocast does nothing: fp32 ran)."""
    from types import SimpleNamespace

    from yacs.config import CfgNode as CN

    from trainers.plugins import ported_precision

    def trainer(dtype, device, prec):
        cfg = CN({"TRAINER": CN({"NAME": "Ported", "PORTED": CN({"PREC": prec})})})
        return SimpleNamespace(cfg=cfg, device=torch.device(device),
                               model=torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4)).to(dtype))

    assert ported_precision(trainer(torch.float16, "cpu", "fp16")) == "fp16"
    assert ported_precision(trainer(torch.float32, "cpu", "fp16")) == "fp32"
    assert ported_precision(trainer(torch.float32, "cpu", "amp")) == "fp32"
    assert ported_precision(trainer(torch.float32, "cuda", "amp")) == "amp"
    assert ported_precision(trainer(torch.bfloat16, "cuda", "amp")) == "bf16"
    assert ported_precision(SimpleNamespace(cfg=None)) is None
