"""Small file, seed and environment helpers (Dassl's dassl.utils.tools)."""
from __future__ import annotations

import errno
import functools
import json
import os
import os.path as osp
import random
import warnings
from typing import Any

from common.atomic import atomic_write_text

__all__ = [
    "mkdir_if_missing", "check_isfile", "read_json", "write_json", "listdir_nohidden", "read_image",
    "set_random_seed", "get_rng_state", "set_rng_state", "collect_env_info", "tolist_if_not",
]


def mkdir_if_missing(dirname: str) -> None:
    """os.makedirs that tolerates an existing folder (and a concurrent creator)."""
    if not osp.exists(dirname):
        try:
            os.makedirs(dirname)
        except OSError as e:
            if e.errno != errno.EEXIST:
                raise


def check_isfile(fpath: str) -> bool:
    """os.path.isfile that warns when the file is missing."""
    isfile = osp.isfile(fpath)
    if not isfile:
        warnings.warn(f'No file found at "{fpath}"')
    return isfile


def read_json(fpath: str) -> Any:
    with open(fpath, "r") as f:
        return json.load(f)


def write_json(obj: Any, fpath: str) -> None:
    """json.dump with indent 4 (Dassl's layout), written atomically; creates the parent folder."""
    atomic_write_text(fpath, json.dumps(obj, indent=4, separators=(",", ": ")))


def listdir_nohidden(path: str, sort: bool = False) -> list[str]:
    """Entries of ``path`` whose names do not start with "."."""
    items = [f for f in os.listdir(path) if not f.startswith(".")]
    if sort:
        items.sort()
    return items


def read_image(path: str):
    """Read an image with PIL and convert it to RGB (decoding fully, so corrupt files raise here)."""
    from PIL import Image

    with Image.open(path) as img:
        return img.convert("RGB")


def set_random_seed(seed: int) -> None:
    """Seed python ``random``, numpy, torch (CPU) and every CUDA device."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def get_rng_state(generators: dict | None = None) -> dict:
    """Every RNG a training run draws from (python, numpy, torch CPU/CUDA, plus named torch Generators such as a
    loader's shuffling generator), so a resumed run continues exactly where the saved one was. Plain data and
    tensors only (loadable with ``torch.load(weights_only=True)``)."""
    import numpy as np
    import torch

    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(), "numpy": (name, keys.tolist(), pos, has_gauss, gauss),
             "torch": torch.get_rng_state(),
             "generators": {k: g.get_state() for k, g in (generators or {}).items() if g is not None}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, generators: dict | None = None) -> None:
    """Restore what :func:`get_rng_state` saved (CUDA only when the device count matches)."""
    import numpy as np
    import torch

    random.setstate(state["python"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    for k, g in (generators or {}).items():
        if g is not None and k in state.get("generators", {}):
            g.set_state(state["generators"][k].cpu())


@functools.lru_cache(maxsize=1)
def collect_env_info() -> str:
    """torch's environment report plus the Pillow version (computed once per process: it shells out)."""
    import PIL

    try:
        from torch.utils.collect_env import get_pretty_env_info

        env_str = get_pretty_env_info()
    except Exception as e:  # the report shells out; never let it kill a run
        import torch

        env_str = f"PyTorch version: {torch.__version__} (collect_env failed: {e})"
    return env_str + f"\n        Pillow ({PIL.__version__})"


def tolist_if_not(x: Any) -> list:
    """Wrap a non-list in a list."""
    if not isinstance(x, list):
        x = [x]
    return x
