"""Wall time of a lockstep group against the same runs as separate processes (issue 20's lockstep target).

:func:`time_lockstep` runs the given train.py runs twice from empty folders and an empty feature cache: once as
separate ``train.py`` processes one after the other (what a sweep without grouping does), once as one
``train.py A --and B ...`` process; it reports both wall times, the CPU time of each (the process and its data
loader workers: a fairer measure on a busy machine), their ratios, and whether every run's ``predictions.npz`` is
the same both ways. ``python -m experiments.lockstep_bench`` times the toy pair {plain, --calib} of CoOp.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Sequence

REPO = Path(__file__).resolve().parents[1]

#: toy-clip CoOp on the toy world, seed 1, base classes, as the sweep runs it (tools/sweep.py's toy options), one
#: torch thread
TOY_ARGS = ["--root", "data", "--seed", "1", "--trainer", "CoOp", "--backbone", "toy-clip",
            "--dataset-config-file", "configs/datasets/toy.yaml",
            "--config-file", "configs/trainers/CoOp/vit_b16_ep50.yaml"]
TOY_OPTS = ["TRAIN.NUM_THREADS", "1", "INPUT.RRCROP_SCALE", "(0.5, 1.0)", "DATALOADER.NUM_WORKERS", "2",
            "DATASET.NUM_SHOTS", "16", "DATASET.SUBSAMPLE_CLASSES", "base"]


def toy_pair(data: str, epochs: int) -> dict[str, list[str]]:
    """train.py arguments (without --output-dir) of the toy {plain, --calib} CoOp pair."""
    args = list(TOY_ARGS)
    args[args.index("--root") + 1] = data
    opts = TOY_OPTS + ["OPTIM.MAX_EPOCH", str(epochs)]
    return {"plain": args + opts, "calib": ["--calib", *args, *opts]}


def _with_output(args: Sequence[str], out: Path) -> list[str]:
    return ["--output-dir", str(out), *args]


def _timed(argv_list: Sequence[Sequence[str]], env: dict, log: Path) -> tuple[float, float]:
    """Run the commands one after the other; (wall seconds, CPU seconds of the children)."""
    from experiments import children

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with open(log, "w") as f:
        for argv in argv_list:
            proc = children.start(list(argv), stdout=f, stderr=f, stdin=None, env=env, cwd=str(REPO))
            if proc.wait() != 0:
                raise RuntimeError(f"{' '.join(argv)} failed (exit {proc.returncode}); see {log}")
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _same_predictions(a: Path, b: Path) -> bool:
    import numpy as np

    pa, pb = np.load(a / "predictions.npz"), np.load(b / "predictions.npz")
    return sorted(pa.files) == sorted(pb.files) and all(np.array_equal(pa[k], pb[k]) for k in pa.files)


def time_lockstep(runs: dict[str, Sequence[str]], workdir: str | os.PathLike,
                  python: str = sys.executable) -> dict:
    """Time ``runs`` (name -> train.py arguments without --output-dir) as separate processes and in lockstep, each
    way into fresh folders under ``workdir`` with a feature cache of its own."""
    work = Path(workdir)
    train = str(REPO / "train.py")
    root = next((a[i + 1] for a in runs.values() for i, w in enumerate(a[:-1]) if w == "--root"), None)
    if root is not None and any("toy.yaml" in w for a in runs.values() for w in a):
        from toy import data as toy_data

        toy_data.ensure(REPO / root / "toy", progress=False)  # drawn before the clock starts: both ways alike
    result: dict = {"runs": list(runs)}
    outs = {}
    for mode in ("separate", "lockstep"):
        base = work / mode
        base.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, CALIB_PROMPT_CACHE=str(base / "cache"))
        outs[mode] = {name: base / name for name in runs}
        args = [_with_output(a, outs[mode][name]) for name, a in runs.items()]
        if mode == "separate":
            cmds = [[python, train, *a] for a in args]
        else:
            from train import lockstep_argv

            cmds = [[python, train, *lockstep_argv(args)]]
        wall, cpu = _timed(cmds, env, base / "console.log")
        result[mode] = {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2)}
    result["wall_ratio"] = round(result["lockstep"]["wall_s"] / result["separate"]["wall_s"], 3)
    result["cpu_ratio"] = round(result["lockstep"]["cpu_s"] / result["separate"]["cpu_s"], 3)
    result["identical_predictions"] = all(_same_predictions(outs["separate"][n], outs["lockstep"][n]) for n in runs)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.lockstep_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="data", help="the toy world's folder (drawn there on first use)")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--workdir", required=True, help="an empty folder for the runs' output")
    a = p.parse_args(argv)
    res = time_lockstep(toy_pair(a.data, a.epochs), a.workdir)
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
