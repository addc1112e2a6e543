"""Stanford Cars (196 models, year first: "2012 Tesla Model S Sedan"). Split paths start with cars_train/ or
cars_test/, relative to the dataset folder itself."""
from dassl.data.datasets import DATASET_REGISTRY

from .base import BenchmarkDataset


@DATASET_REGISTRY.register()
class StanfordCars(BenchmarkDataset):
    dataset_dir = "stanford_cars"
    image_dirs = ("",)
    split_file = "split_zhou_StanfordCars.json"
    expected = (6509, 1635, 8041, 196)
    layout = "stanford_cars/{cars_train,cars_test}/*.jpg + stanford_cars/split_zhou_StanfordCars.json"
