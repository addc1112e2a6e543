#!/usr/bin/env python
"""Sweeps behind ``scripts/*.sh``: plan the train.py runs of a protocol, run the unfinished ones, summarise.

    python tools/sweep.py base2novel METHOD DATASET     # scripts/base2novel.sh
    python tools/sweep.py base2novel_all METHOD         # scripts/base2novel_all.sh (the 11 datasets)
    python tools/sweep.py cross_dataset METHOD          # scripts/cross_dataset.sh (ImageNet -> 10 datasets)
    python tools/sweep.py domain_generalization METHOD  # scripts/domain_generalization.sh (-> ImageNet V2/S/A/R)
    python tools/sweep.py few_shot METHOD DATASET       # scripts/few_shot.sh (all classes, K = 1 2 4 8 16)

Settings come from the environment (the scripts' interface):
``DATA`` (./data), ``OUTPUT`` (output), ``SEEDS`` ("1 2 3"), ``SHOTS`` (16; few_shot: "1 2 4 8 16"),
``CALIB`` (both | on | off | mbls | zs_norm | penalty, or several separated by spaces/commas), ``CFG`` (a
config name instead of the method's config for the protocol; a protocol without one is an error), ``BACKBONE``,
``OPTS`` (extra ``KEY VALUE`` pairs for every run), ``DRY_RUN=1`` (print the train.py commands, one per line,
run nothing; runs whose record is stale are named on stderr), ``ON_MISMATCH`` (rerun | error: what to do with a
run whose record was made by another identity), ``STOP_ON_ERROR=1`` (stop at the first failed run instead
of going on with the next one), ``THREADS`` (torch threads per run, ``TRAIN.NUM_THREADS``: 1 for the toy and tiny
backbones, else torch's default; ``tools/run_policy.py``), ``PYTHON`` (the interpreter named in printed
commands, default ``python``), ``LOCKSTEP`` (1, the default: a method's variants of one seed, e.g. plain and
``--calib``, train in one process over one data stream, sharing each batch's frozen image features, each with its
own folder and record, its predictions those of the run alone; ``methods``: text-only methods with the same data
settings too; 0: every run alone; experiments/lockstep_groups.py).
Zero-shot CLIP (``zsclip``) trains nothing: one eval-only run per split and dataset (the first seed,
``NUM_SHOTS 0``), whatever SEEDS, SHOTS and CALIB say.

A run whose ``results.json`` records the identity the run would have now (resolved config, data split, code and
library versions, the prompts it evaluates: trainers/identity.py) is complete and skipped; a record of another
identity is stale: the sweep names what differs and runs it again (``ON_MISMATCH=error``: refuses, counted as a
failure); any other run is (re)started in its folder, where train.py resumes from its last checkpoint. ``OPTS`` put
a short id of the options into the folder name (``<cfg>..._<id8>``), so runs of other options never share a folder.
Children run in their own process group and end with the sweep (SIGINT/SIGTERM: SIGTERM, then SIGKILL; a killed
sweep: the kernel's parent-death signal, tools/children.py). train.py's output goes to ``<run dir>/console.log`` (stdout+stderr of
the last attempt; ``log.txt`` is train.py's own log); the console shows one progress line per unit (a training
run and the evaluations of its prompts), the running run's epoch and ETA (``tools/progress.py``: a line rewritten
in place on a terminal, one line per epoch otherwise) and one result line per run. A failed run prints the tail of its
console.log and its command; the evaluations that need its prompts are skipped, the sweep goes on (or stops with
``STOP_ON_ERROR=1``) and exits 1 at the end. Tables are computed by ``tools/parse_results.py`` from results.json.
"""
from __future__ import annotations

import collections.abc
import difflib
import os
import re
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

REPO = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(REPO))


class SweepError(Exception):
    """A mistake in the sweep's arguments or environment: one message naming the setting and the fix."""


# ------------------------------------------------------------------------------------------ the one method table
@dataclass(frozen=True)
class Method:
    trainer: str   # registered trainer name (configs/trainers/<trainer>/)
    config: str    # the base-to-novel config the paper's runs used (protocol.md §3)
    #: the config of the ImageNet training run shared by cross_dataset and domain_generalization, and the config of
    #: all-class few_shot; None = the method's reference code publishes no recipe for that protocol, and the sweep
    #: stops with one error instead of guessing (CFG=<name> runs it with a config of the user's choosing). Where
    #: the reference trains that protocol with its base-to-novel config, the entry names that config explicitly.
    cross_dataset: str | None = None
    few_shot: str | None = None

    @property
    def zero_shot(self) -> bool:
        return self.trainer == ZERO_SHOT

    def protocol_config(self, protocol: str) -> str | None:
        """The config name of ``protocol`` (one of :data:`PROTOCOL_CONFIGS`), None when there is none."""
        return {"base2novel": self.config, "cross_dataset": self.cross_dataset,
                "few_shot": self.few_shot}[protocol]


