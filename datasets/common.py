"""Shared dataset logic: split files, base/new class split, templates, config keys, paths and image checks.

Every dataset module builds on these helpers, so each idea lives here once. Items are kept as light
``Item(impath, label, classname)`` tuples whose ``impath`` is relative to the dataset's image folder (the
convention of the split JSONs); they become ``Datum`` objects only at the end of the pipeline.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, NamedTuple, Sequence

from common.atomic import atomic_write_json
from common.errors import MissingFileError, UserError
from dassl.data.datasets.base_dataset import Datum

SUBSAMPLE_CHOICES = ("all", "base", "new")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")

# docs/method_notes.md#frozen-target-templates: the single frozen template per dataset (class names get "_" -> " " in
# the trainer).
DEFAULT_TEMPLATE = "a photo of a {}."
TEMPLATES: dict[str, str] = {
    "OxfordPets": "a photo of a {}, a type of pet.",
    "OxfordFlowers": "a photo of a {}, a type of flower.",
    "FGVCAircraft": "a photo of a {}, a type of aircraft.",
    "DescribableTextures": "{} texture.",
    "EuroSAT": "a centered satellite photo of {}.",
    "Food101": "a photo of {}, a type of food.",
    "UCF101": "a photo of a person doing {}.",
    "StanfordCars": DEFAULT_TEMPLATE,
    "SUN397": DEFAULT_TEMPLATE,
    "Caltech101": DEFAULT_TEMPLATE,
    "ImageNet": DEFAULT_TEMPLATE,
    "ImageNetV2": DEFAULT_TEMPLATE,
    "ImageNetSketch": DEFAULT_TEMPLATE,
    "ImageNetA": DEFAULT_TEMPLATE,
    "ImageNetR": DEFAULT_TEMPLATE,
}


def get_template(dataset_name: str) -> str:
    """The single zero-shot template of a dataset: the class's ``template`` attribute, else the table, else
    the default."""
    try:
        from dassl.data.datasets import DATASET_REGISTRY

        cls = DATASET_REGISTRY.get(dataset_name)
    except Exception:  # unknown name: fall back to the table
        cls = None
    template = getattr(cls, "template", None)
    if isinstance(template, str) and "{}" in template:
        return template
    return TEMPLATES.get(dataset_name, DEFAULT_TEMPLATE)


# ----------------------------------------------------------------------------------------------- config
#: the DATASET keys of this package (declared here only; the engine's DATASET keys are in dassl/config/defaults.py)
DATASET_DEFAULTS: dict[str, Any] = {"SUBSAMPLE_CLASSES": "all", "CACHE_DIR": "", "CHECK_IMAGES": True}


def add_dataset_config(cfg) -> None:
    """Add the dataset keys of this package to a (non-frozen) config; called from train.py's extend_cfg.

    DATASET.SUBSAMPLE_CLASSES: all | base | new (docs/protocol_notes.md#class-split).
    DATASET.CACHE_DIR: few-shot caches go to <CACHE_DIR>/fewshot/ when set (empty = next to the data). Image
        listings and ImageFolder splits stay next to the data; all three fall back to CACHE_DIR, else
        $XDG_CACHE_HOME/calib-prompt, when the data folder is read-only.
    DATASET.CHECK_IMAGES: check once per run that every image the run uses exists (one fast pass).
    """
    for key, value in DATASET_DEFAULTS.items():
        if key not in cfg.DATASET:
            setattr(cfg.DATASET, key, value)


def cfg_get(cfg, key: str) -> Any:
    """``cfg.DATASET.<key>``, its :data:`DATASET_DEFAULTS` value in a config built without add_dataset_config."""
    node = cfg.DATASET
    return node[key] if key in node else DATASET_DEFAULTS[key]


def dataset_root(cfg) -> Path:
    """DATASET.ROOT, expanded and absolute; a clear error when it is unset."""
    root = str(cfg.DATASET.ROOT or "").strip()
    if not root:
        raise UserError(
            "DATASET.ROOT is not set: pass --root DIR (the folder that holds the dataset folders, "
            "see `python tools/prepare_data.py --help`)."
        )
    return Path(os.path.abspath(os.path.expanduser(root)))


def cache_root(cfg=None) -> Path:
    """Folder for caches that cannot live next to the data: DATASET.CACHE_DIR, else
    $XDG_CACHE_HOME/calib-prompt (default ~/.cache/calib-prompt)."""
    configured = str(cfg_get(cfg, "CACHE_DIR") or "") if cfg is not None else ""
    if configured:
        return Path(os.path.abspath(os.path.expanduser(configured)))
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "calib-prompt"


def prepare_command(name: str, root: str | os.PathLike) -> str:
    return f"python tools/prepare_data.py --dataset {name} --root {root}"


# ------------------------------------------------------------------------------------------ file writing
def dir_writable(path: Path) -> bool:
    """Whether files can be created in ``path`` (created if needed). Probes by writing, because
    os.access lies on some mounts and for root."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".probe-"):
            pass
        return True
    except OSError:
        return False



def first_writable(dirs: Sequence[Path]) -> Path | None:
    for d in dirs:
        if dir_writable(d):
            return d
    return None


def path_key(path: Path) -> str:
    """Short stable key of an absolute path, to keep per-folder caches apart in the cache root."""
    return hashlib.sha1(str(path).encode("utf-8")).hexdigest()[:12]


# ------------------------------------------------------------------------------------------------ splits
class Item(NamedTuple):
    """One image: path relative to the image folder (posix), 0-based label, class name."""

    impath: str
    label: int
    classname: str


def canonical_sha256(obj: Any) -> str:
    """sha256 of a JSON value independent of formatting (indentation, trailing newline, key order)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def items_to_json(items: Iterable[Item]) -> list[list]:
    return [[it.impath, it.label, it.classname] for it in items]


@dataclass
class Split:
    """A train/val/test split of Items (relative paths)."""

    train: list[Item] = field(default_factory=list)
    val: list[Item] = field(default_factory=list)
    test: list[Item] = field(default_factory=list)

    def to_json(self) -> dict[str, list[list]]:
        return {"train": items_to_json(self.train), "val": items_to_json(self.val), "test": items_to_json(self.test)}

    def sha256(self) -> str:
        """Content hash of the split (same for every formatting of the same JSON)."""
        return canonical_sha256(self.to_json())

    def counts(self) -> tuple[int, int, int]:
        return len(self.train), len(self.val), len(self.test)

    def classnames(self) -> dict[int, str]:
        """label -> classname over all three splits."""
        out: dict[int, str] = {}
        for items in (self.train, self.val, self.test):
            for it in items:
                out.setdefault(it.label, it.classname)
        return dict(sorted(out.items()))


def parse_split(obj: Any, source: str, keys: Sequence[str] = ("train", "val", "test")) -> dict[str, list[Item]]:
    """Validate a parsed split object ``{"train": [[rel, label, classname], ...], ...}`` and convert it."""
    if not isinstance(obj, dict):
        raise UserError(f"{source}: expected a JSON object with keys {list(keys)}, got {type(obj).__name__}.")
    out: dict[str, list[Item]] = {}
    for key in keys:
        entries = obj.get(key)
        if not isinstance(entries, list):
            raise UserError(f"{source}: key '{key}' is missing or not a list.")
        items = []
        for i, e in enumerate(entries):
            if (
                not isinstance(e, (list, tuple))
                or len(e) != 3
                or not isinstance(e[0], str)
                or isinstance(e[1], bool)
                or not isinstance(e[1], int)
                or not isinstance(e[2], str)
            ):
                raise UserError(f"{source}: {key}[{i}] = {e!r} is not [relative_path, int label, classname].")
            items.append(Item(e[0].lstrip("/"), e[1], e[2]))
        out[key] = items
    return out


def read_split(path: str | os.PathLike) -> Split:
    """Read a split JSON (CoOp format). Paths stay relative to the image folder."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON ({exc}); delete it and download it again.") from None
    parts = parse_split(obj, str(path))
    return Split(parts["train"], parts["val"], parts["test"])


