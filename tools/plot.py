#!/usr/bin/env python
"""Plots from saved predictions (no model): reliability diagrams and top-1 margin histograms.

    python tools/plot.py reliability RUN_DIR [RUN_DIR ...] [--labels L ...] [--method ts ...] -o out.png
    python tools/plot.py margins     RUN_DIR [RUN_DIR ...] [--labels L ...] [--method none ...] -o out.png

Several runs are overlaid (e.g. a base run and its --calib sibling). ``--pool K`` pools every K consecutive runs
into one series (their test predictions concatenated, e.g. the seeds of one variant:
``plot.py reliability CE_S1 CE_S2 CE_S3 CAL_S1 CAL_S2 CAL_S3 --pool 3 --labels plain calib``). ``--method``
(none, ts, dac, ts+dac, sals) applies a post-hoc calibrator first: one value for every run, or one per run, so the same run can be drawn raw
and calibrated (``plot.py reliability R R --method none ts``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from calibration.metrics import compute_metrics, margins, reliability_data  # noqa: E402
from calibration.runs import POSTHOC_METHODS, apply_posthoc, load_run, resolve_base_run  # noqa: E402
from common.atomic import atomic_open  # noqa: E402
from common.errors import UserError  # noqa: E402

METHOD_CHOICES = ("none",) + POSTHOC_METHODS


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


def _per_run(values: list[str] | None, n: int, what: str) -> list[str] | None:
    if values is None or len(values) == n:
        return values
    if len(values) == 1:
        return values * n
    raise UserError(f"{what}: give one value or one per run ({n}), got {len(values)}")


def _load(args) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(label, logits, labels) per series (a run, or ``--pool`` consecutive runs concatenated), after the requested
    post-hoc method (applied per run)."""
    k = args.pool
    if k < 1 or len(args.runs) % k:
        raise UserError(f"--pool {k}: the {len(args.runs)} runs must split into groups of {k} (one group per series)")
    methods = _per_run(args.method, len(args.runs), "--method")
    labels = _per_run(args.labels, len(args.runs) // k, "--labels" + (f" (one per group of {k} runs)" if k > 1 else ""))
    per_run = []
    for run_dir, method in zip(args.runs, methods):
        run = load_run(run_dir)
        base = resolve_base_run(run, args.base_run) if method in ("ts", "dac", "ts+dac") else run
        logits, _ = apply_posthoc(method, run, base)
        per_run.append((Path(run_dir).name + ("" if method == "none" else f" +{method}"), logits, run.labels))
    out = []
    for i in range(0, len(per_run), k):
        group = per_run[i:i + k]
        widths = {logits.shape[1] for _, logits, _ in group}
        if len(widths) > 1:
            raise UserError(f"--pool {k}: runs {', '.join(args.runs[i:i + k])} score different numbers of classes "
                            f"({sorted(widths)}); pool only runs of one test set")
        label = labels[i // k] if labels else " + ".join(name for name, _, _ in group)
        out.append((label, np.concatenate([g[1] for g in group]), np.concatenate([g[2] for g in group])))
    return out


def plot_reliability(series, n_bins: int, title: str | None):
    fig, (ax, ax_hist) = plt.subplots(2, 1, figsize=(5.5, 7), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], color="gray", ls="--", lw=1, label="perfect calibration")
    width = 1.0 / n_bins
    single = len(series) == 1
    for label, logits, y in series:
        rd = reliability_data(logits, y, n_bins)
        ece = compute_metrics(logits, y, n_bins)["ece"]
        centers = (rd["edges"][:-1] + rd["edges"][1:]) / 2
        ok = rd["count"] > 0
        if single:
            ax.bar(centers[ok], rd["accuracy"][ok], width=width, edgecolor="black", alpha=0.7,
                   label=f"accuracy ({label}, ECE {ece:.2f}%)")
            gap_lo = np.minimum(rd["accuracy"][ok], rd["confidence"][ok])
            ax.bar(centers[ok], np.abs(rd["accuracy"][ok] - rd["confidence"][ok]), bottom=gap_lo, width=width,
                   color="red", alpha=0.3, hatch="//", label="gap")
        else:
            ax.plot(rd["confidence"][ok], rd["accuracy"][ok], marker="o", label=f"{label} (ECE {ece:.2f}%)")
        ax_hist.bar(centers, rd["count"] / rd["count"].sum(), width=width, alpha=0.5 if not single else 0.7,
                    edgecolor="black", label=label)
    ax.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy", title=title or "Reliability diagram")
    ax.legend(loc="upper left", fontsize=8)
    ax_hist.set(xlabel="confidence", ylabel="fraction")
    fig.tight_layout()
    return fig


def plot_margins(series, bins: int, title: str | None):
    fig, ax = plt.subplots(figsize=(6, 4))
    all_m = [margins(logits, y) for _, logits, y in series]
    lo = min(float(m.min()) for m in all_m)
    hi = max(float(m.max()) for m in all_m)
    edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
    for (label, _, _), m in zip(series, all_m):
        ax.hist(m, bins=edges, histtype="step", lw=1.5, density=True,
                label=f"{label} (mean {m.mean():.2f}, std {m.std():.2f})")
    ax.axvline(0, color="gray", ls="--", lw=1)
    ax.set(xlabel="top-1 margin  z_y - max_{j!=y} z_j", ylabel="density", title=title or "Top-1 margins")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _save(fig, path: str) -> None:
    """Save as PNG atomically, with the mode a plain open() gives under the user's umask (others can read it)."""
    try:
        with atomic_open(path, "wb") as f:
            fig.savefig(f, format="png", dpi=120)
    finally:
        plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        series = _load(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.command == "reliability":
        fig = plot_reliability(series, args.n_bins, args.title)
    else:
        fig = plot_margins(series, args.bins, args.title)
    _save(fig, args.output)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
