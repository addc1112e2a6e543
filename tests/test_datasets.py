"""datasets/: split files, base/new subsampling, the cached few-shot draw, ImageFolder (synthetic trees)."""
from __future__ import annotations

import json
import os
import pickle
import random
import shutil
from pathlib import Path

import pytest

from common.errors import UserError
from dassl.data.datasets import DATASET_REGISTRY, build_dataset
from dassl.data.datasets.base_dataset import Datum
import datasets
from datasets import common
from datasets.common import Item, Split, read_split, save_split, subsample_classes
from datasets.testing import make_cfg, synthetic_split, touch_files, write_imagefolder, write_split_dataset

PETS = DATASET_REGISTRY.get("OxfordPets")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Keep the XDG fallback cache inside the test's folder."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


def pets_tree(root: Path, n_classes: int = 5, per_class=(6, 5, 3)) -> Split:
    """A small synthetic split in OxfordPets' real layout (oxford_pets/images/*.jpg + split_zhou_OxfordPets.json)."""
    split = synthetic_split(n_classes, per_class, name="breed_{:d}", path="{cname}_{split}_{i}.jpg")
    write_split_dataset(root, PETS, split)
    return split


def build(root, name="OxfordPets", seed=1, reseed=True, **kw):
    if reseed:
        random.seed(seed)  # what set_random_seed does for Python's random
    return build_dataset(make_cfg(root, name, seed=seed, **kw))


def hand_draw(split: Split, k: int, seed: int) -> tuple[list[str], list[str]]:
    """The CoOp draw written out: per label in first-appearance order, random.sample; train, then val."""
    random.seed(seed)
    out = []
    for items, n in ((split.train, k), (split.val, min(k, 4))):
        groups: dict[int, list[Item]] = {}
        for it in items:
            groups.setdefault(it.label, []).append(it)
        out.append([it.impath for g in groups.values() for it in (random.sample(g, n) if len(g) >= n else g)])
    return out[0], out[1]


def rel(datums, root: Path) -> list[str]:
    base = str(root / "oxford_pets" / "images") + os.sep
    assert all(d.impath.startswith(base) for d in datums)
    return [d.impath[len(base):] for d in datums]


# ------------------------------------------------------------------------------------------- split files
def test_split_roundtrip_and_format_independent_hash(tmp_path):
    split = synthetic_split(3, (2, 1, 1))
    save_split(split, tmp_path / "s.json")
    obj = json.loads((tmp_path / "s.json").read_text())
    assert obj["train"][0] == ["class000/img_train_000.jpg", 0, "class000"]
    assert (tmp_path / "s.json").read_text().startswith('{\n    "train"')  # indent 4 like CoOp
    back = read_split(tmp_path / "s.json")
    assert back == split
    # same content, other formatting (compact, trailing newline): same content hash
    (tmp_path / "c.json").write_text(json.dumps(obj, separators=(",", ":")) + "\n")
    assert read_split(tmp_path / "c.json").sha256() == split.sha256()
    obj["test"][0][1] = 2
    (tmp_path / "d.json").write_text(json.dumps(obj))
    assert read_split(tmp_path / "d.json").sha256() != split.sha256()


@pytest.mark.parametrize("bad, fragment", [
    ('{"train": [], "val": []}', "'test' is missing"),
    ('{"train": [["a.jpg", "0", "x"]], "val": [], "test": []}', "train[0]"),
    ('[1, 2]', "expected a JSON object"),
    ('{"train": [', "not valid JSON"),
])
def test_read_split_rejects_malformed_files(tmp_path, bad, fragment):
    (tmp_path / "s.json").write_text(bad)
    with pytest.raises(UserError, match=None) as exc:
        read_split(tmp_path / "s.json")
    assert fragment in str(exc.value) and str(tmp_path / "s.json") in str(exc.value)


