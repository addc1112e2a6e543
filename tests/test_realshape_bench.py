"""The real-shape and cache benchmarks' arithmetic and reports (experiments/benchmark/): fits, targets, the
Markdown section, class names, and one tiny run of each measurement."""
from __future__ import annotations

import pytest

from experiments.benchmark import cache_bench
from experiments.benchmark import realshape as R
from experiments.benchmark import realshape_run as RR

MACHINE = {"cpu": "cpu", "cores": 2, "date": "today", "torch": "2", "load_before": [1], "load_after": [1]}


def _mem(method, classes, batch, trunc, peak, chunk=0):
    return {"method": method, "classes": classes, "batch": batch, "truncate": trunc, "checkpoint_chunk": chunk,
            "cap_gib": 8.0, "fits": peak is not None, "peak_mib": peak or 5500.0, "step_s": 1.0}


def test_linear_fit_and_largest_fitting_class_count():
    pts = [_mem("CoOp", 100, 32, True, 2000.0), _mem("CoOp", 300, 32, True, 4000.0),
           _mem("CoOp", 1000, 32, True, None)]
    assert R.linear_fit(pts) == (1000.0, 10.0)
    assert R.largest_fitting(pts, 8 * 1024) == int((8 * 1024 - 1000) / 10)
    assert R.largest_fitting(pts[:1], 8 * 1024) is None
    pts[-1]["peak_mib"] = 5000.0  # where the failed run stood when the cap stopped it
    assert R.rss_ceiling(pts) == 5000.0
    row, = R.memory_table_rows(pts, 8.0)
    assert row["largest_fitting"] == 400 and row["largest_at_cap_rss"] == int((8 * 1024 - 1000) / 10)


def test_targets_extrapolate_memory_when_neither_path_fits():
    result = {"text": {"text_ratio": 4.0}, "cap_gib": 8.0,
              "steps": [{"method": "CoOp", "classes": 100, "batch": 32, "ratio": 1.5, "full_ms": 30e3, "cut_ms": 20e3,
                         "image_forward_ms": 12e3, "reference_ms": 42e3, "reference_ratio": 2.1,
                         "checkpoint_chunk": 25, "checkpoint_cost": 1.2},
                        {"method": "CoCoOp", "classes": 100, "batch": 4, "ratio": 3.0, "full_ms": 9e3, "cut_ms": 3e3}],
              "memory": [_mem("CoOp", 100, 32, True, 2000.0), _mem("CoOp", 300, 32, True, 4000.0),
                         _mem("CoOp", 1000, 32, True, None), _mem("CoOp", 50, 32, False, 3000.0),
                         _mem("CoOp", 100, 32, False, 5000.0), _mem("CoOp", 1000, 32, False, None)]}
    t = RR.targets(result)
    assert t["text_ratio"]["met"] and t["coop_step_ratio"]["met"] and t["cocoop_step_ratio"]["met"] is False
    assert t["memory_share_1000"]["value"] == pytest.approx((1000 + 10 * 1000) / (1000 + 40 * 1000))
    assert t["memory_share_1000"]["met"] and result["memory_share_extrapolated"]
    result.update(text=None, grouping=None, lockstep={"available": False, "note": "x"}, backbone="random-vit-b16",
                  not_measured=[["step", "MaPLe", 100, 4, False]], targets=t)
    text = RR.render(result, MACHINE, "python tools/benchmark.py --real-shape")
    assert text.startswith(RR.SECTION[0]) and text.rstrip().endswith(RR.SECTION[1])
    assert "image forward of 32 images (12.00 s" in text and "1.20x the truncated step" in text
    assert "does not fit in 8 GiB" in text and "extrapolated" in text and "step MaPLe 100 4 False" in text


def test_section_replacement_keeps_the_rest():
    doc = "# Performance\n\nold\n\n## How it is measured\n\n- x\n"
    once = RR.replace_section(doc, f"{RR.SECTION[0]}\nA\n{RR.SECTION[1]}\n")
    assert once.index("A") < once.index("## How it is measured") and "old" in once
    twice = RR.replace_section(once, f"{RR.SECTION[0]}\nB\n{RR.SECTION[1]}\n")
    assert "\nA\n" not in twice and "\nB\n" in twice
    assert twice.count(RR.SECTION[0]) == 1


def test_imagenet_folder_names_are_unique_and_readable():
    names = R.imagenet_classnames(1000)
    folders = R.folder_names(names)
    assert len(set(folders)) == 1000 and folders[0] == "tench"
    assert all("/" not in f and " " not in f for f in folders)


def test_lockstep_summary_states_the_measured_ratios(monkeypatch, tmp_path):
    """The lockstep line of the report is the lockstep benchmark's own figures (experiments.lockstep_bench)."""
    import experiments.lockstep_bench as LB

    seen = {}

    def fake(runs, workdir):
        seen.update(runs=runs, workdir=workdir)
        return {"separate": {"wall_s": 100.0, "cpu_s": 90.0}, "lockstep": {"wall_s": 60.0, "cpu_s": 54.0},
                "wall_ratio": 0.6, "cpu_ratio": 0.6, "identical_predictions": True}

    monkeypatch.setattr(LB, "time_lockstep", fake)
    r = RR.measure_lockstep(tmp_path, epochs=2)
    assert r["available"] is True and set(seen["runs"]) == {"plain", "calib"}
    assert "--calib" in seen["runs"]["calib"] and seen["runs"]["plain"][-1] == "2"  # OPTIM.MAX_EPOCH 2
    assert "**0.60x** wall" in r["summary"] and "0.60x CPU" in r["summary"] and "identical" in r["summary"]


@pytest.mark.slow
def test_memory_child_measures_a_tiny_step(tmp_path):
    r = R.measure_memory("CoOp", 4, 2, tmp_path, truncate=True, cap_gib=8.0, backbone="tiny-vit")
    assert r["fits"] is True and r["peak_mib"] > 100 and r["step_s"] > 0


@pytest.mark.slow
def test_cache_benchmark_on_a_small_test_set():
    r = cache_bench.run(60, classes=4, image_size=32, log=lambda m: None)
    assert r["num_test_images"] >= 60 and r["second_eval_s"] < r["first_eval_s"]
    parts = {p["function"] for p in r["breakdown"]}
    assert "feature_cache.py:load" in parts and "base.py:prepare" in parts
    text = cache_bench.render(r, MACHINE, "cmd")
    assert "cache speedup" in text and text.startswith(cache_bench.SECTION[0])
