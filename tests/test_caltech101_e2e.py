"""A fake Caltech101 tree built from the real canonical split (every image a tiny JPEG at its real path) trains
CoOp end to end through train.py with configs/datasets/caltech101.yaml, base then novel."""
from __future__ import annotations

import io
import json
import shutil

import pytest
from PIL import Image

import train
from tests.helpers import COOP_CFG, REPO, real_split_file

pytestmark = [pytest.mark.slow, pytest.mark.e2e]  # pytest.ini: the quick tier skips these


@pytest.fixture(scope="module")
def caltech_root(tmp_path_factory):
    split_file = real_split_file("split_zhou_Caltech101.json")
    root = tmp_path_factory.mktemp("caltech_data")
    folder = root / "caltech-101"
    images = folder / "101_ObjectCategories"
    folder.mkdir()
    shutil.copyfile(split_file, folder / split_file.name)
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (120, 60, 30)).save(buf, format="JPEG")
    data = buf.getvalue()
    split = json.loads(split_file.read_text())
    for rel, _, _ in split["train"] + split["val"] + split["test"]:
        path = images / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def argv(root, out, *extra, subsample):
    return ["--root", str(root), "--seed", "1", "--trainer", "CoOp", "--backbone", "tiny-vit", "--calib",
            "--dataset-config-file", str(REPO / "configs/datasets/caltech101.yaml"), "--config-file", COOP_CFG,
            "--output-dir", str(out), *extra, "DATASET.NUM_SHOTS", "1", "DATASET.SUBSAMPLE_CLASSES", subsample,
            "OPTIM.MAX_EPOCH", "1", "DATALOADER.NUM_WORKERS", "0", "DATALOADER.TEST.BATCH_SIZE", "200"]


def test_coop_trains_on_caltech101_layout(caltech_root, tmp_path):
    base, new = tmp_path / "base", tmp_path / "new"
    assert train.cli(argv(caltech_root, base, subsample="base")) == 0
    assert train.cli(argv(caltech_root, new, "--eval-only", "--model-dir", str(base), subsample="new")) == 0
    for run, n_test in ((base, None), (new, None)):
        res = json.loads((run / "results.json").read_text())
        assert res["run"]["dataset"] == "Caltech101" and res["run"]["num_classes"] == 50
        assert res["run"]["split_sha256"]
    # base/new test halves of the canonical split: 50 classes each
    split = json.loads(real_split_file("split_zhou_Caltech101.json").read_text())
    n_base_test = sum(1 for _, label, _ in split["test"] if label < 50)
    assert json.loads((base / "results.json").read_text())["run"]["num_test"] == n_base_test
    assert json.loads((new / "results.json").read_text())["run"]["num_test"] == len(split["test"]) - n_base_test
