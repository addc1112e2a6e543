"""tools/device_check.py on the CPU: everything but the CUDA calls (the table, the toy runs' arguments, the
--device cpu --quick path); the GPU run itself is the check's purpose (docs/performance.md)."""
from __future__ import annotations

import pytest

import train
from experiments.benchmark import device_check as dc
from tools import device_check as tool


def test_table_marks_each_row():
    text = dc.table([{"check": "a", "ok": True, "value": "1"}, {"check": "b", "ok": False, "value": "2"},
                     {"check": "c", "ok": None}])
    lines = text.splitlines()
    assert lines[0].split("|")[1].strip() == "check" and len(lines) == 5
    assert "| ok " in lines[2] and "| FAIL " in lines[3] and "| - " in lines[4]


def test_step_value_reports_times_memory_and_oom():
    assert dc.step_value({"full_ms": 200.0, "full_peak_mib": 1024.0, "cut_ms": 50.0, "cut_peak_mib": 256.0,
                          "ratio": 4.0}) == "full 200 ms, 1,024 MiB; cut 50 ms, 256 MiB; 4.00x"
    assert dc.step_value({"full_error": "out of memory", "cut_ms": 5.0, "cut_peak_mib": None}) == \
        "full: out of memory; cut 5 ms"


def test_toy_arguments_build_a_config(tmp_path):
    for precision in ("fp16", "fp32"):
        cfg = train.setup_cfg(train.parse_args(dc.toy_argv(tmp_path / "data", tmp_path / "out", precision, True, 2,
                                                           "cpu")))
        assert cfg.TRAINER.COOP.PREC == precision and cfg.OPTIM.MAX_EPOCH == 2 and not cfg.USE_CUDA
        assert cfg.MODEL.BACKBONE.NAME == "toy-clip" and cfg.DATASET.SUBSAMPLE_CLASSES == "base"


def test_cpu_quick_mode_prints_one_table(monkeypatch, capsys):
    """--device cpu --quick: the real steps on tiny shapes; the toy training (covered by the toy tests, minutes on
    this CPU) is replaced by its result's shape."""
    runs = []

    def fake_train(root, out, precision, calib, epochs, device):
        runs.append((precision, calib, epochs, device))
        return {"ok": True, "accuracy": 60.0 + (precision == "fp16") * 0.5, "ece": 10.0, "precision": "fp32"}

    monkeypatch.setattr(dc, "train_toy", fake_train)
    assert tool.main(["--device", "cpu", "--quick", "--no-tests"]) == 0
    out = capsys.readouterr().out
    assert "Device check on cpu" in out and "| check" in out
    assert "toy CoOp --calib: fp16 vs fp32" in out and "accuracy 60.50 vs 60.00" in out
    assert "CoOp C=8 B=4 step" in out and "CoCoOp C=4 B=2 step" in out and "FAIL" not in out
    assert sorted(runs) == sorted((p, c, 1, "cpu") for p in ("fp16", "fp32") for c in (False, True))


def test_precision_outside_the_tolerance_fails_the_check(monkeypatch, tmp_path):
    monkeypatch.setattr(dc, "train_toy", lambda root, out, precision, calib, epochs, device: {
        "ok": True, "accuracy": 50.0 if precision == "fp16" else 60.0, "ece": 5.0, "precision": precision})
    rows = dc.toy_precision_rows("cpu", 1, tmp_path)
    assert [r["ok"] for r in rows] == [False, False]


def test_cuda_without_a_gpu_is_one_clear_message(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="--device cpu --quick"):
        dc.run("cuda")
