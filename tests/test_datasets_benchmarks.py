"""The benchmark datasets on fake trees in their real layouts.

Built from the real CoOp split files in $CALIB_SPLITS_DIR (tests/helpers.py: splits_dir); those tests skip
elsewhere, naming the command that gets the files. Food101, SUN397 and FGVC-Aircraft use small synthetic splits in
their real formats.
"""
from __future__ import annotations

import functools
import json
import random
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest

from common.errors import UserError
from dassl.data.datasets import DATASET_REGISTRY, build_dataset
from datasets.common import Item, Split, read_split
from datasets.testing import make_cfg, synthetic_split, touch_files, write_split_dataset
from tests.helpers import find_split_file, real_split_file, splits_dir

SPLITS = splits_dir()

# docs/protocol_notes.md#datasets: train, val, test, classes, base, new
REAL = {
    "Caltech101": (4128, 1649, 2465, 100, 50, 50),
    "OxfordPets": (2944, 736, 3669, 37, 19, 18),
    "StanfordCars": (6509, 1635, 8041, 196, 98, 98),
    "OxfordFlowers": (4093, 1633, 2463, 102, 51, 51),
    "DescribableTextures": (2820, 1128, 1692, 47, 24, 23),
    "EuroSAT": (13500, 5400, 8100, 10, 5, 5),
    "UCF101": (7639, 1898, 3783, 101, 51, 50),
}


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


@functools.lru_cache(maxsize=None)
def _real(name: str) -> Split:
    return read_split(real_split_file(DATASET_REGISTRY.get(name).split_file))


def real_split(name: str) -> Split:
    real_split_file(DATASET_REGISTRY.get(name).split_file)   # skips, naming the command, when it is absent
    return _real(name)


def build(root, name, seed=1, **kw):
    random.seed(seed)
    return build_dataset(make_cfg(root, name, seed=seed, **kw))


def per_label(items) -> Counter:
    return Counter(it.label for it in items)


def real_tree(root: Path, name: str) -> Split:
    """The dataset folder with the real split file and an empty image folder."""
    split = real_split(name)
    cls = DATASET_REGISTRY.get(name)
    (root / cls.dataset_dir / cls.image_dirs[0]).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(real_split_file(cls.split_file), root / cls.dataset_dir / cls.split_file)
    return split


@pytest.mark.parametrize("name", list(REAL))
def test_real_split_counts_base_new_and_shots(tmp_path, name):
    n_train, n_val, n_test, n_cls, n_base, n_new = REAL[name]
    split = real_tree(tmp_path, name)
    full = build(tmp_path, name, check_images=False)
    assert (len(full.train_x), len(full.val), len(full.test), full.num_classes) == (n_train, n_val, n_test, n_cls)
    base = build(tmp_path, name, check_images=False, subsample="base", shots=16)
    new = build(tmp_path, name, check_images=False, subsample="new")
    assert (base.num_classes, new.num_classes) == (n_base, n_new)
    assert len(base.test) + len(new.test) == n_test
    assert base.classnames == full.classnames[:n_base] and new.classnames == full.classnames[n_base:]
    assert all(d.classname == full.classnames[d.label + n_base] for d in new.test)  # relabelled by position
    train_counts, val_counts = per_label(split.train), per_label(split.val)
    assert per_label(base.train_x) == {y: min(16, train_counts[y]) for y in range(n_base)}
    assert per_label(base.val) == {y: min(4, val_counts[y]) for y in range(n_base)}
    assert (tmp_path / DATASET_REGISTRY.get(name).dataset_dir / "split_fewshot" / "shot_16-seed_1.json").is_file()


def test_real_class_names(tmp_path):
    eurosat = real_split("EuroSAT")
    assert sorted(eurosat.classnames().values()) == [
        "Annual Crop Land", "Forest", "Herbaceous Vegetation Land", "Highway or Road", "Industrial Buildings",
        "Pasture Land", "Permanent Crop Land", "Residential Buildings", "River", "Sea or Lake"]
    caltech = set(real_split("Caltech101").classnames().values())
    assert {"airplane", "face", "leopard", "motorbike"} <= caltech
    assert not {"airplanes", "Faces", "Faces_easy", "BACKGROUND_Google", "Leopards"} & caltech
    cars = real_split("StanfordCars").classnames().values()
    assert "2012 Tesla Model S Sedan" in cars and all(re.match(r"^(19|20)\d\d ", c) for c in cars)
    assert all(c == c.lower() for c in real_split("OxfordPets").classnames().values())
    assert "Apply_Eye_Makeup" in real_split("UCF101").classnames().values()
    flowers = real_split("OxfordFlowers").classnames()
    if find_split_file("cat_to_name.json"):
        cat_to_name = json.loads(find_split_file("cat_to_name.json").read_text())
        assert flowers == {y: cat_to_name[str(y + 1)] for y in range(102)}


