"""Why a segment task failed, recorded as one ``segmentation_failures`` row.

A task that fails with an exception records its own row (see
:mod:`slapp.segmentation.segment`). A task killed by a signal cannot: the job
script (or ``run_local``) records it after the process ended, with

::

    python -m slapp.segmentation.failures --manifest_json M --manifest_index I \\
        --exit_status 137 --duration_seconds 812 -- <the task's segment options>

which does nothing for exit status 0 or 1 (success, or a failure the task
recorded itself). Failure classes:

``bad_input``
    the manifest entry, movie, settings or directories are wrong (also a movie
    changed since its stored run); resubmitting changes nothing until fixed.
``out_of_memory``
    a ``MemoryError``, or SIGKILL while the task's cgroup counts an OOM kill.
``killed``
    SIGTERM / SIGINT / SIGKILL (``scancel``, ``qdel``, a time limit, Ctrl-C).
``suite2p_error``
    Suite2P raised on the movie.
``database_unreachable``
    the labeling database could not be reached (after the write's retries).
``other``
    anything else: a bug or a crash (e.g. SIGSEGV); see the traceback / log.

``killed``, ``out_of_memory`` and ``database_unreachable`` are *transient*:
the same task may well succeed when resubmitted. An exception's class comes
from the exception itself (its ``failure_class``, see the tree in
:mod:`slapp.errors`), not from where it was raised.
"""
import json
import os
import logging
import signal
import socket
import sys
import traceback
from pathlib import Path
from typing import Sequence

import marshmallow as mm

from slapp.contracts.manifest import load_manifest
# the failure classes are slapp.errors'; they stay importable from here as well
from slapp.errors import (BAD_INPUT, DATABASE_UNREACHABLE, FAILURE_CLASSES, KILLED,  # noqa: F401
                          OTHER, OUT_OF_MEMORY, SUITE2P_ERROR, TRANSIENT_CLASSES,
                          SlappError)
from slapp.segmentation.scheduler import current_task
from slapp.segmentation.settings import Suite2pOptions, parameters_digest
from slapp.segmentation.store import record_failure
from slapp.segmentation.suite2p_runner import suite2p_version
from slapp.segmentation.task_options import SegmentSchema
from slapp.utils.cli import run_main
from slapp.utils.code_version import code_version
from slapp.utils.query_utils import database_failure_class, get_db_credentials, label_defaults
from slapp.utils.schema import ArgSchema, ArgSchemaParser, StrictInt

logger = logging.getLogger("slapp.segmentation.failures")

# Signals a scheduler or a user sends to stop a task (scancel, qdel, time limit, Ctrl-C).
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGKILL, signal.SIGHUP,
                 signal.SIGXCPU, signal.SIGUSR1, signal.SIGUSR2)
# Exit statuses by which the task itself reported the outcome (and recorded a failure).
_SELF_REPORTED = (0, 1)


def _chain(error: BaseException) -> list[BaseException]:
    """``error`` and the exceptions it was raised from or during, innermost last."""
    seen = []
    while error is not None and error not in seen:
        seen.append(error)
        error = error.__cause__ or error.__context__
    return seen


def classify_exception(error: BaseException) -> str:
    """The failure class of an exception that ended a task.

    Parameters
    ----------
    error : BaseException
        What the task raised (its causes are looked at too).

    Returns
    -------
    str
        One of :data:`FAILURE_CLASSES`.
    """
    chain = _chain(error)
    if any(isinstance(link, MemoryError) for link in chain):
        return OUT_OF_MEMORY
    if isinstance(error, (KeyboardInterrupt, SystemExit)):
        return KILLED
    for link in chain:  # the outermost error that knows its cause says it
        if isinstance(link, SlappError):
            return link.failure_class
        database = database_failure_class(link)
        if database is not None:
            return database
    if isinstance(error, (mm.ValidationError, json.JSONDecodeError)):
        return BAD_INPUT
    return OTHER


