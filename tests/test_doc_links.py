"""Everything the code and docs cite is in the repository: every `<file>.md` named in a tracked source, config,
script or doc exists, and every `<file>.md#anchor` names a heading of that file."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CITE = re.compile(r"(?<![\w/.-])((?:\.\./|\./)?[\w][\w./-]*\.md)(?!\w)(#[\w-]+)?")
SUFFIXES = (".py", ".md", ".sh", ".yaml", ".yml", ".txt", ".ini", ".cfg", ".json")
#: documents of other projects that the text names as such (not citations of ours)
EXTERNAL = {"DATASETS.md", "INSTALL.md", "COOP.md"}


def _tracked() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        pytest.skip("not a git checkout: the tracked files are unknown")
    return [REPO / n for n in out.decode().split("\0") if n.endswith(SUFFIXES) or n == ".importlinter"]


def _slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(doc: Path) -> set[str]:
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+)$", doc.read_text(encoding="utf-8"), re.M)}


def test_slug_rule():
    assert _slug("What each method gives the shared step") == "what-each-method-gives-the-shared-step"
    assert _slug("The paper's own code") == "the-papers-own-code"
    assert _slug("IVLP and language-only") == "ivlp-and-language-only"


def test_every_cited_document_and_section_exists():
    missing = []
    for path in _tracked():
        if not path.is_file():
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            for m in CITE.finditer(line):
                name, anchor = m.group(1), m.group(2)
                if Path(name).name in EXTERNAL or "://" in line[max(0, m.start() - 60):m.start()]:
                    continue
                before, after = line[m.start() - 1:m.start()], line[m.end():m.end() + 1]
                if before in "\"'" and before and after == before:  # a file name in code ("x.md"), not a citation
                    continue
                candidates = [path.parent / name, REPO / name, REPO / "docs" / name]
                doc = next((c for c in candidates if c.is_file()), None)
                where = f"{path.relative_to(REPO)}:{n}"
                if doc is None:
                    missing.append(f"{where}: {name} is not in the repository")
                elif anchor and anchor[1:] not in _anchors(doc):
                    missing.append(f"{where}: {name} has no section {anchor}")
    assert not missing, "\n".join(missing)
