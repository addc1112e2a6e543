"""ImageNet and its test-only variants on small synthetic trees in the real layouts."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from common.errors import UserError
from dassl.data.datasets import build_dataset
from datasets import imagenet as imagenet_module
from datasets.testing import make_cfg, touch_files


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


def build(root, name="ImageNet", seed=1, **kw):
    random.seed(seed)
    return build_dataset(make_cfg(root, name, seed=seed, **kw))


def imagenet_tree(root: Path, wnids, n_train=3, n_val=2, names=True) -> None:
    images = root / "imagenet" / "images"
    touch_files(images, [f"train/{w}/{w}_{i}.JPEG" for w in wnids for i in range(n_train)])
    touch_files(images, [f"val/{w}/ILSVRC2012_val_{w}_{i}.JPEG" for w in wnids for i in range(n_val)])
    if names:
        write_classnames(root / "imagenet" / "classnames.txt", wnids)


def write_classnames(path: Path, wnids) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{w} name of {w}\n" for w in reversed(list(wnids))))  # file order is irrelevant


WNIDS = ["n02000000", "n01000000", "n03000000", "n01500000"]


def test_imagenet_labels_names_counts_and_val_is_test(tmp_path):
    imagenet_tree(tmp_path, WNIDS)
    ds = build(tmp_path)
    assert (len(ds.train_x), len(ds.test), ds.num_classes) == (12, 8, 4)
    assert ds.val is ds.test  # CoOp: val = test
    assert ds.classnames == [f"name of {w}" for w in sorted(WNIDS)]  # label = index of the sorted wnid
    d = ds.test[0]
    assert d.impath == str(tmp_path / "imagenet/images/val/n01000000/ILSVRC2012_val_n01000000_0.JPEG") and d.label == 0
    assert ds.template == "a photo of a {}."


def test_imagenet_listing_is_cached_and_rescanned_when_classes_change(tmp_path, monkeypatch, capsys):
    imagenet_tree(tmp_path, WNIDS)
    build(tmp_path)
    listing = tmp_path / "imagenet" / "listing_ImageNet.json"
    obj = json.loads(listing.read_text())
    assert obj["splits"]["train"]["n01000000"] == [f"n01000000_{i}.JPEG" for i in range(3)]  # names only
    assert str(tmp_path) not in listing.read_text()

    def no_scan(folder):
        raise AssertionError("rescanned")

    monkeypatch.setattr(imagenet_module, "_scan", no_scan)
    capsys.readouterr()
    assert len(build(tmp_path).train_x) == 12
    assert "Loading image listing from" in capsys.readouterr().out
    monkeypatch.undo()
    imagenet_tree(tmp_path, ["n04000000"], names=False)
    write_classnames(tmp_path / "imagenet" / "classnames.txt", WNIDS + ["n04000000"])
    assert build(tmp_path).num_classes == 5
    assert "stale" in capsys.readouterr().out


def test_imagenet_fewshot_draws_train_only_and_base_new(tmp_path):
    imagenet_tree(tmp_path, WNIDS)
    ds = build(tmp_path, shots=2, seed=3, subsample="base")
    assert len(ds.train_x) == 2 * 2 and ds.classnames == ["name of n01000000", "name of n01500000"]
    assert ds.val is ds.test and len(ds.test) == 2 * 2
    cache = json.loads((tmp_path / "imagenet" / "split_fewshot" / "shot_2-seed_3.json").read_text())
    assert cache["val"] == [] and len(cache["train"]) == 8 and cache["train"][0][0].startswith("images/train/")
    new = build(tmp_path, shots=2, seed=3, subsample="new")
    assert new.classnames == ["name of n02000000", "name of n03000000"] and {d.label for d in new.test} == {0, 1}


def test_imagenet_names_from_open_clip_without_classnames_txt(tmp_path):
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    wnids = [f"n{i:08d}" for i in range(1000)]
    imagenet_tree(tmp_path, wnids, n_train=1, n_val=0, names=False)
    (tmp_path / "imagenet" / "images" / "val").mkdir()
    ds = build(tmp_path, check_images=False)
    assert ds.classnames == list(IMAGENET_CLASSNAMES) and ds.classnames[0] == "tench"


def test_imagenet_errors(tmp_path):
    imagenet_tree(tmp_path, WNIDS, names=False)
    with pytest.raises(UserError, match="classnames.txt") as exc:
        build(tmp_path)  # 4 folders: cannot be matched to open_clip's 1000 names
    assert "prepare_data.py --dataset ImageNet" in str(exc.value)
    flat = tmp_path / "flat"
    touch_files(flat / "imagenet" / "images", ["train/n01000000/a.JPEG", "val/ILSVRC2012_val_00000001.JPEG"])
    with pytest.raises(UserError, match="holds 1 image files directly.*\n.*valprep"):
        build(flat)
    with pytest.raises(UserError, match="images/val not found"):
        touch_files(tmp_path / "noval" / "imagenet" / "images", ["train/n01000000/a.JPEG"])
        build(tmp_path / "noval")


# ------------------------------------------------------------------------------------------------ variants
def test_imagenet_v2_folders_are_label_indices(tmp_path):
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    folder = tmp_path / "imagenetv2" / "imagenetv2-matched-frequency-format-val"
    touch_files(folder, [f"{c}/{i}.jpeg" for c in ("0", "2", "10") for i in range(2)])  # "10" sorts before "2"
    ds = build(tmp_path, "ImageNetV2", shots=16)  # test only: NUM_SHOTS is ignored
    assert ds.train_x is ds.test and ds.val == [] and len(ds.test) == 6
    assert [(d.label, d.classname) for d in ds.test[::2]] == [(c, IMAGENET_CLASSNAMES[c]) for c in (0, 2, 10)]
    assert not (tmp_path / "imagenetv2" / "split_fewshot").exists()
    (tmp_path / "imagenet").mkdir()
    (tmp_path / "imagenet" / "classnames.txt").write_text("".join(f"n{i:08d} line {i}\n" for i in range(11)))
    assert [d.classname for d in build(tmp_path, "ImageNetV2").test[::2]] == ["line 0", "line 2", "line 10"]


def test_imagenet_a_r_sketch(tmp_path):
    wnids = ["n01000000", "n03000000", "n02000000"]
    touch_files(tmp_path / "imagenet-adversarial" / "imagenet-a", [f"{w}/{i}.jpg" for w in wnids for i in range(2)])
    (tmp_path / "imagenet-adversarial" / "imagenet-a" / "README.txt").write_text("ignored")
    with pytest.raises(UserError, match="classnames.txt"):
        build(tmp_path, "ImageNetA")  # 3 of 1000 folders and no classnames.txt anywhere
    write_classnames(tmp_path / "imagenet" / "classnames.txt", wnids + ["n00500000"])  # ImageNet's copy serves
    ds = build(tmp_path, "ImageNetA")
    assert ds.classnames == ["name of n01000000", "name of n02000000", "name of n03000000"]
    assert ds.train_x is ds.test and len(ds.test) == 6
    base = build(tmp_path, "ImageNetA", subsample="base")
    assert base.classnames == ["name of n01000000", "name of n02000000"]
    touch_files(tmp_path / "imagenet-sketch" / "sketch", [f"{w}/s.JPEG" for w in wnids[:2]])  # zip's folder name
    write_classnames(tmp_path / "imagenet-sketch" / "classnames.txt", ["n01000000", "n03000000"])
    sketch = build(tmp_path, "ImageNetSketch")
    assert sketch.classnames == ["name of n01000000", "name of n03000000"] and "/sketch/" in sketch.test[0].impath
    with pytest.raises(UserError, match="imagenet-rendition.*not found.*\n.*--dataset ImageNetR"):
        build(tmp_path, "ImageNetR")
