"""Every process the experiments library starts goes through here: the sweep's and the local launcher's train.py
children, which never outlive the process that started them; a SLURM task's runs; and the short cluster commands
(``squeue``, ``scancel``) the SLURM launcher asks.

- :func:`start` runs a child in its own session (process group), so a terminal's Ctrl-C reaches the parent only
  and the parent decides; on Linux the child also asks the kernel for SIGTERM when its parent dies
  (``prctl(PR_SET_PDEATHSIG)`` through ctypes), so even a SIGKILLed parent leaves no child behind to overwrite a
  run record. Elsewhere (macOS) only the signal path below applies.
- :func:`stop` ends a child's whole group: SIGTERM, then SIGKILL after ``grace`` seconds.
- :func:`raise_on_terminate` turns SIGTERM (and SIGHUP) into :class:`Terminated` in the parent, so the same
  ``except`` that handles Ctrl-C stops the children.
- :func:`run_to_file` runs a child to its end with stdout+stderr in a file (a SLURM task's runs); :func:`capture`
  runs a short command and returns its exit code and output.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from typing import Iterator, Sequence

GRACE_SECONDS = 10.0
PR_SET_PDEATHSIG = 1


class Terminated(BaseException):
    """The parent got SIGTERM/SIGHUP (a BaseException, like KeyboardInterrupt)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _die_with_parent(parent: int) -> None:  # runs in the child between fork and exec
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except Exception:
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(143)


def start(argv: Sequence[str], **popen_kwargs) -> subprocess.Popen:
    parent = os.getpid()
    preexec = (lambda: _die_with_parent(parent)) if sys.platform.startswith("linux") else None
    return subprocess.Popen(list(argv), start_new_session=True, preexec_fn=preexec, **popen_kwargs)


def run_to_file(argv: Sequence[str], path, env: dict | None = None, cwd=None) -> int:
    """Run ``argv`` to its end with stdout+stderr written to ``path``; its exit code. Unlike :func:`start`, the child
    stays in the caller's process group and session (a SLURM task's runs: the job step tracks and signals them as
    one), and it is killed if waiting is interrupted (``subprocess.run``'s rule)."""
    with open(path, "w") as f:
        return subprocess.run(list(argv), stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                              env=env, cwd=cwd).returncode


def capture(argv: Sequence[str]) -> subprocess.CompletedProcess:
    """A short command's exit code, stdout and stderr (text), e.g. ``squeue``; no process group of its own."""
    return subprocess.run(list(argv), capture_output=True, text=True, stdin=subprocess.DEVNULL)


def stop(proc: subprocess.Popen, grace: float = GRACE_SECONDS) -> int:
    """End ``proc`` and its process group; its exit code."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, None)):
        if proc.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
    with contextlib.suppress(ProcessLookupError, PermissionError):  # leftovers of the group (loader workers)
        os.killpg(proc.pid, signal.SIGKILL)
    return proc.wait()


@contextlib.contextmanager
def raise_on_terminate() -> Iterator[None]:
    def handler(signum, frame):
        raise Terminated(signum)

    saved = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        try:
            saved[sig] = signal.signal(sig, handler)
        except (ValueError, OSError):  # not the main thread
            pass
    try:
        yield
    finally:
        for sig, old in saved.items():
            signal.signal(sig, old)

