#!/usr/bin/env python
"""Download, verify and report the benchmark datasets under one data root.

    python tools/prepare_data.py --dataset OxfordPets --dataset dtd --root $DATA   # fetch what may be fetched
    python tools/prepare_data.py --all --root $DATA --yes                           # everything, no questions
    python tools/prepare_data.py --check --root $DATA                               # only check (all datasets)

    python tools/prepare_data.py --all --root $SPLITS --splits-only --yes           # split files only (tests)

Per dataset: download what may be downloaded (the canonical split files from Google Drive with gdown, public
image archives by URL; each file from its sources in order, each verified against the file's published checksum,
datasets/sources.py), extract, verify every split file (sha256 where known, else structure and counts), verify
that every image the split names exists, and print a table: dataset | status | what to do. Files that cannot be
downloaded and verified here (ImageNet and Stanford Cars images, ImageNet-Sketch, files with no published
checksum) get instructions; a file placed by hand at its path is verified and used like a download.
Exit status: 0 when every selected dataset is ready, 1 otherwise, 2 on a usage error.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import datasets  # noqa: E402,F401  (registers the dataset classes)
from common.errors import UserError  # noqa: E402
from common.suggest import did_you_mean  # noqa: E402
from dassl.data.datasets import DATASET_REGISTRY  # noqa: E402
from datasets.common import find_missing, split_problems  # noqa: E402
from datasets.download import Fetch, fetch, source_url, verify  # noqa: E402
from datasets.sources import KNOWN_FILES, PLANS, Plan  # noqa: E402,F401  (Plan: for callers building plans)

BENCHMARKS = (
    "ImageNet", "Caltech101", "OxfordPets", "StanfordCars", "OxfordFlowers", "Food101", "FGVCAircraft", "SUN397",
    "DescribableTextures", "EuroSAT", "UCF101", "ImageNetV2", "ImageNetSketch", "ImageNetA", "ImageNetR",
)

# ---------------------------------------------------------------------------------------------- names
def dataset_class(name: str):
    return DATASET_REGISTRY.get(name)


def aliases() -> dict[str, str]:
    """Accepted spellings -> registry name: registry names, config names (configs/datasets/<name>.yaml) and
    folder names, compared case-insensitively with '-' read as '_'."""
    out = {}
    for name in BENCHMARKS:
        cls = dataset_class(name)
        for alias in (name, cls.__module__.rsplit(".", 1)[-1], cls.dataset_dir):
            out[_norm(alias)] = name
    return out


def _norm(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def resolve_names(requested: list[str]) -> list[str]:
    table = aliases()
    out = []
    for raw in requested:
        name = table.get(_norm(raw))
        if name is None:
            hint = did_you_mean(_norm(raw), table, shown=table)
            raise UserError(f'Unknown dataset "{raw}".{hint} Known: {", ".join(BENCHMARKS)} (or their config names).')
        if name not in out:
            out.append(name)
    return out


# ------------------------------------------------------------------------------------------- checking
@dataclass
class Status:
    dataset: str
    ready: bool
    status: str
    todo: str


def verify_known_file(path: Path) -> str | None:
    """None when ``path`` is the canonical file (same bytes, or same parsed content), else what differs."""
    accepted, content = KNOWN_FILES[path.name]
    problem = verify(path, Fetch(path.name, (str(path),), accepted=accepted, content_sha256=content))
    return None if problem is None else f"{path.name} {problem}"


def command(name: str, root: Path) -> str:
    return f"python tools/prepare_data.py --dataset {name} --root {root}"


def check_dataset(name: str, root: Path, progress: bool = True) -> Status:
    """Everything a run of ``name`` needs: folder, split files (hash / counts) and every image they name."""
    cls = dataset_class(name)
    plan = PLANS[name]
    fix = command(name, root)
    if plan.manual:
        fix = f"{plan.manual}; then run: {fix}"
    dataset_path = root / cls.dataset_dir
    if not dataset_path.is_dir():
        return Status(name, False, f"missing {cls.dataset_dir}/", fix)
    problems = []
    for fname in KNOWN_FILES:
        if (dataset_path / fname).is_file() and any(f.dest == fname for f in plan.fetches):
            diff = verify_known_file(dataset_path / fname)
            if diff:
                problems.append(diff)
    if problems:
        return Status(name, False, "; ".join(problems), f"delete the file(s) and run: {command(name, root)}")
    try:
        source = cls.read_source(dataset_path)
        _, image_path = cls.image_folder(dataset_path)
    except UserError as exc:
        return Status(name, False, _short(str(exc), dataset_path), fix)
    problems = split_problems(source, cls.expected)
    items = list(dict.fromkeys(it for part in (source.train, source.val, source.test) for it in part))
    paths = [os.path.join(str(image_path), it.impath) for it in items]
    missing = find_missing(paths, progress=f"{name}: checking images" if progress else None)
    if missing:
        problems.append(f"missing {len(missing):,} of {len(paths):,} images (e.g. {os.path.relpath(missing[0], root)})")
    if problems:
        return Status(name, False, "; ".join(problems), fix)
    return Status(name, True, f"ready ({len(paths):,} images, {len(source.classnames())} classes)", "")


def _short(message: str, dataset_path: Path) -> str:
    """First line of an error, with paths shown relative to the dataset folder's parent."""
    first = message.splitlines()[0]
    return first.replace(str(dataset_path.parent) + os.sep, "")


