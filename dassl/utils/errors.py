"""Errors a user can cause, and the one helper that names the closest valid choice."""
from __future__ import annotations

import difflib
from typing import Iterable


class UserError(Exception):
    """A mistake the user can fix (bad name, missing file, bad config value).

    train.py prints the message and exits 1 without a traceback, so the message must name
    the file/key and the fix.
    """


class UnknownNameError(UserError, KeyError, ValueError):
    """Unknown registry/choice name. Also a KeyError and a ValueError: what Dassl raised in those places."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class MissingFileError(UserError, FileNotFoundError):
    """A file the run needs is not there (checkpoint, image, split file)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def closest_match(requested: str, available: Iterable[str]) -> str | None:
    """Closest name by difflib (case-insensitive), or None."""
    available = list(available)
    lowered = {a.lower(): a for a in available}
    hits = difflib.get_close_matches(str(requested).lower(), list(lowered), n=1, cutoff=0.5)
    return lowered[hits[0]] if hits else None


def check_availability(requested, available, what: str = "name") -> None:
    """Raise UnknownNameError unless ``requested`` is in ``available``.

    The message lists the known names and the closest match ("did you mean").
    """
    available = list(available)
    if requested in available:
        return
    msg = f'Unknown {what} "{requested}".'
    close = closest_match(requested, available)
    if close is not None:
        msg += f' Did you mean "{close}"?'
    known = ", ".join(sorted(map(str, available))) if available else "(none registered)"
    msg += f" Known: {known}."
    raise UnknownNameError(msg)
