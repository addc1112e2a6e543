"""Zero-shot classification with a CLIP model and one template: the yardstick of the toy world.

The transform is the pipeline's test transform (resize the short side to 224 with bicubic, centre-crop 224, CLIP
normalisation), so numbers measured here are the numbers the trainers' zero-shot runs see.
"""
from __future__ import annotations

import os
from typing import Iterable, Sequence, Union

import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms as T

import clip

TEMPLATE = "a photo of a {}."
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

Sample = Union[tuple[str, int], object]  # (impath, label) or anything with .impath and .label (Datum, Item)


def clip_geometry(size: int = 224) -> T.Compose:
    """PIL image -> PIL image size×size: the resize and crop of the test transform of the prompt configs."""
    return T.Compose([T.Resize(size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size)])


def clip_transform(size: int = 224) -> T.Compose:
    """PIL image -> normalised tensor 3×size×size, as the test transform of the prompt configs."""
    return T.Compose([*clip_geometry(size).transforms, T.ToTensor(), T.Normalize(CLIP_MEAN, CLIP_STD)])


@torch.no_grad()
def text_features(model, classnames: Sequence[str], template: str = TEMPLATE) -> torch.Tensor:
    """Normalised class text features C×E (float32) from one template; "_" in names becomes a space."""
    device = model.logit_scale.device
    ids = clip.tokenize([template.format(c.replace("_", " ")) for c in classnames]).to(device)
    return F.normalize(model.encode_text(ids).float(), dim=-1)


@torch.no_grad()
def image_features(model, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Normalised float32 features B×E of transformed ``images``, encoded ``batch_size`` at a time."""
    dtype, device = model.visual.conv1.weight.dtype, model.logit_scale.device
    feats = [model.encode_image(images[i:i + batch_size].to(device, dtype)).float()
             for i in range(0, len(images), batch_size)]
    return F.normalize(torch.cat(feats), dim=-1)


@torch.no_grad()
def zeroshot_logits(model, images: torch.Tensor, text_feats: torch.Tensor) -> torch.Tensor:
    """Scaled logits B×C of transformed ``images`` against normalised ``text_feats``."""
    return model.logit_scale.exp().float() * image_features(model, images) @ text_feats.t()


def _path_label(sample: Sample, root: str | None) -> tuple[str, int]:
    path, label = (sample.impath, sample.label) if hasattr(sample, "impath") else sample
    return (os.path.join(root, path) if root else path), int(label)


@torch.no_grad()
def zeroshot_accuracy(model, samples: Iterable[Sample], classnames: Sequence[str], template: str = TEMPLATE,
                      root: str | None = None, batch_size: int = 64) -> float:
    """Top-1 accuracy in percent of zero-shot ``model`` on ``samples`` (labels index ``classnames``).

    ``samples``: ``(impath, label)`` pairs or objects with ``.impath``/``.label`` (Datum, split Items); relative
    paths are joined to ``root``.
    """
    tf = clip_transform(model.visual.image_size[0] if hasattr(model.visual, "image_size") else 224)
    text = text_features(model, classnames, template)
    pairs = [_path_label(s, root) for s in samples]
    if not pairs:
        raise ValueError("zeroshot_accuracy needs at least one sample")
    correct = 0
    for i in range(0, len(pairs), batch_size):
        chunk = pairs[i:i + batch_size]
        images = torch.stack([tf(Image.open(p).convert("RGB")) for p, _ in chunk])
        labels = torch.tensor([y for _, y in chunk], device=text.device)
        correct += (zeroshot_logits(model, images, text).argmax(1) == labels).sum().item()
    return 100.0 * correct / len(pairs)
