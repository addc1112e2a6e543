"""Read run records (docs/architecture.md §4) and apply post-hoc calibrators to them, with no model.

Shared by ``tools/calibrate.py`` and ``calibration/plots.py`` (``tools/plot.py``, the README's diagrams). A run
lacking what a method needs raises :class:`RunRecordError` naming the run, the missing key and how to redo it.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from calibration.metrics import check_labels, check_logits
from calibration.posthoc import DAC, SaLS, TemperatureScaling, check_features
from common.errors import UserError
from common.suggest import unknown_name_message

__all__ = ["RunRecord", "RunRecordError", "POSTHOC_METHODS", "load_run", "resolve_base_run", "apply_posthoc",
           "posthoc_filename", "PREDICTION_ARRAYS", "METHOD_ARRAYS"]

# "none" is accepted by the plotting tool (raw logits); calibrate.py offers the others.
POSTHOC_METHODS = ("ts", "dac", "ts+dac", "sals")


class RunRecordError(UserError):
    """A run record is missing, unreadable, or lacks what a post-hoc method needs."""


# The arrays of predictions.npz that post-hoc calibration reads (docs/architecture.md §4.1): kind and shape.
# Letters are sizes shared across arrays: N test images, M val images, C classes, E / F embedding widths.
PREDICTION_ARRAYS = {
    "logits": ("logits", "NC"), "labels": ("labels", "N"), "zs_logits": ("logits", "NC"),
    "val_logits": ("logits", "MC"), "val_labels": ("labels", "M"), "val_zs_logits": ("logits", "MC"),
    "text_features": ("features", "CE"), "zs_text_features": ("features", "CF"),
}
# What each method reads, of the run itself and of its base run.
METHOD_ARRAYS = {
    "none": ((), ()), "sals": (("zs_logits",), ()),
    "ts": ((), ("val_logits", "val_labels")),
    "dac": (("text_features", "zs_text_features"), ("text_features", "zs_text_features")),
    "ts+dac": (("text_features", "zs_text_features"), ("val_logits", "val_labels", "text_features",
                                                       "zs_text_features")),
}


_LETTERS = {"N": "test images", "M": "val images", "C": "classes", "E": "embedding width",
            "F": "embedding width"}


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

    def validate(self, keys) -> dict[str, int]:
        """Check the arrays ``keys`` (plus ``logits`` and ``labels``, which fix N and C) against
        :data:`PREDICTION_ARRAYS`: kind (finite real logits/features, no zero feature row; integer labels in
        [0, C)) and sizes shared across arrays. Returns the sizes; the first problem raises RunRecordError
        naming the file, the array and the fix. Missing keys are :meth:`require`'s business and skipped."""
        pred_path = self.path / "predictions.npz"
        sizes: dict[str, int] = {}
        order = ["logits", "labels"] + [k for k in PREDICTION_ARRAYS if k in keys and k not in ("logits", "labels")]
        for key in order:
            if key not in self.predictions:
                continue
            arr = self.predictions[key]
            kind, dims = PREDICTION_ARRAYS[key]
            try:
                if kind == "labels":
                    if dims not in sizes:  # its logits are missing: require() reports that
                        continue
                    logits_key = "val_logits" if key.startswith("val_") else "logits"
                    check_labels(arr, sizes[dims], sizes["C"], key, logits_key)
                    continue
                checked = (check_features if kind == "features" else check_logits)(arr, key)
            except ValueError as e:
                raise RunRecordError(f"{pred_path}: {e}. {self._redo(key)}") from None
            for letter, size in zip(dims, checked.shape):
                if sizes.setdefault(letter, size) != size:
                    first = next(k for k in order if letter in PREDICTION_ARRAYS[k][1] and k in self.predictions)
                    raise RunRecordError(f"{pred_path}: {key} has shape {checked.shape}, which does not match "
                                         f"{first} {self.predictions[first].shape} ({_LETTERS[letter]}). "
                                         f"{self._redo(key)}")
        return sizes

    def _redo(self, key: str) -> str:
        return (f"The file is damaged or was not written by train.py: redo the run {self.path}"
                + (" (or pass --base-run DIR of a base run with a good val split)" if key.startswith("val_")
                   else "") + ".")

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
    if path.exists() and not path.is_dir():
        raise RunRecordError(f"{path} is a file, not a run folder: give the folder that holds results.json and "
                             "predictions.npz")
    for p in (res_path, pred_path):
        if not p.is_file():
            raise RunRecordError(f"{p} not found: {path} is not a finished run (a finished train.py run writes "
                                 "results.json and predictions.npz); check the path or redo the run")
    try:
        results = json.loads(res_path.read_text())
    except (OSError, ValueError) as e:
        raise RunRecordError(f"{res_path} is not valid JSON ({e}); redo the run") from None
    if not isinstance(results, dict):
        raise RunRecordError(f"{res_path} holds a JSON {type(results).__name__}, not the run record's object "
                             "({\"metrics\": ..., \"run\": ...}); redo the run")
    info = results.get("run")
    if info is not None and not (isinstance(info, dict) and isinstance(info.get("model_dir", ""), (str, type(None)))):
        raise RunRecordError(f"{res_path}: \"run\" must be an object whose \"model_dir\" is a path string, got "
                             f"{json.dumps(info)[:80]}; redo the run or fix the file")
    try:
        with open(pred_path, "rb") as f:  # our handle: closed even when numpy fails half-way
            if f.read(4) != b"PK\x03\x04":
                raise ValueError("empty file" if pred_path.stat().st_size == 0 else "not an .npz (zip) archive")
            f.seek(0)
            npz = np.load(f, allow_pickle=False)
            if not isinstance(npz, np.lib.npyio.NpzFile):
                raise ValueError("a single .npy array, not an .npz archive")
            predictions = {k: npz[k] for k in npz.files}
    except Exception as e:  # noqa: BLE001 - any failure to read (truncated, empty, pickled, not a zip)
        raise RunRecordError(f"{pred_path} cannot be read ({type(e).__name__}: {e or 'empty or truncated'}); "
                             "redo the run") from None
    run = RunRecord(path, results, predictions)
    run.require(("logits", "labels"), "every test run writes them", f"Redo the run {path}.")
    run.validate(("logits", "labels"))
    return run


