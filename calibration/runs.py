"""Read run records (docs/architecture.md §4) and apply post-hoc calibrators to them, with no model.

Shared by ``tools/calibrate.py`` and ``tools/plot.py``. A run lacking what a method needs raises
:class:`RunRecordError` naming the run, the missing key and how to redo the run.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from calibration.errors import UserError, unknown_name_message
from calibration.posthoc import DAC, SaLS, TemperatureScaling

__all__ = ["RunRecord", "RunRecordError", "POSTHOC_METHODS", "load_run", "resolve_base_run", "apply_posthoc",
           "write_json_atomic", "posthoc_filename"]

# "none" is accepted by the plotting tool (raw logits); calibrate.py offers the others.
POSTHOC_METHODS = ("ts", "dac", "ts+dac", "sals")


class RunRecordError(UserError):
    """A run record is missing, unreadable, or lacks what a post-hoc method needs."""


@dataclass
class RunRecord:
    path: Path
    results: dict
    predictions: dict[str, np.ndarray] = field(repr=False)

    def has(self, *keys: str) -> bool:
        return all(k in self.predictions for k in keys)

    def require(self, keys: tuple[str, ...], why: str, redo: str) -> None:
        missing = [k for k in keys if k not in self.predictions]
        if missing:
            raise RunRecordError(f"{self.path / 'predictions.npz'} has no {', '.join(repr(k) for k in missing)} "
                                 f"({why}). {redo}")

    @property
    def logits(self) -> np.ndarray:
        return self.predictions["logits"]

    @property
    def labels(self) -> np.ndarray:
        return self.predictions["labels"]

    @property
    def model_dir(self) -> str:
        return str((self.results.get("run") or {}).get("model_dir") or "")


def load_run(run_dir: str | os.PathLike) -> RunRecord:
    """Load ``results.json`` and ``predictions.npz`` (every array, eagerly) of one run folder."""
    path = Path(run_dir)
    res_path, pred_path = path / "results.json", path / "predictions.npz"
    for p in (res_path, pred_path):
        if not p.is_file():
            raise RunRecordError(f"{p} not found: {path} is not a finished run (a finished train.py run writes "
                                 "results.json and predictions.npz); check the path or redo the run")
    try:
        results = json.loads(res_path.read_text())
    except (OSError, ValueError) as e:
        raise RunRecordError(f"{res_path} is not valid JSON ({e}); redo the run") from None
    try:
        with np.load(pred_path, allow_pickle=False) as npz:
            predictions = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as e:
        raise RunRecordError(f"{pred_path} cannot be read ({e}); redo the run") from None
    run = RunRecord(path, results, predictions)
    run.require(("logits", "labels"), "every test run writes them", f"Redo the run {path}.")
    z, y = run.logits, run.labels
    if z.ndim != 2 or y.shape != (z.shape[0],):
        raise RunRecordError(f"{pred_path}: logits {z.shape} and labels {y.shape} do not match; redo the run")
    return run


def _same_dir(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def resolve_base_run(run: RunRecord, base_run: str | os.PathLike | None = None) -> RunRecord:
    """The base (training) run of ``run``: ``base_run`` if given, else ``results.json`` ``run.model_dir`` (an
    eval-only novel run), else the run itself (a base run is its own base). A relative ``model_dir`` is tried
    against the working directory, then against the run folder and its parents."""
    if base_run is not None:
        return load_run(base_run)
    model_dir = run.model_dir
    if not model_dir:
        return run
    candidates = [Path(model_dir)]
    if not Path(model_dir).is_absolute():
        candidates += [parent / model_dir for parent in [run.path, *run.path.resolve().parents]]
    for cand in candidates:
        if (cand / "results.json").is_file():
            return run if _same_dir(cand, run.path) else load_run(cand)
    raise RunRecordError(f"{run.path / 'results.json'}: run.model_dir = {model_dir!r} is not a run folder with "
                         "results.json (the base run this run loaded its prompts from). Pass --base-run DIR, the "
                         "base run's folder.")


def apply_posthoc(method: str, run: RunRecord, base: RunRecord | None = None,
                  dac_k: int = 5) -> tuple[np.ndarray, dict[str, Any]]:
    """Calibrated test logits of ``run`` and what was fitted (``{"temperature": T or None}``).

    ``ts`` fits T on the base run's ``val_logits``/``val_labels``; ``dac`` uses the base run's and this run's
    tuned and zero-shot text features; ``ts+dac`` applies DAC to the TS-scaled logits; ``sals`` needs this run's
    ``zs_logits``; ``none`` returns the raw logits. ``base`` defaults to ``run`` itself.
    """
    key = method.lower()
    if key not in POSTHOC_METHODS and key != "none":
        raise RunRecordError(unknown_name_message("post-hoc method", method, POSTHOC_METHODS))
    base = base if base is not None else run
    logits = run.logits.astype(np.float64)
    info: dict[str, Any] = {"temperature": None}
    if key == "none":
        return logits, info
    if key == "sals":
        run.require(("zs_logits",), "SaLS maps the test logits into the zero-shot logits' range",
                    f"Re-evaluate this run ({run.path}) with the current train.py, which records zs_logits.")
        zs = run.predictions["zs_logits"]
        if zs.shape != logits.shape:
            raise RunRecordError(f"{run.path / 'predictions.npz'}: zs_logits {zs.shape} and logits "
                                 f"{logits.shape} differ; redo the run")
        return SaLS().transform(logits, zs), info
    if key in ("ts", "ts+dac"):
        base.require(("val_logits", "val_labels"), "temperature scaling is fitted on the base run's few-shot "
                     "val split", f"Redo the base training run {base.path} with the current train.py (training "
                     "runs record val_logits), or pass --base-run DIR of a base run that has them.")
        val_z, val_y = base.predictions["val_logits"], base.predictions["val_labels"]
        if val_z.ndim != 2 or val_z.shape[0] == 0:
            raise RunRecordError(f"{base.path / 'predictions.npz'}: val_logits is empty (shape {val_z.shape}); "
                                 "redo the base run with a non-empty val split")
        ts = TemperatureScaling().fit(val_z, val_y)
        logits = ts.transform(logits)
        info["temperature"] = ts.temperature_
    if key in ("dac", "ts+dac"):
        feats = ("text_features", "zs_text_features")
        redo = ("Zero-shot runs have no tuned text features; otherwise re-evaluate {p} with the current train.py, "
                "which records them.")
        base.require(feats, "DAC compares tuned and frozen text features of the base classes",
                     redo.format(p=base.path))
        run.require(feats, "DAC compares tuned and frozen text features of the test classes",
                    redo.format(p=run.path))
        dac = DAC(k=dac_k).fit(base.predictions["text_features"], base.predictions["zs_text_features"])
        try:
            logits = dac.transform(logits, run.predictions["text_features"], run.predictions["zs_text_features"])
        except ValueError as e:
            raise RunRecordError(f"DAC on {run.path} with base run {base.path}: {e}") from None
    return logits, info


def posthoc_filename(method: str) -> str:
    """``results_<method>.json`` with ``+`` -> ``_`` (``ts+dac`` -> ``results_ts_dac.json``)."""
    return f"results_{method.lower().replace('+', '_')}.json"


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON to a temp file in the same folder, then rename: a reader never sees half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
