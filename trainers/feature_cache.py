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
import contextlib
import sys
from pathlib import Path

import torch

from common.atomic import atomic_torch_save
from dassl.utils import read_image

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


@functools.lru_cache(maxsize=1)
def library_versions() -> dict[str, str]:
    """The libraries that change numbers (torch, torchvision, open_clip, numpy, Pillow, Python major.minor): the
    feature cache's key and the run identity (runs/identity.py) use this one list."""
    import platform

    import numpy
    import PIL
    import torch
    import torchvision

    # plain str: torch.__version__ is a TorchVersion, which checkpoints loaded with weights_only=True refuse
    out = {"python": ".".join(platform.python_version_tuple()[:2]), "torch": str(torch.__version__),
           "torchvision": str(torchvision.__version__), "numpy": str(numpy.__version__), "pillow": str(PIL.__version__)}
    try:
        import open_clip

        out["open_clip"] = str(open_clip.__version__)
    except Exception:  # pragma: no cover - open_clip is a requirement
        out["open_clip"] = None
    return out


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
        atomic_torch_save(path, {"features": features, "labels": labels})
        return True
    except Exception as exc:  # noqa: BLE001 - the cache is optional: any failure to write it is only reported
        print(f"Warning: cannot write the feature cache {path} ({type(exc).__name__}: {exc}); continuing without "
              "it (set TEST.FEATURE_CACHE_DIR to a writable folder, or TEST.FEATURE_CACHE False)")
        return False


class CachedFeatures:
    """PromptTrainer's side of the cache (a mixin): where a loader's features live, whether a function's features
    may be cached at all (checked), and the cached or computed features themselves."""

    def feature_cache_path(self, loader, frozen: bool = False):
        """Where the image features of ``loader``'s images are cached: the key hashes the tower weights, the
        precision, the image-encoding code, the transform and the image list (trainers/py).
        ``frozen``: the features of frozen CLIP (:meth:`frozen_encode_image`) rather than the method's own."""
        model, dataset = self.model, loader.dataset
        encode = type(self).frozen_encode_image if frozen else type(model).encode_image
        # the code that computes the features: the encode function and what it overrides, CLIP's class (its
        # encode_image), the tower's module classes (clip/encoders.py, open_clip), the transforms, the image reader
        code = [encode] if frozen else [c.__dict__["encode_image"] for c in type(model).__mro__
                                        if "encode_image" in c.__dict__]
        code += [type(model.clip), model.clip.visual, getattr(model, "image_encoder", None) or model.clip.visual,
                 type(dataset), read_image, *getattr(dataset.transform, "transforms", [dataset.transform])]
        cuda = self.device.type == "cuda"
        device = self.device.type + (f":{torch.cuda.get_device_name(self.device)}" if cuda else "")
        key = feature_key(model.clip.visual, dataset.transform, dataset.data_source,
                                        {"precision": self.precision, "device": device,
                                         "encoder": f"{encode.__module__}.{encode.__qualname__}",
                                         "code": code_fingerprint(*code)})
        return cache_dir(self.cfg) / f"{key}.pt"

    def image_path_learnable(self, encode) -> bool:
        """Checked, not declared: whether ``encode`` (images -> features) depends on a learnable parameter
        (:func:`depends_on_learnable` on one blank image of INPUT.SIZE, in eval mode; the
        RNG states and the model's mode are left as they were). The answer is kept while the function and the
        model's parameters and their ``requires_grad`` flags stay the same, so a cached evaluation runs no image."""
        signature = (getattr(encode, "__func__", encode),
                     tuple((id(p), p.requires_grad) for p in self.model.parameters()))
        known = self.__dict__.setdefault("_image_path_learnable", {})
        if signature in known:
            return known[signature]
        probe = torch.zeros(1, 3, *self.cfg.INPUT.SIZE, device=self.device)
        modes = [(m, m.training) for m in self.model.modules()]
        self.model.eval()
        cuda = [self.device.index or torch.cuda.current_device()] if self.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=cuda):
                known[signature] = depends_on_learnable(encode, probe)
        finally:
            for m, mode in modes:
                m.training = mode
        return known[signature]

    @torch.no_grad()
    def image_features(self, loader, frozen: bool = False) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Image features and labels of a loader's images, from the on-disk cache when possible.

        The method's own features (default) are cached only when its image tower is frozen; None when it is
        prompted (``image_prompted``, or checked: :meth:`image_path_learnable`) or the cache is off. ``frozen``:
        frozen CLIP's features, which an image-prompted method needs for the zero-shot logits; cached whenever the
        cache is on (and CLIP is indeed frozen). The cache is best-effort: a failure to read or write it is a
        warning line.
        """
        if not self.cfg.TEST.FEATURE_CACHE or (self.model.image_prompted and not frozen):
            return None
        if frozen and not self.model.image_prompted:
            frozen = False  # the method's own features are frozen CLIP's: one cache entry, not two
        # the frozen pass runs as zero_shot_logits' own does (outside autocast), so cached == uncached
        encode, context = ((self.frozen_encode_image, contextlib.nullcontext) if frozen
                           else (self.model.encode_image, self.autocast))
        if self.image_path_learnable(encode):  # never read nor write features that training moves
            return None
        path = self.feature_cache_path(loader, frozen)
        hit = load(path, expected=len(loader.dataset))
        if hit is not None:
            print(f"Using cached {'frozen ' if frozen else ''}image features ({len(hit[1])} images) from {path}")
            return hit
        feats, labels = [], []
        from tqdm import tqdm

        for batch in tqdm(loader, desc="image features", leave=False, disable=not self.cfg.VERBOSE):
            if batch is None:
                continue
            image, label = self.parse_batch_test(batch)
            with context():
                feats.append(encode(image).float().cpu())
            labels.append(label.cpu())
        result = torch.cat(feats), torch.cat(labels)
        if len(result[1]) == len(loader.dataset):  # never cache a partial set (skipped unreadable images)
            save(path, *result)
        return result
