"""tools/calibrate.py and tools/plot.py on synthetic run records written per docs/architecture.md §4.1."""
import json

import numpy as np
import pytest

from calibration import plots
from calibration.metrics import compute_metrics
from calibration.runs import load_run
from tools import calibrate, plot


def _normalize(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def write_run(path, rng, n_classes, model_dir="", with_val=True, with_zs=True, with_text=True, n=60, e=8):
    """A run folder: results.json + predictions.npz with over-confident x100 cosine logits."""
    path.mkdir(parents=True)
    t = _normalize(rng.normal(size=(n_classes, e)))
    t0 = _normalize(t + 0.5 * rng.normal(size=(n_classes, e)))

    def split(m):
        y = rng.integers(0, n_classes, size=m)
        f = _normalize(t[y] + 0.9 * rng.normal(size=(m, e)))
        return (100 * f @ t.T).astype(np.float32), y.astype(np.int64), (100 * f @ t0.T).astype(np.float32)

    logits, labels, zs_logits = split(n)
    pred = {"logits": logits, "labels": labels, "classnames": np.array([f"class {i}" for i in range(n_classes)]),
            "logit_scale": np.float32(100.0), "zs_text_features": t0.astype(np.float32)}
    if with_text:
        pred["text_features"] = t.astype(np.float32)
    if with_zs:
        pred["zs_logits"] = zs_logits
    if with_val:
        val_logits, val_labels, val_zs = split(4 * n_classes)
        pred.update(val_logits=val_logits, val_labels=val_labels, val_zs_logits=val_zs)
    np.savez(path / "predictions.npz", **pred)
    results = {"metrics": compute_metrics(logits, labels), "split": "test",
               "run": {"trainer": "CoOp", "dataset": "Toy", "subsample": "base" if with_val else "new",
                       "shots": 4, "seed": 1, "calib": "", "model_dir": model_dir}}
    (path / "results.json").write_text(json.dumps(results))
    return path


@pytest.fixture
def runs(tmp_path):
    rng = np.random.default_rng(0)
    base = write_run(tmp_path / "train_base" / "seed1", rng, 4)
    novel = write_run(tmp_path / "test_new" / "seed1", rng, 3, model_dir=str(base), with_val=False)
    return base, novel


@pytest.mark.parametrize("method", ["ts", "dac", "ts+dac", "sals"])
def test_round_trip_each_method(runs, method, capsys):
    base, novel = runs
    for run_dir in (base, novel):
        assert calibrate.main([str(run_dir), "--method", method, "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert list(out) == ["metrics"]
        record = json.loads((run_dir / f"results_{method.replace('+', '_')}.json").read_text())
        assert record["metrics"] == out["metrics"]
        assert record["method"] == method and record["source"] == "results.json"
        run = load_run(run_dir)
        before = compute_metrics(run.logits, run.labels)
        assert record["metrics"]["accuracy"] == before["accuracy"]
        assert record["metrics"]["macro_f1"] == before["macro_f1"]
        if method == "sals":
            assert record["base_run"] is None
        else:
            # the novel run found its base via run.model_dir (a base run is its own: "."); the record names it
            # relative to its own folder, never by a machine path
            assert record["base_run"] == ("../../train_base/seed1" if run_dir == novel else ".")
            assert (run_dir / record["base_run"]).resolve() == base.resolve()
        if "ts" in method:
            assert record["temperature"] > 1.0  # x100 logits of noisy features are over-confident
            assert record["metrics"]["nll"] != before["nll"]
        else:
            assert record["temperature"] is None


def test_dac_changes_only_novel_runs(runs, capsys):
    base, novel = runs
    calibrate.main([str(base), "--method", "dac", "--json"])
    base_out = json.loads(capsys.readouterr().out)["metrics"]
    assert base_out == pytest.approx(compute_metrics(load_run(base).logits, load_run(base).labels))
    calibrate.main([str(novel), "--method", "dac", "--json"])
    novel_out = json.loads(capsys.readouterr().out)["metrics"]
    n = load_run(novel)
    assert novel_out["ece"] != pytest.approx(compute_metrics(n.logits, n.labels)["ece"])


def test_table_output_and_explicit_base_run(runs, capsys):
    base, novel = runs
    assert calibrate.main([str(novel), "--base-run", str(base), "--method", "TS", "--n-bins", "15"]) == 0
    text = capsys.readouterr().out
    assert "before" in text and "after" in text and "ece" in text and "results_ts.json" in text
    assert json.loads((novel / "results_ts.json").read_text())["n_bins"] == 15


def test_relative_model_dir(tmp_path, capsys, monkeypatch):
    rng = np.random.default_rng(1)
    base = write_run(tmp_path / "out" / "train_base", rng, 4)
    novel = write_run(tmp_path / "out" / "test_new", rng, 3, model_dir="out/train_base", with_val=False)
    monkeypatch.chdir(tmp_path)
    assert calibrate.main([str(novel), "--method", "ts", "--json"]) == 0
    assert (novel / json.loads((novel / "results_ts.json").read_text())["base_run"]).resolve() == base.resolve()


def test_missing_data_messages(tmp_path, capsys):
    rng = np.random.default_rng(2)
    base = write_run(tmp_path / "base", rng, 4, with_val=False, with_zs=False)
    novel = write_run(tmp_path / "novel", rng, 3, model_dir=str(base), with_val=False, with_zs=False)
    assert calibrate.main([str(novel), "--method", "ts"]) == 2
    err = capsys.readouterr().err
    assert "val_logits" in err and str(base) in err and "Redo the base training run" in err
    assert "Traceback" not in err
    assert calibrate.main([str(novel), "--method", "sals"]) == 2
    err = capsys.readouterr().err
    assert "zs_logits" in err and str(novel) in err
    zs_only = write_run(tmp_path / "zsclip", rng, 3, with_text=False)
    assert calibrate.main([str(zs_only), "--method", "dac"]) == 2
    assert "text_features" in capsys.readouterr().err
    assert calibrate.main([str(tmp_path / "nowhere"), "--method", "ts"]) == 2
    assert "results.json not found" in capsys.readouterr().err
    orphan = write_run(tmp_path / "orphan", rng, 3, model_dir="/no/such/base", with_val=False)
    assert calibrate.main([str(orphan), "--method", "ts"]) == 2
    assert "--base-run" in capsys.readouterr().err
    assert not any(p.name.startswith("results_") for p in tmp_path.rglob("*.json"))


def _is_png(path):
    data = path.read_bytes()
    return len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_tool_writes_pngs(runs, tmp_path, capsys):
    base, novel = runs
    one = tmp_path / "plots" / "rel.png"
    assert plot.main(["reliability", str(base), "-o", str(one)]) == 0
    assert _is_png(one)
    overlay = tmp_path / "overlay.png"
    assert plot.main(["reliability", str(novel), str(novel), "--method", "none", "ts+dac",
                      "--labels", "raw", "TS+DAC", "-o", str(overlay)]) == 0
    assert _is_png(overlay)
    hist = tmp_path / "margins.png"
    assert plot.main(["margins", str(base), str(novel), "-o", str(hist)]) == 0
    assert _is_png(hist)
    assert plot.main(["margins", str(base), "--labels", "a", "b", "-o", str(tmp_path / "x.png")]) == 2
    assert "one per run" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_calibrate_runs_as_a_script(runs):
    import subprocess
    import sys
    from pathlib import Path

    base, _ = runs
    script = Path(__file__).resolve().parents[1] / "tools" / "calibrate.py"
    proc = subprocess.run([sys.executable, str(script), str(base), "--method", "sals", "--json"],
                          capture_output=True, text=True, timeout=120, cwd=base)
    assert proc.returncode == 0, proc.stderr
    assert set(json.loads(proc.stdout)) == {"metrics"}


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_plots_keep_the_users_umask(runs, tmp_path, umask):
    """Issue 23 item 6: a plot is as readable as any file the user writes (mkstemp alone would give 0600)."""
    import os
    import stat

    base, _ = runs
    old = os.umask(umask)
    try:
        out = tmp_path / "mode" / "rel.png"
        assert plot.main(["reliability", str(base), "-o", str(out)]) == 0
        out.write_bytes(out.read_bytes())                      # rewriting keeps the mode; check a fresh write too
        fresh = tmp_path / "mode" / "margins.png"
        assert plot.main(["margins", str(base), "-o", str(fresh)]) == 0
    finally:
        os.umask(old)
    for png in (out, fresh):
        assert stat.S_IMODE(png.stat().st_mode) == 0o666 & ~umask, oct(png.stat().st_mode)
    assert [p.name for p in (tmp_path / "mode").iterdir() if p.name.startswith(".")] == []   # no temp files left


def test_plot_pools_runs_into_one_series(tmp_path, capsys, monkeypatch):
    """--pool K: every K runs (the seeds of one variant) are one series, their predictions concatenated."""
    rng = np.random.default_rng(3)
    seeds = [write_run(tmp_path / f"seed{s}", rng, 4) for s in (1, 2, 3)]
    seen = []
    from matplotlib.figure import Figure

    monkeypatch.setattr(plots, "plot_reliability", lambda series, n_bins, title: seen.extend(series) or Figure())
    out = tmp_path / "pooled.png"
    argv = ["reliability", *map(str, seeds), *map(str, seeds), "--pool", "3", "--labels", "a", "b", "-o", str(out)]
    assert plot.main(argv) == 0 and _is_png(out)
    assert [label for label, _, _ in seen] == ["a", "b"]
    runs = [load_run(s) for s in seeds]
    np.testing.assert_array_equal(seen[0][1], np.concatenate([r.logits for r in runs]))
    np.testing.assert_array_equal(seen[0][2], np.concatenate([r.labels for r in runs]))
    assert plot.main(["reliability", *map(str, seeds), "--pool", "2", "-o", str(tmp_path / "x.png")]) == 2
    assert "groups of 2" in capsys.readouterr().err and not (tmp_path / "x.png").exists()
