"""The on-disk cache of frozen test-image features (trainers/feature_cache.py, PromptTrainer.image_features).

Its key changes with everything that changes the features (tower weights, precision, transform, image list, an
image file rewritten) and with nothing else; TEST.FEATURE_CACHE False writes nothing; a prompted image tower caches
only frozen CLIP's features (for the zero-shot logits); an evaluation from cached features gives exactly the logits
of an uncached one.
"""
from __future__ import annotations

import contextlib
import os
from collections import namedtuple

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import clip
import train
from dassl.data.transforms import build_transform
from dassl.engine import build_trainer
from tests.helpers import coop_argv, make_image_folder
from trainers import feature_cache
from trainers.base import PromptModel

torch.set_num_threads(1)
Item = namedtuple("Item", "impath label")



@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("cache_data"), n_classes=2, per_class=5)


def setup_cfg(root, *opts):
    return train.setup_cfg(train.parse_args(coop_argv(root, "unused", opts=opts)))


def items_of(root) -> list[Item]:
    return [Item(str(p), i) for i, d in enumerate(sorted(p for p in root.iterdir() if p.is_dir()))
            for p in sorted(d.glob("*.png"))]


def key(visual, cfg, items, extra=None) -> str:
    return feature_cache.feature_key(visual, build_transform(cfg, is_train=False), items,
                                     {"precision": "fp32"} if extra is None else extra)


# ------------------------------------------------------------------------------------------------ the key
@pytest.fixture(scope="module")
def reference(data_root):
    return key(clip.load("tiny-vit").visual, setup_cfg(data_root), items_of(data_root))


def test_identical_setups_share_the_key(data_root, reference):
    """Separately loaded towers and separately built transforms over the same images: one key."""
    assert key(clip.load("tiny-vit").visual, setup_cfg(data_root), items_of(data_root)) == reference
    assert len(reference) == 32


def _one_weight_changed():
    visual = clip.load("tiny-vit").visual
    with torch.no_grad():
        visual.proj[0, 0] += 0.5  # a fine-tuned checkpoint: one value of the projection differs
    return visual


CHANGES = {
    "other weights (seed)": lambda root: key(clip.load("tiny-vit", seed=1).visual, setup_cfg(root), items_of(root)),
    "one weight changed": lambda root: key(_one_weight_changed(), setup_cfg(root), items_of(root)),
    "bf16 weights": lambda root: key(clip.load("tiny-vit", precision="bf16").visual, setup_cfg(root),
                                     items_of(root)),
    "autocast precision": lambda root: key(clip.load("tiny-vit").visual, setup_cfg(root), items_of(root),
                                           {"precision": "amp"}),
    "INPUT.SIZE": lambda root: key(clip.load("tiny-vit").visual, setup_cfg(root, "INPUT.SIZE", "(256, 256)"),
                                   items_of(root)),
    "INPUT.INTERPOLATION": lambda root: key(clip.load("tiny-vit").visual,
                                            setup_cfg(root, "INPUT.INTERPOLATION", "bilinear"), items_of(root)),
    "INPUT.PIXEL_MEAN": lambda root: key(clip.load("tiny-vit").visual,
                                         setup_cfg(root, "INPUT.PIXEL_MEAN", "[0.5, 0.5, 0.5]"), items_of(root)),
    "one image fewer": lambda root: key(clip.load("tiny-vit").visual, setup_cfg(root), items_of(root)[:-1]),
    "image order": lambda root: key(clip.load("tiny-vit").visual, setup_cfg(root), items_of(root)[::-1]),
    "a label": lambda root: key(clip.load("tiny-vit").visual, setup_cfg(root),
                                [Item(items_of(root)[0].impath, 1)] + items_of(root)[1:]),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_key_changes_with(change, data_root, reference):
    assert CHANGES[change](data_root) != reference


def test_key_changes_when_an_image_file_is_rewritten(tmp_path):
    """Same size, rewritten within the same second (the mtime moves by 1 µs): the key still changes."""
    root = make_image_folder(tmp_path / "imgs", n_classes=2, per_class=3)
    visual, cfg, items = clip.load("tiny-vit").visual, setup_cfg(root), items_of(root)
    before = key(visual, cfg, items)
    path = items[0].impath
    st = os.stat(path)
    data = bytearray(open(path, "rb").read())
    data[-20] ^= 0xFF
    with open(path, "wb") as f:
        f.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1000))
    assert os.stat(path).st_size == st.st_size
    assert key(visual, cfg, items) != before


