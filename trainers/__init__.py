"""Prompt-tuning methods. Every module in this package is imported, so a new method file registers itself."""
import importlib
import pkgutil

from .base import PromptModel, PromptOutput, PromptTrainer

_SKIP = {"base", "prompts", "templates", "record"}


def _import_all() -> None:
    for info in pkgutil.iter_modules(__path__):
        if info.name not in _SKIP and not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


_import_all()

__all__ = ["PromptModel", "PromptOutput", "PromptTrainer"]
