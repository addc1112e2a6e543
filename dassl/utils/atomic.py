"""Atomic writes: write to a temp file in the target folder, fsync, then os.replace.

A killed run therefore never leaves a half-written file under the final name, and an exception
while writing leaves no file at all (any older file of that name stays untouched).
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from typing import IO, Any, Iterator


def _default_mode() -> int:
    """Permissions a plain open() would give now (mkstemp would give 0600): read at every write, so a umask the
    user or a test sets later is honoured."""
    umask = os.umask(0o077)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", encoding: str | None = None) -> Iterator[IO[Any]]:
    """Open a temp file next to ``path``; on success it replaces ``path`` atomically.

    The parent folder is created if missing. ``mode`` must be a write mode ("w"/"wb").
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open supports modes 'w' and 'wb', not {mode!r}")
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, encoding=encoding if "b" not in mode else None) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _default_mode())
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


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    import torch

    with atomic_open(path, "wb") as f:
        torch.save(obj, f)


def atomic_savez(path: str | os.PathLike, compressed: bool = False, **arrays: Any) -> None:
    """np.savez(_compressed) to exactly ``path`` (no ".npz" is appended)."""
    import numpy as np

    save = np.savez_compressed if compressed else np.savez
    with atomic_open(path, "wb") as f:
        save(f, **arrays)
