"""Flat namespace of Dassl's utils: tools, logger, meters, registry, torchtools.

Only Dassl's own API lives here (what trainer files import). Our errors, did-you-mean messages and atomic writers are
in ``common`` (``common.errors``, ``common.suggest``, ``common.atomic``); ``check_availability`` is exported here too
because Dassl's API has it.
"""
from common.suggest import check_availability

from .logger import Logger, setup_logger
from .meters import AverageMeter, MetricMeter
from .registry import Registry
from .tools import (
    check_isfile, collect_env_info, get_rng_state, listdir_nohidden, mkdir_if_missing, read_image, read_json,
    set_random_seed, set_rng_state, tolist_if_not, write_json,
)
from .torchtools import (
    count_num_param, load_checkpoint, load_pretrained_weights, resume_from_checkpoint, save_checkpoint, state_sha256,
)

__all__ = [
    "check_availability",
    "Logger", "setup_logger", "AverageMeter", "MetricMeter", "Registry",
    "check_isfile", "collect_env_info", "listdir_nohidden", "mkdir_if_missing", "read_image", "read_json",
    "set_random_seed", "get_rng_state", "set_rng_state", "tolist_if_not", "write_json",
    "count_num_param", "load_checkpoint", "load_pretrained_weights", "resume_from_checkpoint", "save_checkpoint",
    "state_sha256",
]
