"""EuroSAT RGB (10 classes renamed in the split file, e.g. AnnualCrop -> "Annual Crop Land"). Newer archives
unpack as EuroSAT_RGB/ instead of 2750/; both are accepted."""
from dassl.data.datasets import DATASET_REGISTRY

from .base import BenchmarkDataset


@DATASET_REGISTRY.register()
class EuroSAT(BenchmarkDataset):
    dataset_dir = "eurosat"
    image_dirs = ("2750", "EuroSAT_RGB")
    split_file = "split_zhou_EuroSAT.json"
    expected = (13500, 5400, 8100, 10)
    layout = "eurosat/2750/<Class>/<Class>_<n>.jpg (newer archives: EuroSAT_RGB/) + eurosat/split_zhou_EuroSAT.json"
