"""build_optimizer (Dassl API). Unlike Dassl, a module contributes only its trainable parameters."""
from __future__ import annotations

import warnings

import torch
import torch.nn as nn

from common.errors import UserError
from common.suggest import check_availability

AVAI_OPTIMS = ["adam", "amsgrad", "sgd", "rmsprop", "radam", "adamw"]


def _trainable(params):
    return [p for p in params if p.requires_grad]


def build_optimizer(model, optim_cfg, param_groups=None) -> torch.optim.Optimizer:
    """Build the optimizer named ``optim_cfg.NAME`` over ``model``.

    ``model`` is an nn.Module (only parameters with requires_grad are optimized) or an iterable
    of parameters / param-group dicts. ``param_groups``, when given, is used as is.
    With ``STAGED_LR`` and a module, layers named in ``NEW_LAYERS`` get LR and the rest LR*BASE_LR_MULT.
    """
    name = optim_cfg.NAME
    check_availability(name, AVAI_OPTIMS, what="optimizer (OPTIM.NAME)")
    lr = optim_cfg.LR
    wd = optim_cfg.WEIGHT_DECAY
    betas = (optim_cfg.ADAM_BETA1, optim_cfg.ADAM_BETA2)
    try:
        return _build(name, model, optim_cfg, param_groups, lr, wd, betas)
    except ValueError as exc:  # torch's range checks (negative lr, betas outside [0, 1), nesterov without momentum)
        raise UserError(f"OPTIM settings rejected by torch.optim ({name}): {exc}. Check OPTIM.LR, "
                        "OPTIM.WEIGHT_DECAY, OPTIM.MOMENTUM, OPTIM.ADAM_BETA1/2 and OPTIM.SGD_*") from None


def _build(name, model, optim_cfg, param_groups, lr, wd, betas) -> torch.optim.Optimizer:
    """The body of :func:`build_optimizer`, whose wrapper turns torch's ValueErrors into UserErrors."""
    if param_groups is not None:
        if optim_cfg.STAGED_LR:
            warnings.warn("OPTIM.STAGED_LR is ignored because param_groups is given")
    elif isinstance(model, nn.Module):
        if isinstance(model, nn.DataParallel):
            model = model.module
        if optim_cfg.STAGED_LR:
            new_layers = optim_cfg.NEW_LAYERS
            if isinstance(new_layers, str):
                new_layers = [new_layers]
            if not new_layers:
                raise UserError("OPTIM.STAGED_LR is True but OPTIM.NEW_LAYERS is empty")
            base_params, new_params = [], []
            for lname, module in model.named_children():
                (new_params if lname in new_layers else base_params).extend(_trainable(module.parameters()))
            param_groups = [{"params": base_params, "lr": lr * optim_cfg.BASE_LR_MULT}, {"params": new_params}]
        else:
            param_groups = _trainable(model.parameters())
            if not param_groups:
                raise UserError(f"{type(model).__name__} has no parameter with requires_grad=True to optimize")
    else:
        param_groups = list(model)

    if name == "adam":
        return torch.optim.Adam(param_groups, lr=lr, weight_decay=wd, betas=betas)
    if name == "amsgrad":
        return torch.optim.Adam(param_groups, lr=lr, weight_decay=wd, betas=betas, amsgrad=True)
    if name == "sgd":
        return torch.optim.SGD(param_groups, lr=lr, momentum=optim_cfg.MOMENTUM, weight_decay=wd,
                               dampening=optim_cfg.SGD_DAMPNING, nesterov=optim_cfg.SGD_NESTEROV)
    if name == "rmsprop":
        return torch.optim.RMSprop(param_groups, lr=lr, momentum=optim_cfg.MOMENTUM, weight_decay=wd,
                                   alpha=optim_cfg.RMSPROP_ALPHA)
    if name == "radam":
        return torch.optim.RAdam(param_groups, lr=lr, weight_decay=wd, betas=betas)
    return torch.optim.AdamW(param_groups, lr=lr, weight_decay=wd, betas=betas)
