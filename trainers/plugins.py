"""Where trainers come from, and what happens when a method file does not import.

Trainers register themselves with ``@TRAINER_REGISTRY.register()`` when their file is imported. Files are found in:

1. ``trainers/*.py`` (the package's own methods);
2. ``trainers/contrib/*.py``: the drop-in folder for your own (or ported) trainer files, no package edit needed;
3. ``$CALIB_PROMPT_TRAINERS``: files or folders of ``*.py`` files, separated by ``os.pathsep`` (``:``); sweeps pass
   the environment on to every train.py run, so a method outside the repository sweeps like a built-in one;
4. ``train.py --trainer-file PATH`` (one run; the file must import).

A file of 1-3 that fails to import is reported on stderr with its path and the exception, and the other methods
stay usable (``--trainer CoOp`` still works, pytest still collects); asking for a trainer that is not registered
then names those files. ``--trainer-file`` fails loudly instead: you asked for that file.

Names: a ``--trainer-file`` that registers a name already taken (CoOp's own ``coop.py`` registers ``CoOp``) takes
that name for the run, because that is what the command asked for; the record names the file and its hash
(:func:`trainer_file_record`). A file of 2-3 that does so is a clash: ``--trainer <name>`` is then one error naming
both definitions and the fix (``dassl.engine.build.CLASHES``), never a silent choice of one of them.

Helper modules: a drop-in file may import the modules beside it as ``trainers.<name>`` (the paper's ``coop.py``
does ``from trainers.regularizers import ...``), as it did in its own repository. Only names the package does not
have resolve there, so a drop-in folder never shadows our modules; the files beside a drop-in trainer count in its
code hash (:func:`trainer_source_files`).
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.abc
import importlib.util
import os
import sys
import traceback
from pathlib import Path

from common.errors import UserError
from dassl.engine.build import CLASHES, IMPORT_FAILURES, TRAINER_REGISTRY

ENV_VAR = "CALIB_PROMPT_TRAINERS"
PACKAGE = Path(__file__).resolve().parent
REPO = PACKAGE.parent
CONTRIB = PACKAGE / "contrib"
_LOADED: dict[str, list[str]] = {}  # resolved file -> trainer names it registered
_MODULES: dict[str, object] = {}  # resolved file -> its module (a helper imported twice is one module)
_HELPERS: set[str] = set()  # files imported as trainers.<name> by a drop-in file
_SIBLING_DIRS: list[Path] = []  # folders of drop-in files: where trainers.<name> may resolve
_OVERRIDES: dict[str, tuple[str, object]] = {}  # name -> (--trainer-file that took it, the class set aside)
_CLASHING: dict[str, dict[str, object]] = {}  # file -> {name: its class not registered (a clash)}
_FAILED: dict[str, str] = {}  # file -> why it did not import (a drop-in folder's file, reported once)


def display_path(path: str | os.PathLike) -> str:
    """A path relative to the repository when it lies inside it (records and messages), else absolute."""
    path = Path(path).resolve()
    try:
        return path.relative_to(REPO).as_posix()
    except ValueError:
        return str(path)


def _where(cls) -> str:
    """Where a trainer class is defined, for messages: ``trainers/coop.py (built-in)`` or the drop-in file."""
    import inspect

    try:
        file = Path(inspect.getsourcefile(cls)).resolve()
    except (TypeError, OSError):
        return f"{cls.__module__}.{cls.__qualname__}"
    builtin = file.parent == PACKAGE
    return display_path(file) + (" (built-in)" if builtin else "")


def _describe(exc: BaseException, file: Path | None = None) -> str:
    """``Type: message at file:line``: for a SyntaxError the compiler's position (its traceback ends inside
    importlib), otherwise the last line of ``file`` on the traceback (the innermost frame when ``file`` is absent
    from it, with the file's own line before it when there is one)."""
    if isinstance(exc, SyntaxError):
        line = f": {exc.text.strip()}" if exc.text and exc.text.strip() else ""
        return f"{type(exc).__name__}: {exc.msg} at {exc.filename}:{exc.lineno}{line}"
    where = ""
    tb = traceback.extract_tb(exc.__traceback__)
    if tb:
        where = f" at {Path(tb[-1].filename).name}:{tb[-1].lineno}"
        own = [f for f in tb if file is not None and Path(f.filename).resolve() == file]
        if own and own[-1] is not tb[-1]:
            where = f" at {file}:{own[-1].lineno} (raised in {Path(tb[-1].filename).name}:{tb[-1].lineno})"
        elif own:
            where = f" at {file}:{own[-1].lineno}"
    return f"{type(exc).__name__}: {exc}{where}"


def _report(label: str, exc: BaseException) -> None:
    IMPORT_FAILURES[label] = _describe(exc)
    print(f"Warning: trainer file {label} failed to import ({IMPORT_FAILURES[label]}); its trainers are "
          f"unavailable, the other methods work. Fix the file or move it away.", file=sys.stderr)


def import_module(name: str, label: str) -> None:
    """Import ``name`` (a module of this package); a failure is reported, not raised."""
    try:
        importlib.import_module(name)
    except Exception as exc:  # any error inside a method file must not take the other methods down
        _report(label, exc)


# ------------------------------------------------------------------------------ helper modules: trainers.<name>
class _ExistingModule(importlib.abc.Loader):
    """Loader of a file already imported under another name (a drop-in folder's file imported by a sibling)."""

    def __init__(self, module):
        self.module = module

    def create_module(self, spec):
        return self.module

    def exec_module(self, module):
        pass


class _SiblingFinder(importlib.abc.MetaPathFinder):
    """``trainers.<name>`` from the folders of drop-in files; consulted after the normal finders, so the package's
    own modules always win."""

    def find_spec(self, fullname, path=None, target=None):
        package, _, name = fullname.partition(".")
        if package != PACKAGE.name or not name or "." in name:
            return None
        if (PACKAGE / f"{name}.py").exists() or (PACKAGE / name / "__init__.py").exists():
            return None  # never shadow ours (the normal finder has answered already)
        for folder in _SIBLING_DIRS:
            file, pkg = folder / f"{name}.py", folder / name / "__init__.py"
            if file.is_file():
                key = str(file.resolve())
                _HELPERS.add(key)
                if key in _MODULES:
                    return importlib.util.spec_from_loader(fullname, _ExistingModule(_MODULES[key]))
                return importlib.util.spec_from_file_location(fullname, file)
            if pkg.is_file():
                _HELPERS.add(str(pkg.parent.resolve()))
                return importlib.util.spec_from_file_location(fullname, pkg,
                                                              submodule_search_locations=[str(pkg.parent)])
        return None


_FINDER = _SiblingFinder()
if not any(isinstance(f, _SiblingFinder) for f in sys.meta_path):
    sys.meta_path.append(_FINDER)


def _add_sibling_dir(folder: Path) -> None:
    folder = folder.resolve()  # the latest first: a file being imported finds its own helpers first
    if folder != PACKAGE:
        if folder in _SIBLING_DIRS:
            _SIBLING_DIRS.remove(folder)
        _SIBLING_DIRS.insert(0, folder)


# ----------------------------------------------------------------------------------------------- registration
@contextlib.contextmanager
def _registering(file: Path, strict: bool):
    """While ``file`` runs: a name already registered is taken over (``strict``: --trainer-file) or recorded as a
    clash (a drop-in folder), instead of the registry's bare KeyError, which would leave the file half imported."""
    register = TRAINER_REGISTRY._do_register

    def guarded(name, obj, force=False):
        if force or name not in TRAINER_REGISTRY:
            return register(name, obj, force=force)
        existing = TRAINER_REGISTRY.get(name)
        if existing is obj:
            return None
        if not strict:
            _CLASHING.setdefault(str(file), {})[name] = obj
            return None
        if name in _OVERRIDES and _OVERRIDES[name][0] != str(file):
            raise _TwoFiles(f"trainer {name} is registered by two --trainer-file files, {display_path(file)} and "
                            f"{display_path(_OVERRIDES[name][0])}; pass one of them, or rename one class")
        _take_over(name, obj, file, existing)
        return None

    TRAINER_REGISTRY._do_register = guarded
    try:
        yield
    finally:
        del TRAINER_REGISTRY._do_register


def _take_over(name: str, obj, file: Path, existing) -> None:
    """--trainer-file's class takes a registered name for this run (the other definition set aside)."""
    shadowed = _OVERRIDES.get(name, (None, existing))[1]
    _OVERRIDES[name] = (str(file), shadowed)
    TRAINER_REGISTRY._obj_map[name] = obj
    CLASHES.pop(name, None)
    print(f"Note: --trainer-file {display_path(file)} registers {name}, the name of {_where(shadowed)}: in this run "
          f"{name} is the file's class (the run record names the file and its hash)")


def _record_clashes(file: Path) -> None:
    for name, obj in _CLASHING.get(str(file), {}).items():
        if name in _OVERRIDES:
            continue
        first = _where(TRAINER_REGISTRY.get(name))
        CLASHES[name] = (
            f"trainer {name} is defined twice: by {first} and by {display_path(file)}, so --trainer {name} would "
            f"silently run one of them. Rename the class in {display_path(file)} (e.g. {name}Mine), or run that "
            f"file under the name {name} for one run with --trainer-file {display_path(file)}")
        print(f"Warning: {display_path(file)} registers {name}, already defined by {first}; --trainer {name} is "
              f"refused until one is renamed (or the file is given with --trainer-file); the other methods work",
              file=sys.stderr)


class _TwoFiles(UserError):
    """Two --trainer-file files register one name."""


def _registered_by(before: set[str], file: Path) -> list[str]:
    names = [n for n in TRAINER_REGISTRY.registered_names() if n not in before]
    names += [n for n, (f, _) in _OVERRIDES.items() if f == str(file) and n not in names]
    return names


def import_file(path: str | os.PathLike, strict: bool = True) -> list[str]:
    """Import a trainer file by path (once); returns the trainer names it registered.

    ``strict`` (``--trainer-file``): a missing file, an import error or a file that registers no trainer raise one
    UserError naming the file, and a name it registers that is already taken becomes the file's for this run;
    otherwise failures are reported on stderr (see the module docstring), a taken name is a clash, and [] is
    returned.
    """
    file = Path(path).expanduser().resolve()
    key = str(file)
    if key in _LOADED:
        if strict:
            for name, obj in _CLASHING.pop(key, {}).items():  # a drop-in file now asked for: its names win
                _take_over(name, obj, file, TRAINER_REGISTRY.get(name))
                _LOADED[key].append(name)
            if key in _FAILED:
                raise UserError(_FAILED[key])
            if not _LOADED[key]:
                raise UserError(f"trainer file {file} registers no trainer; decorate its trainer class with "
                                f"@TRAINER_REGISTRY.register() (from dassl.engine import TRAINER_REGISTRY)")
        return _LOADED[key]
    try:
        if not file.is_file() or file.suffix != ".py":
            raise UserError(f"trainer file {path} {'is not a .py file' if file.is_file() else 'does not exist'}; "
                            f"pass the path of a Python file that registers a trainer with "
                            f"@TRAINER_REGISTRY.register()")
        _add_sibling_dir(file.parent)
        _warn_taken_helpers(file)
        before = set(TRAINER_REGISTRY.registered_names())
        _exec_file(file, strict)
        names = _registered_by(before, file)
        if not strict:
            _record_clashes(file)
        if not names and not _CLASHING.get(key):
            raise _NoTrainer(f"trainer file {file} registers no trainer; decorate its trainer class with "
                             f"@TRAINER_REGISTRY.register() (from dassl.engine import TRAINER_REGISTRY)")
    except UserError as exc:
        if strict:
            raise
        _LOADED[key] = []  # reported once per process
        _FAILED[key] = str(exc)
        if isinstance(exc, _NoTrainer):
            raise
        IMPORT_FAILURES[str(path)] = str(exc)
        print(f"Warning: {exc}; the other methods work.", file=sys.stderr)
        return []
    _LOADED[key] = names
    return names


def _warn_taken_helpers(file: Path) -> None:
    """A module beside ``file`` whose name another drop-in folder's module already holds (one name, one module per
    process): said, since ``file`` would silently get the other one."""
    for sibling in sorted(file.parent.glob("*.py")):
        held = sys.modules.get(f"{PACKAGE.name}.{sibling.stem}")
        origin = Path(getattr(held, "__file__", None) or "").resolve() if held is not None else None
        if origin is not None and origin.is_file() and origin.parent not in (PACKAGE, file.parent):
            print(f"Warning: trainers.{sibling.stem} is already imported from {display_path(origin)}, so "
                  f"{display_path(file)} gets that module, not {display_path(sibling)} beside it (one name is one "
                  f"module per process): rename one of them", file=sys.stderr)


class _NoTrainer(UserError):
    """A drop-in file that registers nothing: an error when named, a helper module when a sibling imports it."""


def _exec_file(file: Path, strict: bool):
    key = str(file)
    if key in _MODULES:  # imported already as a sibling's helper (trainers.<name>): run it once
        return _MODULES[key]
    helper = sys.modules.get(f"{PACKAGE.name}.{file.stem}")
    if helper is not None and getattr(helper, "__file__", None) and Path(helper.__file__).resolve() == file:
        _MODULES[key] = helper
        return helper
    module_name = f"trainer_plugins.{file.stem}_{hashlib.sha1(key.encode()).hexdigest()[:8]}"
    spec = importlib.util.spec_from_file_location(module_name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    _MODULES[key] = module
    try:
        with _registering(file, strict):
            spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(module_name, None)
        _MODULES.pop(key, None)
        if isinstance(exc, _TwoFiles):
            raise
        raise UserError(f"trainer file {file} failed to import: {_describe(exc, file)}") from exc
    return module


def plugin_files(env: dict | None = None) -> list[Path]:
    """The drop-in files: ``trainers/contrib/*.py`` then the files/folders of ``$CALIB_PROMPT_TRAINERS``."""
    env = os.environ if env is None else env
    places = [CONTRIB] + [Path(p).expanduser() for p in env.get(ENV_VAR, "").split(os.pathsep) if p.strip()]
    files: list[Path] = []
    for place in places:
        if place.is_dir():
            _add_sibling_dir(place)
            files += sorted(p for p in place.glob("*.py") if not p.name.startswith("_"))
        elif place.suffix == ".py" or place.exists():
            files.append(place)
        else:
            print(f"Warning: {ENV_VAR} names {place}, which does not exist", file=sys.stderr)
    return files


def load_plugins() -> None:
    """Import every drop-in trainer file (failures reported, not raised). A file that registers nothing is a helper
    module when a sibling imported it (``trainers.<name>``); otherwise it is reported."""
    empty = []
    for file in plugin_files():
        try:
            import_file(file, strict=False)
        except _NoTrainer as exc:
            empty.append((file, exc))
    for file, exc in empty:
        if str(file.resolve()) not in _HELPERS:
            IMPORT_FAILURES[str(file)] = str(exc)
            print(f"Warning: {exc}; the other methods work.", file=sys.stderr)


# ------------------------------------------------------------------------------------- what a run depends on
def trainer_file(name: str) -> Path | None:
    """The file defining trainer ``name`` when it is a drop-in (outside the package's own ``trainers/*.py``)."""
    import inspect

    try:
        source = Path(inspect.getsourcefile(TRAINER_REGISTRY.get(name))).resolve()
    except Exception:  # not registered (train.py reports it) or defined interactively
        return None
    return None if source.parent == PACKAGE or not source.is_file() else source


def trainer_source_files(name: str) -> list[Path]:
    """The files a drop-in trainer's results depend on beyond the package: its file and every ``*.py`` beside it
    (any of them can be imported as ``trainers.<name>``), plus the helper packages it imported from there."""
    file = trainer_file(name)
    if file is None:
        return []
    files = {file} | {p.resolve() for p in file.parent.glob("*.py") if p.stem not in _package_modules()}
    for helper in _HELPERS:
        helper = Path(helper)
        if helper.is_dir() and helper.parent == file.parent:
            files |= {p.resolve() for p in helper.rglob("*.py") if "__pycache__" not in p.parts}
    return sorted(files)


def _package_modules() -> set[str]:
    return {p.stem for p in PACKAGE.glob("*.py")} | {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}


def sha256_files(files: list[Path], root: Path) -> str:
    h = hashlib.sha256()
    for f in files:
        try:
            rel = f.relative_to(root).as_posix()
        except ValueError:
            rel = f.name
        h.update(rel.encode() + b"\0" + hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def trainer_file_record(name: str) -> dict | None:
    """``results.json`` ``run.trainer_file``: the drop-in file that defined the run's trainer, its sha256, the files
    beside it that count in the run's code hash, and the definition it replaced (``--trainer-file`` with a taken
    name); None for the package's own trainers."""
    file = trainer_file(name)
    if file is None:
        return None
    others = [f for f in trainer_source_files(name) if f != file]
    replaced = _OVERRIDES.get(name)
    return {"path": display_path(file), "sha256": hashlib.sha256(file.read_bytes()).hexdigest(),
            "beside": [display_path(f) for f in others],
            "replaces": _where(replaced[1]) if replaced and replaced[0] == str(file) else None}


def config_classes() -> list:
    """Every registered trainer class plus the ones a ``--trainer-file`` set aside: their config sections stay
    (the file's class reads the same ``TRAINER.<node>`` keys as the built-in it replaces)."""
    classes = [TRAINER_REGISTRY.get(n) for n in TRAINER_REGISTRY.registered_names()]
    return [cls for _, cls in _OVERRIDES.values()] + classes


# ------------------------------------------------------------------------------------ drop-in configs
def trainer_config(trainer: str, name: str, configs: Path | None = None, error: type = UserError) -> Path:
    """The config file ``name`` of ``trainer`` (a class's ``sweep_config``, a sweep's ``CFG``):
    ``configs/trainers/<trainer>/<name>[.yaml]``, else a file of that name next to the trainer's drop-in file, else
    (a path) relative to the working directory; an absolute path as it is. Raises one ``error`` naming every path
    it tried."""
    configs = configs or REPO / "configs" / "trainers"
    plain = Path(name).expanduser()
    with_yaml = plain if plain.suffix in (".yaml", ".yml") else plain.with_name(plain.name + ".yaml")
    tried: list[Path] = []
    if plain.is_absolute():
        tried += [with_yaml, plain]
    else:
        beside = trainer_file(trainer)
        tried += [configs / trainer / with_yaml]
        if beside is not None:
            tried += [beside.parent / with_yaml, beside.parent / plain]
        if plain.suffix or len(plain.parts) > 1:  # a path as typed
            tried += [Path.cwd() / plain]
    seen: list[Path] = []
    for path in tried:
        if path not in seen:
            seen.append(path)
    for path in seen:
        if path.is_file():
            return path.resolve()
    folder = configs / trainer
    have = sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []
    known = f" (configs there: {', '.join(have)})" if have else ""
    raise error(f"config {name!r} of trainer {trainer} not found; tried {', '.join(map(str, seen))}{known}. "
                    f"Put the yaml file next to the trainer's file or in {display_path(folder)}/, or name an "
                    f"existing one (CFG=<name>, or the class's sweep_config)")


# ------------------------------------------------------------------------------- ported trainers at run time
def ported_precision(trainer) -> str | None:
    """The precision a trainer that does not declare one actually ran in: the dtype of most of its model's floating
    weights (``amp`` when they are fp32 on a GPU and its ``TRAINER.<node>.PREC`` says amp); None without a model."""
    import torch

    model = getattr(trainer, "model", None)
    if not isinstance(model, torch.nn.Module):
        return None
    counts: dict = {}
    for p in model.parameters():
        if p.is_floating_point():
            counts[p.dtype] = counts.get(p.dtype, 0) + p.numel()
    if not counts:
        return None
    dtype = max(counts, key=counts.get)
    name = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}.get(dtype, str(dtype))
    cfg = getattr(trainer, "cfg", None)  # TRAINER.<cfg_node or NAME>.PREC, the CoOp-family convention
    node = cfg.TRAINER.get(getattr(trainer, "cfg_node", None) or str(cfg.TRAINER.NAME).upper()) if cfg else None
    declared = str(node.get("PREC", "") if hasattr(node, "get") else "").lower()
    if name == "fp32" and declared == "amp" and getattr(trainer, "device", None) is not None \
            and trainer.device.type == "cuda":
        return "amp"
    return name


def build_precision(cfg):
    """The context train.py builds a trainer in: on a CPU, ``clip.build_model`` (OpenAI's fp16 build, which ported
    files keep under ``PREC fp16``) gives fp32 weights, the rule the built-in trainers follow for ``PREC fp16``
    (pure half precision needs a GPU); the record's ``precision`` is then what ran (:func:`ported_precision`)."""
    import torch

    from clip.model import build_precision as clip_build_precision

    if torch.cuda.is_available() and cfg.USE_CUDA:
        return contextlib.nullcontext()
    return clip_build_precision("fp32", "Note: clip.build_model: fp32 weights on the CPU (OpenAI's fp16 build, PREC "
                                        "fp16, is pure half precision, which needs a GPU: the built-in trainers' rule)")


def _last_saved_epoch(trainer, directory: str) -> int | None:
    """The epoch the ``checkpoint`` pointer files of ``directory`` name (the last one saved), None when absent."""
    import re

    epochs = set()
    for name in trainer.get_model_names():
        pointer = Path(directory) / name / "checkpoint"
        if pointer.is_file():
            m = re.search(r"model\.pth\.tar-(\d+)\s*$", pointer.read_text().splitlines()[0] if
                          pointer.read_text().strip() else "")
            if m:
                epochs.add(int(m.group(1)))
    return epochs.pop() if len(epochs) == 1 else None


def load_model(trainer, directory: str, epoch: int | None) -> None:
    """``trainer.load_model(directory, epoch)``. Without --load-epoch, a ported ``load_model`` that looks for
    ``model-best.pth.tar`` (CoOp's), which a run writes only with validation, loads what a built-in trainer loads
    instead: the last checkpoint saved (with a note); with no checkpoint at all it is one message, not that file's
    traceback."""
    try:
        trainer.load_model(directory, epoch=epoch)
        _note_loaded(trainer, directory, epoch)
        return
    except FileNotFoundError as exc:
        if epoch is not None or "model-best.pth.tar" not in str(exc) or isinstance(exc, UserError):
            raise
    last = _last_saved_epoch(trainer, directory)
    where = _where(type(trainer))
    if last is None:
        saved = sorted(p.name for p in Path(directory).glob("*/model.pth.tar-*"))
        what = (f"its checkpoints ({', '.join(saved[:6])}) name no one last epoch: pass --load-epoch N" if saved else
                "there is no checkpoint there: pass the --model-dir of a finished training run (and --load-epoch N "
                "of an epoch it saved)")
        raise UserError(f"{where}'s load_model looks for model-best.pth.tar in --model-dir {directory}, which a run "
                        f"writes only with validation (TEST.FINAL_MODEL best_val), and {what}")
    print(f"Note: {where}'s load_model looks for model-best.pth.tar, which a run writes only with validation "
          f"(TEST.FINAL_MODEL best_val); loading the last checkpoint saved, epoch {last}, as the built-in trainers "
          f"do (--load-epoch {last})")
    trainer.load_model(directory, epoch=last)
    _note_loaded(trainer, directory, last)


def _note_loaded(trainer, directory: str, epoch: int | None) -> None:
    """The record's ``model_dir`` / ``load_epoch`` for a ported ``load_model`` that does not set them."""
    if directory and getattr(trainer, "_loaded_from", None) is None:
        trainer._loaded_from, trainer._loaded_epoch = os.path.abspath(directory), epoch
