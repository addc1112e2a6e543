"""Errors a user can cause, and the one helper that names the closest valid choice."""
from __future__ import annotations

import difflib
from typing import Iterable


class UserError(Exception):
    """A mistake the user can fix (bad name, missing file, bad config value).

    train.py prints the message and exits 1 without a traceback, so the message must name
    the file/key and the fix.

    Raised in a DataLoader worker, torch re-raises it in the main process as ``type(exc)("Caught ... Original
    Traceback ...")``; the original message is recovered here and the worker's traceback kept as a note
    (shown by ``--debug``).
    """

    def __init__(self, *args):
        if args and isinstance(args[0], str) and args[0].startswith("Caught ") and _WORKER_TB in args[0]:
            marker = f"{type(self).__module__}.{type(self).__qualname__}: "
            at = args[0].rfind(marker)
            if at >= 0:
                if hasattr(self, "add_note"):  # Python >= 3.11
                    self.add_note(args[0])
                args = (args[0][at + len(marker):].rstrip("\n"),) + args[1:]
        super().__init__(*args)


_WORKER_TB = "\nOriginal Traceback (most recent call last):\n"


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
