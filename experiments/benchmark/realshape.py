"""ViT-B/16 shapes with random weights (widths 768/512, depths 12/12, 224 px, 77 tokens; nothing downloaded): the
text tower truncated at the EOT against all 77 positions, method steps, and peak training memory.

Prompts are built on ImageNet's class names (open_clip's list), so prompt lengths are the real ones. Variants are
timed interleaved in the same rounds (common.interleave); a ratio is the median of per-round ratios. Memory is
measured in a fresh subprocess per configuration under an address-space cap (RLIMIT_AS), with the image tower
replaced by a precomputed feature batch (it is frozen and runs under no_grad: its activations are not kept, so it
adds a constant, not a per-class cost); a configuration that exceeds the cap is reported as not fitting.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from .common import (RANDOM_VIT_B16, REPO, SEED, _sync, build_trainer, interleave, med, paired_ratio, quiet,
                     register_random_vit_b16)

#: the real-shape targets (CPU, ratios in the same run)
TARGETS = {"text_ratio": 3.5, "coop_step_ratio": 1.4, "coop_1000_ratio": 2.5, "cocoop_step_ratio": 4.0,
           "memory_share_1000": 0.40}
CONFIGS = {"CoOp": "CoOp/vit_b16_ep50.yaml", "CoCoOp": "CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml",
           "KgCoOp": "KgCoOp/vit_b16_ep100_ctxv1.yaml", "ProGrad": "ProGrad/vit_b16_c16_ep100_batch32.yaml",
           "ProDA": "ProDA/vit_b16_c16_ep100_batch4.yaml", "MaPLe": "MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml",
           "PromptSRC": "PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx.yaml"}
GIB = 2 ** 30


def imagenet_classnames(n: int) -> list[str]:
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    names = list(IMAGENET_CLASSNAMES)
    if n > len(names):
        raise ValueError(f"at most {len(names)} ImageNet class names, asked for {n}")
    return names[:n]


def folder_names(names: list[str]) -> list[str]:
    """ImageNet names as image-folder names (spaces as "_", which the prompts turn back into spaces)."""
    out, seen = [], set()
    for i, name in enumerate(names):
        folder = re.sub(r"[^A-Za-z0-9_'\-]", "", name.replace(" ", "_")) or f"class_{i}"
        base, k = folder, 1
        while folder.lower() in seen:  # ImageNet's list repeats a few names (two "missile"s): "missile_2"
            k += 1
            folder = f"{base}_{k}"
        seen.add(folder.lower())
        out.append(folder)
    return out


def make_named_dataset(root: Path, classes: int, per_class: int = 3) -> Path:
    """A tiny image folder whose classes carry ImageNet's names (images are never decoded at real shapes)."""
    from datasets.testing import write_imagefolder

    if root.is_dir():
        return root
    return write_imagefolder(root, dict.fromkeys(folder_names(imagenet_classnames(classes)), per_class), size=8)


def real_trainer(method: str, classes: int, batch: int, workdir: Path, *, precision: str = "fp32",
                 opts: tuple[str, ...] = (), backbone: str = RANDOM_VIT_B16):
    """``method`` on random-vit-b16 built as train.py builds it, over ``classes`` ImageNet class names."""
    import datasets  # noqa: F401  (registers the dataset modules, as train.py's entry point does)
    import trainers  # noqa: F401  (registers the methods)

    register_random_vit_b16()
    data = make_named_dataset(workdir / f"data_{classes}", classes)
    with quiet():
        trainer = build_trainer(method, backbone, data, workdir, f"{method}_{classes}_{batch}",
                                config_file=str(REPO / "configs" / "trainers" / CONFIGS[method]),
                                precision=precision, batch_size=batch, eval_batch_size=batch, workers=0,
                                opts=("TEST.FEATURE_CACHE", "False", *opts))
    trainer.set_model_mode("train")
    return trainer


def step_fn(trainer, batch: int, features: torch.Tensor | None = None) -> Callable[[int], None]:
    """One real training step (compute_loss + backward_and_update) on random images of a fixed batch; with
    ``features`` the frozen image tower is replaced by that precomputed, normalised feature batch."""
    g = torch.Generator().manual_seed(SEED)
    classes = len(trainer.dm.dataset.classnames)
    size = trainer.cfg.INPUT.SIZE[0]
    image = torch.randn(batch, 3, size, size, generator=g).to(trainer.device)
    label = torch.randint(0, classes, (batch,), generator=g).to(trainer.device)
    if features is not None:
        trainer.model.encode_image = lambda _image: features
        image = torch.zeros(batch, 1, device=trainer.device)

    def step(_r: int) -> None:
        loss, terms, _ = trainer.compute_loss(image, label)
        trainer.backward_and_update(loss, terms)
    return step


