"""MaPLe (docs/method_notes.md#maple): coupled vision-language prompts. The text prompts of layers 0..J-1 are learnable;
the vision prompts are their projections (``proj`` for layer 0, one Linear per deeper layer), Dt -> Dv (512 -> 768 on
ViT-B/16), so both towers' gradients reach the text prompts."""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from dassl.engine import TRAINER_REGISTRY

from .base import PromptModel, PromptOutput, PromptTrainer
from .ivlp import normal_prompts, prompt_depth, prompted_image_features, require_vit, text_context


@dataclass
class MaPLePrepared:
    """The image-independent part of a forward: computed once per evaluation."""

    text_features: torch.Tensor            # normalised C×E
    vision_prompt: torch.Tensor            # n×Dv, layer 0
    vision_deep: list[torch.Tensor]        # J-1 tensors n×Dv, layers 1..J-1


def _linear(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return layer(x.to(layer.weight.dtype))


class MaPLeModel(PromptModel):
    image_prompted = True
    # The reference creates ctx and proj in the model dtype and the deep prompts/projections in fp32.
    fp32_params = ("compound_prompts_text", "compound_prompt_projections")

    def __init__(self, cfg, classnames, clip_model, zs_text_features):
        super().__init__(cfg, classnames, clip_model, zs_text_features)
        node = cfg.TRAINER.MAPLE
        require_vit(self.image_encoder, "MaPLe", cfg)
        n_ctx = int(node.N_CTX)
        self.prompts, self.ctx = text_context(self.text_encoder, classnames, n_ctx, node.CTX_INIT,
                                              "TRAINER.MAPLE.N_CTX")
        layers = min(self.text_encoder.num_layers, self.image_encoder.num_layers)
        depth = prompt_depth(node.PROMPT_DEPTH, layers, "TRAINER.MAPLE.PROMPT_DEPTH", minimum=1)
        d_text, d_vision = self.text_encoder.width, self.image_encoder.width
        self.proj = nn.Linear(d_text, d_vision)
        self.compound_prompts_text = normal_prompts(depth - 1, n_ctx, d_text)
        # Deep copies of ONE default-initialised Linear: all deep projections start identical (the reference).
        layer = nn.Linear(d_text, d_vision)
        self.compound_prompt_projections = nn.ModuleList([copy.deepcopy(layer) for _ in range(depth - 1)])
        print(f"MaPLe prompt depth {depth}: {n_ctx} coupled tokens, projections {d_text} -> {d_vision}")

    def encode_text(self) -> torch.Tensor:
        return self.encode_prompts(self.prompts.assemble(self.ctx), self.prompts.eot_idx,
                                   list(self.compound_prompts_text))

    def prepare(self) -> MaPLePrepared:
        deep = [_linear(layer, p) for layer, p in zip(self.compound_prompt_projections, self.compound_prompts_text)]
        return MaPLePrepared(self.encode_text(), _linear(self.proj, self.ctx), deep)

    def encode_image(self, image: torch.Tensor, prepared: MaPLePrepared | None = None) -> torch.Tensor:
        prepared = self.prepare() if prepared is None else prepared
        return prompted_image_features(self.image_encoder, image, prepared.vision_prompt, prepared.vision_deep)

    def forward(self, image=None, label=None, *, prepared=None, image_features=None) -> PromptOutput:
        prepared = self.prepare() if prepared is None else prepared
        f = self.encode_image(image, prepared) if image_features is None else image_features
        text = prepared.text_features
        return PromptOutput(logits=self.logit_scale * f @ text.t(), text_features=text, image_features=f)


@TRAINER_REGISTRY.register()
class MaPLe(PromptTrainer):
    model_class = MaPLeModel
    cfg_node = "MAPLE"
    sweep_config = "vit_b16_c2_ep5_batch4_2ctx"  # the config tools/sweep.py runs (the paper's base-to-novel one)
    # its own ImageNet config (depth 3, lr 0.0026, 2 epochs); no few-shot recipe (PromptSRC#21)
    sweep_cross_dataset_config = "vit_b16_c2_ep5_batch4_2ctx_cross_datasets"
    registered_name = "MultiModalPromptLearner"
    cfg_defaults = {"N_CTX": 2, "CTX_INIT": "a photo of a", "PREC": "fp16", "PROMPT_DEPTH": 9}
