"""tools/parse_results.py on synthetic results.json files: hand-computed means, population std, HM of the means,
gaps shown, protocols never mixed, the paper's reference numbers, output formats."""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import pytest

from experiments import aggregate, reference
from tools import parse_results as pr


def write(root: Path, rel: str, trainer="CoOp", dataset="Caltech101", subsample="base", seed=1, acc=50.0, ece=5.0,
          calib=None, shots=16, backbone="ViT-B/16", config="vit_b16_ep50", max_epoch=50, model_dir=None,
          calib_params=None, backbone_weights=None, method_cfg=None, precision=None, **metrics) -> Path:
    """A run folder holding only results.json (the folder name carries no information on purpose)."""
    d = root / rel
    d.mkdir(parents=True)
    run = {"trainer": trainer, "dataset": dataset, "subsample": subsample, "shots": shots, "seed": seed,
           "calib": calib, "calib_params": calib_params, "backbone": backbone, "config": config,
           "max_epoch": max_epoch, "model_dir": model_dir, "backbone_weights": backbone_weights}
    run.update({k: v for k, v in (("method_cfg", method_cfg), ("precision", precision)) if v is not None})
    (d / "results.json").write_text(json.dumps({"metrics": {"accuracy": acc, "ece": ece, **metrics},
                                                "split": "test", "run": run}))
    return d


def run(capsys, *argv) -> tuple[int, str, str]:
    rc = pr.main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def as_json(capsys, *argv) -> dict:
    rc, out, _ = run(capsys, *argv, "--json")
    assert rc == 0
    return json.loads(out)


def variant(doc, trainer, label, group=0):
    block = next(b for b in doc["groups"][group]["blocks"] if b["trainer"] == trainer)
    return next(v for v in block["variants"] if v["label"] == label)


@pytest.fixture
def b2n(tmp_path):
    """CoOp with and without --calib on two datasets, 3 seeds; the calib DTD novel run of seed 3 is missing."""
    values = {  # (dataset, subsample) -> accuracies of seeds 1, 2, 3
        ("Caltech101", "base"): (60.0, 90.0, 75.0), ("Caltech101", "new"): (90.0, 60.0, 75.0),
        ("DescribableTextures", "base"): (80.0, 82.0, 84.0), ("DescribableTextures", "new"): (50.0, 52.0, 54.0),
    }
    i = 0
    for (ds, sub), accs in values.items():
        for seed, acc in zip((1, 2, 3), accs):
            for calib in (None, "tcpt"):
                if calib and ds == "DescribableTextures" and sub == "new" and seed == 3:
                    continue
                i += 1
                write(tmp_path, f"r{i}", dataset=ds, subsample=sub, seed=seed, calib=calib,
                      acc=acc + (1.0 if calib else 0.0), ece=seed * 1.0)
    return tmp_path


def test_means_population_std_and_hm_of_the_means(b2n, capsys):
    doc = as_json(capsys, b2n)
    plain = variant(doc, "CoOp", "plain")
    cal_base = plain["cells"]["base/self"]["Caltech101"]["accuracy"]
    assert cal_base["mean"] == pytest.approx(75.0)
    assert cal_base["std"] == pytest.approx(math.sqrt(((60 - 75) ** 2 + (90 - 75) ** 2 + 0) / 3))  # ddof 0
    assert plain["cells"]["base/self"]["Caltech101"]["ece"]["mean"] == pytest.approx(2.0)
    # HM of the seed means (75, 75) is 75; the mean of per-seed HMs would be (72 + 72 + 75) / 3 = 73
    hm = plain["hm"]["per_dataset"]
    assert hm["Caltech101"]["hm"] == pytest.approx(75.0)
    assert hm["DescribableTextures"]["hm"] == pytest.approx(2 * 82 * 52 / (82 + 52))
    # Avg: HM of the averaged base (78.5) and novel (63.5) accuracies
    assert plain["hm"]["avg"]["hm"] == pytest.approx(2 * 78.5 * 63.5 / (78.5 + 63.5))
    assert plain["hm"]["avg"]["datasets"] == ["Caltech101", "DescribableTextures"]