def save_split(split: Split, path: str | os.PathLike) -> None:
    """Write a split JSON in the CoOp format (indent 4), atomically."""
    atomic_write_json(Path(path), split.to_json(), indent=4, end="")


def to_datums(items: Iterable[Item], image_path: str | os.PathLike) -> list:
    """Items -> Datum objects with absolute paths. Existence is checked once elsewhere (check_images)."""
    base = str(image_path)
    return [Datum(impath=os.path.join(base, it.impath), label=it.label, classname=it.classname, check_exists=False)
            for it in items]


# ---------------------------------------------------------------------------------------- base/new split
def subsample_classes(*splits, subsample: str = "all") -> list:
    """docs/protocol_notes.md#class-split: keep the base (first ceil(n/2) sorted labels of ``splits[0]``) or new (the
    rest) classes, relabelled by position to 0..k-1, in every split. Works on Items and on Datum objects."""
    if subsample not in SUBSAMPLE_CHOICES:
        raise UserError(
            f"DATASET.SUBSAMPLE_CLASSES must be one of {', '.join(SUBSAMPLE_CHOICES)} (got {subsample!r})."
        )
    if subsample == "all":
        return list(splits)
    labels = sorted({item.label for item in splits[0]})
    m = math.ceil(len(labels) / 2)
    if subsample == "base":
        print("SUBSAMPLE BASE CLASSES!")
        selected = labels[:m]
    else:
        print("SUBSAMPLE NEW CLASSES!")
        selected = labels[m:]
    relabeler = {y: i for i, y in enumerate(selected)}
    return [[_relabel(item, relabeler[item.label]) for item in split if item.label in relabeler] for split in splits]


