"""The run record (DESIGN §4.5): ``results.json`` and ``predictions.npz`` written atomically.

``results.json`` is written last, so its presence means the run is complete (sweeps skip such runs when its
``run.identity`` is current, trainers/identity.py); a rerun moves the previous record aside first, once it is
validated (trainers/run_folder.py).
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from dassl.utils import atomic_savez, atomic_write_text

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
