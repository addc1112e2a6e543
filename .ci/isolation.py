#!/usr/bin/env python3
"""CI proof that the test suite touches nothing outside its temporary folders (standard library only).

    python .ci/isolation.py plant HOME_DIR     # before pytest: a checkout and a home that already hold state
    python .ci/isolation.py check HOME_DIR     # after pytest: fails unless all of it is byte-identical

``plant`` gives the checkout what a user's checkout has after the README's quick start: the committed toy records
(docs/results/toy/) copied into ``output/`` at the README's paths (only when ``output/`` does not exist: a
developer's own runs are never overwritten, they are state too), and a ``data/`` folder with a damaged split file.
HOME_DIR becomes a home with poisoned caches (``.cache/calib-prompt``, ``.cache/clip``, a feature cache) and a
trainer file that fails on import; ``.ci/run`` exports HOME, XDG_CACHE_HOME, CALIB_PROMPT_CACHE, CLIP_WEIGHTS and
CALIB_PROMPT_TRAINERS to point into it, so a test that used any of them instead of its own folders would fail or
change it. ``plant`` writes a manifest (sha256 of every file, every folder) of the checkout (but .git, .venv and
``__pycache__``) and the home to HOME_DIR; ``check`` compares, then removes what ``plant`` put into the checkout.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MANIFEST = "isolation-manifest.json"
PLANTED = "isolation-planted.json"


SKIP = {".git", ".venv", "venv", "__pycache__", ".pytest_cache"}   # what running Python and pip change by nature


def walk(root: Path):
    yield root
    if root.is_dir() and not root.is_symlink():
        for child in sorted(root.iterdir()):
            if child.name not in SKIP:
                yield from walk(child)


def manifest(roots: list[Path]) -> dict[str, str]:
    out = {}
    for root in roots:
        if not root.exists():
            out[str(root)] = "absent"
            continue
        for path in walk(root):
            if path.is_symlink():
                out[str(path)] = "link:" + str(path.readlink())
            elif path.is_dir():
                out[str(path)] = "dir"
            elif path.stat().st_size < (1 << 20):
                out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
            else:  # a developer's own data/ may hold datasets: size and mtime stand in for the bytes
                st = path.stat()
                out[str(path)] = f"size {st.st_size} mtime {st.st_mtime_ns}"
    return out


def roots(home: Path) -> list[Path]:
    """The whole checkout (its output/ and data/ included) and the poisoned home."""
    return [REPO, home / ".cache", home / "weights", home / "trainers"]


def plant(home: Path) -> None:
    planted = []
    if not (REPO / "output").exists():
        shutil.copytree(REPO / "docs" / "results" / "toy", REPO / "output")
        planted.append("output")
    if not (REPO / "data").exists():
        bad = REPO / "data" / "caltech-101" / "split_zhou_Caltech101.json"
        bad.parent.mkdir(parents=True)
        bad.write_text('{"train": "poisoned by .ci/isolation.py: a test read the checkout\'s data/"}\n')
        (REPO / "data" / "toy").mkdir()
        (REPO / "data" / "toy" / "POISONED").write_text("a test read the checkout's data/\n")
        planted.append("data")
    poison = b"poisoned by .ci/isolation.py: a test read the user's cache\n"
    for rel in (".cache/calib-prompt/features/poisoned.pt", ".cache/clip/ViT-B-16.pt", ".cache/clip/RN50.pt",
                ".cache/huggingface/POISONED", ".cache/torch/POISONED", "weights/ViT-B-16.pt"):
        (home / rel).parent.mkdir(parents=True, exist_ok=True)
        (home / rel).write_bytes(poison)
    (home / "trainers").mkdir(parents=True, exist_ok=True)
    (home / "trainers" / "poisoned_trainer.py").write_text(
        'raise RuntimeError("poisoned by .ci/isolation.py: a test loaded the user\'s $CALIB_PROMPT_TRAINERS")\n')
    (home / PLANTED).write_text(json.dumps(planted))
    (home / MANIFEST).write_text(json.dumps(manifest(roots(home)), indent=1))
    print(f".ci/isolation.py: planted {', '.join(planted) or 'nothing in the checkout (output/ and data/ exist)'}; "
          f"poisoned home {home}")


def check(home: Path) -> int:
    before = json.loads((home / MANIFEST).read_text())
    after = manifest(roots(home))
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    for name in json.loads((home / PLANTED).read_text()):
        shutil.rmtree(REPO / name)
    if changed:
        print(f".ci/isolation.py: the test suite changed {len(changed)} path(s) outside its temporary folders:",
              *(f"  {k}: {before.get(k, 'absent')} -> {after.get(k, 'absent')}" for k in changed[:20]),
              sep="\n", file=sys.stderr)
        return 1
    print(".ci/isolation.py: the checkout (output/ and data/ included) and the caches are byte-identical after "
          "the test suite")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("plant", "check"):
        sys.exit(__doc__)
    home = Path(sys.argv[2]).resolve()
    if sys.argv[1] == "plant":
        plant(home)
    else:
        sys.exit(check(home))
