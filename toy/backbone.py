"""``toy-clip``: a small CLIP (the real open_clip architecture) pre-trained on the toy world; its checkpoint format.

Importing this module registers the backbone (``clip.load("toy-clip")``). The model takes 224-pixel input like
OpenAI's ViTs (patch 32, so 7×7 tokens: cheap), so the standard prompt configs (INPUT.SIZE 224, CLIP
normalisation, bicubic) work unchanged with ``--backbone toy-clip``. It keeps the 77-token context and the full
49,408-token vocabulary, so ``clip.tokenize`` and every prompt learner work as with real CLIP.

The checkpoint stores only what pre-training changed: the token-embedding rows of the words the world's captions
use (the other rows never receive a gradient, so they are rebuilt from the seeded init), matrices in fp16 and
vectors in fp32. That keeps the file around 3 MB, small enough to ship in the repository.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

import clip
from common.atomic import atomic_torch_save
from common.errors import UserError

FORMAT = "toy-clip/1"
CHECKPOINT = Path(__file__).resolve().parent / "assets" / "toy_clip.pt"
PRETRAIN_COMMAND = "python tools/pretrain_toy_clip.py --out toy/assets/toy_clip.pt"

EMBED_DIM = 128
VISION = dict(layers=3, width=128, head_width=64, patch_size=32, image_size=224)
TEXT = dict(context_length=77, vocab_size=49408, width=128, heads=2, layers=3)
QUICK_GELU = True
INIT_LOGIT_SCALE = 2.6592600369644165  # ln(1/0.07), CLIP's initial temperature


def build_architecture(seed: int, device: str | torch.device = "cpu", precision: str = "fp32",
                       state_dict: dict[str, torch.Tensor] | None = None) -> CLIP:
    """The toy-clip architecture, randomly initialised from ``seed`` (or with ``state_dict`` loaded strictly)."""
    return clip.build_clip(EMBED_DIM, CLIPVisionCfg(**VISION), CLIPTextCfg(**TEXT), device=device, precision=precision,
                      seed=seed, state_dict=state_dict, quick_gelu=QUICK_GELU, init_logit_scale=INIT_LOGIT_SCALE,
                      source="toy-clip")


def checkpoint_dict(model: CLIP, token_ids: torch.Tensor, init_seed: int, meta: dict[str, Any]) -> dict[str, Any]:
    """The shippable form of a pre-trained toy-clip: the rows ``token_ids`` of the token embedding, every other
    tensor (matrices in fp16, vectors and scalars in fp32), the init seed that rebuilds the untouched rows."""
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    emb = sd.pop("token_embedding.weight")
    ids = torch.as_tensor(token_ids, dtype=torch.long).unique()
    return {
        "format": FORMAT,
        "init_seed": int(init_seed),
        "state_dict": {k: v.half() if v.ndim >= 2 else v.float() for k, v in sd.items()},
        "token_ids": ids.int(),
        "token_rows": emb[ids].half(),
        "meta": meta,
    }


def save_checkpoint(ckpt: dict[str, Any], path: str | os.PathLike) -> None:
    """Write atomically (common.atomic)."""
    atomic_torch_save(path, ckpt)


def read_checkpoint(path: str | os.PathLike = CHECKPOINT) -> dict[str, Any]:
    """The checkpoint dict; a UserError naming the file and the command that makes it when absent or foreign."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"The toy-clip weights {path} do not exist. Pre-train them (about ten minutes on 2 CPU cores): "
                        f"{PRETRAIN_COMMAND}")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise UserError(f"{path} is not a {FORMAT} checkpoint. Re-create it: {PRETRAIN_COMMAND}")
    return ckpt


def from_checkpoint(ckpt: dict[str, Any], device: str | torch.device = "cpu", precision: str = "fp32") -> CLIP:
    """Rebuild a toy-clip from its checkpoint dict as a normal open_clip CLIP (eval mode, full vocabulary)."""
    init = build_architecture(ckpt["init_seed"])  # supplies the token rows pre-training never touched
    sd = {k: v.float() for k, v in ckpt["state_dict"].items()}
    emb = init.token_embedding.weight.detach().clone()
    emb[ckpt["token_ids"].long()] = ckpt["token_rows"].float()
    sd["token_embedding.weight"] = emb
    return build_architecture(ckpt["init_seed"], device=device, precision=precision, state_dict=sd)


def load_toy_clip(path: str | os.PathLike = CHECKPOINT, device: str | torch.device = "cpu",
                  precision: str = "fp32") -> CLIP:
    """The pre-trained toy-clip stored at ``path``."""
    return from_checkpoint(read_checkpoint(path), device=device, precision=precision)


def builder(device: str | torch.device, precision: str, seed: int) -> CLIP:
    """``clip.register_backbone`` builder. ``seed`` is ignored: the weights are pre-trained, not random."""
    return load_toy_clip(CHECKPOINT, device=device, precision=precision)


clip.register_backbone("toy-clip", builder)