def set_truncation(trainer, on: bool) -> None:
    trainer.model.text_encoder.truncate_eot = on


# ----------------------------------------------------------------------------------------------- text tower
def measure_text_tower(classes: int = 100, n_ctx: int = 16, rounds: int = 2, warmup: int = 1,
                       groups: int = 4, grad: bool = True,
                       kinds: tuple[str, ...] = ("full", "cut", "grouped"),
                       backbone: str = RANDOM_VIT_B16) -> dict[str, Any]:
    """CoOp's text pass (``classes`` ImageNet prompts, ``n_ctx`` learnable vectors), forward + backward to the
    context: all 77 positions, truncated at the batch's last EOT, and truncated per length group (prompts sorted by
    EOT, ``groups`` equal groups, each cut at its own last EOT)."""
    import clip
    from trainers.prompts import TextPrompts

    register_random_vit_b16()
    model = clip.load(backbone)
    model.requires_grad_(False)
    enc = clip.TextEncoder(model)
    names = imagenet_classnames(classes)
    prompts = TextPrompts(enc, names, n_ctx)
    eot = prompts.eot_idx
    ctx = nn.Parameter(torch.randn(n_ctx, enc.width, generator=torch.Generator().manual_seed(SEED)) * 0.02)
    order = torch.argsort(eot)
    chunks = [c for c in torch.chunk(order, groups) if len(c)]

    def run(kind: str) -> torch.Tensor:
        x = prompts.assemble(ctx)
        if kind == "grouped":
            enc.truncate_eot = True
            parts = [enc(x[c], eot[c]) for c in chunks]
            f = torch.cat(parts)[torch.argsort(torch.cat(chunks))]
        else:
            enc.truncate_eot = kind == "cut"
            f = enc(x, eot)
        return f

    def step(kind):
        def call(_r):
            ctx.grad = None
            if grad:
                run(kind).float().square().sum().backward()
            else:
                with torch.no_grad():
                    run(kind)
        return call

    with torch.no_grad():
        ref = nn.functional.normalize(run(kinds[0]).float(), dim=-1)
        diff = max((nn.functional.normalize(run(k).float(), dim=-1) - ref).abs().max().item() for k in kinds[1:])
    s = interleave({k: step(k) for k in kinds}, rounds, warmup, lambda: None)
    s.update({k: [] for k in ("full", "cut", "grouped") if k not in s})
    all_names = imagenet_classnames(1000)
    all_eot = TextPrompts(enc, all_names, n_ctx).eot_idx
    return {"classes": classes, "n_ctx": n_ctx, "positions": int(eot.max()) + 1,
            "positions_1000": {"min": int(all_eot.min()) + 1, "median": int(all_eot.median()) + 1,
                               "max": int(all_eot.max()) + 1},
            "text_full_ms": med(s["full"]), "text_cut_ms": med(s["cut"]), "text_grouped_ms": med(s["grouped"]),
            "text_ratio": paired_ratio(s["full"], s["cut"]), "grouped_ratio": paired_ratio(s["cut"], s["grouped"]),
            "groups": len(chunks), "feature_max_diff": diff, "rounds": rounds, "grad": grad}


