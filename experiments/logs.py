"""Console helpers of the sweep and the launchers: durations as people read them (a log's tail: common.logtail)."""
from __future__ import annotations


def fmt_seconds(sec: float) -> str:
    """``42s``, ``3m05s``, ``1h02m``."""
    sec = int(round(sec))
    return f"{sec // 3600}h{sec // 60 % 60:02d}m" if sec >= 3600 else (
        f"{sec // 60}m{sec % 60:02d}s" if sec >= 60 else f"{sec}s")
