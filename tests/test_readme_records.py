"""Issue 14, item 7: the README's toy table is what tools/update_readme.py produces from the committed records
(docs/results/toy/), and the tool refuses records that the current code and config would not produce."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import make_image_folder

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
import update_readme  # noqa: E402

from experiments.readme_blocks import read_block  # noqa: E402

RECORDS = REPO / "docs" / "results" / "toy"


@pytest.mark.skipif(not RECORDS.is_dir(), reason="docs/results/toy/ is committed when the README table is "
                                                 "regenerated (python tools/update_readme.py)")
def test_readme_table_is_what_the_committed_records_give():
    expected = update_readme.readme_block(RECORDS, "CoOp", "Toy", REPO / "docs" / "img")
    assert read_block(REPO / "README.md", update_readme.BEGIN, update_readme.END) == expected


def _fake_records(planned, checker, acc, commit="abc123", seconds=30.0):
    for i, (run, runs) in enumerate(planned):
        base = next((r.args for r in runs if r.out_dir == run.depends), None)
        words = run.args
        info = {"trainer": words[words.index("--trainer") + 1], "dataset": "ImageFolder", "subsample": words[-1],
                "shots": int(words[words.index("DATASET.NUM_SHOTS") + 1]),
                "seed": int(words[words.index("--seed") + 1]), "calib": "tcpt" if "--calib" in words else None,
                "backbone": "ViT-B/16", "config": Path(words[words.index("--config-file") + 1]).stem,
                "max_epoch": 50, "timings": {"train_seconds": seconds, "eval_seconds": 6.0}, "git_commit": commit,
                "identity": checker.expected(run.args, model_args=base)}
        run.out_dir.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(i)   # the diagrams' predictions (the same for the same i)
        np.savez(run.out_dir / "predictions.npz", logits=rng.normal(0, 3, (40, 4)).astype(np.float32),
                 labels=rng.integers(0, 4, 40))
        (run.out_dir / "results.json").write_text(json.dumps({"metrics": {"accuracy": acc + i % 3, "ece": 2.0},
                                                              "run": info}))


def test_update_readme_refuses_stale_records_then_writes_what_the_copy_gives(tmp_path):
    from experiments.run_status import Checker

    data = make_image_folder(tmp_path / "data", n_classes=4, per_class=6, size=16)
    out, records = tmp_path / "output", tmp_path / "records"
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{update_readme.BEGIN}\nold numbers\n{update_readme.END}\nrest\n")
    argv = ["--output", str(out), "--data", str(data), "--dataset", "ImageFolder", "--readme", str(readme),
            "--records", str(records), "--img-dir", str(tmp_path / "img")]
    planned = update_readme.planned_runs(out, str(data), "CoOp", "ImageFolder")
    assert len(planned) == 14  # 3 seeds x (plain, --calib) x (base, new) + zero-shot base and new

    _fake_records(planned, Checker(), 60.0)
    stale = planned[0][0].out_dir / "results.json"
    rec = json.loads(stale.read_text())
    rec["run"]["identity"]["code_sha256"] = "0" * 64  # made by other code
    stale.write_text(json.dumps(rec))
    (planned[-1][0].out_dir / "results.json").unlink()
    with pytest.raises(SystemExit) as exc:
        update_readme.main(argv)
    msg = str(exc.value)
    assert "2 of the 14 runs behind the table are not what the current code" in msg
    assert f"{planned[0][0].out_dir}: stale (differs in: code" in msg and f"{planned[-1][0].out_dir}: no results" in msg
    assert "old numbers" in readme.read_text() and not records.exists()

    _fake_records(planned, Checker(), 60.0)
    assert update_readme.main(argv) == 0
    copied = sorted(p.relative_to(records) for p in records.rglob("results.json"))
    assert copied == sorted(r.out_dir.relative_to(out) / "results.json" for r, _ in planned)
    block = read_block(readme, update_readme.BEGIN, update_readme.END)
    assert block == update_readme.readme_block(records, "CoOp", "ImageFolder", tmp_path / "img")
    assert "| CoOp [vit_b16_ep50, 50 ep] | plain" in block and "The 14 runs behind this table took about 8 min" in block
    assert readme.read_text().startswith("intro\n") and readme.read_text().endswith("rest\n")


def _snapshot(*folders: Path) -> dict:
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for f in folders for p in sorted(f.rglob("*")) if p.is_file()}


def test_regenerating_from_the_same_runs_changes_no_file(tmp_path):
    """Issue 23 item 2: update_readme twice, and again after the same runs were rerun (another commit, other
    timings, same identity and numbers), rewrites nothing: not the README, not a record, not a diagram."""
    from experiments.run_status import Checker

    data = make_image_folder(tmp_path / "data", n_classes=4, per_class=6, size=16)
    out, docs = tmp_path / "output", tmp_path / "docs"
    records, img = docs / "records", docs / "img"
    readme = docs / "README.md"
    readme.parent.mkdir(parents=True)
    readme.write_text(f"intro\n{update_readme.BEGIN}\nold numbers\n{update_readme.END}\nrest\n")
    argv = ["--output", str(out), "--data", str(data), "--dataset", "ImageFolder", "--readme", str(readme),
            "--records", str(records), "--img-dir", str(img)]
    planned = update_readme.planned_runs(out, str(data), "CoOp", "ImageFolder")
    _fake_records(planned, Checker(), 60.0)
    assert update_readme.main(argv) == 0
    block = read_block(readme, update_readme.BEGIN, update_readme.END)
    assert sorted(p.name for p in img.iterdir()) == ["toy_reliability_base.png", "toy_reliability_novel.png"]
    assert "seeds pooled" in block and "pool the test predictions of seeds 1, 2 and 3" in block
    first = _snapshot(docs)
    assert update_readme.main(argv) == 0
    assert _snapshot(docs) == first
    _fake_records(planned, Checker(), 60.0, commit="def456", seconds=31.0)   # the same runs, rerun
    assert update_readme.main(argv) == 0
    assert _snapshot(docs) == first
    # a committed record that names a machine path (made before records stored relative ones) is replaced
    committed = records / planned[1][0].out_dir.relative_to(out) / "results.json"
    rec = json.loads(committed.read_text())
    rec["run"]["model_dir"] = "/home/someone/output/base2new/train_base"
    committed.write_text(json.dumps(rec))
    assert update_readme.main(argv) == 0
    assert "/home/someone" not in committed.read_text()
    first = _snapshot(docs)
    # a run whose numbers changed is a real change: its record (and the table) are rewritten, nothing else
    rec_path = planned[0][0].out_dir / "results.json"
    rec = json.loads(rec_path.read_text())
    rec["metrics"]["accuracy"] = 10.0
    rec_path.write_text(json.dumps(rec))
    assert update_readme.main(argv) == 0
    changed = {p for p, v in _snapshot(docs).items() if first.get(p) != v}
    assert changed == {readme, records / planned[0][0].out_dir.relative_to(out) / "results.json"}