def test_real_layout_paths(tmp_path):
    cars = real_tree(tmp_path, "StanfordCars")
    ds = build(tmp_path, "StanfordCars", check_images=False)
    assert ds.train_x[0].impath == str(tmp_path / "stanford_cars" / cars.train[0].impath)  # prefix = dataset dir
    assert cars.train[0].impath.startswith("cars_train/") and cars.test[0].impath.startswith("cars_test/")
    caltech = real_tree(tmp_path, "Caltech101")
    ds = build(tmp_path, "Caltech101", check_images=False)
    assert ds.test[0].impath == str(tmp_path / "caltech-101" / "101_ObjectCategories" / caltech.test[0].impath)


def test_real_split_with_the_images_a_run_uses(tmp_path):
    split = real_tree(tmp_path, "DescribableTextures")
    unchecked = build(tmp_path, "DescribableTextures", shots=16, subsample="base", check_images=False)
    used = unchecked.train_x + unchecked.val + unchecked.test
    with pytest.raises(UserError, match=re.escape(f"{len(used):,} of {len(used):,} images named by")):
        build(tmp_path, "DescribableTextures", shots=16, subsample="base")
    touch_files("/", [d.impath for d in used])  # only the images this run needs
    ds = build(tmp_path, "DescribableTextures", shots=16, subsample="base")
    assert len(ds.train_x) == 24 * 16 and len(ds.val) == 24 * 4 and ds.template == "{} texture."
    assert len(ds.test) == sum(it.label < 24 for it in split.test)
    Path(ds.test[-1].impath).unlink()
    with pytest.raises(UserError, match=re.escape(f"1 of {len(used):,}")) as exc:
        build(tmp_path, "DescribableTextures", shots=16, subsample="base")
    assert ds.test[-1].impath in str(exc.value)


def test_eurosat_accepts_the_newer_folder_name(tmp_path):
    split = synthetic_split(10, (2, 1, 1), name="Class{:d}", path="{cname}/{cname}_{split}{i}.jpg")
    write_split_dataset(tmp_path, DATASET_REGISTRY.get("EuroSAT"), split)
    (tmp_path / "eurosat" / "2750").rename(tmp_path / "eurosat" / "EuroSAT_RGB")
    ds = build(tmp_path, "EuroSAT")
    assert "/eurosat/EuroSAT_RGB/Class0/" in ds.train_x[0].impath and len(ds.test) == 10


# ------------------------------------------------------------------------------ synthetic: Food, SUN, FGVC
def test_food101_synthetic(tmp_path):
    split = synthetic_split(101, (3, 1, 1), name="food_{:03d}", path="{cname}/{i}{split}.jpg")
    split = Split(*[[it._replace(classname="apple_pie") if it.label == 0 else it for it in part]
                    for part in (split.train, split.val, split.test)])
    split.train[0] = Item("apple_pie/3065929.jpg", 0, "apple_pie")
    write_split_dataset(tmp_path, DATASET_REGISTRY.get("Food101"), split)
    ds = build(tmp_path, "Food101", shots=2, subsample="base")
    assert ds.num_classes == 51 and len(ds.train_x) == 51 * 2 and ds.classnames[0] == "apple_pie"
    assert build(tmp_path, "Food101", shots=2, subsample="new").num_classes == 50
    full = build(tmp_path, "Food101")
    assert full.train_x[0].impath == str(tmp_path / "food-101" / "images" / "apple_pie" / "3065929.jpg")
    assert ds.template == "a photo of {}, a type of food."


def test_sun397_synthetic(tmp_path):
    split = synthetic_split(397, (2, 1, 1), name="scene_{:03d}", path="s/{cname}/sun_{split}{i}.jpg")
    split.test[0] = Item("a/apartment_building/outdoor/sun_aqcvwydiblqathku.jpg", 0, "outdoor apartment_building")
    split.train[0] = split.train[0]._replace(classname="outdoor apartment_building")
    split.train[1] = split.train[1]._replace(classname="outdoor apartment_building")
    write_split_dataset(tmp_path, DATASET_REGISTRY.get("SUN397"), split, images="none")
    base = build(tmp_path, "SUN397", subsample="base", shots=1, check_images=False)
    new = build(tmp_path, "SUN397", subsample="new", check_images=False)
    assert (base.num_classes, new.num_classes) == (199, 198)
    assert base.classnames[0] == "outdoor apartment_building"
    assert base.test[0].impath == str(tmp_path / "sun397" / "SUN397" / "a/apartment_building/outdoor/"
                                      "sun_aqcvwydiblqathku.jpg")


