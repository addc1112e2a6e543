"""The one method table of the sweeps: sweep name -> trainer and its config per protocol, read from the trainer
registry (a trainer class names its configs), so a new method sweeps with no edit here."""
from __future__ import annotations

import collections.abc
import sys
from dataclasses import dataclass
from typing import Mapping

from experiments.errors import SweepError, unknown


@dataclass(frozen=True)
class Method:
    trainer: str   # registered trainer name (configs/trainers/<trainer>/)
    config: str    # the base-to-novel config of the paper's runs
    #: the config of the ImageNet training run shared by cross_dataset and domain_generalization, and the config of
    #: all-class few_shot; None = the method's reference code publishes no recipe for that protocol, and the sweep
    #: stops with one error instead of guessing (CFG=<name> runs it with a config of the user's choosing). Where
    #: the reference trains that protocol with its base-to-novel config, the entry names that config explicitly.
    cross_dataset: str | None = None
    few_shot: str | None = None

    @property
    def zero_shot(self) -> bool:
        return self.trainer == ZERO_SHOT

    def protocol_config(self, protocol: str) -> str | None:
        """The config name of ``protocol`` (base2novel, cross_dataset, few_shot), None when there is none."""
        return {"base2novel": self.config, "cross_dataset": self.cross_dataset,
                "few_shot": self.few_shot}[protocol]


ZERO_SHOT = "ZeroshotCLIP"
#: the built-in methods' sweep names -> trainers, in the paper's table order (names only: each trainer class names
#: its config). Read without importing the trainers (the results tables); methods added later follow in
#: registration order.
PAPER_METHODS = {"coop": "CoOp", "cocoop": "CoCoOp", "kgcoop": "KgCoOp", "prograd": "ProGrad", "proda": "ProDA",
                 "maple": "MaPLe", "ivlp": "IVLP", "vpt": "VPT", "promptsrc": "PromptSRC", "zsclip": ZERO_SHOT}
PAPER_ORDER = tuple(PAPER_METHODS)


def registered_trainers() -> dict:
    """Trainer name -> class, after importing every method file (built-in and drop-in: $CALIB_PROMPT_TRAINERS is
    read again, so a variable set after the first import counts too)."""
    try:
        import trainers.plugins  # importing the package registers the methods
        from dassl.engine import TRAINER_REGISTRY
    except ModuleNotFoundError as e:  # run by an interpreter without the requirements (no venv active)
        raise SweepError(f"{e.name} is not installed for {sys.executable}: activate the project's environment "
                         "(README, Install: . .venv/bin/activate) or point PYTHON at its interpreter") from None

    trainers.plugins.load_plugins()
    return {n: TRAINER_REGISTRY.get(n) for n in TRAINER_REGISTRY.registered_names()}


class _RegistryMethods(collections.abc.Mapping):
    """``METHODS``: sweep name -> Method for every registered trainer whose class names its config
    (``sweep_config = "<config>"``, a file of configs/trainers/<Trainer>/, the base-to-novel one;
    ``sweep_cross_dataset_config`` / ``sweep_few_shot_config`` for the other protocols, unset = no published recipe;
    ``sweep_name``, default the lower-case trainer name). Built from the trainer registry on first use (importing
    ``trainers``, which also loads the drop-in trainer files of trainers/contrib/ and $CALIB_PROMPT_TRAINERS)."""

    def __init__(self):
        self._methods: dict[str, Method] | None = None
        self._names: tuple[str, ...] = ()

    def _load(self) -> dict[str, Method]:
        trainers = registered_trainers()
        if self._methods is None or tuple(trainers) != self._names:
            self._names = tuple(trainers)
            found = {}
            for name, cls in trainers.items():
                config = cls.__dict__.get("sweep_config")
                if config:
                    found[cls.__dict__.get("sweep_name") or name.lower()] = Method(
                        name, config, cross_dataset=cls.__dict__.get("sweep_cross_dataset_config"),
                        few_shot=cls.__dict__.get("sweep_few_shot_config"))
            rank = {n: i for i, n in enumerate(PAPER_ORDER)}
            self._methods = dict(sorted(found.items(), key=lambda kv: rank.get(kv[0], len(rank))))
        return self._methods

    def __getitem__(self, key: str) -> Method:
        return self._load()[key]

    def __iter__(self):
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())


METHODS: Mapping[str, Method] = _RegistryMethods()


def trainer_name(name: str) -> str:
    """The trainer name of a method or trainer name, without importing the trainers when it is a built-in one."""
    key = name.strip().lower()
    for user, trainer in PAPER_METHODS.items():
        if key in (user, trainer.lower()):
            return trainer
    return resolve_method(name)[1].trainer


def resolve_method(name: str) -> tuple[str, Method]:
    """(user name, Method) for a case-insensitive method name or trainer name (``coop``, ``CoOp``). A registered
    trainer that names no ``sweep_config`` resolves too, with config "" (the sweep then needs CFG)."""
    key = name.strip().lower()
    for user, method in METHODS.items():
        if key in (user, method.trainer.lower()):
            return user, method
    for trainer in registered_trainers():
        if key == trainer.lower():
            return trainer.lower(), Method(trainer, "")
    raise unknown("method", name, list(METHODS), "Pass one of them as METHOD (a trainer of your own: register it in "
                  "trainers/contrib/ or $CALIB_PROMPT_TRAINERS, with sweep_config = '<config name>').")
