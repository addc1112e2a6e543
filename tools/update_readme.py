"""Regenerate the README's toy quick-start results from fresh run records (never typed by hand).

    bash scripts/base2novel.sh coop toy && bash scripts/base2novel.sh zsclip toy   # output/base2new/... records
    python tools/update_readme.py --output output

The runs are the ones those two sweeps plan (default settings: ``DATA``=./data unless ``--data``); every one must
hold a record whose identity is what the current code, config and libraries produce (tools/run_status.py), else
the tool refuses, naming the stale or missing runs (the sweeps above rerun exactly those). Their ``results.json``
files are copied to ``docs/results/<dataset>/`` (committed: the records behind the README), and the block between
``<!-- toy-results:begin -->`` and ``<!-- toy-results:end -->`` in README.md is replaced with the table
``scripts/base2novel.sh`` prints (``tools/parse_results.py --summary``), computed from that copy, so
``tests/test_readme_records.py`` can check that the README equals what the committed records give. The reliability
diagrams of the novel and base test sets, CE vs ``--calib``, go to ``docs/img/`` (from the runs' predictions).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
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


def seed_runs(run_dirs: Sequence[Path], trainer: str, dataset: str, subsample: str, seed: int) -> dict[str, Path]:
    """Run folders of one seed among ``run_dirs``, keyed by variant ("ce" = without --calib, else the calib name)."""
    runs = {}
    for folder in run_dirs:
        run = json.loads((folder / "results.json").read_text())["run"]
        if (run["trainer"], run["dataset"], run["subsample"], run["seed"]) == (trainer, dataset, subsample, seed):
            runs[run["calib"] or "ce"] = folder
    return runs


def runs_time(output: Path, trainers: Sequence[str], dataset: str) -> tuple[int, float]:
    """How many runs of ``trainers`` on ``dataset`` lie under ``output``, and their training plus evaluation
    seconds in all (the ``timings`` of their run records; process start-up and data loading not included)."""
    count, seconds = 0, 0.0
    from trainers.run_folder import PREVIOUS

    for path in sorted(p for p in output.rglob("results.json") if PREVIOUS not in p.relative_to(output).parts):
        run = json.loads(path.read_text())["run"]
        if run["trainer"] in trainers and run["dataset"] == dataset:
            count += 1
            seconds += sum(t or 0.0 for t in run.get("timings", {}).values())
    return count, seconds


def planned_runs(output: Path, data: str, method: str, dataset: str) -> list[tuple]:
    """(run, its unit's runs) of the sweeps behind the table: METHOD and zero-shot CLIP on DATASET."""
    from experiments import sweep

    s = sweep.Settings.from_env({"OUTPUT": str(output), "DATA": data})
    out = []
    for m in (method, "zsclip"):
        _, units, _ = sweep.plan("base2novel", [m, dataset], s)
        out += [(run, unit.runs) for unit in units for run in unit.runs]
    return out


def check_fresh(planned: list[tuple]) -> None:
    """Refuse (SystemExit, one message) unless every planned run holds a current record."""
    from experiments import sweep
    from experiments.run_status import Checker

    checker = Checker()
    bad = []
    for run, runs in planned:
        state, diffs = sweep.run_status(run, runs, checker)
        if state != "done":
            bad.append(f"  {run.out_dir}: " + ("no results.json" if state == "missing" else
                                               f"stale (differs in: {'; '.join(diffs)})"))
    if bad:
        raise SystemExit(f"update_readme: {len(bad)} of the {len(planned)} runs behind the table are not what the "
                         "current code, config and libraries produce:\n" + "\n".join(bad[:10])
                         + ("\n  ..." if len(bad) > 10 else "")
                         + "\nRun the sweeps again (they rerun exactly these), e.g. OMP_NUM_THREADS=1 bash "
                           "scripts/base2novel.sh coop toy && bash scripts/base2novel.sh zsclip toy; then this tool.")


def copy_records(planned: list[tuple], output: Path, records: Path) -> None:
    """The runs' results.json under ``records`` (replaced as a whole), at their paths relative to ``output``."""
    if records.exists():
        shutil.rmtree(records)
    for run, _ in planned:
        target = records / run.out_dir.relative_to(output) / "results.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(run.out_dir / "results.json", target)


def readme_block(records: Path, method: str, dataset: str, img_dir: Path) -> str:
    """The README block: the summary table and the runs' time from the records under ``records``, then the
    reliability diagrams present in ``img_dir``."""
    table = summary_table(records, method, dataset)
    count, seconds = runs_time(records, [method, "ZeroshotCLIP"], dataset)
    timing = (f"The {count} runs behind this table took {seconds / 60:.1f} min of training and evaluation in all "
              "(their run records' `timings`).")
    images = [(label, img_dir / f"toy_reliability_{label}.png") for label in ("novel", "base")]
    def rel(p: Path) -> str:
        p = Path(p).resolve()
        return p.relative_to(REPO).as_posix() if p.is_relative_to(REPO) else str(p)

    lines = [f"![reliability diagram, {label} classes]({rel(png)})" for label, png in images if png.is_file()]
    return "\n".join(["```", table, "```", "", timing, ""] + lines).rstrip("\n")


def read_block(path: Path, begin: str = BEGIN, end: str = END) -> str:
    text = path.read_text()
    if begin not in text or end not in text:
        raise SystemExit(f"{path} has no {begin} ... {end} block")
    return text.split(begin, 1)[1].split(end, 1)[0].strip("\n")


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
    ap.add_argument("--data", default="./data", help="the sweeps' DATA (to check the records' data split)")
    ap.add_argument("--method", default="CoOp")
    ap.add_argument("--dataset", default="Toy")
    ap.add_argument("--seed", type=int, default=1, help="seed whose runs the reliability diagrams show")
    ap.add_argument("--readme", default=str(REPO / "README.md"))
    ap.add_argument("--img-dir", default=str(REPO / "docs" / "img"))
    ap.add_argument("--records", default=None, help="where the records are copied (default docs/results/<dataset>)")
    args = ap.parse_args(argv)
    output = Path(args.output)
    planned = planned_runs(output, args.data, args.method, args.dataset)
    check_fresh(planned)
    records = Path(args.records or REPO / "docs" / "results" / args.dataset.lower())
    copy_records(planned, output, records)

    from tools import plot

    img_dir = Path(args.img_dir)
    img_dir.mkdir(parents=True, exist_ok=True)
    for subsample, label in (("new", "novel"), ("base", "base")):
        runs = seed_runs([r.out_dir for r, _ in planned], args.method, args.dataset, subsample, args.seed)
        if {"ce", "tcpt"} <= set(runs) and all((runs[k] / "predictions.npz").is_file() for k in ("ce", "tcpt")):
            png = img_dir / f"toy_reliability_{label}.png"
            plot.main(["reliability", str(runs["ce"]), str(runs["tcpt"]), "--labels", "without --calib", "with --calib",
                       "-o", str(png), "--title", f"{args.method} on {args.dataset}, {label} classes, seed {args.seed}"])
    block = readme_block(records, args.method, args.dataset, img_dir)
    replace_block(Path(args.readme), BEGIN, END, block)
    print(block)
    print(f"README updated from the {len(planned)} records copied to {records}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
