"""dassl.utils: registry, errors, atomic writes, json, logger, meters, checkpoints."""
import os
import sys

import numpy as np
import pytest
import torch

from common.atomic import atomic_open, atomic_savez, atomic_torch_save, atomic_write_bytes, atomic_write_text
from common.errors import MissingFileError, UnknownNameError, UserError
from dassl.utils import (
    AverageMeter, Logger, MetricMeter, Registry, check_isfile, listdir_nohidden, load_checkpoint,
    load_pretrained_weights, read_json, save_checkpoint, setup_logger, tolist_if_not, write_json,
)


# ---------- registry ----------
def test_registry_decorator_key_is_name_and_duplicates_fail():
    reg = Registry("THING")

    @reg.register()
    class Alpha:
        pass

    @reg.register()
    def beta():
        return 1

    assert reg.get("Alpha") is Alpha and reg.get("beta") is beta
    assert reg.registered_names() == ["Alpha", "beta"]
    with pytest.raises(KeyError, match="already registered"):
        reg.register()(type("Alpha", (), {}))
    replacement = type("Alpha", (), {})
    reg.register(replacement, force=True)
    assert reg.get("Alpha") is replacement


def test_registry_unknown_name_did_you_mean():
    reg = Registry("TRAINER")
    for name in ("CoOp", "CoCoOp", "MaPLe", "KgCoOp"):
        reg.register(type(name, (), {}))
    with pytest.raises(UserError) as exc:
        reg.get("Maple")
    msg = str(exc.value)
    assert 'Did you mean "MaPLe"?' in msg
    assert "CoCoOp, CoOp, KgCoOp, MaPLe" in msg  # the known names, sorted
    assert isinstance(exc.value, UnknownNameError)
    assert isinstance(exc.value, KeyError) and isinstance(exc.value, ValueError)  # what Dassl raised
    assert not msg.startswith("'")  # not KeyError's quoted repr


# ---------- atomic writes ----------
def test_atomic_writes_replace_and_leave_no_file_on_error(tmp_path):
    target = tmp_path / "sub" / "a.txt"
    atomic_write_text(target, "one")
    assert target.read_text() == "one"
    with pytest.raises(RuntimeError):
        with atomic_open(target, "w") as f:
            f.write("half")
            raise RuntimeError("killed")
    assert target.read_text() == "one"  # old content intact
    assert os.listdir(target.parent) == ["a.txt"]  # no temp file left

    fresh = tmp_path / "never.pt"
    with pytest.raises(Exception):
        atomic_torch_save(fresh, {"f": lambda: 0})  # lambdas cannot be pickled: fails mid-write
    assert sorted(os.listdir(tmp_path)) == ["sub"]  # neither the target nor a temp file


def test_atomic_formats_roundtrip(tmp_path):
    atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    atomic_savez(tmp_path / "p.npz", logits=np.ones((2, 3), np.float32), labels=np.arange(2))
    with np.load(tmp_path / "p.npz") as z:  # exact name, no ".npz.npz"
        assert z["logits"].shape == (2, 3) and z["labels"].tolist() == [0, 1]
    atomic_torch_save(tmp_path / "t.pt", {"x": torch.arange(3)})
    assert torch.load(tmp_path / "t.pt")["x"].tolist() == [0, 1, 2]
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(tmp_path / "t.pt").st_mode & 0o777 == 0o666 & ~umask  # like open(), not mkstemp's 0600


def test_json_and_listdir(tmp_path):
    write_json({"a": [1, 2]}, str(tmp_path / "d" / "x.json"))
    assert read_json(str(tmp_path / "d" / "x.json")) == {"a": [1, 2]}
    assert (tmp_path / "d" / "x.json").read_text().startswith('{\n    "a": [')
    (tmp_path / ".hidden").write_text("")
    (tmp_path / "b").write_text("")
    assert listdir_nohidden(str(tmp_path), sort=True) == ["b", "d"]
    with pytest.warns(UserWarning, match="No file found"):
        assert check_isfile(str(tmp_path / "nope")) is False
    assert tolist_if_not("a") == ["a"] and tolist_if_not([1]) == [1]


