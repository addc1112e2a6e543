"""The last lines of a log file, indented, for failure reports (a failed run's console.log, a SLURM job's log)."""
from __future__ import annotations

import os


def tail(path: str | os.PathLike, n: int = 20, indent: str = "    ") -> str:
    """The last ``n`` lines of ``path``, each prefixed with ``indent``; one line saying so when it cannot be read."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return f"{indent}({path} missing)"
    return "\n".join(indent + line for line in lines[-n:])
