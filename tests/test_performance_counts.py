"""No per-step recomputation of frozen things (docs/method_notes.md#what-is-computed-once).

Counted with forward hooks on CoOp/tiny-vit: during N training steps the frozen image tower runs exactly N times
(also with every --calib objective: the zero-shot logits reuse the step's image features), the text tower runs
only inside the prompted text encoding (once per step) and the token embedding never; an evaluation computes the
text features once, whatever the number of test batches; gradients are freed (set_to_none) every step. Also the
input pipeline's switches (pinned memory with CUDA only, persistent workers, seeded workers).
"""
from __future__ import annotations

import contextlib

import pytest
import torch
from torch.utils.data import DataLoader

import train
from calibration.regularizers import build_objective
from dassl.data.data_manager import build_data_loader, seed_worker
from dassl.engine import build_trainer
from tests.helpers import coop_argv, make_image_folder

torch.set_num_threads(1)
STEPS = 3



@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("counts_data"), n_classes=3, per_class=8)


def build(root, out, *extra, opts=()):
    argv = coop_argv(root, out, *extra, opts=("TRAINER.COOP.PREC", "fp32", "DATALOADER.TRAIN_X.BATCH_SIZE", "4",
                                              "DATALOADER.TEST.BATCH_SIZE", "3", "TEST.FEATURE_CACHE_DIR",
                                              str(out / "features"), *opts))
    torch.manual_seed(0)
    return build_trainer(train.setup_cfg(train.parse_args(argv)))


@pytest.fixture(scope="module")
def plain(data_root, tmp_path_factory):
    return build(data_root, tmp_path_factory.mktemp("plain"))


@pytest.fixture(scope="module")
def batches(plain):
    it = iter(plain.train_loader_x)
    return [next(it) for _ in range(2)]


@contextlib.contextmanager
def counting(model):
    """Calls of the frozen image tower, of the prompted text encoder (with its batch sizes), of the text tower's
    final LayerNorm (every text pass, prompted or not) and of the frozen token embedding."""
    c = {"image": 0, "prompted_text": [], "text_tower": 0, "token_embedding": 0}

    def bump(name):
        def hook(module, inputs, output):
            c[name] += 1
        return hook

    handles = [model.clip.visual.conv1.register_forward_hook(bump("image")),
               model.text_encoder.register_forward_hook(lambda m, i, o: c["prompted_text"].append(i[0].shape[0])),
               model.clip.ln_final.register_forward_hook(bump("text_tower")),
               model.clip.token_embedding.register_forward_hook(bump("token_embedding"))]
    try:
        yield c
    finally:
        for h in handles:
            h.remove()


def train_steps(trainer, batches, n=STEPS):
    trainer.set_model_mode("train")
    trainer.epoch, trainer.batch_idx, trainer.num_batches = 0, 0, 10 ** 6
    with counting(trainer.model) as c:
        for i in range(n):
            trainer.forward_backward(batches[i % len(batches)])
    return c


def assert_frozen_work_once_per_step(c, n=STEPS, classes=3):
    assert c["image"] == n                       # one image-tower pass per step, none for zero-shot logits
    assert c["prompted_text"] == [classes] * n   # the tuned text features once per step
    assert c["text_tower"] == n                  # ... and the text tower never outside them
    assert c["token_embedding"] == 0             # token embeddings are buffers built once


def test_training_step_runs_each_tower_once(plain, batches):
    assert_frozen_work_once_per_step(train_steps(plain, batches))


def test_calib_mbls_adds_no_image_pass(data_root, tmp_path, batches):
    trainer = build(data_root, tmp_path, "--calib", "mbls")
    assert type(trainer.objective).__name__ == "MBLSObjective"
    assert_frozen_work_once_per_step(train_steps(trainer, batches))


