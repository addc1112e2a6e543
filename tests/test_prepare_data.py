"""tools/prepare_data.py: the check path on fake trees, the download path with gdown/urllib replaced by local
copies (nothing is downloaded)."""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import io
import json
import shutil
import sys
import tarfile
import urllib.request
from pathlib import Path

import pytest

from common.errors import UserError
from dassl.data.datasets import DATASET_REGISTRY
from datasets.testing import write_split_dataset
from tests.helpers import real_split_file

REPO = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("prepare_data", REPO / "tools" / "prepare_data.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["prepare_data"] = module
    spec.loader.exec_module(module)
    return module


pd = _load()


def gdrive_id(item) -> str:
    return item.sources[0].removeprefix("gdrive:")


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def run(capsys, *argv) -> tuple[int, str]:
    rc = pd.main(list(argv))
    captured = capsys.readouterr()
    return rc, captured.out + captured.err


def tar_gz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class _Response(io.BytesIO):
    def __init__(self, data: bytes):
        super().__init__(data)
        self.headers = {"Content-Length": str(len(data))}


@pytest.fixture
def offline(monkeypatch):
    """Replace gdown and urllib by local copies; records what was fetched."""
    import gdown

    served: dict[str, object] = {}
    fetched: list[str] = []

    def fake_gdown(url=None, output=None, quiet=False, id=None, **kw):
        fetched.append(id)
        shutil.copyfile(served[id], output)
        return output

    def fake_urlopen(request, timeout=None):
        url = getattr(request, "full_url", request)
        fetched.append(url)
        return _Response(served[url])

    monkeypatch.setattr(gdown, "download", fake_gdown)
    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    return served, fetched


# ------------------------------------------------------------------------------------------------ check
def test_check_reports_every_dataset_on_an_empty_root(tmp_path, capsys):
    rc, out = run(capsys, "--check", "--root", str(tmp_path))
    assert rc == 1 and "0 of 15 ready" in out
    rows = {}
    for line in out.splitlines():   # a row's first line (a long "what to do" wraps onto more lines)
        if line.split() and line.split()[0] in pd.BENCHMARKS:
            rows.setdefault(line.split()[0], line)
    assert set(rows) == set(pd.BENCHMARKS)  # one row per dataset
    for name in pd.BENCHMARKS:
        cls = DATASET_REGISTRY.get(name)
        assert f"missing {cls.dataset_dir}/" in rows[name]
        status = pd.check_dataset(name, tmp_path, progress=False)
        assert not status.ready and status.todo.endswith(f"python tools/prepare_data.py --dataset {name} "
                                                         f"--root {tmp_path}")
    assert "image-net.org" in pd.check_dataset("ImageNet", tmp_path).todo  # manual: the table says how
    assert list(tmp_path.iterdir()) == []  # --check writes nothing


def small_canonical(monkeypatch, name: str, n_classes: int = 3, per_class=(2, 1, 1)):
    """A tiny synthetic split that prepare_data treats as canonical (its hashes and counts are patched in),
    so the full check/download paths run on a few files."""
    from datasets.common import canonical_sha256
    from datasets.testing import synthetic_split

    cls = DATASET_REGISTRY.get(name)
    split = synthetic_split(n_classes, per_class)
    blob = json.dumps(split.to_json(), indent=4).encode()
    accepted, content = frozenset({hashlib.sha256(blob).hexdigest()}), canonical_sha256(split.to_json())
    monkeypatch.setitem(pd.KNOWN_FILES, cls.split_file, (accepted, content))
    plan = pd.PLANS[name]
    monkeypatch.setitem(pd.PLANS, name, dataclasses.replace(plan, fetches=tuple(
        dataclasses.replace(f, accepted=accepted, content_sha256=content) if f.dest == cls.split_file else f
        for f in plan.fetches)))
    monkeypatch.setattr(cls, "expected", (*split.counts(), n_classes))
    return cls, split, blob


def test_check_ready_on_a_complete_fake_tree(tmp_path, capsys, monkeypatch):
    cls, split, blob = small_canonical(monkeypatch, "DescribableTextures")
    write_split_dataset(tmp_path, cls, split)
    (tmp_path / "dtd" / cls.split_file).write_bytes(blob)
    rc, out = run(capsys, "--check", "--dataset", "dtd", "--root", str(tmp_path))
    assert rc == 0 and "ready (12 images, 3 classes)" in out and "1 of 1 ready" in out
    (tmp_path / "dtd" / "images" / split.test[2].impath).unlink()
    status = pd.check_dataset("DescribableTextures", tmp_path, progress=False)
    assert not status.ready and status.status == f"missing 1 of 12 images (e.g. dtd/images/{split.test[2].impath})"
    assert status.todo == f"python tools/prepare_data.py --dataset DescribableTextures --root {tmp_path}"


def test_split_files_are_verified_by_hash_or_content(tmp_path):
    original = real_split_file("split_zhou_Caltech101.json").read_bytes()
    path = tmp_path / "split_zhou_Caltech101.json"
    path.write_bytes(original)
    assert pd.verify_known_file(path) is None
    path.write_bytes(original.rstrip(b"\n"))  # the variant without the trailing newline
    assert pd.verify_known_file(path) is None
    path.write_bytes(original.replace(b"    ", b"  "))  # re-indented: same parsed content
    assert pd.verify_known_file(path) is None
    path.write_bytes(original.replace(b'"face"', b'"faces"', 1))
    assert "differs from the canonical file" in pd.verify_known_file(path)


def test_check_reports_a_non_canonical_split_and_wrong_counts(tmp_path):
    from datasets.testing import synthetic_split

    write_split_dataset(tmp_path, DATASET_REGISTRY.get("EuroSAT"), synthetic_split(10, (2, 1, 1)), images="none")
    write_split_dataset(tmp_path, DATASET_REGISTRY.get("Food101"), synthetic_split(3, (2, 1, 1)), images="none")
    eurosat = pd.check_dataset("EuroSAT", tmp_path, progress=False)
    assert not eurosat.ready and eurosat.status.startswith("split_zhou_EuroSAT.json differs from the canonical file")
    assert eurosat.todo.startswith("delete the file(s) and run: python tools/prepare_data.py --dataset EuroSAT")
    food = pd.check_dataset("Food101", tmp_path, progress=False)  # no known hash: counts are checked
    assert food.status.startswith("train/val/test/classes = 6/3/3/3 (expected 50,500/20,200/30,300/101)")
    assert "missing 12 of 12 images" in food.status
    (tmp_path / "dtd").mkdir()
    dtd = pd.check_dataset("DescribableTextures", tmp_path, progress=False)
    assert dtd.status == "DescribableTextures: split file dtd/split_zhou_DescribableTextures.json not found (the " \
                         "canonical CoOp split is required so results are comparable)."


def test_names_are_case_insensitive_registry_config_or_folder_names(capsys):
    assert pd.resolve_names(["dtd", "DescribableTextures", "OXFORD_PETS", "food-101", "Food101", "imagenet_r"]) == \
        ["DescribableTextures", "OxfordPets", "Food101", "ImageNetR"]
    with pytest.raises(UserError, match='Unknown dataset "oxfordpet".*Did you mean "OxfordPets"'):
        pd.resolve_names(["oxfordpet"])
    rc, out = run(capsys, "--dataset", "nope", "--root", "/tmp")
    assert rc == 2 and 'Unknown dataset "nope"' in out
    rc, out = run(capsys, "--root", "/tmp")  # downloading needs explicit names
    assert rc == 2 and "--all" in out


# --------------------------------------------------------------------------------------------- download
def test_download_split_and_archive_then_ready(tmp_path, capsys, offline, monkeypatch):
    served, fetched = offline
    cls, split, blob = small_canonical(monkeypatch, "DescribableTextures")
    (tmp_path / "served_split.json").write_bytes(blob)
    archive = tar_gz({f"dtd/images/{it.impath}": b"" for part in (split.train, split.val, split.test)
                      for it in part} | {"dtd/labels/train1.txt": b"x"})
    plan = pd.PLANS["DescribableTextures"]
    served[gdrive_id(plan.fetches[0])] = tmp_path / "served_split.json"
    served[plan.fetches[1].sources[0]] = archive
    md5 = hashlib.md5(archive).hexdigest()  # the real archive's md5 would not match the fake one
    monkeypatch.setitem(pd.PLANS, "DescribableTextures",
                        pd.Plan((plan.fetches[0], dataclasses.replace(plan.fetches[1], md5=md5))))
    rc, out = run(capsys, "--dataset", "dtd", "--root", str(tmp_path / "data"), "--yes")
    assert rc == 0 and "ready (12 images, 3 classes)" in out, out
    assert fetched == [gdrive_id(plan.fetches[0]), plan.fetches[1].sources[0]]
    data = tmp_path / "data" / "dtd"
    assert (data / "labels" / "train1.txt").is_file()  # the archive's "dtd/" is stripped into the dataset folder
    assert sorted(p.name for p in data.iterdir()) == ["images", "labels", cls.split_file]
    fetched.clear()
    rc, out = run(capsys, "--dataset", "dtd", "--root", str(tmp_path / "data"), "--yes")
    assert rc == 0 and fetched == []  # nothing left to fetch


def fgvc_archive(n_per_split: int = 2) -> tuple[bytes, tuple[int, int, int, int]]:
    members = {"fgvc-aircraft-2013b/data/variants.txt": b"A300B4\nF/A-18\n",
               "fgvc-aircraft-2013b/README.html": b"outside data/"}
    image_id = 100
    for key in ("train", "val", "test"):
        lines = []
        for variant in ("A300B4", "F/A-18"):
            for _ in range(n_per_split):
                lines.append(f"{image_id:07d} {variant}\n")
                members[f"fgvc-aircraft-2013b/data/images/{image_id:07d}.jpg"] = b""
                image_id += 1
        members[f"fgvc-aircraft-2013b/data/images_variant_{key}.txt"] = "".join(lines).encode()
    return tar_gz(members), (2 * n_per_split, 2 * n_per_split, 2 * n_per_split, 2)


def test_download_archive_with_a_nested_data_folder(tmp_path, capsys, offline, monkeypatch):
    served, fetched = offline
    archive, counts = fgvc_archive()
    item = pd.PLANS["FGVCAircraft"].fetches[0]
    served[item.sources[0]] = archive
    monkeypatch.setitem(pd.PLANS, "FGVCAircraft", pd.Plan((dataclasses.replace(item, md5=md5(archive)),)))
    monkeypatch.setattr(DATASET_REGISTRY.get("FGVCAircraft"), "expected", counts)
    rc, out = run(capsys, "--dataset", "FGVCAircraft", "--root", str(tmp_path), "--yes")
    assert rc == 0 and "ready (12 images, 2 classes)" in out
    data = tmp_path / "fgvc_aircraft"
    assert (data / "variants.txt").is_file() and not (data / "README.html").exists()
    assert not list(data.glob("*.tar.gz")) and not list(data.glob(".extract-*"))


def test_corrupt_download_is_rejected(tmp_path, capsys, offline, monkeypatch):
    served, _ = offline
    plan = pd.PLANS["OxfordPets"]
    split = tmp_path / "fake_split.json"
    split.write_text('{"train": [], "val": [], "test": []}')
    served[gdrive_id(plan.fetches[0])] = split
    served[plan.fetches[1].sources[0]] = tar_gz({"images/a.jpg": b""})  # md5 differs from the real archive's
    served[plan.fetches[2].sources[0]] = tar_gz({"annotations/x.txt": b""})
    rc, out = run(capsys, "--dataset", "oxford_pets", "--root", str(tmp_path), "--yes")
    assert rc == 1
    assert "split_zhou_OxfordPets.json: no source gave the file" in out    # wrong split: removed
    assert "?id=1501r8Ber4nNKvmlFVQZ8SeUHTcdTTEqs: differs from the canonical file" in out
    assert "images.tar.gz: no source gave the file with md5 5c4f3ee8" in out
    assert "https://www.robots.ox.ac.uk/~vgg/data/pets/data/images.tar.gz: md5 " in out and "By hand:" in out
    left = sorted(p.name for p in (tmp_path / "oxford_pets").iterdir())
    assert left == []  # nothing half-downloaded stays behind


def test_non_interactive_without_yes_downloads_nothing(tmp_path, capsys, offline, monkeypatch):
    _, fetched = offline
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    rc, out = run(capsys, "--dataset", "eurosat", "--root", str(tmp_path))
    assert rc == 1 and fetched == [] and "pass --yes" in out


def test_splits_only_fetches_the_split_files_the_tests_read(tmp_path, capsys, offline, monkeypatch):
    """Issue 23 item 3: the command a skipped test names gets the split file (no images), and the tests find it in
    that data root through $CALIB_SPLITS_DIR."""
    from tests.helpers import find_split_file

    served, fetched = offline
    cls, split, blob = small_canonical(monkeypatch, "DescribableTextures")
    (tmp_path / "served_split.json").write_bytes(blob)
    served[gdrive_id(pd.PLANS["DescribableTextures"].fetches[0])] = tmp_path / "served_split.json"
    root = tmp_path / "splits"
    rc, out = run(capsys, "--dataset", "dtd", "--dataset", "FGVCAircraft", "--root", str(root), "--splits-only",
                  "--yes")
    flat = " ".join(out.split())
    assert rc == 0 and "DescribableTextures split files ready (split_zhou_DescribableTextures.json)" in flat, out
    assert "FGVCAircraft no split file to fetch" in flat          # FGVC-Aircraft's split is in its archive
    assert fetched == [gdrive_id(pd.PLANS["DescribableTextures"].fetches[0])]   # the split file, no archive
    monkeypatch.setenv("CALIB_SPLITS_DIR", str(root))
    assert find_split_file(cls.split_file) == root / "dtd" / cls.split_file
    rc, out = run(capsys, "--dataset", "food101", "--root", str(root), "--splits-only", "--check")
    assert rc == 1 and "split_zhou_Food101.json has no published checksum" in " ".join(out.split())
