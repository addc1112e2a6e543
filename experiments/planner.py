"""The sweep's plan: the train.py runs of a protocol for one method, as a flat list of :class:`Unit` specs.

A :class:`Unit` is one training run (or zero-shot CLIP's source run) with the evaluations of its prompts; its fields
say what it is (protocol, trainer, dataset, seed, shots, config, backbone, ``calib`` = its loss), so grouping units
(e.g. the runs that differ only in their loss, trained in one process) is a function over the list
(:meth:`Unit.key_without_loss`). Names follow one rule (:meth:`Planner.cfg_name`):
``<cfg>[_<backbone>][_calib|_calib-<name>][_<options id>]``, the options id being the record's
``run.identity.options_id`` (runs/identity.py) of the user's options: ``OPTS`` and a ``THREADS`` other than the
thread policy's. The settings the sweep applies itself (the toy protocol's epochs and crops, the thread policy,
PromptSRC's few-shot GPA) are passed as train.py ``--sweep-opt KEY VALUE``: recorded as ``sweep_options``, not
part of the id, and announced on the console (:func:`applied_settings_notes`).
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from experiments.errors import SweepError
from experiments.methods import resolve_method
from experiments.protocols import (DATASET_OPTS, DEFAULT_BACKBONE, FEW_SHOT_DATASET_OPTS, FEW_SHOT_KS, REPO,
                                   SOURCE_DATASET, config_backbone, config_file_values, dataset_config, display,
                                   method_config, path_token)
from experiments.records import has_record
from experiments.settings import Settings

SWEEP_OPT = "--sweep-opt"   # train.py's flag for a setting the sweep applies itself


@dataclass
class Run:
    """One train.py invocation and where it leaves its run record."""
    out_dir: Path
    args: list[str]                   # train.py's arguments
    kind: str                         # train_base | test_new | train | eval | zero-shot
    depends: Path | None = None       # the run whose prompts it loads

    @property
    def done(self) -> bool:
        return has_record(self.out_dir)

    def argv(self, python: str) -> list[str]:
        return [python, display(REPO / "train.py"), *self.args]

    def command(self, python: str = "python") -> str:
        return shlex.join(self.argv(python))

    @property
    def sweep_opts(self) -> list[str]:
        """The ``KEY VALUE`` settings the sweep applies itself (its ``--sweep-opt`` flags)."""
        out = []
        for i, word in enumerate(self.args[:-2]):
            if word == SWEEP_OPT:
                out += self.args[i + 1:i + 3]
        return out


@dataclass
class Unit:
    """A training run (or a zero-shot source run) and the evaluations of its prompts, run in order: ``runs[0]``
    trains, the others load its prompts (``depends``). The fields after ``runs`` say what the unit is."""
    label: str
    runs: list[Run]
    protocol: str = ""                # base2novel | transfer | few_shot
    trainer: str = ""
    dataset: str = ""                 # the training run's dataset (config name)
    seed: int | None = None
    shots: int | None = None
    calib: str | None = None          # the loss: None (the method's own), "tcpt" (--calib) or a baseline's name
    config: Path | None = None
    backbone: str | None = None

    @property
    def training(self) -> Run:
        return self.runs[0]

    @property
    def evaluations(self) -> list[Run]:
        return self.runs[1:]

    def key_without_loss(self) -> tuple:
        """What the unit is, except its loss: units with equal keys differ only in ``calib``."""
        return (self.protocol, self.trainer, self.dataset, self.seed, self.shots, str(self.config), self.backbone)


def calib_suffix(calib: str | None) -> str:
    """'' (no calibration), ``_calib`` (the paper's method) or ``_calib-<baseline>``."""
    if calib is None:
        return ""
    return "_calib" if calib == "tcpt" else f"_calib-{calib}"


def calib_label(calib: str | None) -> str:
    return "plain" if calib is None else ("calib" if calib == "tcpt" else f"calib-{calib}")


class Planner:
    """Builds the runs of a protocol for one method from the settings (shared by every sweep)."""

    def __init__(self, method_name: str, settings: Settings):
        self.user, self.method = resolve_method(method_name)
        self.s = settings

    @property
    def variants(self) -> list[str | None]:
        return [None] if self.method.zero_shot else self.s.calib

    @property
    def seeds(self) -> list[int]:
        # zero-shot CLIP is deterministic: one run (the first seed) per split
        return self.s.seeds[:1] if self.method.zero_shot else self.s.seeds

    def shots(self, ks: Sequence[int]) -> list[int]:
        # zero-shot CLIP sees no training image: NUM_SHOTS 0 (no few-shot draw), one run whatever SHOTS says
        return [0] if self.method.zero_shot else list(ks)

    def config(self, protocol: str = "base2novel") -> Path:
        name = self.s.cfg or self.method.protocol_config(protocol)
        if name:  # configs/trainers/<Trainer>/<name>.yaml, or a file next to a drop-in trainer (trainers/plugins.py)
            from trainers.plugins import trainer_config

            return trainer_config(self.method.trainer, name, error=SweepError)
        return method_config(self.method, self.s.cfg, protocol)

    def backbone(self, dataset: str) -> str | None:
        return self.s.backbone or DEFAULT_BACKBONE.get(dataset)

    # ------------------------------------------------------------------------------------ options and names
    def sweep_settings(self, dataset: str, backbone: str | None, extra: Sequence[str] = ()) -> list[str]:
        """The ``KEY VALUE`` settings the sweep applies itself to a run (the user's options override them)."""
        from experiments.run_policy import split_thread_opts

        return split_thread_opts(self.s.threads, backbone)[0] + DATASET_OPTS.get(dataset, []) + list(extra)

    def user_options(self, backbone: str | None) -> list[str]:
        """The user's ``KEY VALUE`` options of a run: a ``THREADS`` other than the policy's, then ``OPTS``."""
        from experiments.run_policy import split_thread_opts

        return split_thread_opts(self.s.threads, backbone)[1] + self.s.opts

    def options_suffix(self, backbone: str | None) -> str:
        """``_<options id>`` of the user's options ('' without any: the default paths keep the CoOp layout); the
        id the record stores as ``run.identity.options_id``."""
        from runs.identity import options_id

        found = options_id(self.user_options(backbone))
        return f"_{found}" if found else ""

    def cfg_name(self, config: Path, calib: str | None, backbone: str | None, dataset: str | None = None) -> str:
        """``<cfg>[_<backbone>][_calib|_calib-<name>][_<id8>]``: the backbone part only when it is not the
        config's; the id of the user's result-changing options only when there are any."""
        name = config.stem
        if backbone and backbone != config_backbone(config):
            name += f"_{path_token(backbone)}"
        return name + calib_suffix(calib) + self.options_suffix(backbone)

    def args(self, dataset: str, config: Path, seed: int, calib: str | None, out: Path, shots: int,
             subsample: str, model_dir: Path | None = None, extra: Sequence[str] = ()) -> list[str]:
        a = ["--root", self.s.data, "--seed", str(seed), "--trainer", self.method.trainer]
        if calib is not None:
            a += ["--calib"] if calib == "tcpt" else ["--calib", calib]
        backbone = self.backbone(dataset)
        if backbone:
            a += ["--backbone", backbone]
        a += ["--dataset-config-file", display(dataset_config(dataset)), "--config-file", display(config),
              "--output-dir", str(out)]
        if self.method.zero_shot:
            a += ["--eval-only"]
        elif model_dir is not None:
            a += ["--eval-only", "--model-dir", str(model_dir)]  # no --load-epoch: the last saved checkpoint
        settings = self.sweep_settings(dataset, backbone, extra)
        for key, value in zip(settings[0::2], settings[1::2]):
            a += [SWEEP_OPT, key, value]
        return (a + self.user_options(backbone)
                + ["DATASET.NUM_SHOTS", str(shots), "DATASET.SUBSAMPLE_CLASSES", subsample])

    def label(self, what: str, seed: int, calib: str | None) -> str:
        return f"{self.user} {what} " + ("zero-shot" if self.method.zero_shot else f"seed {seed} {calib_label(calib)}")

    def unit(self, label: str, runs: list[Run], protocol: str, dataset: str, seed: int, shots: int,
             calib: str | None, config: Path) -> Unit:
        return Unit(label, runs, protocol=protocol, trainer=self.method.trainer, dataset=dataset, seed=seed,
                    shots=shots, calib=calib, config=config, backbone=self.backbone(dataset))

    # ---------------------------------------------------------------------------------------- protocols
    def base2novel(self, datasets: Sequence[str]) -> list[Unit]:
        """Train on the base classes, evaluate the same prompts on the new classes."""
        shots = self.shots([self.s.single_shots()])[0]
        config = self.config()
        units = []
        for dataset in datasets:
            for seed in self.seeds:
                for calib in self.variants:
                    rel = (Path(dataset) / f"shots_{shots}" / self.method.trainer /
                           self.cfg_name(config, calib, self.backbone(dataset), dataset) / f"seed{seed}")
                    base = self.s.output / "base2new" / "train_base" / rel
                    new = self.s.output / "base2new" / "test_new" / rel
                    zs = self.method.zero_shot
                    runs = [Run(base, self.args(dataset, config, seed, calib, base, shots, "base"),
                                "zero-shot base" if zs else "train_base"),
                            Run(new, self.args(dataset, config, seed, calib, new, shots, "new", None if zs else base),
                                "zero-shot new" if zs else "test_new", None if zs else base)]
                    units.append(self.unit(self.label(dataset, seed, calib), runs, "base2novel", dataset, seed,
                                           shots, calib, config))
        return units

    def transfer(self, targets: Sequence[str]) -> list[Unit]:
        """Cross-dataset / domain generalization: prompts trained on all ImageNet classes, evaluated on the
        targets; the ImageNet run is shared by both protocols."""
        shots = self.shots([self.s.single_shots()])[0]
        config = self.config("cross_dataset")
        units = []
        for seed in self.seeds:
            for calib in self.variants:
                folder = f"{self.cfg_name(config, calib, self.backbone(SOURCE_DATASET), SOURCE_DATASET)}_{shots}shots"
                src = self.s.output / SOURCE_DATASET / self.method.trainer / folder / f"seed{seed}"
                runs = [Run(src, self.args(SOURCE_DATASET, config, seed, calib, src, shots, "all"),
                            "zero-shot" if self.method.zero_shot else "train")]
                for target in targets:
                    out = self.s.output / "evaluation" / self.method.trainer / folder / target / f"seed{seed}"
                    dep = None if self.method.zero_shot else src
                    runs.append(Run(out, self.args(target, config, seed, calib, out, shots, "all", dep),
                                    f"eval {target}", dep))
                units.append(self.unit(self.label(f"{SOURCE_DATASET} -> {len(targets)} datasets", seed, calib),
                                       runs, "transfer", SOURCE_DATASET, seed, shots, calib, config))
        return units

    def few_shot(self, dataset: str) -> list[Unit]:
        """All-class few-shot learning for K in SHOTS (default 1 2 4 8 16)."""
        config = self.config("few_shot")
        extra = [] if self.s.cfg else FEW_SHOT_DATASET_OPTS.get(self.method.trainer, {}).get(dataset, [])
        units = []
        for shots in self.shots(self.s.shots or FEW_SHOT_KS):
            for seed in self.seeds:
                for calib in self.variants:
                    folder = f"{self.cfg_name(config, calib, self.backbone(dataset), dataset)}_{shots}shots"
                    out = self.s.output / dataset / self.method.trainer / folder / f"seed{seed}"
                    runs = [Run(out, self.args(dataset, config, seed, calib, out, shots, "all", extra=extra),
                                "zero-shot" if self.method.zero_shot else "train")]
                    units.append(self.unit(self.label(f"{dataset} {shots}-shot", seed, calib), runs, "few_shot",
                                           dataset, seed, shots, calib, config))
        return units


def applied_settings_notes(units: Sequence[Unit], user_opts: Sequence[str]) -> list[str]:
    """One console line per (dataset, config) whose runs get settings of the sweep's own beyond the thread policy
    (the toy protocol, PromptSRC's few-shot GPA), naming the config file's value each replaces; keys the user's
    OPTS set are left out (the user's value wins)."""
    notes, seen = [], set()
    mine = set(user_opts[0::2])
    for unit in units:
        run = unit.training
        pairs = [(k, v) for k, v in zip(run.sweep_opts[0::2], run.sweep_opts[1::2])
                 if k not in mine and k != "TRAIN.NUM_THREADS"]
        key = (unit.dataset, str(unit.config), tuple(pairs))
        if not pairs or key in seen or unit.config is None:
            continue
        seen.add(key)
        files = {**config_file_values(dataset_config(unit.dataset)), **config_file_values(unit.config)}
        shown = []
        for k, v in pairs:
            was = files.get(k)
            shown.append(f"{k} {v}" + (f" (replacing {unit.config.name}'s {was})" if was is not None
                                       and str(was) != v else ""))
        notes.append(f"note: the sweep sets {', '.join(shown)} for {unit.dataset} (its own settings, recorded as "
                     "sweep_options, not as options; OPTS override them)")
    return notes
