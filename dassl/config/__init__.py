"""Config defaults: ``get_cfg_default()`` returns a fresh clone of the default yacs tree."""
from typing import Any, Dict

from yacs.config import CfgNode

from .defaults import _C as cfg_default


def get_cfg_default() -> CfgNode:
    return cfg_default.clone()


def flatten_cfg(cfg: CfgNode, prefix: str = "") -> Dict[str, Any]:
    """``{"OPTIM.LR": 0.002, ...}``: every leaf of a config tree under its full key (to store, diff, suggest)."""
    out: Dict[str, Any] = {}
    for key, value in cfg.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten_cfg(value, full + "."))
        else:
            out[full] = value
    return out


__all__ = ["CfgNode", "flatten_cfg", "get_cfg_default"]
