"""Toy: 48 classes of the procedurally drawn toy world (``toy/``), generated on first use. No download.

``DATASET.ROOT/toy/`` holds ``images/<class>/{train,val,test}_NNN.png`` (30/10/20 per class) and
``split_toy.json`` in the CoOp split format, so few-shot sampling, base/new (24/24 classes) and every tool work as
on the real datasets. Pair it with ``--backbone toy-clip``, the CLIP pre-trained on the same world.
"""
from __future__ import annotations

from pathlib import Path

from common.errors import UserError
from dassl.data.datasets import DATASET_REGISTRY

from toy import data as toy_data  # the top-level toy package (world, drawing, split)
from toy import world as toy_world

from .base import BenchmarkDataset
from .common import Split, dir_writable, read_split

_N = len(toy_world.CLASSES)


@DATASET_REGISTRY.register()
class Toy(BenchmarkDataset):
    dataset_dir = "toy"
    image_dirs = (toy_data.IMAGE_DIR,)
    split_file = toy_data.SPLIT_FILE
    template = "a photo of a {}."
    expected = (_N * toy_data.COUNTS["train"], _N * toy_data.COUNTS["val"], _N * toy_data.COUNTS["test"], _N)
    layout = "toy/images/<class>/*.png + toy/split_toy.json, drawn automatically on first use"

    @classmethod
    def fix(cls, dataset_path: Path) -> str:
        return f"delete {dataset_path} and run again: the Toy dataset is redrawn automatically"

    @classmethod
    def locate(cls, root: Path) -> Path:
        """The dataset folder, drawn (or redrawn after a change of the toy world) when not up to date."""
        path = root / cls.dataset_dir
        if not toy_data.is_current(path):
            if not dir_writable(path):
                raise UserError(f"Toy: cannot draw the dataset into {path} (not writable). Point DATASET.ROOT "
                                f"(--root) at a writable folder.")
            toy_data.generate(path)
        return path

    @classmethod
    def read_source(cls, dataset_path: Path, cache_dir: Path | None = None) -> Split:
        return read_split(dataset_path / cls.split_file)
