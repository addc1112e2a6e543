"""The one did-you-mean helper and its one message format.

Every unknown name a user can type (trainer, dataset, backbone, optimiser, calibration objective, config key, sweep
method, post-hoc method) is reported the same way::

    Unknown <what> "<name>" (<where>). Did you mean "<closest>"? Known: <a>, <b>, <c>.

and a message that names an unknown thing inside a longer clause ends with ``; did you mean "<closest>"?``.
"""
from __future__ import annotations

import difflib
from typing import Iterable, Mapping

from .errors import UnknownNameError

CUTOFF = 0.5  # difflib ratio below which nothing is suggested


def closest_match(name: str, choices: Iterable[str], shown: Mapping[str, str] | None = None) -> str | None:
    """The choice closest to ``name`` (case-insensitive), or None when nothing is close; ``shown`` maps a choice
    (an alias) to what to return for it."""
    lowered: dict[str, str] = {}
    for choice in choices:
        lowered.setdefault(str(choice).lower(), str(shown[choice]) if shown is not None else str(choice))
    hits = difflib.get_close_matches(str(name).lower(), list(lowered), n=1, cutoff=CUTOFF)
    return lowered[hits[0]] if hits else None


def did_you_mean(name: str, choices: Iterable[str], clause: bool = False, shown: Mapping[str, str] | None = None
                 ) -> str:
    """`` Did you mean "X"?`` (a sentence of its own), with ``clause=True`` ``; did you mean "X"?`` (the end of a
    clause), or "" when nothing is close."""
    close = closest_match(name, choices, shown)
    if close is None:
        return ""
    return f'; did you mean "{close}"?' if clause else f' Did you mean "{close}"?'


def unknown_name_message(what: str, name: str, choices: Iterable[str], where: str = "", sort: bool = True) -> str:
    """``Unknown <what> "<name>" (<where>). Did you mean "<closest>"? Known: a, b, c.``"""
    choices = [str(c) for c in choices]
    known = ", ".join(sorted(choices) if sort else choices) if choices else "(none registered)"
    place = f" ({where})" if where else ""
    return f'Unknown {what} "{name}"{place}.{did_you_mean(name, choices)} Known: {known}.'


def check_availability(requested: str, available: Iterable[str], what: str = "name") -> None:
    """Raise UnknownNameError (:func:`unknown_name_message`) unless ``requested`` is in ``available``."""
    available = list(available)
    if requested in available:
        return
    raise UnknownNameError(unknown_name_message(what, requested, available))
