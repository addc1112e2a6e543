"""CoCoOp (docs/method_notes.md#cocoop): CoOp's context plus an image-conditioned bias from a small meta-net.

Each image gets its own context ``ctx + meta_net(f_i)`` (the same bias on every context token), so its own class
text features: ``text_features`` is B×C×E and the model sets ``text_per_image`` so evaluation computes them per
image. The image tower stays frozen, so the image features (and the zero-shot logits) are still shared.
With ``--calib`` the moment term's T comes from these B×C×E features (``TRAINER.CALIB.INSTANCE_T``).
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from dassl.engine import TRAINER_REGISTRY

from .base import PromptModel, PromptOutput, PromptTrainer
from .coop import init_context
from .prompts import TextPrompts, count_tokens, init_phrase


class CoCoOpModel(PromptModel):
    text_per_image = True  # text features depend on the image: PromptTrainer.predict does not precompute them

    def __init__(self, cfg, classnames, clip_model, zs_text_features):
        super().__init__(cfg, classnames, clip_model, zs_text_features)
        node = cfg.TRAINER.COCOOP
        phrase = init_phrase(node.CTX_INIT)
        n_ctx = count_tokens(phrase) if phrase else int(node.N_CTX)
        self.prompts = TextPrompts(self.text_encoder, classnames, n_ctx, init=phrase, position="end")
        width, embed = self.text_encoder.width, self.image_encoder.output_dim
        print(f'Initial context: "{phrase or " ".join(["X"] * n_ctx)}"; number of context words: {n_ctx}')
        self.ctx = init_context(self.prompts, (n_ctx, width))
        hidden = max(1, embed // 16)
        self.meta_net = nn.Sequential(OrderedDict([
            ("linear1", nn.Linear(embed, hidden)), ("relu", nn.ReLU(inplace=True)),
            ("linear2", nn.Linear(hidden, width))]))

    def instance_text_features(self, image_features: torch.Tensor) -> torch.Tensor:
        """Normalised class text features B×C×E for each image's conditioned context.

        At evaluation, images are taken in groups of about ``TEST.TEXT_CHUNK // C`` so at most ~TEXT_CHUNK prompts
        are assembled at once (100 test images × 1000 classes would not fit).
        """
        weight = self.meta_net.linear1.weight
        bias = self.meta_net(image_features.to(weight.dtype))  # B×Dt
        ctx = self.ctx.unsqueeze(0) + bias.unsqueeze(1).to(self.ctx.dtype)  # B×M×Dt
        B, C = ctx.shape[0], self.prompts.num_classes
        group = B if self.training or self.text_chunk <= 0 else max(1, self.text_chunk // C)
        parts = []
        for i in range(0, B, group):
            ctx_g = ctx[i:i + group]
            prompts = self.prompts.assemble_batched(ctx_g).flatten(0, 1)  # (g·C)×77×Dt
            eot = self.prompts.eot_idx.repeat(ctx_g.shape[0])
            parts.append(self.encode_prompts(prompts, eot).view(ctx_g.shape[0], C, -1))
        return torch.cat(parts)

    def prepare(self):
        return None  # nothing is image-independent

    def forward(self, image=None, label=None, *, prepared=None, image_features=None) -> PromptOutput:
        f = self.encode_image(image) if image_features is None else image_features.float()
        text = self.instance_text_features(f)
        logits = self.logit_scale * torch.einsum("be,bce->bc", f, text)
        return PromptOutput(logits=logits, text_features=text, image_features=f)


@TRAINER_REGISTRY.register()
class CoCoOp(PromptTrainer):
    model_class = CoCoOpModel
    cfg_node = "COCOOP"
    sweep_config = "vit_b16_c4_ep10_batch1_ctxv1"  # the config tools/sweep.py runs (the paper's base-to-novel one)
    # CoCoOp's xd_train.sh trains on ImageNet with its base-to-novel config; it has no few-shot protocol.
    sweep_cross_dataset_config = "vit_b16_c4_ep10_batch1_ctxv1"
    cfg_defaults = {"N_CTX": 16, "CTX_INIT": "", "PREC": "fp16"}
