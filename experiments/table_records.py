"""Run records as the results tables see them: one :class:`Record` per ``results.json`` (and per post-hoc
``results_<method>.json`` beside it), found and read by experiments/records.py."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from experiments.errors import ResultsError
from experiments.methods import ZERO_SHOT, trainer_name
from experiments.protocols import DATASETS, resolve_dataset
from experiments.records import posthoc_files, read_results, scan

B2N, ALL = "base2novel", "all-classes"


@dataclass(frozen=True)
class Record:
    path: Path                 # the results file
    run_dir: Path
    metrics: dict
    trainer: str
    dataset: str
    subsample: str
    seed: Any
    shots: Any
    backbone: str
    config: str
    max_epoch: Any
    calib: str                 # "none" or the objective's name
    calib_params: str          # canonical JSON of run.calib_params ("" when none)
    posthoc: str | None        # post-hoc method of a results_<m>.json, else None
    model_dir: str | None
    weights: str | None = None  # run.backbone_weights: a fingerprint of the frozen CLIP's weights
    options_id: str | None = None  # run.identity.options_id: the result-changing command-line options
    method_cfg: str = ""       # canonical JSON of run.method_cfg (the TRAINER.<method> keys; "" when not recorded)
    precision: str | None = None  # run.precision (the resolved PREC)
    sweep_options: str = ""    # canonical JSON of run.identity.sweep_options (settings the sweep applied itself)

    @property
    def zero_shot(self) -> bool:
        return self.trainer == ZERO_SHOT

    @property
    def kind(self) -> str:
        return B2N if self.subsample in ("base", "new") else ALL

    @property
    def variant(self) -> str:
        return self.calib + (f"+{self.posthoc}" if self.posthoc else "")


def _resolved(run_dir: Path, model_dir) -> str | None:
    """A record's ``model_dir`` as a path: records store it relative to their own run folder."""
    return str(run_dir / model_dir) if model_dir else None


def _record(path: Path, data: dict, run: dict, posthoc: str | None) -> Record:
    metrics = data.get("metrics")
    if not isinstance(metrics, dict) or "accuracy" not in metrics:
        raise ValueError("no metrics.accuracy")
    for key in ("trainer", "dataset", "subsample"):
        if not run.get(key):
            raise ValueError(f"no run.{key}")
    calib = str(run.get("calib") or "none").lower()
    ident = run.get("identity") or {}
    params = run.get("calib_params") if calib != "none" else None
    return Record(path=path, run_dir=path.parent, metrics=metrics, trainer=str(run["trainer"]),
                  dataset=str(run["dataset"]), subsample=str(run["subsample"]), seed=run.get("seed"),
                  shots=run.get("shots"), backbone=str(run.get("backbone") or "?"),
                  config=str(run.get("config") or "?"), max_epoch=run.get("max_epoch"), calib=calib,
                  calib_params=json.dumps(params, sort_keys=True) if params else "", posthoc=posthoc,
                  model_dir=_resolved(path.parent, run.get("model_dir")), weights=run.get("backbone_weights") or None,
                  options_id=ident.get("options_id") or None,
                  method_cfg=json.dumps(run["method_cfg"], sort_keys=True) if run.get("method_cfg") else "",
                  precision=run.get("precision") or None,
                  sweep_options=json.dumps(ident.get("sweep_options"), sort_keys=True)
                  if ident.get("sweep_options") else "")


def load_records(root: str | Path) -> tuple[list[Record], list[str]]:
    """Every ``results.json`` under ``root`` (and the post-hoc ``results_*.json`` beside them), with a note for
    each file that could not be used."""
    root = Path(root)
    if not root.exists():
        raise ResultsError(f"{root} does not exist; pass the sweep's OUTPUT folder (default: output)")
    records, notes = [], []
    for path in scan(root):
        try:
            data = read_results(path)
            run = data.get("run") or {}
            records.append(_record(path, data, run, None))
        except (OSError, ValueError, AttributeError, TypeError) as e:
            notes.append(f"{path}: not used ({e}); rerun that run")
            continue
        for extra in posthoc_files(path):
            try:
                post = read_results(extra)
                method = str(post.get("method") or extra.stem[len("results_"):]).lower()
                records.append(_record(extra, post, run, method))
            except (OSError, ValueError, AttributeError, TypeError) as e:
                notes.append(f"{extra}: not used ({e}); rerun tools/calibrate.py on that run")
    return records, notes


def filter_records(records: Sequence[Record], methods: Sequence[str] | None, datasets: Sequence[str] | None,
                   kind: str | None) -> list[Record]:
    def trainer_of(name: str) -> str:
        try:
            return trainer_name(name).lower()
        except Exception:
            return name.lower()

    def dataset_of(name: str) -> str:
        try:
            return DATASETS[resolve_dataset(name)].lower()
        except Exception:
            return name.lower()

    want_m = {trainer_of(m) for m in methods} if methods else None
    want_d = {dataset_of(d) for d in datasets} if datasets else None
    return [r for r in records
            if (want_m is None or r.trainer.lower() in want_m) and (want_d is None or r.dataset.lower() in want_d)
            and (kind is None or r.kind == kind)]

