"""FGVC-Aircraft (100 variants). No split JSON: the official ``images_variant_{train,val,test}.txt`` files are
the split (lines ``<image id> <variant name>``), and the line order of ``variants.txt`` gives the labels."""
from __future__ import annotations

from pathlib import Path

from common.errors import MissingFileError, UserError
from dassl.data.datasets import DATASET_REGISTRY

from .base import BenchmarkDataset
from .common import Item, Split


@DATASET_REGISTRY.register()
class FGVCAircraft(BenchmarkDataset):
    dataset_dir = "fgvc_aircraft"
    image_dirs = ("images",)
    source_files = ("variants.txt", "images_variant_train.txt", "images_variant_val.txt", "images_variant_test.txt")
    expected = (3334, 3333, 3333, 100)
    layout = ("fgvc_aircraft/images/<id>.jpg + fgvc_aircraft/variants.txt, images_variant_{train,val,test}.txt "
              "(the data/ folder of fgvc-aircraft-2013b)")

    @classmethod
    def read_source(cls, dataset_path: Path, cache_dir: Path | None = None) -> Split:
        lines = {}
        for name in cls.source_files:
            path = dataset_path / name
            if not path.is_file():
                raise MissingFileError(f"{cls.__name__}: {path} not found.\nFix: {cls.fix(dataset_path)}")
            lines[name] = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        cname2lab = {name: i for i, name in enumerate(lines["variants.txt"])}
        parts = {}
        for key in ("train", "val", "test"):
            name = f"images_variant_{key}.txt"
            items = []
            for ln in lines[name]:
                image_id, _, variant = ln.partition(" ")
                if variant not in cname2lab:
                    raise UserError(f"{dataset_path / name}: variant {variant!r} of image {image_id} is not in "
                                    f"variants.txt.\nFix: {cls.fix(dataset_path)}")
                items.append(Item(f"{image_id}.jpg", cname2lab[variant], variant))
            parts[key] = items
        return Split(parts["train"], parts["val"], parts["test"])
