"""Every shipped trainer config merges cleanly and sets CLIP's input pipeline (a config without "normalize" in
INPUT.TRANSFORMS feeds CLIP unnormalised test images: zero-shot ViT accuracy collapses)."""
from pathlib import Path

import pytest

import train

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs/trainers").glob("*/*.yaml"))
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_trainer_config_sets_clip_input_pipeline(path):
    args = train.parse_args(["--trainer", path.parent.name, "--config-file", str(path)])
    cfg = train.setup_cfg(args)
    assert "normalize" in cfg.INPUT.TRANSFORMS
    assert list(cfg.INPUT.PIXEL_MEAN) == CLIP_MEAN
    assert tuple(cfg.INPUT.SIZE) == (224, 224) and cfg.INPUT.INTERPOLATION == "bicubic"
    assert cfg.DATALOADER.TEST.BATCH_SIZE == 100
