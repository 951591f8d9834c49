"""A segment task's scratch directory: made, checked for room, named, and cleaned up.

Suite2P writes its working files (on the binary path a copy of the movie, about
2 bytes per pixel per frame) under ``--tmp_dir``. Each task works in a
directory of its own named ``slapp_<job id>_<task id>_<host>_<pid>`` (``local``
and the manifest index outside a batch system), removed when the task ends.
A task killed with SIGKILL cannot remove it, so every task first removes the
directories on its ``tmp_dir`` that belong to the same user and to tasks that
no longer run: for SLURM and PBS tasks, the scheduler no longer lists the
(job, task); for local tasks, the process on this host is gone.
"""
import logging
import os
import re
import shutil
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from slapp.errors import SlappError
from slapp.segmentation.scheduler import SchedulerTask, running_tasks

logger = logging.getLogger(__name__)

PREFIX = "slapp_"
LOCAL_JOB = "local"
# slapp_<job>_<task>_<host>_<pid>; a host name has no "_" (RFC 952), a job id may not.
_NAME = re.compile(r"^slapp_(?P<job>.+)_(?P<task>[^_]*)_(?P<host>[^_]+)_(?P<pid>\d+)$")
# Suite2P's files besides the binary movie (ops, stat, traces of a few thousand ROIs):
# a margin on top of the binary copy.


class ScratchException(SlappError):
    """The scratch directory cannot be made or has no room for the run."""


def prepared_tmp_dir(tmp_dir: str | Path | None) -> Path:
    """Make ``tmp_dir`` (with its parents) when missing and check that this user may write there.

    Parameters
    ----------
    tmp_dir : str or Path or None
        ``--tmp_dir``; None means the system's temporary directory (``$TMPDIR``).

    Returns
    -------
    Path
        The absolute directory.

    Raises
    ------
    ScratchException
        If it exists as something else, cannot be created, or is not writable.
    """
    path = Path(tmp_dir if tmp_dir is not None else tempfile.gettempdir()).resolve()
    if path.exists() and not path.is_dir():
        raise ScratchException(f"tmp_dir {path} is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ScratchException(f"tmp_dir {path} cannot be created: "
                               f"{error.strerror or error}") from error
    if not os.access(path, os.W_OK | os.X_OK):
        raise ScratchException(f"tmp_dir {path} is not writable")
    return path


def check_free_space(tmp_dir: Path, needed_bytes: int) -> int:
    """Refuse to start when ``tmp_dir`` has less free space than the run will write.

    Parameters
    ----------
    tmp_dir : Path
        The scratch directory.
    needed_bytes : int
        What the run will write there.

    Returns
    -------
    int
        The free bytes.

    Raises
    ------
    ScratchException
        ``tmp_dir ...: the run needs N bytes, M free``.
    """
    free = shutil.disk_usage(tmp_dir).free
    if free < needed_bytes:
        raise ScratchException(f"tmp_dir {tmp_dir} is too small: the run needs "
                               f"{needed_bytes} bytes, {free} free")
    return free


def directory_name(task: SchedulerTask, manifest_index: int, hostname: str | None = None,
                   pid: int | None = None) -> str:
    """``slapp_<job>_<task>_<host>_<pid>`` for this process.

    Outside a batch system the job is ``local`` and the task the manifest index.
    """
    host = (hostname or socket.gethostname()).split(".")[0].replace("_", "-")
    job = task.job_id or LOCAL_JOB
    task_id = task.task_id if task.job_id else str(manifest_index)
    return f"{PREFIX}{job}_{task_id or ''}_{host}_{pid or os.getpid()}"


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it runs
        return True
    return True


def stale_directories(tmp_dir: Path, task: SchedulerTask,
                      hostname: str | None = None) -> list[Path]:
    """This user's task directories on ``tmp_dir`` whose task no longer runs.

    A directory of a local task is stale when its host is this one and its
    process is gone; one of a batch task when this process runs under the same
    kind of scheduler and that scheduler no longer lists the (job, task). When
    the scheduler cannot be asked, nothing is called stale.

    Parameters
    ----------
    tmp_dir : Path
        The scratch directory to look in.
    task : SchedulerTask
        This process's own task (which scheduler to ask).
    hostname : str, optional
        This host's name; ``socket.gethostname()`` by default.

    Returns
    -------
    list of Path
    """
    host = (hostname or socket.gethostname()).split(".")[0].replace("_", "-")
    uid = os.getuid()
    candidates = []
    for path in tmp_dir.glob(PREFIX + "*"):
        match = _NAME.match(path.name)
        try:
            owned = path.is_dir() and not path.is_symlink() and path.stat().st_uid == uid
        except OSError:
            continue
        if match and owned:
            candidates.append((path, match))
    stale = []
    running = None
    for path, match in candidates:
        if match["job"] == LOCAL_JOB:
            if match["host"] == host and not _pid_running(int(match["pid"])):
                stale.append(path)
            continue
        if task.scheduler is None or not match["job"].isdigit():
            continue
        if running is None:
            running = running_tasks(task.scheduler)
            if running is None:
                logger.warning("cannot ask %s which jobs run; stale scratch directories "
                               "are kept", task.scheduler)
                return stale
        if (match["job"], match["task"]) not in running:
            stale.append(path)
    return stale


def remove_stale_directories(tmp_dir: Path, task: SchedulerTask) -> list[Path]:
    """Delete what :func:`stale_directories` finds, logging each; return them."""
    removed = []
    for path in stale_directories(tmp_dir, task):
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            logger.info("removed stale scratch directory %s", path)
            removed.append(path)
    return removed


def directory_bytes(path: Path) -> int:
    """Bytes of the regular files under ``path`` (what the run wrote to scratch)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


@contextmanager
def task_directory(tmp_dir: Path, task: SchedulerTask, manifest_index: int) -> Iterator[Path]:
    """Make this task's scratch directory, yield it, and delete it on leaving.

    A directory of the same name can only be left by a dead process that had
    this process's id, so it is replaced.

    Parameters
    ----------
    tmp_dir : Path
        The prepared ``--tmp_dir``.
    task : SchedulerTask
        This process's scheduler ids (part of the name).
    manifest_index : int
        The task id outside a batch system.

    Yields
    ------
    Path
    """
    path = tmp_dir / directory_name(task, manifest_index)
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(mode=0o700)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
