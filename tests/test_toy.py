"""toy/: the world's class list, drawing and captions, the dataset tree, and the registered Toy dataset."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from toy import data, world
from toy.world import CLASSES, COLOURS, NUM_BASE, PATTERNS, SHAPES, ToyClass


@pytest.fixture
def small_counts(monkeypatch):
    """A 2/1/1-per-class tree (192 images): same file names and pixels as the first images of the real one."""
    monkeypatch.setattr(data, "COUNTS", {"train": 2, "val": 1, "test": 1})


# ------------------------------------------------------------------------------------------------- classes
def test_class_names_in_words():
    assert ToyClass("solid", "red", "circle").name == "red circle"
    assert ToyClass("striped", "blue", "triangle").name == "striped blue triangle"
    assert ToyClass("dotted", "pink", "cross").folder == "dotted_pink_cross"
    assert CLASSES[0].name == "checkered red triangle" and CLASSES[-1].name == "checkered brown cross"
    assert len(world.WORLD) == 8 * 6 * 4 == len(set(world.WORLD))


def test_halves_cover_every_attribute_and_new_pairs_are_novel():
    assert len(CLASSES) == 48 == len(set(CLASSES)) and set(CLASSES) <= set(world.WORLD)
    assert NUM_BASE == math.ceil(len(CLASSES) / 2)  # the protocol's base = first ceil(n/2) labels
    base, new = CLASSES[:NUM_BASE], CLASSES[NUM_BASE:]
    for half in (base, new):
        # every value in each half, balanced: 3 per colour, 4 per shape, 6 per pattern
        assert {sum(c.colour == v for c in half) for v in COLOURS} == {3}
        assert {sum(c.shape == v for c in half) for v in SHAPES} == {4}
        assert {sum(c.pattern == v for c in half) for v in PATTERNS} == {6}
        for colour in COLOURS:  # per colour: two shapes and two patterns, so shape and pattern both matter
            mine = [c for c in half if c.colour == colour]
            assert len({c.shape for c in mine}) == 2 and len({c.pattern for c in mine}) == 2
    assert not {(c.colour, c.shape) for c in base} & {(c.colour, c.shape) for c in new}
    assert not {(c.colour, c.pattern) for c in base} & {(c.colour, c.pattern) for c in new}


# ------------------------------------------------------------------------------------------------- drawing
def test_render_is_deterministic_given_the_generator():
    a, sa = world.render(CLASSES[5], np.random.default_rng(7))
    b, sb = world.render(CLASSES[5], np.random.default_rng(7))
    c, _ = world.render(CLASSES[5], np.random.default_rng(8))
    assert a.size == (world.IMAGE_SIZE, world.IMAGE_SIZE) and a.mode == "RGB"
    assert a.tobytes() == b.tobytes() and sa == sb
    assert a.tobytes() != c.tobytes()
    assert sa.size in ("small", "large") and sa.background in ("light", "gray", "dark")


@pytest.mark.parametrize("pattern, fraction", [("solid", 0.0), ("striped", 0.5), ("checkered", 0.5),
                                               ("dotted", math.pi * 0.3 ** 2)])
def test_pattern_coverage(pattern, fraction):
    where = world._pattern(pattern, 0, 0, 400, 400, 40.0, np.random.default_rng(0))
    assert where.shape == (400, 400)
    assert where.mean() == pytest.approx(fraction, abs=0.03)


def test_object_colour_dominates_a_solid_drawing():
    """The most frequent saturated colour of a solid object's image is close to its nominal colour."""
    rng = np.random.default_rng(3)
    for name, rgb in COLOURS.items():
        img, _ = world.render(ToyClass("solid", name, "square"), rng)
        px = np.asarray(img).reshape(-1, 3).astype(float)
        dist = np.linalg.norm(px[:, None, :] - np.array(list(COLOURS.values()), float)[None], axis=2)
        nearest = dist.argmin(1)[dist.min(1) < 60]  # pixels that look like one of the palette colours
        assert list(COLOURS)[np.bincount(nearest, minlength=8).argmax()] == name


def test_captions_name_the_class():
    rng = np.random.default_rng(0)
    cls = ToyClass("striped", "green", "star")
    for _ in range(30):
        text = world.caption(cls, world.Scene("small", "dark"), rng)
        words = text.rstrip(".").split()
        assert {"striped", "green", "star"} <= set(words)
        assert "{" not in text and ("background" not in text or "dark background" in text)
    solid = {world.caption(ToyClass("solid", "red", "circle"), world.Scene("large", "light"), rng) for _ in range(200)}
    assert "a photo of a red circle." in solid and "a photo of the large red circle." in solid
    assert any("plain red circle" in t for t in solid) and not any("solid" in t for t in solid)


