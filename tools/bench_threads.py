#!/usr/bin/env python
"""Measure one sweep run's wall time under 1 vs 2 (or more) torch threads, on a quiet and on a loaded machine, and
write docs/threads.md (the measurement behind the sweep's thread policy, ``experiments/run_policy.py``).

    python tools/bench_threads.py [--configs toy tiny] [--threads 1 2] [--load-procs 0 2] [--epochs E]
        [--repeats R] [--json] [--out docs/threads.md]

Each measurement is one ``train.py`` process with exactly the command the sweep would run (``tools/sweep.py``'s
planner): ``toy`` = ``bash scripts/base2novel.sh coop toy``'s first run (CoOp, toy-clip, seed 1, base classes, the
toy protocol); ``tiny`` = CoOp with ``BACKBONE=tiny-vit`` on a generated 10-class image folder, 16 shots. Only
``TRAIN.NUM_THREADS`` (and ``OPTIM.MAX_EPOCH`` when ``--epochs`` is given) is added. "Loaded" runs N CPU-bound
processes (``while True: pass``) beside it for its whole duration. Every run starts from an empty output folder
and an empty feature cache (as on a fresh clone); one untimed run first draws the data. Runs are interleaved
(repeat -> load -> config -> threads) so that drifting background load hits every variant alike, and the 1-minute
load average before each run is recorded with it: a shared machine is never fully quiet.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments import children  # noqa: E402
from experiments import planner as sweep  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONFIGS = ("toy", "tiny")
BURNER = "while True: pass"


def load_average() -> float | None:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def run_args(config: str, data: Path, out: Path, epochs: int | None) -> tuple[list[str], Path]:
    """train.py's arguments for the config's first sweep run, as tools/sweep.py plans it (threads not set), and
    the run's folder."""
    opts = ["OPTIM.MAX_EPOCH", str(epochs)] if epochs else []
    if config == "toy":
        s = sweep.Settings(data=str(data), output=out, seeds=[1], calib=[None], opts=opts)
        unit = sweep.Planner("coop", s).base2novel(["toy"])[0]
    else:
        s = sweep.Settings(data=str(data), output=out, seeds=[1], calib=[None], backbone="tiny-vit", opts=opts)
        unit = sweep.Planner("coop", s).base2novel(["imagefolder"])[0]
    args = list(unit.runs[0].args)
    # the planner's own thread choice is what is being measured: drop it, the measurement sets it
    while "TRAIN.NUM_THREADS" in args:  # as a sweep setting (--sweep-opt KEY VALUE) or a user option (KEY VALUE)
        i = args.index("TRAIN.NUM_THREADS")
        start = i - 1 if i and args[i - 1] == "--sweep-opt" else i
        del args[start:i + 2]
    return args, unit.runs[0].out_dir


def time_run(planned: tuple[list[str], Path], threads: int, cache: Path, load_procs: int) -> dict[str, Any]:
    args, out = planned
    argv = [sys.executable, str(REPO / "train.py"), *args, "TRAIN.NUM_THREADS", str(threads)]
    env = dict(os.environ, CALIB_PROMPT_CACHE=str(cache))
    burners = [children.start([sys.executable, "-c", BURNER]) for _ in range(load_procs)]
    try:
        load_before = load_average()
        t0 = time.perf_counter()
        rc = children.run_to_file(argv, cache.with_suffix(".console.log"), env=env, cwd=REPO)
        wall = time.perf_counter() - t0
        load_after = load_average()
    finally:
        for p in burners:
            children.stop(p, grace=0)
    if rc != 0:
        raise SystemExit(f"train.py failed (exit code {rc}); see {cache.with_suffix('.console.log')}\n"
                         f"    command: {shlex.join(argv)}")
    timings = json.loads((out / "results.json").read_text()).get("run", {}).get("timings") or {}
    return {"wall_s": round(wall, 2), "train_s": timings.get("train_seconds"), "load_before": load_before,
            "load_after": load_after}


