"""Datum and DatasetBase (Dassl's base_dataset).

This module path must stay ``dassl.data.datasets.base_dataset``: few-shot caches and ImageNet's
``preprocessed.pkl`` written by CoOp-family repos pickle ``Datum`` under it (docs/engine_api.md#datum-and-pickles).
"""
from __future__ import annotations

import random
from collections import defaultdict

from common.errors import MissingFileError

from ...utils.tools import check_isfile

__all__ = ["Datum", "DatasetBase"]


class Datum:
    """One labelled image. Pickles as its four private attributes, like Dassl's Datum.

    ``check_exists=False`` skips the per-item stat (costly for 1.3M ImageNet items).
    """

    def __init__(self, impath: str = "", label: int = 0, domain: int = 0, classname: str = "",
                 check_exists: bool = True):
        if not isinstance(impath, str):
            raise TypeError(f"Datum impath must be a str, got {type(impath).__name__}")
        if check_exists and not check_isfile(impath):
            raise MissingFileError(f'Image not found: "{impath}". Check DATASET.ROOT (--root) and the '
                                   "dataset folder layout.")
        self._impath = impath
        self._label = label
        self._domain = domain
        self._classname = classname

    @property
    def impath(self) -> str:
        return self._impath

    @property
    def label(self) -> int:
        return self._label

    @property
    def domain(self) -> int:
        return self._domain

    @property
    def classname(self) -> str:
        return self._classname

    def __repr__(self) -> str:
        return (f"Datum(impath={self._impath!r}, label={self._label}, domain={self._domain}, "
                f"classname={self._classname!r})")


class DatasetBase:
    """Holds train_x / train_u / val / test lists of Datum; classes come from train_x only."""

    dataset_dir = ""  # folder name under DATASET.ROOT
    domains: list = []

    def __init__(self, train_x=None, train_u=None, val=None, test=None):
        self._train_x = train_x
        self._train_u = train_u
        self._val = val
        self._test = test
        self._num_classes = self.get_num_classes(train_x or [])
        self._lab2cname, self._classnames = self.get_lab2cname(train_x or [])

    @property
    def train_x(self):
        return self._train_x

    @property
    def train_u(self):
        return self._train_u

    @property
    def val(self):
        return self._val

    @property
    def test(self):
        return self._test

    @property
    def lab2cname(self) -> dict:
        return self._lab2cname

    @property
    def classnames(self) -> list[str]:
        return self._classnames

    @property
    def num_classes(self) -> int:
        return self._num_classes

    @staticmethod
    def get_num_classes(data_source) -> int:
        """max label + 1 (0 for an empty source)."""
        return max((item.label for item in data_source), default=-1) + 1

    @staticmethod
    def get_lab2cname(data_source) -> tuple[dict, list[str]]:
        """(label -> classname dict, classnames in sorted label order)."""
        mapping = {item.label: item.classname for item in data_source}
        labels = sorted(mapping)
        return {lab: mapping[lab] for lab in labels}, [mapping[lab] for lab in labels]

    def generate_fewshot_dataset(self, *data_sources, num_shots: int = -1, repeat: bool = False):
        """K items per label, drawn with python ``random.sample`` per label in first-appearance order.

        A label with fewer than K items keeps all of them (or K draws with replacement when
        ``repeat``). num_shots < 1 returns the input unchanged. One source gives a list, several a
        list of lists. Seed-exact with Dassl when python ``random`` is seeded the same way.
        """
        if num_shots < 1:
            return data_sources[0] if len(data_sources) == 1 else data_sources
        print(f"Creating a {num_shots}-shot dataset")
        output = []
        for data_source in data_sources:
            dataset = []
            for items in self.split_dataset_by_label(data_source).values():
                if len(items) >= num_shots:
                    dataset.extend(random.sample(items, num_shots))
                elif repeat:
                    dataset.extend(random.choices(items, k=num_shots))
                else:
                    dataset.extend(items)
            output.append(dataset)
        return output[0] if len(output) == 1 else output

    @staticmethod
    def split_dataset_by_label(data_source) -> defaultdict:
        """label -> items, labels in order of first appearance."""
        output = defaultdict(list)
        for item in data_source:
            output[item.label].append(item)
        return output

    @staticmethod
    def split_dataset_by_domain(data_source) -> defaultdict:
        output = defaultdict(list)
        for item in data_source:
            output[item.domain].append(item)
        return output
