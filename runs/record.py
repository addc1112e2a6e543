"""The run record (docs/architecture.md §4): ``results.json`` and ``predictions.npz`` written atomically.

``results.json`` is written last, so its presence means the run is complete (sweeps skip such runs when its
``run.identity`` is current, runs/identity.py); a rerun moves the previous record aside first, once it is
validated (runs/run_folder.py). :func:`write_run_record` and :func:`run_info` are shared by every trainer:
``PromptTrainer`` and plain Dassl ``TrainerX`` subclasses (ported CoOp-family files), whose test logits the
engine collects. The engine calls :func:`write_run_record` through the writer ``runs.register_with_engine``
registers (``dassl.engine.set_record_writer``).
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from common.atomic import atomic_savez, atomic_write_text

RESULTS = "results.json"
PREDICTIONS = "predictions.npz"
REPO_ROOT = Path(__file__).resolve().parents[1]


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                             timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                           capture_output=True, text=True, timeout=5).stdout.strip()
    return out.stdout.strip() + ("-dirty" if dirty else "")


def versions() -> dict[str, str]:
    import torch
    import torchvision

    info = {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
            "numpy": np.__version__}
    try:
        import open_clip

        info["open_clip"] = open_clip.__version__
    except Exception:  # pragma: no cover - version lookup is best effort
        pass
    return info


def write_predictions(output_dir: str | os.PathLike, arrays: dict[str, Any]) -> Path:
    path = Path(output_dir) / PREDICTIONS
    clean = {k: np.asarray(v) for k, v in arrays.items() if v is not None}
    atomic_savez(path, **clean)
    return path


def write_results(output_dir: str | os.PathLike, record: dict[str, Any]) -> Path:
    path = Path(output_dir) / RESULTS
    atomic_write_text(path, json.dumps(record, indent=2, sort_keys=False, default=_jsonable) + "\n")
    return path


def read_results(run_dir: str | os.PathLike) -> dict[str, Any]:
    with open(Path(run_dir) / RESULTS) as f:
        return json.load(f)


def _jsonable(obj):
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, tuple):
        return list(obj)
    return str(obj)


def relative_to_run(path: str | os.PathLike | None, run_dir: str | os.PathLike) -> str | None:
    """``path`` relative to the run folder ``run_dir`` (POSIX separators), so a record names no machine and still
    leads to its base run after the output tree is moved or copied; readers join it to the record's folder
    (calibration.runs.resolve_base_run). Absolute only when no relative path exists (another drive)."""
    if not path:
        return None
    try:
        return Path(os.path.relpath(os.path.abspath(path), os.path.abspath(run_dir))).as_posix()
    except ValueError:
        return os.path.abspath(path)


def method_node(trainer) -> dict[str, Any]:
    """The trainer's own ``TRAINER.<node>`` keys: its ``cfg_node``, else the upper-case trainer name (the CoOp-family
    convention); {} when there is no such node."""
    cfg = trainer.cfg
    node = cfg.TRAINER.get(getattr(trainer, "cfg_node", None) or str(cfg.TRAINER.NAME).upper())
    return dict(node) if node is not None and hasattr(node, "items") else {}


def method_precision(trainer) -> str | None:
    """``TRAINER.<node>.PREC`` of a trainer that does not say its precision; None when there is no such key."""
    return method_node(trainer).get("PREC")


def _ported_precision(trainer) -> str | None:
    """What a trainer that does not declare its precision ran in (its weights' dtype; trainers/plugins.py)."""
    from trainers.plugins import ported_precision

    return ported_precision(trainer) or method_precision(trainer)


def _trainer_file(name: str) -> dict | None:
    from trainers.plugins import trainer_file_record

    return trainer_file_record(name)


def run_info(trainer, eval_seconds: float, num_test: int | None = None) -> dict[str, Any]:
    """``results.json``'s ``run`` block of ``trainer`` (a PromptTrainer or any Dassl trainer: what it lacks is None);
    ``num_test``: the test images scored (docs/architecture.md §4.1)."""
    cfg = trainer.cfg
    calib = (cfg.TRAINER.CALIB.NAME if "CALIB" in cfg.TRAINER else "") or None
    fingerprint = getattr(trainer, "backbone_fingerprint", None)
    dataset = trainer.dm.dataset
    skipped = trainer.dm.skipped_by_split() if hasattr(trainer.dm, "skipped_by_split") else {}
    return {
        "trainer": cfg.TRAINER.NAME,
        "trainer_file": _trainer_file(cfg.TRAINER.NAME),  # a drop-in file: its path and sha256 (trainers/plugins.py)
        "dataset": cfg.DATASET.NAME,
        "subsample": cfg.DATASET.get("SUBSAMPLE_CLASSES", "all"),
        "shots": getattr(dataset, "shots_used", cfg.DATASET.NUM_SHOTS),
        "shots_requested": cfg.DATASET.NUM_SHOTS,
        "seed": cfg.SEED,
        "calib": calib,
        "calib_params": dict(cfg.TRAINER.CALIB) if calib else None,
        "backbone": cfg.MODEL.BACKBONE.NAME,
        "backbone_weights": fingerprint() if callable(fingerprint) else None,
        "precision": getattr(trainer, "precision", None) or _ported_precision(trainer),
        "method_cfg": method_node(trainer),  # TRAINER.<method> (parse_results --reference pairs like with like)
        "config": cfg.get("CONFIG_NAME", "") or None,
        "max_epoch": cfg.OPTIM.MAX_EPOCH,
        "model_dir": relative_to_run(getattr(trainer, "_loaded_from", None), trainer.output_dir),
        "load_epoch": getattr(trainer, "_loaded_epoch", None),
        "num_classes": len(dataset.classnames),
        "num_test": len(dataset.test) - len(skipped.get("test", [])) if num_test is None else num_test,
        "num_skipped": len(skipped.get("test", [])),
        "skipped": skipped,
        "split_sha256": getattr(dataset, "split_sha256", None),
        "git_commit": git_commit(),
        "identity": getattr(trainer, "identity", None),
        "versions": versions(),
        "timings": {"train_seconds": getattr(trainer, "_train_seconds", None), "eval_seconds": eval_seconds},
    }


def write_run_record(trainer, results: dict[str, Any], arrays: dict[str, Any], eval_seconds: float) -> None:
    """``predictions.npz`` (``arrays`` plus the class names) then ``results.json`` (metrics + ``trainer.run_info``)."""
    arrays = dict(arrays)
    arrays.setdefault("classnames", np.array(trainer.dm.dataset.classnames))
    write_predictions(trainer.output_dir, arrays)
    metrics = {k: v for k, v in results.items() if isinstance(v, (int, float))}
    num_test = len(arrays["labels"])
    info = (trainer.run_info(eval_seconds, num_test=num_test) if hasattr(trainer, "run_info")
            else run_info(trainer, eval_seconds, num_test=num_test))
    write_results(trainer.output_dir, {"metrics": metrics, "split": "test", "run": info})
    print(f"Run record written to {trainer.output_dir}")
