"""Atomic writes: every file the project writes goes through here.

A temp file in the target folder, fsync, then ``os.replace``: a killed process never leaves a half-written file
under the final name, and an exception while writing leaves no file at all (an older file of that name stays
untouched). The file gets the permissions a plain ``open()`` would give (``0o666 & ~umask``), not mkstemp's 0600.

Every writer takes the destination path first: ``atomic_write_json(path, obj)``, ``atomic_torch_save(path, obj)``.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import IO, Any, Iterator


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux: /proc/self/status)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (the only portable way to read it)
    os.umask(mask)
    return mask


def _check_path(path: Any, writer: str) -> str:
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(f"{writer}(path, ...) takes the destination path first, got {type(path).__name__}")
    return os.fspath(path)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", encoding: str | None = None) -> Iterator[IO[Any]]:
    """Open a temp file next to ``path``; on success it replaces ``path`` atomically.

    The parent folder is created if missing. ``mode`` must be a write mode ("w"/"wb").
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open supports modes 'w' and 'wb', not {mode!r}")
    path = _check_path(path, "atomic_open")
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, encoding=encoding if "b" not in mode else None) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    with atomic_open(path, "w", encoding=encoding) as f:
        f.write(text)


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2, end: str = "\n", **dumps: Any) -> None:
    """``json.dumps(obj, indent=indent, **dumps) + end``, written atomically."""
    atomic_write_text(_check_path(path, "atomic_write_json"), json.dumps(obj, indent=indent, **dumps) + end)


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> None:
    """``torch.save(obj)`` to exactly ``path`` (torch is imported only here)."""
    import torch

    with atomic_open(_check_path(path, "atomic_torch_save"), "wb") as f:
        torch.save(obj, f)


def atomic_savez(path: str | os.PathLike, compressed: bool = False, **arrays: Any) -> None:
    """np.savez(_compressed) to exactly ``path`` (no ".npz" is appended)."""
    import numpy as np

    save = np.savez_compressed if compressed else np.savez
    with atomic_open(_check_path(path, "atomic_savez"), "wb") as f:
        save(f, **arrays)
