"""The one reader of run records and the one scanner of run folders: every ``results.json`` the experiments library
looks at is found by :func:`scan` and read by :func:`read_results`.

A run folder holds its record (``results.json``: ``metrics``, ``run``; the name is the writer's,
``runs.record.RESULTS``) and, beside it, post-hoc records (``results_<method>.json``, tools/calibrate.py). A rerun
moves an old record into ``previous/<time>/`` (``runs.run_folder.PREVIOUS``); the scanner never looks there.
Both names are imported where they are used: importing them loads the trainers, which a table does not need
otherwise.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

def results_name() -> str:
    """``results.json``: the record's file name, as the writer (runs/record.py) names it."""
    from runs.record import RESULTS

    return RESULTS


def has_record(run_dir: str | Path) -> bool:
    """A finished run leaves ``results.json`` (written last, atomically)."""
    return (Path(run_dir) / results_name()).is_file()


def read_results(path: str | Path) -> dict[str, Any]:
    """The parsed record of a run folder or of a results file (``results.json``, ``results_<m>.json``). Raises
    OSError or ValueError (not JSON, not an object)."""
    path = Path(path)
    if path.is_dir():
        path = path / results_name()
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a JSON object")
    return data


def run_info(path: str | Path) -> dict[str, Any]:
    """The ``run`` part of a record (``{}`` when absent)."""
    run = read_results(path).get("run") or {}
    if not isinstance(run, dict):
        raise ValueError("run is not an object")
    return run


def recorded_identity(run_dir: str | Path) -> dict | None:
    """``run.identity`` of a run folder's record (None when it has none). Raises like :func:`read_results`."""
    return run_info(run_dir).get("identity")


def result_line(run_dir: str | Path) -> str:
    """``acc 97.98  ece 1.01`` from a run's record ('(results.json unreadable)' when it cannot be read)."""
    try:
        m = read_results(run_dir)["metrics"]
        return f"acc {m['accuracy']:.2f}  ece {m['ece']:.2f}"
    except (OSError, ValueError, KeyError, TypeError):
        return "(results.json unreadable)"


def scan(root: str | Path) -> list[Path]:
    """Every ``results.json`` under ``root`` (``root`` itself when it is a file), sorted, without the records moved
    aside into ``previous/``."""
    from runs.run_folder import PREVIOUS  # defined where records are moved aside (imports the trainers)

    root = Path(root)
    if root.is_file():
        return [root]
    return sorted(p for p in root.rglob(results_name()) if PREVIOUS not in p.relative_to(root).parts[:-1])


def posthoc_files(results: Path) -> list[Path]:
    """The post-hoc records beside a ``results.json`` (``results_<method>.json``)."""
    return sorted(results.parent.glob("results_*.json"))
