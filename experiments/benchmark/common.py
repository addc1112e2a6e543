"""Shared pieces of the benchmarks: the random ViT-B/16-shaped backbone, trainers built as train.py builds them,
interleaved timing, and the machine/load facts every report carries."""
from __future__ import annotations

import contextlib
import datetime
import io
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch


REPO = Path(__file__).resolve().parents[2]
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
    import trainers  # noqa: F401  (registers the methods before their config node is looked up)
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


def check_targets(result: dict[str, Any], targets: dict[str, tuple[str, float]] | None = None) -> dict[str, Any]:
    out = {}
    targets = TARGETS if targets is None else targets
    for key, (kind, bound) in targets.items():
        value = result.get(key)
        met = None if value is None else (value <= bound if kind == "max" else value >= bound)
        out[key] = {kind: bound, "value": value, "met": met}
    return out
