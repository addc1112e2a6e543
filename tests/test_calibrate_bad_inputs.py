"""tools/calibrate.py on bad input (issue 16 item 3): every case is one line on stderr naming the file or array,
exit 2, no traceback, and nothing written (the run folders' listing, sizes and mtimes are unchanged)."""
import json

import numpy as np
import pytest

from tests.test_tools_calibrate_plot import write_run
from tools import calibrate


def _edit_npz(run, **changes):
    """Rewrite run/predictions.npz with arrays replaced (value) or removed (None)."""
    path = run / "predictions.npz"
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    for key, value in changes.items():
        if value is None:
            arrays.pop(key, None)
        else:
            arrays[key] = value(arrays) if callable(value) else value
    np.savez(path, **arrays)


def _set(key, fn):
    """A change that maps the current array ``key`` through ``fn`` (on a copy)."""
    return {key: lambda arrays: fn(np.array(arrays[key]))}


def _nan_at(value, row=0, col=0):
    def fn(a):
        a = a.astype(np.float64)
        a[row, col] = value
        return a
    return fn


def _label(value, index=0):
    def fn(a):
        a[index] = value
        return a
    return fn


def _npy_bytes(array):
    import io

    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def _results(run, text):
    (run / "results.json").write_text(text)


# name -> (setup(base, novel, tmp) -> argv, words the message must contain)
CASES = {
    # files and folders
    "npz truncated": (lambda b, n, t: ((b / "predictions.npz").write_bytes((b / "predictions.npz").read_bytes()[:300]),
                                        [b, "--method", "ts"])[1], ["predictions.npz", "cannot be read"]),
    "npz empty": (lambda b, n, t: ((b / "predictions.npz").write_bytes(b""), [b, "--method", "ts"])[1],
                  ["predictions.npz", "empty file"]),
    "npz not a zip": (lambda b, n, t: ((b / "predictions.npz").write_text("hello"), [b, "--method", "ts"])[1],
                      ["predictions.npz", "not an .npz"]),
    "npz is a single npy": (lambda b, n, t: ((b / "predictions.npz").write_bytes(_npy_bytes(np.zeros(3))),
                                             [b, "--method", "ts"])[1], ["predictions.npz", "not an .npz"]),
    "npz holds pickled objects": (lambda b, n, t: (_edit_npz(b, classnames=np.array([{"a": 1}], dtype=object)),
                                                   [b, "--method", "ts"])[1], ["predictions.npz", "pickle"]),
    "npz missing": (lambda b, n, t: ((b / "predictions.npz").unlink(), [b, "--method", "ts"])[1],
                    ["predictions.npz not found"]),
    "results.json missing": (lambda b, n, t: ((b / "results.json").unlink(), [b, "--method", "ts"])[1],
                             ["results.json not found"]),
    "results.json not JSON": (lambda b, n, t: (_results(b, "{oops"), [b, "--method", "ts"])[1],
                              ["results.json", "not valid JSON"]),
    "results.json a list": (lambda b, n, t: (_results(b, "[1, 2]"), [b, "--method", "ts"])[1],
                            ["results.json", "JSON list"]),
    "results.json run a list": (lambda b, n, t: (_results(n, json.dumps({"run": [1]})), [n, "--method", "ts"])[1],
                                ["results.json", '"run"']),
    "results.json model_dir a number": (lambda b, n, t: (_results(n, json.dumps({"run": {"model_dir": 3}})),
                                                         [n, "--method", "ts"])[1], ["results.json", "model_dir"]),
    "run folder missing": (lambda b, n, t: [t / "nowhere", "--method", "ts"], ["results.json not found"]),
    "run folder is a file": (lambda b, n, t: [b / "results.json", "--method", "ts"], ["is a file"]),
    "model_dir points nowhere": (lambda b, n, t: (_results(n, json.dumps({"run": {"model_dir": "/no/base"}})),
                                                  [n, "--method", "ts"])[1], ["model_dir", "--base-run"]),
    "--base-run missing": (lambda b, n, t: [n, "--method", "ts", "--base-run", t / "nope"],
                           ["nope", "not found"]),
    # test logits and labels
    "logits missing": (lambda b, n, t: (_edit_npz(b, logits=None), [b, "--method", "sals"])[1], ["'logits'"]),
    "labels missing": (lambda b, n, t: (_edit_npz(b, labels=None), [b, "--method", "sals"])[1], ["'labels'"]),
    "logits 1-D": (lambda b, n, t: (_edit_npz(b, logits=np.zeros(60)), [b, "--method", "sals"])[1],
                   ["logits", "N x C"]),
    "logits 3-D": (lambda b, n, t: (_edit_npz(b, logits=np.zeros((60, 4, 2))), [b, "--method", "sals"])[1],
                   ["logits", "N x C"]),
    "logits empty": (lambda b, n, t: (_edit_npz(b, logits=np.zeros((0, 4)), labels=np.zeros(0, np.int64)),
                                      [b, "--method", "sals"])[1], ["logits", "non-empty"]),
    "logits without classes": (lambda b, n, t: (_edit_npz(b, logits=np.zeros((60, 0))), [b, "--method", "sals"])[1],
                               ["logits", "non-empty"]),
    "logits strings": (lambda b, n, t: (_edit_npz(b, logits=np.full((60, 4), "x")), [b, "--method", "sals"])[1],
                       ["logits", "real numbers"]),
    "logits complex": (lambda b, n, t: (_edit_npz(b, logits=np.ones((60, 4), complex)), [b, "--method", "sals"])[1],
                       ["logits", "real numbers"]),
    "NaN in logits": (lambda b, n, t: (_edit_npz(b, **_set("logits", _nan_at(np.nan))), [b, "--method", "ts"])[1],
                      ["logits", "NaN"]),
    "inf in logits": (lambda b, n, t: (_edit_npz(n, **_set("logits", _nan_at(-np.inf))), [n, "--method", "ts"])[1],
                      ["logits", "inf"]),
    "labels shorter than logits": (lambda b, n, t: (_edit_npz(b, **_set("labels", lambda a: a[:-1])),
                                                    [b, "--method", "ts"])[1], ["labels", "(60,)"]),
    "labels 2-D": (lambda b, n, t: (_edit_npz(b, **_set("labels", lambda a: a[:, None])), [b, "--method", "ts"])[1],
                   ["labels", "shape"]),
    "test label >= C": (lambda b, n, t: (_edit_npz(n, **_set("labels", _label(3))), [n, "--method", "ts"])[1],
                        ["labels", "[0, 3)"]),
    "test label negative": (lambda b, n, t: (_edit_npz(b, **_set("labels", _label(-1))), [b, "--method", "dac"])[1],
                            ["labels", "[0, 4)"]),
    "labels not integers": (lambda b, n, t: (_edit_npz(b, **_set("labels", lambda a: a + 0.5)),
                                             [b, "--method", "ts"])[1], ["labels", "integer"]),
    "labels strings": (lambda b, n, t: (_edit_npz(b, labels=np.full(60, "cat")), [b, "--method", "ts"])[1],
                       ["labels", "integer"]),
    "labels bool": (lambda b, n, t: (_edit_npz(b, labels=np.zeros(60, bool)), [b, "--method", "ts"])[1],
                    ["labels", "integer"]),
    # the base run's val split (temperature scaling)
    "val labels all -1": (lambda b, n, t: (_edit_npz(b, **_set("val_labels", lambda a: a * 0 - 1)),
                                           [n, "--method", "ts"])[1], ["val_labels", "-1", "--base-run"]),
    "one NaN in val_logits": (lambda b, n, t: (_edit_npz(b, **_set("val_logits", _nan_at(np.nan, 3, 1))),
                                               [n, "--method", "ts"])[1], ["val_logits", "NaN"]),
    "val label >= C": (lambda b, n, t: (_edit_npz(b, **_set("val_labels", _label(4, 5))),
                                        [n, "--method", "ts+dac"])[1], ["val_labels", "[0, 4)"]),
    "val labels shorter than val_logits": (lambda b, n, t: (_edit_npz(b, **_set("val_labels", lambda a: a[:7])),
                                                            [b, "--method", "ts"])[1], ["val_labels", "(16,)"]),
    "val_logits other class count": (lambda b, n, t: (_edit_npz(b, **_set("val_logits", lambda a: a[:, :3])),
                                                      [n, "--method", "ts"])[1], ["val_logits", "classes"]),
    "val_logits empty": (lambda b, n, t: (_edit_npz(b, val_logits=np.zeros((0, 4)), val_labels=np.zeros(0, int)),
                                          [n, "--method", "ts"])[1], ["val_logits", "non-empty"]),
    "val_logits missing": (lambda b, n, t: (_edit_npz(b, val_logits=None), [n, "--method", "ts"])[1],
                           ["val_logits", "Redo the base training run"]),
    # SaLS
    "zs_logits other shape": (lambda b, n, t: (_edit_npz(n, **_set("zs_logits", lambda a: a[:, :2])),
                                               [n, "--method", "sals"])[1], ["zs_logits", "classes"]),
    "NaN in zs_logits": (lambda b, n, t: (_edit_npz(n, **_set("zs_logits", _nan_at(np.nan))),
                                          [n, "--method", "sals"])[1], ["zs_logits", "NaN"]),
    # DAC
    "base tuned/zero-shot class counts differ": (
        lambda b, n, t: (_edit_npz(b, **_set("zs_text_features", lambda a: a[:3])), [n, "--method", "dac"])[1],
        ["zs_text_features", "classes"]),
    "zero text-feature row": (
        lambda b, n, t: (_edit_npz(b, **_set("text_features", lambda a: a * [[0], [1], [1], [1]])),
                         [n, "--method", "dac"])[1], ["text_features", "row 0", "zeros"]),
    "NaN in text features": (lambda b, n, t: (_edit_npz(n, **_set("zs_text_features", _nan_at(np.nan))),
                                              [n, "--method", "ts+dac"])[1], ["zs_text_features", "NaN"]),
    "text features wider than the base's": (
        lambda b, n, t: (_edit_npz(n, **_set("text_features", lambda a: np.hstack([a, a]))), [n, "--method", "dac"])[1],
        ["text_features", "wide", "--base-run"]),
    "text features of other classes": (lambda b, n, t: (_edit_npz(n, **_set("text_features", lambda a: a[:2])),
                                                        [n, "--method", "dac"])[1], ["text_features", "classes"]),
    "logits overflow after TS": (
        lambda b, n, t: (_edit_npz(b, val_logits=np.eye(4)[np.arange(16) % 4] * 1e3, val_labels=np.arange(16) % 4),
                         _edit_npz(n, **_set("logits", _nan_at(1e307))), [n, "--method", "ts"])[-1],
        ["logits overflow"]),
    "val_logits overflow when scaled": (
        lambda b, n, t: (_edit_npz(b, **_set("val_logits", lambda a: a.astype(np.float64) * 1e306)),
                         [n, "--method", "ts"])[1], ["val_logits: logits too large"]),
    # arguments
    "--dac-k 0": (lambda b, n, t: [n, "--method", "dac", "--dac-k", "0"], ["--dac-k", ">= 1"]),
    "--dac-k negative": (lambda b, n, t: [n, "--method", "ts+dac", "--dac-k", "-3"], ["--dac-k"]),
    "--n-bins 0": (lambda b, n, t: [b, "--method", "ts", "--n-bins", "0"], ["--n-bins"]),
    "--n-bins huge": (lambda b, n, t: [b, "--method", "ts", "--n-bins", "1000000"], ["--n-bins", "1000"]),
    "--n-bins not a number": (lambda b, n, t: [b, "--method", "ts", "--n-bins", "ten"], ["--n-bins", "invalid"]),
    "--method unknown": (lambda b, n, t: [b, "--method", "platt"], ["--method", "invalid choice"]),
    "--method missing": (lambda b, n, t: [b], ["--method"]),
}


