"""Small shared builders for the tests: generated image-folder datasets and train.py invocations."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
COOP_CFG = str(REPO / "configs/trainers/CoOp/vit_b16_ep50.yaml")
IMAGEFOLDER_CFG = str(REPO / "configs/datasets/imagefolder.yaml")

SPLITS_ENV = "CALIB_SPLITS_DIR"
GET_SPLITS = ("python tools/prepare_data.py --all --splits-only --yes --root DIR, then set CALIB_SPLITS_DIR=DIR "
              "(README, Install and test)")


def splits_dir() -> Path:
    """Where tests find the real CoOp split files: $CALIB_SPLITS_DIR, else a team copy at ../shared/data/splits
    (absent in a clone of this repository)."""
    return Path(os.environ.get(SPLITS_ENV) or REPO.parent / "shared" / "data" / "splits")


def find_split_file(name: str) -> Path | None:
    """``name`` (``split_zhou_Caltech101.json``, ``cat_to_name.json``) in :func:`splits_dir`, directly or in a
    dataset folder of it (a data root that ``tools/prepare_data.py --splits-only`` filled)."""
    root = splits_dir()
    return next((p for p in [root / name, *sorted(root.glob(f"*/{name}"))] if p.is_file()), None)


def real_split_file(name: str) -> Path:
    """:func:`find_split_file`, else skip the test with the command that gets the file."""
    path = find_split_file(name)
    if path is None:
        pytest.skip(f"needs the real CoOp file {name}, not in {splits_dir()}: get it with {GET_SPLITS}")
    return path


COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 30),
           "purple": (140, 30, 160), "cyan": (30, 210, 210), "orange": (240, 140, 20), "gray": (128, 128, 128)}


def make_image_folder(root: Path, n_classes: int = 6, per_class: int = 10, size: int = 32, seed: int = 0) -> Path:
    """``root/<class_name>/*.png``: noisy flat-colour images, one colour per class."""
    rng = np.random.default_rng(seed)
    names = list(COLOURS)[:n_classes]
    for name in names:
        folder = root / f"{name}_thing"
        folder.mkdir(parents=True, exist_ok=True)
        base = np.array(COLOURS[name], dtype=np.float32)
        for i in range(per_class):
            arr = np.clip(base + rng.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(folder / f"img_{i:03d}.png")
    return root


def coop_argv(root, out, *extra, trainer="CoOp", backbone="tiny-vit", opts=()):
    return ["--root", str(root), "--seed", "1", "--trainer", trainer, "--backbone", backbone,
            "--dataset-config-file", IMAGEFOLDER_CFG, "--config-file", COOP_CFG, "--output-dir", str(out),
            *extra, "DATALOADER.NUM_WORKERS", "0", "TRAIN.PRINT_FREQ", "1", *opts]


def run_train(argv) -> int:
    """``train.py``'s exit code for ``argv``, in this process; the console comes back afterwards (a run tees
    stdout into its log.txt)."""
    import sys

    import train

    saved = sys.stdout
    try:
        return train.cli(argv)
    finally:
        sys.stdout = saved
