#!/usr/bin/env python
"""Plots from saved predictions (no model): reliability diagrams and top-1 margin histograms.

    python tools/plot.py reliability RUN_DIR [RUN_DIR ...] [--labels L ...] [--method ts ...] -o out.png
    python tools/plot.py margins     RUN_DIR [RUN_DIR ...] [--labels L ...] [--method none ...] -o out.png

Several runs are overlaid (e.g. a base run and its --calib sibling). ``--pool K`` pools every K consecutive runs
into one series (their test predictions concatenated, e.g. the seeds of one variant:
``plot.py reliability CE_S1 CE_S2 CE_S3 CAL_S1 CAL_S2 CAL_S3 --pool 3 --labels plain calib``). ``--method``
(none, ts, dac, ts+dac, sals) applies a post-hoc calibrator first: one value for every run, or one per run, so the
same run can be drawn raw and calibrated (``plot.py reliability R R --method none ts``). The figures are drawn by
calibration/plots.py.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from calibration import plots  # noqa: E402
from common.errors import UserError  # noqa: E402

METHOD_CHOICES = plots.METHOD_CHOICES


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tools/plot.py", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    for name, help_ in (("reliability", "reliability diagram (accuracy vs confidence per bin)"),
                        ("margins", "histogram of top-1 margins z_y - max_{j!=y} z_j")):
        s = sub.add_parser(name, help=help_)
        s.add_argument("runs", nargs="+", metavar="RUN_DIR")
        s.add_argument("--labels", nargs="+", default=None, help="legend labels, one per series (per run without "
                       "--pool)")
        s.add_argument("--pool", type=int, default=1, metavar="K", help="pool every K consecutive runs into one "
                       "series (e.g. the seeds of one variant); default 1: each run is its own series")
        s.add_argument("--method", nargs="+", type=str.lower, default=["none"], choices=METHOD_CHOICES,
                       help="post-hoc calibrator: one for all runs or one per run (default none)")
        s.add_argument("--base-run", default=None, metavar="DIR", help="base run for ts/dac (default: each "
                       "run's results.json run.model_dir, else the run itself)")
        s.add_argument("-o", "--output", required=True, help="output PNG")
        s.add_argument("--title", default=None)
        if name == "reliability":
            s.add_argument("--n-bins", type=int, default=10)
        else:
            s.add_argument("--bins", type=int, default=50, help="histogram bins")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        series = plots.load_series(args.runs, args.method, args.labels, args.pool, args.base_run)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.command == "reliability":
        fig = plots.plot_reliability(series, args.n_bins, args.title)
    else:
        fig = plots.plot_margins(series, args.bins, args.title)
    plots.save_png(fig, args.output)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
