"""CoOp (docs/method_notes.md#coop): learnable context vectors in front of (or around) the class tokens."""
from __future__ import annotations

import torch
from torch import nn

from dassl.engine import TRAINER_REGISTRY

from .base import PromptModel, PromptTrainer
from .prompts import TextPrompts, count_tokens, init_phrase


def init_context(prompts: TextPrompts, shape: tuple[int, ...], dtype=torch.float32) -> nn.Parameter:
    """Word-initialised context when the prompts came from an init phrase, else N(0, 0.02) (CoOp's rule)."""
    if prompts.init_vectors is not None:
        return nn.Parameter(prompts.init_vectors.to(dtype).clone())
    return nn.Parameter(torch.empty(shape, dtype=dtype).normal_(std=0.02))


class CoOpModel(PromptModel):
    #: The TRAINER node holding N_CTX, CSC, CTX_INIT, CLASS_TOKEN_POSITION (KgCoOp reuses this model with KGCOOP).
    cfg_node: str = "COOP"

    def __init__(self, cfg, classnames, clip_model, zs_text_features):
        super().__init__(cfg, classnames, clip_model, zs_text_features)
        node = cfg.TRAINER[self.cfg_node]
        phrase = init_phrase(node.CTX_INIT)
        # A phrase sets the context length to its BPE token count and forces a generic context (CoOp's rule).
        n_ctx = count_tokens(phrase) if phrase else int(node.N_CTX)
        csc = bool(node.CSC) and not phrase
        self.prompts = TextPrompts(self.text_encoder, classnames, n_ctx, init=phrase,
                                   position=node.CLASS_TOKEN_POSITION)
        width = self.text_encoder.width
        shape = (len(classnames), n_ctx, width) if csc else (n_ctx, width)
        print(f'Initial context: "{phrase or " ".join(["X"] * n_ctx)}"; number of context words: {n_ctx}'
              + ("; class-specific contexts" if csc else ""))
        self.ctx = init_context(self.prompts, shape)

    def encode_text(self) -> torch.Tensor:
        return self.encode_prompts(self.prompts.assemble(self.ctx), self.prompts.eot_idx)

    #: CSC True: one context per training class (issue 24); the reference has no context for any other class
    unseen_classes_reason = ("With CSC True the method learns one context per training class, and its reference "
                             "cannot evaluate classes it was not trained on; train with CSC False to evaluate on new "
                             "classes")

    def class_specific(self) -> dict[str, str]:
        return {"ctx": "refuse"} if self.ctx.dim() == 3 else {}


@TRAINER_REGISTRY.register()
class CoOp(PromptTrainer):
    model_class = CoOpModel
    cfg_node = "COOP"
    sweep_config = "vit_b16_ep50"  # the config tools/sweep.py runs (the paper's base-to-novel one)
    # CoOp's ImageNet recipe is *_ep50 (16 random ctx, 50 epochs; docs/method_notes.md#coop), the config of its domain-
    # generalisation runs and of TCPT's base-to-novel runs. Few-shot: CoOp's main.sh takes the config per K
    # (50/100/200 epochs for 1/2-4/8-16 shots off ImageNet); we ship the 50-epoch one (OPTS="OPTIM.MAX_EPOCH 200").
    sweep_cross_dataset_config = "vit_b16_ep50"
    sweep_few_shot_config = "vit_b16_ep50"
    cfg_defaults = {"N_CTX": 16, "CSC": False, "CTX_INIT": "", "PREC": "fp16", "CLASS_TOKEN_POSITION": "end"}
