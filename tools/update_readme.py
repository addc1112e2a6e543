"""Regenerate the README's toy quick-start results from run records (never typed by hand).

    bash scripts/base2novel.sh coop toy          # produces output/base2new/... run records
    python tools/update_readme.py --output output

Replaces the block between ``<!-- toy-results:begin -->`` and ``<!-- toy-results:end -->`` in README.md with the
table ``scripts/base2novel.sh`` printed (``tools/parse_results.py --summary`` on the same records) and writes the
reliability diagrams of the novel and base test sets, CE vs ``--calib``, to ``docs/img/``.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
from pathlib import Path
from typing import Sequence

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
BEGIN, END = "<!-- toy-results:begin -->", "<!-- toy-results:end -->"


def summary_table(output: Path, method: str, dataset: str) -> str:
    from tools import parse_results

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = parse_results.main([str(output), "--method", method, "ZeroshotCLIP", "--dataset", dataset, "--summary"])
    if code != 0:
        raise SystemExit(f"parse_results found no {method} {dataset} runs under {output}")
    return buf.getvalue().rstrip()


def seed_runs(output: Path, trainer: str, dataset: str, subsample: str, seed: int) -> dict[str, Path]:
    """Run folders of one seed, keyed by variant (None = CE, else the calib name)."""
    runs = {}
    for path in sorted(output.rglob("results.json")):
        run = json.loads(path.read_text())["run"]
        if (run["trainer"], run["dataset"], run["subsample"], run["seed"]) == (trainer, dataset, subsample, seed):
            runs[run["calib"] or "ce"] = path.parent
    return runs


def runs_time(output: Path, trainers: Sequence[str], dataset: str) -> tuple[int, float]:
    """How many runs of ``trainers`` on ``dataset`` lie under ``output``, and their training plus evaluation
    seconds in all (the ``timings`` of their run records; process start-up and data loading not included)."""
    count, seconds = 0, 0.0
    for path in sorted(output.rglob("results.json")):
        run = json.loads(path.read_text())["run"]
        if run["trainer"] in trainers and run["dataset"] == dataset:
            count += 1
            seconds += sum(t or 0.0 for t in run.get("timings", {}).values())
    return count, seconds


def replace_block(path: Path, begin: str, end: str, body: str) -> None:
    """Replace what lies between the marker lines ``begin`` and ``end`` in ``path`` with ``body``."""
    text = path.read_text()
    if begin not in text or end not in text:
        raise SystemExit(f"{path} has no {begin} ... {end} block")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{begin}\n{body}\n{end}{tail}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--output", default="output", help="sweep output root")
    ap.add_argument("--method", default="CoOp")
    ap.add_argument("--dataset", default="Toy")
    ap.add_argument("--seed", type=int, default=1, help="seed whose runs the reliability diagrams show")
    ap.add_argument("--readme", default=str(REPO / "README.md"))
    ap.add_argument("--img-dir", default=str(REPO / "docs" / "img"))
    args = ap.parse_args(argv)
    output = Path(args.output)
    table = summary_table(output, args.method, args.dataset)

    from tools import plot

    img_dir = Path(args.img_dir)
    img_dir.mkdir(parents=True, exist_ok=True)
    images = []
    for subsample, label in (("new", "novel"), ("base", "base")):
        runs = seed_runs(output, args.method, args.dataset, subsample, args.seed)
        if {"ce", "tcpt"} <= set(runs):
            png = img_dir / f"toy_reliability_{label}.png"
            plot.main(["reliability", str(runs["ce"]), str(runs["tcpt"]), "--labels", "without --calib", "with --calib",
                       "-o", str(png), "--title", f"{args.method} on {args.dataset}, {label} classes, seed {args.seed}"])
            images.append((label, png))

    rel = lambda p: Path(p).resolve().relative_to(REPO).as_posix()  # noqa: E731
    count, seconds = runs_time(output, [args.method, "ZeroshotCLIP"], args.dataset)
    timing = (f"The {count} runs behind this table took {seconds / 60:.1f} min of training and evaluation in all "
              "(their run records' `timings`).")
    block = ["```", table, "```", "", timing, ""] + [f"![reliability diagram, {label} classes]({rel(png)})" for label, png in images]
    replace_block(Path(args.readme), BEGIN, END, "\n".join(block))
    print(table)
    print(timing)
    print(f"README updated; images: {', '.join(str(p) for _, p in images) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