def test_table_text_shows_gaps(b2n, capsys):
    rc, out, _ = run(capsys, b2n)
    assert rc == 0
    assert "Table 1. Base-class results" in out and "Table 2. Novel-class results" in out and "HM of" in out
    assert "75.00 ± 12.25" in out            # Caltech base, plain: std of (60, 90, 75) = 12.247
    assert "52.00 ± 1.00 (2/3 seeds)" in out  # calib DTD novel: seeds 1, 2 of 3
    assert "(2/11 datasets)" in out           # Avg over the 2 of the 11 datasets run
    line = next(l for l in out.splitlines() if "CoOp [vit_b16_ep50, 50 ep]" in l)
    assert line.count("–") == 9               # the 9 datasets never run are shown as gaps
    assert "63.94 (2/3 seeds)" in out         # HM of DTD calib: 2*83*52/135, flagged partial


def test_protocols_are_grouped_never_mixed(tmp_path, capsys):
    write(tmp_path, "a", seed=1, acc=80.0)
    write(tmp_path, "b", seed=2, acc=90.0)
    write(tmp_path, "c", seed=1, acc=10.0, shots=4)
    write(tmp_path, "d", seed=1, acc=20.0, backbone="RN50", config="rn50_ep50")
    write(tmp_path, "e", seed=1, acc=30.0, max_epoch=5)
    doc = as_json(capsys, tmp_path)
    heads = [(g["shots"], g["backbone"]) for g in doc["groups"]]
    assert sorted(heads, key=str) == sorted([(4, "ViT-B/16"), (16, "RN50"), (16, "ViT-B/16")], key=str)
    g16 = next(g for g in doc["groups"] if g["shots"] == 16 and g["backbone"] == "ViT-B/16")
    epochs = sorted(b["max_epoch"] for b in g16["blocks"])
    assert epochs == [5, 50]                  # different epochs: separate blocks
    block50 = next(b for b in g16["blocks"] if b["max_epoch"] == 50)
    cell = block50["variants"][0]["cells"]["base/self"]["Caltech101"]["accuracy"]
    assert cell["mean"] == pytest.approx(85.0) and cell["n"] == 2
    rc, out, _ = run(capsys, tmp_path)
    assert out.count("never averaged together") == 3
    assert "Base-to-novel: 4 shots, backbone ViT-B/16" in out and "backbone RN50" in out


def test_different_calib_params_are_separate_rows(tmp_path, capsys):
    write(tmp_path, "a", calib="tcpt", calib_params={"LAMBDA_MOM": 5.0, "ALPHA": 0.1}, acc=70.0)
    write(tmp_path, "b", calib="tcpt", calib_params={"LAMBDA_MOM": 1.0, "ALPHA": 0.1}, acc=90.0)
    rc, out, _ = run(capsys, tmp_path)
    assert "TCPT (LAMBDA_MOM=5.0)" in out and "TCPT (LAMBDA_MOM=1.0)" in out
    assert "80.00" not in out


def test_duplicate_seed_is_reported(tmp_path, capsys):
    write(tmp_path, "a", acc=70.0)
    write(tmp_path, "b", acc=90.0)
    rc, out, err = run(capsys, tmp_path)
    assert "duplicate run" in err and str(tmp_path / "b" / "results.json") in err
    assert "70.00" in out and "80.00" not in out


def test_runs_of_different_weights_in_one_table_are_reported(tmp_path, capsys):
    for seed in (1, 2):
        write(tmp_path, f"old{seed}", seed=seed, backbone="toy-clip", backbone_weights="aaaa")
    write(tmp_path, "new3", seed=3, backbone="toy-clip", backbone_weights="bbbb")
    write(tmp_path, "other", seed=1, backbone="ViT-B/16", backbone_weights="cccc")  # another table: fine
    rc, out, err = run(capsys, tmp_path)
    assert rc == 0 and "2 different weights" in err and str(tmp_path / "new3") in err
    assert str(tmp_path / "old1") not in err and "cccc" not in err
    write(tmp_path, "legacy", seed=4, backbone="toy-clip")  # records without the field are not counted
    _, _, err = run(capsys, tmp_path)
    assert "2 different weights" in err


def test_unreadable_files_are_reported_not_dropped(tmp_path, capsys):
    write(tmp_path, "a")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "results.json").write_text("{not json")
    rc, _, err = run(capsys, tmp_path)
    assert rc == 0 and "bad/results.json: not used" in err


def test_zero_shot_block_and_posthoc_variants(tmp_path, capsys):
    for sub, acc in (("base", 70.0), ("new", 74.0)):
        write(tmp_path, f"zs_{sub}", trainer="ZeroshotCLIP", config="vit_b16", max_epoch=10, subsample=sub,
              acc=acc, shots=16)
    d = write(tmp_path, "coop", acc=80.0)
    (d / "results_ts.json").write_text(json.dumps({"metrics": {"accuracy": 80.0, "ece": 1.5}, "method": "ts"}))
    rc, out, _ = run(capsys, tmp_path, "--summary", "--dataset", "caltech101")
    assert "ZeroshotCLIP [vit_b16]" in out and "zero-shot" in out
    rows = {l.split("|")[2].strip(): l for l in out.splitlines() if l.startswith("|") and "---" not in l}
    assert "1.50" in rows["TS"]                    # post-hoc ECE from results_ts.json
    assert rows["zero-shot"].rstrip(" |").endswith("71.94")   # HM(70, 74)


