"""common/: the one did-you-mean format, atomic writers (path first, the umask's mode) and the log tail."""
from __future__ import annotations

import json
import os

import pytest

from common.atomic import atomic_torch_save, atomic_write_json, atomic_write_text, current_umask
from common.errors import UnknownNameError
from common.logtail import tail
from common.suggest import check_availability, closest_match, did_you_mean, unknown_name_message


# ---------- suggestions
def test_one_message_format():
    msg = unknown_name_message("trainer", "CoOq", ["MaPLe", "CoOp", "CoCoOp"], where="--trainer")
    assert msg == 'Unknown trainer "CoOq" (--trainer). Did you mean "CoOp"? Known: CoCoOp, CoOp, MaPLe.'
    assert unknown_name_message("x", "zzz", [], sort=False) == 'Unknown x "zzz". Known: (none registered).'
    assert did_you_mean("OPTIM.LRR", ["OPTIM.LR", "SEED"], clause=True) == '; did you mean "OPTIM.LR"?'
    assert did_you_mean("qqqq", ["OPTIM.LR"]) == ""


def test_closest_match_is_case_insensitive_and_can_show_a_canonical_name():
    assert closest_match("vit-b/61", ["ViT-B/16", "RN50"]) == "ViT-B/16"
    assert closest_match("oxfordpet", ["oxford_pets"], shown={"oxford_pets": "OxfordPets"}) == "OxfordPets"
    assert closest_match("abc", ["xyz"]) is None


def test_check_availability_raises_what_dassl_raised():
    check_availability("sgd", ["sgd", "adam"])
    with pytest.raises(UnknownNameError) as info:
        check_availability("sdg", ["sgd", "adam"], what="optimizer")
    assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError)
    assert str(info.value).startswith('Unknown optimizer "sdg". Did you mean "sgd"?')


# ---------- atomic writes
def test_written_files_follow_the_umask_of_the_moment(tmp_path):
    old = os.umask(0o027)
    try:
        assert current_umask() == 0o027
        atomic_write_text(tmp_path / "a.txt", "x")
        os.umask(0o002)
        atomic_write_text(tmp_path / "b.txt", "x")
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "a.txt").st_mode & 0o777 == 0o640  # not mkstemp's 0600
    assert os.stat(tmp_path / "b.txt").st_mode & 0o777 == 0o664


def test_json_writer_layout_and_path_first(tmp_path):
    atomic_write_json(tmp_path / "r.json", {"a": [1, 2]})
    assert (tmp_path / "r.json").read_text() == '{\n  "a": [\n    1,\n    2\n  ]\n}\n'
    atomic_write_json(tmp_path / "s.json", {"a": 1}, indent=None, end="")
    assert (tmp_path / "s.json").read_text() == json.dumps({"a": 1})
    with pytest.raises(TypeError, match="path first"):
        atomic_write_json({"a": 1}, tmp_path / "t.json")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="path first"):
        atomic_torch_save({"a": 1}, tmp_path / "t.pt")  # type: ignore[arg-type]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "s.json"]


# ---------- log tail
def test_tail(tmp_path):
    log = tmp_path / "console.log"
    log.write_text("".join(f"line {i}\n" for i in range(50)))
    assert tail(log, 3) == "    line 47\n    line 48\n    line 49"
    assert tail(tmp_path / "nope.log") == f"    ({tmp_path / 'nope.log'} missing)"
