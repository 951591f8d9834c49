"""Segment every entry of a manifest on this machine, a few at a time.

::

    python -m slapp.segmentation.run_local --manifest_json ./example_output.json --workers 2
    python -m slapp.segmentation.run_local --manifest_json ./example_output.json --diameter 12

For a user with one machine instead of a cluster. Each entry runs as its own
``python -m slapp.segmentation.segment`` process, exactly as an array task
would, so a crash in one movie (Suite2P, memory) cannot take the others down.
``--workers`` processes run at once, and the machine's cores are divided
between them (``OMP_NUM_THREADS`` and friends), so that they do not fight
over the same cores. Each task's output goes to its own log,
``<log_dir>/<manifest name>_<index>_<experiment_id>_try<N>.log``: one per attempt
(N counts the attempts of that entry with that manifest), so that no log is ever
overwritten, not by a rerun and not by another manifest in the same directory.
At the end a summary ``done: N, skipped: N, failed: N`` of this run's tasks is
printed with the error line and log of every failed task, then how many entries
now have the run that counts for this code version and these options (read
through :mod:`slapp.db.runs`, as ``status`` reads it); the exit status is
non-zero if any task failed.
The Suite2P options are the segment command's (same names, defaults and
checks), validated here once and given to every task. Entries this code
version already segmented with these parameters are skipped by the tasks
themselves, so rerunning after a failure only redoes what is missing. A task
that fails records its failure; one that a signal ended (killed for memory,
Ctrl-C) cannot, so this runner records it. Ctrl-C stops the running tasks
(they clean up their temporary files) and exits.
"""
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path

import argschema
import marshmallow as mm
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from slapp.contracts.manifest import load_manifest
from slapp.db.runs import DONE, RunParameters, entry_states
from slapp.errors import SlappError
from slapp.segmentation import failures, scratch
from slapp.segmentation.task_options import SegmentTaskSchema, segment_arguments
from slapp.utils.files import write_json_atomically
from slapp.utils.cli import run_main
from slapp.utils.query_utils import DbConnection, get_db_credentials, label_defaults
from slapp.utils.schema import ArgSchema, ArgSchemaParser, StrictInt

logger = logging.getLogger("slapp.segmentation.run_local")

SEGMENT_MODULE = "slapp.segmentation.segment"
# Libraries under Suite2P that size their thread pools from these variables.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                    "NUMBA_NUM_THREADS")
POLL_SECONDS = 0.2
# A task that gets Ctrl-C finishes its current numpy/torch call, deletes its
# temporary files and rolls back its transaction; this bounds the wait for it.
INTERRUPT_GRACE_SECONDS = 30.0


class RunLocalException(SlappError):
    """The local run cannot start, or some of its tasks failed."""


class RunLocalSchema(ArgSchema, SegmentTaskSchema):
    """Segment every manifest entry on this machine, ``workers`` at a time.

    The options of a segment task (the segment command's, same names and
    defaults) are validated here and given to every task.
    """

    workers = StrictInt(
        dump_default=1, validate=mm.validate.Range(min=1),
        metadata={"description": "entries segmented at once. 1, because Suite2P already "
                                 "uses every core for one movie and a 512x512 Allen movie "
                                 "takes several GB of memory; raise it for small movies or "
                                 "a big machine. The cores are shared out between the "
                                 "workers"})
    log_dir = mm.fields.Str(
        allow_none=True, dump_default=None,
        metadata={"description": "directory for each task's log and output json (one pair "
                                 "per attempt, never overwritten); "
                                 "<directory of manifest_json>/segmentation_logs when not "
                                 "given, so the logs sit beside the manifest they belong to"})
    task_log_level = mm.fields.Str(
        dump_default="INFO", validate=mm.validate.OneOf(argschema.fields.LogLevel.options),
        metadata={"description": "log level of each task; INFO, because a task's log is "
                                 "read after a failure and should say what it was doing"})


class TaskOutcomeSchema(mm.Schema):
    """How one manifest entry ended."""

    manifest_index = StrictInt(required=True)
    experiment_id = StrictInt(required=True)
    outcome = mm.fields.Str(required=True,
                            validate=mm.validate.OneOf(["done", "skipped", "failed"]))
    segmentation_run_id = StrictInt(allow_none=True)
    n_rois = StrictInt(allow_none=True)
    error = mm.fields.Str(allow_none=True,
                          metadata={"description": "the failed task's one-line error"})
    log_path = mm.fields.Str(required=True)


