"""A sweep: the units of a protocol (experiments/planner.py) run in order, unfinished or stale runs only.

:func:`plan` turns a sweep command (``base2novel METHOD DATASET`` ...) into units; :func:`execute` runs them: a run
whose ``results.json`` records the identity the run would have now (experiments/run_status.py) is complete and
skipped; a stale one is named with what differs and run again in its folder (train.py moves the old record aside
into ``previous/``), or refused with ``ON_MISMATCH=error``. Every setting of the sweep that changes a run's identity
is in its folder name (method, config, backbone, calib, shots, seed, and the user's options with THREADS), so a
changed setting never replaces a record; what is left for a rerun in place is a change of the code, the libraries,
the config file's content or the data. Children run through experiments/children.py; the running run's epoch and
ETA through experiments/progress.py.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Sequence, TextIO

from experiments.errors import SweepError, unknown
from common.logtail import tail
from experiments.logs import fmt_seconds
from experiments.planner import Planner, Run, Unit
from experiments.protocols import (BASE2NOVEL_DATASETS, CROSS_DATASET_TARGETS, DATASETS, DOMAIN_TARGETS,
                                   GENERATED_DATASETS, resolve_dataset)
from experiments.records import has_record, result_line
from experiments.settings import Settings

USAGE = {
    "base2novel": "METHOD DATASET", "base2novel_all": "METHOD", "cross_dataset": "METHOD",
    "domain_generalization": "METHOD", "few_shot": "METHOD DATASET",
}


def plan(command: str, names: Sequence[str], s: Settings) -> tuple[Planner, list[Unit], dict]:
    """The planner, the units, and the arguments of :func:`experiments.tables.report` that summarise them."""
    if command not in USAGE:
        raise unknown("sweep", command, list(USAGE), "")
    want = len(USAGE[command].split())
    if len(names) != want:
        raise SweepError(f"usage: {command} {USAGE[command]} (got {len(names)} argument(s))")
    p = Planner(names[0], s)
    trainer = p.method.trainer
    if command == "base2novel":
        dataset = resolve_dataset(names[1])
        units = p.base2novel([dataset])
        summary = dict(output_dir=str(s.output / "base2new"), methods=[trainer], datasets=[DATASETS[dataset]],
                       summary=True)
    elif command == "base2novel_all":
        units = p.base2novel(BASE2NOVEL_DATASETS)
        summary = dict(output_dir=str(s.output / "base2new"), methods=[trainer], kind="base2novel")
    elif command in ("cross_dataset", "domain_generalization"):
        targets = CROSS_DATASET_TARGETS if command == "cross_dataset" else DOMAIN_TARGETS
        units = p.transfer(targets)
        summary = dict(output_dir=str(s.output), methods=[trainer], kind="all-classes")
    else:
        dataset = resolve_dataset(names[1])
        units = p.few_shot(dataset)
        summary = dict(output_dir=str(s.output), methods=[trainer], datasets=[DATASETS[dataset]], kind="all-classes")
    return p, units, summary


def run_status(run: Run, runs: Sequence[Run], checker) -> tuple[str, list[str]]:
    """("done" | "stale" | "missing", differences) of a run's record against what the run would be now."""
    base = next((r for r in runs if r.out_dir == run.depends), None) if run.depends is not None else None
    return checker.status(run.out_dir, run.args, base.args if base is not None else None)