# ------------------------------------------------------------------------------------------- base / new
def test_subsample_base_new_odd_class_count(capsys):
    train = [Item(f"{y}_{i}.jpg", y, f"c{y}") for y in (4, 0, 2, 1, 3) for i in range(2)]  # 5 labels, unsorted
    test = [Item(f"t{y}.jpg", y, f"c{y}") for y in range(5)]
    base_train, base_test = subsample_classes(train, test, subsample="base")
    assert "SUBSAMPLE BASE CLASSES!" in capsys.readouterr().out
    assert sorted({it.classname for it in base_train}) == ["c0", "c1", "c2"]  # ceil(5/2) = 3 first labels
    assert [(it.label, it.classname) for it in base_test] == [(0, "c0"), (1, "c1"), (2, "c2")]
    new_train, new_test = subsample_classes(train, test, subsample="new")
    assert "SUBSAMPLE NEW CLASSES!" in capsys.readouterr().out
    assert [(it.label, it.classname) for it in new_test] == [(0, "c3"), (1, "c4")]  # relabelled by position
    assert [it.label for it in new_train] == [1, 1, 0, 0]  # order kept: label 4 then 3
    assert subsample_classes(train, test, subsample="all") == [train, test]


def test_subsample_uses_labels_of_first_split_and_handles_datums():
    train = [Datum(f"/x/{y}.jpg", y, classname=f"c{y}", check_exists=False) for y in (0, 1, 5, 7)]
    test = [Datum(f"/y/{y}.jpg", y, classname=f"c{y}", check_exists=False) for y in (0, 1, 2, 5, 7)]
    (new_test,) = subsample_classes(test, subsample="new")  # 5 labels -> new = 5, 7 (labels 0,1,2 are base)
    assert [(d.label, d.classname) for d in new_test] == [(0, "c5"), (1, "c7")]
    _, new_test = subsample_classes(train, test, subsample="new")  # train has 4 labels -> new = 5, 7 again
    assert [d.impath for d in new_test] == ["/y/5.jpg", "/y/7.jpg"] and isinstance(new_test[0], Datum)
    base_train, base_test = subsample_classes(train, test, subsample="base")
    assert [d.label for d in base_test] == [0, 1]  # label 2 is absent from train, so dropped


def test_subsample_unknown_value_is_a_user_error():
    with pytest.raises(UserError, match="SUBSAMPLE_CLASSES.*all, base, new.*'novel'"):
        subsample_classes([], subsample="novel")


# -------------------------------------------------------------------------------------- templates, config
def test_templates_per_dataset():
    assert datasets.get_template("OxfordPets") == "a photo of a {}, a type of pet."
    assert datasets.get_template("DescribableTextures") == "{} texture."
    assert datasets.get_template("EuroSAT") == "a centered satellite photo of {}."
    assert datasets.get_template("UCF101") == "a photo of a person doing {}."
    assert datasets.get_template("Food101") == "a photo of {}, a type of food."
    for name in ("StanfordCars", "SUN397", "Caltech101", "ImageNet", "ImageNetR", "ImageFolder", "NoSuchSet"):
        assert datasets.get_template(name) == "a photo of a {}."
    assert PETS.template == datasets.TEMPLATES["OxfordPets"]


def test_add_dataset_config_is_idempotent():
    from dassl.config import get_cfg_default

    cfg = get_cfg_default()
    datasets.add_dataset_config(cfg)
    assert (cfg.DATASET.SUBSAMPLE_CLASSES, cfg.DATASET.CACHE_DIR, cfg.DATASET.CHECK_IMAGES) == ("all", "", True)
    cfg.DATASET.SUBSAMPLE_CLASSES = "base"
    datasets.add_dataset_config(cfg)
    assert cfg.DATASET.SUBSAMPLE_CLASSES == "base"
    cfg.merge_from_list(["DATASET.SUBSAMPLE_CLASSES", "new", "DATASET.CACHE_DIR", "/tmp/c"])
    assert cfg.DATASET.CACHE_DIR == "/tmp/c"


