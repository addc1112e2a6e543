"""The SLURM backend of tools/launch.py, on submitit (https://github.com/facebookincubator/submitit).

One job array; each array task runs a *chain*: a training run, then the evaluations of its prompts, in order,
stopping at the first failure (a failed training run blocks only its own evaluations; no ``--dependency`` between
jobs). Finished runs (a record of the run's current identity: ``experiments.commands.job_status``) are left out when
submitting and skipped again when a task starts, so re-submitting the same commands after an interruption runs
only what is missing, and a stale record (other code, config, data or libraries) is named and run again.

After submitting, the launcher follows the array until every task has ended: one line when a task starts, one per
finished run (accuracy, ECE), and for a failed or killed task its state and the tail of its log (which holds the
tail of the failed run's ``console.log``). Ctrl-C cancels the array (``scancel``). ``--detach`` submits and
returns; ``--cancel`` cancels the last submission recorded in ``--log-dir``.

Job states come from ``squeue`` (``-t all``), which works on clusters without accounting (``sacct``); a task
that left the queue without a submitit result file was cancelled, timed out or killed.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Sequence, TextIO

from experiments import children
from experiments.commands import chains, dependency_args
from common.logtail import tail
from experiments.records import result_line

REPO = Path(__file__).resolve().parents[1]
RECORD = "last_submission.json"
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL",
         "DEADLINE", "SPECIAL_EXIT", "REVOKED"}


class SlurmUsageError(Exception):
    """A bad option or a missing tool: one line, exit 2 (tools/launch.py turns it into its own usage error)."""


class ChainFailed(RuntimeError):
    """A run of a chain did not complete; the job's log holds the report (the run's console.log tail)."""


# ------------------------------------------------------------------------------------------- inside the job
def run_chain(workdir: str, runs: list[dict[str, Any]]) -> list[str]:
    """Run a chain's unfinished runs in order (executed on the cluster by submitit); raises at the first failure,
    so that SLURM records the task as FAILED. Returns the finished runs' folders."""
    from experiments.planner import Run
    from experiments.run_status import Checker

    os.chdir(workdir)
    checker = Checker()
    done = []
    _train_in_lockstep(runs, checker)  # a merged task's training runs first, in one process (LOCKSTEP)
    for r in runs:
        run = Run(Path(r["out"]), list(r["args"]), r["kind"], Path(r["depends"]) if r["depends"] else None)
        if run.done and checker.status(run.out_dir, run.args, r.get("dep_args"))[0] == "done":
            print(f"skip (finished): {r['label']}  {run.out_dir}", flush=True)
            done.append(str(run.out_dir))
            continue
        run.out_dir.mkdir(parents=True, exist_ok=True)
        argv = list(r["argv"])
        if argv[0] in ("python", "python3"):
            argv[0] = sys.executable
        log = run.out_dir / "console.log"
        print(f"run: {r['label']}: {r['line']}", flush=True)
        t0 = time.time()
        rc = children.run_to_file(argv, log, env=dict(os.environ, **r["env"]))
        if rc != 0 or not run.done:
            why = (f"killed by {_signal_name(-rc)}: cancelled, timed out or out of memory?" if rc < 0 else
                   f"exit code {rc}" if rc else "no results.json written")
            print(f"FAILED ({why}, {time.time() - t0:.0f}s) {r['label']}; last lines of {log}:\n{tail(log, 30)}\n"
                  f"    command: {r['line']}", flush=True)
            raise ChainFailed(f"{r['label']}: {why}; see {log}")
        print(f"done ({time.time() - t0:.0f}s) {r['label']}: {result_line(run.out_dir)}", flush=True)
        done.append(str(run.out_dir))
    return done


