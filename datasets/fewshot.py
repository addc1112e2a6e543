"""The few-shot subset: drawn the CoOp way, cached as verified JSON, or read from a Dassl pickle.

Draw (docs/protocol_notes.md#few-shot-sampling): Python ``random`` (seeded by the run seed, nothing else drawing
before) samples K items per label in order of first appearance from train, then min(K, 4) from val, via the
engine's ``DatasetBase.generate_fewshot_dataset``. The draw happens before the base/new class split, so one
cache serves base, new and all.

Cache: ``split_fewshot/shot_K-seed_S.json`` in the dataset folder (or, when DATASET.CACHE_DIR is set or the
folder is read-only, ``<cache root>/fewshot/<Dataset>-<split sha[:12]>/``). Paths are relative to the dataset
folder, so moving the data root keeps it valid. It records the sha256 of the source split and of its own
content; a mismatch on load is reported and the subset is drawn again.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Sequence

from common.atomic import atomic_write_json

from .common import Item, Split, canonical_sha256, first_writable, items_to_json, parse_split

FORMAT = "calib-prompt-fewshot/1"
DASSL_DATUM = ("dassl.data.datasets.base_dataset", "Datum")


def cache_stem(shots: int, seed: int) -> str:
    return f"shot_{shots}-seed_{seed}"


def cache_dirs(name: str, dataset_path: Path, source_sha: str, cache_root: Path, cache_dir_set: bool) -> list[Path]:
    """Where the JSON cache may live, in order of preference (the first writable one gets written)."""
    external = cache_root / "fewshot" / f"{name}-{source_sha[:12]}"
    local = dataset_path / "split_fewshot"
    return [external, local] if cache_dir_set else [local, external]


def load_or_draw(
    ds,
    *,
    name: str,
    source: Split,
    source_sha: str,
    dataset_path: Path,
    image_dir: str,
    shots: int,
    seed: int,
    cache_root: Path,
    cache_dir_set: bool,
    draw_val: bool = True,
) -> tuple[list[Item], list[Item]]:
    """Return the few-shot (train, val) Items: from a valid cache, else a Dassl pickle, else a fresh draw.

    ``ds`` provides ``generate_fewshot_dataset`` (the engine's DatasetBase method). ``image_dir`` is the image
    folder relative to the dataset folder ("" = the dataset folder itself).
    """
    if seed < 0:
        print("SEED < 0: the few-shot subset is drawn unseeded and not cached")
        return _draw(ds, source, shots, draw_val)
    stem = cache_stem(shots, seed)
    dirs = cache_dirs(name, dataset_path, source_sha, cache_root, cache_dir_set)
    for d in dirs:
        path = d / f"{stem}.json"
        if path.is_file():
            loaded = _read_json_cache(path, source_sha=source_sha, shots=shots, seed=seed, image_dir=image_dir)
            if loaded is not None:
                print(f"Loading preprocessed few-shot data from {path}")
                return loaded
    pkl = dataset_path / "split_fewshot" / f"{stem}.pkl"
    if pkl.is_file():
        loaded = _read_dassl_pickle(pkl, source, draw_val)
        if loaded is not None:
            print(f"Loading preprocessed few-shot data from {pkl} (Dassl pickle, paths re-rooted onto "
                  f"{dataset_path / image_dir if image_dir else dataset_path})")
            _write_cache(dirs, stem, loaded, name=name, source_sha=source_sha, shots=shots, seed=seed,
                         image_dir=image_dir)
            return loaded
    train, val = _draw(ds, source, shots, draw_val)
    _write_cache(dirs, stem, (train, val), name=name, source_sha=source_sha, shots=shots, seed=seed,
                 image_dir=image_dir)
    return train, val


def shots_used(train: Sequence[Item], source: Split, shots: int, name: str) -> int:
    """Training images per class actually drawn: the fewest over every class of the dataset (counted before the
    base/new split, so base, new and all runs of one dataset agree), with a warning when a class has fewer than
    ``shots`` (it trains on all it has)."""
    from collections import Counter

    counts = Counter(it.label for it in train)
    names = source.classnames()
    per_class = sorted((counts.get(label, 0), names[label]) for label in names)
    short = [(n, c) for n, c in per_class if n < shots]
    if short:
        print(f"Warning: DATASET.NUM_SHOTS {shots}, but {len(short)} of {len(per_class)} {name} classes have fewer "
              f"training images (fewest: '{short[0][1]}' with {short[0][0]}); they use all they have, and the run "
              f"record's shots is {short[0][0]}")
    return per_class[0][0] if per_class else 0


def _draw(ds, source: Split, shots: int, draw_val: bool) -> tuple[list[Item], list[Item]]:
    train = ds.generate_fewshot_dataset(source.train, num_shots=shots)
    val = ds.generate_fewshot_dataset(source.val, num_shots=min(shots, 4)) if draw_val else []
    return list(train), list(val)


def _to_dataset_rel(items: Sequence[Item], image_dir: str) -> list[list]:
    prefix = f"{image_dir}/" if image_dir else ""
    return [[prefix + e[0], e[1], e[2]] for e in items_to_json(items)]


def _write_cache(dirs, stem, train_val, *, name, source_sha, shots, seed, image_dir) -> None:
    train, val = train_val
    content = {"train": _to_dataset_rel(train, image_dir), "val": _to_dataset_rel(val, image_dir)}
    obj = {
        "format": FORMAT,
        "dataset": name,
        "shots": shots,
        "seed": seed,
        "image_dir": image_dir,
        "source_sha256": source_sha,
        "content_sha256": canonical_sha256(content),
        **content,
    }
    target = first_writable(dirs)
    if target is None:
        print(f"Warning: none of {', '.join(map(str, dirs))} is writable; the few-shot subset is not cached")
        return
    path = target / f"{stem}.json"
    try:
        atomic_write_json(path, obj, indent=None, end="")
    except OSError as exc:
        print(f"Warning: could not write the few-shot cache {path} ({exc}); continuing without it")
        return
    print(f"Saving preprocessed few-shot data to {path}")


def _read_json_cache(path: Path, *, source_sha: str, shots: int, seed: int, image_dir: str):
    """Verified (train, val) from our JSON cache, or None (after saying why) when it must be drawn again."""

    def stale(why: str):
        print(f"Few-shot cache {path} {why}; drawing the subset again")
        return None

    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except (OSError, ValueError) as exc:
        return stale(f"is unreadable ({exc})")
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        return stale(f"is not a {FORMAT} file")
    content = {"train": obj.get("train"), "val": obj.get("val")}
    actual = canonical_sha256(content)
    if actual != obj.get("content_sha256"):
        return stale(f"was modified after it was written (content sha256 {actual[:12]} != recorded "
                     f"{str(obj.get('content_sha256'))[:12]})")
    if obj.get("source_sha256") != source_sha:
        return stale(f"was drawn from a different split (source sha256 {str(obj.get('source_sha256'))[:12]}, "
                     f"current split {source_sha[:12]})")
    if obj.get("shots") != shots or obj.get("seed") != seed:
        return stale(f"holds shots={obj.get('shots')} seed={obj.get('seed')}, not shots={shots} seed={seed}")
    try:
        parts = parse_split(content, str(path), keys=("train", "val"))
    except Exception as exc:  # UserError with the details
        return stale(f"is malformed ({exc})")
    recorded = obj.get("image_dir") or ""
    prefix = f"{recorded}/" if recorded else ""
    out = []
    for key in ("train", "val"):
        items = []
        for it in parts[key]:
            if not it.impath.startswith(prefix):
                return stale(f"has a path outside its image folder '{recorded}': {it.impath}")
            items.append(it._replace(impath=it.impath[len(prefix):]))
        out.append(items)
    return out[0], out[1]


class _DatumUnpickler(pickle.Unpickler):
    """Unpickles Dassl's ``{"train": [Datum], "val": [Datum]}`` and nothing else (no arbitrary code)."""

    ALLOWED = {
        DASSL_DATUM,
        ("collections", "OrderedDict"),
        ("collections", "defaultdict"),
        ("copyreg", "_reconstructor"),
        ("builtins", "object"),
        ("builtins", "list"),
        ("builtins", "dict"),
    }

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name}")
        return super().find_class(module, name)