ZERO_SHOT = "ZeroshotCLIP"
#: the built-in methods' sweep names -> trainers, in the paper's table order (names only: each trainer class names
#: its config). Read without importing the trainers (tools/parse_results.py); methods added later follow in
#: registration order.
PAPER_METHODS = {"coop": "CoOp", "cocoop": "CoCoOp", "kgcoop": "KgCoOp", "prograd": "ProGrad", "proda": "ProDA",
                 "maple": "MaPLe", "ivlp": "IVLP", "vpt": "VPT", "promptsrc": "PromptSRC", "zsclip": ZERO_SHOT}
PAPER_ORDER = tuple(PAPER_METHODS)


class _RegistryMethods(collections.abc.Mapping):
    """``METHODS``: sweep name -> Method for every registered trainer whose class names its config
    (``sweep_config = "<config>"``, a file of configs/trainers/<Trainer>/, the base-to-novel one;
    ``sweep_cross_dataset_config`` / ``sweep_few_shot_config`` for the other protocols, unset = no published recipe;
    ``sweep_name``, default the lower-case trainer name). Built from the trainer registry on first use (importing ``trainers``, which also loads the
    drop-in trainer files of trainers/contrib/ and $CALIB_PROMPT_TRAINERS), so a new method sweeps with no edit here."""

    def __init__(self):
        self._methods: dict[str, Method] | None = None
        self._names: tuple[str, ...] = ()

    def _load(self) -> dict[str, Method]:
        trainers = registered_trainers()
        if self._methods is None or tuple(trainers) != self._names:
            self._names = tuple(trainers)
            found = {}
            for name, cls in trainers.items():
                config = cls.__dict__.get("sweep_config")
                if config:
                    found[cls.__dict__.get("sweep_name") or name.lower()] = Method(
                        name, config, cross_dataset=cls.__dict__.get("sweep_cross_dataset_config"),
                        few_shot=cls.__dict__.get("sweep_few_shot_config"))
            rank = {n: i for i, n in enumerate(PAPER_ORDER)}
            self._methods = dict(sorted(found.items(), key=lambda kv: rank.get(kv[0], len(rank))))
        return self._methods

    def __getitem__(self, key: str) -> Method:
        return self._load()[key]

    def __iter__(self):
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())


def registered_trainers() -> dict:
    """Trainer name -> class, after importing every method file (built-in and drop-in: $CALIB_PROMPT_TRAINERS is
    read again, so a variable set after the first import counts too)."""
    try:
        import trainers.plugins  # importing the package registers the methods
        from dassl.engine import TRAINER_REGISTRY
    except ModuleNotFoundError as e:  # run by an interpreter without the requirements (no venv active)
        raise SweepError(f"{e.name} is not installed for {sys.executable}: activate the project's environment "
                         "(README, Install: . .venv/bin/activate) or point PYTHON at its interpreter") from None

    trainers.plugins.load_plugins()
    return {n: TRAINER_REGISTRY.get(n) for n in TRAINER_REGISTRY.registered_names()}


METHODS: Mapping[str, Method] = _RegistryMethods()
#: protocols with a config of their own (domain_generalization evaluates cross_dataset's ImageNet run)
PROTOCOL_CONFIGS = ("base2novel", "cross_dataset", "few_shot")
#: extra options of a method's few-shot runs on some datasets: PromptSRC's few-shot config comment sets GPA 45/5 for
#: these five datasets (30/30, the file's value, for the others)
FEW_SHOT_DATASET_OPTS: dict[str, dict[str, list[str]]] = {
    "PromptSRC": {d: ["TRAINER.PROMPTSRC.GPA_MEAN", "45", "TRAINER.PROMPTSRC.GPA_STD", "5"]
                  for d in ("stanford_cars", "oxford_flowers", "fgvc_aircraft", "dtd", "eurosat")},
}