# ------------------------------------------------------------------------------------------------ the tree
def test_split_json_format_and_counts():
    split = data.split_json()
    assert [len(split[k]) for k in ("train", "val", "test")] == [48 * 30, 48 * 10, 48 * 20]
    assert split["train"][0] == ["checkered_red_triangle/train_000.png", 0, "checkered red triangle"]
    assert split["test"][-1] == ["checkered_brown_cross/test_019.png", 47, "checkered brown cross"]
    labels = [label for _, label, _ in split["train"]]
    assert labels == sorted(labels) and set(labels) == set(range(48))
    paths = [p for k in split for p, _, _ in split[k]]
    assert len(paths) == len(set(paths))


def test_generate_is_deterministic_and_marks_completion(tmp_path, small_counts):
    a = data.generate(tmp_path / "a", progress=False)
    b = data.generate(tmp_path / "b", progress=False)
    assert a.name == "split_toy.json" and data.is_current(tmp_path / "a")
    split = json.loads(a.read_text())
    assert [len(split[k]) for k in ("train", "val", "test")] == [96, 48, 48]
    for rel, _, _ in split["train"][:5] + split["test"][-5:]:
        assert (tmp_path / "a/images" / rel).read_bytes() == (tmp_path / "b/images" / rel).read_bytes()
    drawn = world.render(CLASSES[0], data.image_rng(data.SEED, 0, "train", 0))[0]
    from PIL import Image

    stored = np.asarray(Image.open(tmp_path / "a/images/checkered_red_triangle/train_000.png"))
    assert data.SATURATION < 1 and np.array_equal(stored, np.asarray(world.fade(drawn, data.SATURATION)))
    assert not np.array_equal(stored, np.asarray(drawn))  # the dataset's own imaging condition
    assert not list((tmp_path / "a").rglob("*.tmp*"))  # no temp files left behind
    (tmp_path / "a" / data.MARKER_FILE).write_text(json.dumps({"version": -1}))
    assert not data.is_current(tmp_path / "a")  # a tree from other code is redrawn
    assert not data.is_current(tmp_path / "missing")


# ------------------------------------------------------------------------------------------- the dataset
def _cfg(root, subsample="all", shots=-1, seed=1):
    from dassl.config import get_cfg_default

    import datasets

    cfg = get_cfg_default()
    datasets.add_dataset_config(cfg)
    cfg.DATASET.ROOT, cfg.DATASET.NAME = str(root), "Toy"
    cfg.DATASET.SUBSAMPLE_CLASSES, cfg.DATASET.NUM_SHOTS, cfg.SEED = subsample, shots, seed
    return cfg


def test_toy_dataset_draws_itself_and_splits_base_new(tmp_path, small_counts, monkeypatch):
    import random

    from dassl.data.datasets import build_dataset
    import datasets

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    ds = build_dataset(_cfg(tmp_path))
    assert (tmp_path / "toy/split_toy.json").is_file() and (tmp_path / "toy/images").is_dir()
    assert (len(ds.train_x), len(ds.val), len(ds.test)) == (96, 48, 48)
    assert ds.num_classes == 48 and ds.classnames == world.classnames()
    assert datasets.get_template("Toy") == "a photo of a {}."

    random.seed(1)
    base = build_dataset(_cfg(tmp_path, "base", shots=2))
    new = build_dataset(_cfg(tmp_path, "new", shots=2))
    assert base.classnames == world.classnames()[:24] and new.classnames == world.classnames()[24:]
    assert (len(base.train_x), len(base.test)) == (24 * 2, 24) and (len(new.train_x), len(new.test)) == (48, 24)
    assert sorted({d.label for d in new.test}) == list(range(24))
    assert (tmp_path / "toy/split_fewshot").is_dir()


def test_toy_dataset_unwritable_root_is_a_user_error(tmp_path, monkeypatch):
    from common.errors import UserError
    from dassl.data.datasets import build_dataset

    import datasets.toy as toy_ds

    monkeypatch.setattr(toy_ds, "dir_writable", lambda path: False)
    with pytest.raises(UserError, match="not writable"):
        build_dataset(_cfg(tmp_path))
