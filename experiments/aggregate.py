"""Aggregation of run records into tables' structure: a :class:`Group` per protocol (kind, shots, backbone), a
:class:`Block` per method, config, epochs and options id, a :class:`Row` per variant, a :class:`Cell` of seeds."""
from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from calibration.metrics import aggregate
from experiments.methods import PAPER_METHODS, ZERO_SHOT
from experiments.protocols import BASE2NOVEL_DATASETS, DATASETS, DOMAIN_TARGETS
from experiments.records import run_info
from experiments.table_records import B2N, Record

BENCHMARK = tuple(DATASETS[d] for d in BASE2NOVEL_DATASETS)
DOMAIN = tuple(DATASETS[d] for d in DOMAIN_TARGETS)
SHORT = dict(zip(BENCHMARK + DOMAIN, ("INet", "Cal", "Pets", "Cars", "Flow", "Food", "Air", "SUN", "DTD", "Euro",
                                      "UCF", "INet-V2", "Sketch", "INet-A", "INet-R")))
CALIB_LABELS = {"none": "plain", "tcpt": "TCPT", "mbls": "MBLS", "zs_norm": "ZS-Norm", "penalty": "Penalty"}
POSTHOC_LABELS = {"ts": "TS", "dac": "DAC", "ts+dac": "TS+DAC", "sals": "SaLS"}
VARIANT_ORDER = ("none", "mbls", "none+ts", "none+dac", "none+ts+dac", "zs_norm", "penalty", "none+sals", "tcpt")
METHOD_ORDER = [ZERO_SHOT] + [t for t in PAPER_METHODS.values() if t != ZERO_SHOT]
DASH = "–"


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
                src_ds = run_info(r.model_dir)["dataset"]
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



def ordered_blocks(g: Group) -> list[Block]:
    def key(b: Block):
        m = METHOD_ORDER.index(b.trainer) if b.trainer in METHOD_ORDER else len(METHOD_ORDER)
        return (m, b.trainer, b.config, str(b.max_epoch), b.options_id or "")
    return sorted(g.blocks.values(), key=key)


def ordered_rows(block: Block) -> list[Row]:
    return sorted(block.rows.values(), key=lambda r: (_variant_sort(r.key[0]), r.key[1]))


