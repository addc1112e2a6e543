"""Zero-shot CLIP (docs/method_notes.md#zeroshotclip): frozen CLIP with the dataset's single template, or a template
ensemble."""
from __future__ import annotations

import torch

from dassl.engine import TRAINER_REGISTRY

from .base import PromptModel, PromptTrainer
from .templates import IMAGENET_TEMPLATES_SELECT, dataset_template, zeroshot_classifier, zeroshot_text_features


class ZeroshotModel(PromptModel):
    """Logits against frozen text features of the dataset's single template or a template ensemble, built here once
    (not ``F0``, the --calib target, which follows TRAINER.CALIB.FROZEN_TEMPLATES / FROZEN_TARGET_PREC)."""

    def __init__(self, cfg, classnames, clip_model, zs_text_features):
        super().__init__(cfg, classnames, clip_model, zs_text_features)
        templates = cfg.TRAINER.ZSCLIP.TEMPLATES
        if templates == "single":
            text = zeroshot_classifier(clip_model, classnames, cfg.DATASET.NAME)
        else:
            chosen = list(IMAGENET_TEMPLATES_SELECT)
            if cfg.DATASET.NAME != "ImageNet":
                chosen.append(dataset_template(cfg.DATASET.NAME))
            text = zeroshot_text_features(clip_model, classnames, chosen)
        self.register_buffer("text_features", text.float(), persistent=False)

    def encode_text(self) -> torch.Tensor:
        return self.text_features


@TRAINER_REGISTRY.register()
class ZeroshotCLIP(PromptTrainer):
    """No training: ``train.py --eval-only`` (or a plain run, which only tests)."""

    model_class = ZeroshotModel
    cfg_node = "ZSCLIP"
    sweep_config = "vit_b16"  # the config tools/sweep.py runs (the paper's base-to-novel one)
    sweep_name = "zsclip"  # the METHOD name sweeps take (default: the lower-case trainer name)
    sweep_cross_dataset_config = sweep_few_shot_config = "vit_b16"  # trains nothing: one config for every protocol
    cfg_defaults = {"PREC": "fp16", "TEMPLATES": "single"}
    trainable = False

    def train(self, *args, **kwargs):
        print("ZeroshotCLIP has nothing to train; evaluating")
        self.test()


@TRAINER_REGISTRY.register()
class ZeroshotCLIP2(ZeroshotCLIP):
    """The 7 selected ImageNet templates plus the dataset's own, averaged (CoOp's ZeroshotCLIP2)."""

    def check_cfg(self, cfg):
        cfg.defrost()
        cfg.TRAINER.ZSCLIP.TEMPLATES = "ensemble"
        cfg.freeze()
