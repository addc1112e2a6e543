"""Describable Textures (47 categories; CoOp's 50/20/30 split, not DTD's official folds)."""
from dassl.data.datasets import DATASET_REGISTRY

from .base import BenchmarkDataset


@DATASET_REGISTRY.register()
class DescribableTextures(BenchmarkDataset):
    dataset_dir = "dtd"
    image_dirs = ("images",)
    split_file = "split_zhou_DescribableTextures.json"
    expected = (2820, 1128, 1692, 47)
    layout = "dtd/images/<category>/<file>.jpg + dtd/split_zhou_DescribableTextures.json"
