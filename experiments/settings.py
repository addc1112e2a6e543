"""A sweep's settings, read from the scripts' environment (``SEEDS``, ``CALIB``, ``OPTS``, ``THREADS``, ...)."""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from experiments.errors import SweepError

KEY_RE = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)+$")


def _ints(text: str, name: str) -> list[int]:
    try:
        values = [int(t) for t in text.replace(",", " ").split()]
    except ValueError:
        raise SweepError(f"{name}={text!r}: expected integers separated by spaces, e.g. {name}=\"1 2 3\"") from None
    if not values:
        raise SweepError(f"{name} is empty; e.g. {name}=\"1 2 3\"")
    return values


def parse_calib(text: str) -> list[str | None]:
    """Variants of a CALIB value: ``both`` | ``on`` | ``off`` | baseline names, several allowed."""
    from calibration.regularizers import CALIB_WORDS, resolve_calib_name  # the one owner of the calibration names

    variants: list[str | None] = []
    for token in text.replace(",", " ").lower().split() or ["both"]:
        if token in CALIB_WORDS:
            found = CALIB_WORDS[token]
        else:
            try:
                found = (resolve_calib_name(token) or None,)
            except Exception as e:  # UserError (or ValueError without the engine)
                raise SweepError(f"CALIB={text!r}: {e}. Use both | on | off or a baseline name.") from None
        variants += [v for v in found if v not in variants]
    return variants


def parse_opts(text: str) -> list[str]:
    """KEY VALUE pairs of OPTS (shell words)."""
    try:
        words = shlex.split(text)
    except ValueError as e:
        raise SweepError(f"OPTS={text!r}: {e}") from None
    if len(words) % 2:
        raise SweepError(f"OPTS={text!r}: expected KEY VALUE pairs, got an odd number of words")
    for key in words[::2]:
        if not KEY_RE.match(key):
            raise SweepError(f"OPTS: {key!r} is not a config key (KEY VALUE pairs such as OPTIM.MAX_EPOCH 5)")
    return words


@dataclass
class Settings:
    data: str = "./data"
    output: Path = Path("output")
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    shots: list[int] | None = None      # None: the protocol's default
    calib: list[str | None] = field(default_factory=lambda: [None, "tcpt"])
    cfg: str | None = None
    backbone: str | None = None
    opts: list[str] = field(default_factory=list)
    dry_run: bool = False
    stop_on_error: bool = False
    python: str = "python"
    on_mismatch: str = "rerun"
    threads: int | None = None          # THREADS (experiments/run_policy.py); None = per backbone
    lockstep: str = "variants"          # LOCKSTEP (experiments/lockstep_groups.py): variants | methods | off

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "Settings":
        def get(name: str) -> str:
            return env.get(name, "").strip()

        s = cls(data=get("DATA") or "./data", output=Path(get("OUTPUT") or "output"),
                seeds=_ints(get("SEEDS") or "1 2 3", "SEEDS"), calib=parse_calib(get("CALIB")),
                cfg=get("CFG") or None, backbone=get("BACKBONE") or None, opts=parse_opts(env.get("OPTS", "")),
                dry_run=get("DRY_RUN") not in ("", "0", "false", "no"),
                stop_on_error=get("STOP_ON_ERROR") not in ("", "0", "false", "no"), python=get("PYTHON") or "python")
        s.on_mismatch = get("ON_MISMATCH").lower() or "rerun"
        if s.on_mismatch not in ("rerun", "error"):
            raise SweepError(f"ON_MISMATCH={get('ON_MISMATCH')!r}: use rerun (run a stale run again) or error")
        from experiments.run_policy import ThreadsError, parse_threads

        try:
            s.threads = parse_threads(get("THREADS"))
        except ThreadsError as e:
            raise SweepError(str(e)) from None
        from experiments.lockstep_groups import LockstepSettingError, parse_mode

        try:
            s.lockstep = parse_mode(get("LOCKSTEP"))
        except LockstepSettingError as e:
            raise SweepError(str(e)) from None
        if get("SHOTS"):
            s.shots = _ints(get("SHOTS"), "SHOTS")
        # DATASET.NUM_SHOTS in OPTS is the same setting as SHOTS: take it, so that the layout tells the truth
        opt_keys = s.opts[::2]
        if "DATASET.SUBSAMPLE_CLASSES" in opt_keys:
            raise SweepError("OPTS sets DATASET.SUBSAMPLE_CLASSES; the sweep sets it (base, new or all) per run: "
                             "remove it from OPTS")
        if "DATASET.NUM_SHOTS" in opt_keys:
            i = opt_keys.index("DATASET.NUM_SHOTS") * 2
            shots = _ints(s.opts[i + 1], "DATASET.NUM_SHOTS in OPTS")
            if s.shots is not None and s.shots != shots:
                raise SweepError(f"SHOTS={get('SHOTS')} and OPTS DATASET.NUM_SHOTS {s.opts[i + 1]} disagree; set "
                                 "only SHOTS")
            s.shots = shots
            del s.opts[i:i + 2]
        return s

    def single_shots(self, default: int = 16) -> int:
        if self.shots is None:
            return default
        if len(self.shots) != 1:
            raise SweepError(f"SHOTS={' '.join(map(str, self.shots))}: this protocol takes one K (a list is for "
                             "few_shot.sh)")
        return self.shots[0]


