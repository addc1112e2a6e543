"""Which runs of a sweep train in lockstep (runs/lockstep.py): pure functions over train.py argument lists.

Two training runs can share one data stream and one frozen image pass when their command lines differ only in
what changes the loss: ``--calib [NAME]`` and ``TRAINER.CALIB.*`` options, besides their ``--output-dir``. With
``LOCKSTEP=methods`` the method may differ too (``--trainer``, ``--config-file``, ``TRAINER.*`` options) among the
text-only methods, provided the configs resolve to the same data settings (:func:`resolved_data_key`, which reads
the configs; the grouping itself reads nothing). Evaluations (``--eval-only``), image-prompted methods and
anything else stay alone. ``LOCKSTEP``: ``1`` (default: a method's variants), ``methods``, ``0`` (no grouping).
"""
from __future__ import annotations

import re
from typing import Callable, Hashable, Mapping, Sequence

#: the methods whose image tower is frozen CLIP's (the driver checks again when it builds them)
TEXT_ONLY_TRAINERS = ("coop", "cocoop", "kgcoop", "prograd", "proda")
MODES = {"1": "variants", "on": "variants", "yes": "variants", "true": "variants", "variants": "variants",
         "methods": "methods", "0": "off", "off": "off", "no": "off", "false": "off"}
#: at most this many runs share a process (each holds its own model and optimiser)
MAX_GROUP = 8
KEY_RE = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)+$")
#: flags of train.py that take no value (everything else starting with -- takes one, except --calib's optional one)
NO_VALUE_FLAGS = {"--eval-only", "--no-train", "--deterministic", "--debug"}
SOLO_FLAGS = {"--eval-only", "--no-train", "--model-dir", "--resume", "--load-epoch"}


class LockstepSettingError(ValueError):
    """A LOCKSTEP value that is not one of :data:`MODES`."""


def parse_mode(text: str | None) -> str:
    """``variants`` | ``methods`` | ``off`` from a LOCKSTEP value (empty: ``variants``)."""
    key = (text or "").strip().lower() or "1"
    if key not in MODES:
        raise LockstepSettingError(f"LOCKSTEP={text!r}: use 1 (group a method's variants, the default), methods "
                                   "(also text-only methods with the same data settings) or 0 (no grouping)")
    return MODES[key]


def _split(args: Sequence[str]) -> tuple[list[tuple[str, str | None]], list[tuple[str, str]]]:
    """(flags as (flag, value or None), KEY VALUE options) of train.py arguments."""
    flags, opts, i = [], [], 0
    args = list(args)
    while i < len(args):
        word = args[i]
        if KEY_RE.match(word) and i + 1 < len(args):
            opts.append((word, args[i + 1]))
            i += 2
        elif word == "--calib":
            has_value = i + 1 < len(args) and not args[i + 1].startswith("-") and not KEY_RE.match(args[i + 1])
            flags.append((word, args[i + 1] if has_value else None))
            i += 2 if has_value else 1
        elif word.startswith("--") and word not in NO_VALUE_FLAGS and i + 1 < len(args):
            flags.append((word, args[i + 1]))
            i += 2
        else:
            flags.append((word, None))
            i += 1
    return flags, opts


def trainer_of(args: Sequence[str]) -> str:
    flags, _ = _split(args)
    return next((v for f, v in flags if f == "--trainer" and v), "")


def lockstep_key(args: Sequence[str], mode: str = "variants") -> Hashable | None:
    """What must be equal for runs to train in lockstep; None when the run trains alone (an evaluation, an
    image-prompted or unknown method, ``mode`` off)."""
    if mode == "off":
        return None
    flags, opts = _split(args)
    names = {f for f, _ in flags}
    if names & SOLO_FLAGS or trainer_of(args).lower() not in TEXT_ONLY_TRAINERS:
        return None
    loss_only = {"--calib", "--output-dir"} | ({"--trainer", "--config-file"} if mode == "methods" else set())
    opt_prefix = "TRAINER." if mode == "methods" else "TRAINER.CALIB."
    kept_flags = tuple(sorted((f, v) for f, v in flags if f not in loss_only))
    kept_opts = tuple(sorted((k, v) for k, v in opts if not k.startswith(opt_prefix)))
    return kept_flags, kept_opts


