"""IVLP (docs/method_notes.md#ivlp-and-language-only): independent deep prompts in the text tower and in the vision
tower.

The language-only variant ("deep language prompting") is IVLP with ``PROMPT_DEPTH_VISION 0``. The pieces here are
shared by import: :class:`IVLPModel` is PromptSRC's prompted model (§11), :class:`VisionPrompts` is VPT's (§9), and
:func:`prompt_depth` / :func:`text_context` serve MaPLe (§10) too.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from common.errors import UserError
from dassl.engine import TRAINER_REGISTRY

from .base import PromptModel, PromptTrainer
from .prompts import TextPrompts, count_tokens, init_phrase

#: The reference uses an init phrase only for up to this many context tokens (random "X" context beyond).
MAX_INIT_CTX = 4


def prompt_depth(value, num_layers: int, key: str, minimum: int = 0) -> int:
    """A prompt depth J from the config, clipped to the tower's layer count with a printed note (so a published
    depth 9/12 config runs on a small test backbone; ViT-B/16 has 12 layers and never hits the clip)."""
    depth = int(value)
    if depth < minimum:
        raise UserError(f"{key} is {depth}; it must be at least {minimum}")
    if depth > num_layers:
        print(f"Note: {key} {depth} exceeds the backbone's {num_layers} layers; using depth {num_layers}")
        return num_layers
    return depth


def normal_prompts(n_sets: int, n_tokens: int, width: int) -> nn.ParameterList:
    """``n_sets`` prompt tensors n_tokens×width drawn from N(0, 0.02) (every deep prompt of the references)."""
    return nn.ParameterList([nn.Parameter(torch.empty(n_tokens, width).normal_(std=0.02)) for _ in range(n_sets)])


def require_vit(image_encoder, method: str, cfg) -> None:
    if not image_encoder.supports_prompts:
        raise UserError(f"{method} puts learnable prompts into the image tower, which needs a ViT backbone; "
                        f"MODEL.BACKBONE.NAME is {cfg.MODEL.BACKBONE.NAME!r} (use e.g. ViT-B/16)")


def text_context(text_encoder, classnames, n_ctx: int, ctx_init, key: str) -> tuple[TextPrompts, nn.Parameter]:
    """Prompt buffers and the layer-0 text context of MaPLe/IVLP/PromptSRC
    (docs/method_notes.md#ivlp-and-language-only).

    With an init phrase and ``n_ctx <= 4`` the placeholder string is the whole phrase and the context starts as its
    first ``n_ctx`` token embeddings; the phrase's remaining tokens stay as fixed text ("a photo of a" with 2 ctx:
    ctx = [a, photo], fixed "of a {class}."). Otherwise ``n_ctx`` "X" placeholders and N(0, 0.02) init.
    """
    if n_ctx < 1:
        raise UserError(f"{key} must be at least 1 (got {n_ctx})")
    phrase = init_phrase(ctx_init)
    if phrase and n_ctx > MAX_INIT_CTX:
        print(f"Note: CTX_INIT is used only with at most {MAX_INIT_CTX} context tokens; {n_ctx} random tokens")
        phrase = ""
    if phrase and count_tokens(phrase) < n_ctx:
        raise UserError(f"{key.rsplit('.', 1)[0]}.CTX_INIT {phrase!r} has {count_tokens(phrase)} tokens, fewer than "
                        f"the {n_ctx} context tokens ({key}); use a longer phrase, fewer tokens, or CTX_INIT \"\"")
    prompts = TextPrompts(text_encoder, classnames, n_ctx, init=phrase)
    if phrase:
        ctx = nn.Parameter(prompts.init_vectors.float().clone())
    else:
        ctx = nn.Parameter(torch.empty(n_ctx, text_encoder.width).normal_(std=0.02))
    print(f'Initial text context: "{phrase or " ".join(["X"] * n_ctx)}"; {n_ctx} learnable token(s)')
    return prompts, ctx


class VisionPrompts(nn.Module):
    """Deep visual prompts (VPT-deep): ``prompt`` (n_v×Dv) appended after the patch tokens before layer 0 and
    ``deep[k]`` replacing those tokens before layer k+1, k = 0..J-2; layers >= J carry them forward."""

    def __init__(self, image_encoder, n_ctx: int, depth: int, key: str):
        super().__init__()
        if n_ctx < 1:
            raise UserError(f"{key}.N_CTX_VISION is {n_ctx} while the vision prompt depth is {depth}; use at least "
                            f"1 visual token (or PROMPT_DEPTH_VISION 0 for IVLP's language-only variant)")
        width = image_encoder.width
        self.prompt = nn.Parameter(torch.empty(n_ctx, width).normal_(std=0.02))
        self.deep = normal_prompts(depth - 1, n_ctx, width)

    def forward(self) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return self.prompt, list(self.deep)


def prompted_image_features(image_encoder, image: torch.Tensor, prompts, deep) -> torch.Tensor:
    """Normalised image features with visual prompts (the encoder casts the prompts to its dtype)."""
    return F.normalize(image_encoder(image.to(image_encoder.dtype), prompts, deep).float(), dim=-1)


class IVLPModel(PromptModel):
    """Text: ``ctx`` at layer 0 plus ``text_deep[k]`` over rows 1..n_t before layer k+1. Vision: ``visual_prompts``
    (absent in the language-only variant). No coupling between the two towers."""

    cfg_node: str = "IVLP"  # PromptSRC reuses the model with its own node
    fp32_params = ("text_deep", "visual_prompts")  # the reference keeps deep prompts fp32 (ctx has the model dtype)

    def __init__(self, cfg, classnames, clip_model, zs_text_features):
        super().__init__(cfg, classnames, clip_model, zs_text_features)
        node, key = cfg.TRAINER[self.cfg_node], f"TRAINER.{self.cfg_node}"
        n_text = int(node.N_CTX_TEXT)
        self.prompts, self.ctx = text_context(self.text_encoder, classnames, n_text, node.CTX_INIT,
                                              f"{key}.N_CTX_TEXT")
        depth_t = prompt_depth(node.PROMPT_DEPTH_TEXT, self.text_encoder.num_layers, f"{key}.PROMPT_DEPTH_TEXT",
                               minimum=1)
        self.text_deep = normal_prompts(depth_t - 1, n_text, self.text_encoder.width)
        depth_v = prompt_depth(node.PROMPT_DEPTH_VISION, self.image_encoder.num_layers,
                               f"{key}.PROMPT_DEPTH_VISION")
        self.visual_prompts = None
        if depth_v > 0:
            require_vit(self.image_encoder, type(self).__name__, cfg)
            self.visual_prompts = VisionPrompts(self.image_encoder, int(node.N_CTX_VISION), depth_v, key)
        self.image_prompted = self.visual_prompts is not None
        print(f"Prompt depth: text {depth_t}, vision {depth_v}"
              + ("" if depth_v else " (language-only: frozen image tower)"))

    def encode_text(self) -> torch.Tensor:
        return self.encode_prompts(self.prompts.assemble(self.ctx), self.prompts.eot_idx, list(self.text_deep))

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        if self.visual_prompts is None:
            return super().encode_image(image)
        return prompted_image_features(self.image_encoder, image, *self.visual_prompts())


@TRAINER_REGISTRY.register()
class IVLP(PromptTrainer):
    model_class = IVLPModel
    cfg_node = "IVLP"
    sweep_config = "vit_b16_c2_ep5_batch4_2+2ctx"  # the config tools/sweep.py runs (the paper's base-to-novel one)
    registered_name = "VLPromptLearner"
    cfg_defaults = {"N_CTX_VISION": 2, "N_CTX_TEXT": 2, "CTX_INIT": "a photo of a", "PREC": "fp16",
                    "PROMPT_DEPTH_VISION": 9, "PROMPT_DEPTH_TEXT": 9}
