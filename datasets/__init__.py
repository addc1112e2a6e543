"""Dataset classes (one module per dataset), registered in dassl's DATASET_REGISTRY on import.

Each module is imported on its own, so one that fails to import (reported as a warning and kept in
``IMPORT_ERRORS``) does not hide the others. The shared logic lives in ``common`` (splits, base/new classes,
templates, config keys), ``fewshot`` (the cached few-shot draw) and ``base`` (the pipeline).
"""
from __future__ import annotations

import importlib
import importlib.util
import warnings

from .common import (
    DEFAULT_TEMPLATE,
    TEMPLATES,
    Item,
    Split,
    add_dataset_config,
    get_template,
    read_split,
    save_split,
    subsample_classes,
)

DATASET_MODULES = (
    "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101", "fgvc_aircraft", "sun397", "dtd",
    "eurosat", "ucf101", "imagenet", "imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r", "imagefolder",
    "toy",
)
IMPORT_ERRORS: dict[str, str] = {}

for _name in DATASET_MODULES:
    if importlib.util.find_spec(f"{__name__}.{_name}") is None:
        continue
    try:
        importlib.import_module(f"{__name__}.{_name}")
    except Exception as _exc:  # noqa: BLE001 - reported, the other datasets stay usable
        IMPORT_ERRORS[_name] = f"{type(_exc).__name__}: {_exc}"
        warnings.warn(f"datasets.{_name} could not be imported ({IMPORT_ERRORS[_name]}); the other datasets work")

__all__ = [
    "DEFAULT_TEMPLATE", "TEMPLATES", "Item", "Split", "add_dataset_config", "get_template", "read_split",
    "save_split", "subsample_classes", "IMPORT_ERRORS", "DATASET_MODULES",
]