def oom_kill_count() -> int | None:
    """OOM kills counted in this process's memory cgroup (v2 or v1), None if unknown.

    Under SLURM (and PBS with cgroups) the job has a cgroup of its own, so a
    count above zero there means the kernel killed one of the job's processes
    for memory.
    """
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            candidates = [(Path("/sys/fs/cgroup") / path.lstrip("/") / "memory.events",
                           "oom_kill")]
        elif "memory" in controllers.split(","):
            candidates = [(Path("/sys/fs/cgroup/memory") / path.lstrip("/")
                           / "memory.oom_control", "oom_kill")]
        else:
            continue
        for events, key in candidates:
            try:
                for event in events.read_text().splitlines():
                    name, _, value = event.partition(" ")
                    if name == key:
                        return int(value)
            except (OSError, ValueError):
                continue
    return None


def classify_exit(returncode: int, oom_kills: int = 0) -> tuple[str, str, str | None]:
    """Class, message and signal name of a task process that ended with ``returncode``.

    Parameters
    ----------
    returncode : int
        Negative for a signal (Python's ``subprocess``), or a shell's exit
        status, where 128 + N means signal N.
    oom_kills : int
        OOM kills the task's cgroup counted while it ran.

    Returns
    -------
    failure_class, message, signal_name : str, str, str or None
    """
    number = -returncode if returncode < 0 else returncode - 128 if returncode > 128 else None
    try:
        signum = signal.Signals(number) if number else None
    except ValueError:
        signum = None
    if signum is None:
        return OTHER, f"the task ended with exit status {returncode}; see its log", None
    name = signum.name
    if signum == signal.SIGKILL and oom_kills > 0:
        return (OUT_OF_MEMORY, f"killed by {name}: out of memory (the task's cgroup counted "
                               f"{oom_kills} OOM kill{'s' if oom_kills > 1 else ''})", name)
    if signum in _STOP_SIGNALS:
        why = ("by the scheduler (scancel, qdel, time or memory limit) or a user"
               if signum == signal.SIGKILL else
               "(scancel, qdel, the job's time limit or Ctrl-C)")
        return KILLED, f"killed by {name} {why}", name
    return OTHER, f"crashed with {name}; see the task's log", name


# The environment variable by which a task's starter names the task's log file.
TASK_LOG_VARIABLE = "SLAPP_TASK_LOG"


def failure_row(*, manifest_path: str | Path, manifest_index: int, failure_class: str,
                message: str, experiment_id: int | None = None,
                parameters_digest: str | None = None, traceback_text: str | None = None,
                exit_status: int | None = None, signal_name: str | None = None,
                duration_seconds: float | None = None, log_path: str | None = None) -> dict:
    """The ``segmentation_failures`` row of one failed task on this host.

    Code version, host name and the scheduler's job and task ids are filled in
    from this process; the task's log is ``log_path``, else the one that whatever
    started the task named in ``SLAPP_TASK_LOG`` (run_local, the SLURM job
    script), else unknown (None).
    """
    task = current_task()
    return {
        "ophys_experiment_id": experiment_id,
        "ophys_segmentation_commit_hash": code_version(),
        "parameters_digest": parameters_digest,
        "manifest_path": str(manifest_path),
        "manifest_index": manifest_index,
        "hostname": socket.gethostname(),
        "scheduler_job_id": task.job_id,
        "scheduler_task_id": task.task_id,
        "failure_class": failure_class,
        "message": message,
        "traceback": traceback_text,
        "exit_status": exit_status,
        "signal_name": signal_name,
        "duration_seconds": duration_seconds,
        "log_path": log_path or os.environ.get(TASK_LOG_VARIABLE) or None,
    }


def record(failure: dict) -> bool:
    """Store ``failure`` in the labeling database; never raises.

    When the database or its credentials are not there, the failure is written
    to the log as an ERROR line instead, and False is returned.
    """
    try:
        credentials = get_db_credentials(**label_defaults)
    except SlappError as error:
        # The task's own error line names the missing setting when that is the failure.
        logger.debug("failure not recorded: %s", error)
        return False
    return record_failure(credentials, failure)


def format_traceback(error: BaseException) -> str:
    """The full traceback of ``error`` as text."""
    return "".join(traceback.format_exception(type(error), error, error.__traceback__))