def lockstep_groups(specs: Sequence[Sequence[str]], mode: str = "variants", max_group: int = MAX_GROUP,
                    data_key: Callable[[Sequence[str]], Hashable] | None = None) -> list[list[int]]:
    """Groups of indices into ``specs`` (train.py argument lists), in order of their first member; a run that
    trains alone is a group of one. ``data_key`` (``methods`` mode): the resolved data settings of a run (runs of
    different methods join only when it is equal); default: the command line alone."""
    groups: list[list[int]] = []
    open_groups: dict[Hashable, list[int]] = {}
    for i, args in enumerate(specs):
        key = lockstep_key(args, mode)
        if key is not None and mode == "methods" and data_key is not None:
            key = (key, data_key(args))
        if key is None:
            groups.append([i])
            continue
        group = open_groups.get(key)
        if group is None or len(group) >= max_group:
            group = open_groups[key] = []
            groups.append(group)
        group.append(i)
    return groups


def grouped(items: Sequence, args_of: Callable[[object], Sequence[str]], mode: str = "variants",
            **kw) -> list[list]:
    """:func:`lockstep_groups` over any items (sweep runs, launcher jobs) given their train.py arguments."""
    return [[items[i] for i in g] for g in lockstep_groups([args_of(x) for x in items], mode, **kw)]


def resolved_data_key(args: Sequence[str]) -> Hashable:
    """The data settings a run resolves to (train.py's config merge; nothing is built): what runs of different
    methods must share to train in lockstep (runs.lockstep.SHARED_KEYS)."""
    import contextlib
    import io

    import train
    from dassl.config import flatten_cfg
    from runs.lockstep import SHARED_KEYS

    with contextlib.redirect_stdout(io.StringIO()):
        cfg = train.setup_cfg(train.parse_args(list(args)))
    return tuple(sorted((k, repr(v)) for k, v in flatten_cfg(cfg).items() if k.startswith(SHARED_KEYS)))


def env_mode(env: Mapping[str, str]) -> str:
    return parse_mode(env.get("LOCKSTEP"))


def lockstep_args(runs_args: Sequence[Sequence[str]]) -> list[str]:
    """train.py's arguments training ``runs_args`` in lockstep (``A --and B ...``; one run: its own)."""
    from train import lockstep_argv

    return lockstep_argv(runs_args)


# ------------------------------------------------------------------------------------------ hooks of the launchers
def _data_key(mode: str):
    return resolved_data_key if mode == "methods" else None


def sweep_partners(units: Sequence, mode: str) -> dict:
    """experiments/sweep.py: training run folder -> the other training runs of its lockstep group (its ``Unit``s' runs
    that load no prompts)."""
    training = [r for u in units for r in u.runs if r.depends is None]
    partners = {}
    for group in grouped(training, lambda r: r.args, mode, data_key=_data_key(mode)):
        for run in group:
            partners[run.out_dir] = [r for r in group if r is not run]
    return partners


def merge_chains(chains: Sequence[Sequence], args_of: Callable[[object], Sequence[str]], mode: str) -> list[list]:
    """experiments/launch_slurm.py: chains (a training job, then its evaluations) whose training jobs group together
    become one array task: the group's training jobs first (run_chain trains them in one lockstep process), then
    every member's evaluations."""
    heads = [c[0] for c in chains]
    by_head = {id(c[0]): c for c in chains}
    out = []
    for group in grouped(heads, args_of, mode, data_key=_data_key(mode)):
        members = [by_head[id(h)] for h in group]
        out.append([c[0] for c in members] + [j for c in members for j in c[1:]])
    return out


def job_mates(jobs: Sequence, mode: str) -> dict[int, list]:
    """experiments/launch_local.py: job index -> the other jobs of its lockstep group, over its unfinished jobs (a
    ``Job``'s train.py arguments: ``job.as_run().args``)."""
    mates = {}
    for group in grouped(list(jobs), lambda j: j.as_run().args, mode, data_key=_data_key(mode)):
        if len(group) > 1:
            for job in group:
                mates[job.index] = [j for j in group if j is not job]
    return mates


def job_argv(job, mates: Sequence) -> list[str]:
    """The command line of ``job`` training in lockstep with ``mates`` (its interpreter and script, then the
    runs' train.py arguments joined)."""
    head = job.argv[:len(job.argv) - len(job.as_run().args)]
    return [*head, *lockstep_args([job.as_run().args, *(m.as_run().args for m in mates)])]
