"""Name -> object registry used as a class/function decorator (Dassl's Registry API)."""
from __future__ import annotations

from typing import Any, Callable

from common.suggest import check_availability


class Registry:
    """``@REG.register()`` registers under ``obj.__name__``; ``REG.get(name)`` looks it up.

    Registering a name twice raises KeyError (unless ``force=True``); an unknown name raises
    UnknownNameError (a UserError and a KeyError) that lists known names and the closest match.
    """

    def __init__(self, name: str):
        self._name = name
        self._obj_map: dict[str, Any] = {}

    def _do_register(self, name: str, obj: Any, force: bool = False) -> None:
        if name in self._obj_map and not force:
            raise KeyError(f'An object named "{name}" was already registered in the "{self._name}" registry')
        self._obj_map[name] = obj

    def register(self, obj: Any = None, force: bool = False) -> Any:
        """Decorator when called without ``obj``; direct registration otherwise. Returns ``obj``."""
        if obj is None:
            def wrapper(fn_or_class: Callable) -> Callable:
                self._do_register(fn_or_class.__name__, fn_or_class, force=force)
                return fn_or_class

            return wrapper
        self._do_register(obj.__name__, obj, force=force)
        return obj

    def get(self, name: str) -> Any:
        check_availability(name, self._obj_map, what=f"{self._name.lower()} name")
        return self._obj_map[name]

    def registered_names(self) -> list[str]:
        return list(self._obj_map)

    def __contains__(self, name: object) -> bool:
        return name in self._obj_map

    def __len__(self) -> int:
        return len(self._obj_map)

    def __repr__(self) -> str:
        return f"Registry({self._name!r}, {self.registered_names()})"
