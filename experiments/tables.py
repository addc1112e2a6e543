"""The tables of tools/parse_results.py: Table 1/2 and HM (base-to-novel), the all-class table, the per-dataset
summary (what scripts/base2novel.sh prints), rendered as plain, markdown, latex or csv text, or as JSON."""
from __future__ import annotations

import csv
import io
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Sequence

from calibration.metrics import harmonic_mean
from experiments.aggregate import (BENCHMARK, DASH, DOMAIN, SHORT, Block, Group, Row, build_groups,
                                   ordered_blocks, ordered_rows)
from experiments.errors import ResultsError
from experiments.methods import ZERO_SHOT
from experiments.reference import Reference
from experiments.table_records import B2N, filter_records, load_records

METRICS = {"accuracy": ("Acc.", 2), "ece": ("ECE", 2), "mce": ("MCE", 2), "mce_weighted": ("MCE (weighted)", 2),
           "adaptive_ece": ("ACE", 2), "classwise_ece": ("cw-ECE", 2), "macro_f1": ("Macro-F1", 2),
           "nll": ("NLL", 3), "brier": ("Brier", 3)}
METRIC_ALIASES = {"acc": "accuracy", "ace": "adaptive_ece", "f1": "macro_f1", "cwece": "classwise_ece",
                  "cw_ece": "classwise_ece", "mcew": "mce_weighted"}


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
        for block in ordered_blocks(g):
            first = True
            for row in ordered_rows(block):
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
    for block in ordered_blocks(g):
        first = True
        for row in ordered_rows(block):
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
    for block in ordered_blocks(g):
        first = True
        for row in ordered_rows(block):
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
        for block in ordered_blocks(g):
            source = "zero-shot" if block.trainer == ZERO_SHOT else "self"
            first = True
            for row in ordered_rows(block):
                cells = [block.cell(row, sub, source, d, m) for sub in ("base", "new") for m in ("accuracy", "ece")]
                if not any(c.n for c in cells):
                    continue
                hm = hm_values(block, row, [d], [d])["per_dataset"][d]["text"]
                t.rows.append([block.label if first else "", row.label] + [c.text() for c in cells] + [hm])
                first = False
        if t.rows:
            tables.append(t)
    return tables


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
        for block in ordered_blocks(g):
            rows = []
            for row in ordered_rows(block):
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
                           "options_id": block.options_id, "sweep_options": sweep_settings(block),
                           "label": block.label, "seeds": sorted(block.seeds, key=str), "variants": rows})
        out.append({"kind": g.kind, "shots": g.shots, "backbone": g.backbone, "header": g.header,
                    "datasets": datasets, "blocks": blocks})
    return {"groups": out}


def metric_keys(names: Sequence[str]) -> list[str]:
    out = ["accuracy", "ece"]
    for n in names:
        key = METRIC_ALIASES.get(n.lower(), n.lower())
        if key not in METRICS:
            raise ResultsError(f"unknown metric {n!r}; known: {', '.join(METRICS)} (aliases: "
                               f"{', '.join(METRIC_ALIASES)})")
        if key not in out:
            out.append(key)
    return out




def sweep_settings(block: Block) -> dict:
    """The settings the sweep applied itself to a block's runs (``run.identity.sweep_options``; e.g. the toy
    protocol's epochs), merged over its records; a key whose value differs between records maps to a list."""
    found: dict = {}
    for row in block.rows.values():
        for cell in row.records.values():
            for r in cell.values():
                for key, value in (json.loads(r.sweep_options) if r.sweep_options else {}).items():
                    found.setdefault(key, [])
                    if value not in found[key]:
                        found[key].append(value)
    return {k: v[0] if len(v) == 1 else v for k, v in sorted(found.items())}


def sweep_settings_notes(g: Group) -> list[str]:
    """One note per block whose runs got settings of the sweep's own: shown as such, not as options."""
    notes = []
    for block in ordered_blocks(g):
        applied = {k: v for k, v in sweep_settings(block).items() if k != "TRAIN.NUM_THREADS"}
        if applied:
            shown = ", ".join(f"{k} {v}" for k, v in applied.items())
            notes.append(f"{block.label}: settings the sweep applied itself (not options): {shown}")
    return notes


def report(output_dir: str, metrics: Sequence[str] = (), reference: str | None = None, fmt: str = "plain",
           methods: Sequence[str] | None = None, datasets: Sequence[str] | None = None, kind: str | None = None,
           summary: bool = False, as_json: bool = False) -> tuple[int, str, list[str]]:
    """(exit code, text, notes) of tools/parse_results.py: 0 and the tables (stdout), or 1 and why there are none
    (stderr); the notes (unusable files, mixed weights) go to stderr. Raises ResultsError for a user mistake."""
    keys = metric_keys(metrics)
    ref = Reference.load(reference) if reference else None
    records, notes = load_records(output_dir)
    kind = B2N if summary else kind
    records = filter_records(records, methods, datasets, kind)
    groups = build_groups(records, notes)
    if not groups:
        what = " matching the filters" if (methods or datasets or kind) else ""
        return 1, f"no results.json{what} under {output_dir}", notes
    if as_json:
        return 0, json.dumps(to_json(groups, keys), indent=1, default=str), notes
    chunks = []
    for g in groups:
        if summary:
            tables = summary_tables(g)
        elif g.kind == B2N:
            tables = b2n_tables(g, keys, ref)
            if ref is not None and not ref.applies(g):
                tables[0].notes.append(f"reference {ref.name} is for {ref.doc['protocol']}; not compared here")
        else:
            tables = [all_class_table(g, keys)]
        if tables and not summary:
            tables[-1].notes += sweep_settings_notes(g)
        if tables:
            head = ("% " if fmt == "latex" else "# " if fmt == "csv" else "") + g.header
            chunks.append(head + "\n\n" + render(tables, fmt))
    return 0, "\n\n".join(chunks), notes
