"""Session-wide test settings: caches go to a temporary folder, never to the user's home."""
import os
import sys
import tempfile

import pytest
import torch

_CACHE = tempfile.mkdtemp(prefix="calib-prompt-test-cache-")
os.environ.setdefault("CALIB_PROMPT_CACHE", _CACHE)
os.environ.setdefault("XDG_CACHE_HOME", _CACHE)
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def feature_cache_dir():
    return os.environ["CALIB_PROMPT_CACHE"]


@pytest.fixture(autouse=True)
def keep_stdout():
    """train.py tees stdout into a run's log.txt; give the console back after every test."""
    saved = sys.stdout
    yield
    sys.stdout = saved


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models: threads only add contention on the shared CPUs."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
