"""tools/benchmark.py: the figures it reports (JSON keys, their arithmetic), the Markdown report, any registered
method (including one that does not train), and its helpers (interleaving, paired ratios, config choice)."""
from __future__ import annotations

import json
import re
import statistics
import sys

import pytest
import torch

from tools import benchmark

torch.set_num_threads(1)
FAST = ["--backbone", "tiny-vit", "--batch-size", "4", "--steps", "2", "--warmup", "1", "--classes", "2",
        "--image-size", "32"]
FIGURES = {"train_step_ms", "train_step_calib_ms", "calib_overhead", "eval_batch_ms", "images_per_s",
           "peak_mem_mb", "cache_speedup", "data_ms_per_batch", "paper_step_ms", "paper_step_ratio",
           "paper_eval_batch_ms", "paper_eval_ratio", "eval_text_ms", "first_eval_s", "second_eval_s",
           "loop_overhead_ms", "python_overhead", "eval_images_per_s", "calib_terms_ms", "calib_terms_share",
           "timing_noise", "targets", "machine"}



@pytest.fixture(scope="module")
def coop(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "performance.md"
    return run_tool(["--method", "CoOp", *FAST, "--profile", "--json", "--out", str(out),
                     "--opts", "TRAINER.COOP.N_CTX", "4"]), out


def run_tool(argv) -> dict:
    import io
    from contextlib import redirect_stdout

    buf = io.StringIO()
    with redirect_stdout(buf):
        assert benchmark.main(argv) == 0
    return json.loads(buf.getvalue())


def test_json_names_every_figure(coop):
    r, _ = coop
    assert FIGURES <= set(r)
    assert r["method"] == "CoOp" and r["backbone"] == "tiny-vit" and r["precision"] == "fp32"  # fp16 -> CPU fp32
    assert r["calib"] == "tcpt" and r["trains"] is True and r["batch_size"] == 4 and r["classes"] == 2
    assert r["learnable_params"] == 4 * 128 and r["opts"] == ["TRAINER.COOP.N_CTX", "4"]  # --opts reach the cfg
    for key in FIGURES - {"targets", "machine", "calib_overhead", "timing_noise"}:
        assert isinstance(r[key], float) and r[key] > 0, key
    assert r["peak_mem_kind"] == "process max RSS"
    assert 0 <= r["python_overhead"] < 1
    assert set(r["machine"]) >= {"cpu", "cores", "torch", "torch_threads", "date", "load_before", "load_after"}


def test_figures_are_consistent(coop):
    r, _ = coop
    s = r["samples"]
    assert len(s["train_step_ms"]) == len(s["train_step_calib_ms"]) == r["steps"]
    assert r["train_step_ms"] == statistics.median(s["train_step_ms"])
    ratios = [c / p for c, p in zip(s["train_step_calib_ms"], s["train_step_ms"])]
    assert r["calib_overhead"] == pytest.approx(statistics.median(ratios) - 1)
    assert r["images_per_s"] == pytest.approx(4 / r["train_step_ms"] * 1000)
    again = [a / p for a, p in zip(s["train_step_again_ms"], s["train_step_ms"])]
    assert r["timing_noise"] == pytest.approx(statistics.median(again) - 1)
    assert r["calib_terms_share"] == pytest.approx(r["calib_terms_ms"] / r["train_step_ms"])
    assert r["cache_speedup"] == pytest.approx(r["first_eval_s"] / r["second_eval_s"])
    assert r["cache_speedup"] > 1 and r["cache_note"] == ""
    assert r["num_test_images"] == 2 * round(0.3 * r["images_per_class"])  # ImageFolder's 50/20/30 split
    t = r["targets"]
    assert t["calib_overhead"]["max"] == 0.05 and t["calib_overhead"]["met"] == (r["calib_overhead"] <= 0.05)
    assert t["cache_speedup"]["min"] == 10 and t["cache_speedup"]["met"] == (r["cache_speedup"] >= 10)


def test_markdown_report(coop):
    r, out = coop
    text = out.read_text()
    assert text.startswith("# Performance\n")
    assert "python tools/benchmark.py --method CoOp" in text and "with `TRAINER.COOP.N_CTX 4`" in text
    for needle in ("CPU: ", "cores; torch", " thread", "date (UTC)", "load average", "## Summary",
                   "## CoOp on `tiny-vit`", "**calibration overhead**", "**cache speedup**", "paper-style step",
                   "How it is measured"):
        assert needle in text, needle
    assert benchmark._pct(r["calib_overhead"]) in text and benchmark._x(r["cache_speedup"]) in text


def test_method_that_does_not_train(tmp_path):
    r = run_tool(["--method", "ZeroshotCLIP", *FAST, "--json"])
    assert r["trains"] is False
    assert all(r[k] is None for k in benchmark.TRAIN_FIGURES)
    assert r["targets"]["calib_overhead"]["met"] is None
    assert r["eval_batch_ms"] > 0 and r["cache_speedup"] > 1


def test_unknown_method_is_one_clear_error(capsys):
    assert benchmark.main(["--method", "CoOOp", *FAST]) == 1
    err = capsys.readouterr().err
    assert "CoOOp" in err and "CoOp" in err and "Traceback" not in err


def test_interleave_alternates_the_order_and_drops_warmup():
    calls = []
    samples = benchmark.interleave({"a": lambda r: calls.append(("a", r)), "b": lambda r: calls.append(("b", r))},
                                   rounds=2, warmup=1, sync=lambda: None)
    assert calls == [("a", 0), ("b", 0), ("b", 1), ("a", 1), ("a", 2), ("b", 2)]
    assert len(samples["a"]) == len(samples["b"]) == 2


def test_paired_ratio_is_the_median_of_per_round_ratios():
    assert benchmark.paired_ratio([2.0, 30.0, 4.0], [1.0, 10.0, 4.0]) == 2.0  # ratios 2, 3, 1
    assert benchmark.paired_ratio([], [1.0]) is None


def test_default_config_is_the_methods_vit_b16_yaml():
    assert benchmark.default_config_file("CoOp").endswith("configs/trainers/CoOp/vit_b16_ep50.yaml")
    assert benchmark.default_config_file("NoSuchMethod") == ""


def test_random_vit_b16_has_vit_b16_shapes():
    import clip

    benchmark.register_random_vit_b16()
    from clip.backbones import get_backbone

    model = get_backbone(benchmark.RANDOM_VIT_B16)("cpu", "fp32", 0)
    assert isinstance(model, torch.nn.Module)
    n = sum(p.numel() for p in model.parameters())
    assert 149e6 < n < 151e6  # ViT-B/16 CLIP has 149.6M parameters
    assert clip.VisionEncoder(model).width == 768 and clip.TextEncoder(model).width == 512


def test_text_chunk_figures_and_report(tmp_path):
    """--text-chunks: one CoCoOp evaluation batch per TEST.TEXT_CHUNK, interleaved; the same logits at each."""
    out = tmp_path / "chunk.md"
    r = run_tool(["--method", "CoCoOp", *FAST, "--text-chunks", "8", "1", "2", "--json", "--out", str(out)])
    assert list(r["text_chunk_ms"]) == ["8", "1", "2"] and all(v > 0 for v in r["text_chunk_ms"].values())
    assert r["text_chunk_ratio"]["8"] == 1.0 and r["text_chunk_logits_max_diff"] < 1e-5
    assert r["num_classes_eval"] == 2 and "train_step_ms" not in r  # only the evaluation batch is timed
    text = out.read_text()
    assert "## CoCoOp evaluation by TEST.TEXT_CHUNK on `tiny-vit`" in text
    assert re.search(r"\|\s+8 \| [0-9.]+ ms\s+\| 1\.00x", text)
    assert "## Summary" not in text and "compare the ratios" in text


def test_metrics_mode_rewrites_only_its_section(tmp_path):
    out = tmp_path / "performance.md"
    out.write_text("# Performance\n\ntrainer figures\n\n## How it is measured\n\n- notes\n")
    r = run_tool(["--metrics", "300", "20", "--steps", "2", "--json", "--out", str(out)])
    assert r["n"] == 300 and r["classes"] == 20 and len(r["samples"]["metrics_s"]) == 2
    assert 0 < r["metrics_cpu_s"] and 0 < r["metrics_first_cpu_s"] and len(r["samples"]["metrics_cpu_s"]) == 2
    assert r["input_mib"] == pytest.approx(300 * 20 * 8 / 2 ** 20)
    assert r["metrics_memory_ratio"] == pytest.approx(r["metrics_peak_mib"] / r["input_mib"])
    assert r["targets"]["metrics_s"]["met"] == (r["metrics_s"] <= 1.0)
    text = out.read_text()
    assert text.startswith("# Performance\n\ntrainer figures\n") and text.count("## Metrics at scale") == 1
    assert text.index("## Metrics at scale") < text.index("## How it is measured")
    run_tool(["--metrics", "200", "10", "--steps", "1", "--json", "--out", str(out)])  # replaced, not appended
    text = out.read_text()
    assert text.count("## Metrics at scale") == 1 and "N = 200 random" in text and text.endswith("- notes\n")
