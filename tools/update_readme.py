"""Regenerate the README's toy quick-start results from fresh run records (never typed by hand).

    bash scripts/base2novel.sh coop toy && bash scripts/base2novel.sh zsclip toy   # output/base2new/... records
    python tools/update_readme.py --output output

The runs are the ones those two sweeps plan (default settings: ``DATA``=./data unless ``--data``); every one must
hold a record whose identity is what the current code, config and libraries produce (experiments/run_status.py), else
the tool refuses, naming the stale or missing runs (the sweeps above rerun exactly those). Their ``results.json``
files are copied to ``docs/results/<dataset>/`` (committed: the records behind the README), and the block between
``<!-- toy-results:begin -->`` and ``<!-- toy-results:end -->`` in README.md is replaced with the table
``scripts/base2novel.sh`` prints (``tools/parse_results.py --summary``), computed from that copy, so
``tests/test_readme_records.py`` can check that the README equals what the committed records give. The reliability
diagrams of the novel and base test sets, CE vs ``--calib``, all seeds pooled, go to ``docs/img/`` (from the runs'
predictions).

Regeneration is quiet: a committed record whose identity and metrics equal the fresh one's stays as it is (a rerun
differs only in its commit, timings and the like), and the README and the diagrams are written only when their
content changes, so running this tool twice, or after rerunning the same runs, changes no file.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import textwrap
from pathlib import Path
from typing import Sequence

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from common.errors import UserError  # noqa: E402
from experiments.readme_blocks import replace_block, write_if_changed  # noqa: E402
from experiments.records import read_results, run_info, scan  # noqa: E402

BEGIN, END = "<!-- toy-results:begin -->", "<!-- toy-results:end -->"


def summary_table(output: Path, method: str, dataset: str) -> str:
    """The table ``tools/parse_results.py --summary`` prints for METHOD and zero-shot CLIP on DATASET (its notes,
    if any, go to stderr as that tool's do)."""
    from experiments.errors import ResultsError
    from experiments.tables import report

    try:
        code, text, notes = report(str(output), methods=[method, "ZeroshotCLIP"], datasets=[dataset], summary=True)
    except ResultsError as e:
        raise SystemExit(f"update_readme: {e}") from None
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    if code != 0:
        raise SystemExit(f"parse_results found no {method} {dataset} runs under {output}")
    return text.rstrip()


def variant_runs(run_dirs: Sequence[Path], trainer: str, dataset: str, subsample: str) -> dict[str, dict[int, Path]]:
    """Run folders among ``run_dirs`` by variant ("ce" = without --calib, else the calib name), then by seed."""
    runs: dict[str, dict[int, Path]] = {}
    for folder in run_dirs:
        run = run_info(folder)
        if (run["trainer"], run["dataset"], run["subsample"]) == (trainer, dataset, subsample):
            runs.setdefault(run["calib"] or "ce", {})[run["seed"]] = folder
    return runs


def record_seeds(records: Path, trainer: str, dataset: str) -> list[int]:
    """The seeds of ``trainer``'s records on ``dataset`` under ``records`` (what the pooled diagrams pool)."""
    seeds = set()
    for path in scan(records):
        run = run_info(path)
        if run["trainer"] == trainer and run["dataset"] == dataset:
            seeds.add(run["seed"])
    return sorted(seeds)


def runs_time(output: Path, trainers: Sequence[str], dataset: str) -> tuple[int, float]:
    """How many runs of ``trainers`` on ``dataset`` lie under ``output``, and their training plus evaluation
    seconds in all (the ``timings`` of their run records; process start-up and data loading not included)."""
    count, seconds = 0, 0.0
    for path in scan(output):
        run = run_info(path)
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


# What a rerun of the same run changes by nature: not part of what a committed record says.
VOLATILE = ("git_commit", "timings", "versions")   # versions: the identity holds those that matter


def same_record(a: dict, b: dict) -> bool:
    """Whether two run records hold the same run: the same identity (code, config, data split, libraries), the
    same metrics and the same other fields (e.g. ``model_dir``), whatever their commit and timings."""
    def core(rec: dict) -> dict:
        run = rec.get("run") or {}
        return {**rec, "run": {k: v for k, v in run.items() if k not in VOLATILE}}

    return core(a) == core(b) and (a.get("run") or {}).get("identity") is not None


def copy_records(planned: list[tuple], output: Path, records: Path) -> list[Path]:
    """The runs' results.json under ``records``, at their paths relative to ``output``: a committed record that
    :func:`same_record` as the fresh one is left in place; records of runs no longer planned are removed. Returns
    the files written or removed."""
    changed, keep = [], set()
    for run, _ in planned:
        target = records / run.out_dir.relative_to(output) / "results.json"
        keep.add(target)
        source = run.out_dir / "results.json"
        if target.is_file():
            try:
                if same_record(read_results(target), read_results(source)):
                    continue
            except ValueError:  # a damaged committed copy is replaced
                pass
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        changed.append(target)
    for old in sorted(records.rglob("*")) if records.is_dir() else []:
        if old.is_file() and old not in keep:
            old.unlink()
            changed.append(old)
    for folder in sorted((p for p in records.rglob("*") if p.is_dir()), reverse=True) if records.is_dir() else []:
        if not any(folder.iterdir()):
            folder.rmdir()
    return changed


def plot_pooled(runs: dict[str, dict[int, Path]], png: Path, title: str) -> bool:
    """The reliability diagram of CE vs --calib, each variant's seeds pooled, into ``png`` when its bytes change;
    False when the runs lack predictions or the two variants have different seeds."""
    from calibration import plots

    ce, cal = runs.get("ce", {}), runs.get("tcpt", {})
    runs_dirs = [d for variant in (ce, cal) for d in variant.values()]
    if not ce or set(ce) != set(cal) or not all((d / "predictions.npz").is_file() for d in runs_dirs):
        return False
    seeds = sorted(ce)
    try:
        series = plots.load_series([*(ce[s] for s in seeds), *(cal[s] for s in seeds)], pool=len(seeds),
                                   labels=["without --calib", "with --calib"])
    except UserError as e:
        raise SystemExit(f"update_readme: could not draw {png.name}: {e}") from None
    write_if_changed(png, plots.png_bytes(plots.plot_reliability(series, 10, title)))
    return True


def seeds_text(seeds: Sequence[int]) -> str:
    return ", ".join(map(str, seeds[:-1])) + f" and {seeds[-1]}" if len(seeds) > 1 else str(seeds[0])


def readme_block(records: Path, method: str, dataset: str, img_dir: Path) -> str:
    """The README block: the summary table and the runs' time from the records under ``records``, then the
    reliability diagrams present in ``img_dir``."""
    table = summary_table(records, method, dataset)
    count, seconds = runs_time(records, [method, "ZeroshotCLIP"], dataset)
    minutes = f"about {round(seconds / 60)} min" if seconds >= 90 else "under 2 min"   # stable to the records' rounding
    timing = (f"The {count} runs behind this table took {minutes} of training and evaluation in all (the `timings` "
              "of their run records; the sweep's own wall-clock time adds process start-up and data loading).")
    images = [(label, img_dir / f"toy_reliability_{label}.png") for label in ("novel", "base")]

    def rel(p: Path) -> str:
        p = Path(p).resolve()
        return p.relative_to(REPO).as_posix() if p.is_relative_to(REPO) else str(p)

    seeds = record_seeds(records, method, dataset)
    lines = [f"![reliability diagram, {label} classes, seeds pooled]({rel(png)})" for label, png in images
             if png.is_file()]
    if lines and seeds:
        lines.append("")
        lines.append(f"The reliability diagrams pool the test predictions of seeds {seeds_text(seeds)} of each "
                     "variant; the ECE in their legends is that of the pooled predictions, not the table's mean "
                     "over seeds.")
    return "\n".join(["```", table, "```", "", textwrap.fill(timing, 118), ""]
                     + [textwrap.fill(line, 118) for line in lines]).rstrip("\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--output", default="output", help="sweep output root")
    ap.add_argument("--data", default="./data", help="the sweeps' DATA (to check the records' data split)")
    ap.add_argument("--method", default="CoOp")
    ap.add_argument("--dataset", default="Toy")
    ap.add_argument("--readme", default=str(REPO / "README.md"))
    ap.add_argument("--img-dir", default=str(REPO / "docs" / "img"))
    ap.add_argument("--records", default=None, help="where the records are copied (default docs/results/<dataset>)")
    args = ap.parse_args(argv)
    output = Path(args.output)
    planned = planned_runs(output, args.data, args.method, args.dataset)
    check_fresh(planned)
    records = Path(args.records or REPO / "docs" / "results" / args.dataset.lower())
    changed = copy_records(planned, output, records)

    img_dir = Path(args.img_dir)
    img_dir.mkdir(parents=True, exist_ok=True)
    for subsample, label in (("new", "novel"), ("base", "base")):
        runs = variant_runs([r.out_dir for r, _ in planned], args.method, args.dataset, subsample)
        seeds = sorted(runs.get("ce", {}))
        title = (f"{args.method} on {args.dataset}, {label} classes, seeds {seeds_text(seeds)} pooled" if seeds
                 else "")
        png = img_dir / f"toy_reliability_{label}.png"
        if not plot_pooled(runs, png, title):
            print(f"update_readme: no {label} diagram drawn (the runs lack predictions.npz, or the variants' seeds "
                  f"differ); {png} is left as it was", file=sys.stderr)
    block = readme_block(records, args.method, args.dataset, img_dir)
    try:
        replace_block(Path(args.readme), BEGIN, END, block)
    except UserError as e:
        raise SystemExit(str(e)) from None
    print(block)
    print(f"README block from the {len(planned)} records under {records} ({len(changed)} record files written or "
          "removed; the others hold the same runs and were left as they are)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
