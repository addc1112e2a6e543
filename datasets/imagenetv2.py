"""ImageNetV2 matched-frequency (test only, 10,000 images). Folders ``0``..``999`` are ImageNet's labels, so
label i is the i-th class of ImageNet's sorted-wnid order."""
from __future__ import annotations

from pathlib import Path

from common.errors import UserError
from dassl.data.datasets import DATASET_REGISTRY

from .imagenet import CLASSNAMES_FILE, ImageNetVariant, open_clip_classnames, read_classnames


@DATASET_REGISTRY.register()
class ImageNetV2(ImageNetVariant):
    dataset_dir = "imagenetv2"
    image_dirs = ("imagenetv2-matched-frequency-format-val",)
    expected = (0, 0, 10000, 1000)
    layout = "imagenetv2/imagenetv2-matched-frequency-format-val/<0..999>/*.jpeg"

    @classmethod
    def labelled(cls, folders: list[str]) -> list[tuple[int, str]]:
        if not all(f.isdigit() and int(f) < 1000 for f in folders):
            bad = next(f for f in folders if not (f.isdigit() and int(f) < 1000))
            raise UserError(f"ImageNetV2: class folders must be named 0..999, found {bad!r}.")
        return sorted((int(f), f) for f in folders)

    @classmethod
    def classnames_for(cls, dataset_path: Path, folders: list[str]) -> dict[str, str]:
        root = cls.root_of(dataset_path)
        for path in (dataset_path / CLASSNAMES_FILE, root / "imagenet" / CLASSNAMES_FILE):
            if path.is_file():
                names = list(read_classnames(path).values())
                break
        else:
            names = open_clip_classnames()
        return {f: names[int(f)] for f in folders}
