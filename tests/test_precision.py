"""The precision policy (docs/method_notes.md#precision), on the CPU.

``fp32``; ``amp`` = fp32 weights under bf16 autocast (fp16 + GradScaler on GPUs without bf16); ``bf16`` = bf16
frozen towers. In each: the same named method and --calib terms, values within a stated tolerance of fp32, the
--calib terms fp32 tensors, learnable parameters fp32 masters. Pure ``fp16`` (the paper's path, fp16 learnable
parameters) needs a GPU: on the CPU it runs as fp32 after a note.
"""
from __future__ import annotations

import sys

import pytest
import torch

from calibration.regularizers import CALIB_NAMES, build_objective
from common.errors import UserError
from dassl.engine import build_trainer
from tests.helpers import REPO, coop_argv, make_image_folder
import train
from trainers.base import resolve_precision

torch.set_num_threads(1)
MODES = ("fp32", "amp", "bf16")
METHODS = {"CoOp": ("COOP", "configs/trainers/CoOp/vit_b16_ep50.yaml", {"ce"}),
           "KgCoOp": ("KGCOOP", "configs/trainers/KgCoOp/vit_b16_ep100_ctxv1.yaml", {"ce", "kg"})}
CALIB_TERMS = {"margin", "mom"}
# Tolerance against fp32: bf16 keeps 8 bits of mantissa (relative step 2^-8 = 0.4%); through the towers and logits
# scaled by 100 the terms move by up to ~4% here (measured: CE 1-2%, margin 0.1-4%, mom < 0.2%), so 8% relative,
# plus 2e-3 absolute for terms that start at ~0 (kg, mom with a word-initialised context).
RTOL = {"fp32": 1e-6, "amp": 8e-2, "bf16": 8e-2}
ATOL = 2e-3



@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("precision_data"), n_classes=3, per_class=8)


def build(method, mode, root, out, *extra):
    node, config, _ = METHODS[method]
    argv = coop_argv(root, out, *extra, trainer=method, opts=(
        f"TRAINER.{node}.PREC", mode, "DATALOADER.TRAIN_X.BATCH_SIZE", "4", "TEST.FEATURE_CACHE", "False"))
    argv[argv.index("--config-file") + 1] = str(REPO / config)
    torch.manual_seed(0)
    return build_trainer(train.setup_cfg(train.parse_args(argv)))


@pytest.fixture(scope="module")
def runs(data_root, tmp_path_factory):
    """{(method, mode): trainer} built with --calib, learnable parameters copied from the fp32 trainer."""
    out = {}
    for method in METHODS:
        for mode in MODES:
            t = build(method, mode, data_root, tmp_path_factory.mktemp(f"{method}_{mode}"), "--calib")
            if mode != "fp32":
                with torch.no_grad():
                    for (_, p), (_, q) in zip(t.learnable_named_parameters(),
                                              out[method, "fp32"].learnable_named_parameters()):
                        p.copy_(q)
            out[method, mode] = t
    return out


@pytest.fixture(scope="module")
def batch(runs):
    torch.manual_seed(0)
    return next(iter(runs["CoOp", "fp32"].train_loader_x))


def terms_of(trainer, batch):
    trainer.set_model_mode("train")
    image, label = trainer.parse_batch_train(batch)
    loss, terms, out = trainer.compute_loss(image, label)
    return loss, terms


@pytest.mark.parametrize("mode", MODES)
def test_mode_resolves_to_its_weights_and_autocast(runs, mode):
    t = runs["CoOp", mode]
    assert t.precision == mode
    assert t.autocast_dtype == (torch.bfloat16 if mode == "amp" else None)  # CPU autocast is bf16
    assert t.scaler is None  # a GradScaler only for fp16 autocast (GPUs without bf16)
    tower = torch.bfloat16 if mode == "bf16" else torch.float32
    assert t.model.text_encoder.dtype == tower and t.model.image_encoder.dtype == tower


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("mode", MODES)
def test_learnable_parameters_are_fp32_masters(runs, method, mode):
    params = runs[method, mode].learnable_named_parameters()
    assert params and all(p.dtype == torch.float32 for _, p in params)


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("mode", MODES)
def test_same_named_terms_close_to_fp32(runs, batch, method, mode):
    _, reference = terms_of(runs[method, "fp32"], batch)
    loss, terms = terms_of(runs[method, mode], batch)
    assert set(terms) == METHODS[method][2] | CALIB_TERMS == set(reference)
    assert loss.dtype == torch.float32
    for name, value in terms.items():
        assert value.dtype == torch.float32 and value.dim() == 0, name
        assert torch.isfinite(value), name
        torch.testing.assert_close(value, reference[name], rtol=RTOL[mode], atol=ATOL, msg=f"{mode} {name}")
    torch.testing.assert_close(loss, sum(terms.values()))


@pytest.mark.parametrize("mode", ["amp", "bf16"])
@pytest.mark.parametrize("name", CALIB_NAMES)
def test_every_calib_objective_gives_fp32_terms(runs, batch, mode, name, monkeypatch):
    trainer = runs["CoOp", mode]
    cfg = trainer.cfg.clone()
    cfg.defrost()
    cfg.TRAINER.CALIB.NAME = name
    monkeypatch.setattr(trainer, "objective", build_objective(cfg))
    _, terms = terms_of(trainer, batch)
    assert terms and all(v.dtype == torch.float32 for v in terms.values()), {k: v.dtype for k, v in terms.items()}


@pytest.mark.parametrize("mode", MODES)
def test_a_step_updates_fp32_masters_with_fp32_gradients(runs, batch, mode):
    trainer = runs["CoOp", mode]
    trainer.epoch, trainer.batch_idx, trainer.num_batches = 0, 0, 10 ** 6
    before = trainer.model.ctx.detach().clone()
    grads = []
    handle = trainer.model.ctx.register_hook(lambda g: grads.append(g.dtype))
    try:
        trainer.set_model_mode("train")
        summary = trainer.forward_backward(batch)
    finally:
        handle.remove()
    assert grads == [torch.float32] and trainer.model.ctx.dtype == torch.float32
    assert not torch.equal(trainer.model.ctx.detach(), before)
    assert {"loss", "ce", "margin", "mom"} <= set(summary)


def test_pure_fp16_on_cpu_runs_as_fp32_after_a_note(data_root, tmp_path, capsys):
    assert resolve_precision("fp16", torch.device("cpu")) == "fp32"
    assert "needs a GPU" in capsys.readouterr().out
    assert resolve_precision("FP16", torch.device("cuda")) == "fp16"  # kept where it can run
    trainer = build("CoOp", "fp16", data_root, tmp_path)
    assert trainer.precision == "fp32" and trainer.model.ctx.dtype == torch.float32
    assert trainer.model.text_encoder.dtype == torch.float32


def test_unknown_precision_is_one_clear_error():
    with pytest.raises(UserError, match=r"PREC must be one of .*'fp8'"):
        resolve_precision("fp8", torch.device("cpu"))
