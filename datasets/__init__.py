"""Dataset classes (one module per dataset), registered in dassl's DATASET_REGISTRY on import.

The engine never imports this package: the application does (``import datasets`` in train.py; the test helpers
in ``datasets.testing`` import it by being part of it). Every module of the package is imported (the listed ones
first), so a new dataset file registers itself. Each is imported on its own: one that fails to import (a warning,
kept in ``IMPORT_ERRORS`` and in the engine's ``IMPORT_FAILURES``, which an unknown dataset name then lists) does
not hide the others. The shared logic lives in ``common`` (splits, base/new classes, templates, config keys),
``fewshot`` (the cached few-shot draw) and ``base`` (the pipeline).
"""
from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import warnings

from dassl.data.datasets import build as _engine

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

_OTHERS = sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name not in DATASET_MODULES)
for _name in (*DATASET_MODULES, *_OTHERS):
    if importlib.util.find_spec(f"{__name__}.{_name}") is None:
        continue
    try:
        importlib.import_module(f"{__name__}.{_name}")
    except Exception as _exc:  # noqa: BLE001 - reported, the other datasets stay usable
        IMPORT_ERRORS[_name] = f"{type(_exc).__name__}: {_exc}"
        _engine.IMPORT_FAILURES[f"{__name__}.{_name}"] = IMPORT_ERRORS[_name]
        warnings.warn(f"datasets.{_name} could not be imported ({IMPORT_ERRORS[_name]}); the other datasets work")

__all__ = [
    "DEFAULT_TEMPLATE", "TEMPLATES", "Item", "Split", "add_dataset_config", "get_template", "read_split",
    "save_split", "subsample_classes", "IMPORT_ERRORS", "DATASET_MODULES",
]