def test_find_missing_both_strategies(tmp_path):
    many = [str(tmp_path / "a" / f"{i}.jpg") for i in range(20)]  # > 8 in one folder: one listdir
    few = [str(tmp_path / "b" / f"{i}.jpg") for i in range(3)]  # few: one stat each
    touch_files(tmp_path, [f"a/{i}.jpg" for i in range(20) if i != 7] + ["b/0.jpg", "b/2.jpg"])
    assert common.find_missing(few + many) == [few[1], many[7]]  # input order
    assert common.find_missing([str(tmp_path / "nodir" / f"{i}.jpg") for i in range(10)])[0].endswith("0.jpg")


# ------------------------------------------------------------------------------------------ pipeline
def test_counts_base_new_and_relabelling(tmp_path):
    split = pets_tree(tmp_path)
    full = build(tmp_path)
    assert (len(full.train_x), len(full.val), len(full.test), full.num_classes) == (30, 25, 15, 5)
    assert full.classnames == [f"breed_{i}" for i in range(5)]
    assert full.split_sha256 == split.sha256() and full.template == "a photo of a {}, a type of pet."
    base = build(tmp_path, subsample="base")
    new = build(tmp_path, subsample="new")
    assert base.classnames == ["breed_0", "breed_1", "breed_2"] and new.classnames == ["breed_3", "breed_4"]
    assert {d.label for d in new.test} == {0, 1} and len(new.test) == 6 and len(base.val) == 15
    assert all(d.classname == f"breed_{d.label + 3}" for d in new.train_x + new.val + new.test)


def test_fewshot_matches_the_canonical_draw(tmp_path):
    split = pets_tree(tmp_path)
    ds = build(tmp_path, shots=4, seed=3)
    train, val = hand_draw(split, 4, seed=3)
    assert rel(ds.train_x, tmp_path) == train and rel(ds.val, tmp_path) == val
    assert len(ds.train_x) == 5 * 4 and len(ds.val) == 5 * 4 and len(ds.test) == 15
    ds2 = build(tmp_path, shots=2, seed=3)  # val takes min(K, 4) = 2
    assert len(ds2.val) == 10 and rel(ds2.val, tmp_path) == hand_draw(split, 2, seed=3)[1]
    ds8 = build(tmp_path, shots=8, seed=3)  # fewer than K images: all of them; val capped at 4
    assert len(ds8.train_x) == 30 and len(ds8.val) == 20


def test_same_seed_same_draw_other_seed_other_draw(tmp_path):
    pets_tree(tmp_path)
    a = rel(build(tmp_path, shots=2, seed=1).train_x, tmp_path)
    shutil.rmtree(tmp_path / "oxford_pets" / "split_fewshot")
    assert rel(build(tmp_path, shots=2, seed=1).train_x, tmp_path) == a  # redrawn, identical
    assert rel(build(tmp_path, shots=2, seed=2).train_x, tmp_path) != a


def test_cache_is_relative_verified_and_does_not_touch_random(tmp_path, capsys):
    pets_tree(tmp_path)
    first = build(tmp_path, shots=2, seed=5)
    cache = tmp_path / "oxford_pets" / "split_fewshot" / "shot_2-seed_5.json"
    obj = json.loads(cache.read_text())
    assert obj["shots"] == 2 and obj["seed"] == 5 and obj["source_sha256"] == first.split_sha256
    assert obj["train"][0][0].startswith("images/") and not any(str(tmp_path) in e[0] for e in obj["train"])
    capsys.readouterr()
    random.seed(5)
    again = build(tmp_path, shots=2, seed=5, reseed=False)
    assert "Loading preprocessed few-shot data from" in capsys.readouterr().out
    assert random.random() == random.Random(5).random()  # a cache hit draws nothing
    assert [d.impath for d in again.train_x] == [d.impath for d in first.train_x]


