"""Tee of stdout into OUTPUT_DIR/log.txt (Dassl's setup_logger, without its pitfalls).

Differences from Dassl (docs/engine_api.md#dassl-behaviours-we-fix, item 7): an existing log.txt is moved aside to
``log.txt-<timestamp of its last write>`` and the new run writes a fresh ``log.txt``, so log
parsers always read the latest run; the Logger never closes the real console. stderr (tqdm,
warnings) is not captured.
"""
from __future__ import annotations

import os
import os.path as osp
import sys
import time
from typing import TextIO

from .tools import mkdir_if_missing

__all__ = ["Logger", "setup_logger"]


class Logger:
    """Write to the console and to a file; flush also fsyncs the file."""

    def __init__(self, fpath: str | None = None, console: TextIO | None = None):
        self.console = console if console is not None else sys.stdout
        self.file = None
        if fpath is not None:
            mkdir_if_missing(osp.dirname(osp.abspath(fpath)))
            self.file = open(fpath, "w", buffering=1)  # line-buffered: a killed run's log keeps its last lines

    def write(self, msg: str) -> int:
        self.console.write(msg)
        if self.file is not None:
            self.file.write(msg)
        return len(msg)

    def flush(self) -> None:
        self.console.flush()
        if self.file is not None:
            self.file.flush()
            os.fsync(self.file.fileno())

    def close(self) -> None:
        """Close the log file only; the console belongs to the process."""
        if self.file is not None:
            self.file.close()
            self.file = None

    def __enter__(self) -> "Logger":
        return self

    def __exit__(self, *args) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __getattr__(self, name: str):
        # isatty, encoding, fileno, ... come from the console
        if name == "console":
            raise AttributeError(name)
        return getattr(self.console, name)


def _move_old_log(fpath: str) -> None:
    stamp = time.strftime("%Y-%m-%d-%H-%M-%S", time.localtime(osp.getmtime(fpath)))
    target, n = f"{fpath}-{stamp}", 1
    while osp.exists(target):
        target, n = f"{fpath}-{stamp}-{n}", n + 1
    os.replace(fpath, target)


def setup_logger(output: str | None = None) -> None:
    """Tee stdout into ``output`` (a .txt/.log file) or ``output/log.txt``; None does nothing."""
    if output is None:
        return
    fpath = output if output.endswith((".txt", ".log")) else osp.join(output, "log.txt")
    if osp.exists(fpath):
        _move_old_log(fpath)
    console = sys.stdout
    if isinstance(console, Logger):  # called again in one process: don't tee a tee
        console.flush()
        console.close()
        console = console.console
    sys.stdout = Logger(fpath, console=console)