# ------------------------------------------------------------------------------------------------ the trainer
@pytest.fixture(scope="module")
def trainer(data_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("cache_runs")
    argv = coop_argv(data_root, out / "run", opts=("TRAINER.COOP.PREC", "fp32", "DATALOADER.TEST.BATCH_SIZE", "2",
                                                   "TEST.FEATURE_CACHE_DIR", str(out / "unused")))
    torch.manual_seed(0)
    return build_trainer(train.setup_cfg(train.parse_args(argv)))


@contextlib.contextmanager
def cfg_test_keys(trainer, **test_keys):
    """Temporarily set cfg.TEST keys of a built trainer."""
    saved = {k: trainer.cfg.TEST[k] for k in test_keys}

    def assign(values):
        trainer.cfg.defrost()
        for k, v in values.items():
            trainer.cfg.TEST[k] = v
        trainer.cfg.freeze()

    assign(test_keys)
    try:
        yield
    finally:
        assign(saved)


@contextlib.contextmanager
def image_passes(trainer):
    """Counts images through the frozen image tower (its first conv sees every image pass)."""
    seen = []
    handle = trainer.model.clip.visual.conv1.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    try:
        yield seen
    finally:
        handle.remove()


def cache_files(folder) -> list:
    return sorted(p.name for p in folder.glob("*.pt")) if folder.exists() else []


def test_cache_off_writes_nothing(trainer, tmp_path):
    with cfg_test_keys(trainer, FEATURE_CACHE=False, FEATURE_CACHE_DIR=str(tmp_path)):
        assert trainer.image_features(trainer.test_loader) is None
        with image_passes(trainer) as seen:
            trainer.predict(trainer.test_loader)
    assert cache_files(tmp_path) == []
    assert sum(seen) == len(trainer.test_loader.dataset)


def test_cached_evaluation_equals_uncached(trainer, tmp_path):
    n = len(trainer.test_loader.dataset)
    with cfg_test_keys(trainer, FEATURE_CACHE=False, FEATURE_CACHE_DIR=str(tmp_path)):
        plain = trainer.predict(trainer.test_loader)
    with cfg_test_keys(trainer, FEATURE_CACHE=True, FEATURE_CACHE_DIR=str(tmp_path)):
        with image_passes(trainer) as first_pass:
            first = trainer.predict(trainer.test_loader)
        assert cache_files(tmp_path) == [trainer.feature_cache_path(trainer.test_loader).name]
        with image_passes(trainer) as second_pass:
            second = trainer.predict(trainer.test_loader)
    assert sum(first_pass) == n and second_pass == []  # the second evaluation never touches the image tower
    for pred in (first, second):
        for k in ("logits", "zs_logits", "labels", "text_features"):
            np.testing.assert_array_equal(pred[k], plain[k], err_msg=k)


def test_identical_trainers_share_the_cache(trainer, data_root, tmp_path):
    with cfg_test_keys(trainer, FEATURE_CACHE_DIR=str(tmp_path)):
        trainer.predict(trainer.test_loader)
    argv = coop_argv(data_root, tmp_path / "again", opts=(
        "TRAINER.COOP.PREC", "fp32", "DATALOADER.TEST.BATCH_SIZE", "2", "TEST.FEATURE_CACHE_DIR", str(tmp_path)))
    other = build_trainer(train.setup_cfg(train.parse_args(argv)))
    assert other.feature_cache_path(other.test_loader).name == trainer.feature_cache_path(trainer.test_loader).name
    with image_passes(other) as seen:
        other.predict(other.test_loader)
    assert seen == [] and len(cache_files(tmp_path)) == 1


def test_precision_and_encoder_are_in_the_trainers_key(trainer, monkeypatch):
    path = trainer.feature_cache_path(trainer.test_loader)
    monkeypatch.setattr(trainer, "precision", "amp")
    assert trainer.feature_cache_path(trainer.test_loader) != path
    monkeypatch.setattr(trainer, "precision", "fp32")
    assert trainer.feature_cache_path(trainer.test_loader) == path

    class OtherEncoding(type(trainer.model)):
        def encode_image(self, image):
            return PromptModel.encode_image(self, image) * 1.0

    monkeypatch.setattr(trainer.model, "__class__", OtherEncoding)
    assert trainer.feature_cache_path(trainer.test_loader) != path


def test_prompted_image_tower_caches_only_the_frozen_features(trainer, tmp_path, monkeypatch):
    """A prompted tower's own features depend on learnable parameters: never cached, one pass per evaluation. The
    zero-shot logits need frozen CLIP's features: computed once, cached, and identical to an uncached pass."""
    monkeypatch.setattr(trainer.model, "image_prompted", True, raising=False)
    n = len(trainer.test_loader.dataset)
    with cfg_test_keys(trainer, FEATURE_CACHE=False, FEATURE_CACHE_DIR=str(tmp_path)):
        with image_passes(trainer) as uncached:
            plain = trainer.predict(trainer.test_loader)
    assert sum(uncached) == 2 * n and cache_files(tmp_path) == []  # the method's pass + the frozen pass
    with cfg_test_keys(trainer, FEATURE_CACHE=True, FEATURE_CACHE_DIR=str(tmp_path)):
        assert trainer.image_features(trainer.test_loader) is None
        passes, preds = [], []
        for _ in range(2):
            with image_passes(trainer) as seen:
                preds.append(trainer.predict(trainer.test_loader))
            passes.append(sum(seen))
    assert passes == [2 * n + 1, n]  # the second evaluation reuses the frozen features (+1: the one-image probe
    # that the frozen path is frozen, image_path_learnable, run once)
    assert cache_files(tmp_path) == [trainer.feature_cache_path(trainer.test_loader, frozen=True).name]
    assert trainer.feature_cache_path(trainer.test_loader, frozen=True) != trainer.feature_cache_path(
        trainer.test_loader)
    for pred in preds:
        for k in ("logits", "zs_logits", "labels"):
            np.testing.assert_array_equal(pred[k], plain[k], err_msg=k)


def test_frozen_features_misaligned_with_labels_fall_back_to_a_frozen_pass(trainer, tmp_path, monkeypatch):
    monkeypatch.setattr(trainer.model, "image_prompted", True, raising=False)
    with cfg_test_keys(trainer, FEATURE_CACHE=True, FEATURE_CACHE_DIR=str(tmp_path)):
        plain = trainer.predict(trainer.test_loader)
        feats, labels = trainer.image_features(trainer.test_loader, frozen=True)
        monkeypatch.setattr(trainer, "image_features",
                            lambda loader, frozen=False: (feats * 0, labels.flip(0)) if frozen else None)
        with image_passes(trainer) as seen:
            again = trainer.predict(trainer.test_loader)
    assert sum(seen) > len(labels)  # some batches took a frozen pass instead of the misaligned features
    np.testing.assert_array_equal(again["zs_logits"], plain["zs_logits"])


def test_image_prompted_method_zero_shot_logits_from_the_cache(data_root, tmp_path):
    """IVLP (prompts in both towers): zero-shot logits saved with the predictions are frozen CLIP's, with and
    without the cache, and the cached second evaluation runs the image tower once per image."""
    from tests.test_methods_deep import build_trainer as build_deep

    ivlp = build_deep("IVLP", data_root, tmp_path / "run", "TEST.FEATURE_CACHE_DIR", str(tmp_path / "cache"))
    assert ivlp.model.image_prompted
    loader = ivlp.test_loader
    with cfg_test_keys(ivlp, FEATURE_CACHE=False):
        plain = ivlp.predict(loader)
    images = torch.cat([ivlp.parse_batch_test(b)[0] for b in loader])
    with torch.no_grad():
        frozen = F.normalize(ivlp.model.clip.encode_image(images).float(), dim=-1)
    expected = (ivlp.model.logit_scale * frozen @ ivlp.zs_text_features.t()).numpy()
    np.testing.assert_allclose(plain["zs_logits"], expected, rtol=1e-5, atol=1e-5)
    ivlp.predict(loader)
    with image_passes(ivlp) as seen:
        cached = ivlp.predict(loader)
    assert sum(seen) == len(loader.dataset)
    np.testing.assert_array_equal(cached["zs_logits"], plain["zs_logits"])
    np.testing.assert_array_equal(cached["logits"], plain["logits"])


def _registered_prompt_methods():
    import trainers  # noqa: F401  (registers every method)
    from dassl.engine import TRAINER_REGISTRY
    from trainers.base import PromptTrainer

    return sorted(n for n in TRAINER_REGISTRY.registered_names()
                  if issubclass(TRAINER_REGISTRY.get(n), PromptTrainer))


@pytest.mark.parametrize("method", _registered_prompt_methods())
def test_image_prompted_flag_matches_what_the_image_features_depend_on(method, data_root):
    """The cache is used exactly when ``image_prompted`` is False, so the flag must say whether a method's image
    features move with its learnable parameters (every registered method, on tiny-vit)."""
    import io
    from pathlib import Path

    from dassl.engine import TRAINER_REGISTRY

    cls = TRAINER_REGISTRY.get(method)
    files = sorted((Path(train.__file__).parent / "configs" / "trainers" / method).glob("vit_b16*.yaml"),
                   key=lambda p: len(p.name))
    argv = ["--trainer", method, "--backbone", "tiny-vit", *(["--config-file", str(files[0])] if files else [])]
    cfg = train.setup_cfg(train.parse_args(argv))
    names = ["red thing", "green thing", "blue thing"]
    frozen = clip.load("tiny-vit").requires_grad_(False)  # as PromptTrainer.build_model hands it over
    torch.manual_seed(0)
    with contextlib.redirect_stdout(io.StringIO()):
        model = cls.model_class(cfg, names, frozen, torch.nn.functional.normalize(torch.randn(3, 64), dim=-1))
    model.eval()
    image = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = model.encode_image(image)
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p))
        moved = not torch.allclose(model.encode_image(image), before)
    assert model.image_prompted == moved