# ----------------------------------------------------------------------------------------------- method steps
def measure_step(method: str, classes: int, batch: int, workdir: Path, rounds: int = 2, warmup: int = 1,
                 image_split: bool = False, checkpoint_chunk: int = 0,
                 variants: tuple[str, ...] = ("full", "cut"), backbone: str = RANDOM_VIT_B16) -> dict[str, Any]:
    """A method's real training step at ViT-B/16 shapes, with and without truncation, interleaved; with
    ``image_split`` also the frozen image forward of the batch alone (what the step spends outside the text tower)
    and the reference-shaped step (77 positions plus the frozen image pass the paper's code adds every step);
    with ``checkpoint_chunk`` also the truncated step under MODEL.TEXT_CHECKPOINT_CHUNK."""
    trainer = real_trainer(method, classes, batch, workdir, backbone=backbone)
    step = step_fn(trainer, batch)
    size = trainer.cfg.INPUT.SIZE[0]
    sync = _sync(trainer.device)
    enc = trainer.model.text_encoder

    def variant(trunc: bool, chunk: int = 0, extra: bool = False):
        def call(r):
            set_truncation(trainer, trunc)
            enc.checkpoint_chunk = chunk
            if extra:
                image = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(r))
                with torch.no_grad():
                    trainer.model.clip.encode_image(image)
            step(r)
        return call

    variant(True)(0)  # untimed: fills what a method computes on its first step (PromptSRC's template features)
    calls = {"full": variant(False), "cut": variant(True)}
    calls = {k: v for k, v in calls.items() if k in variants}
    if image_split:
        calls["reference"] = variant(False, extra=True)
    if checkpoint_chunk:
        calls["checkpointed"] = variant(True, checkpoint_chunk)
    s = interleave(calls, rounds, warmup, sync)
    s.update({k: [] for k in ("full", "cut") if k not in s})
    out = {"method": method, "classes": classes, "batch": batch, "rounds": rounds, "backbone": backbone, "primed": True,
           "full_ms": med(s["full"]), "cut_ms": med(s["cut"]), "ratio": paired_ratio(s["full"], s["cut"])}
    if image_split:
        image = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            t = time.perf_counter()
            trainer.model.encode_image(image)
            out["image_forward_ms"] = (time.perf_counter() - t) * 1e3
        out["reference_ms"] = med(s["reference"])
        out["reference_ratio"] = paired_ratio(s["reference"], s["cut"])
    if checkpoint_chunk:
        out["checkpoint_chunk"] = checkpoint_chunk
        out["checkpointed_ms"] = med(s["checkpointed"])
        out["checkpoint_cost"] = paired_ratio(s["checkpointed"], s["cut"])
    return out


def measure_step_device(method: str, classes: int, batch: int, workdir: Path, steps: int = 3,
                        backbone: str = RANDOM_VIT_B16) -> dict[str, Any]:
    """The device check's step: per truncation setting, one warm-up step then ``steps`` timed ones (synchronised),
    and on CUDA the ``max_memory_allocated`` of those steps; an out-of-memory is reported, not raised."""
    out: dict[str, Any] = {"method": method, "classes": classes, "batch": batch}
    try:
        trainer = real_trainer(method, classes, batch, workdir, backbone=backbone)
    except Exception as exc:  # noqa: BLE001 - reported in the check's table
        return dict(out, error=f"{type(exc).__name__}: {exc}"[:200])
    cuda = trainer.device.type == "cuda"
    sync = _sync(trainer.device)
    step = step_fn(trainer, batch)
    for kind, trunc in (("full", False), ("cut", True)):
        set_truncation(trainer, trunc)
        try:
            step(0)
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            sync()
            t = time.perf_counter()
            for r in range(steps):
                step(r)
            sync()
            out[f"{kind}_ms"] = (time.perf_counter() - t) / steps * 1e3
            out[f"{kind}_peak_mib"] = torch.cuda.max_memory_allocated() / 2 ** 20 if cuda else None
        except (torch.cuda.OutOfMemoryError, RuntimeError) as exc:
            if "out of memory" not in str(exc).lower() and "alloc" not in str(exc).lower():
                raise
            out[f"{kind}_error"] = "out of memory"
            if cuda:
                torch.cuda.empty_cache()
    if out.get("full_ms") and out.get("cut_ms"):
        out["ratio"] = out["full_ms"] / out["cut_ms"]
    return out


# ----------------------------------------------------------------------------------------------- memory
def memory_child(spec: dict[str, Any]) -> dict[str, Any]:
    """In a fresh process: build the trainer, replace the image tower by a precomputed feature batch, run one
    training step and report the process's peak RSS (or that it did not fit under the cap)."""
    import resource

    torch.set_num_threads(1)
    cap = int(spec["cap_gib"] * GIB)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    workdir = Path(spec["workdir"])
    out = {k: spec[k] for k in ("method", "classes", "batch", "truncate", "checkpoint_chunk", "cap_gib")}
    try:
        trainer = real_trainer(spec["method"], spec["classes"], spec["batch"], workdir, backbone=spec["backbone"])
        set_truncation(trainer, spec["truncate"])
        trainer.model.text_encoder.checkpoint_chunk = spec["checkpoint_chunk"]
        feats = nn.functional.normalize(torch.randn(spec["batch"], trainer.model.text_encoder.output_dim), dim=-1)
        step = step_fn(trainer, spec["batch"], feats)
        out["built_mib"] = _maxrss_mib()
        t = time.perf_counter()
        step(0)
        out["step_s"] = time.perf_counter() - t
        out["fits"] = True
    except (MemoryError, RuntimeError) as exc:
        if not isinstance(exc, MemoryError) and "alloc" not in str(exc).lower():
            raise
        out["fits"] = False
        out["error"] = str(exc).splitlines()[0][:200]
    out["peak_mib"] = _maxrss_mib()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda_max_allocated_mib"] = torch.cuda.max_memory_allocated() / 2 ** 20
    return out


