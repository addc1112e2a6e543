"""Checks every registered prompt-tuning method must pass (tiny backbone, generated dataset).

Methods are discovered from the trainer registry; each is run with its first published config under
``configs/trainers/<Name>/`` shrunk to one tiny epoch. Nothing here is method-specific, so a new method gets
these checks by registering itself and shipping a config.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import train
from tests.helpers import IMAGEFOLDER_CFG, REPO, make_image_folder

torch.set_num_threads(1)


def _methods():
    import trainers  # noqa: F401
    from dassl.engine import TRAINER_REGISTRY
    from trainers.base import PromptTrainer

    names = []
    for name in TRAINER_REGISTRY.registered_names():
        cls = TRAINER_REGISTRY.get(name)
        if issubclass(cls, PromptTrainer) and cls.trainable and (REPO / "configs/trainers" / name).is_dir():
            names.append(name)
    return sorted(names)


METHODS = _methods()


def config_for(name: str) -> str:
    files = sorted((REPO / "configs/trainers" / name).glob("*.yaml"))
    preferred = [f for f in files if "ctxv1" not in f.name] or files
    return str(preferred[0])



@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    # 5 classes: 3 base, 2 new. Unequal counts, so a parameter with one row per class can never be applied to other
    # classes by position without a word (issue 24): it is mapped by class name or the load fails
    return make_image_folder(tmp_path_factory.mktemp("methods_data"), n_classes=5, per_class=8)


def argv_for(name, root, out, *extra, subsample="base", opts=()):
    from dassl.engine import TRAINER_REGISTRY

    node = TRAINER_REGISTRY.get(name).cfg_node
    return ["--root", str(root), "--seed", "1", "--trainer", name, "--backbone", "tiny-vit",
            "--dataset-config-file", IMAGEFOLDER_CFG, "--config-file", config_for(name), "--output-dir", str(out),
            *extra, "DATASET.NUM_SHOTS", "2", "DATASET.SUBSAMPLE_CLASSES", subsample, "OPTIM.MAX_EPOCH", "1",
            "DATALOADER.TRAIN_X.BATCH_SIZE", "4", "DATALOADER.TEST.BATCH_SIZE", "16", "DATALOADER.NUM_WORKERS", "0",
            f"TRAINER.{node}.PREC", "fp32", *opts]


def build(name, root, out, *extra, opts=()):
    from dassl.engine import build_trainer

    cfg = train.setup_cfg(train.parse_args(argv_for(name, root, out, *extra, opts=opts)))
    return build_trainer(cfg)


def batch_of(trainer):
    torch.manual_seed(0)
    return trainer.parse_batch_train(next(iter(trainer.train_loader_x)))


@pytest.mark.parametrize("name", METHODS)
def test_step_updates_only_learnable_and_calib_adds_exact_terms(name, data_root, tmp_path):
    torch.manual_seed(0)
    plain = build(name, data_root, tmp_path / "plain")
    torch.manual_seed(0)
    calib = build(name, data_root, tmp_path / "calib", "--calib")
    calib.model.load_state_dict(plain.model.state_dict())
    image, label = batch_of(plain)

    torch.manual_seed(1)
    loss_p, terms_p, _ = plain.compute_loss(image, label)
    torch.manual_seed(1)
    loss_c, terms_c, out_c = calib.compute_loss(image, label)
    assert torch.isfinite(loss_p) and torch.isfinite(loss_c)
    extra = {k: v for k, v in terms_c.items() if k not in terms_p}
    assert set(extra) == {"margin", "mom"}
    for k in terms_p:
        assert torch.allclose(terms_c[k], terms_p[k], atol=1e-6), k
    assert torch.allclose(loss_c - loss_p, extra["margin"] + extra["mom"], atol=1e-5)

    from tests import references

    assert extra["margin"].item() == pytest.approx(references.margin_mean_var(out_c.logits, label, 0.1, 0.01),
                                                   abs=1e-5)

    clip_before = {k: v.clone() for k, v in calib.model.clip.state_dict().items()}
    learn_before = {n: p.detach().clone() for n, p in calib.learnable_named_parameters()}
    assert learn_before, "a trainable method must have learnable parameters"
    calib.before_train()
    calib.set_model_mode("train")
    calib.batch_idx, calib.num_batches = 0, 2
    calib.forward_backward({"img": image, "label": label})
    for k, v in calib.model.clip.state_dict().items():
        assert torch.equal(v, clip_before[k]), f"frozen CLIP weight {k} changed"
    changed = [n for n, p in calib.learnable_named_parameters() if not torch.equal(p, learn_before[n])]
    assert changed, "no learnable parameter changed after a step"
    assert all(not p.requires_grad for p in calib.model.clip.parameters())


@pytest.mark.parametrize("name", METHODS)
def test_cli_base_then_novel_with_calib(name, data_root, tmp_path):
    base, new = tmp_path / "base", tmp_path / "new"
    assert train.cli(argv_for(name, data_root, base, "--calib")) == 0
    assert (base / "results.json").exists()
    ckpts = list(base.glob("*/model.pth.tar-1"))
    assert len(ckpts) == 1
    state = torch.load(ckpts[0], map_location="cpu", weights_only=False)["state_dict"]
    trainer = build(name, data_root, tmp_path / "probe")
    assert set(state) == {n for n, _ in trainer.learnable_named_parameters()}
    assert not any(k.startswith("clip.") for k in state), "checkpoint holds frozen CLIP weights"
    assert ckpts[0].stat().st_size < 2_000_000

    assert train.cli(argv_for(name, data_root, new, "--calib", "--eval-only", "--model-dir", str(base),
                              "--load-epoch", "1", subsample="new")) == 0
    pred = np.load(new / "predictions.npz")
    assert pred["logits"].shape == (len(pred["labels"]), 2)
    assert np.isfinite(pred["logits"]).all()
    # the checkpoint records its classes; the new run's are others, so every class-specific row was mapped by name
    meta = torch.load(ckpts[0], map_location="cpu", weights_only=True)["meta"]
    assert len(meta["classnames"]) == 3 and not set(meta["classnames"]) & set(pred["classnames"].tolist())