# ------------------------------------------------------------------------------------------ downloading
def confirm(question: str, assume_yes: bool) -> bool:
    if assume_yes:
        return True
    if not sys.stdin.isatty():
        print(f"{question} -> no (non-interactive; pass --yes to download)")
        return False
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


def prepare(name: str, root: Path, assume_yes: bool, splits_only: bool = False) -> None:
    """Download and extract what is missing for ``name`` (errors are reported, not raised): every file from its
    sources in order, each verified against the file's checksum (datasets/download.py)."""
    cls = dataset_class(name)
    dataset_path = root / cls.dataset_dir
    todo = [f for f in PLANS[name].fetches if not (dataset_path / f.done).exists()
            and (not splits_only or is_split(f))]
    if not todo:
        return
    listing = "\n".join(f"  {f.dest}  <-  {' or '.join(map(source_url, f.sources))}" for f in todo)
    if not confirm(f"{name}: download into {dataset_path}:\n{listing}\nProceed?", assume_yes):
        return
    dataset_path.mkdir(parents=True, exist_ok=True)
    for item in todo:
        try:
            fetch(item, dataset_path)
        except UserError as exc:  # DownloadError: every source and its error, and the manual route
            print(f"{name}: {exc}", file=sys.stderr)
        except Exception as exc:  # noqa: BLE001 - archive and disk errors vary; report and go on
            print(f"{name}: {item.dest}: {type(exc).__name__}: {exc}", file=sys.stderr)


def is_split(item: Fetch) -> bool:
    """A split or class-name file (what the tests' CALIB_SPLITS_DIR needs), not an image archive."""
    return item.dest.endswith(".json")


def check_splits(name: str, root: Path) -> Status:
    """--splits-only: the dataset's canonical split files are there and verified (images are not looked at)."""
    plan, folder = PLANS[name], dataset_class(name).dataset_dir
    files = [f for f in plan.fetches if is_split(f)]
    if not files:
        if "split_zhou_" in plan.manual:
            return Status(name, False, "split file: by hand", plan.manual)
        return Status(name, True, "no split file to fetch (the split comes with the images)", "")
    problems = [f"missing {folder}/{f.dest}" if not (root / folder / f.dest).is_file()
                else verify_known_file(root / folder / f.dest) for f in files]
    problems = [p for p in problems if p]
    if problems:
        return Status(name, False, "; ".join(problems), command(name, root) + " --splits-only")
    return Status(name, True, f"split files ready ({', '.join(f.dest for f in files)})", "")


# ------------------------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", action="append", default=[], metavar="NAME",
                        help="dataset to prepare (repeatable; registry or config name, any case)")
    parser.add_argument("--all", action="store_true", help="all benchmark datasets")
    parser.add_argument("--root", required=True, help="data root that holds the dataset folders (DATASET.ROOT)")
    parser.add_argument("--check", action="store_true", help="only check; download nothing (default: all datasets)")
    parser.add_argument("--yes", "-y", action="store_true", help="download without asking (non-interactive)")
    parser.add_argument("--splits-only", action="store_true",
                        help="only the canonical split files (about 9 MB in all, no images); the tests read them from "
                             "$CALIB_SPLITS_DIR=ROOT (README, Install and test)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.all or (args.check and not args.dataset):
            names = list(BENCHMARKS)
        elif args.dataset:
            names = resolve_names(args.dataset)
        else:
            raise UserError("Name the datasets: --dataset NAME (repeatable) or --all.")
    except UserError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    root = Path(os.path.abspath(os.path.expanduser(args.root)))
    statuses = []
    for name in names:
        if not args.check:
            prepare(name, root, args.yes, args.splits_only)
        statuses.append(check_splits(name, root) if args.splits_only else check_dataset(name, root))
    from tabulate import tabulate

    print(f"\nData root: {root}")
    rows = [(s.dataset, s.status, s.todo) for s in statuses]
    print(tabulate(rows, headers=["dataset", "status", "what to do"], maxcolwidths=[None, 40, 80]))
    n_ready = sum(s.ready for s in statuses)
    print(f"\n{n_ready} of {len(statuses)} ready")
    return 0 if n_ready == len(statuses) else 1


if __name__ == "__main__":
    sys.exit(main())