# ------------------------------------------------------------- issue 14 item 5: code, versions, best effort, checked
def test_code_fingerprint_follows_the_source_files(tmp_path, monkeypatch):
    """Whole defining files are hashed: an edit of the file of a function or of a module class changes it; a
    file elsewhere does not; the names are relative to sys.path, so a copy of the code elsewhere agrees."""
    import importlib
    import sys

    def write(folder, body):
        folder.mkdir(exist_ok=True)
        (folder / "encmod.py").write_text(body)
        sys.modules.pop("encmod", None)
        monkeypatch.syspath_prepend(str(folder))
        importlib.invalidate_caches()
        return importlib.import_module("encmod")

    body = "import torch\nclass Enc(torch.nn.Module):\n    pass\ndef encode(x):\n    return x\n"
    mod = write(tmp_path / "a", body)
    first = feature_cache.code_fingerprint(mod.encode, mod.Enc())
    assert feature_cache.code_fingerprint(mod.encode, mod.Enc()) == first
    mod = write(tmp_path / "b", body)  # the same code in another checkout
    assert feature_cache.code_fingerprint(mod.encode, mod.Enc()) == first
    mod = write(tmp_path / "c", body.replace("return x", "return x * 1"))
    assert feature_cache.code_fingerprint(mod.encode, mod.Enc()) != first
    assert feature_cache.code_fingerprint(mod.encode) != feature_cache.code_fingerprint(mod.encode, torch.nn.Conv2d(
        1, 1, 1))  # a module class of the tower adds its file


