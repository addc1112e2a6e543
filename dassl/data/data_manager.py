"""DataManager, DatasetWrapper and build_data_loader (Dassl API) with unreadable-image handling."""
from __future__ import annotations

import contextlib
import hashlib
import os
import random
import sys
from multiprocessing import RawArray

import numpy as np
import torch
from tabulate import tabulate
from torch.utils.data import DataLoader, Dataset as TorchDataset
from torch.utils.data import default_collate
from torchvision.transforms import Compose, Normalize, Resize, ToTensor

from common.errors import UserError

from ..utils.tools import read_image
from .datasets import build_dataset
from .samplers import build_sampler
from .transforms import INTERPOLATION_MODES, build_transform

__all__ = ["BadImageError", "DataManager", "DatasetWrapper", "augment_seed", "build_data_loader",
           "collate_skip_none", "drawing_from", "seed_worker"]

# What PIL raises for missing, truncated, corrupt or oversized images.
_IMAGE_ERRORS = (OSError, ValueError, SyntaxError, EOFError)


class BadImageError(UserError):
    """An image could not be read."""


def seed_worker(worker_id: int) -> None:
    """Seed python/numpy in a DataLoader worker from torch's per-worker seed (itself drawn from the loader's
    generator, so from the run seed), and the dataset's augmentation generator with that same seed: a worker's
    augmentation draws what torch's own RNG in that worker would."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
    info = torch.utils.data.get_worker_info()
    generator = getattr(info.dataset, "generator", None) if info is not None else None
    if generator is not None:
        generator.manual_seed(torch.initial_seed())


def augment_seed(seed: int) -> int:
    """The seed of a training loader's augmentation generator: a stream of its own derived from the run seed (not
    the seed itself, which already seeds the shuffling generator)."""
    digest = hashlib.sha256(f"augment:{int(seed)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


@contextlib.contextmanager
def drawing_from(generator: torch.Generator | None):
    """Make torch's global CPU RNG draw from ``generator`` inside the block, and leave the global RNG as it was.

    torchvision's random transforms take no generator argument; swapping the state in and out gives them one, so
    random augmentation never consumes (or depends on) the RNG that model initialisation and the methods use."""
    if generator is None:
        yield
        return
    outside = torch.get_rng_state()
    torch.set_rng_state(generator.get_state())
    try:
        yield
    finally:
        generator.set_state(torch.get_rng_state())
        torch.set_rng_state(outside)


def collate_skip_none(batch):
    """default_collate over the items that are not None (skipped images); None if none is left."""
    batch = [item for item in batch if item is not None]
    if not batch:
        return None
    return default_collate(batch)


class DatasetWrapper(TorchDataset):
    """Reads, transforms and packs one Datum as ``{"label","domain","impath","index","img",...}``.

    An unreadable image raises a UserError naming the file, or, with DATALOADER.SKIP_BAD_IMAGES,
    yields None (dropped by ``collate_skip_none``) and is recorded in a flag array shared with the
    loader workers, so ``skipped_paths()`` counts each bad file once whichever process read it.

    ``generator`` (set by :func:`build_data_loader` on training loaders of a seeded run): the random transforms
    draw from it (:func:`drawing_from`), so the data stream depends on the run seed only, whatever else the
    process draws; it is part of a checkpoint's RNG state.
    """

    generator: torch.Generator | None = None

    def __init__(self, cfg, data_source, transform=None, is_train: bool = False):
        self.cfg = cfg
        self.data_source = data_source
        self.transform = transform
        self.is_train = is_train
        self.k_tfm = cfg.DATALOADER.K_TRANSFORMS if is_train else 1
        self.return_img0 = cfg.DATALOADER.RETURN_IMG0
        self.skip_bad_images = cfg.DATALOADER.SKIP_BAD_IMAGES
        self._bad = RawArray("b", max(len(data_source), 1))

        if not isinstance(self.k_tfm, int) or self.k_tfm < 1:
            raise UserError(f"DATALOADER.K_TRANSFORMS must be a positive integer, got {self.k_tfm!r}")
        if self.k_tfm > 1 and transform is None:
            raise UserError(f"DATALOADER.K_TRANSFORMS={self.k_tfm} needs a transform, but transform is None")

        interp_mode = INTERPOLATION_MODES[cfg.INPUT.INTERPOLATION]
        to_tensor = [Resize(tuple(cfg.INPUT.SIZE), interpolation=interp_mode), ToTensor()]
        if "normalize" in cfg.INPUT.TRANSFORMS:
            to_tensor.append(Normalize(mean=cfg.INPUT.PIXEL_MEAN, std=cfg.INPUT.PIXEL_STD))
        self.to_tensor = Compose(to_tensor)

    def __len__(self) -> int:
        return len(self.data_source)

    def __getitem__(self, idx: int):
        item = self.data_source[idx]
        output = {"label": item.label, "domain": item.domain, "impath": item.impath, "index": idx}
        try:
            img0 = read_image(item.impath)
        except _IMAGE_ERRORS as err:
            if not self.skip_bad_images:
                raise BadImageError(
                    f'Cannot read image "{item.impath}" ({type(err).__name__}: {err}). Replace or remove the '
                    "file, or set DATALOADER.SKIP_BAD_IMAGES True to skip unreadable images."
                ) from err
            if not self._bad[idx]:
                self._bad[idx] = 1
                print(f'Skipping unreadable image "{item.impath}" ({type(err).__name__}: {err})', file=sys.stderr)
            return None

        if self.transform is None:
            output["img"] = img0
        elif isinstance(self.transform, (list, tuple)):
            for i, tfm in enumerate(self.transform):
                output["img" if i == 0 else f"img{i + 1}"] = self._transform_image(tfm, img0)
        else:
            output["img"] = self._transform_image(self.transform, img0)
        if self.return_img0:
            output["img0"] = self.to_tensor(img0)
        return output

    def _transform_image(self, tfm, img0):
        with drawing_from(self.generator):
            imgs = [tfm(img0) for _ in range(self.k_tfm)]
        return imgs[0] if len(imgs) == 1 else imgs

    def skipped_paths(self) -> list[str]:
        """Paths of the images skipped so far (by any worker)."""
        return [self.data_source[i].impath for i in range(len(self.data_source)) if self._bad[i]]


def build_data_loader(cfg, sampler_type: str = "SequentialSampler", data_source=None, batch_size: int = 64,
                      n_domain: int = 0, n_ins: int = 2, tfm=None, is_train: bool = True,
                      dataset_wrapper=None) -> DataLoader:
    """DataLoader over ``dataset_wrapper(cfg, data_source, tfm, is_train)``.

    Training drops the last incomplete batch whenever len(data_source) >= batch_size, so an epoch
    has floor(N / batch_size) batches (docs/engine_api.md#data).
    """
    if not data_source:
        raise UserError("Cannot build a data loader over an empty split; check DATASET.NAME, DATASET.ROOT "
                        "and DATASET.NUM_SHOTS / SUBSAMPLE_CLASSES")
    num_workers = cfg.DATALOADER.NUM_WORKERS
    if not isinstance(batch_size, int) or batch_size < 1:
        raise UserError(f"DATALOADER.*.BATCH_SIZE must be a positive integer, got {batch_size!r}")
    if num_workers < 0:
        raise UserError(f"DATALOADER.NUM_WORKERS must be >= 0 (0 = load in the main process), got {num_workers}")
    # The run seed alone fixes the shuffling and the workers' seeds (not whatever drew from the global RNG before).
    seed = cfg.get("SEED", -1)
    generator = torch.Generator().manual_seed(seed) if seed >= 0 else None
    sampler = build_sampler(sampler_type, cfg=cfg, data_source=data_source, batch_size=batch_size,
                            n_domain=n_domain, n_ins=n_ins, generator=generator)
    if dataset_wrapper is None:
        dataset_wrapper = DatasetWrapper
    use_cuda = torch.cuda.is_available() and cfg.USE_CUDA
    wrapped = dataset_wrapper(cfg, data_source, transform=tfm, is_train=is_train)
    if is_train and seed >= 0:  # random augmentation draws from a stream of its own (DatasetWrapper.generator)
        wrapped.generator = torch.Generator().manual_seed(augment_seed(seed))
    loader = DataLoader(
        wrapped,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        drop_last=is_train and len(data_source) >= batch_size,
        pin_memory=use_cuda and cfg.DATALOADER.PIN_MEMORY,
        persistent_workers=num_workers > 0 and cfg.DATALOADER.PERSISTENT_WORKERS,
        worker_init_fn=seed_worker,
        collate_fn=collate_skip_none,
        generator=generator,
    )
    assert len(loader) > 0
    return loader


class DataManager:
    """Builds the dataset, the transforms and the train/val/test loaders from ``cfg``."""

    def __init__(self, cfg, custom_tfm_train=None, custom_tfm_test=None, dataset_wrapper=None):
        dataset = build_dataset(cfg)
        tfm_train = custom_tfm_train if custom_tfm_train is not None else build_transform(cfg, is_train=True)
        tfm_test = custom_tfm_test if custom_tfm_test is not None else build_transform(cfg, is_train=False)
        dl = cfg.DATALOADER

        self.train_loader_x = build_data_loader(
            cfg, sampler_type=dl.TRAIN_X.SAMPLER, data_source=dataset.train_x, batch_size=dl.TRAIN_X.BATCH_SIZE,
            n_domain=dl.TRAIN_X.N_DOMAIN, n_ins=dl.TRAIN_X.N_INS, tfm=tfm_train, is_train=True,
            dataset_wrapper=dataset_wrapper)
        self.train_loader_u = None
        if dataset.train_u:
            u = dl.TRAIN_X if dl.TRAIN_U.SAME_AS_X else dl.TRAIN_U
            self.train_loader_u = build_data_loader(
                cfg, sampler_type=u.SAMPLER, data_source=dataset.train_u, batch_size=dl.TRAIN_U.BATCH_SIZE,
                n_domain=u.N_DOMAIN, n_ins=u.N_INS, tfm=tfm_train, is_train=True, dataset_wrapper=dataset_wrapper)
        self.val_loader = None
        if dataset.val:
            self.val_loader = build_data_loader(
                cfg, sampler_type=dl.TEST.SAMPLER, data_source=dataset.val, batch_size=dl.TEST.BATCH_SIZE,
                tfm=tfm_test, is_train=False, dataset_wrapper=dataset_wrapper)
        self.test_loader = build_data_loader(
            cfg, sampler_type=dl.TEST.SAMPLER, data_source=dataset.test, batch_size=dl.TEST.BATCH_SIZE,
            tfm=tfm_test, is_train=False, dataset_wrapper=dataset_wrapper)

        self._num_classes = dataset.num_classes
        self._num_source_domains = len(cfg.DATASET.SOURCE_DOMAINS)
        self._lab2cname = dataset.lab2cname
        self.dataset = dataset
        self.tfm_train = tfm_train
        self.tfm_test = tfm_test
        if cfg.VERBOSE:
            self.show_dataset_summary(cfg)

    @property
    def num_classes(self) -> int:
        return self._num_classes

    @property
    def num_source_domains(self) -> int:
        return self._num_source_domains

    @property
    def lab2cname(self) -> dict:
        return self._lab2cname

    def show_dataset_summary(self, cfg) -> None:
        table = [["Dataset", cfg.DATASET.NAME]]
        if cfg.DATASET.SOURCE_DOMAINS:
            table.append(["Source", cfg.DATASET.SOURCE_DOMAINS])
        if cfg.DATASET.TARGET_DOMAINS:
            table.append(["Target", cfg.DATASET.TARGET_DOMAINS])
        table.append(["# classes", f"{self.num_classes:,}"])
        table.append(["# train_x", f"{len(self.dataset.train_x):,}"])
        if self.dataset.train_u:
            table.append(["# train_u", f"{len(self.dataset.train_u):,}"])
        if self.dataset.val:
            table.append(["# val", f"{len(self.dataset.val):,}"])
        table.append(["# test", f"{len(self.dataset.test):,}"])
        print(tabulate(table))

    def _loaders(self):
        return [ld for ld in (self.train_loader_x, self.train_loader_u, self.val_loader, self.test_loader) if ld]

    def skipped_paths(self) -> list[str]:
        """Images skipped as unreadable so far, over all loaders (DATALOADER.SKIP_BAD_IMAGES)."""
        paths: dict[str, None] = {}
        for loader in self._loaders():
            if hasattr(loader.dataset, "skipped_paths"):
                paths.update(dict.fromkeys(loader.dataset.skipped_paths()))
        return list(paths)

    def skipped_by_split(self) -> dict[str, list[str]]:
        """{"train"/"val"/"test": paths of that split's images skipped as unreadable}, only splits with skips;
        paths relative to the dataset's image folder when under it (``dataset.image_path``)."""
        base = getattr(self.dataset, "image_path", None)

        def shown(path: str) -> str:
            rel = os.path.relpath(path, base) if base else path
            return path if rel.startswith("..") else rel

        out: dict[str, list[str]] = {}
        for split, loader in (("train", self.train_loader_x), ("train_u", self.train_loader_u),
                              ("val", self.val_loader), ("test", self.test_loader)):
            paths = loader.dataset.skipped_paths() if loader and hasattr(loader.dataset, "skipped_paths") else []
            if paths:
                out[split] = [shown(p) for p in paths]
        return out

    @property
    def num_skipped_images(self) -> int:
        return len(self.skipped_paths())

    def report_skipped(self) -> None:
        """Print how many unreadable images were skipped (nothing when none)."""
        paths = self.skipped_paths()
        if paths:
            shown = ", ".join(f'"{p}"' for p in paths[:5]) + (", ..." if len(paths) > 5 else "")
            print(f"Skipped {len(paths)} unreadable image(s) (DATALOADER.SKIP_BAD_IMAGES): {shown}")
