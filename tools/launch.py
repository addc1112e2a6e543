#!/usr/bin/env python
"""Run the train.py commands of a sweep in parallel: on local GPUs or as one SLURM job array.

    DRY_RUN=1 bash scripts/base2novel_all.sh coop > cmds.txt
    python tools/launch.py cmds.txt --backend local --gpus 0,1,2,3
    python tools/launch.py cmds.txt --backend slurm --partition gpu --time 4:00:00 [--print]
    DRY_RUN=1 bash scripts/cross_dataset.sh maple | python tools/launch.py - --backend local --gpus 0,1

Input: one command per line (blank lines and ``#`` comments ignored; leading ``VAR=value`` words set the
environment). Each command must name its ``--output-dir``; a command whose ``results.json`` exists there is
finished and skipped. Dependencies: a command whose ``--model-dir`` is another command's ``--output-dir`` (an
evaluation of trained prompts: test_new, cross-dataset, domain generalization) runs after that command
succeeded, and is skipped if it failed.

- ``local``: a work queue with one process per entry of ``--gpus`` (``CUDA_VISIBLE_DEVICES`` set to it;
  ``cpu`` = no GPU), in input order as far as dependencies allow. A leading ``python`` runs as this interpreter.
  Each run's output goes to ``<output-dir>/console.log``; a failure prints its tail and the command. Exit 1 when
  any run did not complete.
- ``slurm`` (``tools/launch_slurm.py``, on submitit): one job array; each array task runs a chain, i.e. a training
  run and then the evaluations that depend on it, in order, stopping the chain at the first failure (so no
  ``--dependency`` between arrays is needed and a failed training run blocks only its own evaluations). Finished
  runs are left out when submitting and skipped again when a task starts. The launcher then follows the array
  (a line per started task and finished run, a failed task's log tail) until it ends; Ctrl-C cancels it
  (``scancel``); ``--detach`` only submits; ``--cancel`` cancels the last submission recorded in ``--log-dir``;
  ``--print`` shows the array's tasks without submitting.

"Finished" is one test for both backends (:func:`job_status`): a ``results.json`` whose run identity is the one the
command would record now (tools/run_status.py); a stale record is named with what differs and run again.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence, TextIO

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


class LaunchError(Exception):
    """A malformed command list or option: one message, exit 2."""


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
        from tools.sweep import Run

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
    if job.model_dir is None or job.deps or (job.model_dir / "results.json").is_file():
        return None
    return f"its --model-dir {job.model_dir} is not finished and no listed command trains it"


def _tail(path: Path, n: int = 20) -> str:
    try:
        return "\n".join("    " + s for s in path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return f"    ({path} missing)"


def _result(job: Job) -> str:
    import json

    try:
        m = json.loads((job.output_dir / "results.json").read_text())["metrics"]
        return f"acc {m['accuracy']:.2f}  ece {m['ece']:.2f}"
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def dependency_args(job: Job, jobs: list[Job]) -> list[str] | None:
    """train.py's arguments of the run whose prompts ``job`` loads (None when it loads none)."""
    from tools.run_status import train_args

    return next((train_args(j.argv) for j in jobs if j.index in job.deps), None)


def job_status(job: Job, jobs: list[Job], checker) -> tuple[str, list[str]]:
    """``done`` (a record of the identity the command would have now), ``stale`` (with what differs) or
    ``missing``: the one test of a finished command for both backends (tools/run_status.py)."""
    from tools.run_status import train_args

    args = train_args(job.argv)
    if not job.done or args is None:
        return ("done" if job.done else "missing"), []
    return checker.status(job.output_dir, args, dependency_args(job, jobs))


