"""dassl.optim: the per-epoch lr trajectory of the prompt configs
(docs/engine_api.md#optimiser-and-learning-rate-schedule) and its resume."""
import math
import warnings

import pytest
import torch

from common.errors import UserError
from dassl.config import get_cfg_default
from dassl.metrics import compute_accuracy
from dassl.optim import build_lr_scheduler, build_optimizer
from dassl.utils import load_checkpoint, resume_from_checkpoint, save_checkpoint

# MaPLe's LR 0.0035 over 5 epochs (docs/engine_api.md#optimiser-and-learning-rate-schedule)
MAPLE_LRS = [1e-5, 3.5e-3, 3.16578e-3, 2.29078e-3, 1.20922e-3]


def maple_optim_cfg(**overrides):
    cfg = get_cfg_default()
    o = cfg.OPTIM
    o.NAME, o.LR, o.MAX_EPOCH, o.LR_SCHEDULER = "sgd", 0.0035, 5, "cosine"
    o.WARMUP_EPOCH, o.WARMUP_TYPE, o.WARMUP_CONS_LR = 1, "constant", 1e-5
    for k, v in overrides.items():
        setattr(o, k, v)
    return o


def build(optim_cfg):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    optim = build_optimizer(model, optim_cfg)
    return model, optim, build_lr_scheduler(optim, optim_cfg)


def run_epochs(model, optim, sched, n):
    """One optimizer step per epoch, then the scheduler step trainers do at the last batch."""
    lrs = []
    for _ in range(n):
        lrs.append(optim.param_groups[0]["lr"])
        optim.zero_grad()
        model(torch.ones(1, 4)).sum().backward()
        optim.step()
        sched.step()
    return lrs


def test_maple_trajectory_matches_closed_form():
    o = maple_optim_cfg()
    lrs = run_epochs(*build(o), 5)
    assert lrs == pytest.approx(MAPLE_LRS, rel=1e-5)
    closed = [1e-5] + [0.0035 * 0.5 * (1 + math.cos(math.pi * (e - 2) / 5)) for e in range(2, 6)]
    assert lrs == pytest.approx(closed, rel=1e-9)


def test_resumed_scheduler_continues_trajectory(tmp_path):
    o = maple_optim_cfg()
    model, optim, sched = build(o)
    first = run_epochs(model, optim, sched, 2)
    save_checkpoint({"state_dict": model.state_dict(), "epoch": 2, "optimizer": optim.state_dict(),
                     "scheduler": sched.state_dict(), "val_result": None}, str(tmp_path))
    # the scheduler state is plain data: loadable even with torch's safe loader
    assert torch.load(tmp_path / "model.pth.tar-2", weights_only=True)["scheduler"]["successor"]["last_epoch"] == 1

    model2, optim2, sched2 = build(o)  # a fresh process would rebuild these
    assert resume_from_checkpoint(str(tmp_path), model2, optim2, sched2) == 2
    rest = run_epochs(model2, optim2, sched2, 3)
    assert first + rest == pytest.approx(MAPLE_LRS, rel=1e-5)


def test_old_dassl_scheduler_state_loads_into_live_optimizer(tmp_path):
    """Dassl pickled the successor object; loading it must not bind the stale optimizer copy (§6.3)."""
    o = maple_optim_cfg()
    model, optim, sched = build(o)
    run_epochs(model, optim, sched, 3)
    old_style = {k: v for k, v in sched.__dict__.items() if k != "optimizer"}  # Dassl's state_dict
    torch.save({"state_dict": model.state_dict(), "epoch": 3, "optimizer": optim.state_dict(),
                "scheduler": old_style, "val_result": None}, tmp_path / "model.pth.tar-3")
    (tmp_path / "checkpoint").write_text("model.pth.tar-3\n")
    assert isinstance(load_checkpoint(str(tmp_path / "model.pth.tar-3"))["scheduler"]["successor"],
                      torch.optim.lr_scheduler.CosineAnnealingLR)

    model2, optim2, sched2 = build(o)
    resume_from_checkpoint(str(tmp_path), model2, optim2, sched2)
    assert sched2.successor.optimizer is optim2
    assert run_epochs(model2, optim2, sched2, 2) == pytest.approx(MAPLE_LRS[3:], rel=1e-5)


def test_linear_warmup_and_steps():
    o = maple_optim_cfg(LR=0.1, MAX_EPOCH=4, WARMUP_EPOCH=2, WARMUP_TYPE="linear", WARMUP_MIN_LR=1e-3)
    lrs = run_epochs(*build(o), 5)
    assert lrs == pytest.approx([1e-3, 0.05, 0.1, 0.1 * (1 + math.cos(math.pi / 4)) / 2, 0.05], rel=1e-6)

    o = maple_optim_cfg(LR=1.0, LR_SCHEDULER="single_step", STEPSIZE=(2,), GAMMA=0.5, WARMUP_EPOCH=-1)
    assert run_epochs(*build(o), 5) == pytest.approx([1.0, 1.0, 0.5, 0.5, 0.25])
    o = maple_optim_cfg(LR=1.0, LR_SCHEDULER="multi_step", STEPSIZE=(1, 3), GAMMA=0.1, WARMUP_EPOCH=-1)
    assert run_epochs(*build(o), 4) == pytest.approx([1.0, 0.1, 0.1, 0.01])


def test_no_verbose_warning_on_build():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Dassl's verbose argument used to warn or crash
        build(maple_optim_cfg())


def test_build_optimizer_trainable_only_and_names():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    model[0].requires_grad_(False)
    o = maple_optim_cfg()
    opt = build_optimizer(model, o)
    params = opt.param_groups[0]["params"]
    assert len(params) == 2 and all(p.requires_grad for p in params)
    assert opt.param_groups[0]["momentum"] == 0.9 and opt.param_groups[0]["weight_decay"] == 5e-4
    for name, cls in [("adam", torch.optim.Adam), ("amsgrad", torch.optim.Adam), ("rmsprop", torch.optim.RMSprop),
                      ("radam", torch.optim.RAdam), ("adamw", torch.optim.AdamW)]:
        assert type(build_optimizer(model.parameters(), maple_optim_cfg(NAME=name))) is cls
    with pytest.raises(UserError, match='Did you mean "sgd"'):
        build_optimizer(model, maple_optim_cfg(NAME="sgdd"))
    with pytest.raises(UserError, match="requires_grad"):
        build_optimizer(model.requires_grad_(False), o)


def test_compute_accuracy_percent():
    out = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.3, 0.5], [0.1, 0.6, 0.3], [0.0, 0.4, 0.6]])
    target = torch.tensor([0, 1, 1, 0])
    top1, top2 = compute_accuracy((out,), target, topk=(1, 2))
    assert top1.item() == pytest.approx(50.0) and top2.item() == pytest.approx(75.0)
