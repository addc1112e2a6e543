"""Builders of fake dataset trees for tests: real folder layouts, zero-byte or tiny images, and a config.

The dataset classes only check that images exist (the loaders open them later), so zero-byte files are enough
unless a test decodes images; ``write_imagefolder`` writes real tiny JPEGs for runs that train.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from .common import Item, Split, add_dataset_config, save_split


def make_cfg(root: str | os.PathLike, name: str, *, shots: int = -1, seed: int = 1, subsample: str = "all",
             cache_dir: str = "", check_images: bool = True):
    """A default config (plus this package's keys) pointing at ``root`` / ``name``."""
    from dassl.config import get_cfg_default

    cfg = get_cfg_default()
    add_dataset_config(cfg)
    cfg.DATASET.ROOT = str(root)
    cfg.DATASET.NAME = name
    cfg.DATASET.NUM_SHOTS = shots
    cfg.DATASET.SUBSAMPLE_CLASSES = subsample
    cfg.DATASET.CACHE_DIR = cache_dir
    cfg.DATASET.CHECK_IMAGES = check_images
    cfg.SEED = seed
    return cfg


def touch_files(folder: str | os.PathLike, relpaths: Iterable[str]) -> int:
    """Create empty files at ``folder/<rel>`` (parents included); returns how many."""
    folder = str(folder)
    made_dirs: set[str] = set()
    n = 0
    for rel in relpaths:
        path = os.path.join(folder, rel)
        parent = os.path.dirname(path)
        if parent not in made_dirs:
            os.makedirs(parent, exist_ok=True)
            made_dirs.add(parent)
        open(path, "wb").close()
        n += 1
    return n


def write_split_dataset(root: str | os.PathLike, cls, split: Split, images: str = "all") -> Path:
    """Lay out ``cls`` (a dataset class with a split JSON) under ``root``: the split file and, with
    ``images="all"``, an empty file per image (``"none"``: only the image folder). Returns the dataset folder."""
    dataset_path = Path(root) / cls.dataset_dir
    image_path = dataset_path / cls.image_dirs[0] if cls.image_dirs[0] else dataset_path
    image_path.mkdir(parents=True, exist_ok=True)
    save_split(split, dataset_path / cls.split_file)
    if images == "all":
        parts = (split.train, split.val, split.test)
        touch_files(image_path, dict.fromkeys(it.impath for part in parts for it in part))
    return dataset_path


def write_imagefolder(root: str | os.PathLike, counts: dict[str, int], size: int = 8) -> Path:
    """``root/<class>/<i>.jpg`` tiny real JPEGs, one flat colour per class (so a model can separate them)."""
    from PIL import Image

    root = Path(root)
    for k, (name, n) in enumerate(sorted(counts.items())):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        colour = ((53 * k) % 256, (97 * k + 80) % 256, (151 * k + 160) % 256)
        for i in range(n):
            Image.new("RGB", (size, size), colour).save(folder / f"{i:04d}.jpg", quality=90)
    return root


def synthetic_split(n_classes: int, per_class: tuple[int, int, int], name: str = "class{:03d}",
                    path: str = "{cname}/img_{split}_{i:03d}.jpg") -> Split:
    """A split with ``per_class`` = (train, val, test) items for each of ``n_classes`` labels, class by class."""
    split = Split()
    for label in range(n_classes):
        cname = name.format(label)
        for key, n in zip(("train", "val", "test"), per_class):
            getattr(split, key).extend(
                Item(path.format(cname=cname, split=key, i=i, label=label), label, cname) for i in range(n))
    return split
