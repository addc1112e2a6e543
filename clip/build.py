"""Constructing open_clip CLIP models: precision policy, RNG-isolated init, OpenAI-format config inference.

Models built here go through `finalize` (device, precision, eval); the one precision policy is OpenAI's, which
is also what open_clip's `create_model` applies to `ARCH:PRETRAINED` models. Construction runs under a forked CPU RNG: building a backbone (random init or the throw-away init
before weights are loaded) never consumes the global torch RNG, so a run's seed fixes the same data order and
prompt init whichever backbone it uses.
"""
from __future__ import annotations

import copy
import math
from dataclasses import asdict
from typing import Mapping, Optional, Tuple, Union

import torch
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg, convert_weights_to_lp, set_model_preprocess_cfg
from open_clip.transform import PreprocessCfg
from open_clip.transformer import LayerNormFp32
from torch import nn

from common.errors import UserError

PRECISIONS = ("fp32", "fp16", "bf16", "amp")
LOGIT_SCALE_INIT = math.log(100.0)  # OpenAI's trained value: exp(logit_scale) = 100

# "fp16"/"bf16": OpenAI's build (clip.load): Conv/Linear/MHA weights, text_projection and visual.proj in low
# precision; LayerNorm, BatchNorm and the embeddings stay fp32 (LayerNorm computes in fp32 and casts back).
# "amp": fp32 weights, the trainer adds autocast.
_LOW_PRECISION = {"fp16": torch.float16, "bf16": torch.bfloat16}


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise UserError(f"Unknown CLIP precision {precision!r} (TRAINER.<METHOD>.PREC); use one of {PRECISIONS}.")
    return precision


def open_clip_precision(precision: str) -> str:
    """The open_clip `create_model` precision with the same weights as ours ("amp" builds fp32 weights)."""
    return "fp32" if check_precision(precision) == "amp" else precision


def low_precision_dtype(precision: str) -> Optional[torch.dtype]:
    """The dtype of the matrices for `precision` (None = fp32); also selects fp32-computing LayerNorms."""
    return _LOW_PRECISION.get(check_precision(precision))


def finalize(model: CLIP, device: Union[str, torch.device], precision: str) -> CLIP:
    """Move to `device`, cast per `precision` (fp32 models only) and switch to eval mode."""
    model = model.to(device)
    dtype = low_precision_dtype(precision)
    if dtype is not None:
        convert_weights_to_lp(model, dtype=dtype)
    if not hasattr(model.visual, "preprocess_cfg"):
        # open_clip's defaults are OpenAI's preprocessing (mean/std, bicubic, shortest-side resize)
        set_model_preprocess_cfg(model, asdict(PreprocessCfg(size=getattr(model.visual, "image_size", 224))))
    return model.eval()


def cast_copy(module: nn.Module, precision: str) -> nn.Module:
    """A copy of a CLIP model or of a part of it (a tower, `clip.TextEncoder`) cast as `build_clip` would have built
    it in `precision`: "fp32"/"amp" every tensor fp32; "fp16"/"bf16" OpenAI's build (matrices and the projections
    in low precision, embeddings fp32, every LayerNorm computing in fp32 and casting back). Used to run a frozen
    tower in another precision than the model's (the paper's fp16 zero-shot CLIP next to an fp32 model)."""
    dtype = low_precision_dtype(precision)
    out = copy.deepcopy(module).float()
    if dtype is not None:
        convert_weights_to_lp(out, dtype=dtype)
        for m in out.modules():
            if isinstance(m, nn.LayerNorm) and not isinstance(m, LayerNormFp32):
                m.__class__ = LayerNormFp32  # same parameters; computes in fp32 (OpenAI's LayerNorm)
            for name in ("text_projection", "proj"):  # projections held outside CLIP/the towers (TextEncoder)
                t = getattr(m, name, None)
                if isinstance(t, nn.Parameter):
                    t.data = t.data.to(dtype)
    return out


