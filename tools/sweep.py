#!/usr/bin/env python
"""Sweeps behind ``scripts/*.sh``: plan the train.py runs of a protocol, run the unfinished ones, summarise.

    python tools/sweep.py base2novel METHOD DATASET     # scripts/base2novel.sh
    python tools/sweep.py base2novel_all METHOD         # scripts/base2novel_all.sh (the 11 datasets)
    python tools/sweep.py cross_dataset METHOD          # scripts/cross_dataset.sh (ImageNet -> 10 datasets)
    python tools/sweep.py domain_generalization METHOD  # scripts/domain_generalization.sh (-> ImageNet V2/S/A/R)
    python tools/sweep.py few_shot METHOD DATASET       # scripts/few_shot.sh (all classes, K = 1 2 4 8 16)

Settings come from the environment (the scripts' interface):
``DATA`` (./data), ``OUTPUT`` (output), ``SEEDS`` ("1 2 3"), ``SHOTS`` (16; few_shot: "1 2 4 8 16"),
``CALIB`` (both | on | off | mbls | zs_norm | penalty, or several separated by spaces/commas), ``CFG`` (a
config name instead of the method's config for the protocol; a protocol without one is an error), ``BACKBONE``,
``OPTS`` (extra ``KEY VALUE`` pairs for every run), ``DRY_RUN=1`` (print the train.py commands, one per line,
run nothing; runs whose record is stale are named on stderr), ``ON_MISMATCH`` (rerun | error: what to do with a
run whose record was made by another identity), ``STOP_ON_ERROR=1`` (stop at the first failed run instead
of going on with the next one), ``THREADS`` (torch threads per run, ``TRAIN.NUM_THREADS``: 1 for the toy and tiny
backbones, else torch's default; ``experiments/run_policy.py``), ``PYTHON`` (the interpreter named in printed
commands, default ``python``), ``LOCKSTEP`` (1, the default: a method's variants of one seed, e.g. plain and
``--calib``, train in one process over one data stream, sharing each batch's frozen image features, each with its
own folder and record, its predictions those of the run alone; ``methods``: text-only methods with the same data
settings too; 0: every run alone; experiments/lockstep_groups.py).
Zero-shot CLIP (``zsclip``) trains nothing: one eval-only run per split and dataset (the first seed,
``NUM_SHOTS 0``), whatever SEEDS, SHOTS and CALIB say.

A run whose ``results.json`` records the identity the run would have now (resolved config, data split, code and
library versions, the prompts it evaluates: runs/identity.py) is complete and skipped; a record of another
identity is stale: the sweep names what differs and runs it again (``ON_MISMATCH=error``: refuses, counted as a
failure); any other run is (re)started in its folder, where train.py resumes from its last checkpoint.
The user's options (``OPTS``, and a ``THREADS`` other than the thread policy's count) put a short id into the
folder name (``<cfg>..._<id8>``, the record's ``run.identity.options_id`` and the tables' ``opts <id>``), so runs of
other options never share a folder and never replace a record. Settings the sweep applies itself (the toy
protocol's 20 epochs and crops, the thread policy) go to train.py as ``--sweep-opt KEY VALUE``: recorded as
``sweep_options``, not options, and announced on the console (``note: the sweep sets ...``).
Children run in their own process group and end with the sweep (SIGINT/SIGTERM: SIGTERM, then SIGKILL; a killed
sweep: the kernel's parent-death signal, experiments/children.py). train.py's output goes to
``<run dir>/console.log`` (stdout+stderr of the last attempt; ``log.txt`` is train.py's own log); the console shows
one progress line per unit (a training run and the evaluations of its prompts), the running run's epoch and ETA
(``experiments/progress.py``: a line rewritten in place on a terminal, one line per epoch otherwise) and one result
line per run. A failed run prints the tail of its console.log and its command; the evaluations that need its
prompts are skipped, the sweep goes on (or stops with ``STOP_ON_ERROR=1``) and exits 1 at the end. Tables are
computed from results.json as ``tools/parse_results.py`` does.

The library behind it: experiments/ (settings.py, planner.py, sweep.py, run_status.py, tables.py).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Mapping, Sequence

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.errors import SweepError  # noqa: E402


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    env = os.environ if env is None else env
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    from experiments import sweep
    from experiments.planner import applied_settings_notes
    from experiments.settings import Settings

    try:
        s = Settings.from_env(env)
        _, units, summary = sweep.plan(argv[0], argv[1:], s)
        notes = applied_settings_notes(units, s.opts)
    except SweepError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if s.dry_run:  # the commands name the sweep's own settings (--sweep-opt)
        return sweep.dry_run(units, s)
    error = sweep.check_data(units, s)
    if error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for note in notes:
        print(note, flush=True)
    rc = sweep.execute(units, s)
    if rc in (130, 143):
        return rc
    print(flush=True)
    from experiments.tables import report

    code, text, table_notes = report(**summary)
    for note in table_notes:
        print(f"note: {note}", file=sys.stderr)
    print(text, file=sys.stdout if code == 0 else sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