# ------------------------------------------------------------------------------------------------ local
def run_local(jobs: list[Job], gpus: list[str], poll: float = 0.2, out: TextIO | None = None) -> int:
    """Run the unfinished jobs, one per slot of ``gpus``, respecting dependencies; 0 when all complete."""
    out = out or sys.stdout
    def say(msg: str) -> None:
        print(msg, file=out, flush=True)

    from tools import children
    from tools.run_status import Checker

    state: dict[int, str] = {}  # index -> done | failed | running
    todo = []
    checker = Checker()
    for job in jobs:
        status, diffs = job_status(job, jobs, checker)
        if status == "stale":
            say(f"stale record: {job.label} (differs in: {'; '.join(diffs)}); running it again")
        if status == "done":
            state[job.index] = "done"
        elif (why := blocked_reason(job, jobs)) is not None:
            state[job.index] = "failed"
            say(f"blocked: {job.label}: {why}\n    command: {job.line}")
        else:
            todo.append(job)
    total = len(todo)
    say(f"{len(jobs)} commands: {sum(v == 'done' for v in state.values())} finished already, {total} to run on "
        f"{len(gpus)} slot(s) ({', '.join(gpus)})")
    from experiments.lockstep_groups import env_mode, job_mates

    mates_of = job_mates(todo, env_mode(os.environ))  # LOCKSTEP: training jobs started as one process
    running: dict[str, tuple[Job, subprocess.Popen, float, TextIO, list[Job]]] = {}
    started = failures = 0
    try:
        while todo or running:
            for slot in gpus:  # fill free slots with the first ready jobs
                if slot in running:
                    continue
                for job in list(todo):
                    dep_states = [state.get(d) for d in job.deps]
                    if any(s == "failed" for s in dep_states):
                        todo.remove(job)
                        state[job.index] = "failed"
                        failures += 1
                        say(f"skipped: {job.label}: the run it loads prompts from failed ({job.model_dir})")
                        continue
                    if all(s == "done" for s in dep_states):
                        todo.remove(job)
                        started += 1
                        env = dict(os.environ, **job.env)
                        env["CUDA_VISIBLE_DEVICES"] = "" if slot == "cpu" else slot
                        argv = list(job.argv)
                        mates = [m for m in mates_of.pop(job.index, []) if m in todo]
                        if mates:  # one lockstep train.py for the group (experiments/lockstep_groups.py)
                            from experiments.lockstep_groups import job_argv

                            argv = job_argv(job, mates)
                            for m in mates:
                                todo.remove(m)
                                state[m.index] = "running"
                                mates_of.pop(m.index, None)
                                m.output_dir.mkdir(parents=True, exist_ok=True)
                        if argv[0] in ("python", "python3"):
                            argv[0] = sys.executable
                        job.output_dir.mkdir(parents=True, exist_ok=True)
                        log = open(job.output_dir / "console.log", "w")
                        proc = children.start(argv, stdout=log, stderr=subprocess.STDOUT,
                                              stdin=subprocess.DEVNULL, env=env)  # own process group
                        state[job.index] = "running"
                        running[slot] = (job, proc, time.time(), log, mates)
                        say(f"[{started}/{total}] start on {slot}: {job.label}"
                            + "".join(f" + {m.label}" for m in mates) + " (lockstep)" * bool(mates))
                        break
            for slot, (job, proc, t0, log, mates) in list(running.items()):
                rc = proc.poll()
                if rc is None:
                    continue
                log.close()
                del running[slot]
                took = f"{time.time() - t0:.0f}s"
                for m in [job, *mates] if mates else []:  # a member the group did not finish runs alone next
                    if job_status(m, jobs, checker)[0] == "done":
                        state[m.index] = "done"
                        say(f"  done ({took}, lockstep) {m.label}: {_result(m)}")
                    else:
                        del state[m.index]
                        todo.insert(0, m)
                        say(f"  not finished by its lockstep group (exit code {rc}): {m.label}; running it alone")
                if mates:
                    continue
                if rc == 0 and job.done:
                    state[job.index] = "done"
                    say(f"  done ({took}) {job.label}: {_result(job)}")
                else:
                    state[job.index] = "failed"
                    failures += 1
                    why = f"exit code {rc}" if rc else "no results.json written"
                    say(f"  FAILED ({why}, {took}) {job.label}; last lines of {job.output_dir / 'console.log'}:\n"
                        f"{_tail(job.output_dir / 'console.log')}\n    command: {job.line}")
            if todo or running:
                time.sleep(poll)
    except (KeyboardInterrupt, children.Terminated):
        for job, proc, _, log, _ in running.values():
            children.stop(proc)  # SIGTERM to its group, SIGKILL after a grace period
            log.close()
        say("interrupted; rerun the same command to resume (finished runs are skipped)")
        return 130
    failed = [j for j in jobs if state.get(j.index) == "failed"]
    say(f"finished: {sum(v == 'done' for v in state.values())}/{len(jobs)} complete"
        + (f", {len(failed)} not completed" if failed else ""))
    return 1 if failed else 0


