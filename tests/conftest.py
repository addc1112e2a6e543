"""Session-wide test settings: no test reads or writes state outside its temporary folders.

The user's home, caches and settings are replaced before anything is imported (HOME, XDG_CACHE_HOME,
CALIB_PROMPT_CACHE, TORCH_HOME, HF_HOME all point into one temporary folder, removed at the end), the sweep
settings a user may have exported (OUTPUT, DATA, OPTS, ...) are dropped, and every test starts in an empty working
directory of its own, so a default such as ``output`` or ``./data`` never reaches the checkout's ``output/`` or
``data/``. ``.ci/run`` proves it: it runs the suite in a checkout whose ``output/`` and caches hold records.
"""
import os
import shutil
import sys
import tempfile

_SANDBOX = tempfile.mkdtemp(prefix="calib-prompt-tests-")
_CACHE = os.path.join(_SANDBOX, "cache")
os.environ.update({
    "HOME": os.path.join(_SANDBOX, "home"),                 # ~/.cache/clip, ~/.cache/calib-prompt, ~/.config
    "XDG_CACHE_HOME": _CACHE,                               # datasets.common.cache_root, open_clip, huggingface
    "CALIB_PROMPT_CACHE": os.path.join(_CACHE, "calib-prompt-features"),   # trainers/feature_cache.py
    "TORCH_HOME": os.path.join(_CACHE, "torch"),
    "HF_HOME": os.path.join(_CACHE, "huggingface"),
    "MPLCONFIGDIR": os.path.join(_SANDBOX, "matplotlib"),
    "MPLBACKEND": "Agg",
})
os.makedirs(os.environ["HOME"])
# Places outside the test folders the code would read, and the sweeps' settings (tests pass their own).
for _var in ("CLIP_WEIGHTS", "CLIP_CACHE_DIR", "CALIB_PROMPT_TRAINERS", "DATA", "OUTPUT", "SEEDS", "SHOTS", "CALIB",
             "CFG", "OPTS", "BACKBONE", "THREADS", "LOCKSTEP", "DRY_RUN", "ON_MISMATCH", "STOP_ON_ERROR",
             "PYTHON"):
    os.environ.pop(_var, None)

import pytest  # noqa: E402
import torch  # noqa: E402


def pytest_unconfigure(config):
    shutil.rmtree(_SANDBOX, ignore_errors=True)


@pytest.fixture
def feature_cache_dir():
    return os.environ["CALIB_PROMPT_CACHE"]


@pytest.fixture(autouse=True)
def own_working_directory(tmp_path_factory, monkeypatch):
    """Each test starts in an empty folder of its own: a cwd-relative default (``output``, ``./data``) lands
    there, never in the checkout. Tests that show paths relative to the checkout chdir there and pass their own
    OUTPUT and DATA."""
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


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
