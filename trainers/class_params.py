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

from dassl.utils import UserError

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
            raise UserError(f"checkpoint {path} holds {name!r} with one row per class it was trained on; "
                            f"{len(unseen)} of this run's classes have none ({shown}). {why or 'The method cannot evaluate classes it was not trained on.'}")
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
