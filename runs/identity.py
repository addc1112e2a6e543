"""A run's identity: what its numbers depend on, so a run record is reused only for exactly the run it claims.

``identity(cfg, split_sha256, model)`` (stored as ``results.json`` ``run.identity``) holds

- ``config``: the resolved flat config minus :data:`IDENTITY_FREE_KEYS` (keys that say where or how fast a run
  goes, not what it computes), and ``config_sha256``, its hash;
- ``split_sha256``: the data root's split hash (``DatasetBase.split_sha256``; a different ``DATA`` with other
  data gives another split);
- ``code_sha256``: a hash of the source of the result-affecting packages (:data:`CODE_PATHS`: common/, clip/,
  dassl/, trainers/, runs/, calibration/, datasets/, toy/ with toy-clip's weights, train.py), so a change in docs/, tools/ or
  tests/ leaves every run current (the git commit is recorded beside it, for information only); a trainer defined in
  a drop-in file outside those folders (trainers/plugins.py) adds that file's hash;
- ``versions``: the libraries that change numbers (torch, torchvision, open_clip, numpy, pillow, Python major.minor);
- ``model``: for an evaluation of trained prompts, the identity id of the run that trained them (from its checkpoint);
- ``options`` / ``options_id``: the command-line ``KEY VALUE`` options that change results and their short hash,
  which the sweep puts into the folder name (its ``OPTS``, and a ``THREADS`` other than its policy's) and
  ``tools/parse_results.py`` groups by and shows; ``sweep_options``: the settings the sweep applied itself
  (train.py ``--sweep-opt``: the toy protocol's epochs), not part of ``options_id`` (the user's options override
  them, and a key the user set is left out);
- ``id``: a short hash of config, split, code, versions and model.

:func:`differences` says which components (and config keys) two identities differ in.
"""
from __future__ import annotations

import functools
import subprocess
from pathlib import Path
from typing import Any, Mapping, Sequence

REPO_ROOT = Path(__file__).resolve().parents[1]

#: Keys (prefixes) that do not change what a run computes: where it writes and reads (output folder, resume folder,
#: data root: the data itself is the split hash; caches), how often it prints or checkpoints, how many loader
#: workers it uses (NUM_WORKERS can change the augmentation random stream; it is treated as a throughput knob, as
#: CoOp does), evaluation batching and the frozen-feature cache (results identical), the text tower's truncation at
#: the EOT and its activation checkpointing (MODEL.TEXT_TRUNCATE_EOT / TEXT_CHECKPOINT_CHUNK: results equal within
#: float rounding, docs/faithfulness.md), the config file's *name* (its content is in the other keys) and USE_CUDA
#: (the device, like the machine, is not part of the identity).
IDENTITY_FREE_KEYS = ("OUTPUT_DIR", "RESUME", "VERBOSE", "USE_CUDA", "CONFIG_NAME", "DATASET.ROOT",
                      "DATASET.CACHE_DIR", "DATASET.CHECK_IMAGES", "DATALOADER.NUM_WORKERS", "DATALOADER.PIN_MEMORY",
                      "DATALOADER.PERSISTENT_WORKERS", "DATALOADER.TEST.", "TRAIN.PRINT_FREQ", "TRAIN.PROGRESS_BAR",
                      "TRAIN.CHECKPOINT_FREQ", "TEST.TEXT_CHUNK", "TEST.FEATURE_CACHE", "TEST.PER_CLASS_RESULT",
                      "TEST.COMPUTE_CMAT")
#: Options the record has fields of its own for (``shots``, ``subsample``): not part of ``options``.
OWN_FIELD_KEYS = ("DATASET.NUM_SHOTS", "DATASET.SUBSAMPLE_CLASSES")
#: The result-affecting source: these folders and files (tracked files when in a git checkout; Markdown excluded).
CODE_PATHS = ("common", "clip", "dassl", "trainers", "runs", "calibration", "datasets", "toy", "train.py")
COMPONENTS = ("config", "split", "code", "versions", "model")


def _sha(obj: Any) -> str:
    from datasets.common import canonical_sha256

    return canonical_sha256(obj)


def identity_free(key: str) -> bool:
    return key.startswith(IDENTITY_FREE_KEYS)


def other_method_nodes(cfg) -> set[str]:
    """``TRAINER.<node>`` sections of registered trainers other than ``cfg.TRAINER.NAME``: every config carries every
    method's defaults (train.py extend_cfg), but a run computes with its own section only, so registering another
    method (a drop-in file) must not make a record stale."""
    try:
        from dassl.engine import TRAINER_REGISTRY
    except Exception:  # the engine on its own
        return set()
    nodes = {}
    for name in TRAINER_REGISTRY.registered_names():
        cls = TRAINER_REGISTRY.get(name)
        nodes[name] = getattr(cls, "cfg_node", None) or name.upper()
    own = nodes.get(cfg.TRAINER.NAME, str(cfg.TRAINER.NAME).upper())
    return {n for n in nodes.values() if n not in (own, "CALIB")}


def identity_config(cfg) -> dict[str, Any]:
    """The flat config minus the identity-free keys and other methods' ``TRAINER.<node>`` sections, JSON-normalised
    (tuples as lists)."""
    import json

    from dassl.config import flatten_cfg

    others = tuple(f"TRAINER.{n}." for n in other_method_nodes(cfg))
    flat = {k: v for k, v in flatten_cfg(cfg).items() if not identity_free(k) and not (others and k.startswith(others))}
    return json.loads(json.dumps(flat, sort_keys=True, default=str))


def decode_value(text: str) -> Any:
    """A command-line option's value as yacs reads it (``0.50`` and ``0.5`` are one value)."""
    from yacs.config import CfgNode

    return CfgNode._decode_cfg_value(text)


