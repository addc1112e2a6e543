"""Eval-only runs take their training settings from the checkpoint they load (issue 14, item 4).

A checkpoint stores the flat training config (``config``, see the engine's ``save_model``). Before anything is built,
:func:`adopt_training_config` sets every training key (:data:`TRAINING_KEYS`: method, ``--calib`` and its weights,
optimiser and epochs, shots, seed, input pipeline, backbone and method settings) of the eval-only config to the
checkpoint's value, so the record says what the prompts were trained with and pairs with its training run. A value
the command line gives explicitly (a flag such as ``--calib``/``--trainer``/``--backbone``/``--seed``, or a
``KEY VALUE`` option) that contradicts the checkpoint is one error naming the key and both values; a value that
only came from the config files is replaced, with a printed note.
"""
from __future__ import annotations

import os.path as osp
from typing import Any

from common.errors import UserError
from dassl.utils import load_checkpoint

#: Keys (prefixes) a training run fixes for the evaluations of its prompts.
TRAINING_KEYS = ("TRAINER.", "OPTIM.", "LOSS.", "MODEL.", "INPUT.", "DATALOADER.TRAIN_X.", "DATALOADER.TRAIN_U.",
                 "DATASET.NUM_SHOTS", "SEED")
#: Command-line flags and the config key each sets.
FLAG_KEYS = {"trainer": "TRAINER.NAME", "backbone": "MODEL.BACKBONE.NAME", "calib": "TRAINER.CALIB.NAME",
             "seed": "SEED", "head": "MODEL.HEAD.NAME", "transforms": "INPUT.TRANSFORMS"}


def explicit_keys(args) -> set[str]:
    keys = set(args.opts[0::2])
    keys |= {key for flag, key in FLAG_KEYS.items() if getattr(args, flag, None) not in (None, "", [])}
    return keys


def checkpoint_path(cfg, model_dir: str, epoch: int | None) -> str | None:
    from dassl.engine.build import trainer_class

    cls = trainer_class(cfg.TRAINER.NAME)  # an unknown name: the one error that names failed method files
    name = getattr(cls, "registered_name", None)
    if not name:
        return None
    path = cls.checkpoint_path(model_dir, name, epoch)
    return path if osp.exists(path) else None


def _fmt(value: Any) -> str:
    return "'' (not set)" if value == "" else repr(value)


def _set(cfg, key: str, value: Any) -> None:
    node = cfg
    *parents, leaf = key.split(".")
    for p in parents:
        node = node[p]
    node[leaf] = type(node[leaf])(value) if isinstance(node[leaf], tuple) and isinstance(value, list) else value


def adopt_training_config(cfg, args) -> list[str]:
    """Set ``cfg``'s (not frozen) training keys to the checkpoint's; the keys replaced. Raises UserError for an
    explicit contradiction. No checkpoint, or one without a stored config: nothing to do."""
    from dassl.config import flatten_cfg

    if not args.model_dir:
        return []
    path = checkpoint_path(cfg, args.model_dir, args.load_epoch)
    if path is None:
        return []  # load_model says what is missing
    saved = load_checkpoint(path).get("config")
    if not saved:
        print(f"Note: {path} stores no training config (an old checkpoint); the record takes this command's keys")
        return []
    ours, explicit = flatten_cfg(cfg), explicit_keys(args)
    replaced, conflicts = [], []
    for key, value in ours.items():
        if not key.startswith(TRAINING_KEYS) or key not in saved:
            continue
        theirs = saved[key]
        if theirs == value or (isinstance(value, (list, tuple)) and list(theirs or []) == list(value)):
            continue
        if key in explicit:
            conflicts.append(f"{key}: the checkpoint was trained with {_fmt(theirs)}, this command says "
                             f"{_fmt(value)}")
        else:
            replaced.append((key, value, theirs))
    if conflicts:
        raise UserError(f"--eval-only --model-dir {args.model_dir}: {'; '.join(conflicts[:4])}"
                        f"{'; ...' if len(conflicts) > 4 else ''}. Evaluate with the training run's settings (drop "
                        "the option), or pass the --model-dir of a run trained with them")
    for key, _, theirs in replaced:
        _set(cfg, key, theirs)
    if replaced:
        shown = "; ".join(f"{k} {_fmt(t)} (config files: {_fmt(v)})" for k, v, t in replaced[:8])
        print(f"Note: eval-only takes the training settings of {path}: {shown}"
              f"{'; ...' if len(replaced) > 8 else ''}")
    return [k for k, _, _ in replaced]