@pytest.mark.parametrize("name", ["tcpt", "zs_norm", "penalty"])
def test_calib_objectives_add_no_frozen_pass(plain, batches, name, monkeypatch):
    """zs_norm and penalty need zero-shot logits: they reuse the step's frozen image features."""
    cfg = plain.cfg.clone()
    cfg.defrost()
    cfg.TRAINER.CALIB.NAME = name
    objective = build_objective(cfg)
    monkeypatch.setattr(plain, "objective", objective)
    seen = []
    real = objective.__class__.__call__
    monkeypatch.setattr(objective.__class__, "__call__",
                        lambda self, *a, **k: seen.append(k.get("zs_logits") is not None) or real(self, *a, **k))
    assert_frozen_work_once_per_step(train_steps(plain, batches))
    assert seen == [objective.needs_zs_logits] * STEPS


def test_gradients_are_freed_every_step(plain, batches, monkeypatch):
    calls = []
    real = plain.optim.zero_grad
    monkeypatch.setattr(plain.optim, "zero_grad", lambda set_to_none=True: calls.append(set_to_none) or real(
        set_to_none=set_to_none))
    train_steps(plain, batches)
    assert calls == [True] * STEPS


@pytest.mark.parametrize("cache", [False, True])
def test_evaluation_computes_text_features_once(plain, cache, tmp_path, monkeypatch):
    cfg = plain.cfg.clone()
    cfg.defrost()
    cfg.TEST.FEATURE_CACHE, cfg.TEST.FEATURE_CACHE_DIR = cache, str(tmp_path)
    monkeypatch.setattr(plain, "cfg", cfg)
    loader = plain.test_loader
    assert len(loader) >= 2
    for run in range(2 if cache else 1):
        with counting(plain.model) as c:
            plain.predict(loader)
        assert c["prompted_text"] == [3] and c["text_tower"] == 1 and c["token_embedding"] == 0
        # uncached: one pass per batch; cached: the first evaluation fills the cache, the second reads it
        assert c["image"] == (0 if cache and run == 1 else len(loader))


# ---------------------------------------------------------------------------------------- input pipeline
def loader_of(plain, monkeypatch, *, cuda: bool, workers: int, pin: bool = True, persistent: bool = True,
              is_train: bool = True) -> DataLoader:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    cfg = plain.cfg.clone()
    cfg.defrost()
    cfg.USE_CUDA, cfg.DATALOADER.NUM_WORKERS = True, workers
    cfg.DATALOADER.PIN_MEMORY, cfg.DATALOADER.PERSISTENT_WORKERS = pin, persistent
    return build_data_loader(cfg, sampler_type="RandomSampler", data_source=plain.dm.dataset.train_x, batch_size=4,
                             tfm=plain.dm.tfm_train, is_train=is_train)


def test_loader_pins_memory_only_for_cuda(plain, monkeypatch):
    assert loader_of(plain, monkeypatch, cuda=True, workers=2).pin_memory
    assert not loader_of(plain, monkeypatch, cuda=False, workers=2).pin_memory
    assert not loader_of(plain, monkeypatch, cuda=True, workers=2, pin=False).pin_memory


def test_loader_workers_persist_and_are_seeded(plain, monkeypatch):
    loader = loader_of(plain, monkeypatch, cuda=False, workers=2)
    assert loader.num_workers == 2 and loader.persistent_workers and loader.worker_init_fn is seed_worker
    assert not loader_of(plain, monkeypatch, cuda=False, workers=2, persistent=False).persistent_workers
    assert not loader_of(plain, monkeypatch, cuda=False, workers=0).persistent_workers  # torch refuses it with 0
    assert loader.drop_last and len(loader) == len(plain.dm.dataset.train_x) // 4


def test_parse_batch_train_copies_without_blocking(plain, batches, monkeypatch):
    """Pinned batches overlap the host-to-device copy with compute only with non_blocking=True."""
    seen = []
    real = torch.Tensor.to

    def spy(self, *args, **kwargs):
        seen.append(kwargs.get("non_blocking", False))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", spy)
    plain.parse_batch_train(batches[0])
    assert seen == [True, True]