def fgvc_tree(root: Path, variants: list[str], per_class=(3, 2, 2)) -> dict[str, list[tuple[str, str]]]:
    data = root / "fgvc_aircraft"
    (data / "images").mkdir(parents=True)
    (data / "variants.txt").write_text("".join(f"{v}\n" for v in variants))
    lines: dict[str, list[tuple[str, str]]] = {}
    image_id = 1000000
    for key, n in zip(("train", "val", "test"), per_class):
        lines[key] = []
        for v in reversed(variants):  # file order is not label order
            for _ in range(n):
                lines[key].append((f"{image_id:07d}", v))
                image_id += 1
        (data / f"images_variant_{key}.txt").write_text("".join(f"{i} {v}\n" for i, v in lines[key]))
        touch_files(data / "images", [f"{i}.jpg" for i, _ in lines[key]])
    return lines


def test_fgvc_aircraft_reads_the_official_txt_files(tmp_path):
    variants = ["707-320", "Cessna 172", "F/A-18"] + [f"Model-{i:02d}" for i in range(97)]
    lines = fgvc_tree(tmp_path, variants)
    ds = build(tmp_path, "FGVCAircraft")
    assert (len(ds.train_x), len(ds.val), len(ds.test), ds.num_classes) == (300, 200, 200, 100)
    assert ds.classnames[:3] == ["707-320", "Cessna 172", "F/A-18"]  # label = line of variants.txt
    first_id, first_variant = lines["train"][0]
    assert ds.train_x[0].impath == str(tmp_path / "fgvc_aircraft" / "images" / f"{first_id}.jpg")
    assert ds.train_x[0].label == variants.index(first_variant) == 99
    assert ds.template == "a photo of a {}, a type of aircraft."
    base = build(tmp_path, "FGVCAircraft", subsample="base", shots=16)
    assert base.num_classes == 50 and len(base.train_x) == 150 and len(base.val) == 100
    assert build(tmp_path, "FGVCAircraft", subsample="new").classnames[0] == "Model-47"
    (tmp_path / "fgvc_aircraft" / "images_variant_val.txt").write_text("1234567 Concorde\n")
    with pytest.raises(UserError, match="'Concorde'.*not in variants.txt"):
        build(tmp_path, "FGVCAircraft")
    (tmp_path / "fgvc_aircraft" / "variants.txt").unlink()
    with pytest.raises(UserError, match="variants.txt not found.*\n.*prepare_data.py --dataset FGVCAircraft"):
        build(tmp_path, "FGVCAircraft")


@pytest.mark.parametrize("name, folder", [("food101", "Food101"), ("sun397", "SUN397"),
                                          ("fgvc_aircraft", "FGVCAircraft")])
def test_real_file_names_of_the_large_datasets(tmp_path, name, folder):
    """Real few-shot subsets (other repo) give real paths and names: load them through our classes."""
    path = SPLITS / "cma_fewshot_indices" / name / "shot_16-seed_1.json"
    if not path.is_file():
        pytest.skip(f"needs {path.relative_to(SPLITS)} in $CALIB_SPLITS_DIR ({SPLITS}): few-shot subsets of "
                    "another repository, with real image paths of this dataset; not downloadable here")
    obj = json.loads(path.read_text())
    cls = DATASET_REGISTRY.get(folder)
    marker = f"/{cls.dataset_dir}/{cls.image_dirs[0]}/"
    to_items = lambda key: [Item(d["impath"].split(marker, 1)[1], d["label"], d["classname"])  # noqa: E731
                            for d in obj[key]["data"] if d["label"] < 9]  # 9 classes: few files to write
    train, val = to_items("train"), to_items("val")
    if folder == "FGVCAircraft":
        names = {it.label: it.classname for it in train}
        data = tmp_path / "fgvc_aircraft"
        (data / "images").mkdir(parents=True)
        (data / "variants.txt").write_text("".join(f"{names[y]}\n" for y in range(len(names))))
        for key, items in (("train", train), ("val", val), ("test", val)):
            (data / f"images_variant_{key}.txt").write_text(
                "".join(f"{it.impath[:-4]} {it.classname}\n" for it in items))
        touch_files(data / "images", [it.impath for it in train + val])
    else:
        write_split_dataset(tmp_path, cls, Split(train, val, list(val)))
    ds = build(tmp_path, folder, shots=16, subsample="base")
    assert ds.num_classes == 5 and len(ds.train_x) == 16 * 5
    assert len(ds.val) == 4 * ds.num_classes
    assert ds.train_x[0].impath.startswith(str(tmp_path / cls.dataset_dir / cls.image_dirs[0]) + "/")
    if folder == "SUN397":
        new = build(tmp_path, folder, shots=16, subsample="new")
        assert new.classnames[-1] == "outdoor apartment_building"
