"""OpenAI's ``clip.model`` API on our open_clip models: the attribute semantics CoOp-family trainer files rely on.

Every model ``clip.load`` and ``clip.build_model`` return is an open_clip ``CLIP`` made OpenAI-compatible in
place by :func:`openai_compatible` (same modules, same parameters, same state-dict keys):

- ``model.dtype``: the dtype of the image tower's first convolution (OpenAI's definition), so it follows
  ``model.float()`` / ``model.half()``;
- ``model.encode_image(image)`` casts ``image`` to ``model.dtype`` first, as OpenAI's does;
- ``model.transformer(x)`` takes SEQUENCE-FIRST input ``[L, N, D]`` and applies the causal attention mask itself,
  as OpenAI's text transformer does (open_clip's runs batch-first and takes the mask as an argument). The
  standard CoOp ``TextEncoder`` (``x.permute(1, 0, 2)``; ``self.transformer(x)``; ``x.permute(1, 0, 2)``) therefore
  computes CLIP's text features. Its blocks are open_clip's, unchanged: ``clip.TextEncoder`` runs them directly;
  ``model.transformer.forward_batch_first(x, attn_mask)`` is open_clip's own call;
- ``model.visual.input_resolution``: the input size in pixels (an int);
- ViT image towers: ``model.visual.transformer(x)`` is sequence-first too (no mask), so VPT-style code that walks
  the tower itself (``conv1`` ... ``ln_pre``; ``x.permute(1, 0, 2)``; ``transformer``; ``ln_post``) computes CLIP's
  features; ``model.visual(x)`` runs open_clip's own steps (``_embeds``, the blocks, ``_pool``, ``proj``). With an
  open_clip older than 3.0 (no ``_embeds``/``_pool``) the image tower is left batch-first.
"""
from __future__ import annotations

import contextlib
from typing import Mapping, Optional

import torch
import torch.nn.functional as F
from open_clip import model as _oc
from open_clip.transformer import Transformer as _OCTransformer
from open_clip.transformer import VisionTransformer as _OCVisionTransformer

from .build import build_clip, config_from_state_dict

#: keys of an OpenAI checkpoint that are not weights (OpenAI's build_model drops them too)
NON_WEIGHT_KEYS = ("input_resolution", "context_length", "vocab_size", "attn_mask")


class SequenceFirstTransformer(_OCTransformer):
    """An open_clip ``Transformer`` with OpenAI's call: ``forward(x [L, N, D]) -> [L, N, D]``, its mask (buffer
    ``attn_mask``: the causal mask of the text tower, None in the image tower) applied inside. Set on a model's
    transformers by :func:`openai_compatible`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D401 - OpenAI's signature: no mask argument
        if x.dim() != 3:
            raise ValueError(f"model.transformer expects sequence-first input [L, N, D], got shape {tuple(x.shape)}")
        mask = self.attn_mask
        if mask is not None and mask.shape[0] != x.shape[0]:
            mask = mask[: x.shape[0], : x.shape[0]]
        return self.forward_batch_first(x.transpose(0, 1), attn_mask=mask).transpose(0, 1)

    def forward_batch_first(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """open_clip's own ``Transformer.forward``: ``[N, L, D]``, the mask given explicitly."""
        return _OCTransformer.forward(self, x, attn_mask=attn_mask)


class VisionTransformer(_OCVisionTransformer):
    """open_clip's ViT image tower whose ``transformer`` is sequence-first (OpenAI's); its own forward is
    open_clip's, step by step, with the blocks run batch-first."""

    def forward(self, x: torch.Tensor):
        x = self._embeds(x)
        x = self.transformer.forward_batch_first(x)
        pooled, tokens = self._pool(x)
        if self.proj is not None:
            pooled = pooled @ self.proj
        return (pooled, tokens) if self.output_tokens else pooled


