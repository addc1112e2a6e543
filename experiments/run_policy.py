"""How many torch threads a sweep's train.py runs use (config key ``TRAIN.NUM_THREADS``), from ``THREADS``.

Measured (``python tools/bench_threads.py``, docs/threads.md): the CPU-sized backbones (toy-clip, tiny-vit,
tiny-rn) gain at best a little from a second thread on an idle 2-core machine (sometimes they lose) and lose
several-fold on a machine where other CPU-bound processes run, where threads that wait for each other are
descheduled; one thread per run is the default there. Other backbones keep torch's default (one thread per core; they run on a GPU anyway).

The count is fixed by the settings, never chosen from the machine's current load: the thread count can change the
last bits of CPU results, and the README's numbers must come out the same on every rerun. For the same reason a
``THREADS`` other than the policy's count is one of the run's options (:func:`split_thread_opts`): its runs get a
folder of their own (the options id), and the records made with the policy's count stay where they are.
"""
from __future__ import annotations

#: backbones sized for a CPU, whose runs use one torch thread unless THREADS says otherwise
SMALL_BACKBONES = frozenset({"toy-clip", "tiny-vit", "tiny-rn"})


class ThreadsError(ValueError):
    pass


def parse_threads(text: str) -> int | None:
    """``THREADS``: '' (the default policy) -> None; ``auto`` / ``0`` -> 0 (torch's default); N >= 1 -> N."""
    text = text.strip().lower()
    if not text:
        return None
    if text == "auto":
        return 0
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise ThreadsError(f"THREADS={text!r}: expected a thread count (1, 2, ...), 0 or 'auto' (torch's default, "
                           "one per core), or nothing (1 for the toy and tiny backbones)")
    return n


def policy_threads(backbone: str | None) -> int:
    """The policy's thread count for runs of ``backbone``: 1 for the CPU-sized backbones, else 0 (torch's default)."""
    return 1 if backbone in SMALL_BACKBONES else 0


def thread_opts(threads: int | None, backbone: str | None) -> list[str]:
    """The ``TRAIN.NUM_THREADS n`` option of a run (before the user's OPTS, which may override it); [] = torch's
    default."""
    if threads is None:
        threads = policy_threads(backbone)
    return ["TRAIN.NUM_THREADS", str(threads)] if threads else []


def split_thread_opts(threads: int | None, backbone: str | None) -> tuple[list[str], list[str]]:
    """(the sweep's own setting, the user's option) for ``THREADS``: the policy's count is the sweep's setting; any
    other count (``THREADS=0`` on a CPU-sized backbone too) is an option of the user's, named on the command line
    even where it equals the config default, so that it is part of the run's options id."""
    if threads is None or threads == policy_threads(backbone):
        return thread_opts(None, backbone), []
    return [], ["TRAIN.NUM_THREADS", str(threads)]