def test_summary_mode_one_row_per_variant(b2n, capsys):
    rc, out, _ = run(capsys, b2n, "--method", "coop", "--dataset", "Caltech101", "--summary")
    assert rc == 0
    lines = [l for l in out.splitlines() if l.startswith("|")]
    assert [c.strip() for c in lines[0].strip("|").split("|")] == ["Method", "Variant", "Base acc", "Base ECE",
                                                                    "Novel acc", "Novel ECE", "HM"]
    body = lines[2:]
    assert len(body) == 2 and "plain" in body[0] and "TCPT" in body[1]
    assert "75.00 ± 12.25" in body[0] and body[0].rstrip(" |").endswith("75.00")
    assert "DescribableTextures" not in out


def test_reference_rows_and_printed_vs_recomputed_avg(tmp_path, capsys):
    write(tmp_path, "a", acc=98.0, ece=1.0)
    write(tmp_path, "b", subsample="new", acc=95.0, ece=2.0)
    write(tmp_path, "zs", trainer="ZeroshotCLIP", config="vit_b16", subsample="new", acc=94.0, ece=1.5)
    rc, out, _ = run(capsys, tmp_path, "--reference", "tcpt")
    assert rc == 0
    assert "paper (CoOp)" in out and "97.98" in out and "+0.02" in out    # 98.00 - 97.98
    assert "94.18" in out and "+0.82" in out                              # novel: 95.00 - 94.18
    assert "74.69 (printed 74.30)" in out                                 # zero-shot novel Avg, §4.3
    # another protocol is not compared
    other = tmp_path / "other"
    write(other, "a", backbone="tiny-vit")
    rc, out, _ = run(capsys, other, "--reference", "tcpt")
    assert "paper (" not in out and "not compared here" in out


KG = {"W": 8.0, "N_CTX": 4, "PREC": "fp16"}


def test_reference_pairs_like_with_like(tmp_path, capsys):
    """The paper's KgCoOp rows come from TCPT's hybrid loss: our published-loss KgCoOp gets no Δ against them, a
    note says which options reproduce them; runs with those options get the Δ. A precision difference is a note."""
    kg = dict(trainer="KgCoOp", config="vit_b16_ep100_ctxv1", max_epoch=100, calib="tcpt", acc=98.0)
    write(tmp_path, "pub", method_cfg={**KG, "LOSS": "kg", "FROZEN_TARGET": "dataset"}, precision="fp16", **kg)
    write(tmp_path, "coop", acc=98.0, precision="fp32", method_cfg={"N_CTX": 16})
    rc, out, _ = run(capsys, tmp_path, "--reference", "tcpt", "--method", "kgcoop", "coop")
    assert rc == 0
    lines = out.splitlines()
    kg_paper = next(i for i, l in enumerate(lines) if "paper (Ours)" in l and "Acc." in l)
    assert "[other settings]" in lines[kg_paper] and "97.68" in lines[kg_paper]     # KgCoOp Ours, Caltech
    assert "Δ" not in lines[kg_paper + 1]                                           # no difference row
    assert ('paper KgCoOp rows were made with LOSS tcpt_hybrid, FROZEN_TARGET own' in out
            and "our TCPT runs have FROZEN_TARGET dataset, LOSS kg" in out
            and 'rerun with OPTS="TRAINER.KGCOOP.LOSS tcpt_hybrid TRAINER.KGCOOP.FROZEN_TARGET own"' in out)
    # CoOp (no method settings in the paper's file): Δ shown, the fp32 precision noted
    assert "+0.02" in out and "our plain runs have PREC fp32: Δ shown" in out

    like = tmp_path / "like"
    write(like, "hyb", method_cfg={**KG, "LOSS": "tcpt_hybrid", "FROZEN_TARGET": "own"}, precision="fp16", **kg)
    rc, out, _ = run(capsys, like, "--reference", "tcpt")
    assert "[other settings]" not in out and "+0.32" in out and "were made with" not in out  # 98.00 - 97.68
    # runs from before run.method_cfg was recorded count as different
    old = tmp_path / "old"
    write(old, "hyb", **kg)
    rc, out, _ = run(capsys, old, "--reference", "tcpt")
    assert "[other settings]" in out and "LOSS not recorded" in out


