"""On-disk cache of frozen test-image features.

For methods whose image tower is frozen (ZS-CLIP, CoOp, CoCoOp, KgCoOp, ProGrad, ProDA) the test images' features
are a pure function of the image tower's weights, its precision, the test transform and the images. They are
computed once and reused by the novel evaluation, by the other seeds and by the other variants of a sweep. Methods
that prompt the image tower (IVLP, VPT, MaPLe, PromptSRC) cache frozen CLIP's features instead, which their
zero-shot logits need. The key hashes everything that changes them; ``TEST.FEATURE_CACHE False`` turns the cache
off.

What the key holds (:func:`feature_key`): the tower's weights (sampled), the test transform, every image (path,
label, size, mtime), the library versions (:func:`library_versions`: torch, torchvision, open_clip, Pillow, numpy,
Python) and the caller's ``extra``: the trainer adds the precision, the device and :func:`code_fingerprint` of the
code that computes the features (the source files defining the encode function and every ``encode_image`` it
overrides, every module class of the image tower -- ``clip/encoders.py`` and open_clip's model/transformer files --,
CLIP's own class, the transform classes and the dataset wrapper that reads the images). Whole files are hashed, so
any edit of them (a comment included) invalidates the entries: a recomputation, never a stale reuse.

The cache is best-effort: an unwritable folder or an unreadable entry is a one-line warning and the run goes on
computing the features. Which features may be cached at all is checked, not declared: :func:`depends_on_learnable`.
"""
from __future__ import annotations

import functools
import hashlib
import inspect
import json
import os
import sys
from pathlib import Path

import torch

from dassl.utils import atomic_torch_save

ENV_DIR = "CALIB_PROMPT_CACHE"


def cache_dir(cfg) -> Path:
    """``TEST.FEATURE_CACHE_DIR``, else ``$CALIB_PROMPT_CACHE/features``, else ``~/.cache/calib-prompt/features``."""
    if cfg.TEST.FEATURE_CACHE_DIR:
        return Path(cfg.TEST.FEATURE_CACHE_DIR).expanduser()
    base = os.environ.get(ENV_DIR) or os.path.join(os.path.expanduser("~"), ".cache", "calib-prompt")
    return Path(base) / "features"