def test_cache_survives_a_moved_root(tmp_path, capsys):
    pets_tree(tmp_path / "a")
    first = rel(build(tmp_path / "a", shots=2, seed=7).train_x, tmp_path / "a")
    shutil.move(str(tmp_path / "a"), str(tmp_path / "b"))
    capsys.readouterr()
    random.seed(12345)  # a redraw would differ
    moved = build(tmp_path / "b", shots=2, seed=7, reseed=False)
    assert "Loading preprocessed few-shot data" in capsys.readouterr().out
    assert rel(moved.train_x, tmp_path / "b") == first


def test_tampered_cache_and_changed_split_are_redrawn(tmp_path, capsys):
    split = pets_tree(tmp_path)
    build(tmp_path, shots=2, seed=1)
    cache = tmp_path / "oxford_pets" / "split_fewshot" / "shot_2-seed_1.json"
    obj = json.loads(cache.read_text())
    obj["train"][0], obj["train"][1] = obj["train"][1], obj["train"][0]
    cache.write_text(json.dumps(obj))
    capsys.readouterr()
    ds = build(tmp_path, shots=2, seed=1)
    assert "was modified after it was written" in capsys.readouterr().out
    assert rel(ds.train_x, tmp_path) == hand_draw(split, 2, 1)[0]
    split.test.pop()  # the source split changes: the cache no longer belongs to it
    save_split(split, tmp_path / "oxford_pets" / PETS.split_file)
    build(tmp_path, shots=2, seed=1)
    out = capsys.readouterr().out
    assert "was drawn from a different split" in out and "Saving preprocessed few-shot data" in out


def test_negative_seed_is_not_cached(tmp_path):
    pets_tree(tmp_path)
    ds = build(tmp_path, shots=2, seed=-1, reseed=False)
    assert len(ds.train_x) == 10 and not (tmp_path / "oxford_pets" / "split_fewshot").exists()


def test_read_only_root_falls_back_to_the_cache_dir(tmp_path, monkeypatch):
    split = pets_tree(tmp_path / "data")
    data = str(tmp_path / "data")
    monkeypatch.setattr(common, "dir_writable", lambda p: not str(p).startswith(data))
    ds = build(tmp_path / "data", shots=2, seed=1)
    assert not (tmp_path / "data" / "oxford_pets" / "split_fewshot").exists()
    cached = list((tmp_path / "xdg" / "calib-prompt" / "fewshot").glob("OxfordPets-*/shot_2-seed_1.json"))
    assert len(cached) == 1 and cached[0].parent.name == f"OxfordPets-{split.sha256()[:12]}"
    random.seed(99)
    again = build(tmp_path / "data", shots=2, seed=1, reseed=False)  # read back from the fallback
    assert [d.impath for d in again.train_x] == [d.impath for d in ds.train_x]


def test_cache_dir_key_takes_precedence(tmp_path):
    pets_tree(tmp_path / "data")
    build(tmp_path / "data", shots=1, seed=2, cache_dir=str(tmp_path / "mycache"))
    assert list((tmp_path / "mycache" / "fewshot").glob("OxfordPets-*/shot_1-seed_2.json"))
    assert not (tmp_path / "data" / "oxford_pets" / "split_fewshot").exists()


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can write read-only folders")
def test_really_read_only_root(tmp_path):
    pets_tree(tmp_path / "data")
    for p in (tmp_path / "data", tmp_path / "data" / "oxford_pets"):
        p.chmod(0o555)
    try:
        ds = build(tmp_path / "data", shots=2, seed=1)
        assert len(ds.train_x) == 10
        assert list((tmp_path / "xdg" / "calib-prompt" / "fewshot").glob("OxfordPets-*/shot_2-seed_1.json"))
    finally:
        for p in (tmp_path / "data", tmp_path / "data" / "oxford_pets"):
            p.chmod(0o755)


def _dassl_pickle(path: Path, train: list[Item], val: list[Item], prefix: str) -> None:
    data = {key: [Datum(f"{prefix}/{it.impath}", it.label, 0, it.classname, check_exists=False) for it in items]
            for key, items in (("train", train), ("val", val))}
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL)
    assert b"dassl.data.datasets.base_dataset" in blob  # the module path Dassl pickles use
    path.write_bytes(blob)