def _same_dir(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def resolve_base_run(run: RunRecord, base_run: str | os.PathLike | None = None) -> RunRecord:
    """The base (training) run of ``run``: ``base_run`` if given, else ``results.json`` ``run.model_dir`` (an
    eval-only novel run), else the run itself (a base run is its own base). A relative ``model_dir`` (what run
    records store: relative to the run folder) is tried against the run folder, the working directory, then the
    run folder's parents."""
    if base_run is not None:
        return load_run(base_run)
    model_dir = run.model_dir
    if not model_dir:
        return run
    candidates = [Path(model_dir)]
    if not Path(model_dir).is_absolute():
        candidates = [run.path / model_dir, Path(model_dir)] + [p / model_dir for p in run.path.resolve().parents]
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
        raise RunRecordError(unknown_name_message("post-hoc method", method, POSTHOC_METHODS, sort=False))
    if int(dac_k) < 1:
        raise RunRecordError(f"--dac-k must be >= 1 (the number of nearest base classes DAC averages over), got "
                             f"{dac_k}")
    base = base if base is not None else run
    # Everything is checked before anything is computed: a bad array is one message, never a wrong number.
    if key == "sals":
        run.require(("zs_logits",), "SaLS maps the test logits into the zero-shot logits' range",
                    f"Re-evaluate this run ({run.path}) with the current train.py, which records zs_logits.")
    if key in ("ts", "ts+dac"):
        base.require(("val_logits", "val_labels"), "temperature scaling is fitted on the base run's few-shot "
                     "val split", f"Redo the base training run {base.path} with the current train.py (training "
                     "runs record val_logits), or pass --base-run DIR of a base run that has them.")
    if key in ("dac", "ts+dac"):
        feats = ("text_features", "zs_text_features")
        redo = ("Zero-shot runs have no tuned text features; otherwise re-evaluate {p} with the current train.py, "
                "which records them.")
        base.require(feats, "DAC compares tuned and frozen text features of the base classes",
                     redo.format(p=base.path))
        run.require(feats, "DAC compares tuned and frozen text features of the test classes",
                    redo.format(p=run.path))
    own, of_base = METHOD_ARRAYS[key]
    sizes = run.validate(own)
    base_sizes = base.validate(of_base) if base is not run else run.validate(own + of_base)
    if key in ("dac", "ts+dac"):
        for letter, feat in (("E", "text_features"), ("F", "zs_text_features")):
            if sizes[letter] != base_sizes[letter]:
                raise RunRecordError(f"{run.path / 'predictions.npz'}: {feat} are {sizes[letter]} wide but the base "
                                     f"run's ({base.path}) are {base_sizes[letter]} wide: the two runs used "
                                     "different backbones. Pass --base-run DIR, the base run of this backbone.")
    logits = run.logits.astype(np.float64)
    info: dict[str, Any] = {"temperature": None}
    if key == "none":
        return logits, info
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is reported below, as one message
        if key == "sals":
            logits = SaLS().transform(logits, run.predictions["zs_logits"])
        if key in ("ts", "ts+dac"):
            try:
                ts = TemperatureScaling().fit(base.predictions["val_logits"], base.predictions["val_labels"])
            except ValueError as e:
                raise RunRecordError(f"{base.path / 'predictions.npz'}: val_logits: {e}; redo the base run") from None
            logits = ts.transform(logits)
            info["temperature"] = ts.temperature_
        if key in ("dac", "ts+dac"):
            dac = DAC(k=dac_k).fit(base.predictions["text_features"], base.predictions["zs_text_features"])
            logits = dac.transform(logits, run.predictions["text_features"], run.predictions["zs_text_features"])
    if not np.all(np.isfinite(logits)):
        fitted = "" if info["temperature"] is None else f", T = {info['temperature']:.3g}"
        raise RunRecordError(f"{run.path / 'predictions.npz'}: the {key} logits overflow (largest |logit| "
                             f"{np.abs(run.logits).max():.3g}{fitted}): the saved logits are out of any sensible "
                             "range; redo the run")
    return logits, info


def posthoc_filename(method: str) -> str:
    """``results_<method>.json`` with ``+`` -> ``_`` (``ts+dac`` -> ``results_ts_dac.json``)."""
    return f"results_{method.lower().replace('+', '_')}.json"