# config file name (configs/datasets/<name>.yaml) -> registry name (results.json run.dataset)
DATASETS: dict[str, str] = {
    "imagenet": "ImageNet", "caltech101": "Caltech101", "oxford_pets": "OxfordPets",
    "stanford_cars": "StanfordCars", "oxford_flowers": "OxfordFlowers", "food101": "Food101",
    "fgvc_aircraft": "FGVCAircraft", "sun397": "SUN397", "dtd": "DescribableTextures", "eurosat": "EuroSAT",
    "ucf101": "UCF101", "imagenetv2": "ImageNetV2", "imagenet_sketch": "ImageNetSketch",
    "imagenet_a": "ImageNetA", "imagenet_r": "ImageNetR", "imagefolder": "ImageFolder", "toy": "Toy",
}
# the paper's column order (INet, Cal, Pets, Cars, Flow, Food, Air, SUN, DTD, Euro, UCF)
BASE2NOVEL_DATASETS = ("imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101",
                       "fgvc_aircraft", "sun397", "dtd", "eurosat", "ucf101")
CROSS_DATASET_TARGETS = BASE2NOVEL_DATASETS[1:]
DOMAIN_TARGETS = ("imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r")
SOURCE_DATASET = "imagenet"
FEW_SHOT_KS = (1, 2, 4, 8, 16)
GENERATED_DATASETS = {"toy"}  # datasets that generate themselves under DATA (no download, no preparation)
DEFAULT_BACKBONE = {"toy": "toy-clip"}  # datasets whose images need a particular backbone
#: the toy protocol (README, toy/README.md): 20 epochs so the quick start fits in minutes on 2 CPU cores, and random
#: crops of at least half the image, since the toy world's small objects vanish from 8%-area crops. Applied before
#: the user's OPTS, which override them.
DATASET_OPTS = {"toy": ["OPTIM.MAX_EPOCH", "20", "INPUT.RRCROP_SCALE", "(0.5, 1.0)", "DATALOADER.NUM_WORKERS", "2"]}

# CALIB tokens -> variants (None = without --calib). Baseline names are checked by calibration.regularizers.
CALIB_WORDS: dict[str, tuple[str | None, ...]] = {
    "both": (None, "tcpt"), "on": ("tcpt",), "off": (None,), "none": (None,), "tcpt": ("tcpt",),
    "paper": ("tcpt",),
}
KEY_RE = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)+$")