def snapshot(root):
    return {str(p.relative_to(root)): (p.is_dir(), p.stat().st_size if p.is_file() else 0, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*"))}


@pytest.mark.filterwarnings("error")  # a warning would be a second line on the console
@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_and_writes_nothing(case, tmp_path, capsys):
    rng = np.random.default_rng(0)
    base = write_run(tmp_path / "base", rng, 4, n=60)
    novel = write_run(tmp_path / "novel", rng, 3, model_dir=str(base), with_val=False, n=30)
    for run in (base, novel):  # an earlier result must survive a bad call untouched
        (run / "results_ts.json").write_text('{"metrics": {}}\n')
    setup, words = CASES[case]
    argv = [str(a) for a in setup(base, novel, tmp_path)]
    capsys.readouterr()
    before = snapshot(tmp_path)
    try:
        rc = calibrate.main(argv)
    except SystemExit as e:  # argparse
        rc = e.code
    out, err = capsys.readouterr()
    assert rc == 2, (case, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err and out == ""
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert snapshot(tmp_path) == before


def test_cases_cover_the_issue_list():
    assert len(CASES) >= 34


def test_a_good_run_still_writes(tmp_path, capsys):
    rng = np.random.default_rng(0)
    base = write_run(tmp_path / "base", rng, 4, n=60)
    assert calibrate.main([str(base), "--method", "ts", "--json"]) == 0
    assert (base / "results_ts.json").is_file()
    assert not [p for p in base.iterdir() if p.name.endswith(".tmp")]