class CLIP(_oc.CLIP):
    """open_clip's CLIP with OpenAI's ``dtype``, ``encode_image`` casting and sequence-first ``transformer``.

    Not constructed directly: :func:`openai_compatible` converts a built open_clip ``CLIP`` in place.
    """

    @property
    def dtype(self) -> torch.dtype:
        return self.visual.conv1.weight.dtype

    def encode_image(self, image: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        return super().encode_image(image.to(self.dtype), normalize=normalize)

    def encode_text(self, text: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """Text features of token ids [N, 77]: ``clip.TextEncoder`` (open_clip's computation, to the bit)."""
        from .encoders import TextEncoder

        encoder = TextEncoder(self)
        x = encoder(encoder.embed(text), text.argmax(dim=-1))
        return F.normalize(x, dim=-1) if normalize else x


def openai_compatible(model: _oc.CLIP) -> _oc.CLIP:
    """Give an open_clip ``CLIP`` OpenAI's attribute semantics in place (see the module docstring); returns it.

    Subclasses of open_clip's CLIP other than ours are returned unchanged (their owner decides their semantics).
    """
    if type(model) is _oc.CLIP:
        model.__class__ = CLIP
    if not isinstance(model, CLIP):
        return model
    transformer = model.transformer
    if type(transformer) is _OCTransformer:
        transformer.__class__ = SequenceFirstTransformer
        transformer.register_buffer("attn_mask", model.attn_mask, persistent=False)
    visual = model.visual
    if (type(visual) is _OCVisionTransformer and type(visual.transformer) is _OCTransformer
            and hasattr(visual, "_embeds") and hasattr(visual, "_pool")):
        visual.__class__ = VisionTransformer
        visual.transformer.__class__ = SequenceFirstTransformer
        visual.transformer.register_buffer("attn_mask", None, persistent=False)
    size = getattr(model.visual, "image_size", None)
    if size is not None and not hasattr(model.visual, "input_resolution"):
        model.visual.input_resolution = int(size if isinstance(size, int) else size[0])
    return model


def convert_weights(model: torch.nn.Module) -> None:
    """OpenAI's ``convert_weights``: Conv/Linear/attention weights and the projections to fp16, in place
    (LayerNorms and embeddings stay fp32; open_clip's LayerNorm casts its output back to the input dtype)."""
    _oc.convert_weights_to_lp(model, dtype=torch.float16)


#: The precision :func:`build_model` builds in during a run (set by :func:`build_precision`); None: OpenAI's fp16.
_BUILD: dict = {"precision": None, "note": ""}


@contextlib.contextmanager
def build_precision(precision: Optional[str], note: str = ""):
    """Within: :func:`build_model` builds ``precision`` weights instead of OpenAI's fp16, printing ``note`` once.
    The application uses it for a run on a CPU, where pure half precision is not run (the built-in trainers'
    ``PREC fp16`` rule), so a ported file that keeps OpenAI's fp16 model follows the same rule."""
    saved = dict(_BUILD)
    _BUILD.update(precision=precision, note=note)
    try:
        yield
    finally:
        _BUILD.clear()
        _BUILD.update(saved)


#: MaPLe-style ``design_details`` keys that put prompts inside the towers; all 0 (or absent) is plain CLIP
PROMPT_DESIGN_KEYS = ("vision_depth", "language_depth", "vision_ctx", "language_ctx", "maple_length")


def check_design_details(design_details: Optional[Mapping]) -> None:
    """``design_details`` of MaPLe's ``build_model(state_dict, design_details)``: with every prompt depth and length
    0 (the paper's ``coop.py``) it asks for plain CLIP; anything else needs prompts inside the towers, which
    ``clip.TextEncoder`` / ``clip.VisionEncoder`` provide to a ``PromptModel`` instead."""
    if design_details is None:
        return
    if not isinstance(design_details, Mapping):
        raise TypeError(f"clip.build_model: design_details must be a dict (MaPLe's), got {type(design_details)}")
    deep = {k: design_details[k] for k in PROMPT_DESIGN_KEYS if design_details.get(k)}
    trainer = str(design_details.get("trainer", ""))
    if deep or trainer.lower() == "maple":
        from common.errors import UserError

        what = ", ".join(f"{k}={v}" for k, v in deep.items()) or f"trainer={trainer!r}"
        builtin = {"maple": "MaPLe", "ivlp": "IVLP", "vpt": "VPT", "promptsrc": "PromptSRC"}.get(trainer.lower())
        use = f"--trainer {builtin} (trainers/{builtin.lower()}.py)" if builtin else \
            "the built-in deep-prompt methods (trainers/maple.py, ivlp.py, vpt.py, promptsrc.py)"
        raise UserError(f"clip.build_model(state_dict, design_details) with {what} asks for prompts inside CLIP's "
                        f"towers (MaPLe's modified clip/model.py), which this CLIP does not build: use {use}, or "
                        "port the method as a PromptModel with clip.TextEncoder / clip.VisionEncoder deep prompts "
                        "(docs/adding_a_method.md, \"Porting a CoOp-family trainer\")")


def build_model(state_dict: Mapping[str, torch.Tensor], design_details: Optional[Mapping] = None) -> CLIP:
    """OpenAI's ``build_model``: the CLIP of an OpenAI-layout state dict (architecture read from the tensor shapes),
    with fp16 matrices as OpenAI's (call ``.float()`` for fp32, as CoOp-family trainers do), in eval mode.

    ``design_details``: MaPLe's second argument; all prompt depths 0 is plain CLIP (:func:`check_design_details`).
    During a run on a CPU the weights are fp32 (:func:`build_precision`)."""
    check_design_details(design_details)
    sd = {k: v for k, v in state_dict.items() if k not in NON_WEIGHT_KEYS}
    embed_dim, vision_cfg, text_cfg = config_from_state_dict(sd, source="clip.build_model's state dict")
    precision = _BUILD["precision"] or "fp16"
    if _BUILD["note"] and precision != "fp16":
        print(_BUILD["note"])
        _BUILD["note"] = ""
    model = build_clip(embed_dim, vision_cfg, text_cfg, precision=precision, state_dict=sd, quick_gelu=True,
                       source="clip.build_model's state dict")
    return openai_compatible(model)
