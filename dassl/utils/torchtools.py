"""Checkpoint helpers (Dassl's torchtools), with atomic saves and torch>=2.6 loading."""
from __future__ import annotations

import hashlib
import os.path as osp
import shutil
import warnings
from collections import OrderedDict

import torch
import torch.nn as nn

from common.atomic import atomic_open, atomic_torch_save, atomic_write_text
from common.errors import MissingFileError, UserError

__all__ = [
    "save_checkpoint", "load_checkpoint", "resume_from_checkpoint", "load_pretrained_weights", "count_num_param",
    "CHECKPOINT_POINTER", "state_sha256",
]

CHECKPOINT_POINTER = "checkpoint"  # text file whose first line is the basename of the last saved checkpoint


def _strip_module(state_dict: dict) -> OrderedDict:
    return OrderedDict((k[7:] if k.startswith("module.") else k, v) for k, v in state_dict.items())


def state_sha256(state_dict: dict) -> str:
    """sha256 over the names, dtypes, shapes and raw bytes of a state dict's tensors (sorted by name).

    Stored in every checkpoint as ``sha256`` and checked by :func:`load_checkpoint`, so a truncated, corrupted or
    edited checkpoint is reported instead of silently loaded.
    """
    h = hashlib.sha256()
    for name in sorted(state_dict):
        value = state_dict[name]
        if not isinstance(value, torch.Tensor):
            h.update(f"{name}={value!r};".encode())
            continue
        t = value.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}:{t.dtype}:{tuple(value.shape)};".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_checkpoint(state: dict, save_dir: str, is_best: bool = False, remove_module_from_keys: bool = True,
                    model_name: str = "") -> str:
    """Save ``state`` to ``save_dir/<model_name or model.pth.tar-<epoch>>`` atomically.

    Also (atomically) writes ``save_dir/checkpoint`` naming the file, which resume reads, and copies
    the file to ``model-best.pth.tar`` when ``is_best``. The state dict's :func:`state_sha256` is stored as
    ``sha256``. Returns the checkpoint path.
    """
    if remove_module_from_keys and "state_dict" in state:
        state = dict(state, state_dict=_strip_module(state["state_dict"]))
    if "state_dict" in state:
        state = dict(state, sha256=state_sha256(state["state_dict"]))
    if not model_name:
        model_name = f"model.pth.tar-{state['epoch']}"
    fpath = osp.join(save_dir, model_name)
    atomic_torch_save(fpath, state)
    print(f"Checkpoint saved to {fpath}")
    atomic_write_text(osp.join(save_dir, CHECKPOINT_POINTER), osp.basename(fpath) + "\n")
    if is_best:
        best_fpath = osp.join(osp.dirname(fpath), "model-best.pth.tar")
        with open(fpath, "rb") as src, atomic_open(best_fpath, "wb") as dst:
            shutil.copyfileobj(src, dst)
        print(f'Best checkpoint saved to "{best_fpath}"')
    return fpath


def load_checkpoint(fpath: str) -> dict:
    """Load a checkpoint saved by this engine or by Dassl.

    ``weights_only=False``: Dassl checkpoints pickle a scheduler object (docs/engine_api.md#dassl-behaviours-we-fix,
    item 2). Python-2 era pickles are retried with latin1 decoding. A checkpoint that records a ``sha256`` must match
    it.
    """
    if fpath is None:
        raise ValueError("File path is None")
    if not osp.exists(fpath):
        raise MissingFileError(f'Checkpoint not found: "{fpath}"')
    map_location = None if torch.cuda.is_available() else "cpu"
    try:
        checkpoint = torch.load(fpath, map_location=map_location, weights_only=False)
    except UnicodeDecodeError:
        checkpoint = torch.load(fpath, map_location=map_location, weights_only=False, encoding="latin1")
    except Exception as e:
        raise UserError(f'Cannot read checkpoint "{fpath}" ({type(e).__name__}: {e}). '
                        "The file may be truncated or not a torch checkpoint; delete it and re-run.") from e
    recorded = checkpoint.get("sha256") if isinstance(checkpoint, dict) else None
    if recorded is not None and isinstance(checkpoint.get("state_dict"), dict):
        actual = state_sha256(checkpoint["state_dict"])
        if actual != recorded:
            raise UserError(f'Checkpoint "{fpath}" does not match its recorded sha256 (tensors hash to '
                            f"{actual[:16]}..., recorded {str(recorded)[:16]}...): the file was modified or "
                            "corrupted after it was saved. Restore it, or delete it and train again.")
    return checkpoint


def resume_from_checkpoint(fdir: str, model: nn.Module, optimizer=None, scheduler=None, strict: bool = True) -> int:
    """Restore model, optimizer and scheduler from the file named in ``fdir/checkpoint``.

    Returns the saved epoch (the number of finished epochs), i.e. the epoch to start from.
    ``strict=False`` allows checkpoints that hold only some parameters (e.g. learnable ones).
    """
    pointer = osp.join(fdir, CHECKPOINT_POINTER)
    if not osp.isfile(pointer):
        raise MissingFileError(f'Cannot resume: "{pointer}" is missing. Delete "{fdir}" to train from scratch.')
    with open(pointer, "r") as f:
        model_name = f.readline().strip("\n")
    fpath = osp.join(fdir, model_name)
    print(f'Loading checkpoint from "{fpath}"')
    checkpoint = load_checkpoint(fpath)
    result = model.load_state_dict(checkpoint["state_dict"], strict=strict)
    if not strict and result.unexpected_keys:
        raise UserError(f'Checkpoint "{fpath}" does not match the model (unexpected keys: '
                        f"{result.unexpected_keys[:5]}...). Delete it or use another OUTPUT_DIR.")
    print("Loaded model weights")
    if optimizer is not None and checkpoint.get("optimizer") is not None:
        optimizer.load_state_dict(checkpoint["optimizer"])
        print("Loaded optimizer")
    if scheduler is not None and checkpoint.get("scheduler") is not None:
        scheduler.load_state_dict(checkpoint["scheduler"])
        print("Loaded scheduler")
    start_epoch = int(checkpoint["epoch"])
    print(f"Previous epoch: {start_epoch}")
    return start_epoch


def load_pretrained_weights(model: nn.Module, weight_path: str) -> None:
    """Load the entries of a checkpoint whose names and shapes match ``model``; report the rest."""
    checkpoint = load_checkpoint(weight_path)
    state_dict = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else checkpoint
    model_dict = model.state_dict()
    new_state_dict, matched, discarded = OrderedDict(), [], []
    for k, v in _strip_module(state_dict).items():
        if k in model_dict and hasattr(v, "size") and model_dict[k].size() == v.size():
            new_state_dict[k] = v
            matched.append(k)
        else:
            discarded.append(k)
    model_dict.update(new_state_dict)
    model.load_state_dict(model_dict)
    if not matched:
        warnings.warn(f'Cannot load "{weight_path}": no key matches the model (check the key names)')
    else:
        print(f'Successfully loaded pretrained weights from "{weight_path}"')
        if discarded:
            print(f"Layers discarded due to unmatched keys or size: {discarded}")


def count_num_param(model: nn.Module | None = None, params=None) -> int:
    """Number of elements in ``model``'s parameters, or in ``params``."""
    if model is not None:
        return sum(p.numel() for p in model.parameters())
    if params is not None:
        return sum(p.numel() for p in params)
    raise ValueError("model and params must not both be None")