class RunLocalOutputSchema(mm.Schema):
    """What ``--output_json`` holds."""

    n_done = StrictInt(required=True)
    n_skipped = StrictInt(required=True)
    n_failed = StrictInt(required=True)
    tasks = mm.fields.Nested(TaskOutcomeSchema, many=True, required=True)


@dataclass
class TaskOutcome:
    """How one manifest entry ended (see :class:`TaskOutcomeSchema`)."""

    manifest_index: int
    experiment_id: int
    outcome: str
    log_path: str
    segmentation_run_id: int | None = None
    n_rois: int | None = None
    error: str | None = None


def threads_per_worker(workers: int, cores: int | None = None) -> int:
    """Share this machine's cores out between ``workers`` tasks (at least one each).

    Parameters
    ----------
    workers : int
        Tasks running at once.
    cores : int, optional
        Cores this process may use; by default its CPU affinity.

    Returns
    -------
    int
        Threads each task's numerical libraries may start.
    """
    if cores is None:
        cores = len(os.sched_getaffinity(0))
    return max(1, cores // workers)


def last_error_line(log_path: Path, returncode: int) -> str:
    """The failed task's one-line error from its log, or how it died.

    Parameters
    ----------
    log_path : Path
        The task's combined stdout and stderr.
    returncode : int
        Its exit status (negative: killed by that signal).

    Returns
    -------
    str
        The last ``prog: error: ...`` line of the log; otherwise its last line,
        followed by the exit status.
    """
    lines = [line.strip() for line in log_path.read_text(errors="replace").splitlines()
             if line.strip()]
    errors = [line for line in lines if ": error: " in line]
    if errors:
        return errors[-1]
    if returncode < 0:
        ending = f"killed by signal {signal.Signals(-returncode).name}"
    else:
        ending = f"exit status {returncode}"
    return f"{lines[-1]} ({ending})" if lines else ending


def new_attempt_files(log_dir: Path, stem: str) -> tuple[Path, Path]:
    """Claim the log and output paths of a new attempt: ``<stem>_try<N>.log`` / ``.json``.

    N is the first number whose log does not exist yet; the log is created
    exclusively, so that two runners claiming at once get different numbers
    and no attempt's log is overwritten.

    Returns
    -------
    tuple of Path
        The (created, empty) log and the output json path beside it.
    """
    attempt = 1
    while True:
        log_path = log_dir / f"{stem}_try{attempt}.log"
        try:
            log_path.touch(exist_ok=False)
        except FileExistsError:
            attempt += 1
            continue
        return log_path, log_path.with_suffix(".json")


class SegmentTask:
    """One manifest entry's ``segment`` process and the files it writes.

    Parameters
    ----------
    index : int
        The entry's manifest index.
    entry : dict
        The manifest entry (``experiment_id`` is used).
    log_dir : Path
        Where the attempt's ``<manifest>_<index>_<experiment_id>_try<N>.log``
        and ``.json`` go (claimed when the task starts).
    manifest_name : str
        The manifest file's name without its suffix.
    """

    def __init__(self, index: int, entry: dict, log_dir: Path, manifest_name: str):
        self.index = index
        self.experiment_id = entry["experiment_id"]
        self.stem = f"{manifest_name}_{index}_{self.experiment_id}"
        self.log_dir = log_dir
        self.log_path: Path | None = None
        self.output_path: Path | None = None
        self.process: subprocess.Popen | None = None
        self.started = 0.0
        self.oom_kills_before = 0

    def start(self, command: list[str], env: dict) -> None:
        """Start ``command`` for this entry, its output going to a new log file."""
        self.log_path, self.output_path = new_attempt_files(self.log_dir, self.stem)
        self.started = time.monotonic()
        self.oom_kills_before = failures.oom_kill_count() or 0
        with open(self.log_path, "wb") as log:
            # Its own session: a terminal's Ctrl-C reaches run_local, which then
            # stops the task on purpose (see stop_tasks()).
            self.process = subprocess.Popen(
                command + ["--manifest_index", str(self.index),
                           "--output_json", str(self.output_path)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env={**env, failures.TASK_LOG_VARIABLE: str(self.log_path)},
                start_new_session=True)

    def outcome(self) -> TaskOutcome:
        """How the finished task ended, from its exit status and output json."""
        returncode = self.process.returncode
        outcome = TaskOutcome(self.index, self.experiment_id, "failed", str(self.log_path))
        if returncode != 0:
            outcome.error = last_error_line(self.log_path, returncode)
            return outcome
        try:
            result = json.loads(self.output_path.read_text())
        except (OSError, ValueError) as error:
            outcome.error = (f"the task exited 0 but its output {self.output_path} "
                             f"is unreadable: {error}")
            return outcome
        outcome.outcome = "done" if result["status"] == "segmented" else "skipped"
        outcome.segmentation_run_id = result.get("segmentation_run_id")
        outcome.n_rois = result.get("n_rois")
        return outcome

    def record_if_killed(self, manifest_path: Path, segment_arguments: list[str]) -> None:
        """Record the failure of a task that a signal ended (it could not record it itself).

        Exit status 0 and 1 mean the task reported its outcome itself.
        """
        oom_kills = (failures.oom_kill_count() or 0) - self.oom_kills_before
        failures.record_ended_task(manifest_path, self.index, self.process.returncode,
                                   time.monotonic() - self.started, segment_arguments,
                                   max(oom_kills, 0), str(self.log_path))

    def signal_group(self, signum: int) -> None:
        """Send ``signum`` to the task's process group, if it still runs."""
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signum)
            except ProcessLookupError:  # it ended after poll()
                pass


def stop_tasks(tasks: list[SegmentTask],
               grace_seconds: float = INTERRUPT_GRACE_SECONDS) -> None:
    """Interrupt running tasks as Ctrl-C would, and kill those still running after the grace.

    SIGINT lets a task delete its temporary files and roll back its
    transaction. A second Ctrl-C while waiting kills the tasks at once.

    Parameters
    ----------
    tasks : list of SegmentTask
        The started tasks.
    grace_seconds : float
        How long all of them together get to end by themselves.
    """
    for task in tasks:
        task.signal_group(signal.SIGINT)
    deadline = time.monotonic() + grace_seconds
    try:
        for task in tasks:
            task.process.wait(max(deadline - time.monotonic(), 0))
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        pass
    finally:
        for task in tasks:
            if task.process.poll() is None:
                logger.warning("killing experiment %s: it did not stop on Ctrl-C; its "
                               "temporary files may be left behind", task.experiment_id)
                task.signal_group(signal.SIGKILL)
                task.process.wait()


def _counts(outcomes: list[TaskOutcome]) -> dict[str, int]:
    """How many tasks were done, skipped and failed, in that order."""
    return {name: sum(outcome.outcome == name for outcome in outcomes)
            for name in ("done", "skipped", "failed")}


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


class RunLocal(ArgSchemaParser):
    """``python -m slapp.segmentation.run_local``: see the module docstring."""

    default_schema = RunLocalSchema
    default_output_schema = RunLocalOutputSchema

    def _checked_paths(self) -> tuple[Path, Path, Path | None]:
        """Validate the inputs before anything is written; return manifest, log and tmp dirs.

        ``tmp_dir`` is created when missing, as segment creates it.
        """
        manifest_path = Path(self.args["manifest_json"]).resolve()
        log_dir = Path(self.args["log_dir"] or manifest_path.parent / "segmentation_logs")
        if log_dir.exists() and not log_dir.is_dir():
            raise RunLocalException(f"log_dir {log_dir} exists and is not a directory")
        # Fail once here, not in every task, when the database is not configured.
        get_db_credentials(**label_defaults)
        tmp_dir = self.args["tmp_dir"]
        return (manifest_path, log_dir.resolve(),
                None if tmp_dir is None else scratch.prepared_tmp_dir(tmp_dir))

    def _task_arguments(self, manifest_path: Path, tmp_dir: Path | None) -> list[str]:
        """Every task option (segment's, Suite2P's) as segment arguments, paths absolute."""
        plot_dir = self.args["plot_dir"]
        return segment_arguments({
            **self.args, "manifest_json": manifest_path, "tmp_dir": tmp_dir,
            "plot_dir": None if plot_dir is None else Path(plot_dir).resolve()})

    def _segment_command(self, task_arguments: list[str]) -> list[str]:
        return [sys.executable, "-m", SEGMENT_MODULE, "--log_level",
                self.args["task_log_level"], *task_arguments]

    def _task_environment(self, workers: int) -> dict:
        threads = str(threads_per_worker(workers))
        return {**os.environ, **{name: threads for name in THREAD_VARIABLES}}

    def run(self) -> dict:
        """Segment every entry, print the summary and write ``--output_json``.

        Returns
        -------
        dict
            The summary, as :class:`RunLocalOutputSchema` describes.

        Raises
        ------
        RunLocalException
            If the inputs are unusable (before anything runs), or after the
            run if any task failed.
        KeyboardInterrupt
            On Ctrl-C or SIGTERM, once the running tasks are stopped.
        """
        manifest_path, log_dir, tmp_dir = self._checked_paths()
        manifest = load_manifest(manifest_path)
        task_arguments = self._task_arguments(manifest_path, tmp_dir)
        command = self._segment_command(task_arguments)
        workers = min(self.args["workers"], max(len(manifest), 1))
        env = self._task_environment(workers)
        log_dir.mkdir(parents=True, exist_ok=True)
        logger.info("segmenting %d entries, %d at a time with %s threads each; logs in %s",
                    len(manifest), workers, env["OMP_NUM_THREADS"], log_dir)

        pending = deque(SegmentTask(index, entry, log_dir, manifest_path.stem)
                        for index, entry in enumerate(manifest))
        running: list[SegmentTask] = []
        outcomes: list[TaskOutcome] = []
        previous_sigterm = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
        progress = tqdm(total=len(manifest), unit="movie", desc="segment",
                        disable=not sys.stderr.isatty())
        try:
            with logging_redirect_tqdm():
                while pending or running:
                    while pending and len(running) < workers:
                        task = pending.popleft()
                        task.start(command, env)
                        running.append(task)
                    time.sleep(POLL_SECONDS)
                    for task in [task for task in running if task.process.poll() is not None]:
                        running.remove(task)
                        task.record_if_killed(manifest_path, task_arguments)
                        outcomes.append(self._report(task.outcome()))
                        progress.set_postfix(_counts(outcomes), refresh=False)
                        progress.update()
        except BaseException:  # Ctrl-C, SIGTERM, or a task that cannot start
            logger.warning("stopping %d running tasks", len(running))
            stop_tasks(running)
            for task in [task for task in running if task.process is not None]:
                task.record_if_killed(manifest_path, task_arguments)
            raise
        finally:
            progress.close()
            signal.signal(signal.SIGTERM, previous_sigterm)
        return self._summarize(sorted(outcomes, key=lambda outcome: outcome.manifest_index),
                               log_dir, self._counted(manifest_path, manifest))

    @staticmethod
    def _report(outcome: TaskOutcome) -> TaskOutcome:
        if outcome.outcome == "failed":
            logger.error("experiment %s failed: %s", outcome.experiment_id, outcome.error)
        else:
            logger.info("experiment %s %s: run %s, %s ROIs", outcome.experiment_id,
                        outcome.outcome, outcome.segmentation_run_id, outcome.n_rois)
        return outcome

    def _counted(self, manifest_path: Path, manifest: list[dict]) -> str:
        """How many entries have the run that counts, as status would say."""
        parameters = RunParameters.from_args(self.args)
        with DbConnection(**get_db_credentials(**label_defaults), read_only=True) as dbconn:
            states = entry_states(dbconn, manifest, parameters, manifest_path)
        done = sum(state.status == DONE for state in states)
        return (f"{done} of {len(states)} entries of {manifest_path} are done for code "
                f"version {parameters.code_version}, {parameters.description()}")

    def _summarize(self, outcomes: list[TaskOutcome], log_dir: Path, counted: str) -> dict:
        counts = _counts(outcomes)
        print(", ".join(f"{name}: {count}" for name, count in counts.items()))
        for outcome in outcomes:
            if outcome.outcome == "failed":
                print(f"failed: experiment {outcome.experiment_id} (manifest index "
                      f"{outcome.manifest_index}): {outcome.error} (log: {outcome.log_path})")
        print(counted)
        summary = {"n_done": counts["done"], "n_skipped": counts["skipped"],
                   "n_failed": counts["failed"], "tasks": [asdict(o) for o in outcomes]}
        if self.args.get("output_json"):
            write_json_atomically(self.args["output_json"], self.get_output_json(summary))
        if counts["failed"]:
            raise RunLocalException(
                f"{counts['failed']} of {len(outcomes)} entries failed; their logs are in "
                f"{log_dir}")
        return summary


def main() -> None:
    """Parse the command line (``--overwrite`` may stand alone) and segment every entry."""
    RunLocal(args=sys.argv[1:]).run()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_main(main, "run-local"))
