"""DATASET_REGISTRY and build_dataset.

The engine imports no dataset module: the application does (``train.py`` imports the project's ``datasets``
package, whose modules register their classes here) and reports the modules that failed to import in
:data:`IMPORT_FAILURES`, so an unknown dataset name can name them.
"""
from __future__ import annotations

from common.errors import UnknownNameError, UserError
from common.suggest import check_availability

from ...utils.registry import Registry

DATASET_REGISTRY = Registry("DATASET")
#: dataset modules that failed to import (module -> exception), filled by the application's dataset package; an
#: unknown dataset name then names them, since one of them may define it
IMPORT_FAILURES: dict[str, str] = {}


def build_dataset(cfg):
    """Instantiate ``DATASET_REGISTRY[cfg.DATASET.NAME](cfg)`` (the dataset modules must be imported)."""
    name = cfg.DATASET.NAME
    if not name:
        raise UserError("DATASET.NAME is empty: pass --dataset-config-file configs/datasets/<name>.yaml")
    try:
        check_availability(name, DATASET_REGISTRY.registered_names(), what="dataset (DATASET.NAME)")
    except UnknownNameError as e:
        if IMPORT_FAILURES:
            details = "; ".join(f"{m}: {err}" for m, err in IMPORT_FAILURES.items())
            raise UnknownNameError(f"{e} Some dataset modules failed to import: {details}") from None
        raise
    if cfg.VERBOSE:
        print(f"Loading dataset: {name}")
    return DATASET_REGISTRY.get(name)(cfg)
