"""Flat namespace of Dassl's utils: tools, logger, meters, registry, torchtools, plus our
errors and atomic-write helpers."""
from .atomic import atomic_open, atomic_savez, atomic_torch_save, atomic_write_bytes, atomic_write_text
from .errors import MissingFileError, UnknownNameError, UserError, check_availability, closest_match
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
    "atomic_open", "atomic_savez", "atomic_torch_save", "atomic_write_bytes", "atomic_write_text",
    "MissingFileError", "UnknownNameError", "UserError", "check_availability", "closest_match",
    "Logger", "setup_logger", "AverageMeter", "MetricMeter", "Registry",
    "check_isfile", "collect_env_info", "listdir_nohidden", "mkdir_if_missing", "read_image", "read_json",
    "set_random_seed", "get_rng_state", "set_rng_state", "tolist_if_not", "write_json",
    "count_num_param", "load_checkpoint", "load_pretrained_weights", "resume_from_checkpoint", "save_checkpoint",
    "state_sha256",
]
