"""Help text that says what is true (issue 23 item 5): train.py's --backbone names what it takes, and the example
command in its help is one copy-pasteable shell command per line."""
from __future__ import annotations

import re

import train


def _help() -> str:
    return train.build_parser().format_help()


def test_backbone_help_names_every_kind_of_backbone():
    action = next(a for a in train.build_parser()._actions if "--backbone" in a.option_strings)
    assert "CNN" not in action.help
    for kind in ("toy-clip", "ViT-B/16", "ARCH:PRETRAINED", "file"):
        assert kind in action.help, action.help


def test_help_example_keeps_its_line_breaks():
    """A backslash-newline in a non-raw docstring used to join the example into one line with runs of spaces."""
    lines = _help().splitlines()
    example = [i for i, line in enumerate(lines) if line.lstrip().startswith("python train.py")]
    assert example, _help()
    first = example[0]
    assert lines[first].endswith("\\") and lines[first + 1].lstrip().startswith("--dataset-config-file")
    assert not any(re.search(r"--calib {2,}--", line) for line in lines)
