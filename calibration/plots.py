"""Figures from saved predictions (no model): reliability diagrams and top-1 margin histograms.

Shared by ``tools/plot.py`` (the command line) and ``tools/update_readme.py`` (the README's pooled diagrams).
matplotlib is imported only when a figure is drawn, and through its object-oriented API (no pyplot, no global
backend switch), so importing this module costs nothing and a caller's own matplotlib state is left alone.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from calibration.metrics import compute_metrics, margins, reliability_data
from calibration.runs import POSTHOC_METHODS, apply_posthoc, load_run, resolve_base_run
from common.atomic import atomic_open
from common.errors import UserError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: what ``method`` may be per run: the raw logits or a post-hoc calibrator
METHOD_CHOICES = ("none",) + POSTHOC_METHODS
#: one series: (legend label, logits N x C, labels N)
Series = tuple[str, np.ndarray, np.ndarray]


def per_run(values: Sequence[str] | None, n: int, what: str) -> list[str] | None:
    """``values`` for ``n`` runs: as given (one per run), or one value repeated; None stays None."""
    if values is None or len(values) == n:
        return None if values is None else list(values)
    if len(values) == 1:
        return list(values) * n
    raise UserError(f"{what}: give one value or one per run ({n}), got {len(values)}")


def load_series(run_dirs: Sequence[str | os.PathLike], methods: Sequence[str] = ("none",),
                labels: Sequence[str] | None = None, pool: int = 1,
                base_run: str | os.PathLike | None = None) -> list[Series]:
    """One series per run, or per ``pool`` consecutive runs (their test predictions concatenated, e.g. the seeds
    of one variant), after the post-hoc ``methods`` (one for all runs or one per run; applied per run)."""
    run_dirs = [str(r) for r in run_dirs]
    if pool < 1 or len(run_dirs) % pool:
        raise UserError(f"--pool {pool}: the {len(run_dirs)} runs must split into groups of {pool} "
                        "(one group per series)")
    methods = per_run(methods, len(run_dirs), "--method")
    labels = per_run(labels, len(run_dirs) // pool,
                     "--labels" + (f" (one per group of {pool} runs)" if pool > 1 else ""))
    loaded = []
    for run_dir, method in zip(run_dirs, methods):
        run = load_run(run_dir)
        base = resolve_base_run(run, base_run) if method in ("ts", "dac", "ts+dac") else run
        logits, _ = apply_posthoc(method, run, base)
        loaded.append((Path(run_dir).name + ("" if method == "none" else f" +{method}"), logits, run.labels))
    out = []
    for i in range(0, len(loaded), pool):
        group = loaded[i:i + pool]
        widths = {logits.shape[1] for _, logits, _ in group}
        if len(widths) > 1:
            raise UserError(f"--pool {pool}: runs {', '.join(run_dirs[i:i + pool])} score different numbers of "
                            f"classes ({sorted(widths)}); pool only runs of one test set")
        label = labels[i // pool] if labels else " + ".join(name for name, _, _ in group)
        out.append((label, np.concatenate([g[1] for g in group]), np.concatenate([g[2] for g in group])))
    return out


def _figure(figsize: tuple[float, float]) -> "Figure":
    from matplotlib.figure import Figure

    return Figure(figsize=figsize)


def plot_reliability(series: Sequence[Series], n_bins: int = 10, title: str | None = None) -> "Figure":
    """Accuracy against confidence per bin (bars for one series, lines for several), the ECE in the legend, and
    below it the share of predictions per bin."""
    fig = _figure((5.5, 7))
    ax, ax_hist = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
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


def plot_margins(series: Sequence[Series], bins: int = 50, title: str | None = None) -> "Figure":
    """Histogram (density) of the top-1 margins z_y - max_{j!=y} z_j of each series, on shared bin edges."""
    fig = _figure((6, 4))
    ax = fig.subplots()
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


def png_bytes(fig: "Figure") -> bytes:
    """The figure as PNG (120 dpi), in memory: callers that write only changed files compare these bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    return buf.getvalue()


def save_png(fig: "Figure", path: str | os.PathLike) -> None:
    """Save as PNG atomically, with the mode a plain open() gives under the user's umask (others can read it)."""
    data = png_bytes(fig)
    with atomic_open(path, "wb") as f:
        f.write(data)
