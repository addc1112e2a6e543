"""Prompt-tuning methods. Every module in this package is imported, so a new method file registers itself; then the
drop-in files of trainers/contrib/ and $CALIB_PROMPT_TRAINERS (trainers/plugins.py). A method file that fails to
import is reported with its path and leaves the other methods usable."""
import pkgutil

from . import plugins
from .base import PromptModel, PromptOutput, PromptTrainer
from .templates import zeroshot_classifier


def _import_all() -> None:
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            plugins.import_module(f"{__name__}.{info.name}", f"trainers/{info.name}.py")


_import_all()
plugins.load_plugins()

__all__ = ["PromptModel", "PromptOutput", "PromptTrainer", "zeroshot_classifier"]