def measure(configs: list[str], threads: list[int], loads: list[int], epochs: int | None, repeats: int,
            work: Path, say=print) -> list[dict[str, Any]]:
    data = {"toy": work / "toy_data", "tiny": work / "tiny_data"}
    if "tiny" in configs and not data["tiny"].exists():
        from experiments.benchmark.common import make_dataset

        make_dataset(data["tiny"], classes=10, per_class=24, image_size=224)
    data["toy"].mkdir(exist_ok=True)
    n = 0
    rows: list[dict[str, Any]] = []
    for config in configs:  # untimed: draw the toy world, warm the OS file cache
        time_run(run_args(config, data[config], work / f"warmup_{config}", 1), 1, work / f"cache_w{config}", 0)
    for rep in range(repeats):
        for load in loads:
            for config in configs:
                for t in threads:
                    n += 1
                    planned = run_args(config, data[config], work / f"run{n}", epochs)
                    r = time_run(planned, t, work / f"cache{n}", load)
                    rows.append({"config": config, "threads": t, "load_procs": load, "repeat": rep + 1, **r})
                    say(f"{config:5s} threads {t}  +{load} CPU-bound  wall {r['wall_s']:7.1f} s  "
                        f"train {r['train_s'] or 0:7.1f} s  (1-min load before {r['load_before']})")
    return rows


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["config"], r["load_procs"], r["threads"]), []).append(r)
    out = []
    for (config, load, t), rs in groups.items():
        out.append({"config": config, "load_procs": load, "threads": t,
                    "wall_s": statistics.median(r["wall_s"] for r in rs),
                    "train_s": statistics.median(r["train_s"] or 0 for r in rs),
                    "load_before": [r["load_before"] for r in rs], "n": len(rs)})
    for s in out:  # speed of this thread count against 1 thread in the same config and load
        key = (s["config"], s["load_procs"], 1)
        one = next((o for o in out if (o["config"], o["load_procs"], o["threads"]) == key), None)
        s["vs_1_thread"] = round(s["wall_s"] / one["wall_s"], 2) if one else None
    return out


def render(summary: list[dict[str, Any]], info: dict[str, Any], command: str) -> str:
    from tabulate import tabulate

    rows = [[s["config"], "as found" if s["load_procs"] == 0 else f"+{s['load_procs']} CPU-bound", s["threads"],
             f"{s['wall_s']:.1f}", f"{s['train_s']:.1f}", f"{s['vs_1_thread']:.2f}x" if s["vs_1_thread"] else "",
             ", ".join(f"{x:.2f}" for x in s["load_before"] if x is not None)] for s in summary]
    table = tabulate(rows, headers=["config", "machine", "torch threads", "wall s (median)", "train s",
                                    "wall / 1 thread", "1-min load before"], tablefmt="github")
    return "\n".join([
        "# Torch threads: 1 vs more on a quiet and a loaded machine", "",
        f"Generated by `{command}` (tools/bench_threads.py); rerun it to refresh this page.", "",
        f"- CPU: {info['cpu']}, {info['cores']} cores; torch {info['torch']}; Python {info['python']}",
        f"- date (UTC): {info['date']}; epochs per run: {info['epochs']}; repeats: {info['repeats']}",
        "- \"as found\": no extra process started by the tool (\"quiet\"); the machine may be shared, so the 1-minute",
        "  load average before each run is shown beside its number. \"+N CPU-bound\": N `while True: pass` processes",
        "  run beside it (\"loaded\").", "",
        "`toy` is the quick start's first run (CoOp on toy-clip, seed 1, base classes); `tiny` is CoOp with tiny-vit "
        "on a generated 10-class folder. wall = the whole train.py process (start-up, training, evaluation).", "",
        table, "",
        "The sweep's thread policy (`experiments/run_policy.py`, `THREADS` in scripts/README.md) is chosen from this table.",
        ""])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tools/bench_threads.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", nargs="+", choices=CONFIGS, default=list(CONFIGS))
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--load-procs", nargs="+", type=int, default=[0, 2],
                   help="CPU-bound processes beside the run (0 = quiet); default 0 2")
    p.add_argument("--epochs", type=int, default=None, help="OPTIM.MAX_EPOCH (default: the protocol's)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--workdir", default=None, help="keep the runs here (default: a temporary folder)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.add_argument("--out", default=None, help="write the Markdown report here (e.g. docs/threads.md)")
    args = p.parse_args(argv)
    if any(t < 1 for t in args.threads) or any(n < 0 for n in args.load_procs) or args.repeats < 1:
        p.error("--threads must be >= 1, --load-procs >= 0, --repeats >= 1")
    import datetime
    import platform
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))   # a killed measurement still ends its load processes

    from experiments.benchmark.common import cpu_model

    info = {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "epochs": args.epochs or "the protocol's", "repeats": args.repeats}
    import torch

    info["torch"] = torch.__version__
    with tempfile.TemporaryDirectory(prefix="bench-threads-") as tmp:
        work = Path(args.workdir) if args.workdir else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        rows = measure(args.configs, args.threads, args.load_procs, args.epochs, args.repeats, work)
    summary = summarise(rows)
    if args.json:
        print(json.dumps({"machine": info, "rows": rows, "summary": summary}, indent=1))
    if args.out:
        command = "python tools/bench_threads.py " + shlex.join(argv if argv is not None else sys.argv[1:])
        Path(args.out).write_text(render(summary, info, command.strip()))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
