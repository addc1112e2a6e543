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
  config, epochs, the user's result-changing options: ``run.identity.options_id``, the id in the sweep's folder
  name, shown as ``opts <id>`` when two blocks differ only in it), and runs of one variant whose ``calib_params``
  differ become separate rows. Settings the sweep applied itself (``run.identity.sweep_options``: the toy
  protocol's epochs) are not options; a note under the tables names them.
- Post-hoc results next to a run (``results_<method>.json`` from tools/calibrate.py) are variants ``<calib>+<m>``.
- ``--reference tcpt`` adds the paper's numbers (experiments/reference/tcpt_readme.json) and our difference under
  each row of a matching protocol (ViT-B/16, 16 shots); the paper's Avg is recomputed, its printed value shown
  beside. Like is paired with like: where the paper's rows of a method were made with other method settings than our
  runs record (``settings`` in the reference file: TCPT's hybrid "KgCoOp"), the difference is withheld and a note
  gives the options that reproduce the paper's settings; softer differences (precision) are noted under the table.

The library behind it: experiments/records.py (reading), table_records.py, aggregate.py, reference.py, tables.py.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.errors import ResultsError  # noqa: E402
from experiments.reference import REFERENCES  # noqa: E402
from experiments.table_records import ALL, B2N  # noqa: E402
from experiments.tables import METRICS, report  # noqa: E402


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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code, text, notes = report(args.output_dir, args.metrics, args.reference, args.format, args.method,
                                   args.dataset, args.kind, args.summary, args.json)
    except ResultsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    print(text, file=sys.stdout if code == 0 else sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