def _unknown(kind: str, name: str, known: Sequence[str], fix: str) -> SweepError:
    close = difflib.get_close_matches(name.lower(), list(known), n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return SweepError(f"unknown {kind} {name!r}{hint} Known: {', '.join(known)}. {fix}")


def trainer_name(name: str) -> str:
    """The trainer name of a method or trainer name, without importing the trainers when it is a built-in one."""
    key = name.strip().lower()
    for user, trainer in PAPER_METHODS.items():
        if key in (user, trainer.lower()):
            return trainer
    return resolve_method(name)[1].trainer


def resolve_method(name: str) -> tuple[str, Method]:
    """(user name, Method) for a case-insensitive method name or trainer name (``coop``, ``CoOp``). A registered
    trainer that names no ``sweep_config`` resolves too, with config "" (the sweep then needs CFG)."""
    key = name.strip().lower()
    for user, method in METHODS.items():
        if key in (user, method.trainer.lower()):
            return user, method
    for trainer in registered_trainers():
        if key == trainer.lower():
            return trainer.lower(), Method(trainer, "")
    raise _unknown("method", name, list(METHODS), "Pass one of them as METHOD (a trainer of your own: register it in "
                   "trainers/contrib/ or $CALIB_PROMPT_TRAINERS, with sweep_config = '<config name>').")


def resolve_dataset(name: str) -> str:
    """The config name (``caltech101``) of a case-insensitive config or registry name (``Caltech101``)."""
    key = name.strip().lower().replace("-", "_")
    for cfg_name, registry in DATASETS.items():
        if key in (cfg_name, registry.lower()):
            return cfg_name
    raise _unknown("dataset", name, list(DATASETS), "Pass one of them as DATASET.")


def _display(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it (readable commands), else absolute."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path.resolve())


def dataset_config(name: str) -> Path:
    path = REPO / "configs" / "datasets" / f"{name}.yaml"
    if not path.is_file():
        raise SweepError(f"dataset config {path} not found; add configs/datasets/{name}.yaml (with DATASET.NAME "
                         f"{DATASETS.get(name, '<Name>')!r}) or pick another dataset")
    return path


def method_config(method: Method, cfg: str | None = None, protocol: str = "base2novel") -> Path:
    """configs/trainers/<Trainer>/<cfg>.yaml: ``cfg`` (the user's CFG) when given, else the method's config for
    ``protocol`` (:meth:`Method.protocol_config`); a protocol without one is an error, never a fallback."""
    folder = REPO / "configs" / "trainers" / method.trainer
    if not cfg:
        cfg = method.protocol_config(protocol)
        if not cfg and protocol == "base2novel":
            raise SweepError(f"trainer {method.trainer} names no default config: set CFG=<name of a file in "
                             f"configs/trainers/{method.trainer}/>, or give the class sweep_config = '<name>'")
        if not cfg:
            what = ("cross-dataset / domain-generalization (ImageNet training)" if protocol == "cross_dataset"
                    else protocol.replace("_", "-"))
            raise SweepError(f"{method.trainer} has no {what} config: its reference code publishes no recipe for "
                             f"this protocol (its class sets no sweep_{protocol}_config). Set CFG=<name> to run it "
                             f"with a config of {_display(folder)}/ you choose, e.g. CFG={method.config} (its "
                             "base-to-novel config).")
    path = folder / f"{cfg}.yaml"
    if not path.is_file():
        have = sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []
        known = f"configs there: {', '.join(have)}" if have else f"{folder} has no configs yet"
        raise SweepError(f"config file {path} not found ({method.trainer}'s config {cfg!r}); {known}. "
                         f"Set CFG=<name> to use another config of {method.trainer}.")
    return path


def config_backbone(path: Path) -> str:
    """MODEL.BACKBONE.NAME of a method config ('' when it sets none)."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise SweepError(f"{path} is not valid YAML: {e}") from None
    return str(((data.get("MODEL") or {}).get("BACKBONE") or {}).get("NAME") or "")


def path_token(backbone: str) -> str:
    """A backbone name usable in a folder name: ``ViT-L/14`` -> ``ViT-L-14``; a file path -> its stem."""
    if os.sep in backbone and Path(backbone).suffix:
        backbone = Path(backbone).stem
    return re.sub(r"[^A-Za-z0-9_.+-]+", "-", backbone).strip("-")


def calib_suffix(calib: str | None) -> str:
    """'' (no calibration), ``_calib`` (the paper's method) or ``_calib-<baseline>``."""
    if calib is None:
        return ""
    return "_calib" if calib == "tcpt" else f"_calib-{calib}"


def calib_label(calib: str | None) -> str:
    return "plain" if calib is None else ("calib" if calib == "tcpt" else f"calib-{calib}")


# ------------------------------------------------------------------------------------------------ settings
def _ints(text: str, name: str) -> list[int]:
    try:
        values = [int(t) for t in text.replace(",", " ").split()]
    except ValueError:
        raise SweepError(f"{name}={text!r}: expected integers separated by spaces, e.g. {name}=\"1 2 3\"") from None
    if not values:
        raise SweepError(f"{name} is empty; e.g. {name}=\"1 2 3\"")
    return values


def parse_calib(text: str) -> list[str | None]:
    """Variants of a CALIB value: ``both`` | ``on`` | ``off`` | baseline names, several allowed."""
    variants: list[str | None] = []
    for token in text.replace(",", " ").lower().split() or ["both"]:
        if token in CALIB_WORDS:
            found = CALIB_WORDS[token]
        else:
            from calibration.regularizers import resolve_calib_name  # the one list of objectives

            try:
                found = (resolve_calib_name(token) or None,)
            except Exception as e:  # UserError (or ValueError without the engine)
                raise SweepError(f"CALIB={text!r}: {e}. Use both | on | off or a baseline name.") from None
        variants += [v for v in found if v not in variants]
    return variants


def parse_opts(text: str) -> list[str]:
    """KEY VALUE pairs of OPTS (shell words)."""
    try:
        words = shlex.split(text)
    except ValueError as e:
        raise SweepError(f"OPTS={text!r}: {e}") from None
    if len(words) % 2:
        raise SweepError(f"OPTS={text!r}: expected KEY VALUE pairs, got an odd number of words")
    for key in words[::2]:
        if not KEY_RE.match(key):
            raise SweepError(f"OPTS: {key!r} is not a config key (KEY VALUE pairs such as OPTIM.MAX_EPOCH 5)")
    return words


@dataclass
class Settings:
    data: str = "./data"
    output: Path = Path("output")
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    shots: list[int] | None = None      # None: the protocol's default
    calib: list[str | None] = field(default_factory=lambda: [None, "tcpt"])
    cfg: str | None = None
    backbone: str | None = None
    opts: list[str] = field(default_factory=list)
    dry_run: bool = False
    stop_on_error: bool = False
    python: str = "python"
    on_mismatch: str = "rerun"
    threads: int | None = None          # THREADS (tools/run_policy.py); None = per backbone
    lockstep: str = "variants"          # LOCKSTEP (experiments/lockstep_groups.py): variants | methods | off

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "Settings":
        def get(name: str) -> str:
            return env.get(name, "").strip()

        s = cls(data=get("DATA") or "./data", output=Path(get("OUTPUT") or "output"),
                seeds=_ints(get("SEEDS") or "1 2 3", "SEEDS"), calib=parse_calib(get("CALIB")),
                cfg=get("CFG") or None, backbone=get("BACKBONE") or None, opts=parse_opts(env.get("OPTS", "")),
                dry_run=get("DRY_RUN") not in ("", "0", "false", "no"),
                stop_on_error=get("STOP_ON_ERROR") not in ("", "0", "false", "no"), python=get("PYTHON") or "python")
        s.on_mismatch = get("ON_MISMATCH").lower() or "rerun"
        if s.on_mismatch not in ("rerun", "error"):
            raise SweepError(f"ON_MISMATCH={get('ON_MISMATCH')!r}: use rerun (run a stale run again) or error")
        from tools.run_policy import ThreadsError, parse_threads

        try:
            s.threads = parse_threads(get("THREADS"))
        except ThreadsError as e:
            raise SweepError(str(e)) from None
        from experiments.lockstep_groups import LockstepSettingError, parse_mode

        try:
            s.lockstep = parse_mode(get("LOCKSTEP"))
        except LockstepSettingError as e:
            raise SweepError(str(e)) from None
        if get("SHOTS"):
            s.shots = _ints(get("SHOTS"), "SHOTS")
        # DATASET.NUM_SHOTS in OPTS is the same setting as SHOTS: take it, so that the layout tells the truth
        opt_keys = s.opts[::2]
        if "DATASET.SUBSAMPLE_CLASSES" in opt_keys:
            raise SweepError("OPTS sets DATASET.SUBSAMPLE_CLASSES; the sweep sets it (base, new or all) per run: "
                             "remove it from OPTS")
        if "DATASET.NUM_SHOTS" in opt_keys:
            i = opt_keys.index("DATASET.NUM_SHOTS") * 2
            shots = _ints(s.opts[i + 1], "DATASET.NUM_SHOTS in OPTS")
            if s.shots is not None and s.shots != shots:
                raise SweepError(f"SHOTS={get('SHOTS')} and OPTS DATASET.NUM_SHOTS {s.opts[i + 1]} disagree; set "
                                 "only SHOTS")
            s.shots = shots
            del s.opts[i:i + 2]
        return s

    def single_shots(self, default: int = 16) -> int:
        if self.shots is None:
            return default
        if len(self.shots) != 1:
            raise SweepError(f"SHOTS={' '.join(map(str, self.shots))}: this protocol takes one K (a list is for "
                             "few_shot.sh)")
        return self.shots[0]


# ------------------------------------------------------------------------------------------------ the plan
@dataclass
class Run:
    """One train.py invocation and where it leaves its run record."""
    out_dir: Path
    args: list[str]                   # train.py's arguments
    kind: str                         # train_base | test_new | train | eval | zero-shot
    depends: Path | None = None       # the run whose prompts it loads

    @property
    def done(self) -> bool:
        return (self.out_dir / "results.json").is_file()

    def argv(self, python: str) -> list[str]:
        return [python, _display(REPO / "train.py"), *self.args]

    def command(self, python: str = "python") -> str:
        return shlex.join(self.argv(python))


@dataclass
class Unit:
    """A training run (or a zero-shot source run) and the evaluations of its prompts, run in order."""
    label: str
    runs: list[Run]


class Planner:
    """Builds the runs of a protocol for one method from the settings (shared by every sweep)."""

    def __init__(self, method_name: str, settings: Settings):
        self.user, self.method = resolve_method(method_name)
        self.s = settings

    @property
    def variants(self) -> list[str | None]:
        return [None] if self.method.zero_shot else self.s.calib

    @property
    def seeds(self) -> list[int]:
        # zero-shot CLIP is deterministic: one run (the first seed) per split
        return self.s.seeds[:1] if self.method.zero_shot else self.s.seeds

    def shots(self, ks: Sequence[int]) -> list[int]:
        # zero-shot CLIP sees no training image: NUM_SHOTS 0 (no few-shot draw), one run whatever SHOTS says
        return [0] if self.method.zero_shot else list(ks)

    def config(self, protocol: str = "base2novel") -> Path:
        name = self.s.cfg or self.method.protocol_config(protocol)
        if name and name.endswith(".yaml") and Path(name).expanduser().is_file():  # a drop-in method's own file
            return Path(name).expanduser().resolve()
        return method_config(self.method, self.s.cfg, protocol)

    def backbone(self, dataset: str) -> str | None:
        return self.s.backbone or DEFAULT_BACKBONE.get(dataset)

    def cfg_name(self, config: Path, calib: str | None, backbone: str | None, dataset: str | None = None) -> str:
        """``<cfg>[_<backbone>][_calib|_calib-<name>][_<id8>]``: the backbone part only when it is not the
        config's; the id of the result-changing options (trainers/identity.py) only when OPTS are given."""
        name = config.stem
        if backbone and backbone != config_backbone(config):
            name += f"_{path_token(backbone)}"
        return name + calib_suffix(calib) + self.options_suffix(dataset)

    def options_suffix(self, dataset: str | None) -> str:
        if not self.s.opts:
            return ""  # default paths keep the CoOp layout
        from trainers.identity import options_id

        found = options_id(DATASET_OPTS.get(dataset or "", []) + self.s.opts)
        return f"_{found}" if found else ""

    def args(self, dataset: str, config: Path, seed: int, calib: str | None, out: Path, shots: int,
             subsample: str, model_dir: Path | None = None, extra: Sequence[str] = ()) -> list[str]:
        a = ["--root", self.s.data, "--seed", str(seed), "--trainer", self.method.trainer]
        if calib is not None:
            a += ["--calib"] if calib == "tcpt" else ["--calib", calib]
        backbone = self.backbone(dataset)
        if backbone:
            a += ["--backbone", backbone]
        a += ["--dataset-config-file", _display(dataset_config(dataset)), "--config-file", _display(config),
              "--output-dir", str(out)]
        if self.method.zero_shot:
            a += ["--eval-only"]
        elif model_dir is not None:
            a += ["--eval-only", "--model-dir", str(model_dir)]  # no --load-epoch: the last saved checkpoint
        from tools.run_policy import thread_opts

        return (a + thread_opts(self.s.threads, backbone) + DATASET_OPTS.get(dataset, []) + list(extra) + self.s.opts
                + ["DATASET.NUM_SHOTS", str(shots), "DATASET.SUBSAMPLE_CLASSES", subsample])

    def label(self, what: str, seed: int, calib: str | None) -> str:
        return f"{self.user} {what} " + ("zero-shot" if self.method.zero_shot else f"seed {seed} {calib_label(calib)}")

    # ---------------------------------------------------------------------------------------- protocols
    def base2novel(self, datasets: Sequence[str]) -> list[Unit]:
        """protocol.md §1: train on the base classes, evaluate the same prompts on the new classes."""
        shots = self.shots([self.s.single_shots()])[0]
        config = self.config()
        units = []
        for dataset in datasets:
            for seed in self.seeds:
                for calib in self.variants:
                    rel = (Path(dataset) / f"shots_{shots}" / self.method.trainer /
                           self.cfg_name(config, calib, self.backbone(dataset), dataset) / f"seed{seed}")
                    base = self.s.output / "base2new" / "train_base" / rel
                    new = self.s.output / "base2new" / "test_new" / rel
                    zs = self.method.zero_shot
                    runs = [Run(base, self.args(dataset, config, seed, calib, base, shots, "base"),
                                "zero-shot base" if zs else "train_base"),
                            Run(new, self.args(dataset, config, seed, calib, new, shots, "new", None if zs else base),
                                "zero-shot new" if zs else "test_new", None if zs else base)]
                    units.append(Unit(self.label(dataset, seed, calib), runs))
        return units

    def transfer(self, targets: Sequence[str]) -> list[Unit]:
        """Cross-dataset / domain generalization (engine.md §3.5): prompts trained on all ImageNet classes,
        evaluated on the targets; the ImageNet run is shared by both protocols."""
        shots = self.shots([self.s.single_shots()])[0]
        config = self.config("cross_dataset")
        units = []
        for seed in self.seeds:
            for calib in self.variants:
                folder = f"{self.cfg_name(config, calib, self.backbone(SOURCE_DATASET), SOURCE_DATASET)}_{shots}shots"
                src = self.s.output / SOURCE_DATASET / self.method.trainer / folder / f"seed{seed}"
                runs = [Run(src, self.args(SOURCE_DATASET, config, seed, calib, src, shots, "all"),
                            "zero-shot" if self.method.zero_shot else "train")]
                for target in targets:
                    out = self.s.output / "evaluation" / self.method.trainer / folder / target / f"seed{seed}"
                    dep = None if self.method.zero_shot else src
                    runs.append(Run(out, self.args(target, config, seed, calib, out, shots, "all", dep),
                                    f"eval {target}", dep))
                units.append(Unit(self.label(f"{SOURCE_DATASET} -> {len(targets)} datasets", seed, calib), runs))
        return units

    def few_shot(self, dataset: str) -> list[Unit]:
        """All-class few-shot learning for K in SHOTS (default 1 2 4 8 16)."""
        config = self.config("few_shot")
        extra = [] if self.s.cfg else FEW_SHOT_DATASET_OPTS.get(self.method.trainer, {}).get(dataset, [])
        units = []
        for shots in self.shots(self.s.shots or FEW_SHOT_KS):
            for seed in self.seeds:
                for calib in self.variants:
                    folder = f"{self.cfg_name(config, calib, self.backbone(dataset), dataset)}_{shots}shots"
                    out = self.s.output / dataset / self.method.trainer / folder / f"seed{seed}"
                    runs = [Run(out, self.args(dataset, config, seed, calib, out, shots, "all", extra=extra),
                                "zero-shot" if self.method.zero_shot else "train")]
                    units.append(Unit(self.label(f"{dataset} {shots}-shot", seed, calib), runs))
        return units


# ------------------------------------------------------------------------------------------------ execution
def _fmt_seconds(sec: float) -> str:
    sec = int(round(sec))
    return f"{sec // 3600}h{sec // 60 % 60:02d}m" if sec >= 3600 else (
        f"{sec // 60}m{sec % 60:02d}s" if sec >= 60 else f"{sec}s")


def result_line(run_dir: Path) -> str:
    """``acc 97.98  ece 1.01`` from a run's results.json ('' when unreadable)."""
    import json

    try:
        m = json.loads((run_dir / "results.json").read_text())["metrics"]
        return f"acc {m['accuracy']:.2f}  ece {m['ece']:.2f}"
    except (OSError, ValueError, KeyError, TypeError):
        return "(results.json unreadable)"


def tail(path: Path, n: int = 20) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"    ({path} missing)"
    return "\n".join("    " + line for line in lines[-n:])


def run_status(run: Run, runs: Sequence[Run], checker) -> tuple[str, list[str]]:
    """("done" | "stale" | "missing", differences) of a run's record against what the run would be now."""
    base = next((r for r in runs if r.out_dir == run.depends), None) if run.depends is not None else None
    return checker.status(run.out_dir, run.args, base.args if base is not None else None)


def execute(units: Sequence[Unit], s: Settings, python: str | None = None) -> int:
    """Run every unfinished or stale run in order; 0 when all runs are complete at the end, else 1."""
    from tools import children
    from tools.run_status import Checker

    python = python or sys.executable
    failed: list[Run] = []
    total = len(units)
    checker = Checker()
    from experiments.lockstep_groups import lockstep_args, sweep_partners

    partners = sweep_partners(units, s.lockstep)  # training runs that train in one process (LOCKSTEP)
    for i, unit in enumerate(units, 1):
        print(f"[{i}/{total}] {unit.label}", flush=True)
        for run in unit.runs:
            head = f"  {run.kind:<20}"
            state, diffs = run_status(run, unit.runs, checker)
            if state == "done":
                print(f"{head} done already  {result_line(run.out_dir)}", flush=True)
                continue
            if state == "stale":
                what = f"{head} stale record (differs in: {'; '.join(diffs)})"
                if s.on_mismatch == "error":
                    print(f"{what}; not run again (ON_MISMATCH=error): {run.out_dir}", flush=True)
                    failed.append(run)
                    continue
                print(f"{what}; running it again", flush=True)
            if run.depends is not None and (run.depends / "results.json").is_file() and any(
                    r.out_dir == run.depends for r in failed):
                print(f"{head} skipped: its training run {run.depends} is stale or failed", flush=True)
                failed.append(run)
                continue
            if run.depends is not None and not (run.depends / "results.json").is_file():
                print(f"{head} skipped: its training run {run.depends} did not finish", flush=True)
                failed.append(run)
                continue
            run.out_dir.mkdir(parents=True, exist_ok=True)
            log = run.out_dir / "console.log"
            argv = run.argv(python)
            wanted = ("missing", "stale") if s.on_mismatch == "rerun" else ("missing",)
            mates = [r for r in partners.get(run.out_dir, []) if run_status(r, [], checker)[0] in wanted]
            if mates:  # one train.py for the group; the mates' units later find their runs done
                argv = argv[:2] + lockstep_args([run.args, *(m.args for m in mates)])
                print(f"{head} in lockstep with {', '.join(str(m.out_dir) for m in mates)}", flush=True)
            t0 = time.time()
            try:
                from tools.progress import run_logged  # the run's epoch and ETA on the console while it runs

                with children.raise_on_terminate():
                    rc = run_logged(argv, log, head)
                    if mates and run_status(run, [], checker)[0] == "done":
                        rc = 0  # this run finished; a mate the group did not finish runs alone in its own unit
                    elif mates:  # the group did not finish this run: run it alone
                        print(f"{head} not finished by its lockstep group (exit code {rc}); last lines of {log}:\n"
                              f"{tail(log)}\n{head} running it alone", flush=True)
                        rc = run_logged(run.argv(python), log, head)
            except (KeyboardInterrupt, children.Terminated) as e:
                print(f"\ninterrupted during {run.out_dir} (its train.py was stopped); rerun the same command to "
                      "resume", flush=True)
                return 143 if isinstance(e, children.Terminated) else 130
            took = _fmt_seconds(time.time() - t0)
            if rc == 0 and run.done:
                print(f"{head} {result_line(run.out_dir)}  ({took})  {run.out_dir}", flush=True)
                continue
            why = f"exit code {rc}" if rc else "no results.json written"
            print(f"{head} FAILED ({why}, {took}); last lines of {log}:\n{tail(log)}\n"
                  f"    command: {run.command(s.python)}", flush=True)
            failed.append(run)
            if s.stop_on_error:
                print("stopping (STOP_ON_ERROR=1); rerun the same command to resume", flush=True)
                return 1
    if failed:
        print(f"{len(failed)} run(s) did not complete:", flush=True)
        for run in failed:
            print(f"  {run.out_dir}", flush=True)
        return 1
    return 0


# ------------------------------------------------------------------------------------------------ entry point
USAGE = {
    "base2novel": "METHOD DATASET", "base2novel_all": "METHOD", "cross_dataset": "METHOD",
    "domain_generalization": "METHOD", "few_shot": "METHOD DATASET",
}


def plan(command: str, names: Sequence[str], s: Settings) -> tuple[Planner, list[Unit], list[str]]:
    """The planner, the units, and the arguments of tools/parse_results.py that summarise them."""
    if command not in USAGE:
        raise _unknown("sweep", command, list(USAGE), "")
    want = len(USAGE[command].split())
    if len(names) != want:
        raise SweepError(f"usage: {command} {USAGE[command]} (got {len(names)} argument(s))")
    p = Planner(names[0], s)
    trainer = p.method.trainer
    if command == "base2novel":
        dataset = resolve_dataset(names[1])
        units = p.base2novel([dataset])
        summary = [str(s.output / "base2new"), "--method", trainer, "--dataset", DATASETS[dataset], "--summary"]
    elif command == "base2novel_all":
        units = p.base2novel(BASE2NOVEL_DATASETS)
        summary = [str(s.output / "base2new"), "--method", trainer, "--kind", "base2novel"]
    elif command in ("cross_dataset", "domain_generalization"):
        targets = CROSS_DATASET_TARGETS if command == "cross_dataset" else DOMAIN_TARGETS
        units = p.transfer(targets)
        summary = [str(s.output), "--method", trainer, "--kind", "all-classes"]
    else:
        dataset = resolve_dataset(names[1])
        units = p.few_shot(dataset)
        summary = [str(s.output), "--method", trainer, "--dataset", DATASETS[dataset], "--kind", "all-classes"]
    return p, units, summary


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    env = os.environ if env is None else env
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    try:
        s = Settings.from_env(env)
        _, units, summary = plan(argv[0], argv[1:], s)
    except SweepError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if s.dry_run:
        from tools.run_status import Checker

        checker = Checker()
        for unit in units:
            for run in unit.runs:
                print(run.command(s.python))
                state, diffs = run_status(run, unit.runs, checker) if run.done else ("missing", [])
                if state == "stale":
                    print(f"# stale record in {run.out_dir}: differs in {'; '.join(diffs)}", file=sys.stderr)
        return 0
    configs = {Path(run.args[run.args.index("--dataset-config-file") + 1]).stem
               for unit in units for run in unit.runs if "--dataset-config-file" in run.args}
    if configs and configs <= GENERATED_DATASETS:  # the toy world draws itself into DATA on first use
        os.makedirs(s.data, exist_ok=True)
    if not any(run.done for unit in units for run in unit.runs) and not os.path.exists(s.data):
        print(f"error: DATA={s.data} does not exist; set DATA to the datasets' root folder (the folder of class "
              "folders for imagefolder)", file=sys.stderr)
        return 2
    rc = execute(units, s)
    if rc in (130, 143):
        return rc
    print(flush=True)
    from tools import parse_results

    parse_results.main(summary)
    return rc


if __name__ == "__main__":
    sys.exit(main())
