#!/usr/bin/env python
"""Download, verify and report the benchmark datasets under one data root.

    python tools/prepare_data.py --dataset OxfordPets --dataset dtd --root $DATA   # fetch what may be fetched
    python tools/prepare_data.py --all --root $DATA --yes                           # everything, no questions
    python tools/prepare_data.py --check --root $DATA                               # only check (all datasets)

Per dataset: download what may be downloaded (the canonical split files from Google Drive with gdown, public
image archives by URL), extract, verify every split file (sha256 where known, else structure and counts),
verify that every image the split names exists, and print a table: dataset | status | what to do. Datasets
whose images cannot be downloaded here (ImageNet, Stanford Cars, ImageNet-Sketch) get instructions.
Exit status: 0 when every selected dataset is ready, 1 otherwise, 2 on a usage error.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tarfile
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import datasets  # noqa: E402,F401  (registers the dataset classes)
from common.errors import UserError  # noqa: E402
from common.suggest import did_you_mean  # noqa: E402
from dassl.data.datasets import DATASET_REGISTRY  # noqa: E402
from datasets.common import canonical_sha256, find_missing, split_problems  # noqa: E402

BENCHMARKS = (
    "ImageNet", "Caltech101", "OxfordPets", "StanfordCars", "OxfordFlowers", "Food101", "FGVCAircraft", "SUN397",
    "DescribableTextures", "EuroSAT", "UCF101", "ImageNetV2", "ImageNetSketch", "ImageNetA", "ImageNetR",
)

# Canonical files: accepted file sha256s (the Caltech101 file circulates with and without a trailing newline)
# and the sha256 of their parsed content (datasets.common.canonical_sha256), which any re-formatting keeps.
KNOWN_FILES: dict[str, tuple[frozenset[str], str]] = {
    "split_zhou_Caltech101.json": (frozenset({
        "43ab95e88d2f6a32a11c4f8dc9f822c534e822f3dbbde2e248af5432d771a6fc",
        "52ce83205ff8ff8a1a18119aad6376120ae35c36e783a984bc560cbf10e73fa5"}),
        "266b016abdaeeb65436a3273abb64b9c02633d8d97988b66592f0fd28b2659a4"),
    "split_zhou_OxfordPets.json": (frozenset({"d7f3ffe65b3919f95132e51422894ae18686b83c331fd8c0adcdc3dc2de6301e"}),
                                   "175852640a3b1e8d7441c6224786fd018b4d6bcdd60f4495edca8a185631729d"),
    "split_zhou_StanfordCars.json": (frozenset({"40acee7aa65c8e4727a32d90e884b7c3f8960b523422317e163f7af65432959d"}),
                                     "bffbe347fbf93ad532133ff506d15606ac007812cfac9933551a5877f5263dd3"),
    "split_zhou_OxfordFlowers.json": (frozenset({"2f50c42fc1a17ca13c271cb4269b1347bdb43d2be672e34f74a4e4cbfbcca794"}),
                                      "9bf82a401539357a181e5f0b836ae7fcd5baa38b55e264a2059df8e86adc898a"),
    "split_zhou_DescribableTextures.json": (
        frozenset({"f26ebeccd2b58e68d70f07a0dc39fe49bf7b69024bac34396b954dfd87969c38"}),
        "0d04a9bb08938c9d435fc3c6b5030906334f6d8ccf4d80f8319e5d7f4fbdd4ba"),
    "split_zhou_EuroSAT.json": (frozenset({"541503a77d0b26b735d85ec7a3e672804fe0aa466c2e5f07da772cc6c0af8ad2"}),
                                "b9db23fedd13a2d3374107fe494f4fa814e7837c771660c850aab95ec391ad1a"),
    "split_zhou_UCF101.json": (frozenset({"d78cb834f7c5792ceaff2c5ee2d7c76a9e4086e48a3a6b01232989d29cbefdd8"}),
                               "29a5dc239824943e473244fc18abf1b43734213fc748cffa25ccd773fbe7271a"),
    "cat_to_name.json": (frozenset({"0469f1ad7fe0072d98155c49aa58649d998edbbe3326229003aa5f7228525236"}),
                         "7bc4809e32737f46c37917667cd62dc25bc634c8feb6f2d693199549fa7fd69b"),
}

IMAGENET_CLASSNAMES_ID = "1-61f_ol79pViBFDG_IDlUQSwoLcn2XXF"


@dataclass(frozen=True)
class Fetch:
    """One download. ``dest``: file name inside the dataset folder. ``done``: path (relative to the dataset
    folder) whose presence means it is not needed. Archives are extracted into the dataset folder; ``strip``
    names a folder inside the archive whose contents go there instead; ``then`` post-processes."""

    dest: str
    gdrive_id: str | None = None
    url: str | None = None
    md5: str | None = None
    done: str = ""
    strip: str = ""
    then: Callable[[Path], None] | None = None

    @property
    def is_archive(self) -> bool:
        return self.dest.endswith((".tar", ".tar.gz", ".tgz", ".zip"))

    @property
    def source(self) -> str:
        return f"https://drive.google.com/uc?id={self.gdrive_id}" if self.gdrive_id else str(self.url)


@dataclass(frozen=True)
class Plan:
    fetches: tuple[Fetch, ...] = ()
    manual: str = ""  # what the user must do by hand (images that cannot be downloaded here)
    links: tuple[str, ...] = field(default=())


def _caltech_inner(dataset_path: Path) -> None:
    """caltech-101.zip holds 101_ObjectCategories.tar.gz: extract it too."""
    inner = dataset_path / "101_ObjectCategories.tar.gz"
    if inner.is_file():
        extract(inner, dataset_path)
        inner.unlink()


def _eurosat_rename(dataset_path: Path) -> None:
    """Newer EuroSAT archives unpack as EuroSAT_RGB/; the canonical layout is 2750/."""
    rgb, canonical = dataset_path / "EuroSAT_RGB", dataset_path / "2750"
    if rgb.is_dir() and not canonical.exists():
        rgb.rename(canonical)


def _split(name: str, gdrive_id: str) -> Fetch:
    return Fetch(dest=name, gdrive_id=gdrive_id, done=name)


def _classnames() -> Fetch:
    return Fetch(dest="classnames.txt", gdrive_id=IMAGENET_CLASSNAMES_ID, done="classnames.txt")


VGG = "https://www.robots.ox.ac.uk/~vgg/data"
PLANS: dict[str, Plan] = {
    "ImageNet": Plan(
        (_classnames(),),
        manual="ImageNet images need a licence: download ILSVRC2012 train and val from https://image-net.org, "
               "extract them as imagenet/images/train/<wnid>/ and imagenet/images/val/<wnid>/ (sort val into "
               "wnid folders, e.g. with valprep.sh)"),
    "Caltech101": Plan((
        _split("split_zhou_Caltech101.json", "1hyarUivQE36mY6jSomru6Fjd-JzwcCzN"),
        Fetch("caltech-101.zip", url="https://data.caltech.edu/records/mzrjq-6wc02/files/caltech-101.zip",
              md5="3138e1922a9193bfa496528edbbc45d0", done="101_ObjectCategories", strip="caltech-101",
              then=_caltech_inner),
    )),
    "OxfordPets": Plan((
        _split("split_zhou_OxfordPets.json", "1501r8Ber4nNKvmlFVQZ8SeUHTcdTTEqs"),
        Fetch("images.tar.gz", url=f"{VGG}/pets/data/images.tar.gz", md5="5c4f3ee8e5d25df40f4fd59a7f44e54c",
              done="images"),
        Fetch("annotations.tar.gz", url=f"{VGG}/pets/data/annotations.tar.gz",
              md5="95a8c909bbe2e81eed6a22bccdf3f68f", done="annotations"),
    )),
    "StanfordCars": Plan(
        (_split("split_zhou_StanfordCars.json", "1ObCFbaAgVu0I-k_Au-gIUcefirdAuizT"),),
        manual="Stanford Cars images: the original host is gone; put cars_train/ and cars_test/ from your own copy "
               "(e.g. a Kaggle mirror of the dataset) into stanford_cars/"),
    "OxfordFlowers": Plan((
        _split("split_zhou_OxfordFlowers.json", "1Pp0sRXzZFZq15zVOzKjKBu4A9i01nozT"),
        Fetch("cat_to_name.json", gdrive_id="1AkcxCXeK_RCGCEC_GvmWxjcjaNhu-at0", done="cat_to_name.json"),
        Fetch("102flowers.tgz", url=f"{VGG}/flowers/102/102flowers.tgz", md5="52808999861908f626f3c1f4e79d11fa",
              done="jpg"),
        Fetch("imagelabels.mat", url=f"{VGG}/flowers/102/imagelabels.mat", md5="e0620be6f572b9609742df49c70aed4d",
              done="imagelabels.mat"),
    )),
    "Food101": Plan((
        _split("split_zhou_Food101.json", "1QK0tGi096I0Ba6kggatX1ee6dJFIcEJl"),
        Fetch("food-101.tar.gz", url="http://data.vision.ee.ethz.ch/cvl/food-101.tar.gz",
              md5="85eeb15f3717b99a5da872d97d918f87", done="images", strip="food-101"),
    )),
    "FGVCAircraft": Plan((
        Fetch("fgvc-aircraft-2013b.tar.gz", url=f"{VGG}/fgvc-aircraft/archives/fgvc-aircraft-2013b.tar.gz",
              done="images_variant_test.txt", strip="fgvc-aircraft-2013b/data"),
    )),
    "SUN397": Plan((
        _split("split_zhou_SUN397.json", "1y2RD81BYuiyvebdN-JymPfyWYcd8_MUq"),
        Fetch("SUN397.tar.gz", url="http://vision.princeton.edu/projects/2010/SUN/SUN397.tar.gz",
              md5="8ca2778205c41d23104230ba66911c7a", done="SUN397"),
    )),
    "DescribableTextures": Plan((
        _split("split_zhou_DescribableTextures.json", "1u3_QfB467jqHgNXC00UIzbLZRQCg2S7x"),
        Fetch("dtd-r1.0.1.tar.gz", url=f"{VGG}/dtd/download/dtd-r1.0.1.tar.gz", md5="fff73e5086ae6bdbea199a49dfb8a4c1",
              done="images", strip="dtd"),
    )),
    "EuroSAT": Plan((
        _split("split_zhou_EuroSAT.json", "1Ip7yaCWFi0eaOFUGga0lUdVi_DDQth1o"),
        Fetch("EuroSAT.zip", url="https://huggingface.co/datasets/torchgeo/eurosat/resolve/"
              "c877bcd43f099cd0196738f714544e355477f3fd/EuroSAT.zip", md5="c8fa014336c82ac7804f0398fcb19387",
              done="2750", then=_eurosat_rename),
    )),
    "UCF101": Plan((
        _split("split_zhou_UCF101.json", "1I0S0q91hJfsV9Gf4xDIjgDq4AqBNJb1y"),
        Fetch("UCF-101-midframes.zip", gdrive_id="10Jqome3vtUA2keJkNanAiFpgbyC9Hc2O", done="UCF-101-midframes"),
    )),
    "ImageNetV2": Plan((
        _classnames(),
        Fetch("imagenetv2-matched-frequency.tar.gz", url="https://huggingface.co/datasets/vaishaal/ImageNetV2/"
              "resolve/main/imagenetv2-matched-frequency.tar.gz", done="imagenetv2-matched-frequency-format-val"),
    )),
    "ImageNetSketch": Plan(
        (_classnames(),),
        manual="ImageNet-Sketch images: get ImageNet-Sketch.zip (https://github.com/HaohanWang/ImageNet-Sketch) "
               "and extract it so that imagenet-sketch/images/<wnid>/ (or sketch/<wnid>/) holds the images"),
    "ImageNetA": Plan((
        _classnames(),
        Fetch("imagenet-a.tar", url="https://people.eecs.berkeley.edu/~hendrycks/imagenet-a.tar", done="imagenet-a"),
    )),
    "ImageNetR": Plan((
        _classnames(),
        Fetch("imagenet-r.tar", url="https://people.eecs.berkeley.edu/~hendrycks/imagenet-r.tar", done="imagenet-r"),
    )),
}


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


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_known_file(path: Path) -> str | None:
    """None when ``path`` is the canonical file (same bytes, or same parsed content), else what differs."""
    file_shas, content_sha = KNOWN_FILES[path.name]
    digest = sha256_file(path)
    if digest in file_shas:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            content = canonical_sha256(json.load(f))
    except (OSError, ValueError) as exc:
        return f"{path.name} is not valid JSON ({exc})"
    if content == content_sha:
        return None
    return f"{path.name} differs from the canonical file (sha256 {digest[:12]}, expected {sorted(file_shas)[0][:12]})"


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
def download_gdrive(file_id: str, dest: Path) -> None:
    import gdown

    result = gdown.download(id=file_id, output=str(dest), quiet=False)
    if not result or not dest.is_file():
        raise UserError(f"Google Drive download of {dest.name} (id {file_id}) failed; Drive may be rate-limiting: "
                        f"try again later or download https://drive.google.com/uc?id={file_id} by hand to {dest}.")


def download_url(url: str, dest: Path) -> None:
    from tqdm import tqdm

    request = urllib.request.Request(url, headers={"User-Agent": "calib-prompt/prepare_data"})
    with urllib.request.urlopen(request, timeout=60) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        with open(dest, "wb") as f, tqdm(total=total, unit="B", unit_scale=True, desc=dest.name) as bar:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                f.write(chunk)
                bar.update(len(chunk))


def md5_file(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def extract(archive: Path, target: Path, strip: str = "") -> None:
    """Extract ``archive`` into ``target``; with ``strip``, the contents of that archive folder land in target."""
    print(f"Extracting {archive.name} ...")
    staging = target / f".extract-{archive.name}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        if archive.name.endswith(".zip"):
            with zipfile.ZipFile(archive) as z:
                z.extractall(staging)
        else:
            with tarfile.open(archive) as t:
                t.extractall(staging, filter="data")
        top = staging / strip if strip else staging
        if not top.is_dir():
            raise UserError(f"{archive} has no folder {strip}/; the archive changed, extract it by hand.")
        for entry in top.iterdir():
            dest = target / entry.name
            if dest.exists():
                shutil.rmtree(dest) if dest.is_dir() else dest.unlink()
            shutil.move(str(entry), str(dest))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def fetch(item: Fetch, dataset_path: Path) -> None:
    dest = dataset_path / item.dest
    part = dataset_path / f"{item.dest}.part"
    print(f"Downloading {item.dest} from {item.source}")
    if item.gdrive_id:
        download_gdrive(item.gdrive_id, part)
    else:
        download_url(str(item.url), part)
    got = md5_file(part) if item.md5 else None
    if got != item.md5:
        part.unlink()
        raise UserError(f"{item.dest} from {item.source} has md5 {got}, expected {item.md5}: the download is "
                        "corrupt or the file changed upstream. Run again, or fetch it by hand.")
    os.replace(part, dest)
    if item.dest in KNOWN_FILES:
        diff = verify_known_file(dest)
        if diff:
            dest.unlink()
            raise UserError(f"Downloaded {diff}; it was removed. Report this, or place the canonical file by hand.")
    if item.is_archive:
        extract(dest, dataset_path, item.strip)
        dest.unlink()
    if item.then is not None:
        item.then(dataset_path)


def confirm(question: str, assume_yes: bool) -> bool:
    if assume_yes:
        return True
    if not sys.stdin.isatty():
        print(f"{question} -> no (non-interactive; pass --yes to download)")
        return False
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


def prepare(name: str, root: Path, assume_yes: bool) -> None:
    """Download and extract what is missing for ``name`` (errors are reported, not raised)."""
    cls = dataset_class(name)
    dataset_path = root / cls.dataset_dir
    todo = [f for f in PLANS[name].fetches if not (dataset_path / f.done).exists()]
    if not todo:
        return
    listing = "\n".join(f"  {f.dest}  <-  {f.source}" for f in todo)
    if not confirm(f"{name}: download into {dataset_path}:\n{listing}\nProceed?", assume_yes):
        return
    dataset_path.mkdir(parents=True, exist_ok=True)
    for item in todo:
        try:
            fetch(item, dataset_path)
        except Exception as exc:  # noqa: BLE001 - network/archive errors vary; report and go on
            print(f"{name}: {item.dest}: {exc}", file=sys.stderr)
            part = dataset_path / f"{item.dest}.part"
            if part.exists():
                part.unlink()


# ------------------------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", action="append", default=[], metavar="NAME",
                        help="dataset to prepare (repeatable; registry or config name, any case)")
    parser.add_argument("--all", action="store_true", help="all benchmark datasets")
    parser.add_argument("--root", required=True, help="data root that holds the dataset folders (DATASET.ROOT)")
    parser.add_argument("--check", action="store_true", help="only check; download nothing (default: all datasets)")
    parser.add_argument("--yes", "-y", action="store_true", help="download without asking (non-interactive)")
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
            prepare(name, root, args.yes)
        statuses.append(check_dataset(name, root))
    from tabulate import tabulate

    print(f"\nData root: {root}")
    rows = [(s.dataset, s.status, s.todo) for s in statuses]
    print(tabulate(rows, headers=["dataset", "status", "what to do"], maxcolwidths=[None, 40, 80]))
    n_ready = sum(s.ready for s in statuses)
    print(f"\n{n_ready} of {len(statuses)} ready")
    return 0 if n_ready == len(statuses) else 1


if __name__ == "__main__":
    sys.exit(main())
