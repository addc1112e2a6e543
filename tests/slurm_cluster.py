"""A real one-node SLURM cluster for tests: munged, slurmctld and slurmd on this host, all state in one folder.

    with SlurmCluster(tmp_path) as cluster:   # starts the daemons, waits until the node is idle
        env = cluster.env                     # SLURM_CONF for sbatch/squeue/scancel (also set in os.environ)

The daemons run as the current user (root in CI: slurmd needs it to start jobs as their owner). Nothing outside
the folder is written: our own munge key and socket (``AuthInfo=socket=``), state, spool, logs and pid files; the
ports are free ports picked at start. ``ProctrackType=proctrack/linuxproc`` and ``TaskPlugin=task/none`` need no
cgroups; no accounting daemon (``sacct`` is disabled, so job states come from ``squeue`` while jobs are queued).

``missing()`` names the binaries that are absent (Debian: ``apt-get install -y slurm-wlm munge``).
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo", "srun")
INSTALL_HINT = "apt-get install -y slurm-wlm munge"


def _which(name: str) -> str | None:
    return shutil.which(name) or next((str(Path(d) / name) for d in ("/usr/sbin", "/sbin")
                                       if (Path(d) / name).is_file()), None)


def missing() -> list[str]:
    return [b for b in BINARIES if _which(b) is None]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SlurmError(RuntimeError):
    pass


class SlurmCluster:
    def __init__(self, root: Path, cpus: int | None = None, partition: str = "debug"):
        self.root = Path(root)
        self.cpus = cpus or max(2, os.cpu_count() or 2)
        self.partition = partition
        self.host = socket.gethostname().split(".")[0]
        self.conf = self.root / "slurm.conf"
        self.munge_socket = self.root / "munge" / "munge.socket"
        self._procs: list[tuple[str, Path]] = []   # (name, pid file)
        self._saved_env: str | None = None

    @property
    def env(self) -> dict[str, str]:
        return dict(os.environ, SLURM_CONF=str(self.conf))

    def log(self, name: str, lines: int = 30) -> str:
        path = self.root / f"{name}.log"
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return f"({path} missing)"

    def _write_conf(self) -> None:
        r = self.root
        for d in ("state", "spool", "munge"):
            (r / d).mkdir(parents=True, exist_ok=True)
        (r / "munge").chmod(0o700)
        key = r / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        mem_mb = 1024
        try:
            mem_mb = int(int(Path("/proc/meminfo").read_text().split()[1]) / 1024 * 0.8)
        except (OSError, ValueError, IndexError):
            pass
        self.conf.write_text("\n".join([
            "ClusterName=testcluster",
            f"SlurmctldHost={self.host}(127.0.0.1)",
            f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}",
            "SlurmUser=root", "SlurmdUser=root",
            "AuthType=auth/munge", "CredType=cred/munge", f"AuthInfo=socket={self.munge_socket}",
            f"StateSaveLocation={r / 'state'}", f"SlurmdSpoolDir={r / 'spool'}",
            f"SlurmctldPidFile={r / 'slurmctld.pid'}", f"SlurmdPidFile={r / 'slurmd.pid'}",
            f"SlurmctldLogFile={r / 'slurmctld.log'}", f"SlurmdLogFile={r / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core",
            "SchedulerType=sched/backfill", "MpiDefault=none", "SwitchType=switch/none",
            "JobAcctGatherType=jobacct_gather/none", "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none", "ReturnToService=2", "KillWait=5", "MinJobAge=300",
            "SlurmctldTimeout=30", "SlurmdTimeout=30", "InactiveLimit=0", "MaxArraySize=1001",
            f"NodeName={self.host} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={mem_mb} State=UNKNOWN",
            f"PartitionName={self.partition} Nodes={self.host} Default=YES MaxTime=INFINITE State=UP",
            "",
        ]))

    def _start(self, name: str, argv: list[str], pid_file: Path) -> None:
        res = subprocess.run(argv, capture_output=True, text=True, env=self.env, timeout=30)
        if res.returncode != 0:
            raise SlurmError(f"{name} did not start (exit code {res.returncode}): "
                             f"{(res.stderr or res.stdout).strip()}\n{self.log(name)}")
        self._procs.append((name, pid_file))

    def start(self, timeout: float = 60.0) -> "SlurmCluster":
        absent = missing()
        if absent:
            raise SlurmError(f"SLURM binaries missing: {', '.join(absent)} ({INSTALL_HINT})")
        self._write_conf()
        r = self.root
        self._start("munged", [_which("munged"), "--force", f"--socket={self.munge_socket}",
                               f"--key-file={r / 'munge' / 'munge.key'}", f"--pid-file={r / 'munged.pid'}",
                               f"--log-file={r / 'munged.log'}", f"--seed-file={r / 'munge' / 'munge.seed'}"],
                    r / "munged.pid")
        self._start("slurmctld", [_which("slurmctld"), "-f", str(self.conf), "-i"], r / "slurmctld.pid")
        self._start("slurmd", [_which("slurmd"), "-f", str(self.conf)], r / "slurmd.pid")
        self._saved_env = os.environ.get("SLURM_CONF")
        os.environ["SLURM_CONF"] = str(self.conf)
        t0 = time.time()
        state = ""
        while time.time() - t0 < timeout:
            res = subprocess.run([_which("sinfo"), "-h", "-N", "-o", "%T"], capture_output=True, text=True,
                                 env=self.env, timeout=30)
            state = (res.stdout or res.stderr).strip()
            if res.returncode == 0 and state.rstrip("*") == "idle":
                return self
            time.sleep(0.5)
        self.stop()
        raise SlurmError(f"the node did not become idle in {timeout:.0f} s (sinfo: {state!r})\nslurmctld:\n"
                         f"{self.log('slurmctld')}\nslurmd:\n{self.log('slurmd')}")

    def stop(self) -> None:
        if self._procs:
            subprocess.run([_which("scancel"), "--user", str(os.getuid())], env=self.env, capture_output=True,
                           timeout=30)
        for name, pid_file in reversed(self._procs):
            try:
                pid = int(pid_file.read_text().strip())
            except (OSError, ValueError):
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            for _ in range(100):   # wait up to 10 s, then kill
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self._procs.clear()
        if self._saved_env is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = self._saved_env

    def __enter__(self) -> "SlurmCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


if __name__ == "__main__":  # python tests/slurm_cluster.py DIR: start a cluster by hand (Ctrl-C stops it)
    import sys
    import tempfile

    folder = Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="slurm-"))
    with SlurmCluster(folder) as c:
        print(f"export SLURM_CONF={c.conf}", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
