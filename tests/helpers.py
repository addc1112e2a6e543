"""Small shared builders for the tests: generated image-folder datasets and train.py invocations."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
COOP_CFG = str(REPO / "configs/trainers/CoOp/vit_b16_ep50.yaml")
IMAGEFOLDER_CFG = str(REPO / "configs/datasets/imagefolder.yaml")

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

