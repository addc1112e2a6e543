"""VPT-deep as the MaPLe repository implements it (docs/method_notes.md#vpt-deep): deep visual prompts only, against the
fixed text classifier "a photo of a {class}." computed once per class set.

The text features are constant, so with ``--calib`` the moment-matching term is a constant (no gradient) and only
the margin term acts; that is expected (docs/method_notes.md#what-each-method-gives-the-shared-step).
"""
from __future__ import annotations

import torch

from dassl.engine import TRAINER_REGISTRY

from .base import PromptModel, PromptTrainer
from .ivlp import VisionPrompts, prompt_depth, prompted_image_features, require_vit
from .templates import DEFAULT_TEMPLATE, zeroshot_text_features

#: VPT's classifier template, the same for every dataset (not the dataset's own template).
VPT_TEMPLATE = DEFAULT_TEMPLATE


class VPTModel(PromptModel):
    image_prompted = True
    fp32_params = ("visual_prompts",)

    def __init__(self, cfg, classnames, clip_model, zs_text_features):
        super().__init__(cfg, classnames, clip_model, zs_text_features)
        node = cfg.TRAINER.VPT
        require_vit(self.image_encoder, "VPT", cfg)
        depth = prompt_depth(node.PROMPT_DEPTH_VISION, self.image_encoder.num_layers,
                             "TRAINER.VPT.PROMPT_DEPTH_VISION", minimum=1)
        self.visual_prompts = VisionPrompts(self.image_encoder, int(node.N_CTX_VISION), depth, "TRAINER.VPT")
        text = zeroshot_text_features(clip_model, classnames, [VPT_TEMPLATE])
        self.register_buffer("text_features", text.float(), persistent=False)
        print(f"Vision prompt depth {depth}; fixed text classifier {VPT_TEMPLATE!r}")

    def encode_text(self) -> torch.Tensor:
        return self.text_features

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        return prompted_image_features(self.image_encoder, image, *self.visual_prompts())


@TRAINER_REGISTRY.register()
class VPT(PromptTrainer):
    model_class = VPTModel
    cfg_node = "VPT"
    sweep_config = "vit_b16_c2_ep5_batch4_4"  # the config tools/sweep.py runs (the paper's base-to-novel one)
    registered_name = "prompt_learner"
    # CTX_INIT is read by nothing (the text side is fixed); kept so the reference's configs merge.
    cfg_defaults = {"N_CTX_VISION": 2, "CTX_INIT": "a photo of a", "PREC": "fp16", "PROMPT_DEPTH_VISION": 1}
