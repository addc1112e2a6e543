"""Checkpoint helpers (Dassl's torchtools): atomic saves, the one reader of the ``checkpoint`` pointer file, and
loading that never runs code from the file (``weights_only=True`` with an allow-list)."""
from __future__ import annotations

import hashlib
import os
import os.path as osp
import re
import shutil
import warnings
from collections import OrderedDict

import torch
import torch.nn as nn

from common.atomic import atomic_open, atomic_torch_save, atomic_write_text
from common.errors import MissingFileError, UserError

__all__ = [
    "save_checkpoint", "load_checkpoint", "resume_from_checkpoint", "load_pretrained_weights", "count_num_param",
    "CHECKPOINT_POINTER", "state_sha256", "read_pointer", "last_checkpoint", "prune_checkpoints", "TRUST_ENV",
    "UnsafeCheckpointError",
]

CHECKPOINT_POINTER = "checkpoint"  # text file whose first line is the basename of the last saved checkpoint
#: Environment variable that opts in to full unpickling of checkpoints (only for files whose origin you trust).
TRUST_ENV = "CALIB_PROMPT_TRUST_CHECKPOINTS"
_EPOCH_FILE = re.compile(r"^model\.pth\.tar-(\d+)$")


class UnsafeCheckpointError(UserError):
    """A checkpoint holds an object outside the allow-list; unpickling it could run code from the file."""


def _defaultdict_as_dict(default_factory=None, *args) -> dict:
    """Stands in for ``collections.defaultdict`` (the state of a pickled optimiser) as a plain dict: torch's safe
    loader fills only plain dicts, and nothing reads that stale optimiser's state."""
    return dict(*args)


def _safe_globals() -> list:
    """Every non-tensor type our checkpoints and Dassl's hold: Dassl pickles its scheduler's successor object (with
    its optimizer: optimiser and scheduler classes, a ``defaultdict(dict)`` of optimiser state) and our warmup
    wrappers keep Dassl's module path. Python and numpy RNG states are stored as plain tuples and lists."""
    from torch.optim import SGD, Adam, AdamW, RMSprop
    from torch.optim import lr_scheduler as tls

    from ..optim import lr_scheduler as ours

    scheds = [getattr(tls, n) for n in ("LRScheduler", "_LRScheduler", "CosineAnnealingLR", "StepLR", "MultiStepLR",
                                        "ExponentialLR", "ConstantLR", "LinearLR") if hasattr(tls, n)]
    return [(_defaultdict_as_dict, "collections.defaultdict"), dict, list, tuple, SGD, Adam, AdamW, RMSprop, *scheds,
            ours._BaseWarmupScheduler, ours.ConstantWarmupScheduler, ours.LinearWarmupScheduler]


def read_pointer(folder: str) -> str | None:
    """The path named by ``folder/checkpoint`` (the last checkpoint saved there), or None when there is none. The
    only reader of the pointer file."""
    pointer = osp.join(folder, CHECKPOINT_POINTER)
    if not osp.isfile(pointer):
        return None
    with open(pointer) as f:
        name = f.readline().strip()
    return osp.join(folder, name) if name else None


def last_checkpoint(folder: str) -> str | None:
    """The last checkpoint saved in ``folder`` when it exists on disk, else None."""
    path = read_pointer(folder)
    return path if path is not None and osp.isfile(path) else None


def prune_checkpoints(folder: str, keep_last: str, freq: int) -> list[str]:
    """Delete the epoch checkpoints ``model.pth.tar-<e>`` of ``folder`` other than ``keep_last`` and the multiples of
    ``freq`` (``TRAIN.CHECKPOINT_FREQ``; 0: none); the removed paths. ``model-best.pth.tar`` is kept."""
    removed = []
    for name in sorted(os.listdir(folder)) if osp.isdir(folder) else []:
        m = _EPOCH_FILE.match(name)
        if not m or name == osp.basename(keep_last) or (freq > 0 and int(m.group(1)) % freq == 0):
            continue
        os.remove(osp.join(folder, name))
        removed.append(osp.join(folder, name))
    return removed


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


def _torch_load(fpath: str, **kw):
    map_location = None if torch.cuda.is_available() else "cpu"
    if os.environ.get(TRUST_ENV, "") not in ("", "0"):
        return torch.load(fpath, map_location=map_location, weights_only=False, **kw)
    with torch.serialization.safe_globals(_safe_globals()):
        return torch.load(fpath, map_location=map_location, weights_only=True, **kw)


def load_checkpoint(fpath: str) -> dict:
    """Load a checkpoint saved by this engine or by Dassl, without running code from the file.

    ``weights_only=True`` with an allow-list (:func:`_safe_globals`); any other object is
    :class:`UnsafeCheckpointError`, which names the opt-in ``CALIB_PROMPT_TRUST_CHECKPOINTS=1``. Python-2 era
    pickles are retried with latin1 decoding. A checkpoint that records a ``sha256`` must match it.
    """
    import pickle

    if fpath is None:
        raise ValueError("File path is None")
    if not osp.exists(fpath):
        raise MissingFileError(f'Checkpoint not found: "{fpath}"')
    try:
        try:
            checkpoint = _torch_load(fpath)
        except UnicodeDecodeError:
            checkpoint = _torch_load(fpath, encoding="latin1")
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL (\S+)|function (<[^>]*>|\S+)|got (<[^>]*>)", str(e))
        what = next((g for g in found.groups() if g), "an object") if found else "an object"
        raise UnsafeCheckpointError(
            f'checkpoint "{fpath}" holds {what}, which is not among the types a checkpoint of this engine or of '
            "Dassl holds (tensors, numbers, strings, optimiser and scheduler state). Unpickling it could run code "
            "from the file, so it was not loaded. Load only checkpoints whose origin you trust; to load this one "
            f"anyway, set {TRUST_ENV}=1 in the environment.") from None
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
    fpath = read_pointer(fdir)
    if fpath is None:
        pointer = osp.join(fdir, CHECKPOINT_POINTER)
        raise MissingFileError(f'Cannot resume: "{pointer}" is missing. Delete "{fdir}" to train from scratch.')
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
