"""Frozen-CLIP text: the templates and the zero-shot class features computed from them.

The single hand-written template per dataset (docs/method_notes.md#frozen-target-templates) lives with the datasets
(``datasets.common.TEMPLATES``); this module turns templates into normalised frozen text features, once per class
set, in chunks so 1000 ImageNet classes × 80 templates stay within memory.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

import clip
from clip.build import low_precision_dtype

DEFAULT_TEMPLATE = "a photo of a {}."


def _imagenet_templates() -> list[str]:
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    return [t("{}") for t in OPENAI_IMAGENET_TEMPLATES]


#: The 80 prompt-engineering templates of OpenAI's ImageNet notebook (as shipped by open_clip).
IMAGENET_TEMPLATES: list[str] = _imagenet_templates()

#: The 7 templates selected for ImageNet by forward selection (ZeroshotCLIP2 of CoOp).
IMAGENET_TEMPLATES_SELECT = [
    "itap of a {}.", "a bad photo of the {}.", "a origami {}.", "a photo of the large {}.",
    "a {} in a video game.", "art of the {}.", "a photo of the small {}.",
]


def dataset_template(dataset_name: str) -> str:
    """The single zero-shot template of a dataset (docs/method_notes.md#frozen-target-templates); "a photo of a {}."
    when not listed."""
    try:
        from datasets.common import get_template
    except ImportError:  # datasets package absent: fall back to the generic template
        return DEFAULT_TEMPLATE
    return get_template(dataset_name)


def frozen_templates(dataset_name: str, kind: str = "single") -> list[str]:
    """Templates of the frozen target ``F0``: ``single`` (the paper's code) or ``ensemble`` (80 ImageNet templates
    plus the dataset's own)."""
    single = dataset_template(dataset_name)
    if kind == "single":
        return [single]
    if kind == "ensemble":
        return IMAGENET_TEMPLATES + ([single] if single not in IMAGENET_TEMPLATES else [])
    from common.errors import UserError

    raise UserError(f"TRAINER.CALIB.FROZEN_TEMPLATES must be 'single' or 'ensemble', got {kind!r}")


#: TRAINER.CALIB.FROZEN_TARGET_PREC: the precision of the text tower that computes F0. "model": the run's own (fp16
#: under PREC fp16, where the paper's numbers were made, as its zero-shot CLIP); "fp16": always fp16, as the paper's
#: code, whose zero-shot CLIP stays fp16 under PREC fp32 (also on a CPU); "fp32": always fp32 (TCPT's ProGrad teacher).
FROZEN_TARGET_PRECS = ("model", "fp16", "fp32")


def frozen_target_precision(value) -> str | None:
    """The CLIP precision F0 is computed in for a FROZEN_TARGET_PREC value (None = the model's own)."""
    kind = str(value).lower()
    if kind not in FROZEN_TARGET_PRECS:
        from common.errors import UserError

        raise UserError(f"TRAINER.CALIB.FROZEN_TARGET_PREC must be one of {', '.join(FROZEN_TARGET_PRECS)}, "
                        f"got {value!r}")
    return None if kind == "model" else kind


class FrozenTarget:
    """The templates and precision of the frozen target ``F0`` (the --calib target, the zero-shot logits), from
    TRAINER.CALIB.FROZEN_TEMPLATES / FROZEN_TARGET_PREC: one rule for PromptTrainer and CalibHook (a mixin)."""

    def frozen_target_templates(self) -> list[str]:
        """A method may substitute its own table (KgCoOp/ProGrad, as the TCPT code does, behind a switch)."""
        kind = self.cfg.TRAINER.CALIB.FROZEN_TEMPLATES if "CALIB" in self.cfg.TRAINER else "single"
        return frozen_templates(self.cfg.DATASET.NAME, kind)

    def frozen_target_precision(self) -> str | None:
        """TRAINER.CALIB.FROZEN_TARGET_PREC: the precision F0's text tower runs in (None: the model's own)."""
        calib = self.cfg.TRAINER.get("CALIB") or {}
        return frozen_target_precision(calib.get("FROZEN_TARGET_PREC", "model"))


@torch.no_grad()
def zeroshot_text_features(clip_model, classnames: Sequence[str], templates: Sequence[str],
                           chunk: int = 256, precision: str | None = None) -> torch.Tensor:
    """Normalised frozen text features C×E (float32). With several templates: the mean of the per-template
    normalised features, normalised again (CoOp's ensemble rule). ``precision`` ("fp16", "fp32", ...): run the text
    tower in that precision, on a temporary copy (``clip.cast_copy``) when the model's differs; None: the model's."""
    device = clip_model.logit_scale.device
    names = [c.replace("_", " ") for c in classnames]
    encode = clip_model.encode_text
    if precision is not None:
        tower = clip.TextEncoder(clip_model)
        if tower.dtype != (low_precision_dtype(precision) or torch.float32):
            tower = clip.cast_copy(tower, precision)

            def encode(ids):
                return tower(tower.embed(ids), ids.argmax(-1))
    total = None
    for template in templates:
        from .prompts import tokenize_prompts

        ids = tokenize_prompts([template.format(n) for n in names], names)
        feats = torch.cat([encode(ids[i:i + chunk].to(device)).float()
                           for i in range(0, len(ids), chunk)])
        feats = F.normalize(feats, dim=-1)
        total = feats if total is None else total + feats
    return F.normalize(total, dim=-1)


def zeroshot_classifier(clip_model, classnames: Sequence[str], dataset_name: str,
                        templates: Sequence[str] | None = None) -> torch.Tensor:
    """A method's own zero-shot classifier (C×E, normalised, fp32): the dataset's single template (or
    ``templates``) through ``clip_model`` in its own precision. Unlike ``PromptModel.zs_text_features`` (``F0``, the
    ``--calib`` target, which follows ``TRAINER.CALIB.FROZEN_TEMPLATES`` / ``FROZEN_TARGET_PREC``), it does not
    change when a calibration switch does, so a method that classifies with it keeps its own definition."""
    return zeroshot_text_features(clip_model, classnames, list(templates or [dataset_template(dataset_name)]))
