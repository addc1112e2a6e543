"""The config keys the trainers read, declared here once (the engine's keys are in dassl/config/defaults.py, the
datasets' in datasets/common.py, ``TRAINER.CALIB.*`` in calibration/regularizers.py).

:func:`add_trainer_config` adds them to a config, with every registered method's ``TRAINER.<cfg_node>`` section
(its class's ``cfg_defaults``).
"""
from __future__ import annotations

from typing import Any

from yacs.config import CfgNode as CN

from trainers.plugins import config_classes

#: top-level LOSS node of the TCPT code base (ProGrad's config sets LOSS.NAME / LOSS.T; its scripts pass LOSS.LAMBDA)
LOSS_DEFAULTS: dict[str, Any] = {"GM": False, "NAME": "", "ALPHA": 0.0, "T": 1.0, "LAMBDA": 1.0}
#: text-tower keys of PromptTrainer (clip.set_text_options applies them to the loaded CLIP)
MODEL_DEFAULTS: dict[str, Any] = {
    "TEXT_TRUNCATE_EOT": True,   # text tower over positions 0..max(EOT) only: exact, faster (a speed key)
    "TEXT_CHECKPOINT_CHUNK": 0,  # > 0: activation checkpointing of the text tower over chunks of this many prompts
    #                              in training (exact; less memory, ~1/3 more text time)
}
#: evaluation keys of PromptTrainer
TEST_DEFAULTS: dict[str, Any] = {
    "TEXT_CHUNK": -1,          # prompts per text-encoder call at evaluation (bounded memory); -1: by device
    #                            (trainers.base.TEXT_CHUNK_DEFAULTS), 0: all at once
    "FEATURE_CACHE": True,     # cache frozen test-image features on disk (trainers/feature_cache.py)
    "FEATURE_CACHE_DIR": "",   # default: $CALIB_PROMPT_CACHE/features or ~/.cache/calib-prompt/features
}


def add_trainer_config(cfg: CN) -> None:
    """Add LOSS.*, the MODEL and TEST keys above and each registered method's TRAINER.<cfg_node> defaults (keys already in a
    method's section are kept). The trainer modules must be imported first (``import trainers``)."""
    cfg.LOSS = CN(dict(LOSS_DEFAULTS))
    for key, value in MODEL_DEFAULTS.items():
        cfg.MODEL[key] = value
    for key, value in TEST_DEFAULTS.items():
        cfg.TEST[key] = value
    for cls in config_classes():  # a built-in a --trainer-file replaces keeps its section (the file reads it)
        node, defaults = getattr(cls, "cfg_node", None), getattr(cls, "cfg_defaults", None)
        if not node or defaults is None:
            continue
        if node not in cfg.TRAINER:
            cfg.TRAINER[node] = CN()
        for key, value in defaults.items():
            if key not in cfg.TRAINER[node]:
                cfg.TRAINER[node][key] = value
