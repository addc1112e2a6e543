"""Food-101 (CoOp's 50/20/30 split, not the official meta split; names keep their underscores)."""
from dassl.data.datasets import DATASET_REGISTRY

from .base import BenchmarkDataset


@DATASET_REGISTRY.register()
class Food101(BenchmarkDataset):
    dataset_dir = "food-101"
    image_dirs = ("images",)
    split_file = "split_zhou_Food101.json"
    expected = (50500, 20200, 30300, 101)
    layout = "food-101/images/<class>/<id>.jpg + food-101/split_zhou_Food101.json"
