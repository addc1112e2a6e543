"""ImageNet-A (natural adversarial examples, test only, 200 of the 1000 classes)."""
from dassl.data.datasets import DATASET_REGISTRY

from .imagenet import ImageNetVariant


@DATASET_REGISTRY.register()
class ImageNetA(ImageNetVariant):
    dataset_dir = "imagenet-adversarial"
    image_dirs = ("imagenet-a",)
    expected = (0, 0, 7500, 200)
    layout = "imagenet-adversarial/imagenet-a/<wnid>/*"