def test_reference_file_keeps_printed_and_recomputed_avgs():
    doc = json.loads((reference.REFERENCE_DIR / "tcpt_readme.json").read_text())
    assert doc["datasets"] == list(aggregate.BENCHMARK)
    rows = {(r["trainer"], r["variant"], r["subsample"], r["metric"]): r for r in doc["rows"]}
    assert len(rows) == len(doc["rows"]) == 88
    assert all(len(r["values"]) == 11 for r in doc["rows"])
    coop = rows[("CoOp", "none", "base", "accuracy")]
    assert coop["values"][1] == 97.98 and coop["avg_printed"] == 81.00
    # the README's printed averages do not always match its rows (docs/protocol_notes.md#readme-avg-anomalies)
    maple = rows[("MaPLe", "none", "base", "accuracy")]
    assert maple["avg_printed"] == 82.41 and round(maple["avg_recomputed"], 2) == 81.80
    assert round(maple["avg_recomputed_without_imagenet"], 2) == 82.31
    assert round(rows[("KgCoOp", "tcpt", "base", "accuracy")]["avg_recomputed"], 2) == 80.84
    assert rows[("CoOp", "none+dac", "new", "accuracy")]["avg_recomputed"] is None
    assert any("copy" in n for n in rows[("KgCoOp", "zs_norm", "base", "accuracy")]["notes"])


@pytest.mark.parametrize("fmt", ["markdown", "latex", "csv"])
def test_formats(b2n, capsys, fmt):
    rc, out, _ = run(capsys, b2n, "--format", fmt)
    assert rc == 0
    if fmt == "markdown":
        assert "|:" in out or "|-" in out
    elif fmt == "latex":
        assert r"\begin{tabular}" in out and r"75.00 $\pm$ 12.25" in out
    else:
        tables = [t for t in out.split("\n\n") if t.strip() and not t.startswith("# Base-to-novel")]
        rows = list(csv.reader(io.StringIO(tables[0].split("\n", 1)[1])))
        assert rows[0][:3] == ["Method", "Variant", "Metric"] and rows[0][-1] == "Avg"
        assert len(rows[0]) == 3 + 11 + 1 and len(rows) == 1 + 4      # 2 variants x (Acc., ECE)


def test_extra_metrics_and_unknown_metric(tmp_path, capsys):
    write(tmp_path, "a", nll=0.1234, brier=0.5, adaptive_ece=3.0)
    rc, out, _ = run(capsys, tmp_path, "--metrics", "nll", "brier", "ace")
    assert rc == 0 and "NLL" in out and "0.123" in out and "Brier" in out and "ACE" in out
    rc, _, err = run(capsys, tmp_path, "--metrics", "sharpness")
    assert rc == 2 and "unknown metric" in err


@pytest.mark.parametrize("relative", [False, True])
def test_all_class_runs_cross_dataset_table(tmp_path, capsys, monkeypatch, relative):
    """``model_dir`` as older records hold it (absolute) and as records write it now (relative to the run folder,
    read from another working directory)."""
    src = write(tmp_path, "src", dataset="ImageNet", subsample="all", acc=70.0)
    model_dir = "../src" if relative else str(src)
    (tmp_path / "elsewhere" / "cwd").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "elsewhere" / "cwd")
    write(tmp_path, "cal", dataset="Caltech101", subsample="all", acc=90.0, model_dir=model_dir)
    write(tmp_path, "pets", dataset="OxfordPets", subsample="all", acc=80.0, model_dir=model_dir)
    write(tmp_path, "v2", dataset="ImageNetV2", subsample="all", acc=60.0, model_dir=model_dir)
    rc, out, _ = run(capsys, tmp_path, "--kind", "all-classes")
    assert rc == 0
    row = next(l for l in out.splitlines() if "| ImageNet " in l and "Acc." in l)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[-2] == "85.00"               # Avg over the targets (Caltech, Pets), not the source
    assert cells[-1] == "60.00 (1/4 datasets)"
    assert "each dataset" in out              # the ImageNet training run itself


def test_missing_folder_and_empty_filters(tmp_path, capsys):
    rc, _, err = run(capsys, tmp_path / "nope")
    assert rc == 2 and "does not exist" in err
    write(tmp_path, "a")
    rc, _, err = run(capsys, tmp_path, "--method", "maple")
    assert rc == 1 and "matching the filters" in err
