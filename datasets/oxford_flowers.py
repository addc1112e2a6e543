"""Oxford Flowers-102 (names from cat_to_name.json, already in the split file)."""
from dassl.data.datasets import DATASET_REGISTRY

from .base import BenchmarkDataset


@DATASET_REGISTRY.register()
class OxfordFlowers(BenchmarkDataset):
    dataset_dir = "oxford_flowers"
    image_dirs = ("jpg",)
    split_file = "split_zhou_OxfordFlowers.json"
    expected = (4093, 1633, 2463, 102)
    layout = "oxford_flowers/jpg/image_%05d.jpg + oxford_flowers/split_zhou_OxfordFlowers.json"
