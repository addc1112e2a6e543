#!/usr/bin/env python
"""Measure how fast a method trains and evaluates, and write docs/performance.md.

    python tools/benchmark.py --method M --backbone B [B2 ...] [--precision P] [--batch-size N [N2 ...]]
        [--classes C] [--steps S [S2 ...]] [--per-class K [K2 ...]] [--calib NAME] [--threads T] [--profile]
        [--json] [--out docs/performance.md] [--wait-load 1.5]
    python tools/benchmark.py --metrics 50000 1000 [--steps R] [--json] [--out docs/performance.md]

Options given once apply to every backbone; given once per backbone, they pair up in order.

The trainer is built exactly as train.py builds it (``train.setup_cfg(train.parse_args(argv))`` +
``dassl.engine.build_trainer``), so any registered method name works, on a generated image folder
(``--classes`` classes) in a temporary directory. Per backbone it reports, from one process:

* ``data_ms_per_batch``: drawing one training batch from the trainer's loader (decode, augment, collate);
* ``train_step_ms`` / ``train_step_calib_ms``: the trainer's real ``forward_backward`` on a few preloaded batches
  (so data loading is not timed), without and with ``--calib NAME``; ``calib_overhead`` = calib step / plain
  step - 1; ``paper_step_ms``: the calibrated step plus what the paper's code adds to every step (a frozen
  image-encoder pass and zero-shot logits), ``paper_step_ratio`` = paper step / our calibrated step;
* ``eval_text_ms`` (text features, once per evaluation), ``eval_batch_ms`` (one test batch with them), and
  ``paper_eval_batch_ms`` (the batch with the text features recomputed, as the paper's code does);
* ``first_eval_s`` / ``second_eval_s`` / ``cache_speedup``: two evaluations of the test split, the first fills the
  on-disk image-feature cache, the second reads it;
* ``images_per_s``, ``eval_images_per_s``, ``peak_mem_mb`` (CUDA max allocated, else the process's max RSS),
  ``loop_overhead_ms`` (the engine's epoch loop around forward_backward: meters, logging), ``timing_noise`` (the
  plain step against itself), ``calib_terms_ms`` / ``calib_terms_share`` (the --calib terms alone, forward and
  backward) and, with ``--profile``, ``python_overhead`` (share of a step outside torch operators);
* ``targets``: ``calib_overhead`` <= 5% and ``cache_speedup`` >= 10x, each with its value and whether it is met.

``--metrics N C`` measures instead ``calibration.metrics.compute_metrics`` (the full metric set) on random N x C
float64 logits: ``metrics_s`` (median of ``--steps`` calls after one warm-up call), ``metrics_cpu_s`` (their CPU time,
user + system: what a loaded machine does not inflate), ``metrics_first_s`` / ``metrics_first_cpu_s`` (the warm-up
call, what an evaluation's single call costs), ``classwise_ece_s`` (that metric alone, on the
probabilities), ``metrics_peak_mib`` (tracemalloc peak of one call: the memory it allocates above its input) and
``input_mib``; targets ``metrics_s`` <= 1 s and peak <= 2x the input. With ``--out`` it rewrites only the
"Metrics at scale" section of the report (added if missing), so the trainer figures need not be re-measured.

Variants are timed interleaved, round by round, so a busy machine slows them alike; ratios are medians of the
per-round ratios. ``--backbone random-vit-b16`` is a randomly initialised CLIP with ViT-B/16's shapes (the real
cost of ViT-B/16 without its weights).
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
IMAGEFOLDER_CFG = REPO / "configs" / "datasets" / "imagefolder.yaml"
SEED = 1
TARGETS = {"calib_overhead": ("max", 0.05), "cache_speedup": ("min", 10.0)}
METRICS_TARGETS = {"metrics_s": ("max", 1.0), "metrics_memory_ratio": ("max", 2.0)}
RANDOM_VIT_B16 = "random-vit-b16"
TRAIN_FIGURES = ("train_step_ms", "train_step_calib_ms", "calib_overhead", "timing_noise", "paper_step_ms",
                 "paper_step_ratio", "calib_terms_ms", "calib_terms_share", "loop_overhead_ms", "images_per_s")


# ----------------------------------------------------------------------------------------------- setup
def register_random_vit_b16() -> None:
    """``random-vit-b16``: ViT-B/16's shapes (12x768 vision, 12x512 text, 512-d embedding), random seeded weights."""
    import clip
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    def builder(device, precision, seed):
        return clip.build_clip(512, CLIPVisionCfg(layers=12, width=768, head_width=64, patch_size=16, image_size=224),
                               CLIPTextCfg(context_length=77, vocab_size=49408, width=512, heads=8, layers=12),
                               device=device, precision=precision, seed=seed)

    clip.register_backbone(RANDOM_VIT_B16, builder, overwrite=True)


def default_config_file(method: str) -> str:
    """The method's ViT-B/16 yaml with the shortest name (``configs/trainers/<method>/``), "" when it has none."""
    folder = REPO / "configs" / "trainers" / method
    files = sorted(folder.glob("*.yaml"), key=lambda p: (not p.name.startswith("vit_b16"), len(p.name), p.name))
    return str(files[0]) if files else ""


def make_dataset(root: Path, classes: int, per_class: int, image_size: int) -> Path:
    from datasets.testing import write_imagefolder

    return write_imagefolder(root, {f"class_{i:04d}": per_class for i in range(classes)}, size=image_size)


@contextlib.contextmanager
def quiet(enabled: bool = True):
    """Swallow the trainer's console output (shown again if building fails)."""
    if not enabled:
        yield
        return
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            yield
    except BaseException:
        sys.stderr.write(buf.getvalue()[-4000:])
        raise


