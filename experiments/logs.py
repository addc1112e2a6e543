"""Console helpers of the sweep and the launchers: a log file's last lines, and durations as people read them."""
from __future__ import annotations

from pathlib import Path


def tail(path: Path, n: int = 20, indent: str = "    ") -> str:
    """The last ``n`` lines of ``path``, indented (a line saying it is missing when it cannot be read)."""
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return f"{indent}({path} missing)"
    return "\n".join(indent + line for line in lines[-n:])


def fmt_seconds(sec: float) -> str:
    """``42s``, ``3m05s``, ``1h02m``."""
    sec = int(round(sec))
    return f"{sec // 3600}h{sec // 60 % 60:02d}m" if sec >= 3600 else (
        f"{sec // 60}m{sec % 60:02d}s" if sec >= 60 else f"{sec}s")
