"""CLIP for prompt tuning, built by open_clip (DESIGN.md §4.2, docs/architecture.md §1).

    clip.load(name_or_path, device="cpu", precision="fp32") -> open_clip CLIP (eval mode)
    clip.tokenize(texts, context_length=77, truncate=False) -> LongTensor[N, 77]
    clip.TextEncoder(model) / clip.VisionEncoder(model)     prompt-aware towers
    clip.register_backbone(name, builder)                   builder(device, precision, seed) -> CLIP

Errors a user can cause raise dassl.utils.UserError (docs/architecture.md §5).
"""
from .backbones import register_backbone
from .build import LOGIT_SCALE_INIT, PRECISIONS, build_clip, cast_copy
from .encoders import TextEncoder, VisionEncoder
from .loading import OPENAI_MODELS, available_models, load, read_state_dict
from .tokenizer import EOT_TOKEN, SOT_TOKEN, tokenize

__all__ = [
    "load", "available_models", "tokenize", "TextEncoder", "VisionEncoder", "register_backbone", "build_clip", "cast_copy",
    "read_state_dict", "OPENAI_MODELS", "PRECISIONS", "LOGIT_SCALE_INIT", "SOT_TOKEN", "EOT_TOKEN",
]
