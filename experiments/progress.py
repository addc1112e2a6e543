"""Run progress on the sweep's console: a train.py child writes everything to its ``console.log``; while it runs,
the sweep reads the log's latest engine line (``epoch [3/20] batch [10/12] ... eta 0:00:41``) and shows

    train_base           epoch 3/20  ETA 0:00:41

On a terminal this is one line rewritten in place (cleared when the run ends); otherwise (a file, a pipe, CI) one
line per new epoch, so a log of the sweep shows progress too. A progress bar in the log (the toy world drawing
itself on first use) is shown the same way, in steps of 10%. The ETA is the engine's own estimate of the
remaining training time (mean batch time x batches left); evaluation follows it (``evaluating``).
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Sequence, TextIO

from experiments import children

EPOCH_RE = re.compile(r"epoch \[(\d+)/(\d+)\] batch \[(\d+)/(\d+)\].*\beta (\S+)")
#: a tqdm bar (e.g. the toy world drawing itself on first use): ``desc:  51%|█████     | 1461/2880 [01:17<01:00, ...``
BAR_RE = re.compile(r"([^|]*?):\s+(\d+)%\|[^|]*\|\s*\d+/\d+ \[[\d:]+<([\d:?]+)")
EVAL_MARKS = ("Finish training", "Evaluate on the")
TAIL_BYTES = 16384


def read_progress(log: Path) -> str | None:
    """``epoch 3/20  ETA 0:00:41`` / ``evaluating`` from the end of a run's console.log (None: nothing yet)."""
    try:
        with open(log, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - TAIL_BYTES))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    for line in reversed(text.splitlines()):
        m = EPOCH_RE.search(line)
        if m:
            epoch, max_epoch, _, _, eta = m.groups()
            return f"epoch {epoch}/{max_epoch}  ETA {eta}"
        if any(mark in line for mark in EVAL_MARKS):
            return "evaluating"
        m = BAR_RE.search(line)
        if m:   # in steps of 10%: one line per step on a log file
            desc, pct, eta = m.groups()
            return f"{desc.strip()} {int(pct) // 10 * 10}%  ETA {eta}"
    return None


def run_logged(argv: Sequence[str], log: Path, head: str, out: TextIO | None = None, interval: float = 1.0,
               tty: bool | None = None) -> int:
    """Run ``argv`` with stdout+stderr into ``log`` and show its progress on ``out`` after ``head``; the exit code.
    Any exception while waiting (Ctrl-C, SIGTERM) stops the child's process group before it propagates."""
    out = out or sys.stdout
    tty = out.isatty() if tty is None else tty
    shown: str | None = None
    width = 0
    with open(log, "w") as f:
        # its own process group, ended with the parent (experiments/children.py)
        proc = children.start(argv, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            while True:
                try:
                    proc.wait(timeout=interval)
                    break
                except subprocess.TimeoutExpired:
                    pass
                now = read_progress(log)
                if now is None or now == shown:
                    continue
                if tty:
                    line = f"{head} {now}"
                    out.write("\r" + line.ljust(width))
                    width = len(line)
                elif now != "evaluating" and (shown is None or now.split("  ")[0] != shown.split("  ")[0]):
                    out.write(f"{head} {now}\n")       # a new epoch (not every ETA update)
                else:
                    continue
                out.flush()
                shown = now
        except BaseException:  # Ctrl-C, SIGTERM (children.Terminated): the whole group, SIGTERM then SIGKILL
            children.stop(proc)
            raise
        finally:
            if tty and width:
                out.write("\r" + " " * width + "\r")
                out.flush()
    return proc.returncode
