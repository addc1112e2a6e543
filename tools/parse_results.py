#!/usr/bin/env python
"""The paper's tables from run records: every number comes from ``results.json`` files, never from paths.

    python tools/parse_results.py OUTPUT_DIR [--format plain|markdown|latex|csv] [--metrics mce ace nll brier]
                                             [--reference tcpt] [--method CoOp ...] [--dataset Caltech101 ...]
                                             [--kind base2novel|all-classes] [--summary] [--json]

Base-to-novel runs (``run.subsample`` base/new) give Table 1 (base) and Table 2 (novel): a block per method
(trainer + config + epochs), rows = calibration variant x metric, columns = the 11 datasets + Avg, and an HM
table. All-class runs (few-shot, cross-dataset, domain generalization) give one table per protocol, with a row
per source of the prompts (trained on the dataset itself, on another dataset, or zero-shot).

- Cells are the mean ± population std (ddof 0) over seeds; a cell with fewer seeds than its block says so
  (``61.20 ± 0.30 (2/3 seeds)``) and a missing cell is ``–``.
- Avg is the mean of the per-dataset means (a row missing datasets says ``(k/11 datasets)``); HM = 2BN/(B+N) of
  the seed means, per dataset and, for Avg, of the averaged base and novel accuracy (over datasets having both).
- Runs that differ in protocol are never averaged together: a table per (shots, backbone), a block per (method,
  config, epochs, result-changing command-line options: ``run.identity.options_id``, shown as ``opts <id>`` when
  two blocks differ only in it), and runs of one variant whose ``calib_params`` differ become separate rows.
- Post-hoc results next to a run (``results_<method>.json`` from tools/calibrate.py) are variants ``<calib>+<m>``.
- ``--reference tcpt`` adds the paper's numbers (tools/reference/tcpt_readme.json) and our difference under each
  row of a matching protocol (ViT-B/16, 16 shots); the paper's Avg is recomputed, its printed value shown beside.
  Like is paired with like: where the paper's rows of a method were made with other method settings than our runs
  record (``settings`` in the reference file: TCPT's hybrid "KgCoOp"), the difference is withheld and a note gives
  the options that reproduce the paper's settings; softer differences (precision) are noted under the table.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from calibration.metrics import aggregate, harmonic_mean  # noqa: E402
from tools.sweep import (BASE2NOVEL_DATASETS, DATASETS, DOMAIN_TARGETS, PAPER_METHODS, ZERO_SHOT,  # noqa: E402
                         resolve_dataset, trainer_name)

REFERENCE_DIR = Path(__file__).resolve().parent / "reference"
PREVIOUS = "previous"  # where a rerun moves a run's old record (runs/run_folder.py)
REFERENCES = {"tcpt": "tcpt_readme.json"}

BENCHMARK = tuple(DATASETS[d] for d in BASE2NOVEL_DATASETS)
DOMAIN = tuple(DATASETS[d] for d in DOMAIN_TARGETS)
SHORT = dict(zip(BENCHMARK + DOMAIN, ("INet", "Cal", "Pets", "Cars", "Flow", "Food", "Air", "SUN", "DTD", "Euro",
                                      "UCF", "INet-V2", "Sketch", "INet-A", "INet-R")))
# metric key -> (row label, decimals)
METRICS = {"accuracy": ("Acc.", 2), "ece": ("ECE", 2), "mce": ("MCE", 2), "mce_weighted": ("MCE (weighted)", 2),
           "adaptive_ece": ("ACE", 2), "classwise_ece": ("cw-ECE", 2), "macro_f1": ("Macro-F1", 2),
           "nll": ("NLL", 3), "brier": ("Brier", 3)}
METRIC_ALIASES = {"acc": "accuracy", "ace": "adaptive_ece", "f1": "macro_f1", "cwece": "classwise_ece",
                  "cw_ece": "classwise_ece", "mcew": "mce_weighted"}
CALIB_LABELS = {"none": "plain", "tcpt": "TCPT", "mbls": "MBLS", "zs_norm": "ZS-Norm", "penalty": "Penalty"}
POSTHOC_LABELS = {"ts": "TS", "dac": "DAC", "ts+dac": "TS+DAC", "sals": "SaLS"}
VARIANT_ORDER = ("none", "mbls", "none+ts", "none+dac", "none+ts+dac", "zs_norm", "penalty", "none+sals", "tcpt")
METHOD_ORDER = [ZERO_SHOT] + [t for t in PAPER_METHODS.values() if t != ZERO_SHOT]
DASH = "–"
B2N, ALL = "base2novel", "all-classes"


class ResultsError(Exception):
    """A user mistake (missing folder, unknown reference or metric): one message, exit 2."""


# --------------------------------------------------------------------------------------------------- records
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

    @property
    def zero_shot(self) -> bool:
        return self.trainer == ZERO_SHOT

    @property
    def kind(self) -> str:
        return B2N if self.subsample in ("base", "new") else ALL

    @property
    def variant(self) -> str:
        return self.calib + (f"+{self.posthoc}" if self.posthoc else "")


def _record(path: Path, data: dict, run: dict, posthoc: str | None) -> Record:
    metrics = data.get("metrics")
    if not isinstance(metrics, dict) or "accuracy" not in metrics:
        raise ValueError("no metrics.accuracy")
    for key in ("trainer", "dataset", "subsample"):
        if not run.get(key):
            raise ValueError(f"no run.{key}")
    calib = str(run.get("calib") or "none").lower()
    params = run.get("calib_params") if calib != "none" else None
    return Record(path=path, run_dir=path.parent, metrics=metrics, trainer=str(run["trainer"]),
                  dataset=str(run["dataset"]), subsample=str(run["subsample"]), seed=run.get("seed"),
                  shots=run.get("shots"), backbone=str(run.get("backbone") or "?"),
                  config=str(run.get("config") or "?"), max_epoch=run.get("max_epoch"), calib=calib,
                  calib_params=json.dumps(params, sort_keys=True) if params else "", posthoc=posthoc,
                  model_dir=run.get("model_dir") or None, weights=run.get("backbone_weights") or None,
                  options_id=(run.get("identity") or {}).get("options_id") or None,
                  method_cfg=json.dumps(run["method_cfg"], sort_keys=True) if run.get("method_cfg") else "",
                  precision=run.get("precision") or None)


def load_records(root: str | Path) -> tuple[list[Record], list[str]]:
    """Every ``results.json`` under ``root`` (and the post-hoc ``results_*.json`` beside them), with a note for
    each file that could not be used."""
    root = Path(root)
    if not root.exists():
        raise ResultsError(f"{root} does not exist; pass the sweep's OUTPUT folder (default: output)")
    files = [root] if root.is_file() else sorted(p for p in root.rglob("results.json")  # not moved-aside records
                                                 if PREVIOUS not in p.relative_to(root).parts[:-1])
    records, notes = [], []
    for path in files:
        try:
            data = json.loads(path.read_text())
            run = data.get("run") or {}
            records.append(_record(path, data, run, None))
        except (OSError, ValueError, AttributeError, TypeError) as e:
            notes.append(f"{path}: not used ({e}); rerun that run")
            continue
        for extra in sorted(path.parent.glob("results_*.json")):
            try:
                post = json.loads(extra.read_text())
                method = str(post.get("method") or extra.stem[len("results_"):]).lower()
                records.append(_record(extra, post, run, method))
            except (OSError, ValueError, AttributeError, TypeError) as e:
                notes.append(f"{extra}: not used ({e}); rerun tools/calibrate.py on that run")
    return records, notes


# ------------------------------------------------------------------------------------------------ aggregation
@dataclass
class Cell:
    values: dict[Any, float]   # seed -> value
    expected: int               # seeds of the block

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return aggregate(self.values.values())[0] if self.values else math.nan

    @property
    def std(self) -> float:
        return aggregate(self.values.values())[1] if self.values else math.nan

    def text(self, decimals: int = 2) -> str:
        if not self.values:
            return DASH
        s = f"{self.mean:.{decimals}f}"
        if self.n > 1:
            s += f" ± {self.std:.{decimals}f}"
        if self.n < self.expected:
            s += f" ({self.n}/{self.expected} seeds)"
        return s

    def as_json(self) -> dict:
        return {"mean": self.mean if self.values else None, "std": self.std if self.values else None,
                "n": self.n, "expected_seeds": self.expected, "seeds": sorted(self.values, key=str),
                "values": [self.values[k] for k in sorted(self.values, key=str)]}


@dataclass
class Row:
    """One variant of one block: its records per (subsample, source, dataset)."""
    key: tuple
    label: str
    calib: str
    records: dict[tuple, dict[Any, Record]] = field(default_factory=lambda: defaultdict(dict))


@dataclass
class Block:
    trainer: str
    config: str
    max_epoch: Any
    options_id: str | None = None   # runs of other command-line options are another block
    rows: dict[tuple, Row] = field(default_factory=dict)
    seeds: set = field(default_factory=set)
    show_options: bool = False      # set when another block of the table differs only in its options

    @property
    def label(self) -> str:
        opts = f", opts {self.options_id or 'none'}" if self.show_options else ""
        if self.trainer == ZERO_SHOT:
            return f"{self.trainer} [{self.config}{opts}]"
        return f"{self.trainer} [{self.config}, {'?' if self.max_epoch is None else self.max_epoch} ep{opts}]"

    def cell(self, row: Row, sub: str, source: str, dataset: str, metric: str) -> Cell:
        recs = row.records.get((sub, source, dataset), {})
        return Cell({seed: float(r.metrics[metric]) for seed, r in recs.items()
                     if isinstance(r.metrics.get(metric), (int, float))}, len(self.seeds))


@dataclass
class Group:
    kind: str
    shots: Any
    backbone: str
    blocks: dict[tuple, Block] = field(default_factory=dict)

    @property
    def datasets(self) -> list[str]:
        present = {ds for b in self.blocks.values() for r in b.rows.values() for (_, _, ds) in r.records}
        return order_datasets(present, with_benchmark=self.kind == B2N)

    @property
    def header(self) -> str:
        what = "Base-to-novel" if self.kind == B2N else "All classes (few-shot / cross-dataset / domain gen.)"
        shots = "shots n/a (zero-shot only)" if self.shots is None else f"{self.shots} shots"
        return (f"{what}: {shots}, backbone {self.backbone}. Each block names its config and epochs; runs of "
                "different protocols are never averaged together.")


def order_datasets(names: Iterable[str], with_benchmark: bool) -> list[str]:
    """The paper's column order, then the domain-shift sets, then the rest (sorted). With ``with_benchmark``
    and any benchmark dataset present, all 11 benchmark columns are shown (missing ones as gaps)."""
    names = set(names)
    first = list(BENCHMARK) if with_benchmark and names & set(BENCHMARK) else [d for d in BENCHMARK if d in names]
    return first + [d for d in DOMAIN if d in names] + sorted(names - set(BENCHMARK) - set(DOMAIN))


def _variant_sort(key: str) -> tuple:
    return (VARIANT_ORDER.index(key) if key in VARIANT_ORDER else len(VARIANT_ORDER), key)


def variant_label(calib: str, posthoc: str | None) -> str:
    label = CALIB_LABELS.get(calib, calib)
    if posthoc:
        ph = POSTHOC_LABELS.get(posthoc, posthoc)
        label = ph if calib == "none" else f"{label} + {ph}"
    return label


def _params_label(params: str, others: list[str]) -> str:
    """The calib params in which ``params`` differs from the other param sets of the same variant."""
    mine = json.loads(params) if params else {}
    theirs = [json.loads(p) if p else {} for p in others]
    diff = sorted(k for k in mine if any(t.get(k) != mine[k] for t in theirs))
    return ", ".join(f"{k}={mine[k]}" for k in diff) or "default"


def build_groups(records: Sequence[Record], notes: list[str]) -> list[Group]:
    """Group records by protocol, block and variant; duplicates of one seed are reported (first path kept)."""
    by_dir = {r.run_dir.resolve(): r for r in records if r.posthoc is None}

    def source_of(r: Record) -> str:
        if r.zero_shot:
            return "zero-shot"
        if r.kind == B2N or not r.model_dir:
            return "self"
        src = by_dir.get(Path(r.model_dir).resolve())
        if src is None:
            try:
                src_ds = json.loads((Path(r.model_dir) / "results.json").read_text())["run"]["dataset"]
            except (OSError, ValueError, KeyError, TypeError):
                return f"prompts of {r.model_dir}"
        else:
            src_ds = src.dataset
        return "self" if src_ds == r.dataset else src_ds

    groups: dict[tuple, Group] = {}
    zero_shot: list[Record] = []
    for r in records:
        if r.zero_shot:
            zero_shot.append(r)
            continue
        groups.setdefault((r.kind, r.shots, r.backbone), Group(r.kind, r.shots, r.backbone))
    for r in zero_shot:  # zero-shot runs join every table of their backbone (shots do not apply to them)
        targets = [g for (kind, _, bb), g in groups.items() if kind == r.kind and bb == r.backbone]
        if not targets:
            targets = [groups.setdefault((r.kind, None, r.backbone), Group(r.kind, None, r.backbone))]
        for g in targets:
            _add(g, r, source_of(r), notes)
    for r in records:
        if not r.zero_shot:
            _add(groups[(r.kind, r.shots, r.backbone)], r, source_of(r), notes)
    for g in groups.values():
        _note_mixed_weights(g, notes)
        for b in g.blocks.values():  # blocks that differ only in their options say which options they ran
            b.show_options = any(o is not b and o.options_id != b.options_id and
                                 (o.trainer, o.config, o.max_epoch) == (b.trainer, b.config, b.max_epoch)
                                 for o in g.blocks.values())
    for g in groups.values():  # label rows whose calib params differ within one variant
        for b in g.blocks.values():
            by_variant = defaultdict(list)
            for row in b.rows.values():
                by_variant[row.key[0]].append(row)
            for rows in by_variant.values():
                if len(rows) > 1:
                    for row in rows:
                        row.label += f" ({_params_label(row.key[1], [o.key[1] for o in rows if o is not row])})"
    return sorted(groups.values(), key=lambda g: (g.kind != B2N, str(g.backbone), g.shots is None,
                                                  g.shots if isinstance(g.shots, int) else 0))


def _note_mixed_weights(g: Group, notes: list[str]) -> None:
    """A table whose runs share a backbone name but not its weights (a re-trained toy-clip, a replaced weights
    file) compares different models: say so, naming the runs of the less common weights."""
    records = [r for b in g.blocks.values() for row in b.rows.values() for cell in row.records.values()
               for r in cell.values() if r.weights]
    by_weights: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        by_weights[r.weights].append(r)
    if len(by_weights) > 1:
        common = max(by_weights, key=lambda w: len(by_weights[w]))
        others = sorted(str(r.run_dir) for w, rs in by_weights.items() if w != common for r in rs)
        notes.append(f"the {g.backbone} runs of one table come from {len(by_weights)} different weights "
                     f"(run.backbone_weights); {len(others)} differ from the other {len(by_weights[common])}: "
                     f"{', '.join(others[:3])}{' ...' if len(others) > 3 else ''} (move stale runs away and rerun)")


def _add(g: Group, r: Record, source: str, notes: list[str]) -> None:
    bkey = (r.trainer, r.config, None if r.zero_shot else r.max_epoch, r.options_id)
    block = g.blocks.setdefault(bkey, Block(*bkey))
    block.seeds.add(r.seed)
    rkey = (r.variant, r.calib_params)
    label = "zero-shot" if r.zero_shot and r.variant == "none" else variant_label(r.calib, r.posthoc)
    row = block.rows.setdefault(rkey, Row(rkey, label, r.calib))
    cell = row.records[(r.subsample, source, r.dataset)]
    if r.seed in cell:
        if cell[r.seed].path != r.path:
            notes.append(f"duplicate run of {r.trainer} {r.variant} {r.dataset} {r.subsample} seed {r.seed}: "
                         f"using {cell[r.seed].path}, ignoring {r.path} (results.json records no difference "
                         "between them; move one away)")
        return
    cell[r.seed] = r


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


# --------------------------------------------------------------------------------------------------- reference
@dataclass
class Reference:
    name: str
    doc: dict

    @classmethod
    def load(cls, name: str) -> "Reference":
        if name not in REFERENCES:
            raise ResultsError(f"unknown reference {name!r}; known: {', '.join(REFERENCES)}")
        path = REFERENCE_DIR / REFERENCES[name]
        try:
            return cls(name, json.loads(path.read_text()))
        except (OSError, ValueError) as e:
            raise ResultsError(f"{path}: cannot read the reference numbers ({e})") from None

    def applies(self, g: Group) -> bool:
        p = self.doc["protocol"]
        return g.kind == p["kind"] and g.backbone == p["backbone"] and g.shots in (p["shots"], None)

    def row(self, trainer: str, variant: str, sub: str, metric: str) -> dict | None:
        for r in self.doc["rows"]:
            if (r["trainer"].lower(), r["variant"], r["subsample"], r["metric"]) == (trainer.lower(), variant,
                                                                                     sub, metric):
                return r
        return None

    def settings_of(self, trainer: str) -> list[dict]:
        """The settings the paper's rows of ``trainer`` were made with (``settings`` in the reference file)."""
        return [st for st in self.doc.get("settings", []) if st["trainer"] in ("*", trainer)]

    def differences(self, trainer: str, records: Iterable[Record]) -> list[tuple[dict, str]]:
        """(setting, what our runs have) for each setting of the paper's ``trainer`` rows that ``records`` do not
        all share; a run that does not record its settings counts as different."""
        records = list(records)
        out = []
        for st in self.settings_of(trainer):
            ours = set()
            for r in records:
                method = json.loads(r.method_cfg) if r.method_cfg else None
                for key, want in st.get("method", {}).items():
                    have = "not recorded" if method is None else method.get(key, "not recorded")
                    if have != want:
                        ours.add(f"{key} {have}")
                if "precision" in st and r.precision and r.precision != st["precision"]:
                    ours.add(f"PREC {r.precision}")
            if ours:
                out.append((st, ", ".join(sorted(ours))))
        return out

    def value(self, row: dict, dataset: str) -> float | None:
        try:
            return row["values"][self.doc["datasets"].index(dataset)]
        except ValueError:
            return None


