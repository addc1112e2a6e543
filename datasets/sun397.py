"""SUN397 (names are the category path after the letter, reversed: "outdoor apartment_building")."""
from dassl.data.datasets import DATASET_REGISTRY

from .base import BenchmarkDataset


@DATASET_REGISTRY.register()
class SUN397(BenchmarkDataset):
    dataset_dir = "sun397"
    image_dirs = ("SUN397",)
    split_file = "split_zhou_SUN397.json"
    expected = (15880, 3970, 19850, 397)
    layout = "sun397/SUN397/<letter>/<category...>/sun_*.jpg + sun397/split_zhou_SUN397.json"
