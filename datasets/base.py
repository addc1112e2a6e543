"""``BenchmarkDataset``: the common pipeline of every dataset class (docs/engine_api.md#dataset-pipeline).

root -> dataset folder -> full canonical split (``read_source``) -> few-shot subset (cached) -> base/new class
split -> one existence check of the images the run uses -> Datum lists for ``DatasetBase``. A dataset class
only declares its layout (class attributes) and, when it has no split JSON, how to read its split.
"""
from __future__ import annotations

from pathlib import Path

from common.errors import MissingFileError
from dassl.data.datasets.base_dataset import DatasetBase

from . import fewshot
from .common import (
    DEFAULT_TEMPLATE,
    TEMPLATES,
    Item,
    Split,
    cache_root,
    cfg_get,
    check_images,
    dataset_root,
    prepare_command,
    read_split,
    subsample_classes,
    to_datums,
)


class BenchmarkDataset(DatasetBase):
    """Base of the dataset classes. Subclasses set the layout attributes below (and override ``read_source``
    when the split is not a split JSON)."""

    dataset_dir: str = ""  # folder under DATASET.ROOT ("" = the root itself)
    # image folder inside dataset_dir (first existing wins); split paths are relative to it
    image_dirs: tuple[str, ...] = ("",)
    split_file: str | None = None  # canonical split JSON inside dataset_dir
    source_files: tuple[str, ...] = ()  # split sources when there is no JSON (FGVC-Aircraft's txt files)
    expected: tuple[int, int, int, int] | None = None  # canonical train, val, test, classes
    layout: str = ""  # human description of the folder, for error messages
    template: str = DEFAULT_TEMPLATE  # single zero-shot template, from TEMPLATES (docs/method_notes.md)
    fewshot_val: bool = True  # draw min(K, 4) val images per class (ImageNet: no)
    val_is_test: bool = False  # ImageNet: val = test (CoOp)
    test_only: bool = False  # ImageNet variants: train_x = test = everything, no few-shot

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "template" not in cls.__dict__:
            cls.template = TEMPLATES.get(cls.__name__, DEFAULT_TEMPLATE)

    # -------------------------------------------------------------------------------- layout (no cfg needed)
    @classmethod
    def root_of(cls, dataset_path: Path) -> Path:
        return dataset_path.parent if cls.dataset_dir else dataset_path

    @classmethod
    def fix(cls, dataset_path: Path) -> str:
        """The command that repairs this dataset."""
        return prepare_command(cls.__name__, cls.root_of(dataset_path))

    @classmethod
    def locate(cls, root: Path) -> Path:
        path = root / cls.dataset_dir if cls.dataset_dir else root
        if not path.is_dir():
            raise MissingFileError(
                f"{cls.__name__}: dataset folder {path} not found "
                f"(expected {cls.layout or 'see docs/protocol_notes.md#datasets'}).\n"
                f"Fix: {prepare_command(cls.__name__, root)}"
            )
        return path

    @classmethod
    def image_folder(cls, dataset_path: Path) -> tuple[str, Path]:
        """(image folder relative to the dataset folder, its absolute path)."""
        for d in cls.image_dirs:
            path = dataset_path / d if d else dataset_path
            if path.is_dir():
                return d, path
        raise MissingFileError(
            f"{cls.__name__}: image folder {dataset_path / cls.image_dirs[0]} not found "
            f"(expected {cls.layout or 'see docs/protocol_notes.md#datasets'}).\nFix: {cls.fix(dataset_path)}"
        )

    @classmethod
    def read_source(cls, dataset_path: Path, cache_dir: Path | None = None) -> Split:
        """The full canonical split, paths relative to the image folder. Default: the split JSON."""
        path = dataset_path / cls.split_file
        if not path.is_file():
            raise MissingFileError(
                f"{cls.__name__}: split file {path} not found (the canonical CoOp split is required so "
                f"results are comparable).\nFix: {cls.fix(dataset_path)}"
            )
        return read_split(path)

    @classmethod
    def split_source_name(cls) -> str:
        return cls.split_file or ", ".join(cls.source_files) or "the image folders"

    # ------------------------------------------------------------------------------------------ pipeline
    def __init__(self, cfg):
        name = type(self).__name__
        root = dataset_root(cfg)
        self.dataset_path = self.locate(root)
        self.cache_root = cache_root(cfg)
        source = self.read_source(self.dataset_path, self.cache_root)
        self.image_dir, self.image_path = self.image_folder(self.dataset_path)
        self.split_sha256 = source.sha256()

        train, val, test = self.select(cfg, source)
        if cfg_get(cfg, "CHECK_IMAGES"):
            used = {id(x): x for x in (train, val, test)}.values()  # val/train may be test itself
            items = list(dict.fromkeys(it for part in used for it in part))
            check_images(items, self.image_path, f"{self.split_source_name()} of {name} (under {self.image_path})",
                         self.fix(self.dataset_path))

        test_d = to_datums(test, self.image_path)
        train_d = test_d if train is test else to_datums(train, self.image_path)
        val_d = test_d if val is test else to_datums(val, self.image_path)
        super().__init__(train_x=train_d, val=val_d, test=test_d)

    def select(self, cfg, source: Split) -> tuple[list[Item], list[Item], list[Item]]:
        """Few-shot subset, then the base/new class split (docs/engine_api.md#dataset-pipeline, steps 2-3)."""
        subsample = cfg_get(cfg, "SUBSAMPLE_CLASSES")
        if self.test_only:
            (test,) = subsample_classes(source.test, subsample=subsample)
            return test, [], test
        train, val, test = source.train, source.val, source.test
        shots = int(cfg.DATASET.NUM_SHOTS)
        self.shots_used = shots  # < 1: every training image
        if shots >= 1:
            train, val = fewshot.load_or_draw(
                self,
                name=type(self).__name__,
                source=source,
                source_sha=self.split_sha256,
                dataset_path=self.dataset_path,
                image_dir=self.image_dir,
                shots=shots,
                seed=int(cfg.SEED),
                cache_root=self.cache_root,
                cache_dir_set=bool(cfg_get(cfg, "CACHE_DIR")),
                draw_val=self.fewshot_val,
            )
            self.shots_used = fewshot.shots_used(train, source, shots, type(self).__name__)
        if self.val_is_test:
            train, test = subsample_classes(train, test, subsample=subsample)
            return train, test, test
        train, val, test = subsample_classes(train, val, test, subsample=subsample)
        return train, val, test