# ------------------------------------------------------------------------------------------------ the tables
@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)


def _avg_datasets(g: Group, datasets: list[str], source: str) -> list[str]:
    """The columns an Avg runs over: the 11 benchmark datasets when shown (without the prompts' own source
    dataset for transferred prompts), else every column."""
    cols = [d for d in datasets if d in BENCHMARK] or list(datasets)
    return [d for d in cols if d != source]


def _avg(means: dict[str, float], over: list[str]) -> str:
    have = [means[d] for d in over if d in means]
    if not have:
        return DASH
    s = f"{sum(have) / len(have):.2f}"
    return s if len(have) == len(over) else f"{s} ({len(have)}/{len(over)} datasets)"


def _fmt(v: float | None, decimals: int = 2, signed: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return DASH
    return f"{v:+.{decimals}f}" if signed else f"{v:.{decimals}f}"


def b2n_tables(g: Group, metrics: list[str], ref: Reference | None) -> list[Table]:
    datasets = g.datasets
    cols = [SHORT.get(d, d) for d in datasets]
    over = _avg_datasets(g, datasets, "self")
    use_ref = ref is not None and ref.applies(g)
    tables = []
    for sub, title in (("base", "Table 1. Base-class results"), ("new", "Table 2. Novel-class results")):
        t = Table(title, ["Method", "Variant", "Metric"] + cols + ["Avg"], [])
        for block in _blocks(g):
            first = True
            for row in _rows(block):
                for metric in metrics:
                    label, dec = METRICS[metric]
                    cells = {d: block.cell(row, sub, "zero-shot" if block.trainer == ZERO_SHOT else "self", d,
                                           metric) for d in datasets}
                    means = {d: c.mean for d, c in cells.items() if c.n}
                    t.rows.append([block.label if first else "", row.label, label]
                                  + [cells[d].text(dec) for d in datasets] + [_avg(means, over)])
                    first = False
                    if use_ref:
                        _reference_rows(t, ref, block, row, sub, metric, datasets, means, over)
        tables.append(t)
    tables.append(hm_table(g, datasets, over))
    return tables


def _reference_rows(t: Table, ref: Reference, block: Block, row: Row, sub: str, metric: str,
                    datasets: list[str], means: dict[str, float], over: list[str]) -> None:
    rr = ref.row(block.trainer, row.key[0], sub, metric)
    if rr is None:
        return
    paper = {d: ref.value(rr, d) for d in datasets}
    label = METRICS[metric][0]
    avg = rr.get("avg_recomputed")
    avg_text = _fmt(avg if avg is not None else rr.get("avg_printed"))
    if rr.get("avg_printed") is not None and avg is not None and abs(rr["avg_printed"] - avg) > 0.005:
        avg_text += f" (printed {rr['avg_printed']:.2f})"
    records = [r for cell in row.records.values() for r in cell.values()]  # base and novel runs share settings
    differ = ref.differences(block.trainer, records)
    required = [(st, ours) for st, ours in differ if st.get("required")]
    t.rows.append(["", f"  paper ({rr['readme_label']})" + (" [other settings]" if required else ""), label]
                  + [_fmt(paper[d]) for d in datasets] + [avg_text])
    for st, ours in differ:
        want = ", ".join([f"{k} {v}" for k, v in st.get("method", {}).items()]
                         + ([f"PREC {st['precision']}"] if "precision" in st else []))
        msg = (f"paper {block.trainer} rows were made with {want} ({st['why']}); our {row.label} runs have "
               f"{ours}: ")
        if st.get("required"):
            node = f"TRAINER.{st['node']}." if st.get("node") else ""
            opts = " ".join(f"{node}{k} {v}" for k, v in st.get("method", {}).items())
            msg += f"no Δ (unlike settings); rerun with OPTS=\"{opts}\" to compare"
        else:
            msg += "Δ shown, read it with that in mind"
        if msg not in t.notes:
            t.notes.append(msg)
    if required:
        return
    both = [d for d in over if d in means and paper.get(d) is not None]
    delta_avg = DASH
    if both:
        delta = sum(means[d] - paper[d] for d in both) / len(both)
        delta_avg = _fmt(delta, signed=True) + ("" if len(both) == len(over) else f" ({len(both)}/{len(over)})")
    t.rows.append(["", "  Δ (ours − paper)", label]
                  + [_fmt(means[d] - paper[d], signed=True) if d in means and paper[d] is not None else DASH
                     for d in datasets] + [delta_avg])
    for note in rr.get("notes", []):
        msg = f"paper {block.trainer} '{rr['readme_label']}' ({sub}): {note}"
        if msg not in t.notes:
            t.notes.append(msg)


def hm_table(g: Group, datasets: list[str], over: list[str]) -> Table:
    t = Table("HM of the seed means of base and novel accuracy",
              ["Method", "Variant"] + [SHORT.get(d, d) for d in datasets] + ["Avg"], [])
    for block in _blocks(g):
        first = True
        for row in _rows(block):
            hm = hm_values(block, row, datasets, over)
            t.rows.append([block.label if first else "", row.label] + [hm["per_dataset"][d]["text"]
                                                                      for d in datasets] + [hm["avg"]["text"]])
            first = False
    return t


def hm_values(block: Block, row: Row, datasets: list[str], over: list[str]) -> dict:
    source = "zero-shot" if block.trainer == ZERO_SHOT else "self"
    per, base_means, new_means = {}, {}, {}
    for d in datasets:
        b = block.cell(row, "base", source, d, "accuracy")
        n = block.cell(row, "new", source, d, "accuracy")
        if b.n and n.n:
            base_means[d], new_means[d] = b.mean, n.mean
            v = harmonic_mean(b.mean, n.mean)
            partial = min(b.n, n.n) < block.cell(row, "base", source, d, "accuracy").expected
            text = f"{v:.2f}" + (f" ({min(b.n, n.n)}/{b.expected} seeds)" if partial else "")
            per[d] = {"hm": v, "base": b.mean, "new": n.mean, "text": text}
        else:
            per[d] = {"hm": None, "base": b.mean if b.n else None, "new": n.mean if n.n else None, "text": DASH}
    both = [d for d in over if d in base_means]
    avg = {"hm": None, "base": None, "new": None, "datasets": both, "text": DASH}
    if both:
        ab = sum(base_means[d] for d in both) / len(both)
        an = sum(new_means[d] for d in both) / len(both)
        avg.update(hm=harmonic_mean(ab, an), base=ab, new=an)
        avg["text"] = f"{avg['hm']:.2f}" + ("" if len(both) == len(over) else f" ({len(both)}/{len(over)} datasets)")
    return {"per_dataset": per, "avg": avg}


def all_class_table(g: Group, metrics: list[str]) -> Table:
    datasets = g.datasets
    domain = [d for d in datasets if d in DOMAIN]
    headers = ["Method", "Variant", "Prompts from", "Metric"] + [SHORT.get(d, d) for d in datasets] + ["Avg"]
    if domain:
        headers.append("DG Avg")
    t = Table("All-class results", headers, [])
    for block in _blocks(g):
        first = True
        for row in _rows(block):
            sources = sorted({src for (_, src, _) in row.records}, key=lambda s: (s != "self", s))
            for source in sources:
                for metric in metrics:
                    label, dec = METRICS[metric]
                    cells = {d: block.cell(row, "all", source, d, metric) for d in datasets}
                    means = {d: c.mean for d, c in cells.items() if c.n}
                    over = [d for d in _avg_datasets(g, [d for d in datasets if d not in DOMAIN], source)]
                    own = {"self": "each dataset", "zero-shot": "zero-shot"}.get(source, source)
                    line = [block.label if first else "", row.label, own, label] + [cells[d].text(dec)
                                                                                  for d in datasets]
                    line.append(_avg(means, over) if over else DASH)
                    if domain:
                        line.append(_avg(means, list(DOMAIN)))
                    t.rows.append(line)
                    first = False
    return t


def summary_tables(g: Group) -> list[Table]:
    """One row per variant and dataset: base acc, base ECE, novel acc, novel ECE, HM (what base2novel.sh prints)."""
    tables = []
    for d in g.datasets:
        t = Table(f"{d}", ["Method", "Variant", "Base acc", "Base ECE", "Novel acc", "Novel ECE", "HM"], [])
        for block in _blocks(g):
            source = "zero-shot" if block.trainer == ZERO_SHOT else "self"
            first = True
            for row in _rows(block):
                cells = [block.cell(row, sub, source, d, m) for sub in ("base", "new") for m in ("accuracy", "ece")]
                if not any(c.n for c in cells):
                    continue
                hm = hm_values(block, row, [d], [d])["per_dataset"][d]["text"]
                t.rows.append([block.label if first else "", row.label] + [c.text() for c in cells] + [hm])
                first = False
        if t.rows:
            tables.append(t)
    return tables


def _blocks(g: Group) -> list[Block]:
    def key(b: Block):
        m = METHOD_ORDER.index(b.trainer) if b.trainer in METHOD_ORDER else len(METHOD_ORDER)
        return (m, b.trainer, b.config, str(b.max_epoch), b.options_id or "")
    return sorted(g.blocks.values(), key=key)


def _rows(block: Block) -> list[Row]:
    return sorted(block.rows.values(), key=lambda r: (_variant_sort(r.key[0]), r.key[1]))


# ---------------------------------------------------------------------------------------------------- output
def render(tables: list[Table], fmt: str) -> str:
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        for t in tables:
            buf.write(f"# {t.title}\n")
            w.writerow(t.headers)
            w.writerows(t.rows)
            for n in t.notes:
                buf.write(f"# note: {n}\n")
            buf.write("\n")
        return buf.getvalue()
    from tabulate import tabulate

    out = []
    for t in tables:
        if fmt == "latex":
            rows = [[c.replace("±", r"$\pm$").replace("Δ", r"$\Delta$").replace("−", "-").replace("_", r"\_")
                     for c in r] for r in t.rows]
            out.append(f"% {t.title}\n" + tabulate(rows, headers=t.headers, tablefmt="latex_raw",
                                                    disable_numparse=True))
        else:
            tablefmt = "pipe" if fmt == "markdown" else "github"
            title = f"**{t.title}**" if fmt == "markdown" else t.title
            out.append(title + "\n\n" + tabulate(t.rows, headers=t.headers, tablefmt=tablefmt,
                                                 disable_numparse=True))
        prefix = "% " if fmt == "latex" else ""
        out[-1] += "".join(f"\n{prefix}note: {n}" for n in t.notes)
    return "\n\n".join(out)


def to_json(groups: list[Group], metrics: list[str]) -> dict:
    out = []
    for g in groups:
        datasets = g.datasets
        blocks = []
        for block in _blocks(g):
            rows = []
            for row in _rows(block):
                cells: dict = defaultdict(lambda: defaultdict(dict))
                for (sub, src, d) in row.records:
                    for m in metrics:
                        cells[f"{sub}/{src}"][d][m] = block.cell(row, sub, src, d, m).as_json()
                entry = {"variant": row.key[0], "calib_params": json.loads(row.key[1]) if row.key[1] else None,
                         "label": row.label, "cells": cells,
                         "runs": sorted(str(r.path) for recs in row.records.values() for r in recs.values())}
                if g.kind == B2N:
                    hm = hm_values(block, row, datasets, _avg_datasets(g, datasets, "self"))
                    entry["hm"] = {"per_dataset": {d: {k: v for k, v in x.items() if k != "text"}
                                                   for d, x in hm["per_dataset"].items()},
                                   "avg": {k: v for k, v in hm["avg"].items() if k != "text"}}
                rows.append(entry)
            blocks.append({"trainer": block.trainer, "config": block.config, "max_epoch": block.max_epoch,
                           "options_id": block.options_id,
                           "label": block.label, "seeds": sorted(block.seeds, key=str), "variants": rows})
        out.append({"kind": g.kind, "shots": g.shots, "backbone": g.backbone, "header": g.header,
                    "datasets": datasets, "blocks": blocks})
    return {"groups": out}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tools/parse_results.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("output_dir", metavar="OUTPUT_DIR", help="folder searched recursively for results.json")
    p.add_argument("--format", default="plain", choices=("plain", "markdown", "latex", "csv"),
                   help="plain (github-style, default), markdown, latex or csv")
    extra = ", ".join(k for k in METRICS if k not in ("accuracy", "ece"))
    p.add_argument("--metrics", nargs="+", default=[], metavar="M",
                   help=f"extra rows besides Acc. and ECE: {extra} (aliases ace, f1, cwece)")
    p.add_argument("--reference", choices=sorted(REFERENCES), help="add the paper's numbers and our difference")
    p.add_argument("--method", nargs="+", metavar="NAME", help="only these methods (trainer or sweep names)")
    p.add_argument("--dataset", nargs="+", metavar="NAME", help="only these datasets (registry or config names)")
    p.add_argument("--kind", choices=(B2N, ALL), help="only base-to-novel or only all-class runs")
    p.add_argument("--summary", action="store_true",
                   help="one row per variant: base acc, base ECE, novel acc, novel ECE, HM (base-to-novel runs)")
    p.add_argument("--json", action="store_true", help="print the aggregated numbers as JSON")
    return p


def _metrics(names: Sequence[str]) -> list[str]:
    out = ["accuracy", "ece"]
    for n in names:
        key = METRIC_ALIASES.get(n.lower(), n.lower())
        if key not in METRICS:
            raise ResultsError(f"unknown metric {n!r}; known: {', '.join(METRICS)} (aliases: "
                               f"{', '.join(METRIC_ALIASES)})")
        if key not in out:
            out.append(key)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        metrics = _metrics(args.metrics)
        ref = Reference.load(args.reference) if args.reference else None
        records, notes = load_records(args.output_dir)
    except ResultsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    kind = B2N if args.summary else args.kind
    records = filter_records(records, args.method, args.dataset, kind)
    groups = build_groups(records, notes)
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    if not groups:
        what = " matching the filters" if (args.method or args.dataset or kind) else ""
        print(f"no results.json{what} under {args.output_dir}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(to_json(groups, metrics), indent=1, default=str))
        return 0
    chunks = []
    for g in groups:
        if args.summary:
            tables = summary_tables(g)
        elif g.kind == B2N:
            tables = b2n_tables(g, metrics, ref)
            if ref is not None and not ref.applies(g):
                tables[0].notes.append(f"reference {ref.name} is for {ref.doc['protocol']}; not compared here")
        else:
            tables = [all_class_table(g, metrics)]
        if tables:
            head = ("% " if args.format == "latex" else "# " if args.format == "csv" else "") + g.header
            chunks.append(head + "\n\n" + render(tables, args.format))
    print("\n\n".join(chunks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
