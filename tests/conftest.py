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


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A real one-node SLURM cluster (tests/slurm_cluster.py) for the session. Skipped when the SLURM binaries
    are absent or the tests do not run as root, except under CI=true, where that is a failure: CI must not skip
    the real-scheduler tests silently (.ci/run installs slurm-wlm and munge)."""
    from tests.slurm_cluster import INSTALL_HINT, SlurmCluster, missing

    absent = missing()
    why = (f"SLURM binaries missing ({', '.join(absent)}); install them: {INSTALL_HINT}" if absent else
           None if os.geteuid() == 0 else "the test SLURM cluster's slurmd must run as root")
    if why:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{why} (CI=true: the real-SLURM tests may not be skipped)")
        pytest.skip(why)
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    cluster.start()
    yield cluster
    cluster.stop()