def _edited(path_end):
    """_file_sha256 as if the file ending in ``path_end`` had been edited."""
    real = feature_cache._file_sha256
    return lambda path: real(path) + ("edited" if path.replace(os.sep, "/").endswith(path_end) else "")


@pytest.mark.parametrize("path_end", ["clip/encoders.py", "open_clip/transformer.py", "open_clip/model.py",
                                      "trainers/base.py", "dassl/data/data_manager.py"])
def test_trainers_key_changes_when_the_encoding_code_changes(trainer, monkeypatch, path_end):
    """On main the key held only the encode function's name: an edited clip/encoders.py reused old features."""
    paths = (trainer.feature_cache_path(trainer.test_loader), trainer.feature_cache_path(trainer.test_loader, True))
    monkeypatch.setattr(feature_cache, "_file_sha256", _edited(path_end))
    assert trainer.feature_cache_path(trainer.test_loader) != paths[0]
    assert trainer.feature_cache_path(trainer.test_loader, frozen=True) != paths[1]


def test_method_file_counts_only_when_it_overrides_encode_image(trainer, monkeypatch):
    """CoOp's model does not override encode_image: trainers/coop.py is not part of its features' code."""
    path = trainer.feature_cache_path(trainer.test_loader)
    monkeypatch.setattr(feature_cache, "_file_sha256", _edited("trainers/coop.py"))
    assert trainer.feature_cache_path(trainer.test_loader) == path