def test_reads_a_dassl_pickle_from_another_machine(tmp_path, capsys):
    split = pets_tree(tmp_path)
    chosen_train = [it for it in split.train if it.impath.endswith(("_0.jpg", "_5.jpg"))]  # not a seeded draw
    chosen_val = [it for it in split.val if it.impath.endswith(("_1.jpg", "_3.jpg"))]
    pkl = tmp_path / "oxford_pets" / "split_fewshot" / "shot_2-seed_1.pkl"
    _dassl_pickle(pkl, chosen_train, chosen_val, "/home/someone/DATA/oxford_pets/images")
    ds = build(tmp_path, shots=2, seed=1)
    assert "Dassl pickle" in capsys.readouterr().out
    assert rel(ds.train_x, tmp_path) == [it.impath for it in chosen_train]  # re-rooted onto this folder
    assert rel(ds.val, tmp_path) == [it.impath for it in chosen_val]
    assert (pkl.parent / "shot_2-seed_1.json").is_file()  # converted to a verified JSON cache


def test_foreign_dassl_pickle_is_ignored(tmp_path, capsys):
    split = pets_tree(tmp_path)
    pkl = tmp_path / "oxford_pets" / "split_fewshot" / "shot_2-seed_1.pkl"
    _dassl_pickle(pkl, [Item("other_dataset.jpg", 0, "breed_0")], [], "/old")
    ds = build(tmp_path, shots=2, seed=1)
    assert "not in the current train split" in capsys.readouterr().out
    assert rel(ds.train_x, tmp_path) == hand_draw(split, 2, 1)[0]
    pkl.write_bytes(pickle.dumps({"train": [os.system]}))  # not a Datum: refused, never called
    (pkl.parent / "shot_2-seed_1.json").unlink()
    build(tmp_path, shots=2, seed=1)
    assert "cannot be read" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------- errors
def test_clear_errors_for_missing_folder_split_and_images(tmp_path):
    with pytest.raises(UserError) as exc:
        build(tmp_path)
    msg = str(exc.value)
    assert str(tmp_path / "oxford_pets") in msg
    assert f"python tools/prepare_data.py --dataset OxfordPets --root {tmp_path}" in msg
    split = pets_tree(tmp_path)
    (tmp_path / "oxford_pets" / PETS.split_file).unlink()
    with pytest.raises(UserError, match="split_zhou_OxfordPets.json not found.*\n.*prepare_data.py"):
        build(tmp_path)
    save_split(split, tmp_path / "oxford_pets" / PETS.split_file)
    for it in split.test[:7]:
        (tmp_path / "oxford_pets" / "images" / it.impath).unlink()
    with pytest.raises(UserError) as exc:
        build(tmp_path)
    msg = str(exc.value)
    assert "7 of 70 images" in msg and split.test[0].impath in msg and "... and 2 more" in msg
    assert "prepare_data.py --dataset OxfordPets" in msg
    ds = build(tmp_path, check_images=False)  # the check can be switched off
    assert len(ds.test) == 15
    with pytest.raises(UserError, match="DATASET.ROOT is not set"):
        build("")


def test_only_the_images_a_run_uses_are_checked(tmp_path):
    split = pets_tree(tmp_path)
    drawn_train, drawn_val = hand_draw(split, 1, seed=4)
    unused = next(it.impath for it in split.train if it.impath not in drawn_train)
    (tmp_path / "oxford_pets" / "images" / unused).unlink()
    assert len(build(tmp_path, shots=1, seed=4).train_x) == 5
    with pytest.raises(UserError, match="1 of"):
        build(tmp_path, shots=-1)


