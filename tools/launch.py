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
- ``slurm`` (``experiments/launch_slurm.py``, on submitit): one job array; each array task runs a chain, i.e. a training
  run and then the evaluations that depend on it, in order, stopping the chain at the first failure (so no
  ``--dependency`` between arrays is needed and a failed training run blocks only its own evaluations). Finished
  runs are left out when submitting and skipped again when a task starts. The launcher then follows the array
  (a line per started task and finished run, a failed task's log tail) until it ends; Ctrl-C cancels it
  (``scancel``); ``--detach`` only submits; ``--cancel`` cancels the last submission recorded in ``--log-dir``;
  ``--print`` shows the array's tasks without submitting.

"Finished" is one test for both backends (``experiments.commands.job_status``): a ``results.json`` whose run identity is the one the
command would record now (experiments/run_status.py); a stale record is named with what differs and run again.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path
from typing import Sequence, TextIO

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.commands import parse_commands  # noqa: E402
from experiments.errors import LaunchError  # noqa: E402


def run_slurm(jobs: list, args: argparse.Namespace, out: TextIO | None = None) -> int:
    from experiments.launch_slurm import SlurmUsageError, run_slurm as submit

    try:
        return submit(jobs, args, out)
    except SlurmUsageError as e:
        raise LaunchError(str(e)) from None


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
            from experiments import children
            from experiments.launch_local import run_local

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
