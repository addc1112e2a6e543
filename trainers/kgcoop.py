"""KgCoOp (docs/method_notes.md#kgcoop): CoOp plus a knowledge-guided term keeping the tuned class text features close
to frozen CLIP's hand-crafted-template features.

``kg = W · (1 − mean_c cos(t_c, T0_c))`` over all C classes, W = 8.0, T0 from KgCoOp's own template table
(:data:`KGCOOP_TEMPLATES`: the single-template table with DTD = "a photo of a {}, a type of texture."), computed
once per class set. ``TRAINER.KGCOOP.LOSS tcpt_hybrid`` is the TCPT repository's "KgCoOp" instead
(docs/method_notes.md#kgcoop): no kg term, ``0.1 · mean_{c≠c'} |cos(t_c, t_c')|`` over the class text features; with
``TRAINER.KGCOOP.FROZEN_TARGET own`` F0 (--calib target, zero-shot logits) uses KgCoOp's table, as that code does.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from common.errors import UserError
from dassl.engine import TRAINER_REGISTRY

from .base import PromptOutput, PromptTrainer
from .coop import CoOpModel
from .proda import mean_abs_offdiag_cosine
from .templates import dataset_template, zeroshot_text_features

#: KgCoOp's template table differs from the single-template table only for DTD.
KGCOOP_TEMPLATES = {"DescribableTextures": "a photo of a {}, a type of texture."}
LOSSES = ("kg", "tcpt_hybrid")
FROZEN_TARGETS = ("dataset", "own")
TCPT_HYBRID_WEIGHT = 0.1  # the TCPT repository's literal weight of its class-diversity term


def kgcoop_template(dataset_name: str) -> str:
    return KGCOOP_TEMPLATES.get(dataset_name, dataset_template(dataset_name))


def own_frozen_target(cfg, node_name: str) -> bool:
    """``TRAINER.<node>.FROZEN_TARGET``: "dataset" = F0 from the single-template table
    (docs/method_notes.md#frozen-target-templates, our default); "own" = F0 from the method's own template table, as the
    TCPT code's KgCoOp and ProGrad do."""
    value = str(cfg.TRAINER[node_name].FROZEN_TARGET).lower()
    if value not in FROZEN_TARGETS:
        raise UserError(f"TRAINER.{node_name}.FROZEN_TARGET = {value!r} is not one of {', '.join(FROZEN_TARGETS)}")
    return value == "own"


def kg_score(text_features: torch.Tensor, frozen: torch.Tensor) -> torch.Tensor:
    """``1 − mean_c cos(t_c, T0_c)`` (eps 1e-7 as the reference), in fp32."""
    return 1.0 - F.cosine_similarity(text_features.float(), frozen.float(), dim=-1, eps=1e-7).mean()


class KgCoOpModel(CoOpModel):
    cfg_node = "KGCOOP"

    def __init__(self, cfg, classnames, clip_model, zs_text_features):
        super().__init__(cfg, classnames, clip_model, zs_text_features)
        node = cfg.TRAINER.KGCOOP
        self.loss_kind = str(node.LOSS).lower()
        if self.loss_kind not in LOSSES:
            raise UserError(f"TRAINER.KGCOOP.LOSS = {node.LOSS!r} is not one of {', '.join(LOSSES)}; "
                            "'kg' is the published KgCoOp loss, 'tcpt_hybrid' the TCPT repository's variant")
        self.weight = float(node.W)
        if self.loss_kind == "kg":
            template = kgcoop_template(cfg.DATASET.NAME)
            self.register_buffer("kg_text_features", zeroshot_text_features(clip_model, classnames, [template]),
                                 persistent=False)

    def forward(self, image=None, label=None, *, prepared=None, image_features=None) -> PromptOutput:
        out = super().forward(image, label, prepared=prepared, image_features=image_features)
        if self.training:  # the reference computes the score at test time too and discards it
            if self.loss_kind == "kg":
                out.losses["kg"] = self.weight * kg_score(out.text_features, self.kg_text_features)
            else:
                out.losses["div"] = TCPT_HYBRID_WEIGHT * mean_abs_offdiag_cosine(out.text_features)
        return out


@TRAINER_REGISTRY.register()
class KgCoOp(PromptTrainer):
    model_class = KgCoOpModel
    cfg_node = "KGCOOP"
    sweep_config = "vit_b16_ep100_ctxv1"  # the config tools/sweep.py runs (the paper's base-to-novel one)
    cfg_defaults = {"N_CTX": 16, "CSC": False, "CTX_INIT": "", "PREC": "fp16", "CLASS_TOKEN_POSITION": "end",
                    "W": 8.0, "LOSS": "kg", "FROZEN_TARGET": "dataset"}

    def frozen_target_templates(self) -> list[str]:
        if own_frozen_target(self.cfg, self.cfg_node):
            return [kgcoop_template(self.cfg.DATASET.NAME)]
        return super().frozen_target_templates()
