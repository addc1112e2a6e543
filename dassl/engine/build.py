from ..utils.errors import check_availability
from ..utils.registry import Registry

TRAINER_REGISTRY = Registry("TRAINER")


def build_trainer(cfg):
    """Instantiate ``TRAINER_REGISTRY[cfg.TRAINER.NAME](cfg)`` (the trainer modules must be imported)."""
    name = cfg.TRAINER.NAME
    check_availability(name, TRAINER_REGISTRY.registered_names(), what="trainer (TRAINER.NAME / --trainer)")
    if cfg.VERBOSE:
        print(f"Loading trainer: {name}")
    return TRAINER_REGISTRY.get(name)(cfg)