def options(opts: Sequence[str]) -> dict[str, Any]:
    """The result-changing ``KEY VALUE`` options of a command line (identity-free keys and the record's own
    fields left out), values decoded as yacs does, JSON-normalised."""
    import json

    out = {}
    for key, value in zip(opts[0::2], opts[1::2]):
        if identity_free(key) or key in OWN_FIELD_KEYS:
            continue
        out[key] = decode_value(value) if isinstance(value, str) else value
    return json.loads(json.dumps(out, sort_keys=True, default=str))


def options_id(opts: Sequence[str]) -> str | None:
    """8 hex digits naming the result-changing options (None when there are none)."""
    found = options(opts)
    return _sha(found)[:8] if found else None


def _code_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--", *CODE_PATHS], cwd=REPO_ROOT, capture_output=True,
                             timeout=10)
        names = [n for n in out.stdout.decode().split("\0") if n] if out.returncode == 0 else []
    except (OSError, subprocess.SubprocessError):
        names = []
    if names:
        files = [REPO_ROOT / n for n in names]
    else:  # not a git checkout (an archive): every file under the code paths
        files = []
        for p in CODE_PATHS:
            path = REPO_ROOT / p
            files += [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file()]
    return sorted(f for f in files if f.is_file() and f.suffix not in (".md", ".pyc") and "__pycache__" not in f.parts)


@functools.lru_cache(maxsize=1)
def _code_file_set() -> frozenset[Path]:
    return frozenset(f.resolve() for f in _code_files())


@functools.lru_cache(maxsize=1)
def code_sha256() -> str:
    """sha256 over (relative path, content) of every result-affecting source file (see :data:`CODE_PATHS`)."""
    import hashlib

    h = hashlib.sha256()
    for f in _code_files():
        h.update(f.relative_to(REPO_ROOT).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def library_versions() -> dict[str, str]:
    """The libraries that change numbers: trainers.feature_cache's list (one list for the cache key and identity)."""
    from trainers.feature_cache import library_versions as versions

    return versions()


def split_sha256(cfg) -> str | None:
    """The split hash the run would record (``DatasetBase.split_sha256``), without building a data loader; None
    when the data cannot be read."""
    import contextlib
    import io

    try:
        from dassl.data.datasets import DATASET_REGISTRY
        from datasets.common import cache_root, dataset_root

        cls = DATASET_REGISTRY.get(cfg.DATASET.NAME)
        with contextlib.redirect_stdout(io.StringIO()):
            path = cls.locate(dataset_root(cfg))
            return cls.read_source(path, cache_root(cfg)).sha256()
    except Exception:
        return None


def trainer_source_sha256(name: str) -> str | None:
    """sha256 of the drop-in file defining trainer ``name`` and the files beside it that it can import as
    ``trainers.<name>`` (``trainers/contrib``, ``$CALIB_PROMPT_TRAINERS`` or ``--trainer-file``:
    trainers/plugins.py), when they lie outside the hashed code; None otherwise."""
    try:
        from trainers.plugins import sha256_files, trainer_file, trainer_source_files

        files = [f for f in trainer_source_files(name) if f not in _code_file_set()]
    except Exception:  # not registered (train.py reports it) or defined interactively
        return None
    if not files:
        return None
    return sha256_files(files, trainer_file(name).parent)


def identity(cfg, split: str | None, model: str | None = None, opts: Sequence[str] = (),
             sweep_opts: Sequence[str] = ()) -> dict[str, Any]:
    config = identity_config(cfg)
    code = code_sha256()
    plugin = trainer_source_sha256(cfg.TRAINER.NAME)
    if plugin is not None:  # a drop-in trainer file is result-affecting code too
        code = _sha([code, plugin])
    ident = {"config_sha256": _sha(config), "split_sha256": split, "code_sha256": code,
             "versions": library_versions(), "model": model}
    found = options(opts)
    applied = {k: v for k, v in options(sweep_opts).items() if k not in set(opts[0::2])}
    return {"id": _sha(ident)[:16], **ident, "options": found, "options_id": _sha(found)[:8] if found else None,
            "sweep_options": applied, "config": config}


def differences(recorded: Mapping[str, Any] | None, expected: Mapping[str, Any]) -> list[str]:
    """What differs between a recorded identity and the expected one, one phrase per component (config keys
    named); [] when they match. An expected split of None (data unreadable) is not compared."""
    if not recorded:
        return ["the record has no identity (made before run identities)"]
    out = []
    mine, theirs = recorded.get("config") or {}, expected.get("config") or {}
    if recorded.get("config_sha256") != expected.get("config_sha256"):
        keys = sorted(k for k in set(mine) | set(theirs) if mine.get(k, "<absent>") != theirs.get(k, "<absent>"))
        shown = "; ".join(f"{k}: {mine.get(k, '<absent>')!r} -> {theirs.get(k, '<absent>')!r}" for k in keys[:6])
        out.append(f"config ({shown}{'; ...' if len(keys) > 6 else ''})" if keys else "config")
    if expected.get("split_sha256") is not None and recorded.get("split_sha256") != expected["split_sha256"]:
        out.append("data split (DATA holds other data)")
    if recorded.get("code_sha256") != expected.get("code_sha256"):
        out.append("code (clip/ dassl/ trainers/ runs/ calibration/ datasets/ toy/ train.py changed)")
    old, new = recorded.get("versions") or {}, expected.get("versions") or {}
    if old != new:
        keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        out.append("versions (" + ", ".join(f"{k} {old.get(k)} -> {new.get(k)}" for k in keys) + ")")
    if recorded.get("model") != expected.get("model"):
        out.append("the prompts it evaluates (its training run changed)")
    return out
