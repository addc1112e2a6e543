"""Config defaults: ``get_cfg_default()`` returns a fresh clone of the default yacs tree."""
from yacs.config import CfgNode

from .defaults import _C as cfg_default


def get_cfg_default() -> CfgNode:
    return cfg_default.clone()


__all__ = ["CfgNode", "get_cfg_default"]
