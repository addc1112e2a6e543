"""CLIP for prompt tuning, built by open_clip (docs/architecture.md §1).

    clip.load(name_or_path, device="cpu", precision="fp32") -> open_clip CLIP (eval mode)
    clip.tokenize(texts, context_length=77, truncate=False) -> LongTensor[N, 77]
    clip.TextEncoder(model) / clip.VisionEncoder(model)     prompt-aware towers
    clip.set_text_options(model, truncate_eot, checkpoint_chunk)  text-tower speed options (exact)
    clip.register_backbone(name, builder)                   builder(device, precision, seed) -> CLIP

OpenAI's package API is kept for CoOp-family trainer files (`from clip import clip`, `clip.clip.load`, `_MODELS`,
`_download`, `build_model`, `clip.model.convert_weights`, `clip.simple_tokenizer.SimpleTokenizer`), and every model
has OpenAI's attribute semantics (`clip/model.py`).

Errors a user can cause raise dassl.utils.UserError (docs/architecture.md §5).
"""
from .backbones import register_backbone
from .build import LOGIT_SCALE_INIT, PRECISIONS, build_clip, cast_copy
from .encoders import TextEncoder, VisionEncoder, set_text_options
from .loading import OPENAI_MODELS, available_models, load, read_state_dict
from .model import build_model, convert_weights, openai_compatible
from .tokenizer import EOT_TOKEN, SOT_TOKEN, tokenize
from . import clip, model, simple_tokenizer  # noqa: E402  (OpenAI's submodules: `from clip import clip`)

__all__ = [
    "load", "available_models", "tokenize", "TextEncoder", "VisionEncoder", "set_text_options", "register_backbone", "build_clip",
    "cast_copy", "read_state_dict", "build_model", "convert_weights", "openai_compatible", "OPENAI_MODELS",
    "PRECISIONS", "LOGIT_SCALE_INIT", "SOT_TOKEN", "EOT_TOKEN",
]
