"""Parameters that belong to classes: row *i* of a class-specific parameter is class *i*'s (issue 24).

A method declares them on its model (:meth:`trainers.base.PromptModel.class_specific`): ``{parameter name: rule}``,
the rule saying what a class the checkpoint has no row for gets. When prompts load onto another class set (a base
run's checkpoint evaluated on the new classes), rows are mapped by class name (the checkpoint records its class
names in ``meta.classnames``), never by position:

- ``"zero"``: an unseen class gets a zero row (a residual on the zero-shot classifier: that class is zero-shot);
- ``"init"``: an unseen class keeps this model's freshly initialised row;
- ``"refuse"``: an unseen class is an error naming the method's reason (CoOp with ``CSC True``: its reference cannot
  evaluate classes it was not trained on).

docs/adding_a_method.md ("Parameters that belong to classes") shows the hook.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch

from common.errors import UserError

RULES = ("zero", "init", "refuse")


def map_class_rows(state: Mapping[str, torch.Tensor], own: Mapping[str, torch.Tensor], rules: Mapping[str, str],
                   saved: Sequence[str] | None, current: Sequence[str], path: str, why: str = "") -> dict:
    """``state`` with every class-specific tensor's rows reordered from the checkpoint's classes ``saved`` to this
    run's ``current`` ones by name (``own``: this model's tensors, for shapes and ``init``). Raises UserError for a
    ``refuse`` rule with unseen classes, an unknown rule, or class-specific rows without recorded class names."""
    out = dict(state)
    for name, rule in rules.items():
        if rule not in RULES:
            raise UserError(f"class_specific() declares {name!r} with rule {rule!r}; the rules are {RULES}")
        if name not in state or name not in own:
            continue
        rows = state[name]
        if saved is None:
            if rows.shape[0] == len(current) and list(rows.shape) == list(own[name].shape):
                print(f"Note: checkpoint {path} records no class names, so the rows of its class-specific "
                      f"parameter {name!r} are taken in order (as trained) for this run's {len(current)} classes")
                continue
            raise UserError(f"checkpoint {path} records no class names, so the {rows.shape[0]} rows of its "
                            f"class-specific parameter {name!r} cannot be mapped onto this run's {len(current)} "
                            "classes; evaluate on the classes it was trained on")
        if rows.shape[0] != len(saved):
            raise UserError(f"checkpoint {path}: class-specific parameter {name!r} has {rows.shape[0]} rows but the "
                            f"checkpoint records {len(saved)} class names; the file is inconsistent")
        index = {c: i for i, c in enumerate(saved)}
        unseen = [c for c in current if c not in index]
        if unseen and rule == "refuse":
            shown = ", ".join(unseen[:5]) + (", ..." if len(unseen) > 5 else "")
            why = why or "The method cannot evaluate classes it was not trained on"
            raise UserError(f"checkpoint {path} holds {name!r} with one row per class it was trained on; "
                            f"{len(unseen)} of this run's classes have none ({shown}). {why}")
        mapped = own[name].detach().clone().to(rows.dtype).cpu() if rule == "init" else \
            torch.zeros((len(current), *rows.shape[1:]), dtype=rows.dtype)
        for i, c in enumerate(current):
            if c in index:
                mapped[i] = rows[index[c]]
        if unseen:
            print(f"Note: {len(unseen)} of {len(current)} classes are not in checkpoint {path}; their rows of "
                  f"{name!r} are {'zero' if rule == 'zero' else 'as initialised'} ({rule!r} rule)")
        out[name] = mapped
    return out


def class_count_hint(state: Mapping[str, torch.Tensor], own: Mapping[str, torch.Tensor], saved: Sequence[str] | None,
                     current: Sequence[str]) -> str | None:
    """Why shapes differ when the cause is the class set: a parameter whose first dimension is the checkpoint's
    class count on one side and this run's on the other, but which the method does not declare class-specific."""
    if saved is None or len(saved) == len(current):
        return None
    names = [k for k in own if k in state and state[k].dim() and own[k].dim()
             and state[k].shape[0] == len(saved) and own[k].shape[0] == len(current)]
    if not names:
        return None
    return (f"{names} have one row per class ({len(saved)} classes in the checkpoint, {len(current)} in this run) "
            "but the method does not declare them class-specific, so they cannot be mapped by class name; declare "
            "them in the model's class_specific() (docs/adding_a_method.md, 'Parameters that belong to classes')")


def fit_state(checkpoint: dict, path: str, own: Mapping[str, torch.Tensor], mine: Mapping, cfg_node: str,
              model) -> dict:
    """The checkpoint's learnable tensors fitted to this model (``own``; ``mine``: this run's checkpoint meta):
    trainer and backbone must match; ``model.class_specific()`` rows are mapped by class name; a missing tensor or
    any other shape mismatch is one UserError naming the likely cause (the class set, method settings, N_CTX)."""
    state = checkpoint.get("state_dict", checkpoint)
    state = {k[7:] if k.startswith("module.") else k: v for k, v in state.items()}
    meta = checkpoint.get("meta") or {}
    diffs = [f"{k}: checkpoint {meta[k]!r} vs this run {mine[k]!r}" for k in ("trainer", "backbone")
             if k in meta and meta[k] != mine[k]]
    if diffs:
        raise UserError(f"checkpoint {path} does not match this run ({'; '.join(diffs)}); "
                        "pass the --model-dir of a run made with the same trainer and backbone")
    theirs, ours = meta.get("method_cfg") or {}, mine["method_cfg"]
    method_diffs = [f"TRAINER.{cfg_node}.{k}: checkpoint {theirs[k]!r} vs this run {ours[k]!r}"
                    for k in ours if k in theirs and theirs[k] != ours[k]]
    saved = meta.get("classnames")
    state = map_class_rows(state, own, model.class_specific(), saved, mine["classnames"], path,
                           model.unseen_classes_reason)
    missing = [k for k in own if k not in state]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
             if k in state and state[k].shape != own[k].shape]
    if missing or wrong:
        cause = (class_count_hint(state, own, saved, mine["classnames"])
                 or (f"It was trained with other method settings ({'; '.join(method_diffs)})" if method_diffs
                     else "It was made with different prompt settings (e.g. N_CTX, prompt depth)"))
        raise UserError(f"checkpoint {path} does not fit this model: missing {missing or 'nothing'}; shape mismatch "
                        f"{wrong or 'none'}. {cause}; use the same --config-file and TRAINER options as the training "
                        "run")
    if method_diffs:
        print(f"Note: checkpoint {path} was trained with other method settings: {'; '.join(method_diffs)}")
    return state