def _relabel(item, label: int):
    if isinstance(item, Item):
        return item._replace(label=label)
    return Datum(impath=item.impath, label=label, domain=item.domain, classname=item.classname, check_exists=False)


# --------------------------------------------------------------------------------------------- checking
def find_missing(paths: Sequence[str], progress: str | None = None) -> list[str]:
    """Paths (absolute) that do not exist, in input order. One directory listing per folder that holds many
    of them instead of one stat per file; ``progress`` names a tqdm bar (None = silent)."""
    by_dir: dict[str, list[int]] = defaultdict(list)
    for i, p in enumerate(paths):
        by_dir[os.path.dirname(p)].append(i)
    groups = by_dir.items()
    if progress:
        from tqdm import tqdm

        groups = tqdm(groups, total=len(by_dir), desc=progress, unit="dir", leave=False)
    missing: list[int] = []
    for d, idx in groups:
        if len(idx) > 8:
            try:
                names = set(os.listdir(d))
            except OSError:
                names = set()
            missing.extend(i for i in idx if os.path.basename(paths[i]) not in names)
        else:
            missing.extend(i for i in idx if not os.path.isfile(paths[i]))
    return [paths[i] for i in sorted(missing)]


def missing_images_message(missing: Sequence[str], total: int, where: str, fix: str) -> str:
    head = "\n".join(f"  {p}" for p in missing[:5])
    more = f"\n  ... and {len(missing) - 5:,} more" if len(missing) > 5 else ""
    return (f"{len(missing):,} of {total:,} images named by {where} are missing, e.g.:\n{head}{more}\n"
            f"Fix: {fix}")


def check_images(items: Sequence[Item], image_path: Path, where: str, fix: str) -> None:
    """Raise one UserError listing how many of the images are missing (plus the first few)."""
    paths = [os.path.join(str(image_path), it.impath) for it in items]
    missing = find_missing(paths)
    if missing:
        raise MissingFileError(missing_images_message(missing, len(paths), where, fix))


def split_problems(split: Split, expected: tuple[int, int, int, int] | None) -> list[str]:
    """Structure checks of a split: labels 0..n-1, one class name per label, no repeated path per split,
    and the canonical counts (train, val, test, classes) when known."""
    problems = []
    names: dict[int, set[str]] = defaultdict(set)
    for items in (split.train, split.val, split.test):
        for it in items:
            names[it.label].add(it.classname)
    labels = sorted(names)
    if labels and labels != list(range(len(labels))):
        problems.append(f"labels are not 0..{len(labels) - 1}")
    multi = [y for y, n in names.items() if len(n) > 1]
    if multi:
        problems.append(f"{len(multi)} labels have several class names (e.g. {multi[0]}: {sorted(names[multi[0]])})")
    for key, items in (("train", split.train), ("val", split.val), ("test", split.test)):
        if len({it.impath for it in items}) != len(items):
            problems.append(f"repeated paths in {key}")
    if expected is not None:
        got = (*split.counts(), len(labels))
        if got != tuple(expected):
            problems.append("train/val/test/classes = {} (expected {})".format(
                "/".join(f"{n:,}" for n in got), "/".join(f"{n:,}" for n in expected)))
    return problems
