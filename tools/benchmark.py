#!/usr/bin/env python
"""Measure how fast a method trains and evaluates, and write docs/performance.md.

    python tools/benchmark.py --method M --backbone B [B2 ...] [--precision P] [--batch-size N [N2 ...]]
        [--classes C] [--steps S [S2 ...]] [--per-class K [K2 ...]] [--calib NAME] [--threads T] [--profile]
        [--json] [--out docs/performance.md] [--wait-load 1.5]
    python tools/benchmark.py --metrics 50000 1000 [--steps R] [--json] [--out docs/performance.md]
    python tools/benchmark.py --real-shape [--quick] [--cap-gib 8] [--json] [--out docs/performance.md]
    python tools/benchmark.py --cache-scale 2100 [--json] [--out docs/performance.md]

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

``--real-shape`` measures ViT-B/16 shapes with random weights (experiments/benchmark/realshape.py): the text tower
truncated at the EOT against all 77 positions (and per length group), CoOp/CoCoOp/MaPLe/PromptSRC steps with and
without truncation beside the reference-shaped step, peak training memory per configuration in capped subprocesses,
and the toy {plain, --calib} pair in lockstep against two separate runs. ``--cache-scale N`` measures the cached
evaluation on about N test images of the tiny backbone and profiles the second (cached) evaluation. Both rewrite only their own section of
``--out``. The logic lives in ``experiments/benchmark/``; this file is its command line.

Variants are timed interleaved, round by round, so a busy machine slows them alike; ratios are medians of the
per-round ratios. ``--backbone random-vit-b16`` is a randomly initialised CLIP with ViT-B/16's shapes (the real
cost of ViT-B/16 without its weights).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from experiments.benchmark.common import (RANDOM_VIT_B16, TRAIN_FIGURES, default_config_file,  # noqa: E402,F401
                                          interleave, load_average, machine_info, paired_ratio,
                                          register_random_vit_b16, wait_for_load, cpu_model, make_dataset)
from experiments.benchmark.metrics_bench import (benchmark_metrics, render_metrics_section,  # noqa: E402
                                                 replace_metrics_section)
from experiments.benchmark.report import _pct, _x, render_markdown, result_table, text_chunk_table  # noqa: E402,F401
from experiments.benchmark.trainer_bench import benchmark  # noqa: E402


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
    p.add_argument("--real-shape", action="store_true",
                   help="measure ViT-B/16 shapes: truncation at the EOT, method steps, peak memory (~20 min)")
    p.add_argument("--quick", action="store_true", help="with --real-shape: tiny shapes, one round (a smoke test)")
    p.add_argument("--cap-gib", type=float, default=8.0, help="memory cap of each --real-shape memory subprocess")
    p.add_argument("--state", default=None, help="with --real-shape: save each finished stage here; rerun resumes")
    p.add_argument("--budget-min", type=float, default=None,
                   help="with --real-shape: start no new stage after this many minutes")
    p.add_argument("--cache-scale", type=int, default=None, metavar="N",
                   help="measure the cached evaluation on about N test images (tiny-vit) and profile it")
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
    if args.real_shape or args.cache_scale:
        return main_section(args, argv)
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
        command = "python tools/benchmark.py " + " ".join(argv if argv is not None else sys.argv[1:])
        out = Path(args.out)
        old = out.read_text() if out.is_file() else ""
        _write(out, replace_metrics_section(old, render_metrics_section(result, machine, command)))
    if args.json:
        print(json.dumps(dict(result, machine=machine), indent=2, default=str))
    else:
        print(render_metrics_section(result, machine, "tools/benchmark.py --metrics"))
    return 0


def main_section(args, argv) -> int:
    """``--real-shape`` / ``--cache-scale``: one measurement that rewrites its own section of ``--out``."""
    from experiments.benchmark import cache_bench, realshape_run

    if args.threads is None:
        torch.set_num_threads(1)
    machine = machine_info()
    machine["torch"] = torch.__version__
    if args.wait_load is not None:
        machine["load_wait"] = wait_for_load(args.wait_load, args.wait_max)
    machine["load_before"] = load_average()
    if args.real_shape:
        result = realshape_run.run(quick=args.quick, cap_gib=args.cap_gib,
                                   log=lambda m: print(m, file=sys.stderr, flush=True),
                                   state=Path(args.state) if args.state else None,
                                   budget_s=None if args.budget_min is None else args.budget_min * 60)
        render, replace = realshape_run.render, realshape_run.replace_section
    else:
        result = cache_bench.run(args.cache_scale, log=lambda m: print(m, file=sys.stderr, flush=True))
        render, replace = cache_bench.render, cache_bench.replace_section
    machine["load_after"] = load_average()
    shown = list(argv if argv is not None else sys.argv[1:])
    if "--state" in shown:  # a scratch file of this machine: not part of the command to rerun
        i = shown.index("--state")
        del shown[i:i + 2]
    command = "python tools/benchmark.py " + " ".join(shown)
    section = render(result, machine, command)
    if args.out:
        out = Path(args.out)
        _write(out, replace(out.read_text() if out.is_file() else "", section))
    if args.json:
        print(json.dumps(dict(result, machine=machine), indent=2, default=str))
    else:
        print(section)
    return 0


def _write(path: Path, text: str) -> None:
    from common.atomic import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)


if __name__ == "__main__":
    sys.exit(main())
