"""Which batch-system job and array task this process belongs to, and which are still running.

SLURM and PBS name an array task by the job id of the whole array and the task's
index. Both are stored with each run and failure (to find the task's log), put
in the names of scratch directories, and asked for when deciding whether a
scratch directory left on a node belongs to a job that is gone.
"""
import getpass
import os
import re
import subprocess
from dataclasses import dataclass

# Seconds a scheduler query may take before the answer counts as unknown.
QUERY_TIMEOUT_SECONDS = 30


@dataclass(frozen=True)
class SchedulerTask:
    """The batch job and array task a process runs as; both None outside a scheduler."""

    scheduler: str | None
    job_id: str | None
    task_id: str | None


def _pbs_job_number(job_id: str) -> str:
    """``"1234[5].server"`` or ``"1234.server"`` -> ``"1234"``."""
    return re.split(r"[\[.]", job_id, maxsplit=1)[0]


def current_task(environ: dict | None = None) -> SchedulerTask:
    """Read the job and array task ids the scheduler put in the environment.

    SLURM is checked first: its Torque wrapper (``qsub`` of ``slurm-wlm-torque``)
    sets only SLURM variables. For PBS, Torque's ``PBS_ARRAYID`` and PBS Pro's
    ``PBS_ARRAY_INDEX`` are both read.

    Parameters
    ----------
    environ : dict, optional
        The environment; ``os.environ`` by default.

    Returns
    -------
    SchedulerTask
        ``scheduler`` is ``"slurm"``, ``"pbs"`` or None.
    """
    env = os.environ if environ is None else environ
    if env.get("SLURM_JOB_ID"):
        return SchedulerTask("slurm", env.get("SLURM_ARRAY_JOB_ID") or env["SLURM_JOB_ID"],
                             env.get("SLURM_ARRAY_TASK_ID") or None)
    if env.get("PBS_JOBID"):
        return SchedulerTask("pbs", _pbs_job_number(env["PBS_JOBID"]),
                             env.get("PBS_ARRAYID") or env.get("PBS_ARRAY_INDEX") or None)
    return SchedulerTask(None, None, None)


def _command_output(command: list[str]) -> str | None:
    try:
        result = subprocess.run(command, capture_output=True, text=True,
                                timeout=QUERY_TIMEOUT_SECONDS, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout


def running_tasks(scheduler: str) -> set[tuple[str, str]] | None:
    """The (job id, array task id) pairs of this user's jobs that are still queued or running.

    A job that is not an array has task id ``""``; ``(job, "")`` is also
    listed for every array job that is still known, so that a directory named
    by a job id alone is kept while any of its tasks runs.

    Parameters
    ----------
    scheduler : str
        ``"slurm"`` (asks ``squeue``) or ``"pbs"`` (asks ``qstat -t``).

    Returns
    -------
    set of tuple or None
        None when the scheduler cannot be asked: then nothing may be called stale.
    """
    user = getpass.getuser()
    if scheduler == "slurm":
        output = _command_output(["squeue", "--noheader", "--user", user,
                                  "--format", "%F %K"])
        if output is None:
            return None
        tasks = set()
        for line in output.splitlines():
            fields = line.split()
            if len(fields) == 2:
                job, task = fields
                tasks.add((job, ""))
                tasks.add((job, task if task.isdigit() else ""))
        return tasks
    if scheduler == "pbs":
        output = _command_output(["qstat", "-t", "-u", user])
        if output is None:
            return None
        tasks = set()
        for match in re.finditer(r"^(\d+)(?:\[(\d+)\])?\.", output, re.MULTILINE):
            tasks.add((match.group(1), ""))
            tasks.add((match.group(1), match.group(2) or ""))
        return tasks
    raise ValueError(f"unknown scheduler {scheduler!r}")