def _maxrss_mib() -> float:
    """This process's peak RSS: VmHWM (Linux; the high-water mark of this program's own memory, reset at exec),
    else ru_maxrss, which on Linux also counts the parent's RSS at fork time (the benchmark's own, gigabytes)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2 ** 10
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 10


def measure_memory(method: str, classes: int, batch: int, workdir: Path, *, truncate: bool = True,
                   checkpoint_chunk: int = 0, cap_gib: float = 8.0, timeout_s: float = 900,
                   backbone: str = RANDOM_VIT_B16) -> dict[str, Any]:
    """One configuration's peak training memory in a fresh subprocess capped at ``cap_gib`` (address space)."""
    spec = {"method": method, "classes": classes, "batch": batch, "truncate": truncate,
            "checkpoint_chunk": checkpoint_chunk, "cap_gib": cap_gib, "workdir": str(workdir), "backbone": backbone}
    make_named_dataset(workdir / f"data_{classes}", classes)  # built once, outside the capped child
    cmd = [sys.executable, "-m", "experiments.benchmark.realshape", "--memory-child", json.dumps(spec)]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    try:
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:
        return dict(spec, fits=None, error=f"timed out after {timeout_s:.0f} s")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("MEMORY ")]
    if proc.returncode == 0 and lines:
        return json.loads(lines[-1][len("MEMORY "):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    oom = proc.returncode in (-9, 137) or any("alloc" in t.lower() or "MemoryError" in t for t in tail)
    return dict(spec, fits=False if oom else None, error=" | ".join(tail)[:300], returncode=proc.returncode)


def linear_fit(points: list[dict[str, Any]]) -> tuple[float, float] | None:
    """(base MiB, MiB per class) through the smallest and largest measured class counts that fit."""
    ok = sorted((p["classes"], p["peak_mib"]) for p in points if p.get("fits"))
    if len(ok) < 2 or ok[-1][0] == ok[0][0]:
        return None
    (c0, m0), (c1, m1) = ok[0], ok[-1]
    slope = (m1 - m0) / (c1 - c0)
    return m0 - slope * c0, slope


def largest_fitting(points: list[dict[str, Any]], limit_mib: float) -> int | None:
    """The largest class count whose peak RSS stays under ``limit_mib``, from the linear fit (None without two
    measured points that fit)."""
    fit = linear_fit(points)
    if fit is None or fit[1] <= 0:
        return None
    return int((limit_mib - fit[0]) / fit[1])


def rss_ceiling(results: list[dict[str, Any]]) -> float | None:
    """The RSS at which runs failed under the address-space cap (the lowest such peak): the cap also counts
    libraries and reserved address space, so a configuration fails below cap GiB of RSS."""
    failed = [r["peak_mib"] for r in results if r.get("fits") is False and r.get("peak_mib")]
    return min(failed) if failed else None


def memory_table_rows(results: list[dict[str, Any]], cap_gib: float) -> list[dict[str, Any]]:
    """Per (method, batch, path): the measured peaks by class count and the largest class count that fits, under
    the cap as it acted (the RSS ceiling of the failed runs) and at ``cap_gib`` GiB of RSS."""
    ceiling = rss_ceiling(results) or cap_gib * 1024
    groups: dict[tuple, list] = {}
    for r in results:
        path = "77 positions" if not r["truncate"] else (
            f"truncated + checkpoint {r['checkpoint_chunk']}" if r["checkpoint_chunk"] else "truncated")
        groups.setdefault((r["method"], r["batch"], path), []).append(r)
    rows = []
    for (method, batch, path), pts in groups.items():
        rows.append({"method": method, "batch": batch, "path": path,
                     "peaks": {p["classes"]: (p["peak_mib"] if p.get("fits") else None) for p in pts},
                     "largest_fitting": largest_fitting(pts, ceiling),
                     "largest_at_cap_rss": largest_fitting(pts, cap_gib * 1024)})
    return rows


def _main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "--memory-child":
        result = memory_child(json.loads(argv[1]))
        print("MEMORY " + json.dumps(result), flush=True)
        return 0
    print("usage: python -m experiments.benchmark.realshape --memory-child SPEC_JSON (used by tools/benchmark.py)",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
