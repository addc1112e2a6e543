"""One (method, backbone) configuration measured as train.py builds it: training steps plain / --calib /
paper-style, the --calib terms alone, evaluation batches, TEST.TEXT_CHUNK, the on-disk feature cache, the engine
loop and Python overheads (figures documented in tools/benchmark.py)."""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .common import (REPO, TRAIN_FIGURES, _sync, build_trainer, check_targets, default_config_file, interleave,
                     load_average, make_dataset, med, paired_ratio, preload, quiet)

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
