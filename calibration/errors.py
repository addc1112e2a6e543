"""The one error type for mistakes a user can cause (docs/architecture.md §5).

``dassl.utils.UserError`` when the engine is importable, so ``train.py`` prints it without a traceback;
``ValueError`` otherwise, so this package also works on its own (e.g. ``tools/calibrate.py`` on a laptop).
"""
from __future__ import annotations

import difflib
from typing import Iterable

try:  # pragma: no cover - depends on whether the engine is present
    from dassl.utils import UserError  # type: ignore[attr-defined]
except Exception:  # ImportError, or a half-built engine
    UserError = ValueError  # type: ignore[misc,assignment]


def unknown_name_message(kind: str, name: str, known: Iterable[str], where: str = "") -> str:
    """``unknown <kind> 'x' [in where]; known: a, b, c; did you mean 'y'?``"""
    known = list(known)
    close = difflib.get_close_matches(str(name).lower(), known, n=1, cutoff=0.5)
    msg = f"unknown {kind} {name!r}"
    if where:
        msg += f" in {where}"
    msg += f"; known: {', '.join(known)}"
    if close:
        msg += f"; did you mean {close[0]!r}?"
    return msg
