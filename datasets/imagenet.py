"""ImageNet (ILSVRC-2012, 1000 classes) and the helpers its test-only variants share.

No split file: the image folders are the split (train = ``images/train/<wnid>/``, test = the official val set
sorted into ``images/val/<wnid>/``; val = test as in CoOp). Labels follow the sorted wnid folder names; class
names (CLIP's) come from ``classnames.txt`` (``<wnid> <name>`` lines, CoOp's file) or else from open_clip's
``IMAGENET_CLASSNAMES`` (sorted-wnid order). Listing 1.3M files is slow, so the listing is cached as JSON
(relative paths) and reused while the class folders stay the same.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from common.atomic import atomic_write_json
from common.errors import MissingFileError, UserError
from dassl.data.datasets import DATASET_REGISTRY

from .base import BenchmarkDataset
from .common import IMAGE_EXTENSIONS, Item, Split, first_writable, path_key

CLASSNAMES_FILE = "classnames.txt"
LISTING_FORMAT = "calib-prompt-listing/1"


def read_classnames(path: Path) -> dict[str, str]:
    """``<wnid> <class name words>`` lines -> {wnid: name} in file order."""
    out: dict[str, str] = {}
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        wnid, _, name = line.strip().partition(" ")
        if not name:
            raise UserError(f"{path}:{i}: expected '<wnid> <class name>', got {line!r}.")
        out[wnid] = name.strip()
    return out


def open_clip_classnames() -> list[str]:
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    return list(IMAGENET_CLASSNAMES)


def wnid_names(root: Path, own_dir: Path, wnids: list[str], dataset: str) -> dict[str, str]:
    """{wnid: CLIP class name} for ``wnids``: the dataset's own classnames.txt, else ImageNet's, else open_clip's
    names zipped with the full sorted list of 1000 wnids (from ``wnids`` or ImageNet's train folders)."""
    for path in (own_dir / CLASSNAMES_FILE, root / "imagenet" / CLASSNAMES_FILE):
        if path.is_file():
            names = read_classnames(path)
            unknown = [w for w in wnids if w not in names]
            if unknown:
                raise UserError(f"{dataset}: {len(unknown)} class folders are not in {path} (e.g. {unknown[0]}).")
            return names
    names = open_clip_classnames()
    full = sorted(wnids)
    if len(full) != len(names):
        train = root / "imagenet" / "images" / "train"
        full = sorted(e.name for e in os.scandir(train) if e.is_dir()) if train.is_dir() else []
    if len(full) != len(names) or any(w not in set(full) for w in wnids):
        raise MissingFileError(
            f"{dataset}: class names need {own_dir / CLASSNAMES_FILE} (or {root / 'imagenet' / CLASSNAMES_FILE}): "
            f"with only {len(wnids)} class folders the wnids cannot be matched to open_clip's 1000 names.\n"
            f"Fix: python tools/prepare_data.py --dataset {dataset} --root {root} (downloads classnames.txt)"
        )
    return dict(zip(full, names))


def _scan(folder: Path) -> dict[str, list[str]]:
    """{class folder: sorted image file names} (hidden entries and plain files at the top are ignored)."""
    out = {}
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        out[entry.name] = sorted(e.name for e in os.scandir(entry.path) if not e.name.startswith(".") and e.is_file())
    return out


def _class_folders(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if not e.name.startswith(".") and e.is_dir())


def cached_listing(name: str, dataset_path: Path, image_path: Path, subdirs: dict[str, str],
                   cache_dir: Path | None) -> dict[str, dict[str, list[str]]]:
    """{split: {class folder: [file names]}} for each ``subdirs`` entry (split -> folder under the image folder),
    from ``listing_<name>.json`` (dataset folder, else the cache dir) while the class folders are unchanged,
    else by scanning (then saved). Delete the file to force a rescan."""
    folders = {key: _class_folders(image_path / sub if sub else image_path) for key, sub in subdirs.items()}
    filename = f"listing_{name}.json"
    places = [dataset_path]
    if cache_dir is not None:
        places.append(cache_dir / "listing" / f"{name}-{path_key(dataset_path)}")
    for place in places:
        path = place / filename
        if not path.is_file():
            continue
        try:
            with open(path, encoding="utf-8") as f:
                obj = json.load(f)
            splits = obj["splits"]
            if obj.get("format") == LISTING_FORMAT and all(sorted(splits[k]) == folders[k] for k in subdirs):
                print(f"Loading image listing from {path} (delete it to rescan)")
                return {k: splits[k] for k in subdirs}
        except (OSError, ValueError, KeyError, TypeError):
            pass
        print(f"Image listing {path} is stale or unreadable; rescanning")
    print(f"Listing the images of {name} under {image_path} (once; the listing is cached)")
    splits = {key: _scan(image_path / sub if sub else image_path) for key, sub in subdirs.items()}
    target = first_writable(places)
    if target is not None:
        try:
            atomic_write_json(target / filename, {"format": LISTING_FORMAT, "dataset": name, "splits": splits},
                              indent=None, end="")
        except OSError:
            pass
    return splits


@DATASET_REGISTRY.register()
class ImageNet(BenchmarkDataset):
    dataset_dir = "imagenet"
    image_dirs = ("images",)
    source_files = ("the image listing",)
    expected = (1281167, 0, 50000, 1000)
    layout = "imagenet/images/train/<wnid>/*.JPEG, imagenet/images/val/<wnid>/*.JPEG (+ imagenet/classnames.txt)"
    fewshot_val = False
    val_is_test = True

    @classmethod
    def read_source(cls, dataset_path: Path, cache_dir: Path | None = None) -> Split:
        _, image_path = cls.image_folder(dataset_path)
        for sub in ("train", "val"):
            if not (image_path / sub).is_dir():
                raise MissingFileError(f"ImageNet: {image_path / sub} not found (expected {cls.layout}).\n"
                                       f"Fix: {cls.fix(dataset_path)} (prints how to get ImageNet)")
        flat = [e.name for e in os.scandir(image_path / "val")
                if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS)]
        if flat:
            raise UserError(
                f"ImageNet: {image_path / 'val'} holds {len(flat):,} image files directly (e.g. {sorted(flat)[0]}), "
                "but it must hold one folder per class (wnid) like images/train/.\n"
                "Fix: sort the validation images into wnid folders with the labels of the ILSVRC2012 devkit, e.g. "
                "run the widely used valprep.sh (one `mkdir -p <wnid>; mv <image> <wnid>/` per image) inside "
                f"{image_path / 'val'}, then run again."
            )
        listing = cached_listing(cls.__name__, dataset_path, image_path, {"train": "train", "test": "val"}, cache_dir)
        wnids = sorted(listing["train"])
        if not wnids:
            raise MissingFileError(f"ImageNet: no class folders under {image_path / 'train'}.\n"
                                   f"Fix: {cls.fix(dataset_path)}")
        label = {w: i for i, w in enumerate(wnids)}
        unknown = [w for w in listing["test"] if w not in label]
        if unknown:
            raise UserError(f"ImageNet: {image_path / 'val'} has class folders missing from images/train "
                            f"(e.g. {unknown[0]}).")
        names = wnid_names(cls.root_of(dataset_path), dataset_path, wnids, cls.__name__)
        train = [Item(f"train/{w}/{f}", label[w], names[w]) for w in wnids for f in listing["train"][w]]
        test = [Item(f"val/{w}/{f}", label[w], names[w]) for w in sorted(listing["test"]) for f in listing["test"][w]]
        return Split(train, [], test)


class ImageNetVariant(BenchmarkDataset):
    """A test-only ImageNet variant: every image is in test (and train_x), no few-shot subset.
    Labels: index among the sorted class folders (wnids), class names by wnid."""

    test_only = True
    source_files = ("the image listing",)

    @classmethod
    def read_source(cls, dataset_path: Path, cache_dir: Path | None = None) -> Split:
        _, image_path = cls.image_folder(dataset_path)
        listing = cached_listing(cls.__name__, dataset_path, image_path, {"test": ""}, cache_dir)["test"]
        if not listing:
            raise MissingFileError(
                f"{cls.__name__}: no class folders under {image_path}.\nFix: {cls.fix(dataset_path)}")
        folders = sorted(listing)
        names = cls.classnames_for(dataset_path, folders)
        test = [Item(f"{d}/{f}", label, names[d]) for label, d in cls.labelled(folders) for f in listing[d]]
        return Split([], [], test)

    @classmethod
    def labelled(cls, folders: list[str]) -> list[tuple[int, str]]:
        return list(enumerate(folders))

    @classmethod
    def classnames_for(cls, dataset_path: Path, folders: list[str]) -> dict[str, str]:
        return wnid_names(cls.root_of(dataset_path), dataset_path, folders, cls.__name__)
