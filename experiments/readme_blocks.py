"""Generated blocks in committed text files: what lies between two marker lines (``<!-- name:begin -->`` ...
``<!-- name:end -->``) is written by a tool, never by hand, and only when it changes.

Shared by the tools that regenerate README text (tools/update_readme.py, tools/toy_headroom.py,
tools/pretrain_toy_clip.py): writing nothing when nothing changed keeps a regeneration from touching files (their
mtimes, a git status).
"""
from __future__ import annotations

from pathlib import Path

from common.atomic import atomic_write_bytes
from common.errors import UserError


class BlockError(UserError):
    """The file lacks the marker lines of the block a tool writes."""


def write_if_changed(path: str | Path, data: bytes) -> bool:
    """Write ``data`` to ``path`` (atomically) unless it already holds exactly that (an unchanged file keeps its
    mtime). True when written."""
    path = Path(path)
    if path.is_file() and path.read_bytes() == data:
        return False
    atomic_write_bytes(path, data)
    return True


def _split(path: Path, begin: str, end: str) -> tuple[str, str, str]:
    head, found, rest = path.read_text().partition(begin)
    body, found_end, tail = rest.partition(end)
    if not (found and found_end):
        raise BlockError(f"{path} has no {begin} ... {end} block; add those two marker lines (in that order, each "
                         "on a line of its own) where the generated text belongs")
    return head, body, tail


def read_block(path: str | Path, begin: str, end: str) -> str:
    """The text between the markers (without the newlines next to them)."""
    return _split(Path(path), begin, end)[1].strip("\n")


def replace_block(path: str | Path, begin: str, end: str, body: str) -> bool:
    """Replace what lies between the marker lines ``begin`` and ``end`` in ``path`` with ``body``; the file is
    written only when that changes it. True when written."""
    path = Path(path)
    head, _, tail = _split(path, begin, end)
    return write_if_changed(path, f"{head}{begin}\n{body}\n{end}{tail}".encode())