def _train_in_lockstep(runs: list[dict[str, Any]], checker) -> None:
    """The unfinished training runs of a task that holds several (chains merged by
    experiments.lockstep_groups.merge_chains) train in one lockstep process, logged to the first one's
    console.log; a member it did not finish is run alone by run_chain's loop afterwards."""
    from experiments.lockstep_groups import lockstep_args
    from experiments.planner import Run

    todo = [r for r in runs if not r["depends"] and not (
        Run(Path(r["out"]), list(r["args"]), r["kind"]).done
        and checker.status(r["out"], r["args"])[0] == "done")]
    if len(todo) < 2 or any("--eval-only" in r["args"] for r in todo):
        return
    for r in todo:
        Path(r["out"]).mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, str(REPO / "train.py"), *lockstep_args([r["args"] for r in todo])]
    log = Path(todo[0]["out"]) / "console.log"
    print(f"run in lockstep: {', '.join(r['label'] for r in todo)}", flush=True)
    t0 = time.time()
    rc = children.run_to_file(argv, log, env=dict(os.environ, **todo[0]["env"]))
    print(f"lockstep group ended (exit {rc}, {time.time() - t0:.0f}s); log {log}", flush=True)


def _signal_name(num: int) -> str:
    import signal

    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


# ------------------------------------------------------------------------------------------- on the login node
def parse_time(text: str | None) -> int | None:
    """SLURM time (``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH[:MM[:SS]]``) -> whole minutes (rounded up)."""
    if not text:
        return None
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if not m:
        raise ValueError(f"--time {text!r}: expected MM, HH:MM:SS or D-HH:MM:SS (SLURM's format), e.g. 4:00:00")
    d, a, b, c = (int(x) if x else None for x in m.groups())
    if d is not None:  # D-HH[:MM[:SS]]
        secs = d * 86400 + a * 3600 + (b or 0) * 60 + (c or 0)
    elif c is not None:
        secs = a * 3600 + b * 60 + c
    elif b is not None:  # MM:SS
        secs = a * 60 + b
    else:
        secs = a * 60
    return max(1, -(-secs // 60))


def sbatch_extra(words: Sequence[str] | None) -> dict[str, Any]:
    """``--qos=normal`` / ``--exclusive`` (``--sbatch-arg``) -> submitit's additional_parameters."""
    extra: dict[str, Any] = {}
    for w in words or []:
        key, _, value = w.lstrip("-").partition("=")
        if not key:
            raise ValueError(f"--sbatch-arg {w!r}: expected --name=value, e.g. --sbatch-arg=--qos=normal")
        extra[key.replace("-", "_")] = value if value else True
    return extra


def payload(job, jobs) -> dict[str, Any]:
    """What run_chain needs of a launch.Job (plain data, pickled into the job); ``jobs``: all of them (the
    dependency's arguments, for the run identity)."""

    run = job.as_run()
    return {"argv": list(job.argv), "env": dict(job.env), "out": str(job.output_dir), "args": list(run.args),
            "kind": run.kind, "depends": str(run.depends) if run.depends else None, "label": job.label,
            "line": job.line, "dep_args": dependency_args(job, jobs)}


def make_executor(args: argparse.Namespace, n_tasks: int):
    import submitit

    setup = [f"export PYTHONPATH={shlex.quote(str(REPO))}${{PYTHONPATH:+:$PYTHONPATH}}"]
    if args.setup:
        setup.append(args.setup)
    params: dict[str, Any] = {
        "job_name": args.job_name, "nodes": 1, "ntasks_per_node": 1, "cpus_per_task": args.cpus_per_task,
        "stderr_to_stdout": True, "setup": setup,
        "array_parallelism": args.max_parallel or n_tasks,
    }
    if args.gpus_per_task:
        params["gpus_per_task"] = args.gpus_per_task
    minutes = parse_time(args.time)
    if minutes is not None:
        params["time"] = minutes
    for name in ("partition", "mem", "account"):
        if getattr(args, name):
            params[name] = getattr(args, name)
    extra = sbatch_extra(args.sbatch_arg)
    if extra:
        params["additional_parameters"] = extra
    ex = submitit.SlurmExecutor(folder=Path(args.log_dir) / "%j", max_num_timeout=0)
    ex.update_parameters(**params)
    return ex


def squeue_states(array_id: str) -> dict[str, str] | None:
    """``{"123_0": "RUNNING", ...}`` of the array's tasks still known to slurmctld; None when squeue failed."""
    res = children.capture(["squeue", "-h", "-r", "-t", "all", "-j", array_id, "-o", "%i|%T"])
    if res.returncode != 0:
        if "Invalid job id" in res.stderr:
            return {}   # purged: every task ended long ago
        return None
    states = {}
    for line in res.stdout.splitlines():
        if "|" in line:
            jid, state = line.strip().split("|", 1)
            states[jid] = state.split()[0]
    return states


def scancel(ids: Sequence[str]) -> str:
    res = children.capture(["scancel", *ids])
    return "" if res.returncode == 0 else (res.stderr or res.stdout).strip()


def failure_report(log: Path) -> str:
    """The failed run's report that run_chain printed into the task's log (without submitit's traceback of the
    ChainFailed it raised), else the log's tail (an error outside the runs: its traceback)."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return f"    ({log} missing)"
    start = max((i for i, s in enumerate(lines) if s.startswith("FAILED (")), default=None)
    if start is None:
        return tail(log, 40)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("submitit ")), len(lines))
    return "\n".join("    " + s for s in lines[start:end])


def follow(jobs: list, chain_list: list[list], out: TextIO, poll: float = 2.0) -> int:
    """Report the array's tasks until all have ended; 0 when every chain completed, 1 otherwise."""
    array_id = jobs[0].job_id.split("_")[0]
    say = lambda msg: print(msg, file=out, flush=True)  # noqa: E731
    open_tasks = dict(enumerate(jobs))
    started: set[int] = set()
    gone_since: dict[int, float] = {}
    failed = 0
    n = len(jobs)
    while open_tasks:
        states = squeue_states(array_id)
        for i, job in list(open_tasks.items()):
            state = (states or {}).get(job.job_id)
            label = chain_list[i][0].label
            if state == "RUNNING" and i not in started:
                started.add(i)
                say(f"[{len(started)}/{n}] running: job {job.job_id}: {label}"
                    + (f" (+{len(chain_list[i]) - 1} evaluation(s))" if len(chain_list[i]) > 1 else ""))
            if job.paths.result_pickle.exists():
                del open_tasks[i]
                try:
                    job.result()
                except Exception:  # noqa: BLE001  (the job's own report is in its log)
                    failed += 1
                    say(f"  FAILED job {job.job_id}: {label} (log {job.paths.stdout}):\n"
                        f"{failure_report(job.paths.stdout)}")
                    continue
                for j in chain_list[i]:
                    say(f"  done {j.label}: {result_line(j.output_dir)}")
                continue
            if states is None or (state is not None and state not in ENDED):
                gone_since.pop(i, None)
                continue
            # ended (or purged) without a result file: give the file system a moment, then report
            first = gone_since.setdefault(i, time.time())
            if time.time() - first < 3 * poll:
                continue
            del open_tasks[i]
            failed += 1
            say(f"  FAILED job {job.job_id} ({state or 'left the queue'}, no result): {label}; last lines of "
                f"{job.paths.stdout}:\n{tail(job.paths.stdout, 40)}")
        if open_tasks:
            time.sleep(poll)
    say(f"finished: {n - failed}/{n} array task(s) complete" + (f", {failed} failed" if failed else "")
        + "; rerun the same command to retry what is missing (finished runs are skipped)" * bool(failed))
    return 1 if failed else 0


def record_path(args: argparse.Namespace) -> Path:
    return Path(args.log_dir) / RECORD


def cancel_recorded(args: argparse.Namespace, out: TextIO) -> int:
    path = record_path(args)
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        print(f"error: no submission recorded in {path} (--log-dir names the folder of the submission)",
              file=sys.stderr)
        return 2
    if shutil.which("scancel") is None:
        print("error: scancel not found on PATH; run this on the cluster's login node", file=sys.stderr)
        return 2
    err = scancel([rec["array_id"]])
    if err:
        print(f"error: scancel {rec['array_id']} failed: {err}", file=sys.stderr)
        return 1
    print(f"cancelled job array {rec['array_id']} ({rec['tasks']} task(s), submitted {rec['submitted']})", file=out)
    return 0


def run_slurm(jobs: list, args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    if args.cancel:
        return cancel_recorded(args, out)
    chain_list, blocked = chains(jobs, out)
    from experiments.lockstep_groups import LockstepSettingError, env_mode, merge_chains

    try:
        mode = env_mode(os.environ)  # LOCKSTEP: chains whose training runs group become one task
    except LockstepSettingError as e:
        raise SlurmUsageError(str(e)) from None
    chain_list = merge_chains(chain_list, lambda j: j.as_run().args, mode)
    for job, why in blocked:
        print(f"blocked: {job.label}: {why}\n    command: {job.line}", file=sys.stderr)
    if not chain_list:
        print(f"nothing to submit: {len(jobs) - len(blocked)} command(s) finished already"
              + (f", {len(blocked)} blocked" if blocked else ""), file=out)
        return 1 if blocked else 0
    n_runs = sum(len(c) for c in chain_list)
    try:
        minutes = parse_time(args.time)
        sbatch_extra(args.sbatch_arg)
    except ValueError as e:
        raise SlurmUsageError(str(e)) from None
    if args.print:
        print(f"# {len(chain_list)} array task(s), {n_runs} run(s); per task: --cpus-per-task={args.cpus_per_task}"
              f" --gpus-per-task={args.gpus_per_task}" + (f" --time={minutes}" if minutes else "")
              + "".join(f" --{k}={getattr(args, k)}" for k in ("partition", "mem", "account") if getattr(args, k))
              + "".join(f" {w}" for w in args.sbatch_arg or []), file=out)
        for i, chain in enumerate(chain_list):
            print(f"task {i}:", file=out)
            for job in chain:
                print(f"    {job.line}", file=out)
        return 0
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise SlurmUsageError("the SLURM backend needs submitit: pip install -r requirements.txt") from None
    if shutil.which("sbatch") is None:
        raise SlurmUsageError("sbatch not found on PATH; run this on the cluster's login node, or use --print to see "
                          "what would be submitted")
    ex = make_executor(args, len(chain_list))
    workdir = str(Path.cwd())
    try:
        submitted = ex.map_array(run_chain, [workdir] * len(chain_list),
                                 [[payload(j, jobs) for j in chain] for chain in chain_list])
    except Exception as e:  # noqa: BLE001  (submitit raises on sbatch's error, with sbatch's message)
        print(f"sbatch failed: {str(e).strip().splitlines()[-1] if str(e).strip() else e!r}", file=sys.stderr)
        return 1
    array_id = submitted[0].job_id.split("_")[0]
    Path(args.log_dir).mkdir(parents=True, exist_ok=True)
    record_path(args).write_text(json.dumps({
        "array_id": array_id, "tasks": len(submitted), "runs": n_runs, "workdir": workdir,
        "submitted": time.strftime("%Y-%m-%d %H:%M:%S"), "chains": [[j.line for j in c] for c in chain_list]},
        indent=1))
    print(f"submitted job array {array_id}: {len(submitted)} task(s), {n_runs} run(s); logs in {args.log_dir}/"
          + (f"; {len(blocked)} blocked" if blocked else ""), file=out, flush=True)
    if args.detach:
        print(f"not following it (--detach); cancel: python tools/launch.py --backend slurm --cancel "
              f"--log-dir {args.log_dir}", file=out)
        return 1 if blocked else 0
    try:
        rc = follow(submitted, chain_list, out, poll=args.poll)
    except KeyboardInterrupt:
        err = scancel([array_id])
        print(f"\ninterrupted: cancelled job array {array_id} (scancel)" + (f"; scancel said: {err}" if err else "")
              + "; rerun the same command to resume (finished runs are skipped)", file=out, flush=True)
        return 130
    return rc or (1 if blocked else 0)
