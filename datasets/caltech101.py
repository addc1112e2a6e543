"""Caltech-101 (100 classes; BACKGROUND_Google and Faces_easy are not used; airplanes/Faces/Leopards/Motorbikes are
named airplane/face/leopard/motorbike in the split file)."""
from dassl.data.datasets import DATASET_REGISTRY

from .base import BenchmarkDataset


@DATASET_REGISTRY.register()
class Caltech101(BenchmarkDataset):
    dataset_dir = "caltech-101"
    image_dirs = ("101_ObjectCategories",)
    split_file = "split_zhou_Caltech101.json"
    expected = (4128, 1649, 2465, 100)
    layout = "caltech-101/101_ObjectCategories/<category>/image_XXXX.jpg + caltech-101/split_zhou_Caltech101.json"
