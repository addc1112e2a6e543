"""UCF101 middle frames (CoOp's zip; action names split on capitals and joined by '_')."""
from dassl.data.datasets import DATASET_REGISTRY

from .base import BenchmarkDataset


@DATASET_REGISTRY.register()
class UCF101(BenchmarkDataset):
    dataset_dir = "ucf101"
    image_dirs = ("UCF-101-midframes",)
    split_file = "split_zhou_UCF101.json"
    expected = (7639, 1898, 3783, 101)
    layout = "ucf101/UCF-101-midframes/<Action_Name>/v_*.jpg + ucf101/split_zhou_UCF101.json"
