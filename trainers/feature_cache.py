"""On-disk cache of frozen test-image features.

For methods whose image tower is frozen (ZS-CLIP, CoOp, CoCoOp, KgCoOp, ProGrad, ProDA) the test images' features
are a pure function of the image tower's weights, its precision, the test transform and the images. They are
computed once and reused by the novel evaluation, by the other seeds and by the other variants of a sweep. Methods
that prompt the image tower (IVLP, VPT, MaPLe, PromptSRC) cache frozen CLIP's features instead, which their
zero-shot logits need. The key hashes everything that changes them; ``TEST.FEATURE_CACHE False`` turns the cache
off.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from dassl.utils import atomic_torch_save

ENV_DIR = "CALIB_PROMPT_CACHE"


def cache_dir(cfg) -> Path:
    """``TEST.FEATURE_CACHE_DIR``, else ``$CALIB_PROMPT_CACHE/features``, else ``~/.cache/calib-prompt/features``."""
    if cfg.TEST.FEATURE_CACHE_DIR:
        return Path(cfg.TEST.FEATURE_CACHE_DIR).expanduser()
    base = os.environ.get(ENV_DIR) or os.path.join(os.path.expanduser("~"), ".cache", "calib-prompt")
    return Path(base) / "features"


def tower_fingerprint(visual: torch.nn.Module) -> str:
    """A hash of the image tower's weights: shapes, dtypes and a strided sample of every tensor's values.

    Cheap even for ViT-L (a few thousand values per tensor) yet changes with any checkpoint or precision change.
    """
    h = hashlib.sha256()
    for name, t in visual.state_dict().items():
        flat = t.detach().reshape(-1)
        step = max(1, flat.numel() // 4096)
        sample = flat[::step].float().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(sample.numpy().tobytes())
    return h.hexdigest()


def feature_key(visual: torch.nn.Module, transform, items, extra: dict | None = None) -> str:
    """The cache key: tower fingerprint + transform + (path, label, size, mtime) of every image, in order, + extra.

    Files are identified by size and modification time, not content (reading every test image would cost what
    the cache saves): a file rewritten in place with the same size and its old mtime restored is not noticed.
    """
    h = hashlib.sha256()
    h.update(tower_fingerprint(visual).encode())
    h.update(repr(transform).encode())
    for item in items:
        h.update(f"{os.path.abspath(item.impath)}\t{item.label}\n".encode())
        try:
            st = os.stat(item.impath)
            h.update(f"{st.st_size}:{st.st_mtime_ns}\n".encode())  # ns: a rewrite within the second counts
        except OSError:
            h.update(b"missing\n")
    h.update(json.dumps(extra or {}, sort_keys=True).encode())
    return h.hexdigest()[:32]


def load(path: Path):
    if not path.exists():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        return blob["features"], blob["labels"]
    except Exception:  # a corrupt cache entry is recomputed, never trusted
        return None


def save(path: Path, features: torch.Tensor, labels: torch.Tensor) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save({"features": features, "labels": labels}, path)
