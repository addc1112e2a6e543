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
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
import traceback
from pathlib import Path

from common.errors import UserError
from dassl.engine.build import IMPORT_FAILURES, TRAINER_REGISTRY

ENV_VAR = "CALIB_PROMPT_TRAINERS"
CONTRIB = Path(__file__).resolve().parent / "contrib"
_LOADED: dict[str, list[str]] = {}  # resolved file -> trainer names it registered


def _describe(exc: BaseException) -> str:
    where = ""
    tb = traceback.extract_tb(exc.__traceback__)
    if tb:
        where = f" at {Path(tb[-1].filename).name}:{tb[-1].lineno}"
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


def import_file(path: str | os.PathLike, strict: bool = True) -> list[str]:
    """Import a trainer file by path (once); returns the trainer names it registered.

    ``strict``: a missing file, an import error or a file that registers no trainer raise one UserError naming the
    file; otherwise they are reported on stderr (see the module docstring) and [] is returned.
    """
    file = Path(path).expanduser().resolve()
    key = str(file)
    if key in _LOADED:
        return _LOADED[key]
    try:
        if not file.is_file() or file.suffix != ".py":
            raise UserError(f"trainer file {path} {'is not a .py file' if file.is_file() else 'does not exist'}; "
                            f"pass the path of a Python file that registers a trainer with "
                            f"@TRAINER_REGISTRY.register()")
        before = set(TRAINER_REGISTRY.registered_names())
        module_name = f"trainer_plugins.{file.stem}_{hashlib.sha1(key.encode()).hexdigest()[:8]}"
        spec = importlib.util.spec_from_file_location(module_name, file)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(module_name, None)
            raise UserError(f"trainer file {file} failed to import: {_describe(exc)}") from exc
        names = [n for n in TRAINER_REGISTRY.registered_names() if n not in before]
        if not names:
            raise UserError(f"trainer file {file} registers no trainer; decorate its trainer class with "
                            f"@TRAINER_REGISTRY.register() (from dassl.engine import TRAINER_REGISTRY)")
    except UserError as exc:
        if strict:
            raise
        IMPORT_FAILURES[str(path)] = str(exc)
        print(f"Warning: {exc}; the other methods work.", file=sys.stderr)
        _LOADED[key] = []  # reported once per process
        return []
    _LOADED[key] = names
    return names


def plugin_files(env: dict | None = None) -> list[Path]:
    """The drop-in files: ``trainers/contrib/*.py`` then the files/folders of ``$CALIB_PROMPT_TRAINERS``."""
    env = os.environ if env is None else env
    places = [CONTRIB] + [Path(p).expanduser() for p in env.get(ENV_VAR, "").split(os.pathsep) if p.strip()]
    files: list[Path] = []
    for place in places:
        if place.is_dir():
            files += sorted(p for p in place.glob("*.py") if not p.name.startswith("_"))
        elif place.suffix == ".py" or place.exists():
            files.append(place)
        else:
            print(f"Warning: {ENV_VAR} names {place}, which does not exist", file=sys.stderr)
    return files


def load_plugins() -> None:
    """Import every drop-in trainer file (failures reported, not raised)."""
    for file in plugin_files():
        import_file(file, strict=False)
