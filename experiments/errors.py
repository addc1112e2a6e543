"""The user errors of the experiments library: each is one message naming the setting and the fix (exit 2)."""
from __future__ import annotations

from typing import Sequence

from common.suggest import unknown_name_message


class SweepError(Exception):
    """A mistake in the sweep's arguments or environment."""


class LaunchError(Exception):
    """A malformed command list or launcher option."""


class ResultsError(Exception):
    """A results-table mistake (missing folder, unknown reference or metric)."""


def unknown(kind: str, name: str, known: Sequence[str], fix: str) -> SweepError:
    """``Unknown method "coopp". Did you mean "coop"? Known: ...`` (common.suggest's one format) as a SweepError."""
    return SweepError(f"{unknown_name_message(kind, name, known, sort=False)} {fix}".rstrip())