def build_clip(embed_dim: int, vision_cfg: CLIPVisionCfg, text_cfg: CLIPTextCfg, *,
               device: Union[str, torch.device] = "cpu", precision: str = "fp32", seed: Optional[int] = None,
               state_dict: Optional[Mapping[str, torch.Tensor]] = None, quick_gelu: bool = True,
               init_logit_scale: float = LOGIT_SCALE_INIT, source: str = "") -> CLIP:
    """Build an open_clip `CLIP` (random init seeded by `seed`, or `state_dict` loaded strictly), finalized.

    The global torch RNG is left untouched (init runs under a forked CPU RNG, seeded only there). Backbone
    builders registered with `clip.register_backbone` can use this to get the project's precision policy.
    `source` names the weights file in error messages.
    """
    dtype = low_precision_dtype(precision)
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.default_generator.manual_seed(int(seed))  # CPU only: CUDA generators stay untouched
        model = CLIP(embed_dim, vision_cfg=vision_cfg, text_cfg=text_cfg, quick_gelu=quick_gelu,
                     init_logit_scale=init_logit_scale, cast_dtype=dtype)
    if state_dict is not None:
        try:
            model.load_state_dict(state_dict, strict=True)
        except RuntimeError as e:
            raise UserError(
                f"The weights in {source or 'the state dict'} do not fit the CLIP architecture inferred from "
                f"them ({e}). For an open_clip checkpoint of another architecture, name it as "
                f"'ARCH:/path/to/file' (ARCH from open_clip.list_models()).") from None
    return finalize(model, device, precision)


def _count_blocks(state_dict: Mapping[str, torch.Tensor], prefix: str) -> int:
    """Number of distinct indices i in keys '<prefix>.<i>.*'."""
    depth = prefix.count(".") + 1
    return len({k.split(".")[depth] for k in state_dict if k.startswith(prefix + ".")})


_REQUIRED_KEYS = ("text_projection", "positional_embedding", "token_embedding.weight", "ln_final.weight")


def config_from_state_dict(state_dict: Mapping[str, torch.Tensor],
                           source: str = "") -> Tuple[int, CLIPVisionCfg, CLIPTextCfg]:
    """(embed_dim, vision_cfg, text_cfg) of an OpenAI-layout CLIP state dict, read from the tensor shapes.

    OpenAI's convention: 64-dim attention heads in every tower (heads are not stored in the weights).
    """
    where = source or "the state dict"
    missing = [k for k in _REQUIRED_KEYS if k not in state_dict]
    vit = "visual.proj" in state_dict
    if not vit and "visual.attnpool.positional_embedding" not in state_dict:
        missing.append("visual.proj or visual.attnpool.positional_embedding")
    if missing:
        raise UserError(
            f"{where} is not an OpenAI-layout CLIP checkpoint: missing {', '.join(missing)}. Use an OpenAI "
            f"file (e.g. ~/.cache/clip/ViT-B-16.pt) or name an open_clip checkpoint as 'ARCH:/path/to/file'.")
    if vit:
        conv = state_dict["visual.conv1.weight"]
        patch = conv.shape[-1]
        grid = round((state_dict["visual.positional_embedding"].shape[0] - 1) ** 0.5)
        vision_cfg = CLIPVisionCfg(layers=_count_blocks(state_dict, "visual.transformer.resblocks"),
                                   width=conv.shape[0], head_width=64, patch_size=patch, image_size=patch * grid)
    else:
        layers = tuple(_count_blocks(state_dict, f"visual.layer{b}") for b in (1, 2, 3, 4))
        grid = round((state_dict["visual.attnpool.positional_embedding"].shape[0] - 1) ** 0.5)
        vision_cfg = CLIPVisionCfg(layers=layers, width=state_dict["visual.layer1.0.conv1.weight"].shape[0],
                                   head_width=64, image_size=grid * 32)
    text_width = state_dict["ln_final.weight"].shape[0]
    text_cfg = CLIPTextCfg(context_length=state_dict["positional_embedding"].shape[0],
                           vocab_size=state_dict["token_embedding.weight"].shape[0], width=text_width,
                           heads=text_width // 64, layers=_count_blocks(state_dict, "transformer.resblocks"))
    return state_dict["text_projection"].shape[1], vision_cfg, text_cfg
