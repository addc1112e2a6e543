"""Oxford-IIIT Pets (37 breeds, lower-case names such as american_bulldog)."""
from dassl.data.datasets import DATASET_REGISTRY

from .base import BenchmarkDataset


@DATASET_REGISTRY.register()
class OxfordPets(BenchmarkDataset):
    dataset_dir = "oxford_pets"
    image_dirs = ("images",)
    split_file = "split_zhou_OxfordPets.json"
    expected = (2944, 736, 3669, 37)
    layout = "oxford_pets/images/<Breed>_<n>.jpg (+ annotations/) + oxford_pets/split_zhou_OxfordPets.json"
