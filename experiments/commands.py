"""A launcher's command list: one train.py command per line, parsed into :class:`Job` s with their dependencies
(a command whose ``--model-dir`` is another's ``--output-dir`` waits for it), and the one test of a finished
command for both backends (:func:`job_status`: a record of the identity the command would have now)."""
from __future__ import annotations

import os
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence, TextIO

from experiments.errors import LaunchError
from experiments.planner import Run
from experiments.records import has_record

ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


@dataclass
class Job:
    index: int
    line: str                       # the command as given
    env: dict[str, str]             # leading VAR=value words
    argv: list[str]
    output_dir: Path
    model_dir: Path | None
    deps: list[int] = field(default_factory=list)   # indices of jobs this one waits for

    def as_run(self):
        """The command as the sweep's ``Run`` (train.py's arguments, folder, kind), whose ``done`` is the one test
        of a finished run."""
        start = 2 if len(self.argv) > 1 and self.argv[1].endswith(".py") else 1   # after [python] train.py
        return Run(self.output_dir, self.argv[start:], "eval" if self.model_dir else "train", self.model_dir)

    @property
    def done(self) -> bool:
        return self.as_run().done

    @property
    def label(self) -> str:
        """``CoOp caltech101 seed 2 calib base`` from the command's flags."""
        def flag(name: str) -> str | None:
            return self.argv[self.argv.index(name) + 1] if name in self.argv[:-1] else None

        parts = [flag("--trainer") or Path(self.argv[0]).name]
        ds = flag("--dataset-config-file")
        if ds:
            parts.append(Path(ds).stem)
        if flag("--seed") is not None:
            parts.append(f"seed {flag('--seed')}")
        if "--calib" in self.argv:
            value = flag("--calib")
            parts.append("calib" if value is None or value.startswith("-") or "." in value else f"calib-{value}")
        if "DATASET.SUBSAMPLE_CLASSES" in self.argv[:-1]:
            parts.append(self.argv[self.argv.index("DATASET.SUBSAMPLE_CLASSES") + 1])
        return " ".join(parts)


def _key(path: str) -> Path:
    return Path(os.path.normpath(os.path.abspath(path)))


def parse_commands(lines: Sequence[str]) -> list[Job]:
    """Jobs of the non-empty, non-comment lines, with dependencies resolved (--model-dir -> --output-dir)."""
    jobs: list[Job] = []
    for n, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            words = shlex.split(line)
        except ValueError as e:
            raise LaunchError(f"line {n}: cannot parse ({e}): {line}") from None
        env = {}
        while words and ENV_RE.match(words[0]):
            k, v = words.pop(0).split("=", 1)
            env[k] = v
        if "--output-dir" not in words[:-1]:
            raise LaunchError(f"line {n}: no --output-dir, so finished runs cannot be recognised: {line}")
        out = words[words.index("--output-dir") + 1]
        model = words[words.index("--model-dir") + 1] if "--model-dir" in words[:-1] else None
        jobs.append(Job(len(jobs), line, env, words, _key(out), _key(model) if model else None))
    by_out: dict[Path, int] = {}
    for job in jobs:
        if job.output_dir in by_out:
            raise LaunchError(f"two commands write to {job.output_dir}:\n  {jobs[by_out[job.output_dir]].line}\n"
                              f"  {job.line}")
        by_out[job.output_dir] = job.index
    for job in jobs:
        if job.model_dir is not None and job.model_dir in by_out:
            job.deps.append(by_out[job.model_dir])
    return jobs


def blocked_reason(job: Job, jobs: list[Job]) -> str | None:
    """Why ``job`` can never run: its --model-dir is neither finished nor produced by a listed command."""
    if job.model_dir is None or job.deps or has_record(job.model_dir):
        return None
    return f"its --model-dir {job.model_dir} is not finished and no listed command trains it"


def dependency_args(job: Job, jobs: list[Job]) -> list[str] | None:
    """train.py's arguments of the run whose prompts ``job`` loads (None when it loads none)."""
    from experiments.run_status import train_args

    return next((train_args(j.argv) for j in jobs if j.index in job.deps), None)


def job_status(job: Job, jobs: list[Job], checker) -> tuple[str, list[str]]:
    """``done`` (a record of the identity the command would have now), ``stale`` (with what differs) or
    ``missing``: the one test of a finished command for both backends (experiments/run_status.py)."""
    from experiments.run_status import train_args

    args = train_args(job.argv)
    if not job.done or args is None:
        return ("done" if job.done else "missing"), []
    return checker.status(job.output_dir, args, dependency_args(job, jobs))


def chains(jobs: list[Job], log: TextIO | None = None) -> tuple[list[list[Job]], list[tuple[Job, str]]]:
    """Unfinished jobs (no record, or a stale one: :func:`job_status`) as chains (a job, then everything that
    depends on it, depth first), and the blocked."""
    from experiments.run_status import Checker

    checker = Checker()
    children: dict[int, list[Job]] = {j.index: [] for j in jobs}
    for j in jobs:
        for d in j.deps:
            children[d].append(j)
    out, blocked = [], []

    def walk(job: Job, chain: list[Job]) -> None:
        status, diffs = job_status(job, jobs, checker)
        if status == "stale":
            print(f"stale record: {job.label} (differs in: {'; '.join(diffs)}); running it again",
                  file=log or sys.stdout, flush=True)
        if status != "done":  # an evaluation of re-trained prompts is stale too (its identity names them)
            chain.append(job)
        for child in children[job.index]:
            walk(child, chain)

    for job in jobs:
        why = blocked_reason(job, jobs)
        if why is not None:
            blocked.append((job, why))
            continue
        if job.deps:
            continue  # reached from its root
        chain: list[Job] = []
        walk(job, chain)
        if chain:
            out.append(chain)
    return out, blocked


