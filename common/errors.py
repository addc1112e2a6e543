"""Errors a user can cause. ``train.py`` and the tools print them as one line and exit 1 (no traceback)."""
from __future__ import annotations


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
