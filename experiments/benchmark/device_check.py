"""The prepared GPU check (tools/device_check.py): on one GPU, in under 8 minutes, (1) the CUDA-marked tests,
(2) toy CoOp trained and evaluated with and without --calib in the configs' precision (fp16 weights, as the
reference) against fp32, within :data:`TOLERANCE`, and (3) the real-shape steps with CUDA timings and
``max_memory_allocated``; one table at the end. ``--device cpu --quick`` runs the same code on tiny shapes (tests).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from tabulate import tabulate

from .common import REPO, RANDOM_VIT_B16

#: fp16 against fp32 on the toy (accuracy and ECE in percentage points): what half-precision weights may move
TOLERANCE = {"accuracy": 2.0, "ece": 2.0}
#: the real-shape steps of the check: (method, classes, batch)
STEPS = (("CoOp", 100, 32), ("CoCoOp", 100, 4), ("CoCoOp", 100, 1), ("MaPLe", 100, 4), ("PromptSRC", 100, 4),
         ("CoOp", 1000, 32))
QUICK_STEPS = (("CoOp", 8, 4), ("CoCoOp", 4, 2))


def run_cuda_tests(timeout_s: float = 180) -> dict[str, Any]:
    """``pytest -m cuda``: the tests that need a GPU (they skip without one)."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", "tests"]
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout_s)
    last = (proc.stdout.strip().splitlines() or [""])[-1]
    return {"check": "CUDA-marked tests", "ok": proc.returncode in (0, 5), "value": last,
            "seconds": time.perf_counter() - t}


def toy_argv(root: Path, out: Path, precision: str, calib: bool, epochs: int, device: str) -> list[str]:
    argv = ["--root", str(root), "--seed", "1", "--trainer", "CoOp", "--backbone", "toy-clip",
            "--dataset-config-file", str(REPO / "configs/datasets/toy.yaml"),
            "--config-file", str(REPO / "configs/trainers/CoOp/vit_b16_ep50.yaml"), "--output-dir", str(out)]
    if calib:
        argv.append("--calib")
    return argv + ["OPTIM.MAX_EPOCH", str(epochs), "DATASET.NUM_SHOTS", "16", "DATASET.SUBSAMPLE_CLASSES", "base",
                   "TRAINER.COOP.PREC", precision, "DATALOADER.NUM_WORKERS", "2", "INPUT.RRCROP_SCALE", "(0.5, 1.0)",
                   "USE_CUDA", str(device == "cuda"), "TEST.FEATURE_CACHE", "False"]


def train_toy(root: Path, out: Path, precision: str, calib: bool, epochs: int, device: str) -> dict[str, Any]:
    """One toy CoOp run through train.py in a subprocess; its results.json metrics and record precision."""
    env = dict(os.environ, CALIB_PROMPT_CACHE=str(out.parent / "cache"))
    cmd = [sys.executable, str(REPO / "train.py"), *toy_argv(root, out, precision, calib, epochs, device)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=600)
    found = sorted(out.rglob("results.json"))
    if proc.returncode != 0 or not found:
        return {"ok": False, "error": (proc.stderr or proc.stdout).strip()[-300:]}
    data = json.loads(found[-1].read_text())
    metrics = data.get("metrics", {})
    return {"ok": True, "accuracy": metrics.get("accuracy"), "ece": metrics.get("ece"),
            "precision": (data.get("run") or {}).get("precision")}


def toy_precision_rows(device: str, epochs: int, work: Path) -> list[dict[str, Any]]:
    rows = []
    for calib in (False, True):
        runs = {p: train_toy(work / "data", work / f"toy_{p}_{int(calib)}", p, calib, epochs, device)
                for p in ("fp16", "fp32")}
        label = "toy CoOp" + (" --calib" if calib else "")
        if not all(r["ok"] for r in runs.values()):
            errors = "; ".join(r.get("error", "") for r in runs.values() if not r["ok"])
            rows.append({"check": f"{label}: fp16 vs fp32", "ok": False, "value": errors[:120]})
            continue
        diffs = {k: abs(runs["fp16"][k] - runs["fp32"][k]) for k in TOLERANCE if runs["fp32"].get(k) is not None}
        ok = all(diffs[k] <= TOLERANCE[k] for k in diffs)
        value = ", ".join(f"{k} {runs['fp16'][k]:.2f} vs {runs['fp32'][k]:.2f}" for k in diffs)
        rows.append({"check": f"{label}: fp16 vs fp32 ({runs['fp16'].get('precision')} recorded)", "ok": ok,
                     "value": value, "note": "tolerance " + ", ".join(f"{k} {v:g} pt" for k, v in TOLERANCE.items())})
    return rows


def step_rows(device: str, quick: bool, work: Path, measure: Callable | None = None) -> list[dict[str, Any]]:
    """Each real-shape step with and without truncation: ms per step (CUDA-synchronised) and peak memory."""
    from . import realshape as R

    measure = measure or R.measure_step_device
    backbone = "tiny-vit" if quick else RANDOM_VIT_B16
    rows = []
    for method, classes, batch in (QUICK_STEPS if quick else STEPS):
        r = measure(method, classes, batch, work, backbone=backbone)
        rows.append({"check": f"{method} C={classes} B={batch} step", "ok": r.get("error") is None,
                     "value": step_value(r), "note": r.get("error") or ""})
    return rows


def step_value(r: dict[str, Any]) -> str:
    def one(kind):
        ms, mem = r.get(f"{kind}_ms"), r.get(f"{kind}_peak_mib")
        if ms is None:
            return f"{kind}: {r.get(f'{kind}_error', 'not run')}"
        return f"{kind} {ms:.0f} ms, {mem:,.0f} MiB" if mem is not None else f"{kind} {ms:.0f} ms"
    ratio = r.get("ratio")
    return "; ".join([one("full"), one("cut")] + ([f"{ratio:.2f}x"] if ratio else []))


def table(rows: list[dict[str, Any]]) -> str:
    """The one table the check prints."""
    body = [(r["check"], {True: "ok", False: "FAIL", None: "-"}[r.get("ok")], r.get("value", ""), r.get("note", ""))
            for r in rows]
    return tabulate(body, headers=["check", "result", "value", "note"], tablefmt="github")


def run(device: str = "cuda", quick: bool = False, epochs: int = 5, tests: bool = True,
        log: Callable[[str], None] = print) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("tools/device_check.py: no CUDA device here; use --device cpu --quick for the CPU path")
    info = {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu", "torch": torch.__version__}
    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="device-check-") as tmp:
        work = Path(tmp)
        if tests:
            log("CUDA-marked tests")
            rows.append(run_cuda_tests())
        log("toy CoOp, fp16 and fp32, with and without --calib")
        rows += toy_precision_rows(device, 1 if quick else epochs, work)
        log("real-shape steps")
        rows += step_rows(device, quick, work)
    info["seconds"] = time.perf_counter() - start
    return rows, info
