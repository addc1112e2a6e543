"""One writer per run folder: an exclusive ``flock`` on ``<output-dir>/.lock``, which holds the owner's pid.

train.py takes it before it reads or writes anything else in its ``--output-dir`` and holds it until the process
ends (the kernel drops a flock when its process dies, however it dies). A second process gets one
:class:`RunLockedError` naming the holder's pid. A lock file left by a process that is gone is not held by anyone:
it is taken over, with a note naming the dead pid. The lock file stays in the folder (removing it would race with a
process that has just opened it). flock works on local file systems; on NFS it depends on the mount (``local_lock``).
"""
from __future__ import annotations

import os

from common.errors import UserError

LOCK_FILE = ".lock"


class RunLockedError(UserError):
    """Another live process holds the run folder."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """The held lock of one folder (keep a reference for as long as the run writes there)."""

    def __init__(self, folder: str, fd: int):
        self.folder, self.fd = folder, fd

    def release(self) -> None:
        if self.fd is not None:
            import fcntl

            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def acquire(folder: str) -> RunLock | None:
    """Lock ``folder`` (which must exist) for this process; raises RunLockedError when another process holds it.
    Returns None where flock is unavailable (not POSIX): the run goes on unlocked."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return None
    path = os.path.join(folder, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = _read_pid(fd)
        os.close(fd)
        who = f"pid {holder}" if holder else "another process"
        raise RunLockedError(f"{folder} is in use by another run ({who}); wait for it to end, stop it "
                             f"(kill {holder or '<pid>'}), or pass another --output-dir") from None
    old = _read_pid(fd)
    if old and old != os.getpid():
        state = "no longer running" if not _pid_alive(old) else "which no longer holds it"
        print(f"Note: taking over the lock of {folder} from pid {old} ({state})")
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return RunLock(folder, fd)


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None