def build_trainer(method: str, backbone: str, data_root: Path, workdir: Path, tag: str, *, config_file: str,
                  precision: str | None, batch_size: int, eval_batch_size: int, workers: int,
                  calib: str | None = None, opts: tuple[str, ...] = ()):
    """A trainer built the way train.py builds it, with its outputs and caches inside ``workdir``."""
    import train
    from dassl.engine import TRAINER_REGISTRY, build_trainer as dassl_build
    from dassl.utils import set_random_seed

    argv = ["--root", str(data_root), "--seed", str(SEED), "--trainer", method, "--backbone", backbone,
            "--dataset-config-file", str(IMAGEFOLDER_CFG), "--output-dir", str(workdir / tag)]
    if config_file:
        argv += ["--config-file", config_file]
    if calib:
        argv += ["--calib", calib]
    argv += ["DATALOADER.NUM_WORKERS", str(workers), "DATALOADER.TRAIN_X.BATCH_SIZE", str(batch_size),
             "DATALOADER.TEST.BATCH_SIZE", str(eval_batch_size), "DATASET.NUM_SHOTS", "-1",
             "DATASET.SUBSAMPLE_CLASSES", "all", "DATASET.CACHE_DIR", str(workdir / "dataset_cache"),
             "TEST.FEATURE_CACHE_DIR", str(workdir / f"feature_cache_{tag}"), "TRAIN.PROGRESS_BAR", "False"]
    if precision:
        argv += [f"TRAINER.{TRAINER_REGISTRY.get(method).cfg_node}.PREC", precision]
    argv += list(opts)
    cfg = train.setup_cfg(train.parse_args(argv))
    set_random_seed(SEED)
    return dassl_build(cfg)


# ----------------------------------------------------------------------------------------------- timing
def _sync(device: torch.device) -> Callable[[], None]:
    if device.type == "cuda":
        return torch.cuda.synchronize
    return lambda: None


