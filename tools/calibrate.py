#!/usr/bin/env python
"""Post-hoc calibration of a finished run, from its saved predictions (no model, no GPU, seconds).

    python tools/calibrate.py RUN_DIR --method ts|dac|ts+dac|sals [--base-run DIR] [--json] [--n-bins 10]

Reads RUN_DIR/results.json and predictions.npz (and the base run's, for ts/dac: by default results.json
``run.model_dir`` of an eval-only novel run; a base run is its own base), recomputes every metric after the
calibrator and writes RUN_DIR/results_<method>.json (``+`` -> ``_``) atomically. Prints a before/after table, or
with --json exactly ``{"metrics": {...}}`` on stdout. A bad argument, or a run lacking or damaging what the method
needs (every array it reads is checked first: shapes, NaN/inf, label ranges), is one message on stderr and exit 2,
with nothing written.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from calibration.metrics import METRIC_KEYS, compute_metrics  # noqa: E402
from calibration.runs import (POSTHOC_METHODS, apply_posthoc, load_run, posthoc_filename,  # noqa: E402
                              resolve_base_run)
from common.atomic import atomic_write_json  # noqa: E402
from common.errors import UserError  # noqa: E402


MAX_BINS = 1000  # more bins than this are empty for any realistic split (and classwise ECE needs C x bins sums)


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _OneLineParser(prog="tools/calibrate.py", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", metavar="RUN_DIR", help="a finished run (results.json + predictions.npz)")
    p.add_argument("--method", required=True, type=str.lower, choices=POSTHOC_METHODS,
                   help="ts: temperature scaling fitted on the base run's val split; dac: distance-aware "
                        "calibration; ts+dac: DAC on TS-scaled logits; sals: zero-shot logit range")
    p.add_argument("--base-run", metavar="DIR", default=None,
                   help="the base (training) run; default: results.json run.model_dir, else RUN_DIR itself")
    p.add_argument("--n-bins", type=int, default=10,
                   help=f"equal-width and equal-mass bins, 1 to {MAX_BINS} (default 10)")
    p.add_argument("--dac-k", type=int, default=5, help="DAC: number of nearest base classes, >= 1 (default 5)")
    p.add_argument("--json", action="store_true", help='print only {"metrics": {...}} as JSON on stdout')
    return p


def _table(before: dict, after: dict, title: str) -> str:
    from tabulate import tabulate

    rows = [(k, before[k], after[k], after[k] - before[k]) for k in METRIC_KEYS]
    return title + "\n" + tabulate(rows, headers=("metric", "before", "after", "delta"), floatfmt=".4f")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if not 1 <= args.n_bins <= MAX_BINS:
            raise UserError(f"--n-bins must be between 1 and {MAX_BINS}, got {args.n_bins}")
        run = load_run(args.run_dir)
        base = resolve_base_run(run, args.base_run) if args.method != "sals" else run
        logits, info = apply_posthoc(args.method, run, base, dac_k=args.dac_k)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    before = compute_metrics(run.logits, run.labels, n_bins=args.n_bins)
    after = compute_metrics(logits, run.labels, n_bins=args.n_bins)
    record = {
        "metrics": after,
        "method": args.method,
        # relative to this run's folder, like results.json's run.model_dir: a record names no machine
        "base_run": None if args.method == "sals" else Path(os.path.relpath(base.path.resolve(),
                                                                             run.path.resolve())).as_posix(),
        "temperature": info["temperature"],
        "source": "results.json",
        "n_bins": args.n_bins,
    }
    out = run.path / posthoc_filename(args.method)
    try:
        atomic_write_json(out, record)
    except OSError as e:
        print(f"error: cannot write {out} ({e.strerror or e}); check the folder's permissions and free space",
              file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"metrics": after}))
    else:
        extra = f", T = {info['temperature']:.4f}" if info["temperature"] is not None else ""
        print(_table(before, after, f"{run.path}  [{args.method}{extra}]"))
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
