"""ImageNet-R (renditions, test only, 200 of the 1000 classes)."""
from dassl.data.datasets import DATASET_REGISTRY

from .imagenet import ImageNetVariant


@DATASET_REGISTRY.register()
class ImageNetR(ImageNetVariant):
    dataset_dir = "imagenet-rendition"
    image_dirs = ("imagenet-r",)
    expected = (0, 0, 30000, 200)
    layout = "imagenet-rendition/imagenet-r/<wnid>/*"
