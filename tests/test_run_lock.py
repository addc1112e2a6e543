"""Issue 14, item 2, with real processes: one writer per run folder (train.py's lock), and sweeps/launchers whose
children end with them, whether they get SIGTERM or SIGKILL."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import train
from dassl.utils import run_lock
from tests.helpers import REPO, coop_argv

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="flock and PR_SET_PDEATHSIG: Linux")


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 60) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        assert proc.poll() is None, f"ended early: {proc.communicate()}"
        time.sleep(0.05)
    raise AssertionError(f"{path} never appeared")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is dead
        return f.read().split(")")[-1].split()[0] != "Z"


def _gone(pid: int, timeout: float = 20) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_second_writer_is_refused_naming_the_holder(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    ready = tmp_path / "ready"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time; sys.path.insert(0, {str(REPO)!r})
        from dassl.utils import run_lock
        lock = run_lock.acquire({str(out)!r}); open({str(ready)!r}, "w").write("1"); time.sleep(120)""")])
    try:
        _wait_for(ready, holder)
        saved = sys.stdout
        try:
            code = train.cli(coop_argv(tmp_path / "data", out))
        finally:
            sys.stdout = saved
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 1
        assert err == [f"Error: {out} is in use by another run (pid {holder.pid}); wait for it to end, stop it "
                       f"(kill {holder.pid}), or pass another --output-dir"]
        assert not (out / "log.txt").exists() and not (out / "config.yaml").exists()
    finally:
        holder.kill()
        holder.wait()
    # the holder is dead: its lock file (with its pid) is taken over
    lock = run_lock.acquire(str(out))
    try:
        assert (out / ".lock").read_text().strip() == str(os.getpid())
        assert f"taking over the lock of {out} from pid {holder.pid} (no longer running)" in capsys.readouterr().out
    finally:
        lock.release()


CHILD = ("import os, sys, time; d = sys.argv[sys.argv.index('--output-dir') + 1]; os.makedirs(d, exist_ok=True); "
         "open(os.path.join(d, 'pid'), 'w').write(str(os.getpid())); time.sleep(30); "
         "open(os.path.join(d, 'results.json'), 'w').write('{}')")

SWEEP_DRIVER = textwrap.dedent("""
    import sys; sys.path.insert(0, {repo!r})
    from pathlib import Path
    from experiments import sweep
    out = Path({out!r})
    run = sweep.Run(out, ["-c", {child!r}, "--output-dir", str(out)], "train_base")
    run.argv = lambda python: [sys.executable, *run.args]   # a stand-in for train.py that sleeps, then writes
    sys.exit(sweep.execute([sweep.Unit("unit", [run])], sweep.Settings()))
""")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killed_sweep_leaves_no_child(tmp_path, sig):
    out = tmp_path / "run"
    driver = subprocess.Popen([sys.executable, "-c", SWEEP_DRIVER.format(repo=str(REPO), out=str(out), child=CHILD)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    pid = int(_wait_for(out / "pid", driver))
    driver.send_signal(sig)
    driver.wait(timeout=30)
    assert _gone(pid), f"the sweep's child {pid} survived {sig.name}"
    if sig == signal.SIGTERM:
        assert driver.returncode == 143 and "its train.py was stopped" in driver.stdout.read()
    assert not (out / "results.json").exists()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killed_launcher_leaves_no_child(tmp_path, sig):
    out = tmp_path / "run"
    cmds = tmp_path / "cmds.txt"
    cmds.write_text(subprocess.list2cmdline([sys.executable, "-c", CHILD, "--output-dir", str(out)]) + "\n")
    launcher = subprocess.Popen([sys.executable, str(REPO / "tools" / "launch.py"), str(cmds), "--gpus", "cpu"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    pid = int(_wait_for(out / "pid", launcher))
    launcher.send_signal(sig)
    launcher.wait(timeout=30)
    assert _gone(pid), f"the launcher's child {pid} survived {sig.name}"
    assert not (out / "results.json").exists()
