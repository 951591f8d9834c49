"""A real single-node SLURM cluster on localhost, for tests that submit job arrays.

It follows ``shared/recipes/slurm_single_node.md`` (Debian's ``slurm-wlm`` and
``munge``, started by hand as root, without systemd) but keeps everything
private to one test session so it never touches a SLURM the machine may run:
``slurm.conf`` lives in a scratch directory and reaches the client commands
through ``SLURM_CONF``; slurmctld and slurmd listen on free ports; munged has
its own socket, pid, seed and log files. Daemons are stopped by the pids this
object started, never by name.
"""
import getpass
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from contextlib import closing
from pathlib import Path

REQUIRED_PROGRAMS = ("munged", "munge", "unmunge", "setpriv", "slurmctld", "slurmd",
                     "sbatch", "sinfo")
MUNGE_KEY = Path("/etc/munge/munge.key")
MUNGE_USER = "munge"
# Leave the node's memory a margin below the machine's: slurmd refuses a node whose
# configured RealMemory exceeds what it sees, and the OS needs some for itself.
MEMORY_MARGIN_MIB = 512
STOP_GRACE_SECONDS = 10


class SlurmUnavailable(Exception):
    """This machine cannot run the local cluster (the reason says why)."""


def unavailable_reason() -> str | None:
    """Why a local SLURM cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return "the local SLURM cluster needs root (slurmd runs jobs as their user)"
    missing = [program for program in REQUIRED_PROGRAMS if shutil.which(program) is None]
    if missing:
        return (f"SLURM/munge programs missing ({', '.join(missing)}): "
                "run scripts/install_slurm.sh")
    if not MUNGE_KEY.exists():
        return f"{MUNGE_KEY} is missing: reinstall the munge package"
    return None


def _free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _real_memory_mib() -> int:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024 - MEMORY_MARGIN_MIB
    raise SlurmUnavailable("cannot read MemTotal from /proc/meminfo")


class LocalSlurm:
    """munged + slurmctld + slurmd on 127.0.0.1, configured in ``workdir``.

    Parameters
    ----------
    workdir : Path
        Scratch directory for slurm.conf, state, spool, pids and logs.
    """

    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        self.conf_path = self.workdir / "slurm.conf"
        self.node = socket.gethostname().split(".")[0]
        self._processes: dict[str, subprocess.Popen] = {}
        self._munge_dir: Path | None = None

    @property
    def environment(self) -> dict:
        """Variables that point SLURM's client commands (sbatch, squeue) at this cluster."""
        return {"SLURM_CONF": str(self.conf_path)}

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of every daemon log, for a failure message."""
        parts = []
        for log in sorted((self.workdir / "log").glob("*.log")):
            parts.append(f"--- {log.name}\n" + "\n".join(log.read_text().splitlines()[-lines:]))
        return "\n".join(parts)

    def start(self, timeout: float = 60.0) -> None:
        """Start munged, slurmctld and slurmd and wait until the node is idle.

        Raises
        ------
        SlurmUnavailable
            If a daemon exits or the node is not idle within ``timeout`` seconds;
            the message holds the tail of the daemon logs.
        """
        for name in ("state", "spool", "run", "log"):
            (self.workdir / name).mkdir(parents=True, exist_ok=True)
        # munged runs as the munge user, which cannot enter pytest's 0700 temp tree.
        self._munge_dir = Path(tempfile.mkdtemp(prefix="slapp-munge-"))
        shutil.chown(self._munge_dir, MUNGE_USER, MUNGE_USER)
        self._munge_dir.chmod(0o755)
        socket_path = self._munge_dir / "munge.socket"
        self._write_conf(socket_path)
        deadline = time.monotonic() + timeout
        self._launch("munged", [
            f"--reuid={MUNGE_USER}", f"--regid={MUNGE_USER}", "--init-groups",
            "munged", "--foreground", f"--socket={socket_path}",
            f"--pid-file={self._munge_dir}/munged.pid",
            f"--seed-file={self._munge_dir}/munged.seed",
            f"--log-file={self._munge_dir}/munged.log"])
        self._wait_until(lambda: subprocess.run(
            f"munge -n -S {socket_path} | unmunge -S {socket_path}", shell=True,
            capture_output=True).returncode == 0, deadline, "munged to answer")
        self._launch("slurmctld", ["slurmctld", "-D", "-f", str(self.conf_path)])
        self._launch("slurmd", ["slurmd", "-D", "-f", str(self.conf_path)])
        self._wait_until(lambda: self._node_state() == "idle", deadline,
                         f"node {self.node} to become idle")

    def stop(self) -> None:
        """Stop the daemons this object started (slurmd first), by pid."""
        for process in reversed(self._processes.values()):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(STOP_GRACE_SECONDS)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self._processes.clear()
        if self._munge_dir is not None:
            shutil.rmtree(self._munge_dir, ignore_errors=True)
            self._munge_dir = None

    def _write_conf(self, munge_socket: Path) -> None:
        work = self.workdir
        cpus = len(os.sched_getaffinity(0))
        self.conf_path.write_text(f"""\
ClusterName=slapptest
SlurmctldHost={self.node}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser={getpass.getuser()}
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={munge_socket}
CredType=cred/munge
StateSaveLocation={work}/state
SlurmdSpoolDir={work}/spool
SlurmctldPidFile={work}/run/slurmctld.pid
SlurmdPidFile={work}/run/slurmd.pid
SlurmctldLogFile={work}/log/slurmctld.log
SlurmdLogFile={work}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={work}/log/jobcomp.txt
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={_real_memory_mib()} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")

    def _launch(self, name: str, setpriv_arguments: list[str]) -> None:
        """Start a daemon in the foreground through setpriv, which also makes it
        exit when the test process dies without reaching stop()."""
        self._processes[name] = subprocess.Popen(
            ["setpriv", "--pdeathsig", "TERM", *setpriv_arguments],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def _node_state(self) -> str:
        result = subprocess.run(["sinfo", "-h", "-N", "-o", "%t"], capture_output=True,
                                text=True, env={**os.environ, **self.environment})
        return result.stdout.strip()

    def _wait_until(self, ready, deadline: float, what: str) -> None:
        while not ready():
            exited = [name for name, process in self._processes.items()
                      if process.poll() is not None]
            if exited or time.monotonic() > deadline:
                reason = f"{', '.join(exited)} exited" if exited else "timed out"
                raise SlurmUnavailable(f"waiting for {what}: {reason}\n{self.log_tail()}")
            time.sleep(0.1)
