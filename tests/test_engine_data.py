"""dassl.data: Datum pickles, few-shot sampling, loaders, transforms, unreadable images, DataManager."""
import os
import pickle
import random

import pytest
import torch
from PIL import Image

from common.errors import UserError
from dassl.config import get_cfg_default
from dassl.data import DataManager, DatasetWrapper, build_data_loader
from dassl.data.datasets import DATASET_REGISTRY, DatasetBase, Datum, build_dataset
from dassl.data.samplers import build_sampler
from dassl.data.transforms import build_transform
from tests.helpers import make_image_folder

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def make_jpeg(path, size=(40, 30), color=(120, 30, 200)):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", size, color).save(path, "JPEG")
    return str(path)


def make_tree(root, classes=("cat", "dog", "emu"), per_class=3, size=(40, 30)):
    for c, name in enumerate(classes):
        for i in range(per_class):
            make_jpeg(os.path.join(root, name, f"{name}_{i}.jpg"), size=size, color=(40 * c, 10 * i, 90))


@DATASET_REGISTRY.register()
class EngineTestToy(DatasetBase):
    """root/<classname>/*.jpg; train = test = everything, val = the first image of each class."""

    def __init__(self, cfg):
        root = os.path.abspath(os.path.expanduser(cfg.DATASET.ROOT))
        items = []
        for label, name in enumerate(sorted(os.listdir(root))):
            for f in sorted(os.listdir(os.path.join(root, name))):
                items.append(Datum(impath=os.path.join(root, name, f), label=label, classname=name))
        val = [it for it in items if it.impath.endswith("_0.jpg")]
        super().__init__(train_x=items, val=val, test=items)


def toy_cfg(root, **dl):
    cfg = get_cfg_default()
    cfg.DATASET.ROOT = str(root)
    cfg.DATASET.NAME = "EngineTestToy"
    cfg.INPUT.SIZE = (16, 16)
    cfg.INPUT.TRANSFORMS = ("random_resized_crop", "random_flip", "normalize")
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.DATALOADER.TRAIN_X.BATCH_SIZE = 4
    cfg.DATALOADER.TEST.BATCH_SIZE = 4
    for k, v in dl.items():
        setattr(cfg.DATALOADER, k, v)
    return cfg


# ---------- Datum ----------
class _FakeDatum:
    """Stands in for upstream Dassl's Datum when writing a pickle."""

    def __init__(self, impath, label, domain, classname):
        self._impath, self._label, self._domain, self._classname = impath, label, domain, classname


def test_datum_pickle_written_under_dassl_path_loads():
    blob = pickle.dumps({"train": [_FakeDatum("/data/x/a.jpg", 3, 0, "cat")], "val": []}, protocol=2)
    ours = f"{_FakeDatum.__module__}\n{_FakeDatum.__qualname__}\n".encode()
    assert blob.count(ours) == 1
    blob = blob.replace(ours, b"dassl.data.datasets.base_dataset\nDatum\n")  # as Dassl's caches reference it
    item = pickle.loads(blob)["train"][0]
    assert type(item) is Datum
    assert (item.impath, item.label, item.domain, item.classname) == ("/data/x/a.jpg", 3, 0, "cat")
    # and our own pickles reference the same path, with the same private attributes
    again = pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)
    assert b"dassl.data.datasets.base_dataset" in again and b"_impath" in again
    assert vars(pickle.loads(again)) == vars(item)


def test_datum_checks_file(tmp_path):
    with pytest.raises(UserError, match="missing.jpg"):
        with pytest.warns(UserWarning):
            Datum(impath=str(tmp_path / "missing.jpg"))
    assert Datum(impath=str(tmp_path / "missing.jpg"), check_exists=False).label == 0
    with pytest.raises(TypeError):
        Datum(impath=tmp_path / "a.jpg", check_exists=False)


# ---------- DatasetBase ----------
def fake_items(labels):
    return [Datum(f"/img/{i}_{lab}.jpg", lab, 0, f"c{lab}", check_exists=False) for i, lab in enumerate(labels)]


def test_num_classes_and_lab2cname_come_from_train_x():
    ds = DatasetBase(train_x=fake_items([3, 1, 1]), val=fake_items([7]), test=fake_items([0, 5]))
    assert ds.num_classes == 4  # max train label + 1
    assert ds.lab2cname == {1: "c1", 3: "c3"} and ds.classnames == ["c1", "c3"]


