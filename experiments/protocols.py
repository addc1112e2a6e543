"""The protocol tables: datasets and their registry names, the paper's column order, the transfer targets, the
few-shot Ks, and the settings the sweep applies itself to some datasets (the toy protocol); and where a method's
and a dataset's config files are."""
from __future__ import annotations

import os
from pathlib import Path

from experiments.errors import SweepError, unknown
from experiments.methods import Method

REPO = Path(__file__).resolve().parents[1]

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
#: crops of at least half the image, since the toy world's small objects vanish from 8%-area crops. The sweep's own
#: settings (train.py ``--sweep-opt``, announced on the console), not the user's options: they are not part of the
#: folder's options id; the user's OPTS override them.
DATASET_OPTS = {"toy": ["OPTIM.MAX_EPOCH", "20", "INPUT.RRCROP_SCALE", "(0.5, 1.0)", "DATALOADER.NUM_WORKERS", "2"]}


def resolve_dataset(name: str) -> str:
    """The config name (``caltech101``) of a case-insensitive config or registry name (``Caltech101``)."""
    key = name.strip().lower().replace("-", "_")
    for cfg_name, registry in DATASETS.items():
        if key in (cfg_name, registry.lower()):
            return cfg_name
    raise unknown("dataset", name, list(DATASETS), "Pass one of them as DATASET.")


def display(path: Path) -> str:
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
                             f"with a config of {display(folder)}/ you choose, e.g. CFG={method.config} (its "
                             "base-to-novel config).")
    path = folder / f"{cfg}.yaml"
    if not path.is_file():
        have = sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []
        known = f"configs there: {', '.join(have)}" if have else f"{folder} has no configs yet"
        raise SweepError(f"config file {path} not found ({method.trainer}'s config {cfg!r}); {known}. "
                         f"Set CFG=<name> to use another config of {method.trainer}.")
    return path


def config_file_values(path: Path) -> dict[str, object]:
    """The flat ``KEY: value`` entries a config file sets (``OPTIM.MAX_EPOCH: 50``)."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise SweepError(f"{path} is not valid YAML: {e}") from None
    flat: dict[str, object] = {}

    def walk(node, prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            else:
                flat[f"{prefix}{key}"] = value

    if isinstance(data, dict):
        walk(data, "")
    return flat


def config_backbone(path: Path) -> str:
    """MODEL.BACKBONE.NAME of a method config ('' when it sets none)."""
    return str(config_file_values(path).get("MODEL.BACKBONE.NAME") or "")


def path_token(backbone: str) -> str:
    """A backbone name usable in a folder name: ``ViT-L/14`` -> ``ViT-L-14``; a file path -> its stem."""
    import re

    if os.sep in backbone and Path(backbone).suffix:
        backbone = Path(backbone).stem
    return re.sub(r"[^A-Za-z0-9_.+-]+", "-", backbone).strip("-")
