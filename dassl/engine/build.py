from common.errors import UnknownNameError, UserError
from common.suggest import check_availability

from ..utils.registry import Registry

TRAINER_REGISTRY = Registry("TRAINER")
#: method files that failed to import (file -> exception), filled by the application's loader (trainers/plugins.py);
#: an unknown trainer name then names them, since one of them may define it
IMPORT_FAILURES: dict[str, str] = {}
#: names two method files register (name -> the message naming both and the fix), filled by the application's
#: loader: asking for such a name is that error, never a silent choice of one definition
CLASHES: dict[str, str] = {}


def trainer_class(name: str):
    """The registered trainer class ``name``; an unknown name is one error naming the method files that failed to
    import (one of them may define it), a name two files register is one error naming both."""
    if name in CLASHES:
        raise UserError(CLASHES[name])
    try:
        check_availability(name, TRAINER_REGISTRY.registered_names(), what="trainer (TRAINER.NAME / --trainer)")
    except UnknownNameError as exc:
        if not IMPORT_FAILURES:
            raise
        failed = "; ".join(f"{f} ({e})" for f, e in IMPORT_FAILURES.items())
        raise UnknownNameError(f"{exc} These trainer files failed to import, one may define it: {failed}") from None
    return TRAINER_REGISTRY.get(name)


def build_trainer(cfg):
    """Instantiate ``TRAINER_REGISTRY[cfg.TRAINER.NAME](cfg)`` (the trainer modules must be imported)."""
    cls = trainer_class(cfg.TRAINER.NAME)
    if cfg.VERBOSE:
        print(f"Loading trainer: {cfg.TRAINER.NAME}")
    return cls(cfg)