def task_identity(manifest_path: Path, manifest_index: int,
                  segment_arguments: Sequence[str]) -> tuple[int | None, str | None]:
    """Experiment id and parameters digest of a task, from its manifest entry and options.

    Either is None when it cannot be worked out (unreadable manifest, index out
    of range, options the segment command would refuse).
    """
    try:
        entry = load_manifest(manifest_path)[manifest_index]
    except (Exception, SystemExit):  # noqa: BLE001 - whatever is wrong, the row is still written
        return None, None
    try:
        parsed = ArgSchemaParser(
            schema_type=SegmentSchema, args=["--manifest_json", str(manifest_path),
                                             "--manifest_index", str(manifest_index),
                                             *segment_arguments]).args
        digest = parameters_digest(Suite2pOptions.from_args(parsed), entry["nbinned"],
                                   suite2p_version())
    except (Exception, SystemExit):  # noqa: BLE001
        digest = None
    return entry.get("experiment_id"), digest


def record_ended_task(manifest_path: Path, manifest_index: int, returncode: int,
                      duration_seconds: float | None, segment_arguments: Sequence[str] = (),
                      oom_kills: int = 0, log_path: str | None = None) -> dict | None:
    """Record the failure of a task process that ended by a signal or an unexpected status.

    Parameters
    ----------
    manifest_path : Path
        The task's manifest.
    manifest_index : int
        The task's entry.
    returncode : int
        As :func:`classify_exit` takes it. 0 and 1 record nothing: the task
        succeeded, or recorded its failure itself.
    duration_seconds : float or None
        How long the task ran.
    segment_arguments : sequence of str
        The task's other segment options (for the parameters digest).
    oom_kills : int
        OOM kills counted in the task's cgroup while it ran.

    Returns
    -------
    dict or None
        The failure row, or None when there was nothing to record.
    """
    if returncode in _SELF_REPORTED:
        return None
    failure_class, message, signal_name = classify_exit(returncode, oom_kills)
    experiment_id, digest = task_identity(manifest_path, manifest_index, segment_arguments)
    failure = failure_row(
        manifest_path=manifest_path, manifest_index=manifest_index,
        failure_class=failure_class, message=message, experiment_id=experiment_id,
        parameters_digest=digest,
        # as a shell reports it (128 + N for signal N), whoever started the task
        exit_status=128 - returncode if returncode < 0 else returncode,
        signal_name=signal_name, duration_seconds=duration_seconds, log_path=log_path)
    logger.error("experiment %s (manifest index %d): %s", experiment_id, manifest_index,
                 message)
    record(failure)
    return failure


class RecordFailureSchema(ArgSchema):
    """Record a task process that ended by a signal (called by the job scripts)."""

    manifest_json = mm.fields.Str(
        required=True, metadata={"description": "the task's manifest (as given to segment)"})
    manifest_index = StrictInt(
        required=True, validate=mm.validate.Range(min=0),
        metadata={"description": "the task's array index"})
    exit_status = StrictInt(
        required=True,
        metadata={"description": "the task's exit status as the shell saw it ($?): 128 + N "
                                 "for signal N. 0 and 1 record nothing, because the task "
                                 "itself reported those"})
    duration_seconds = mm.fields.Float(
        allow_none=True, dump_default=None,
        metadata={"description": "how long the task ran"})
    oom_kills_before = StrictInt(
        dump_default=0, validate=mm.validate.Range(min=0),
        metadata={"description": "the cgroup's OOM kill count when the task started; 0, "
                                 "because a batch job gets a fresh cgroup"})


def main(argv: Sequence[str] | None = None) -> None:
    """Parse ``<options> [-- <segment options>]`` and record the ended task."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    segment_arguments: list[str] = []
    if "--" in arguments:
        split = arguments.index("--")
        arguments, segment_arguments = arguments[:split], arguments[split + 1:]
    parser = ArgSchemaParser(schema_type=RecordFailureSchema, args=arguments)
    logging.getLogger("slapp").setLevel(parser.args["log_level"])
    oom_kills = max((oom_kill_count() or 0) - parser.args["oom_kills_before"], 0)
    record_ended_task(Path(parser.args["manifest_json"]), parser.args["manifest_index"],
                      parser.args["exit_status"], parser.args["duration_seconds"],
                      segment_arguments, oom_kills)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_main(main, "record-failure"))
