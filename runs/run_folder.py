"""Nothing in a run folder is touched before the new run is validated (issue 14, item 3).

train.py validates everything first (config, dataset root, backbone, the checkpoint an eval-only run loads, the
checkpoint a training run resumes) while its console output is kept in memory (:func:`hold_console`); only then
:func:`start` moves the previous record aside and opens ``log.txt`` with what was printed so far.

Moving aside: when the folder holds a finished record (``results.json``), its ``results.json``,
``results_*.json`` (post-hoc), ``predictions.npz``, ``config.yaml``, ``log.txt`` (and older ``log.txt-*``) and
``tensorboard/`` move into ``previous/<YYYYmmdd-HHMMSS>/`` (``-1``, ``-2``... when taken), as do checkpoint
folders that cannot be resumed (made by other code, libraries or data). An unfinished run keeps its files: its
checkpoints are what it resumes, and its ``log.txt`` becomes ``log.txt-<time>`` (dassl.utils.logger).
"""
from __future__ import annotations

import io
import os
import sys
import time
from pathlib import Path
from typing import Sequence

from dassl.utils import setup_logger
from dassl.utils.logger import Logger

from . import record

PREVIOUS = "previous"
RECORD_FILES = ("results.json", "predictions.npz", "config.yaml", "log.txt", "tensorboard")


class HeldConsole(Logger):
    """A tee of stdout into memory, replayed into log.txt once the run starts."""

    def __init__(self):
        console = sys.stdout.console if isinstance(sys.stdout, Logger) else sys.stdout
        super().__init__(None, console=console)
        self.buffer = io.StringIO()

    def write(self, msg: str) -> int:
        self.console.write(msg)
        self.buffer.write(msg)
        return len(msg)


def hold_console() -> HeldConsole:
    held = HeldConsole()
    sys.stdout = held
    return held


def previous_record(output_dir: str | os.PathLike, checkpoints: Sequence[str] = ()) -> list[Path]:
    """What :func:`start` would move aside."""
    folder = Path(output_dir)
    out = []
    if (folder / record.RESULTS).is_file():  # results.json first: the folder never looks finished with old files
        out += [folder / n for n in RECORD_FILES if (folder / n).exists()]
        out += sorted(p for p in folder.glob("results_*.json")) + sorted(folder.glob("log.txt-*"))
    return out + [Path(c) for c in checkpoints if Path(c).exists()]


def move_aside(output_dir: str | os.PathLike, checkpoints: Sequence[str] = ()) -> Path | None:
    """Move the previous record (and ``checkpoints``) into ``previous/<time>/``; the target, or None."""
    items = previous_record(output_dir, checkpoints)
    if not items:
        return None
    base = Path(output_dir) / PREVIOUS / time.strftime("%Y%m%d-%H%M%S")
    target, n = base, 1
    while target.exists():
        target, n = Path(f"{base}-{n}"), n + 1
    target.mkdir(parents=True)
    for item in items:
        os.replace(item, target / item.name)
    return target


def start(output_dir: str, held: HeldConsole | None, checkpoints: Sequence[str] = ()) -> Path | None:
    """The run starts: the previous record moves aside, log.txt opens with the output held so far."""
    moved = move_aside(output_dir, checkpoints)
    setup_logger(output_dir)
    if held is not None and sys.stdout.file is not None:
        sys.stdout.file.write(held.buffer.getvalue())
    if moved is not None:
        print(f"The previous record of this folder moved to {moved}")
    return moved
