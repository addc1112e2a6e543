"""Frozen-CLIP text: the templates and the zero-shot class features computed from them.

The single hand-written template per dataset (calibration.md §5) lives with the datasets
(``datasets.common.TEMPLATES``); this module turns templates into normalised frozen text features, once per class
set, in chunks so 1000 ImageNet classes × 80 templates stay within memory.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

import clip

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
    """The single zero-shot template of a dataset (calibration.md §5); "a photo of a {}." when not listed."""
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
    from dassl.utils import UserError

    raise UserError(f"TRAINER.CALIB.FROZEN_TEMPLATES must be 'single' or 'ensemble', got {kind!r}")


@torch.no_grad()
def zeroshot_text_features(clip_model, classnames: Sequence[str], templates: Sequence[str],
                           chunk: int = 256) -> torch.Tensor:
    """Normalised frozen text features C×E (float32). With several templates: the mean of the per-template
    normalised features, normalised again (CoOp's ensemble rule)."""
    device = clip_model.logit_scale.device
    names = [c.replace("_", " ") for c in classnames]
    total = None
    for template in templates:
        from .prompts import tokenize_prompts

        ids = tokenize_prompts([template.format(n) for n in names], names)
        feats = torch.cat([clip_model.encode_text(ids[i:i + chunk].to(device)).float()
                           for i in range(0, len(ids), chunk)])
        feats = F.normalize(feats, dim=-1)
        total = feats if total is None else total + feats
    return F.normalize(total, dim=-1)