@pytest.mark.parametrize("library", ["torch", "open_clip", "torchvision", "pillow"])
def test_key_changes_with_the_library_versions(data_root, reference, monkeypatch, library):
    real = feature_cache.library_versions()
    assert library in real
    monkeypatch.setattr(feature_cache, "library_versions", lambda: {**real, library: real[library] + ".post1"})
    assert key(clip.load("tiny-vit").visual, setup_cfg(data_root), items_of(data_root)) != reference


def _under_a_file(tmp_path):
    """A cache folder that cannot be created, even by root (chmod does not stop root): a path under a file."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    return blocker / "features"


def test_unwritable_cache_is_one_warning_and_the_evaluation_goes_on(trainer, tmp_path, capsys):
    folder = _under_a_file(tmp_path)
    with cfg_test_keys(trainer, FEATURE_CACHE=False):
        plain = trainer.predict(trainer.test_loader)
    with cfg_test_keys(trainer, FEATURE_CACHE=True, FEATURE_CACHE_DIR=str(folder)):
        capsys.readouterr()
        pred = trainer.predict(trainer.test_loader)
    out = capsys.readouterr().out
    warnings = [line for line in out.splitlines() if "Warning" in line]
    assert len(warnings) == 1 and "cannot write the feature cache" in warnings[0] and str(folder) in warnings[0]
    assert "TEST.FEATURE_CACHE_DIR" in warnings[0] and "Traceback" not in out
    np.testing.assert_array_equal(pred["logits"], plain["logits"])


def test_corrupt_cache_entry_is_a_warning_recomputed_and_replaced(trainer, tmp_path, capsys):
    with cfg_test_keys(trainer, FEATURE_CACHE=True, FEATURE_CACHE_DIR=str(tmp_path)):
        good = trainer.predict(trainer.test_loader)
        path = trainer.feature_cache_path(trainer.test_loader)
        for bad in (b"not a torch file", None):
            if bad is None:  # a loadable entry holding the wrong number of images
                torch.save({"features": torch.zeros(1, 64), "labels": torch.zeros(1, dtype=torch.long)}, path)
            else:
                path.write_bytes(bad)
            capsys.readouterr()
            with image_passes(trainer) as seen:
                again = trainer.predict(trainer.test_loader)
            out = capsys.readouterr().out
            assert f"Warning: ignoring the unreadable feature cache entry {path}" in out
            assert sum(seen) == len(trainer.test_loader.dataset)  # recomputed
            np.testing.assert_array_equal(again["logits"], good["logits"])
            assert feature_cache.load(path, expected=len(trainer.test_loader.dataset)) is not None  # rewritten


def test_a_run_with_an_unwritable_cache_finishes_with_its_record(data_root, tmp_path):
    """On main the failed write after training was a traceback and no results.json."""
    import io
    import json

    out = tmp_path / "run"
    argv = coop_argv(data_root, out, opts=("OPTIM.MAX_EPOCH", "1", "DATASET.NUM_SHOTS", "1",
                                           "TEST.FEATURE_CACHE_DIR", str(_under_a_file(tmp_path))))
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = train.cli(argv)
    assert rc == 0, err.getvalue()
    assert json.loads((out / "results.json").read_text())["metrics"]["accuracy"] >= 0
    assert "Warning: cannot write the feature cache" in (out / "log.txt").read_text()


class _SneakyCoOpModel:
    """Mixed into CoOp's model below: a learnable visual prompt in encode_image, without image_prompted."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        width = self.image_encoder.width
        self.sneaky_prompt = torch.nn.Parameter(torch.zeros(2, width))

    def encode_image(self, image):
        f = self.image_encoder(image.to(self.image_encoder.dtype), prompts=self.sneaky_prompt)
        return F.normalize(f.float(), dim=-1)


