"""The user errors of the experiments library: each is one message naming the setting and the fix (exit 2)."""
from __future__ import annotations

import difflib
from typing import Sequence


class SweepError(Exception):
    """A mistake in the sweep's arguments or environment."""


class LaunchError(Exception):
    """A malformed command list or launcher option."""


class ResultsError(Exception):
    """A results-table mistake (missing folder, unknown reference or metric)."""


def unknown(kind: str, name: str, known: Sequence[str], fix: str) -> SweepError:
    """``unknown method 'coopp'; did you mean 'coop'? Known: ...`` as a SweepError."""
    close = difflib.get_close_matches(name.lower(), list(known), n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return SweepError(f"unknown {kind} {name!r}{hint} Known: {', '.join(known)}. {fix}")