# ---------- logger ----------
def test_setup_logger_moves_old_log_and_writes_fresh(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdout", sys.stdout)  # restored after the test
    out = tmp_path / "run"
    out.mkdir()
    (out / "log.txt").write_text("old run\n")
    setup_logger(str(out))
    print("new run")
    sys.stdout.flush()
    assert isinstance(sys.stdout, Logger)
    setup_logger(str(out))  # again in one process: no tee of a tee, previous file closed
    print("third")
    sys.stdout.flush()
    console = sys.stdout.console
    assert not isinstance(console, Logger)
    sys.stdout.close()
    files = sorted(os.listdir(out))
    assert files[0] == "log.txt" and len(files) == 3
    assert (out / "log.txt").read_text() == "third\n"
    backups = sorted((out / f).read_text() for f in files[1:])
    assert backups == ["new run\n", "old run\n"]
    assert all(f.startswith("log.txt-") for f in files[1:])
    assert not console.closed


def test_logger_del_keeps_console_open(tmp_path):
    import io

    console = io.StringIO()
    logger = Logger(str(tmp_path / "x" / "log.txt"), console=console)
    logger.write("hi\n")
    logger.flush()
    logger.__del__()
    assert not console.closed and console.getvalue() == "hi\n"
    assert (tmp_path / "x" / "log.txt").read_text() == "hi\n"


# ---------- meters ----------
def test_meters():
    m = AverageMeter()
    m.update(torch.tensor(2.0))
    m.update(4.0, n=3)
    assert m.val == 4.0 and m.count == 4 and m.avg == pytest.approx(3.5)
    mm = MetricMeter()
    mm.update({"loss": 1.0, "acc": 50.0, "skip": None})
    mm.update({"loss": 3.0, "acc": 100.0})
    assert str(mm) == "loss 3.0000 (2.0000) acc 100.0000 (75.0000)"
    with pytest.raises(TypeError):
        mm.update([1.0])


# ---------- checkpoints ----------
def test_save_and_load_checkpoint_layout(tmp_path):
    model = torch.nn.Linear(3, 2)
    sd = {"module." + k: v for k, v in model.state_dict().items()}
    path = save_checkpoint({"state_dict": sd, "epoch": 5, "optimizer": None, "scheduler": None, "val_result": None},
                           str(tmp_path / "prompt_learner"), is_best=True)
    assert path.endswith(os.path.join("prompt_learner", "model.pth.tar-5"))
    assert (tmp_path / "prompt_learner" / "checkpoint").read_text() == "model.pth.tar-5\n"
    assert sorted(os.listdir(tmp_path / "prompt_learner")) == ["checkpoint", "model-best.pth.tar", "model.pth.tar-5"]
    ckpt = load_checkpoint(path)
    assert set(ckpt["state_dict"]) == {"weight", "bias"} and ckpt["epoch"] == 5  # "module." stripped
    with pytest.raises(MissingFileError, match="model.pth.tar-9"):
        load_checkpoint(str(tmp_path / "prompt_learner" / "model.pth.tar-9"))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="junk.pth"):
        load_checkpoint(str(tmp_path / "junk.pth"))


def test_load_pretrained_weights_keeps_matching_keys(tmp_path, capsys):
    src = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 5))
    dst = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 4))  # second layer differs
    torch.save({"state_dict": src.state_dict()}, tmp_path / "w.pth")
    load_pretrained_weights(dst, str(tmp_path / "w.pth"))
    assert torch.equal(dst[0].weight, src[0].weight)
    assert not torch.equal(dst[1].bias[:4], src[1].bias[:4])
    assert "1.weight" in capsys.readouterr().out