@pytest.fixture
def sneaky(data_root, tmp_path, monkeypatch, capsys):
    from trainers.coop import CoOp

    model_class = type("SneakyModel", (_SneakyCoOpModel, CoOp.model_class), {})
    assert model_class.image_prompted is False
    monkeypatch.setattr(CoOp, "model_class", model_class)
    argv = coop_argv(data_root, tmp_path / "run", opts=("TRAINER.COOP.PREC", "fp32", "DATALOADER.TEST.BATCH_SIZE",
                                                        "2", "TEST.FEATURE_CACHE_DIR", str(tmp_path / "cache")))
    built = build_trainer(train.setup_cfg(train.parse_args(argv)))
    return built, capsys.readouterr().out


def _another_seed(trainer, seed):
    with torch.no_grad():
        trainer.model.sneaky_prompt.copy_(torch.randn(trainer.model.sneaky_prompt.shape,
                                                      generator=torch.Generator().manual_seed(seed)))


def test_undeclared_learnable_image_path_is_found_and_never_gets_another_seeds_features(sneaky, tmp_path):
    """On main: the first seed's features were cached and the second seed evaluated on them."""
    trainer, out = sneaky
    assert trainer.model.image_prompted is True  # checked at build, not declared
    assert "SneakyModel.encode_image depends on learnable parameters" in out
    results = []
    for seed in (1, 2):
        _another_seed(trainer, seed)
        with cfg_test_keys(trainer, FEATURE_CACHE=False):
            plain = trainer.predict(trainer.test_loader)
        with cfg_test_keys(trainer, FEATURE_CACHE=True):
            cached = trainer.predict(trainer.test_loader)
        np.testing.assert_array_equal(cached["logits"], plain["logits"])
        np.testing.assert_array_equal(cached["zs_logits"], plain["zs_logits"])
        results.append(cached["logits"])
    assert not np.allclose(results[0], results[1])  # the two "seeds" do differ
    # only frozen CLIP's features were written
    assert cache_files(tmp_path / "cache") == [trainer.feature_cache_path(trainer.test_loader, frozen=True).name]


def test_learnable_image_path_never_reads_the_cache_even_if_the_flag_is_reset(sneaky, monkeypatch):
    """image_features checks the encode function itself, whatever the flag says afterwards."""
    trainer, _ = sneaky
    monkeypatch.setattr(trainer.model, "image_prompted", False)
    with cfg_test_keys(trainer, FEATURE_CACHE=True):
        path = trainer.feature_cache_path(trainer.test_loader)
        feature_cache.save(path, torch.zeros(len(trainer.test_loader.dataset), 64),
                           torch.tensor([it.label for it in trainer.test_loader.dataset.data_source]))
        assert trainer.image_features(trainer.test_loader) is None
    assert trainer.image_path_learnable(trainer.model.encode_image)
    assert not trainer.image_path_learnable(trainer.frozen_encode_image)


def test_unfrozen_clip_weights_keep_the_frozen_path_out_of_the_cache(trainer, tmp_path, monkeypatch):
    """A method that makes part of CLIP learnable: 'frozen' CLIP features move with training, so no cache."""
    monkeypatch.setattr(trainer.model, "image_prompted", True, raising=False)
    proj = trainer.model.clip.visual.proj
    proj.requires_grad_(True)
    try:
        with cfg_test_keys(trainer, FEATURE_CACHE=True, FEATURE_CACHE_DIR=str(tmp_path)):
            assert trainer.image_features(trainer.test_loader, frozen=True) is None
            trainer.predict(trainer.test_loader)
        assert cache_files(tmp_path) == []
    finally:
        proj.requires_grad_(False)
    assert trainer.image_path_learnable(trainer.frozen_encode_image) is False  # re-checked after the change


def test_the_probe_leaves_rng_and_modes_alone(trainer):
    trainer.model.train()
    modes = [m.training for m in trainer.model.modules()]
    state = torch.get_rng_state()
    trainer.__dict__.pop("_image_path_learnable", None)
    assert trainer.image_path_learnable(trainer.model.encode_image) is False
    assert torch.equal(torch.get_rng_state(), state)
    assert [m.training for m in trainer.model.modules()] == modes
    trainer.model.eval()
