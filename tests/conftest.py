"""Session-wide test settings: caches go to a temporary folder, never to the user's home."""
import os
import tempfile

import pytest

_CACHE = tempfile.mkdtemp(prefix="calib-prompt-test-cache-")
os.environ.setdefault("CALIB_PROMPT_CACHE", _CACHE)
os.environ.setdefault("XDG_CACHE_HOME", _CACHE)
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def feature_cache_dir():
    return os.environ["CALIB_PROMPT_CACHE"]