def tower_fingerprint(visual: torch.nn.Module) -> str:
    """A hash of the image tower's weights: shapes, dtypes and a strided sample of every tensor's values.

    Cheap even for ViT-L (a few thousand values per tensor) yet changes with any checkpoint or precision change.
    """
    h = hashlib.sha256()
    for name, t in visual.state_dict().items():
        flat = t.detach().reshape(-1)
        step = max(1, flat.numel() // 4096)
        sample = flat[::step].float().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(sample.numpy().tobytes())
    return h.hexdigest()


def library_versions() -> dict[str, str]:
    """The libraries that compute the features: the run identity's list (torch, torchvision, open_clip, numpy,
    Pillow, Python major.minor; trainers/identity.py), one list for both."""
    from .identity import library_versions as versions

    return versions()


def _file_sha256(path: str) -> str:
    st = os.stat(path)
    return _file_sha256_of(path, st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=4096)
def _file_sha256_of(path: str, mtime_ns: int, size: int) -> str:
    """Memoised by modification time and size: every evaluation hashes the same few dozen source files (the
    largest fixed cost of a cached evaluation, docs/performance.md), and they do not change within a run."""
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _source_files(obj) -> list[str]:
    """The files defining a function, method or module; for a class, every class of its MRO (a subclass such as
    clip.model.CLIP runs its bases' code too: open_clip's CLIP); for any other object, its class's."""
    obj = getattr(obj, "__func__", obj)  # a bound method: its function
    obj = inspect.unwrap(obj) if inspect.isfunction(obj) else obj
    if inspect.isfunction(obj) or inspect.ismodule(obj):
        targets = [obj]
    else:
        targets = list((obj if inspect.isclass(obj) else type(obj)).__mro__)
    files = []
    for target in targets:
        try:
            files.append(inspect.getsourcefile(target) or inspect.getfile(target))
        except TypeError:  # a built-in: its code is the library's, covered by library_versions()
            continue
    return files


def code_fingerprint(*objects) -> str:
    """A hash of the source files that define ``objects``: functions, classes, modules, and for an ``nn.Module``
    instance the class of every one of its submodules. Files are named relative to their package, so one
    version of the code gives one fingerprint in every checkout and virtual environment."""
    files: set[str] = set()
    for obj in objects:
        # a module's submodules by class (a ViT repeats one block class dozens of times): each class looked up once
        members = {type(m): m for m in obj.modules()}.values() if isinstance(obj, torch.nn.Module) else [obj]
        for member in members:
            files.update(os.path.realpath(p) for p in _source_files(member) if p and os.path.isfile(p))
    roots = _roots()
    names = {path: _portable_name(path, roots) for path in files}
    h = hashlib.sha256()
    for path in sorted(files, key=names.__getitem__):
        h.update(f"{names[path]}:{_file_sha256(path)}\n".encode())
    return h.hexdigest()


def _roots() -> list[str]:
    return [os.path.realpath(p or os.getcwd()) for p in sys.path]


def _portable_name(path: str, roots: list[str] | None = None) -> str:
    """``path`` relative to the longest sys.path entry holding it (``clip/encoders.py``, ``open_clip/model.py``)."""
    roots = _roots() if roots is None else roots
    inside = [r for r in roots if path.startswith(r.rstrip(os.sep) + os.sep)]
    return os.path.relpath(path, max(inside, key=len)) if inside else path


def depends_on_learnable(encode, probe: torch.Tensor) -> bool:
    """Whether ``encode(probe)`` depends on a learnable parameter: computed with autograd on, its output requires
    grad exactly when a tensor with ``requires_grad`` (a learnable parameter; CLIP is frozen) entered the
    computation -- whichever module, closure or attribute holds it. One forward pass of one image.

    Not seen: a parameter used under ``torch.no_grad()`` or through ``.detach()``/``.data``, or state that is not a
    parameter (a buffer the method rewrites); such a method must set ``image_prompted = True`` itself."""
    with torch.enable_grad():
        out = encode(probe)
    outs = out if isinstance(out, (tuple, list)) else (out,)
    return any(isinstance(t, torch.Tensor) and t.requires_grad for t in outs)


def feature_key(visual: torch.nn.Module, transform, items, extra: dict | None = None) -> str:
    """The cache key: tower fingerprint + library versions + transform + (path, label, size, mtime) of every image,
    in order, + extra.

    Files are identified by size and modification time, not content (reading every test image would cost what
    the cache saves): a file rewritten in place with the same size and its old mtime restored is not noticed.
    """
    h = hashlib.sha256()
    h.update(tower_fingerprint(visual).encode())
    h.update(json.dumps(library_versions(), sort_keys=True).encode())
    h.update(repr(transform).encode())
    for item in items:
        h.update(f"{os.path.abspath(item.impath)}\t{item.label}\n".encode())
        try:
            st = os.stat(item.impath)
            h.update(f"{st.st_size}:{st.st_mtime_ns}\n".encode())  # ns: a rewrite within the second counts
        except OSError:
            h.update(b"missing\n")
    h.update(json.dumps(extra or {}, sort_keys=True).encode())
    return h.hexdigest()[:32]


def load(path: Path, expected: int | None = None):
    """(features, labels) of a cache entry; None when there is none. An unreadable or malformed entry (or one not
    holding ``expected`` images) is a one-line warning and None: the features are recomputed, never trusted."""
    try:
        if not path.is_file():
            return None
        blob = torch.load(path, map_location="cpu", weights_only=True)
        features, labels = blob["features"], blob["labels"]
        n = len(labels)
        if features.dim() != 2 or labels.dim() != 1 or len(features) != n or expected not in (None, n):
            raise ValueError(f"holds {tuple(features.shape)} features and {n} labels"
                             + (f", not {expected} images" if expected is not None else ""))
        return features, labels
    except Exception as exc:  # noqa: BLE001 - whatever is wrong with the entry, it is recomputed
        print(f"Warning: ignoring the unreadable feature cache entry {path} ({type(exc).__name__}: {exc}); "
              "computing the features")
        return None


def save(path: Path, features: torch.Tensor, labels: torch.Tensor) -> bool:
    """Best-effort: True when written; otherwise one warning line and False (the run goes on without it)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_torch_save({"features": features, "labels": labels}, path)
        return True
    except Exception as exc:  # noqa: BLE001 - the cache is optional: any failure to write it is only reported
        print(f"Warning: cannot write the feature cache {path} ({type(exc).__name__}: {exc}); continuing without "
              "it (set TEST.FEATURE_CACHE_DIR to a writable folder, or TEST.FEATURE_CACHE False)")
        return False
