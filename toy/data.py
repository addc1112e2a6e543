"""The Toy dataset on disk: 48 classes of the toy world drawn into per-class folders, plus its split JSON.

Layout (under ``DATASET.ROOT/toy/``), the same as the CoOp datasets so every tool reads it unchanged::

    images/<class_folder>/{train,val,test}_NNN.png   96×96 PNG
    split_toy.json    {"train": [[rel_path, label, classname], ...], "val": ..., "test": ...} (paths under images/)
    toy_world.json    what generated the tree (version, seed, counts); a mismatch regenerates it

Each image has its own seeded generator (seed, label, split, index), so the tree is identical whatever the order
or the process that draws it. Images are written through a temp file + rename and the split JSON last, so a split
JSON on disk always names complete files.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping

import numpy as np
from tqdm import tqdm

from common.atomic import atomic_open, atomic_write_json

from . import world

SPLIT_FILE = "split_toy.json"
IMAGE_DIR = "images"
MARKER_FILE = "toy_world.json"
COUNTS: Mapping[str, int] = {"train": 30, "val": 10, "test": 20}  # per class: 16 shots + val + test
SEED = 0
#: The Toy dataset's "camera": colours faded to this fraction of their saturation. Like a real downstream dataset
#: (satellite images, textures, a particular camera), the dataset has imaging conditions of its own that
#: pre-training never saw; zero-shot CLIP pays for them (it confuses the faded colours), and the few shots show
#: them to a prompt learner. With unfaded images zero-shot was as good as any classifier the few shots allow (a
#: linear probe on the frozen features did not beat it), so prompt tuning had nothing to learn. See toy/README.md.
SATURATION = 0.5
#: Bump when the drawing code or the class list changes, so stale trees are redrawn.
VERSION = 2  # 2: faded colours (SATURATION)
_STREAM = 2  # keeps dataset draws apart from pre-training's streams (0: training, 1: its held-out check)


def image_rng(seed: int, label: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, _STREAM, label, list(COUNTS).index(split), index])


def marker(seed: int = SEED) -> dict:
    return {"version": VERSION, "seed": seed, "saturation": SATURATION, "counts": dict(COUNTS), "classes": world.classnames()}


def split_json(seed: int = SEED) -> dict[str, list[list]]:
    """The split in the CoOp format; class by class, in label order."""
    out: dict[str, list[list]] = {split: [] for split in COUNTS}
    for label, cls in enumerate(world.CLASSES):
        for split, n in COUNTS.items():
            out[split] += [[f"{cls.folder}/{split}_{i:03d}.png", label, cls.name] for i in range(n)]
    return out


def is_current(dataset_dir: str | os.PathLike, seed: int = SEED) -> bool:
    """Whether ``dataset_dir`` holds a complete tree made by this code with this seed."""
    d = Path(dataset_dir)
    try:
        with open(d / MARKER_FILE, encoding="utf-8") as f:
            return json.load(f) == marker(seed) and (d / SPLIT_FILE).is_file()
    except (OSError, ValueError):
        return False


def generate(dataset_dir: str | os.PathLike, seed: int = SEED, progress: bool = True) -> Path:
    """Draw the whole tree into ``dataset_dir`` (2,880 images, a few seconds) and return the split JSON path."""
    d = Path(dataset_dir)
    (d / MARKER_FILE).unlink(missing_ok=True)
    split = split_json(seed)
    jobs = [(label, s, i) for label in range(len(world.CLASSES)) for s, n in COUNTS.items() for i in range(n)]
    for label, s, i in tqdm(jobs, desc=f"drawing the Toy dataset into {d}", disable=not progress, unit="img"):
        cls = world.CLASSES[label]
        path = d / IMAGE_DIR / cls.folder / f"{s}_{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        img = world.fade(world.render(cls, image_rng(seed, label, s, i))[0], SATURATION)
        with atomic_open(path, "wb") as f:
            img.save(f, format="PNG")
    atomic_write_json(d / SPLIT_FILE, split, indent=4, end="")
    atomic_write_json(d / MARKER_FILE, marker(seed), indent=None, end="")
    return d / SPLIT_FILE


def ensure(dataset_dir: str | os.PathLike, seed: int = SEED, progress: bool = True) -> Path:
    """The split JSON of an up-to-date tree in ``dataset_dir``, drawing the tree first if needed."""
    d = Path(dataset_dir)
    if not is_current(d, seed):
        generate(d, seed, progress)
    return d / SPLIT_FILE
