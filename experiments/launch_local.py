"""The local backend of tools/launch.py: a work queue with one train.py process per GPU slot."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import TextIO

from common.logtail import tail
from experiments.commands import Job, blocked_reason, job_status
from experiments.records import result_line


def run_local(jobs: list[Job], gpus: list[str], poll: float = 0.2, out: TextIO | None = None) -> int:
    """Run the unfinished jobs, one per slot of ``gpus``, respecting dependencies; 0 when all complete."""
    out = out or sys.stdout
    def say(msg: str) -> None:
        print(msg, file=out, flush=True)

    from experiments import children
    from experiments.run_status import Checker

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
                        say(f"  done ({took}, lockstep) {m.label}: {result_line(m.output_dir)}")
                    else:
                        del state[m.index]
                        todo.insert(0, m)
                        say(f"  not finished by its lockstep group (exit code {rc}): {m.label}; running it alone")
                if mates:
                    continue
                if rc == 0 and job.done:
                    state[job.index] = "done"
                    say(f"  done ({took}) {job.label}: {result_line(job.output_dir)}")
                else:
                    state[job.index] = "failed"
                    failures += 1
                    why = f"exit code {rc}" if rc else "no results.json written"
                    say(f"  FAILED ({why}, {took}) {job.label}; last lines of {job.output_dir / 'console.log'}:\n"
                        f"{tail(job.output_dir / 'console.log')}\n    command: {job.line}")
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


