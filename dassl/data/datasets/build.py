"""DATASET_REGISTRY and build_dataset; the project's ``datasets/`` package is imported lazily."""
from __future__ import annotations

import importlib
import pkgutil
import sys
import warnings
from pathlib import Path

from ...utils.errors import UnknownNameError, UserError, check_availability
from ...utils.registry import Registry

DATASET_REGISTRY = Registry("DATASET")

_PROJECT_DATASETS = Path(__file__).resolve().parents[3] / "datasets"  # <repo>/datasets
_import_errors: dict[str, str] = {}  # module -> error, each module is tried once per process


def import_project_datasets() -> dict[str, str]:
    """Import every module of the repo's top-level ``datasets`` package so its classes register.

    A module that fails to import is reported (warning) and skipped, so one broken or missing
    dataset file does not stop runs on the others. Returns {module: error} of the failures.
    """
    if not _PROJECT_DATASETS.is_dir() or "datasets" in _import_errors:
        return _import_errors
    try:
        pkg = importlib.import_module("datasets")
    except Exception as e:  # noqa: BLE001 - reported, not fatal
        _import_errors["datasets"] = f"{type(e).__name__}: {e}"
        warnings.warn(f"Cannot import the project's datasets package: {_import_errors['datasets']}")
        return _import_errors
    paths = [Path(p).resolve() for p in getattr(pkg, "__path__", [])]
    if _PROJECT_DATASETS not in paths:  # e.g. HuggingFace `datasets` shadows ours (engine.md §6.20)
        _import_errors["datasets"] = f"'datasets' resolves to {paths or pkg}, not {_PROJECT_DATASETS}"
        warnings.warn(_import_errors["datasets"] + "; run from the repository root")
        return _import_errors
    for short, err in getattr(pkg, "IMPORT_ERRORS", {}).items():  # failures the package already reported
        _import_errors.setdefault(f"datasets.{short}", err)
    for info in pkgutil.iter_modules([str(_PROJECT_DATASETS)]):
        name = f"datasets.{info.name}"
        if name in sys.modules or name in _import_errors:
            continue
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001
            _import_errors[name] = f"{type(e).__name__}: {e}"
            warnings.warn(f"Skipping dataset module {name}: {_import_errors[name]}")
    return _import_errors


def build_dataset(cfg):
    """Instantiate ``DATASET_REGISTRY[cfg.DATASET.NAME](cfg)``."""
    errors = import_project_datasets()
    name = cfg.DATASET.NAME
    if not name:
        raise UserError("DATASET.NAME is empty: pass --dataset-config-file configs/datasets/<name>.yaml")
    try:
        check_availability(name, DATASET_REGISTRY.registered_names(), what="dataset (DATASET.NAME)")
    except UnknownNameError as e:
        if errors:
            details = "; ".join(f"{m}: {err}" for m, err in errors.items())
            raise UnknownNameError(f"{e} Some dataset modules failed to import: {details}") from None
        raise
    if cfg.VERBOSE:
        print(f"Loading dataset: {name}")
    return DATASET_REGISTRY.get(name)(cfg)