# --------------------------------------------------------------------------------------------- ImageFolder
def test_imagefolder_split_labels_and_names(tmp_path, capsys):
    write_imagefolder(tmp_path, {"golden_retriever": 10, "cat": 7, "dog": 5})
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    (tmp_path / "empty").mkdir()
    random.seed(0)
    ds = build_dataset(make_cfg(tmp_path, "ImageFolder", seed=1))
    assert random.random() == random.Random(0).random()  # the split uses its own RNG
    assert ds.classnames == ["cat", "dog", "golden retriever"]
    per_class = lambda items: [sum(d.label == y for d in items) for y in range(3)]  # noqa: E731
    assert per_class(ds.train_x) == [4, 2, 5] and per_class(ds.val) == [1, 1, 2] and per_class(ds.test) == [2, 2, 3]
    split_file = tmp_path / "split_imagefolder.json"
    saved = read_split(split_file)
    assert saved.train[0].impath.startswith("cat/") and "Saved a new 50/20/30 split" in capsys.readouterr().out
    again = build_dataset(make_cfg(tmp_path, "ImageFolder", seed=2, shots=2))  # other run seed, same split
    assert "Reading split from" in capsys.readouterr().out and read_split(split_file) == saved
    assert len(again.train_x) == 6 and len(again.val) == 1 + 1 + 2  # min(K, n) per class
    assert (tmp_path / "split_fewshot" / "shot_2-seed_2.json").is_file()
    base = build_dataset(make_cfg(tmp_path, "ImageFolder", seed=2, shots=2, subsample="base"))
    assert base.classnames == ["cat", "dog"]
    write_imagefolder(tmp_path, {"zebra": 4})  # the class folders change: split again
    capsys.readouterr()
    assert build_dataset(make_cfg(tmp_path, "ImageFolder")).num_classes == 4
    assert "splitting again" in capsys.readouterr().out


def test_imagefolder_split_is_fixed_and_read_only_safe(tmp_path, monkeypatch):
    write_imagefolder(tmp_path / "a", {"x": 6, "y": 6})
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    monkeypatch.setattr(common, "dir_writable", lambda p: not str(p).startswith(str(tmp_path / "b")))
    da = build_dataset(make_cfg(tmp_path / "a", "ImageFolder", seed=1))
    db = build_dataset(make_cfg(tmp_path / "b", "ImageFolder", seed=9))
    assert [Path(d.impath).relative_to(tmp_path / "a") for d in da.test] == \
           [Path(d.impath).relative_to(tmp_path / "b") for d in db.test]
    assert not (tmp_path / "b" / "split_imagefolder.json").exists()
    assert list((tmp_path / "xdg" / "calib-prompt" / "imagefolder").glob("*/split_imagefolder.json"))


def test_imagefolder_errors(tmp_path):
    with pytest.raises(UserError, match="no class folders"):
        build_dataset(make_cfg(tmp_path, "ImageFolder"))
    write_imagefolder(tmp_path, {"a": 5, "b": 2})
    with pytest.raises(UserError, match="'b' has 2 image"):
        build_dataset(make_cfg(tmp_path, "ImageFolder"))


def test_dataset_configs_name_registered_classes():
    import yaml

    folder = Path(__file__).resolve().parents[1] / "configs" / "datasets"
    expected = {"caltech101": "Caltech101", "oxford_pets": "OxfordPets", "stanford_cars": "StanfordCars",
                "oxford_flowers": "OxfordFlowers", "food101": "Food101", "fgvc_aircraft": "FGVCAircraft",
                "sun397": "SUN397", "dtd": "DescribableTextures", "eurosat": "EuroSAT", "ucf101": "UCF101",
                "imagenet": "ImageNet", "imagenetv2": "ImageNetV2", "imagenet_sketch": "ImageNetSketch",
                "imagenet_a": "ImageNetA", "imagenet_r": "ImageNetR", "imagefolder": "ImageFolder"}
    for stem, name in expected.items():
        assert yaml.safe_load((folder / f"{stem}.yaml").read_text()) == {"DATASET": {"NAME": name}}
        assert name in DATASET_REGISTRY
    assert not {m: e for m, e in datasets.IMPORT_ERRORS.items() if m != "toy"}  # toy: another package's