def interleave(variants: dict[str, Callable[[int], Any]], rounds: int, warmup: int,
               sync: Callable[[], None]) -> dict[str, list[float]]:
    """Milliseconds per call of each variant, ``warmup + rounds`` rounds, order reversed every other round."""
    names = list(variants)
    samples: dict[str, list[float]] = {n: [] for n in names}
    for r in range(warmup + rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            sync()
            t = time.perf_counter()
            variants[name](r)
            sync()
            if r >= warmup:
                samples[name].append((time.perf_counter() - t) * 1e3)
    return samples


def paired_ratio(a: list[float], b: list[float]) -> float | None:
    """Median over rounds of a_i / b_i (robust to load drifting between rounds)."""
    if not a or not b:
        return None
    return statistics.median(x / y for x, y in zip(a, b))


def med(x: list[float]) -> float | None:
    return statistics.median(x) if x else None


def preload(loader, n: int) -> tuple[list[dict], list[float]]:
    """The first ``n`` non-empty batches of ``loader`` (cycled when it has fewer) and ms spent drawing each."""
    batches, times = [], []
    it = iter(loader)
    t = time.perf_counter()
    while len(batches) < n:
        try:
            batch = next(it)
        except StopIteration:
            if not batches:
                raise RuntimeError("the loader yielded no batch") from None
            it = iter(loader)
            continue
        if batch is not None:
            batches.append(batch)
            times.append((time.perf_counter() - t) * 1e3)
        t = time.perf_counter()
    return batches, times


def paper_extra(trainer, batch) -> None:
    """What the paper's code adds to every step: a frozen CLIP image pass and zero-shot logits (unused)."""
    image, _ = trainer.parse_batch_train(batch)
    model = trainer.model
    with torch.no_grad(), trainer.autocast():
        f = F.normalize(model.clip.encode_image(image.to(model.dtype)).float(), dim=-1)
        (model.logit_scale * f @ trainer.zs_text_features.t()).sum()


def trains(trainer) -> bool:
    return bool(getattr(trainer, "trainable", True)) and bool(trainer.get_model_names())


def start_training(trainer) -> None:
    trainer.set_model_mode("train")
    trainer.epoch, trainer.max_epoch, trainer.batch_idx, trainer.num_batches = 0, 1, 0, 10 ** 9


def measure_training(plain, calib, batches, steps: int, warmup: int, sync) -> dict[str, Any]:
    start_training(plain)
    start_training(calib)
    k = len(batches)

    def paper(r):
        paper_extra(calib, batches[r % k])
        calib.forward_backward(batches[r % k])

    # "plain_again" repeats the plain step: its ratio to "plain" is the timing noise of this run (A/A)
    s = interleave({"plain": lambda r: plain.forward_backward(batches[r % k]),
                    "calib": lambda r: calib.forward_backward(batches[r % k]),
                    "paper": paper,
                    "plain_again": lambda r: plain.forward_backward(batches[r % k])}, steps, warmup, sync)
    overhead = paired_ratio(s["calib"], s["plain"])
    noise = paired_ratio(s["plain_again"], s["plain"])
    return {"train_step_ms": med(s["plain"]), "train_step_calib_ms": med(s["calib"]),
            "calib_overhead": None if overhead is None else overhead - 1.0,
            "timing_noise": None if noise is None else noise - 1.0,
            "paper_step_ms": med(s["paper"]), "paper_step_ratio": paired_ratio(s["paper"], s["calib"]),
            "samples": {"train_step_ms": s["plain"], "train_step_calib_ms": s["calib"], "paper_step_ms": s["paper"],
                        "train_step_again_ms": s["plain_again"]}}


def measure_calib_terms(calib, batch, rounds: int, sync) -> float | None:
    """ms of the --calib terms alone, forward and backward to the logits and text features they read: what the
    calibrated step adds to the plain one, free of the step-to-step noise."""
    if calib.objective is None:
        return None
    image, label = calib.parse_batch_train(batch)
    calib.set_model_mode("train")
    with torch.no_grad(), calib.autocast():
        out = calib.model(image, label)
    zs = calib.zero_shot_logits(image, out) if calib.objective.needs_zs_logits else None
    logits = out.logits.detach().requires_grad_()
    leaves = [logits]
    text = out.text_features
    if text is not None:
        text = text.detach().requires_grad_()
        leaves.append(text)

    def call(r):
        terms = calib.objective(logits, label, text, calib.zs_text_features, zs_logits=zs,
                                logit_scale=calib.model.logit_scale)
        total = sum(t.float() for t in terms.values())
        if total.requires_grad:
            torch.autograd.grad(total, leaves, allow_unused=True)

    return med(interleave({"terms": call}, rounds, 1, sync)["terms"])


def measure_eval_batches(trainer, batches, steps: int, warmup: int, sync) -> dict[str, Any]:
    """Text features once, then per test batch with them (ours) and with them recomputed (the paper's code)."""
    model = trainer.model
    trainer.set_model_mode("eval")
    model.eval()
    per_image = bool(getattr(model, "text_per_image", False))
    images = [trainer.parse_batch_test(b)[0] for b in batches]
    k = len(images)
    with torch.no_grad(), trainer.autocast():
        text = interleave({"text": lambda r: model.prepare()}, max(1, steps // 2), 1, sync)["text"]
        prepared = None if per_image else model.prepare()
        s = interleave({"ours": lambda r: model(images[r % k], prepared=prepared),
                        "paper": lambda r: model(images[r % k])}, steps, warmup, sync)
    return {"eval_text_ms": None if per_image else med(text), "eval_batch_ms": med(s["ours"]),
            "paper_eval_batch_ms": med(s["paper"]), "paper_eval_ratio": paired_ratio(s["paper"], s["ours"])}


def measure_text_chunks(trainer, batches, chunks: list[int], steps: int, warmup: int, sync) -> dict[str, Any]:
    """One evaluation batch (frozen image features given, as from the cache) at each ``TEST.TEXT_CHUNK`` in
    ``chunks``, interleaved round by round; the prompts per text-encoder call are what the chunk bounds (CoCoOp:
    groups of chunk // C images). Ratios are per-round medians against the first chunk; the logits of every chunk
    are compared with the first's."""
    model = trainer.model
    trainer.set_model_mode("eval")
    images = [trainer.parse_batch_test(b)[0] for b in batches]
    old = model.text_chunk
    try:
        with torch.no_grad(), trainer.autocast():
            feats = [model.encode_image(x) for x in images]
            k = len(feats)

            def at(chunk):
                def call(r):
                    model.text_chunk = chunk
                    return model(image_features=feats[r % k])
                return call

            ref = at(chunks[0])(0).logits
            diff = max((at(c)(0).logits - ref).abs().max().item() for c in chunks)
            s = interleave({str(c): at(c) for c in chunks}, steps, warmup, sync)
    finally:
        model.text_chunk = old
    first = str(chunks[0])
    return {"text_chunk_ms": {c: med(s[str(c)]) for c in chunks},
            "text_chunk_ratio": {c: paired_ratio(s[str(c)], s[first]) for c in chunks},
            "text_chunk_logits_max_diff": diff, "text_chunk_default": old,
            "num_classes_eval": model.prompts.num_classes if hasattr(model, "prompts") else None}


def measure_cache(trainer) -> dict[str, Any]:
    """Wall time of two evaluations of the test split: the first fills the image-feature cache, the second reads it."""
    from trainers import feature_cache

    folder = feature_cache.cache_dir(trainer.cfg)
    before = set(folder.glob("*.pt")) if folder.exists() else set()
    walls = []
    for _ in range(2):
        t = time.perf_counter()
        trainer.predict(trainer.test_loader)
        walls.append(time.perf_counter() - t)
    written = (set(folder.glob("*.pt")) if folder.exists() else set()) - before
    note = ""
    if trainer.model.image_prompted:
        note = "image tower prompted: its features depend on learnable parameters and are never cached"
    elif not trainer.cfg.TEST.FEATURE_CACHE:
        note = "TEST.FEATURE_CACHE is False"
    elif not written:
        note = "no cache file was written"
    return {"first_eval_s": walls[0], "second_eval_s": walls[1],
            "cache_speedup": walls[0] / walls[1] if written and not note else None, "cache_note": note,
            "num_test_images": len(trainer.test_loader.dataset)}


def measure_loop(trainer, batches, iterations: int = 200) -> float:
    """Per-step ms of the engine's epoch loop (TrainerX.run_epoch: meters, logging, lr) around forward_backward,
    measured with the step replaced by one returning a real step's loss summary."""
    start_training(trainer)
    summary = trainer.forward_backward(batches[0])
    saved = trainer.train_loader_x
    trainer.forward_backward = lambda batch: dict(summary)
    trainer.train_loader_x = [batches[i % len(batches)] for i in range(iterations)]
    trainer.epoch, trainer.max_epoch = 0, 1
    try:
        t = time.perf_counter()
        trainer.run_epoch()
        total = time.perf_counter() - t
    finally:
        del trainer.forward_backward
        trainer.train_loader_x = saved
    return total / iterations * 1e3


def measure_python_overhead(trainer, batches, steps: int) -> dict[str, Any]:
    """Share of the wall time of ``steps`` training steps spent outside torch operators (torch.profiler).

    Operator time = the summed duration of top-level profiler events that are torch operators or autograd nodes;
    the rest is the Python interpreter, our step's bookkeeping and the profiler itself (so it is an upper bound).
    """
    from torch.profiler import ProfilerActivity, profile

    start_training(trainer)
    with silenced_fd(2), profile(activities=[ProfilerActivity.CPU]) as prof:
        t = time.perf_counter()
        for i in range(steps):
            trainer.forward_backward(batches[i % len(batches)])
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
        wall_us = (time.perf_counter() - t) * 1e6
    ops_us = sum(e.cpu_time_total for e in prof.events() if e.cpu_parent is None and not e.is_user_annotation)
    return {"python_overhead": max(0.0, 1.0 - ops_us / wall_us), "profiled_steps": steps}


@contextlib.contextmanager
def silenced_fd(fd: int):
    """Mute a file descriptor (the profiler's C++ start/stop lines go straight to fd 2)."""
    sys.stderr.flush()
    saved = os.dup(fd)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def peak_memory() -> tuple[float | None, str]:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.max_memory_allocated() / 2 ** 20, "CUDA max allocated"
    try:
        import resource  # POSIX only
    except ImportError:
        return None, "unavailable on this platform"
    # Linux reports ru_maxrss in KiB, macOS in bytes
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (2 ** 20 if sys.platform == "darwin" else 2 ** 10), "process max RSS"


# ----------------------------------------------------------------------------------------------- one configuration
def benchmark(method: str, backbone: str, *, precision: str | None = None, batch_size: int = 32,
              eval_batch_size: int | None = None, classes: int = 10, steps: int = 10, warmup: int = 2,
              calib: str = "tcpt", per_class: int | None = None, image_size: int = 256, workers: int = 0,
              config_file: str | None = None, profile: bool = False, n_batches: int = 3,
              opts: tuple[str, ...] = (), workdir: Path | None = None, verbose: bool = False,
              text_chunks: tuple[int, ...] = ()) -> dict[str, Any]:
    """All the figures of one (method, backbone) configuration, as a flat dict (see the module docstring).
    ``text_chunks``: only the evaluation batch at each of these TEST.TEXT_CHUNK values (measure_text_chunks)."""
    eval_batch_size = eval_batch_size or batch_size
    config_file = default_config_file(method) if config_file is None else config_file
    if per_class is None:  # half of the images train: enough for n_batches distinct batches, and >= 10 per class
        per_class = max(10, -(-2 * n_batches * batch_size // classes) + 1)
    owned = workdir is None
    tmp = tempfile.TemporaryDirectory(prefix="benchmark-") if owned else None
    work = Path(tmp.name) if tmp else Path(workdir)
    try:
        data_root = make_dataset(work / "data", classes, per_class, image_size)
        kw = dict(config_file=config_file, precision=precision, batch_size=batch_size,
                  eval_batch_size=eval_batch_size, workers=workers, opts=tuple(opts))
        with quiet(not verbose):
            plain = build_trainer(method, backbone, data_root, work, "plain", **kw)
        sync = _sync(plain.device)
        if plain.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        result: dict[str, Any] = {
            "method": method, "backbone": backbone, "precision": plain.precision, "device": str(plain.device),
            "config_file": os.path.relpath(config_file, REPO) if config_file else "", "calib": calib,
            "batch_size": batch_size, "eval_batch_size": eval_batch_size, "classes": classes,
            "images_per_class": per_class, "image_size": image_size, "workers": workers, "steps": steps,
            "warmup": warmup, "opts": list(opts),
            "learnable_params": sum(p.numel() for p in plain.learnable_parameters()),
        }
        if text_chunks:
            with quiet(not verbose):
                test_batches, _ = preload(plain.test_loader, n_batches)
                result.update(measure_text_chunks(plain, test_batches, list(text_chunks), steps, warmup, sync))
            result["load_after"] = load_average()
            return result
        with quiet(not verbose):
            batches, load_ms = preload(plain.train_loader_x, n_batches)
            result["data_ms_per_batch"] = med(load_ms)
            result["trains"] = trains(plain)
            result.update(dict.fromkeys(TRAIN_FIGURES))  # stay None for a method that does not train
            if result["trains"]:
                calib_tr = build_trainer(method, backbone, data_root, work, "calib", calib=calib, **kw)
                result.update(measure_training(plain, calib_tr, batches, steps, warmup, sync))
                result["calib_terms_ms"] = measure_calib_terms(calib_tr, batches[0], steps, sync)
                del calib_tr
                result["loop_overhead_ms"] = measure_loop(plain, batches)
                if profile:
                    result.update(measure_python_overhead(plain, batches, max(2, min(steps, 6))))
            test_batches, _ = preload(plain.test_loader, n_batches)
            result.update(measure_eval_batches(plain, test_batches, steps, warmup, sync))
            result.update(measure_cache(plain))
        if result.get("train_step_ms"):
            result["images_per_s"] = batch_size / result["train_step_ms"] * 1e3
            if result.get("calib_terms_ms") is not None:
                result["calib_terms_share"] = result["calib_terms_ms"] / result["train_step_ms"]
        result["eval_images_per_s"] = eval_batch_size / result["eval_batch_ms"] * 1e3
        result["peak_mem_mb"], result["peak_mem_kind"] = peak_memory()
        result["targets"] = check_targets(result)
        return result
    finally:
        if tmp is not None:
            tmp.cleanup()


def check_targets(result: dict[str, Any], targets: dict[str, tuple[str, float]] = TARGETS) -> dict[str, Any]:
    out = {}
    for key, (kind, bound) in targets.items():
        value = result.get(key)
        met = None if value is None else (value <= bound if kind == "max" else value >= bound)
        out[key] = {kind: bound, "value": value, "met": met}
    return out


# ----------------------------------------------------------------------------------------------- metrics at scale
def benchmark_metrics(n: int, c: int, repeats: int = 5, n_bins: int = 10, seed: int = SEED) -> dict[str, Any]:
    """Time and memory of ``compute_metrics`` on random N x C float64 logits (see the module docstring)."""
    import tracemalloc

    import numpy as np

    from calibration.metrics import classwise_ece, compute_metrics, softmax

    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=3.0, size=(n, c))
    labels = rng.integers(0, c, size=n)
    t, t_cpu = time.perf_counter(), time.process_time()
    compute_metrics(logits, labels, n_bins)
    first, first_cpu = time.perf_counter() - t, time.process_time() - t_cpu
    times, cpu = [], []
    for _ in range(max(1, repeats)):
        t, t_cpu = time.perf_counter(), time.process_time()
        compute_metrics(logits, labels, n_bins)
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - t_cpu)
    probs = softmax(logits)
    cw = []
    for _ in range(max(1, repeats)):
        t = time.perf_counter()
        classwise_ece(probs, labels, n_bins)
        cw.append(time.perf_counter() - t)
    del probs
    tracemalloc.start()
    try:
        compute_metrics(logits, labels, n_bins)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    result = {"n": n, "classes": c, "n_bins": n_bins, "repeats": max(1, repeats), "input_mib": logits.nbytes / 2 ** 20,
              "metrics_s": statistics.median(times), "metrics_first_s": first,
              "metrics_cpu_s": statistics.median(cpu), "metrics_first_cpu_s": first_cpu,
              "classwise_ece_s": statistics.median(cw), "metrics_peak_mib": peak / 2 ** 20,
              "samples": {"metrics_s": times, "metrics_cpu_s": cpu, "classwise_ece_s": cw}}
    result["metrics_memory_ratio"] = result["metrics_peak_mib"] / result["input_mib"]
    result["targets"] = check_targets(result, METRICS_TARGETS)
    return result


METRICS_BEGIN, METRICS_END = "<!-- metrics-benchmark:begin -->", "<!-- metrics-benchmark:end -->"


def render_metrics_section(r: dict[str, Any], machine: dict[str, Any], command: str) -> str:
    from tabulate import tabulate

    def target(key, unit):
        t = r["targets"][key]
        return f"{'met' if t['met'] else 'MISSED'} (target <= {t['max']:g}{unit})"

    rows = [("full metric set (compute_metrics)", f"{r['metrics_s']:.3f} s", target("metrics_s", " s")),
            ("its CPU time (user + system)", f"{r['metrics_cpu_s']:.3f} s", "what other processes cannot inflate"),
            ("first call (fresh buffers)", f"{r['metrics_first_s']:.3f} s",
             f"CPU {r['metrics_first_cpu_s']:.3f} s; the warm-up call, as an evaluation's single call"),
            ("classwise ECE alone", f"{r['classwise_ece_s']:.3f} s", "on the probabilities"),
            ("input (float64 logits)", f"{r['input_mib']:.0f} MiB", ""),
            ("peak memory allocated by one call", f"{r['metrics_peak_mib']:.0f} MiB",
             f"{r['metrics_memory_ratio']:.2f}x the input; " + target("metrics_memory_ratio", "x"))]
    lines = [METRICS_BEGIN, "## Metrics at scale", "",
             f"Generated by `{command}`; on {machine['cpu']} ({machine['cores']} cores), {machine['date']}, load "
             f"average before {machine.get('load_before')}, after {machine.get('load_after')}.", "",
             f"`calibration.metrics.compute_metrics` (all {len(_metric_keys())} metrics, {r['n_bins']} bins) on "
             f"N = {r['n']:,} random float64 logits over C = {r['classes']:,} classes (ImageNet's test size); "
             f"medians of {r['repeats']} calls after one warm-up call; memory is the tracemalloc peak of one call "
             "(numpy allocations above the input).", "",
             tabulate(rows, headers=["figure", "value", "note"], tablefmt="github"), "",
             "- The rows are read in blocks of about 2^20 values: each block's softmax goes into one reused "
             "buffer, from which every metric takes what it needs, so no N x C array is allocated (first-touching "
             "hundreds of MiB of fresh memory costs seconds of system time on some VMs). Classwise ECE bins only "
             "the probabilities above the first bin (fewer than n_bins per row) and takes the first bin as the "
             "column sum minus the rest.", METRICS_END]
    return "\n".join(lines) + "\n"


def _metric_keys() -> tuple[str, ...]:
    from calibration.metrics import METRIC_KEYS

    return METRIC_KEYS


def replace_metrics_section(text: str, section: str) -> str:
    """``text`` with its metrics section replaced by ``section`` (appended before the method notes if absent)."""
    if METRICS_BEGIN in text and METRICS_END in text:
        head, rest = text.split(METRICS_BEGIN, 1)
        tail = rest.split(METRICS_END, 1)[1].lstrip("\n")
        return head + section + ("\n" + tail if tail else "")
    anchor = "## How it is measured"
    if anchor in text:
        head, tail = text.split(anchor, 1)
        return head + section + "\n" + anchor + tail
    return (text.rstrip() + "\n\n" if text.strip() else "") + section


# ----------------------------------------------------------------------------------------------- machine, load
def load_average() -> list[float] | None:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def wait_for_load(threshold: float, max_wait_s: float, poll_s: float = 15.0) -> dict[str, Any]:
    """Wait until the 1-minute load average is below ``threshold`` (at most ``max_wait_s``)."""
    t0 = time.time()
    load = load_average()
    while load is not None and load[0] >= threshold and time.time() - t0 < max_wait_s:
        time.sleep(poll_s)
        load = load_average()
    return {"threshold": threshold, "waited_s": round(time.time() - t0, 1),
            "reached": load is None or load[0] < threshold}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    info = {"cpu": cpu_model(), "cores": os.cpu_count(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "platform": platform.platform(), "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds")}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


# ----------------------------------------------------------------------------------------------- report
def _f(value, fmt: str = ".1f", suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:{fmt}}{suffix}"


def _pct(value) -> str:
    if value is None:
        return "n/a"
    return f"{100 * value:+.1f}%" if abs(value) >= 0.01 or value == 0 else f"{100 * value:+.2g}%"


def _x(value) -> str:
    if value is None:
        return "n/a"
    return f"{value:.2f}x" if value >= 0.1 else f"{value:.2g}x"


def _target(result, key) -> str:
    t = result["targets"][key]
    if t["met"] is None:
        return "not applicable"
    bound = f"<= {100 * t['max']:.0f}%" if "max" in t else f">= {t['min']:.0f}x"
    return f"{'met' if t['met'] else 'MISSED'} (target {bound})"


def result_table(r: dict[str, Any]) -> str:
    from tabulate import tabulate

    rows = [
        ["data loading per training batch", _f(r.get("data_ms_per_batch"), ".1f", " ms"),
         f"{r['batch_size']} images, {r['workers']} workers"],
        ["training step (CoOp-style forward_backward)", _f(r.get("train_step_ms"), ".1f", " ms"),
         f"{_f(r.get('images_per_s'), '.1f')} images/s"],
        [f"training step with --calib {r['calib']}", _f(r.get("train_step_calib_ms"), ".1f", " ms"), ""],
        ["**calibration overhead**", _pct(r.get("calib_overhead")), _target(r, "calib_overhead")],
        ["timing noise (plain step vs itself)", _pct(r.get("timing_noise")), "A/A in the same rounds"],
        ["calib terms alone (forward + backward)", _f(r.get("calib_terms_ms"), ".2f", " ms"),
         f"{_pct(r.get('calib_terms_share')).lstrip('+')} of a plain step"],
        ["paper-style step (+ frozen image pass, zero-shot logits)", _f(r.get("paper_step_ms"), ".1f", " ms"),
         f"{_x(r.get('paper_step_ratio'))} our calibrated step"],
        ["engine loop overhead per step", _f(r.get("loop_overhead_ms"), ".2f", " ms"), "meters, logging"],
        ["python overhead in a step", _pct(r.get("python_overhead")).lstrip("+"), "outside torch ops (profiler)"],
        ["text features at evaluation (once)", _f(r.get("eval_text_ms"), ".1f", " ms"), f"{r['classes']} classes"],
        ["evaluation batch", _f(r.get("eval_batch_ms"), ".1f", " ms"),
         f"{r['eval_batch_size']} images, {_f(r.get('eval_images_per_s'), '.1f')} images/s"],
        ["paper-style evaluation batch (text recomputed)", _f(r.get("paper_eval_batch_ms"), ".1f", " ms"),
         f"{_x(r.get('paper_eval_ratio'))} ours"],
        ["first evaluation (fills the feature cache)", _f(r.get("first_eval_s"), ".2f", " s"),
         f"{r['num_test_images']} test images"],
        ["second evaluation (reads it)", _f(r.get("second_eval_s"), ".3f", " s"), r.get("cache_note") or ""],
        ["**cache speedup**", _x(r.get("cache_speedup")), _target(r, "cache_speedup")],
        ["peak memory", _f(r.get("peak_mem_mb"), ".0f", " MB"), r["peak_mem_kind"]],
    ]
    if "python_overhead" not in r:
        rows = [row for row in rows if row[0] != "python overhead in a step"]
    return tabulate(rows, headers=["figure", "value", "note"], tablefmt="github")


def text_chunk_table(r: dict[str, Any]) -> str:
    from tabulate import tabulate

    base = next(iter(r["text_chunk_ms"]))
    rows = [[f"{c}" + (" (the default)" if int(c) == r.get("text_chunk_default") else ""),
             _f(ms, ".1f", " ms"), _x(r["text_chunk_ratio"][c])]
            for c, ms in r["text_chunk_ms"].items()]
    return tabulate(rows, headers=["TEST.TEXT_CHUNK", "evaluation batch", f"per-round median vs {base}"],
                    tablefmt="github")


def summary_table(runs: list[dict[str, Any]]) -> str:
    from tabulate import tabulate

    rows = [[f"{r['method']} / {r['backbone']} ({r['precision']}, {r['device']})",
             f"{_pct(r.get('calib_overhead'))} (noise {_pct(r.get('timing_noise'))})",
             _pct(r.get("calib_terms_share")).lstrip("+"), _x(r.get("cache_speedup")),
             _x(r.get("paper_step_ratio")), _x(r.get("paper_eval_ratio"))] for r in runs]
    return tabulate(rows, headers=["configuration", "calib overhead (target <= 5%)", "calib terms alone",
                                   "cache speedup (target >= 10x)", "paper-style step / ours",
                                   "paper-style eval batch / ours"], tablefmt="github")


def render_markdown(runs: list[dict[str, Any]], machine: dict[str, Any], command: str) -> str:
    lines = ["# Performance", "",
             f"Generated by `{command}` (tools/benchmark.py); rerun it to refresh this page.", "",
             "## Machine", "",
             f"- CPU: {machine['cpu']}, {machine['cores']} cores; torch {machine['torch']} with "
             f"{machine['torch_threads']} thread{'' if machine['torch_threads'] == 1 else 's'}; "
             f"Python {machine['python']}"
             + (f"; GPU: {machine['gpu']}" if machine.get("gpu") else ""),
             f"- {machine['platform']}", f"- date (UTC): {machine['date']}",
             f"- load average (1, 5, 15 min) before: {machine.get('load_before')}, after: "
             f"{machine.get('load_after')}" + _wait_note(machine.get("load_wait")), ""]
    chunk_runs = [r for r in runs if "text_chunk_ms" in r]
    runs = [r for r in runs if "text_chunk_ms" not in r]
    if runs:
        lines += ["## Summary", "", summary_table(runs), ""]
    for r in chunk_runs:
        lines += [f"## {r['method']} evaluation by TEST.TEXT_CHUNK on `{r['backbone']}` ({r['precision']}, "
                  f"{r['device']})", "",
                  f"One test batch of {r['eval_batch_size']} images over {r['num_classes_eval']} classes (frozen "
                  f"image features given, as from the cache); medians of {r['steps']} interleaved rounds after "
                  f"{r['warmup']} warm-up rounds; load average after: {r.get('load_after')}. The logits of every "
                  f"chunk differ from the first's by at most {r['text_chunk_logits_max_diff']:.2g}.", "",
                  text_chunk_table(r), ""]
    for r in runs:
        lines += [f"## {r['method']} on `{r['backbone']}` ({r['precision']}, {r['device']})", "",
                  f"{r['classes']} classes, {r['images_per_class']} generated {r['image_size']}px JPEGs per class, "
                  f"{r['learnable_params']:,} learnable values, config `{r['config_file'] or 'defaults'}`"
                  + (f" with `{' '.join(r['opts'])}`" if r.get("opts") else "") + "; "
                  f"medians of {r['steps']} rounds after {r['warmup']} warm-up rounds.", "",
                  result_table(r), ""]
        lines += _findings(r) + [""]
    lines += METHOD_NOTES if runs else CHUNK_NOTES
    return "\n".join(lines).rstrip() + "\n"


def _wait_note(wait) -> str:
    if not wait:
        return ""
    state = "reached" if wait["reached"] else "NOT reached"
    return f" (waited {wait['waited_s']} s for a 1-min load below {wait['threshold']}: {state})"


def _findings(r: dict[str, Any]) -> list[str]:
    out = []
    ov, step = r.get("calib_overhead"), r.get("train_step_ms")
    if ov is not None and step:
        noise = r.get("timing_noise")
        out.append(f"- `--calib {r['calib']}` measured {_pct(ov)} of a training step, with a timing noise of "
                   f"{_pct(noise)} (the plain step against itself in the same rounds). Its terms alone, forward "
                   f"and backward, take {_f(r.get('calib_terms_ms'), '.2f')} ms of a {step:.1f} ms step "
                   f"({_pct(r.get('calib_terms_share')).lstrip('+')}): the real overhead, free of noise.")
    load = r.get("data_ms_per_batch")
    if load and step:
        out.append(f"- Loading a training batch in the main process takes {_x(load / step)} a training step: "
                   f"DATALOADER.NUM_WORKERS >= {max(1, math.ceil(load / step))} keeps the step fed (loader workers "
                   "use one thread each; batches are pinned and copied without blocking when CUDA is used).")
    if r.get("python_overhead") is not None:
        out.append(f"- {100 * r['python_overhead']:.1f}% of a step's wall time is outside torch operators (Python, "
                   "module calls, the profiler's own bookkeeping: an upper bound); the engine loop around the step "
                   f"adds {_f(r.get('loop_overhead_ms'), '.3f')} ms.")
    if r.get("paper_step_ratio"):
        out.append(f"- A step doing the paper code's extra frozen image pass costs {_x(r['paper_step_ratio'])} our "
                   "calibrated step (a lower bound: the ~8 dead regularizers are not emulated).")
    if r.get("paper_eval_ratio"):
        out.append(f"- Recomputing the text features at every test batch, as the paper's code does, makes an "
                   f"evaluation batch {_x(r['paper_eval_ratio'])} slower than computing them once.")
    cs = r.get("cache_speedup")
    if cs is not None:
        out.append(f"- The second evaluation reads {r['num_test_images']} cached image features: {_x(cs)} faster"
                   f" ({r['first_eval_s']:.2f} s -> {r['second_eval_s']:.3f} s).")
    elif r.get("cache_note"):
        out.append(f"- No cache speedup: {r['cache_note']}.")
    return out


METHOD_NOTES = [
    "## How it is measured", "",
    "- Trainers are built as train.py builds them, on a generated image folder (flat-colour JPEGs, so decoding "
    "is cheaper than for real photos: data-loading times and the cache speedup are conservative).",
    "- Training steps call the trainer's real `forward_backward` on preloaded batches; the plain, `--calib` and "
    "paper-style steps are interleaved round by round and each ratio is the median of per-round ratios, so load "
    "from other processes affects them alike. Evaluation batches run under `no_grad` with the method's precision.",
    "- Paper-style step: our calibrated step plus a frozen image-encoder pass and zero-shot logits per step "
    "(docs/method_notes.md#the-papers-own-code). Paper-style evaluation batch: the text features recomputed per batch "
    "(docs/method_notes.md#what-is-computed-once).",
    "- Cache speedup: wall time of `PromptTrainer.predict` on the test split, first (images decoded, encoded and "
    "cached) over second (features read from `TEST.FEATURE_CACHE_DIR`).",
    "- Peak memory on CPU is the whole process's maximum RSS (two trainers, the data and Python included).",
    "",
]


CHUNK_NOTES = [
    "## How it is measured", "",
    "- The trainer is built as train.py builds it; every chunk size evaluates the same batches in the same rounds "
    "(order reversed every other round), so a busy machine slows them alike: compare the ratios, not the absolute "
    "times. TEST.TEXT_CHUNK bounds the prompts per text-encoder call (CoCoOp: groups of chunk // C images).",
    "- Chunks at or above the batch's B·C prompts do the same work: their ratio shows the timing noise. A chunk "
    "of C (the classes) is the paper's code's loop: one pass of the C prompts per image.",
    "",
]


# ----------------------------------------------------------------------------------------------- CLI
def _per_backbone(values: list, n: int, flag: str) -> list:
    if len(values) == 1:
        return values * n
    if len(values) != n:
        raise SystemExit(f"{flag}: give one value or one per backbone ({n}), got {len(values)}")
    return values


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tools/benchmark.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", default="CoOp", help="a registered trainer name (default CoOp)")
    p.add_argument("--backbone", nargs="+", default=["tiny-vit"],
                   help=f"one or more backbones (default tiny-vit; {RANDOM_VIT_B16}: ViT-B/16 shapes, random weights)")
    p.add_argument("--precision", default=None, choices=["fp16", "fp32", "amp", "bf16"],
                   help="TRAINER.<METHOD>.PREC (default: the method config's)")
    p.add_argument("--batch-size", nargs="+", type=int, default=[32], help="training batch (one, or one per backbone)")
    p.add_argument("--eval-batch-size", nargs="+", type=int, default=None, help="default: the training batch size")
    p.add_argument("--classes", type=int, default=10, help="classes of the generated dataset (default 10)")
    p.add_argument("--steps", nargs="+", type=int, default=[10], help="timed rounds (one, or one per backbone)")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds first (default 2)")
    p.add_argument("--calib", default="tcpt", help="the --calib objective of the calibrated step (default tcpt)")
    p.add_argument("--config-file", default=None, help="method yaml (default: its shortest vit_b16 yaml)")
    p.add_argument("--per-class", nargs="+", type=int, default=None,
                   help="generated images per class, 30%% of them test images (one, or one per backbone; default: "
                        "enough for the training batches)")
    p.add_argument("--image-size", type=int, default=256, help="generated image side in pixels (default 256)")
    p.add_argument("--workers", type=int, default=0, help="DATALOADER.NUM_WORKERS (default 0)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--profile", action="store_true", help="also measure the Python overhead (torch.profiler)")
    p.add_argument("--wait-load", type=float, default=None, metavar="L",
                   help="first wait until the 1-minute load average is below L")
    p.add_argument("--wait-max", type=float, default=900.0, help="give up waiting after this many seconds")
    p.add_argument("--json", action="store_true", help="print the figures as JSON on stdout")
    p.add_argument("--out", default=None, help="write the Markdown report here (e.g. docs/performance.md)")
    p.add_argument("--verbose", action="store_true", help="show the trainers' console output")
    p.add_argument("--text-chunks", nargs="+", type=int, default=None, metavar="N",
                   help="measure only one evaluation batch at each of these TEST.TEXT_CHUNK values (CoCoOp)")
    p.add_argument("--metrics", nargs=2, type=int, default=None, metavar=("N", "C"),
                   help="measure compute_metrics on N x C random logits instead of a trainer (e.g. 50000 1000); "
                        "--out then rewrites only the report's metrics section")
    p.add_argument("--opts", nargs="+", default=[], metavar="KEY VALUE",
                   help="config KEY VALUE pairs for every trainer, as train.py's trailing opts "
                        "(e.g. TRAINER.COOP.CLASS_TOKEN_POSITION middle)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from common.errors import UserError

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.metrics:
        return main_metrics(args, argv)
    register_random_vit_b16()
    n = len(args.backbone)
    batch = _per_backbone(args.batch_size, n, "--batch-size")
    steps = _per_backbone(args.steps, n, "--steps")
    eval_batch = _per_backbone(args.eval_batch_size, n, "--eval-batch-size") if args.eval_batch_size else batch
    per_class = _per_backbone(args.per_class, n, "--per-class") if args.per_class else [None] * n
    machine = machine_info()
    if args.wait_load is not None:
        machine["load_wait"] = wait_for_load(args.wait_load, args.wait_max)
    machine["load_before"] = load_average()
    runs = []
    try:
        for backbone, b, s, eb, pc in zip(args.backbone, batch, steps, eval_batch, per_class):
            runs.append(benchmark(args.method, backbone, precision=args.precision, batch_size=b,
                                  eval_batch_size=eb, classes=args.classes, steps=s, warmup=args.warmup,
                                  calib=args.calib, per_class=pc, image_size=args.image_size,
                                  workers=args.workers, config_file=args.config_file, profile=args.profile,
                                  opts=tuple(args.opts), verbose=args.verbose,
                                  text_chunks=tuple(args.text_chunks or ())))
    except UserError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    machine["load_after"] = load_average()
    if args.out:
        command = "python tools/benchmark.py " + " ".join(argv if argv is not None else sys.argv[1:])
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(render_markdown(runs, machine, command))
    if args.json:
        figures = dict(runs[0], machine=machine) if n == 1 else {"runs": runs, "machine": machine}
        print(json.dumps(figures, indent=2, default=str))
    else:
        for r in runs:
            print(f"\n{r['method']} on {r['backbone']} ({r['precision']}, {r['device']})")
            print(text_chunk_table(r) if "text_chunk_ms" in r else result_table(r))
    return 0


def main_metrics(args, argv) -> int:
    """``--metrics N C``: the metrics benchmark alone."""
    n, c = args.metrics
    if n < 1 or c < 2:
        print(f"Error: --metrics N C needs N >= 1 and C >= 2, got {n} {c}", file=sys.stderr)
        return 1
    machine = machine_info()
    if args.wait_load is not None:
        machine["load_wait"] = wait_for_load(args.wait_load, args.wait_max)
    machine["load_before"] = load_average()
    result = benchmark_metrics(n, c, repeats=args.steps[0])
    machine["load_after"] = load_average()
    if args.out:
        from common.atomic import atomic_write_text

        command = "python tools/benchmark.py " + " ".join(argv if argv is not None else sys.argv[1:])
        out = Path(args.out)
        old = out.read_text() if out.is_file() else ""
        atomic_write_text(out, replace_metrics_section(old, render_metrics_section(result, machine, command)))
    if args.json:
        print(json.dumps(dict(result, machine=machine), indent=2, default=str))
    else:
        print(render_metrics_section(result, machine, "tools/benchmark.py --metrics"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
