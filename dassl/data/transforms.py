"""build_transform with Dassl >= 0.5.0 semantics (docs/engine_api.md#transforms).

Train: [resize to SIZE unless a random crop is chosen] -> chosen augmentations -> ToTensor -> [Normalize].
Test: resize the smaller edge to max(SIZE) -> center crop SIZE -> ToTensor -> [Normalize].
"""
from __future__ import annotations

from torchvision.transforms import (
    CenterCrop, ColorJitter, Compose, GaussianBlur, InterpolationMode, Normalize, RandomApply, RandomCrop,
    RandomGrayscale, RandomHorizontalFlip, RandomResizedCrop, Resize, ToTensor,
)

from common.errors import UserError
from common.suggest import check_availability

INTERPOLATION_MODES = {
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
    "nearest": InterpolationMode.NEAREST,
}

# Names this engine implements ("center_crop" is a no-op name: the test transform always center-crops).
SUPPORTED_TRANSFORMS = [
    "random_flip", "random_resized_crop", "random_crop", "center_crop", "normalize", "colorjitter",
    "randomgrayscale", "gaussian_blur",
]
# Names Dassl knows but this engine does not implement (no prompt config uses them).
DASSL_ONLY_TRANSFORMS = [
    "instance_norm", "random_translation", "cutout", "imagenet_policy", "cifar10_policy", "svhn_policy",
    "randaugment", "randaugment_fixmatch", "randaugment2", "gaussian_noise",
]


def _check_choices(choices) -> None:
    for choice in choices:
        if choice in DASSL_ONLY_TRANSFORMS:
            raise UserError(f'INPUT.TRANSFORMS: "{choice}" is a Dassl transform this engine does not implement. '
                            f"Supported: {', '.join(SUPPORTED_TRANSFORMS)}.")
        check_availability(choice, SUPPORTED_TRANSFORMS, what="transform in INPUT.TRANSFORMS")


def _check_input(node, choices) -> None:
    """INPUT values torchvision would only reject at the first image (or not at all), checked when building."""
    def numbers(value, n):
        return (isinstance(value, (list, tuple)) and len(value) in n
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value))

    size = node.SIZE
    if not (numbers(size, (2,)) and all(isinstance(v, int) and v > 0 for v in size)):
        raise UserError(f"INPUT.SIZE must be two positive integers (height, width), e.g. (224, 224); got {size!r}")
    if "normalize" in choices:
        if not numbers(node.PIXEL_MEAN, (1, 3)):
            raise UserError(f"INPUT.PIXEL_MEAN must hold 3 numbers (R, G, B), got {node.PIXEL_MEAN!r}")
        if not numbers(node.PIXEL_STD, (1, 3)) or min(node.PIXEL_STD) <= 0:
            raise UserError(f"INPUT.PIXEL_STD must hold 3 positive numbers (R, G, B), got {node.PIXEL_STD!r}")
    scale = node.RRCROP_SCALE
    if "random_resized_crop" in choices and not (numbers(scale, (2,)) and 0 < scale[0] <= scale[1]):
        raise UserError(f"INPUT.RRCROP_SCALE must be (min, max) with 0 < min <= max, got {scale!r}")
    k = node.GB_K
    if "gaussian_blur" in choices and not (isinstance(k, int) and k > 0 and k % 2 == 1):
        raise UserError(f"INPUT.GB_K (gaussian blur kernel) must be a positive odd integer, got {k!r}")


def build_transform(cfg, is_train: bool = True, choices=None):
    """Compose the train or test transform from ``cfg.INPUT`` (None if INPUT.NO_TRANSFORM)."""
    if cfg.INPUT.NO_TRANSFORM:
        print("Note: no transform is applied!")
        return None
    if choices is None:
        choices = cfg.INPUT.TRANSFORMS
    _check_choices(choices)
    check_availability(cfg.INPUT.INTERPOLATION, INTERPOLATION_MODES, what="interpolation (INPUT.INTERPOLATION)")
    _check_input(cfg.INPUT, choices)

    normalize = Normalize(mean=cfg.INPUT.PIXEL_MEAN, std=cfg.INPUT.PIXEL_STD)
    if is_train:
        return _build_transform_train(cfg, choices, normalize)
    return _build_transform_test(cfg, choices, normalize)


def _build_transform_train(cfg, choices, normalize) -> Compose:
    print("Building transform_train")
    tfm = []
    interp = INTERPOLATION_MODES[cfg.INPUT.INTERPOLATION]
    input_size = tuple(cfg.INPUT.SIZE)

    if "random_crop" not in choices and "random_resized_crop" not in choices:
        print(f"+ resize to {input_size[0]}x{input_size[1]}")
        tfm.append(Resize(input_size, interpolation=interp))
    if "random_crop" in choices:
        pad = cfg.INPUT.CROP_PADDING
        print(f"+ random crop (padding = {pad})")
        tfm.append(RandomCrop(input_size, padding=pad))
    if "random_resized_crop" in choices:
        scale = tuple(cfg.INPUT.RRCROP_SCALE)
        print(f"+ random resized crop (size={input_size}, scale={scale})")
        tfm.append(RandomResizedCrop(input_size, scale=scale, interpolation=interp))
    if "random_flip" in choices:
        print("+ random flip")
        tfm.append(RandomHorizontalFlip())
    if "colorjitter" in choices:
        b, c, s, h = (cfg.INPUT.COLORJITTER_B, cfg.INPUT.COLORJITTER_C, cfg.INPUT.COLORJITTER_S,
                      cfg.INPUT.COLORJITTER_H)
        print(f"+ color jitter (brightness={b}, contrast={c}, saturation={s}, hue={h})")
        tfm.append(ColorJitter(brightness=b, contrast=c, saturation=s, hue=h))
    if "randomgrayscale" in choices:
        print(f"+ random gray scale (p={cfg.INPUT.RGS_P})")
        tfm.append(RandomGrayscale(p=cfg.INPUT.RGS_P))
    if "gaussian_blur" in choices:
        k = cfg.INPUT.GB_K
        print(f"+ gaussian blur (kernel={k}, p={cfg.INPUT.GB_P})")
        tfm.append(RandomApply([GaussianBlur(k)], p=cfg.INPUT.GB_P))

    print("+ to torch tensor of range [0, 1]")
    tfm.append(ToTensor())
    if "normalize" in choices:
        print(f"+ normalization (mean={cfg.INPUT.PIXEL_MEAN}, std={cfg.INPUT.PIXEL_STD})")
        tfm.append(normalize)
    return Compose(tfm)


def _build_transform_test(cfg, choices, normalize) -> Compose:
    print("Building transform_test")
    interp = INTERPOLATION_MODES[cfg.INPUT.INTERPOLATION]
    input_size = tuple(cfg.INPUT.SIZE)
    print(f"+ resize the smaller edge to {max(input_size)}")
    print(f"+ {input_size[0]}x{input_size[1]} center crop")
    print("+ to torch tensor of range [0, 1]")
    tfm = [Resize(max(input_size), interpolation=interp), CenterCrop(input_size), ToTensor()]
    if "normalize" in choices:
        print(f"+ normalization (mean={cfg.INPUT.PIXEL_MEAN}, std={cfg.INPUT.PIXEL_STD})")
        tfm.append(normalize)
    return Compose(tfm)