def test_fewshot_first_appearance_order_and_fewer_than_k():
    items = fake_items([2, 2, 2, 0, 0, 0, 0, 1])
    ds = DatasetBase(train_x=items)
    random.seed(5)
    got = ds.generate_fewshot_dataset(items, num_shots=2)
    random.seed(5)
    expected = random.sample(items[0:3], 2) + random.sample(items[3:7], 2) + [items[7]]  # label order 2, 0, 1
    assert got == expected
    assert [d.label for d in got] == [2, 2, 0, 0, 1]  # label 1 has 1 < K items: all of it, no repeats
    random.seed(5)
    assert ds.generate_fewshot_dataset(items, num_shots=2) == got  # deterministic under the seed

    random.seed(0)
    rep = ds.generate_fewshot_dataset(items, num_shots=3, repeat=True)
    assert [d.label for d in rep] == [2, 2, 2, 0, 0, 0, 1, 1, 1]
    assert ds.generate_fewshot_dataset(items, num_shots=-1) is items
    train, val = ds.generate_fewshot_dataset(items, items[3:], num_shots=1)
    assert len(train) == 3 and len(val) == 2  # val holds labels 0 and 1


def test_split_dataset_by_label():
    groups = DatasetBase.split_dataset_by_label(fake_items([1, 0, 1]))
    assert list(groups) == [1, 0] and len(groups[1]) == 2


# ---------- loaders ----------
@pytest.mark.parametrize("n, bs, is_train, batches", [(10, 4, True, 2), (10, 4, False, 3), (3, 4, True, 1),
                                                      (8, 4, True, 2)])
def test_drop_last_batch_counts(tmp_path, n, bs, is_train, batches):
    cfg = toy_cfg(tmp_path)
    loader = build_data_loader(cfg, sampler_type="RandomSampler" if is_train else "SequentialSampler",
                               data_source=fake_items([0] * n), batch_size=bs, is_train=is_train)
    assert len(loader) == batches


def test_loader_errors(tmp_path):
    cfg = toy_cfg(tmp_path)
    with pytest.raises(UserError, match="empty split"):
        build_data_loader(cfg, data_source=[], batch_size=4)
    with pytest.raises(UserError, match="RandomDomainSampler"):
        build_sampler("RandomDomainSampler", data_source=[1])


# ---------- transforms ----------
def test_test_transform_gives_3x224x224_from_jpeg(tmp_path, capsys):
    cfg = get_cfg_default()
    cfg.INPUT.INTERPOLATION = "bicubic"
    cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD = CLIP_MEAN, CLIP_STD
    cfg.INPUT.TRANSFORMS = ("random_resized_crop", "random_flip", "normalize")
    img = Image.open(make_jpeg(tmp_path / "a.jpg", size=(300, 200))).convert("RGB")
    capsys.readouterr()
    tfm_test = build_transform(cfg, is_train=False)
    tfm_train = build_transform(cfg, is_train=True)
    out = capsys.readouterr().out.splitlines()
    assert tfm_test(img).shape == (3, 224, 224) and tfm_train(img).shape == (3, 224, 224)
    assert out[:4] == ["Building transform_test", "+ resize the smaller edge to 224", "+ 224x224 center crop",
                       "+ to torch tensor of range [0, 1]"]
    assert out[5:9] == ["Building transform_train", "+ random resized crop (size=(224, 224), scale=(0.08, 1.0))",
                        "+ random flip", "+ to torch tensor of range [0, 1]"]
    assert out[9] == f"+ normalization (mean={CLIP_MEAN}, std={CLIP_STD})"
    assert not any("resize to" in line for line in out)  # no plain resize with a random crop
    # the test transform equals CLIP's preprocessing: smaller edge resize + center crop
    cfg.INPUT.TRANSFORMS = ()
    x = build_transform(cfg, is_train=False)(Image.new("RGB", (448, 224), (255, 0, 0)))
    assert x.shape == (3, 224, 224) and torch.allclose(x[0], torch.ones(224, 224), atol=1e-2)