def dry_run(units: Sequence[Unit], s: Settings, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Print the train.py commands, one per line; runs whose record is stale are named on ``err``."""
    from experiments.run_status import Checker

    out, err = out or sys.stdout, err or sys.stderr
    checker = Checker()
    for unit in units:
        for run in unit.runs:
            print(run.command(s.python), file=out)
            state, diffs = run_status(run, unit.runs, checker) if run.done else ("missing", [])
            if state == "stale":
                print(f"# stale record in {run.out_dir}: differs in {'; '.join(diffs)}", file=err)
    return 0


def check_data(units: Sequence[Unit], s: Settings) -> str | None:
    """Create DATA for a dataset that draws itself (the toy world); the error when DATA is needed but missing."""
    configs = {Path(run.args[run.args.index("--dataset-config-file") + 1]).stem
               for unit in units for run in unit.runs if "--dataset-config-file" in run.args}
    if configs and configs <= GENERATED_DATASETS:  # the toy world draws itself into DATA on first use
        os.makedirs(s.data, exist_ok=True)
    if not any(run.done for unit in units for run in unit.runs) and not os.path.exists(s.data):
        return (f"DATA={s.data} does not exist; set DATA to the datasets' root folder (the folder of class "
                "folders for imagefolder)")
    return None


def execute(units: Sequence[Unit], s: Settings, python: str | None = None) -> int:
    """Run every unfinished or stale run in order; 0 when all runs are complete at the end, else 1 (130/143 when
    interrupted)."""
    from experiments import children
    from experiments.run_status import Checker

    python = python or sys.executable
    failed: list[Run] = []
    total = len(units)
    checker = Checker()
    from experiments.lockstep_groups import lockstep_args, sweep_partners

    partners = sweep_partners(units, s.lockstep)  # training runs that train in one process (LOCKSTEP)
    for i, unit in enumerate(units, 1):
        print(f"[{i}/{total}] {unit.label}", flush=True)
        for run in unit.runs:
            head = f"  {run.kind:<20}"
            state, diffs = run_status(run, unit.runs, checker)
            if state == "done":
                print(f"{head} done already  {result_line(run.out_dir)}", flush=True)
                continue
            if state == "stale":
                what = f"{head} stale record (differs in: {'; '.join(diffs)})"
                if s.on_mismatch == "error":
                    print(f"{what}; not run again (ON_MISMATCH=error): {run.out_dir}", flush=True)
                    failed.append(run)
                    continue
                print(f"{what}; running it again", flush=True)
            if run.depends is not None and has_record(run.depends) and any(r.out_dir == run.depends for r in failed):
                print(f"{head} skipped: its training run {run.depends} is stale or failed", flush=True)
                failed.append(run)
                continue
            if run.depends is not None and not has_record(run.depends):
                print(f"{head} skipped: its training run {run.depends} did not finish", flush=True)
                failed.append(run)
                continue
            run.out_dir.mkdir(parents=True, exist_ok=True)
            log = run.out_dir / "console.log"
            argv = run.argv(python)
            wanted = ("missing", "stale") if s.on_mismatch == "rerun" else ("missing",)
            mates = [r for r in partners.get(run.out_dir, []) if run_status(r, [], checker)[0] in wanted]
            if mates:  # one train.py for the group; the mates' units later find their runs done
                argv = argv[:2] + lockstep_args([run.args, *(m.args for m in mates)])
                print(f"{head} in lockstep with {', '.join(str(m.out_dir) for m in mates)}", flush=True)
            t0 = time.time()
            try:
                from experiments import progress  # the run's epoch and ETA on the console while it runs

                with children.raise_on_terminate():
                    rc = progress.run_logged(argv, log, head)
                    if mates and run_status(run, [], checker)[0] == "done":
                        rc = 0  # this run finished; a mate the group did not finish runs alone in its own unit
                    elif mates:  # the group did not finish this run: run it alone
                        print(f"{head} not finished by its lockstep group (exit code {rc}); last lines of {log}:\n"
                              f"{tail(log)}\n{head} running it alone", flush=True)
                        rc = progress.run_logged(run.argv(python), log, head)
            except (KeyboardInterrupt, children.Terminated) as e:
                print(f"\ninterrupted during {run.out_dir} (its train.py was stopped); rerun the same command to "
                      "resume", flush=True)
                return 143 if isinstance(e, children.Terminated) else 130
            took = fmt_seconds(time.time() - t0)
            if rc == 0 and run.done:
                print(f"{head} {result_line(run.out_dir)}  ({took})  {run.out_dir}", flush=True)
                continue
            why = f"exit code {rc}" if rc else "no results.json written"
            print(f"{head} FAILED ({why}, {took}); last lines of {log}:\n{tail(log)}\n"
                  f"    command: {run.command(s.python)}", flush=True)
            failed.append(run)
            if s.stop_on_error:
                print("stopping (STOP_ON_ERROR=1); rerun the same command to resume", flush=True)
                return 1
    if failed:
        print(f"{len(failed)} run(s) did not complete:", flush=True)
        for run in failed:
            print(f"  {run.out_dir}", flush=True)
        return 1
    return 0