# ------------------------------------------------------------------------------------------------ slurm
def chains(jobs: list[Job], log: TextIO | None = None) -> tuple[list[list[Job]], list[tuple[Job, str]]]:
    """Unfinished jobs (no record, or a stale one: :func:`job_status`) as chains (a job, then everything that
    depends on it, depth first), and the blocked."""
    from tools.run_status import Checker

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


def run_slurm(jobs: list[Job], args: argparse.Namespace, out: TextIO | None = None) -> int:
    from tools.launch_slurm import SlurmUsageError, run_slurm as submit

    try:
        return submit(jobs, args, out)
    except SlurmUsageError as e:
        raise LaunchError(str(e)) from None


# ------------------------------------------------------------------------------------------------ entry point
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tools/launch.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("commands", nargs="?", default="-", metavar="FILE",
                   help="file of commands, one per line (default '-': standard input)")
    p.add_argument("--backend", choices=("local", "slurm"), default="local")
    local = p.add_argument_group("local backend")
    local.add_argument("--gpus", default="0",
                       help="comma-separated GPU ids, one process each (default 0); 'cpu' = a slot without GPU")
    slurm = p.add_argument_group("slurm backend")
    slurm.add_argument("--partition")
    slurm.add_argument("--time", help="per array task, e.g. 4:00:00 (a task runs a training and its evaluations)")
    slurm.add_argument("--gpus-per-task", type=int, default=1, help="default 1; 0 = no GPU requested")
    slurm.add_argument("--cpus-per-task", type=int, default=8)
    slurm.add_argument("--mem", help="e.g. 32G")
    slurm.add_argument("--account")
    slurm.add_argument("--job-name", default="prompt-sweep")
    slurm.add_argument("--max-parallel", type=int, help="at most this many array tasks at once (%%N)")
    slurm.add_argument("--sbatch-arg", action="append", metavar="ARG",
                       help="extra #SBATCH line, e.g. --sbatch-arg=--qos=normal (repeatable)")
    slurm.add_argument("--setup", default=None,
                       help="shell line run before the commands (default: activate $VIRTUAL_ENV when set)")
    slurm.add_argument("--log-dir", default="slurm_logs",
                       help="submitit's folder: one sub-folder of logs per array task (default slurm_logs)")
    slurm.add_argument("--print", action="store_true", help="print the array's tasks, submit nothing")
    slurm.add_argument("--detach", action="store_true", help="submit and return, without following the jobs")
    slurm.add_argument("--cancel", action="store_true",
                       help="cancel the last submission recorded in --log-dir (scancel); no FILE needed")
    slurm.add_argument("--poll", type=float, default=5.0, help="seconds between squeue calls while following")
    return p


def main(argv: Sequence[str] | None = None, stdin: TextIO | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.cancel:
            if args.backend != "slurm":
                raise LaunchError("--cancel is for --backend slurm (the local backend ends its runs on Ctrl-C)")
            return run_slurm([], args)
        if args.commands == "-":
            lines = (stdin or sys.stdin).read().splitlines()
        else:
            try:
                lines = Path(args.commands).read_text().splitlines()
            except OSError as e:
                raise LaunchError(f"cannot read {args.commands}: {e}") from None
        from experiments.lockstep_groups import LockstepSettingError, env_mode

        try:
            env_mode(os.environ)
        except LockstepSettingError as e:
            raise LaunchError(str(e)) from None
        jobs = parse_commands(lines)
        if not jobs:
            raise LaunchError("no commands given (DRY_RUN=1 bash scripts/<sweep>.sh ... prints them)")
        if args.backend == "local":
            gpus = [g.strip() for g in args.gpus.split(",") if g.strip()]
            if not gpus:
                raise LaunchError("--gpus is empty; e.g. --gpus 0,1 or --gpus cpu")
            from tools import children

            with children.raise_on_terminate():  # SIGTERM/SIGHUP stop the children as Ctrl-C does
                return run_local(jobs, gpus)
        if args.setup is None:
            venv = os.environ.get("VIRTUAL_ENV")
            args.setup = f"source {shlex.quote(venv)}/bin/activate" if venv else ""
        return run_slurm(jobs, args)
    except LaunchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
