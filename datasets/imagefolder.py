"""ImageFolder: any ``DATASET.ROOT/<class_name>/*.{jpg,jpeg,png,bmp,gif,webp}`` tree.

Labels follow the sorted class folder names; a class name is its folder name with ``_`` read as a space. The
first use draws a 50/20/30 train/val/test split per class with a fixed seed of its own (independent of the run
seed, and not touching Python's global ``random``, so the few-shot draw stays canonical) and saves it as
``split_imagefolder.json`` beside the class folders (or in the cache dir when the folder is read-only). Then
the same few-shot and base/new logic as the benchmark datasets applies.

Two folders whose class names CLIP would read alike (``red_apple`` and ``red apple``) are an error naming both.
A saved split is kept while it lists exactly the images there are: an image gone is an error, images added are a
warning (they are not used); both say how to split again (delete the saved split). A change of the class folders
themselves splits again.
"""
from __future__ import annotations

import os
import random
from pathlib import Path

from common.errors import MissingFileError, UserError
from dassl.data.datasets import DATASET_REGISTRY

from .base import BenchmarkDataset
from .common import (
    IMAGE_EXTENSIONS, Item, Split, first_writable, missing_images_message, path_key, read_split, save_split,
)

SPLIT_FILE = "split_imagefolder.json"
SPLIT_SEED = 0
SPLIT_FRACTIONS = (0.5, 0.2, 0.3)
RESERVED = {"split_fewshot"}


def class_folders(root: Path) -> dict[str, list[str]]:
    """{folder: sorted image file names} for every non-hidden sub-folder holding at least one image."""
    out = {}
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.name.startswith(".") or entry.name in RESERVED or not entry.is_dir():
            continue
        files = sorted(e.name for e in os.scandir(entry.path)
                       if not e.name.startswith(".") and e.name.lower().endswith(IMAGE_EXTENSIONS) and e.is_file())
        if files:
            out[entry.name] = files
    return out


def class_name(folder: str) -> str:
    return folder.replace("_", " ")


def check_class_names(folders, root: Path) -> None:
    """Two folders whose class names CLIP reads alike (``_`` as a space, lower case, runs of spaces collapsed, as
    the tokenizer cleans text) would be two classes with one text: an error naming both folders."""
    seen: dict[str, str] = {}
    for folder in sorted(folders):
        key = " ".join(class_name(folder).lower().split())
        if key in seen:
            raise UserError(f"ImageFolder: class folders '{seen[key]}' and '{folder}' under {root} give the same "
                            f"class name '{key}' (a class name is its folder name with '_' read as a space, in CLIP's "
                            "lower case); rename one of them, or merge them if they are one class")
        seen[key] = folder


def make_split(folders: dict[str, list[str]], seed: int = SPLIT_SEED) -> Split:
    """Per class (sorted folders): shuffle with a private RNG, val = round(0.2 n), test = round(0.3 n) (each at
    least 1), train = the rest. Needs 3 images per class."""
    rng = random.Random(seed)
    split = Split()
    for label, (folder, files) in enumerate(sorted(folders.items())):
        n = len(files)
        if n < 3:
            raise UserError(f"ImageFolder: class folder '{folder}' has {n} image(s); each class needs at least 3 "
                            "(one each for train, val and test).")
        files = list(files)
        rng.shuffle(files)
        n_val = max(1, round(SPLIT_FRACTIONS[1] * n))
        n_test = max(1, round(SPLIT_FRACTIONS[2] * n))
        n_train = n - n_val - n_test
        name = class_name(folder)
        items = [Item(f"{folder}/{f}", label, name) for f in files]
        split.train += items[:n_train]
        split.val += items[n_train:n_train + n_val]
        split.test += items[n_train + n_val:]
    return split


def check_unchanged(split: Split, folders: dict[str, list[str]], path: Path, root: Path) -> None:
    """The saved split must list exactly the images there are now: an image gone is an error, images added are a
    warning (the saved split wins, so earlier runs stay comparable); both say how to split again."""
    listed = {it.impath for part in (split.train, split.val, split.test) for it in part}
    present = {f"{folder}/{f}" for folder, files in folders.items() for f in files}
    resplit = f"to split the current images again, delete the saved split: rm '{path}'"
    gone, added = sorted(listed - present), sorted(present - listed)
    if gone:
        raise MissingFileError(missing_images_message([str(root / p) for p in gone], len(listed),
                                                      f"the saved split {path}", f"put them back, or {resplit}"))
    if added:
        print(f"Warning: {len(added)} image(s) under {root} are not in the saved split {path} (first: {added[0]}) "
              f"and are not used; {resplit} (runs made with the old split then no longer pair with new ones)")


@DATASET_REGISTRY.register()
class ImageFolder(BenchmarkDataset):
    dataset_dir = ""  # DATASET.ROOT is the image tree itself
    image_dirs = ("",)
    split_file = SPLIT_FILE
    layout = "DATASET.ROOT/<class_name>/*.jpg (one folder per class)"

    @classmethod
    def fix(cls, dataset_path: Path) -> str:
        return (f"put one folder per class with its images under {dataset_path} (or delete {SPLIT_FILE} to "
                "split the current images again)")

    @classmethod
    def locate(cls, root: Path) -> Path:
        if not root.is_dir():
            raise MissingFileError(f"ImageFolder: DATASET.ROOT {root} is not a folder (expected {cls.layout}).")
        return root

    @classmethod
    def read_source(cls, dataset_path: Path, cache_dir: Path | None = None) -> Split:
        folders = class_folders(dataset_path)
        if not folders:
            raise MissingFileError(f"ImageFolder: no class folders with images ({', '.join(IMAGE_EXTENSIONS)}) "
                                   f"under {dataset_path} (expected {cls.layout}).")
        check_class_names(folders, dataset_path)
        places = [dataset_path]
        if cache_dir is not None:
            places.append(cache_dir / "imagefolder" / path_key(dataset_path))
        for place in places:
            path = place / SPLIT_FILE
            if path.is_file():
                split = read_split(path)
                used = {it.impath.split("/", 1)[0] for part in (split.train, split.val, split.test) for it in part}
                if used == set(folders):
                    print(f"Reading split from {path}")
                    check_unchanged(split, folders, path, dataset_path)
                    return split
                print(f"{path} was made for other class folders ({len(used)} vs {len(folders)} now); splitting again")
        split = make_split(folders)
        target = first_writable(places)
        if target is None:
            print(f"Warning: cannot write {SPLIT_FILE} in any of {', '.join(map(str, places))}; using it unsaved")
        else:
            save_split(split, target / SPLIT_FILE)
            print(f"Saved a new 50/20/30 split to {target / SPLIT_FILE}")
        return split

