"""tools/bench_threads.py's summary and report from hand-made rows (the measurement itself runs train.py for
minutes and is not a test)."""
from tools import bench_threads


def row(config, load, threads, wall, rep=1):
    return {"config": config, "load_procs": load, "threads": threads, "repeat": rep, "wall_s": wall,
            "train_s": wall / 2,
            "load_before": 0.5 + load, "load_after": 0.5}


def test_summary_takes_medians_and_ratios_against_one_thread():
    rows = [row("toy", 0, 1, 20.0), row("toy", 0, 1, 30.0, 2), row("toy", 0, 1, 22.0, 3), row("toy", 0, 2, 50.0),
            row("toy", 2, 1, 60.0), row("toy", 2, 2, 300.0), row("tiny", 2, 2, 9.0)]
    s = {(x["config"], x["load_procs"], x["threads"]): x for x in bench_threads.summarise(rows)}
    assert s["toy", 0, 1]["wall_s"] == 22.0 and s["toy", 0, 1]["n"] == 3 and s["toy", 0, 1]["vs_1_thread"] == 1.0
    assert s["toy", 0, 2]["vs_1_thread"] == round(50 / 22, 2)
    assert s["toy", 2, 2]["vs_1_thread"] == 5.0
    assert s["tiny", 2, 2]["vs_1_thread"] is None            # no 1-thread run to compare with
    md = bench_threads.render(list(s.values()), {"cpu": "x", "cores": 2, "torch": "t", "python": "p", "date": "d",
                                                 "epochs": 5, "repeats": 3}, "python tools/bench_threads.py")
    assert "| toy      | +2 CPU-bound |               2 |" in md and "5.00x" in md and "0.50, 0.50, 0.50" in md
