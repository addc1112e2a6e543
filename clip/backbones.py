"""Named local backbones: random, seeded CLIP models that need no weights file (tests, smoke runs).

A builder is `builder(device, precision, seed) -> open_clip CLIP` (eval mode, on `device`, cast per `precision`,
random init fixed by `seed`, global torch RNG untouched; `clip.build_clip` does all of that). `clip.load` calls it
positionally. Names in `_LAZY` are registered by importing their module on first use, so `toy-clip` lives with the
toy dataset (`toy/backbone.py`) without `clip/` importing it eagerly.
"""
from __future__ import annotations

import importlib
from typing import Callable, Dict, List

from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

from common.errors import UserError

from .build import build_clip

Builder = Callable[..., CLIP]

_REGISTRY: Dict[str, Builder] = {}
_LAZY: Dict[str, str] = {"toy-clip": "toy.backbone"}  # name -> module whose import registers it


def register_backbone(name: str, builder: Builder, *, overwrite: bool = False) -> Builder:
    """Register `builder(device, precision, seed) -> CLIP` under `name` (usable as the backbone name)."""
    if not callable(builder):
        raise TypeError(f"backbone builder for {name!r} must be callable")
    if name in _REGISTRY and not overwrite and _REGISTRY[name] is not builder:
        raise UserError(f"A backbone named {name!r} is already registered; pick another name or pass "
                        f"overwrite=True.")
    _REGISTRY[name] = builder
    return builder


def backbone_names() -> List[str]:
    """Registered names plus the lazily registered ones."""
    return sorted(set(_REGISTRY) | set(_LAZY))


def get_backbone(name: str) -> Builder | None:
    """The builder for `name` (importing its module for lazy names), or None if `name` is not a backbone."""
    if name not in _REGISTRY and name in _LAZY:
        module = _LAZY[name]
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name and module.startswith(e.name):
                raise UserError(f"Backbone {name!r} is defined in module {module!r}, which cannot be imported "
                                f"({e}). Check that {module.replace('.', '/')}.py exists and that the repository "
                                f"root is on the Python path.") from None
            raise
        if name not in _REGISTRY:
            raise UserError(f"Importing {module!r} did not register backbone {name!r} "
                            f"(it must call clip.register_backbone({name!r}, builder)).")
    return _REGISTRY.get(name)


# ---------------------------------------------------------------------------------------------- built-ins
# Tiny towers shaped like OpenAI's so the real pipeline runs unchanged: 224 px input, 77-token context and the
# full 49408-token vocabulary (the real BPE tokenizer works), QuickGELU, 64-dim heads (OpenAI's convention, so an
# OpenAI-layout state dict of these models loads back exactly), logit_scale = ln(100).
TINY_EMBED_DIM = 64
TINY_TEXT = dict(context_length=77, vocab_size=49408, width=128, heads=2, layers=2)
TINY_VIT = dict(layers=2, width=128, head_width=64, patch_size=32, image_size=224)  # 7x7 patches, 2 heads
TINY_RN = dict(layers=(1, 1, 1, 1), width=8, head_width=64, image_size=224)  # ModifiedResNet, attn-pool 256-d


def _tiny(vision: dict) -> Builder:
    def builder(device, precision, seed):
        return build_clip(TINY_EMBED_DIM, CLIPVisionCfg(**vision), CLIPTextCfg(**TINY_TEXT),
                          device=device, precision=precision, seed=seed)
    return builder


register_backbone("tiny-vit", _tiny(TINY_VIT))
register_backbone("tiny-rn", _tiny(TINY_RN))