def _read_dassl_pickle(path: Path, source: Split, draw_val: bool):
    """(train, val) Items from a Dassl few-shot pickle whose absolute paths come from another machine: each
    path is matched to the current split by its longest suffix that is a split path (the part after the image
    folder). None (after saying why) when the pickle does not fit the current split."""

    def unusable(why: str):
        print(f"Dassl few-shot pickle {path} {why}; drawing the subset again")
        return None

    try:
        with open(path, "rb") as f:
            data = _DatumUnpickler(f).load()
    except Exception as exc:
        return unusable(f"cannot be read ({type(exc).__name__}: {exc})")
    if not isinstance(data, dict) or "train" not in data:
        return unusable("is not a {'train': [...], 'val': [...]} dict")
    out = []
    for key in ("train", "val") if draw_val else ("train",):
        lookup = {it.impath: it for it in getattr(source, key)}
        items = []
        for d in data.get(key) or []:
            try:
                impath, label, classname = d.impath, d.label, d.classname
            except AttributeError:
                return unusable(f"holds a {type(d).__name__} in '{key}', not a Datum")
            parts = str(impath).replace("\\", "/").split("/")
            match = next((lookup[s] for s in ("/".join(parts[i:]) for i in range(len(parts))) if s in lookup), None)
            if match is None:
                return unusable(f"names {impath}, which is not in the current {key} split")
            if (match.label, match.classname) != (label, classname):
                return unusable(f"labels {impath} as ({label}, {classname!r}), the split as "
                                f"({match.label}, {match.classname!r})")
            items.append(match)
        out.append(items)
    if not draw_val:
        out.append([])
    return out[0], out[1]