def test_unknown_transforms_fail(tmp_path):
    cfg = get_cfg_default()
    cfg.INPUT.TRANSFORMS = ("random_flipp",)
    with pytest.raises(UserError, match='Did you mean "random_flip"'):
        build_transform(cfg)
    cfg.INPUT.TRANSFORMS = ("randaugment",)
    with pytest.raises(UserError, match="does not implement"):
        build_transform(cfg)
    cfg.INPUT.TRANSFORMS = ()
    cfg.INPUT.INTERPOLATION = "bicubicc"
    with pytest.raises(UserError, match="INPUT.INTERPOLATION"):
        build_transform(cfg)
    cfg.INPUT.NO_TRANSFORM = True
    assert build_transform(cfg) is None


# ---------- unreadable images ----------
def corrupt_tree(root):
    make_tree(root, per_class=2)
    bad = os.path.join(root, "dog", "dog_1.jpg")
    with open(bad, "rb") as f:
        data = f.read()
    with open(bad, "wb") as f:
        f.write(data[: len(data) // 2])  # truncated JPEG
    garbage = os.path.join(root, "emu", "emu_0.jpg")
    with open(garbage, "wb") as f:
        f.write(b"not an image at all")
    return bad, garbage


def test_corrupt_image_raises_user_error_naming_file(tmp_path):
    bad, _ = corrupt_tree(tmp_path)
    cfg = toy_cfg(tmp_path)
    items = [Datum(bad, 0, 0, "dog")]
    wrapper = DatasetWrapper(cfg, items, transform=build_transform(cfg, is_train=False))
    with pytest.raises(UserError) as exc:
        wrapper[0]
    assert bad in str(exc.value) and "DATALOADER.SKIP_BAD_IMAGES True" in str(exc.value)


@pytest.mark.parametrize("workers", [0, 1])
def test_skip_bad_images_drops_and_counts(tmp_path, workers, capsys):
    bad, garbage = corrupt_tree(tmp_path)
    cfg = toy_cfg(tmp_path, SKIP_BAD_IMAGES=True, NUM_WORKERS=workers, PERSISTENT_WORKERS=False)
    dm = DataManager(cfg)
    assert len(dm.dataset.test) == 6
    seen = []
    for _ in range(2):  # two passes: each bad file is still counted once
        for batch in dm.test_loader:
            seen += batch["impath"]
            assert batch["img"].shape[1:] == (3, 16, 16) and len(batch["label"]) == len(batch["impath"])
    assert len(seen) == 8 and bad not in seen and garbage not in seen
    assert dm.num_skipped_images == 2 and set(dm.skipped_paths()) == {bad, garbage}
    dm.report_skipped()
    assert "Skipped 2 unreadable image(s)" in capsys.readouterr().out


def test_all_bad_batch_collates_to_none(tmp_path):
    _, garbage = corrupt_tree(tmp_path)
    cfg = toy_cfg(tmp_path, SKIP_BAD_IMAGES=True)
    loader = build_data_loader(cfg, data_source=[Datum(garbage, 2, 0, "emu")], batch_size=1, is_train=False,
                               tfm=build_transform(cfg, is_train=False))
    assert list(loader) == [None]


# ---------- DataManager / build_dataset ----------
def test_data_manager_builds_loaders_and_prints_table(tmp_path, capsys):
    make_tree(tmp_path, per_class=3)
    dm = DataManager(toy_cfg(tmp_path))
    out = capsys.readouterr().out
    assert "Loading dataset: EngineTestToy" in out
    for row in ("Dataset    EngineTestToy", "# classes  3", "# train_x  9", "# val      3", "# test     9"):
        assert row in out
    assert dm.num_classes == 3 and dm.lab2cname == {0: "cat", 1: "dog", 2: "emu"}
    assert len(dm.train_loader_x) == 2 and len(dm.val_loader) == 1 and len(dm.test_loader) == 3
    batch = next(iter(dm.train_loader_x))
    assert batch["img"].shape == (4, 3, 16, 16) and set(batch) == {"img", "label", "domain", "impath", "index"}


def test_build_dataset_unknown_name(tmp_path):
    cfg = toy_cfg(tmp_path)
    cfg.DATASET.NAME = "EngineTestTyo"
    with pytest.raises(UserError, match='Did you mean "EngineTestToy"'):
        build_dataset(cfg)
    cfg.DATASET.NAME = ""
    with pytest.raises(UserError, match="DATASET.NAME"):
        build_dataset(cfg)


def test_build_dataset_names_the_dataset_modules_that_failed_to_import(tmp_path, monkeypatch):
    """The application reports its broken dataset modules (IMPORT_FAILURES); an unknown name then lists them."""
    import dassl.data.datasets.build as build_module

    failure = "ModuleNotFoundError: No module named 'a_module_that_does_not_exist'"
    monkeypatch.setattr(build_module, "IMPORT_FAILURES", {"datasets.engine_broken_ds": failure})
    cfg = toy_cfg(tmp_path)
    cfg.DATASET.NAME = "EngineBrokenDs"
    with pytest.raises(UserError, match="engine_broken_ds.*a_module_that_does_not_exist"):
        build_dataset(cfg)


def test_the_engine_imports_no_dataset_module():
    """dassl.data builds datasets from its registry only: the application imports (registers) its modules."""
    import subprocess
    import sys

    code = ("import sys, dassl.data, dassl.engine; from dassl.data.datasets import build_dataset; "
            "assert not any(m == 'datasets' or m.startswith('datasets.') for m in sys.modules), sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=os.path.dirname(os.path.dirname(__file__)))


def _epoch(loader):
    """One epoch's (indices, images) per batch."""
    return [(b["index"].tolist(), b["img"].clone()) for b in loader]


@pytest.mark.parametrize("workers", [0, 2])
def test_data_stream_depends_on_the_run_seed_only(tmp_path, workers):
    """Shuffling and random augmentation draw from the loader's own generators (seeded from SEED): drawing from
    the global RNGs in between (model initialisation, a method's random permutations) never shifts them, and the
    global RNG is left as it was by the augmentation."""
    make_image_folder(tmp_path, n_classes=3, per_class=4, size=24)  # noisy: every crop and flip shows
    cfg = toy_cfg(tmp_path, NUM_WORKERS=workers)
    cfg.SEED = 3
    dm_cfg = cfg.clone()
    tfm = build_transform(cfg, is_train=True)

    def stream(disturb: bool):
        torch.manual_seed(0)
        loader = build_data_loader(cfg, "RandomSampler", build_dataset(dm_cfg).train_x, 4, tfm=tfm, is_train=True)
        epochs = []
        for _ in range(2):
            if disturb:
                torch.randn(1000), random.random()
            before = torch.get_rng_state()
            epochs.append(_epoch(loader))
            assert workers or torch.equal(before, torch.get_rng_state())  # augmentation left the global RNG alone
        return epochs, loader

    (quiet, loader), (noisy, _) = stream(False), stream(True)
    for a, b in zip(quiet, noisy):
        assert [i for i, _ in a] == [i for i, _ in b]
        assert all(torch.equal(x, y) for (_, x), (_, y) in zip(a, b))
    assert loader.dataset.generator is not None
    other = cfg.clone()
    other.SEED = 4
    changed = build_data_loader(other, "RandomSampler", build_dataset(dm_cfg).train_x, 4, tfm=tfm, is_train=True)
    assert [i for i, _ in _epoch(changed)] != [i for i, _ in quiet[0]] or not all(
        torch.equal(x, y) for (_, x), (_, y) in zip(_epoch(changed), quiet[0]))


def test_augmentation_generator_is_in_the_checkpoint_rng_state(tmp_path):
    from dassl.utils import get_rng_state, set_rng_state

    make_image_folder(tmp_path, n_classes=3, per_class=4, size=24)
    cfg = toy_cfg(tmp_path)
    cfg.SEED = 1
    loader = build_data_loader(cfg, "RandomSampler", build_dataset(cfg).train_x, 4,
                               tfm=build_transform(cfg, is_train=True), is_train=True)
    gens = {"train_loader_x": loader.generator, "train_augment": loader.dataset.generator}
    _epoch(loader)
    saved = get_rng_state(gens)
    second = _epoch(loader)
    _epoch(loader)
    set_rng_state(saved, gens)
    again = _epoch(loader)
    assert [i for i, _ in second] == [i for i, _ in again]
    assert all(torch.equal(x, y) for (_, x), (_, y) in zip(second, again))
