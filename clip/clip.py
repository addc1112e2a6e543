"""OpenAI's ``clip.clip`` module (``from clip import clip``), so CoOp-family trainer files import unchanged.

    clip.load(name, device=..., jit=False, download_root=None) -> (model, preprocess)   # OpenAI's signature
    clip.tokenize(texts, context_length=77, truncate=False)
    clip.available_models(); clip._MODELS[name] -> url; clip._download(url, root=None) -> local file path
    clip.build_model(state_dict)                                                         # fp16, as OpenAI's

The usual ``load_clip_to_cpu(cfg)`` of those files (``_MODELS[name]`` -> ``_download`` -> ``torch.jit.load`` or
``torch.load`` -> ``build_model``) works for every name ``clip.load`` knows:

- OpenAI names (``ViT-B/16``, ...): ``_download`` finds the file where our ``clip.load`` looks (``root``,
  ``$CLIP_WEIGHTS``, ``~/.cache/clip``, then open_clip's cache/download) and raises one UserError naming every
  place when it is nowhere;
- named local backbones (``tiny-vit``, ``toy-clip``, ...; ``_MODELS`` maps them to ``backbone:<name>``):
  ``_download`` writes the backbone's state dict (OpenAI layout, fp32) once to ``root`` (default
  ``~/.cache/clip``) as ``<name>-<content hash>.pt`` and returns its path.

The package-level ``clip.load`` (``import clip``) returns the model only, in the precision asked for; this module's
``load`` is OpenAI's (a ``(model, preprocess)`` pair, fp16 on CUDA, fp32 on the CPU).
"""
from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Mapping
from typing import Iterator, Optional, Union

import torch

from common.atomic import atomic_write_bytes
from common.errors import UserError

from .loading import OPENAI_CACHE, OPENAI_MODELS, _openai_file, available_models
from .loading import load as _load
from .model import build_model
from .tokenizer import tokenize

__all__ = ["available_models", "load", "tokenize", "build_model", "_MODELS", "_download"]

BACKBONE_URL = "backbone:"  # the pseudo-URL scheme of named local backbones in _MODELS


def _openai_url(name: str) -> str:
    import open_clip.pretrained

    arch, filename = OPENAI_MODELS[name]
    cfg = open_clip.pretrained.get_pretrained_cfg(arch, "openai")
    return cfg.get("url") or f"{OPENAI_CACHE}/{filename}"


class _ModelURLs(Mapping):
    """``_MODELS``: name -> URL for every name clip.load knows now (backbones registered later included)."""

    def __getitem__(self, name: str) -> str:
        if name in OPENAI_MODELS:
            return _openai_url(name)
        if name in available_models():
            return BACKBONE_URL + name
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return iter(available_models())

    def __len__(self) -> int:
        return len(available_models())


_MODELS = _ModelURLs()


def _download(url: str, root: Optional[str] = None) -> str:
    """The local path of the weights at ``url`` (a ``_MODELS`` value); see the module docstring."""
    if url.startswith(BACKBONE_URL):
        return _materialise(url[len(BACKBONE_URL):], root)
    basename = os.path.basename(url)
    for name, (_, filename) in OPENAI_MODELS.items():
        if basename == filename or url == _openai_url(name):
            return _openai_file(name, root)
    raise UserError(f"clip._download: {url!r} is not a URL of clip._MODELS (known names: "
                    f"{', '.join(available_models())}); pass one of clip._MODELS' values, or load a local file "
                    f"with torch.load and clip.build_model.")


def _materialise(name: str, root: Optional[str]) -> str:
    model = _load(name, device="cpu", precision="fp32")
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buffer)
    data = buffer.getvalue()
    folder = os.path.expanduser(root or OPENAI_CACHE)
    path = os.path.join(folder, f"{name}-{hashlib.sha256(data).hexdigest()[:12]}.pt")
    if not os.path.isfile(path):
        os.makedirs(folder, exist_ok=True)
        atomic_write_bytes(path, data)
    return path


def load(name: str, device: Union[str, torch.device] = "cuda" if torch.cuda.is_available() else "cpu",
         jit: bool = False, download_root: Optional[str] = None):
    """OpenAI's ``clip.load``: ``(model, preprocess)``; fp16 weights on CUDA, fp32 on the CPU."""
    from open_clip.transform import PreprocessCfg, image_transform_v2

    precision = "fp16" if str(device).startswith("cuda") else "fp32"
    model = _load(name, device=device, precision=precision, jit=jit, cache_dir=download_root)
    preprocess = image_transform_v2(PreprocessCfg(**model.visual.preprocess_cfg), is_train=False)
    return model, preprocess
