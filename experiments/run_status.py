"""Is a run folder's record the run a command would make now? (the sweep, both launcher backends and
tools/update_readme.py ask here)

:class:`Checker` resolves a train.py command line in-process (``train.setup_cfg``: no model, no data loader; the
experiments library sits above train.py) into the identity train.py would record (runs/identity.py) and
compares it with the folder's ``results.json``: ``done`` (the same identity), ``stale`` (it differs; the
differences are named) or ``missing`` (no record).
"""
from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path
from typing import Sequence

ON_MISMATCH = ("rerun", "error")


class Checker:
    """Expected identities of train.py command lines, cached per output folder and per data split."""

    def __init__(self):
        self._expected: dict[str, dict | None] = {}
        self._splits: dict[tuple, str | None] = {}
        self.unreadable: set[str] = set()  # data roots whose split could not be read (not compared)

    def expected(self, args: Sequence[str], model_dir: str | os.PathLike | None = None,
                 model_args: Sequence[str] | None = None) -> dict | None:
        """The identity train.py would record for ``args`` (None when train.py would reject them). For an
        evaluation of trained prompts, ``model_args`` is the training run's command (its expected id is the
        ``model`` component)."""
        key = json.dumps(list(args))
        if key in self._expected:
            return self._expected[key]
        import train
        from runs import identity

        try:
            with contextlib.redirect_stdout(io.StringIO()):
                parsed = train.parse_args(list(args))
                cfg = train.setup_cfg(parsed)
        except (Exception, SystemExit):  # train.py reports it when the run starts (argparse exits)
            self._expected[key] = None
            return None
        skey = (cfg.DATASET.NAME, os.path.abspath(os.path.expanduser(cfg.DATASET.ROOT)), cfg.DATASET.CACHE_DIR)
        if skey not in self._splits:
            self._splits[skey] = identity.split_sha256(cfg)
            if self._splits[skey] is None:
                self.unreadable.add(cfg.DATASET.ROOT)
        model = None
        if model_args is not None:
            base = self.expected(model_args)
            model = base["id"] if base else "?"
        ident = identity.identity(cfg, self._splits[skey], model, parsed.opts, getattr(parsed, "sweep_opts", ()))
        self._expected[key] = ident
        return ident

    def status(self, out_dir: str | os.PathLike, args: Sequence[str],
               model_args: Sequence[str] | None = None) -> tuple[str, list[str]]:
        """("done" | "stale" | "missing", the differences)."""
        from experiments.records import has_record, recorded_identity

        if not has_record(out_dir):
            return "missing", []
        try:
            recorded = recorded_identity(out_dir)
        except (OSError, ValueError, AttributeError):
            return "stale", ["results.json is unreadable"]
        expected = self.expected(args, model_args=model_args)
        if expected is None:
            return "stale", ["its command is rejected by train.py now"]
        from runs import identity

        diffs = identity.differences(recorded, expected)
        return ("stale" if diffs else "done"), diffs


def train_args(argv: Sequence[str]) -> list[str] | None:
    """The arguments after ``train.py`` in a command's words (None when it does not run train.py)."""
    for i, word in enumerate(argv):
        if Path(word).name == "train.py":
            return list(argv[i + 1:])
    return None
