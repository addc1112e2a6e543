"""ImageNet-Sketch (test only; the Drive/Kaggle zip unpacks as sketch/, which is accepted too)."""
from dassl.data.datasets import DATASET_REGISTRY

from .imagenet import ImageNetVariant


@DATASET_REGISTRY.register()
class ImageNetSketch(ImageNetVariant):
    dataset_dir = "imagenet-sketch"
    image_dirs = ("images", "sketch")
    expected = (0, 0, 50889, 1000)
    layout = "imagenet-sketch/images/<wnid>/*"
