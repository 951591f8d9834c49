"""Write one segmentation run and all its ROIs in one transaction; record failures.

A run's *identity* is (experiment, code version, parameters digest); which run
counts for an identity (its current run) is :mod:`slapp.db.runs`'s to say.
:func:`write_run` inserts the run row and streams every ROI with binary COPY
inside one transaction, so a crash at any moment leaves either the whole run or
nothing. When two tasks finish the same identity at once, the partial unique
index ``one_current_run_per_identity`` decides: the second insert does nothing
and that task reports ``"skipped"``. ``overwrite`` supersedes the current run in
the same transaction (``superseded_by`` names the new run); the old run and its
ROIs stay, so ids exported before remain valid.

The database may be unreachable just when a run that took many minutes of
compute is ready (a server restart, a network outage). :func:`write_run` then
retries the whole write (connect, insert, COPY, commit), with backoff, for up
to ``retry_seconds``, logging one line per wait (:func:`slapp.utils.retry.retry`). A failed task is recorded in
``segmentation_failures`` by :func:`record_failure`, which never raises.
"""
import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import psycopg2
import psycopg2.extras
from psycopg2 import sql as pgsql

from slapp.db.runs import RunIdentity, find_current_run
from slapp.errors import TransientError
from slapp.segmentation.images import RunImages, insert_images
from slapp.segmentation.rois import ROI_COLUMNS, Roi, copy_rows
from slapp.utils.cli import one_line
from slapp.utils.query_utils import DbConnection, is_transient_error
from slapp.utils.retry import retry

logger = logging.getLogger(__name__)

SEGMENTED = "segmented"
SKIPPED = "skipped"

IDENTITY_COLUMNS = ("ophys_experiment_id", "ophys_segmentation_commit_hash",
                    "parameters_digest")
# The segmentation_runs columns a run is written with. The first group is
# required; the others have defaults in the schema or may be NULL.
REQUIRED_RUN_COLUMNS = (
    *IDENTITY_COLUMNS, "source_video_path", "movie_fingerprint", "video_shape", "nframes",
    "nbinned", "suite2p_version", "suite2p_settings", "suite2p_seconds", "total_seconds",
    "hostname")
OPTIONAL_RUN_COLUMNS = ("code_label", "frame_source", "stage_seconds", "peak_rss_bytes",
                        "scratch_bytes", "scheduler_job_id", "scheduler_task_id",
                        "experiment_selection_id", "manifest_path")
JSON_COLUMNS = ("movie_fingerprint", "suite2p_settings", "stage_seconds")
FAILURE_COLUMNS = (
    "ophys_experiment_id", "ophys_segmentation_commit_hash", "parameters_digest",
    "manifest_path", "manifest_index", "hostname", "scheduler_job_id", "scheduler_task_id",
    "failure_class", "message", "traceback", "exit_status", "signal_name", "duration_seconds",
    "log_path")

# Waits between whole-write attempts: from 1 s, doubling, at most 30 s (each
# with jitter, so that the tasks of an array do not come back in lockstep).
_FIRST_WAIT_SECONDS, _LONGEST_WAIT_SECONDS = 1.0, 30.0
# record_failure tries for about this long after its first failure: a task that
# failed should not linger, and its log holds the failure anyway.
FAILURE_RECORD_SECONDS = 10.0

# Superseding, in one transaction: lock the current run of the identity; insert
# its successor marked as superseded by it for the moment (so that the partial
# unique index lets two rows of the identity exist, and both foreign keys point
# at rows that exist); mark the old run superseded by the successor; make the
# successor current.
_LOCK_CURRENT = """
SELECT id FROM segmentation_runs
WHERE ophys_experiment_id = %s AND ophys_segmentation_commit_hash = %s
  AND parameters_digest = %s AND superseded_by IS NULL
FOR UPDATE
"""

_SET_SUPERSEDED = """
UPDATE segmentation_runs SET superseded_by = %s, superseded_at = %s WHERE id = %s
"""

_FINGERPRINT_MOVED = """
UPDATE segmentation_runs SET movie_fingerprint = movie_fingerprint || %s::jsonb WHERE id = %s
"""

_RECORD_WRITE_SECONDS = """
UPDATE segmentation_runs
SET stage_seconds = stage_seconds || jsonb_build_object('database_write', %s::float8)
WHERE id = %s
"""


class SegmentationStoreException(TransientError):
    """A run could not be stored because other tasks raced it; rerunning it may help."""


class DatabaseUnreachable(TransientError):
    """The labeling database could not be reached for the whole retry time."""


@dataclass(frozen=True)
class StoredRun:
    """The outcome of storing (or finding) a run.

    ``movie_fingerprint`` is the fingerprint stored with the run (see
    :mod:`slapp.segmentation.fingerprint`); ``{}`` for runs stored before
    fingerprints were recorded.
    """

    segmentation_run_id: int
    status: str
    n_rois: int
    movie_fingerprint: dict = field(default_factory=dict)


def find_run(dbconn: DbConnection, experiment_id: int, code_version: str,
             parameters_digest: str) -> StoredRun | None:
    """The current run of one identity, if there is one (see :mod:`slapp.db.runs`).

    Parameters
    ----------
    dbconn : DbConnection
        The labeling database.
    experiment_id : int
        LIMS ``ophys_experiments.id``.
    code_version : str
        ``ophys_segmentation_commit_hash`` to look for.
    parameters_digest : str
        See :func:`slapp.segmentation.settings.parameters_digest`.

    Returns
    -------
    StoredRun or None
        With status ``"skipped"`` and the stored movie fingerprint, or None
        when no run of this identity exists.
    """
    run = find_current_run(dbconn, RunIdentity(experiment_id, code_version, parameters_digest))
    if run is None:
        return None
    return StoredRun(run.segmentation_run_id, SKIPPED, run.n_rois,
                     run.columns["movie_fingerprint"])


def follow_moved_movie(dbconn: DbConnection, segmentation_run_id: int, mtime_ns: int) -> None:
    """Record a movie's new modification time in a run's fingerprint (same bytes, touched).

    Parameters
    ----------
    dbconn : DbConnection
        The labeling database.
    segmentation_run_id : int
        The run whose ``movie_fingerprint`` follows the movie.
    mtime_ns : int
        The movie's modification time now, in nanoseconds.
    """
    dbconn.execute(_FINGERPRINT_MOVED, (psycopg2.extras.Json({"mtime_ns": mtime_ns}),
                                        segmentation_run_id))


class _CountedRows:
    """The ROI rows as they stream into COPY, counted."""

    def __init__(self, segmentation_run_id: int, rois: Iterable[Roi]):
        self._rows = copy_rows(segmentation_run_id, rois)
        self.count = 0

    def __iter__(self):
        for row in self._rows:
            self.count += 1
            yield row


def _insert_statement(columns: list[str], table: str,
                      conflict: pgsql.Composable | None) -> pgsql.Composed:
    statement = pgsql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
        pgsql.Identifier(table), pgsql.SQL(", ").join(map(pgsql.Identifier, columns)),
        pgsql.SQL(", ").join(map(pgsql.Placeholder, columns)))
    if conflict is not None:
        statement += pgsql.SQL(" ON CONFLICT {} DO NOTHING").format(conflict)
    return statement + pgsql.SQL(" RETURNING id")


# The arbiter of one_current_run_per_identity: a second current run of an identity
# is not inserted.
_CURRENT_IDENTITY = pgsql.SQL("({}) WHERE superseded_by IS NULL").format(
    pgsql.SQL(", ").join(map(pgsql.Identifier, IDENTITY_COLUMNS)))


def _run_parameters(run: dict) -> dict:
    missing = [name for name in REQUIRED_RUN_COLUMNS if name not in run]
    unknown = sorted(set(run) - set(REQUIRED_RUN_COLUMNS) - set(OPTIONAL_RUN_COLUMNS))
    if missing or unknown:
        raise ValueError(f"a run needs the segmentation_runs columns: missing {missing}, "
                         f"unknown {unknown}")
    return {name: psycopg2.extras.Json(value) if name in JSON_COLUMNS else value
            for name, value in run.items()}


def _write_once(dbconn: DbConnection, params: dict, rois: Iterable[Roi],
                overwrite: bool, images: RunImages | None) -> StoredRun | None:
    """One attempt: the whole write in one transaction; None when the identity exists."""
    started = time.perf_counter()
    identity = tuple(params[name] for name in IDENTITY_COLUMNS)
    with dbconn.transaction() as cursor:
        old = None
        if overwrite:
            cursor.execute(_LOCK_CURRENT, identity)
            old = cursor.fetchone()
        if old is None:
            cursor.execute(_insert_statement(list(params), "segmentation_runs",
                                             _CURRENT_IDENTITY), params)
            inserted = cursor.fetchone()
            if inserted is None:
                return None
        else:
            cursor.execute("SELECT now() AS now")
            now = cursor.fetchone()["now"]
            successor = {**params, "superseded_by": old["id"], "superseded_at": now}
            cursor.execute(_insert_statement(list(successor), "segmentation_runs", None),
                           successor)
            inserted = cursor.fetchone()
            cursor.execute(_SET_SUPERSEDED, (inserted["id"], now, old["id"]))
            cursor.execute(_SET_SUPERSEDED, (None, None, inserted["id"]))
            logger.info("run %d supersedes run %d of the same identity (the old run and its "
                        "ROIs stay)", inserted["id"], old["id"])
        rows = _CountedRows(inserted["id"], rois)
        dbconn.copy_rows("rois", ROI_COLUMNS, rows, cursor=cursor)
        if images is not None:
            insert_images(cursor, inserted["id"], images)
        cursor.execute(_RECORD_WRITE_SECONDS, (time.perf_counter() - started, inserted["id"]))
        return StoredRun(inserted["id"], SEGMENTED, rows.count,
                         params["movie_fingerprint"].adapted)


def write_run(dbconn: DbConnection, run: dict, rois_factory: Callable[[], Iterable[Roi]], *,
              overwrite: bool = False, retry_seconds: float = 600,
              images: RunImages | None = None) -> StoredRun:
    """Store a run row and all its ROIs, all or nothing, waiting out a database outage.

    Parameters
    ----------
    dbconn : DbConnection
        The labeling database.
    run : dict
        The ``segmentation_runs`` values, keyed by column: required are the
        identity (``ophys_experiment_id``, ``ophys_segmentation_commit_hash``,
        ``parameters_digest``), ``source_video_path``, ``movie_fingerprint``,
        ``video_shape``, ``nframes``, ``nbinned``, ``suite2p_version``,
        ``suite2p_settings``, ``suite2p_seconds``, ``total_seconds``,
        ``hostname``; optional are ``code_label``, ``frame_source``,
        ``stage_seconds`` (``database_write`` is added: the seconds of the
        attempt that committed), ``peak_rss_bytes``, ``scratch_bytes``,
        ``scheduler_job_id``, ``scheduler_task_id``, and the provenance
        ``experiment_selection_id`` and ``manifest_path``.
    rois_factory : callable
        Returns a fresh iterable of the run's ROIs (may be empty) for each
        attempt; they are streamed to the database with binary COPY.
    overwrite : bool
        Supersede the current run of the same identity in the same
        transaction (it and its ROIs stay, with ``superseded_by`` naming the
        new run), so readers count the old run or the new one, never neither.
    retry_seconds : float
        How long to keep retrying after the first connection failure. Only
        connection trouble is retried (see
        :func:`slapp.utils.query_utils.is_transient_error`);
        any other error is raised at once.
    images : RunImages, optional
        The run's mean image, max projection and correlation image, stored in
        ``segmentation_images`` in the same transaction.

    Returns
    -------
    StoredRun
        ``"segmented"`` with the new run's id, or ``"skipped"`` with the id of
        the run of this identity stored first (by another task, or by this
        write when a commit went through but its acknowledgement was lost).

    Raises
    ------
    DatabaseUnreachable
        When the database could not be reached for ``retry_seconds``; nothing
        was written.
    ValueError
        If ``run`` lacks a required column or has an unknown one.
    """
    params = _run_parameters({**run, "stage_seconds": run.get("stage_seconds") or {}})
    identity = tuple(run[name] for name in IDENTITY_COLUMNS)

    def write() -> StoredRun:
        stored = _write_once(dbconn, params, rois_factory(), overwrite, images)
        if stored is None:
            stored = find_run(dbconn, *identity)
            if stored is None:  # unreachable while runs are superseded, never deleted
                raise SegmentationStoreException(
                    f"experiment {identity[0]} was stored and removed again by other "
                    "tasks meanwhile; rerun it")
            logger.info("experiment %d was already stored as run %d", identity[0],
                        stored.segmentation_run_id)
        return stored

    def reconnect_after(error: Exception, _attempt: int, delay: float, left: float) -> None:
        dbconn.close()
        logger.warning("database unreachable (%s); retrying the write in %.0f s, "
                       "%.0f s left", one_line(error), delay, left)

    try:
        return retry(write, transient=is_transient_error, first_wait=_FIRST_WAIT_SECONDS,
                     longest_wait=_LONGEST_WAIT_SECONDS, seconds=retry_seconds,
                     before_wait=reconnect_after)
    except (psycopg2.OperationalError, psycopg2.InterfaceError) as error:
        if not is_transient_error(error):
            raise
        dbconn.close()
        raise DatabaseUnreachable(
            f"database {dbconn.database} on {dbconn.host}:{dbconn.port} unreachable "
            f"for {retry_seconds:g} s; the run of experiment {identity[0]} was not "
            f"stored ({one_line(error)})") from error


def record_failure(credentials: dict, failure: dict) -> bool:
    """Record one failed task in ``segmentation_failures``; never raises.

    Parameters
    ----------
    credentials : dict
        Keyword arguments of :class:`DbConnection` for the labeling database.
    failure : dict
        The row, keyed by column (see :data:`FAILURE_COLUMNS`): at least
        ``ophys_segmentation_commit_hash``, ``manifest_path``,
        ``manifest_index``, ``hostname``, ``failure_class`` and ``message``.

    Returns
    -------
    bool
        True when the row was written. False when it could not be (the
        database unreachable for about :data:`FAILURE_RECORD_SECONDS`, or the
        row refused): the failure is then logged as one ERROR line instead, so
        that recording never hides the failure it records.
    """
    def write() -> None:
        columns = [name for name in failure if name in FAILURE_COLUMNS]
        unknown = sorted(set(failure) - set(FAILURE_COLUMNS))
        if unknown:
            raise ValueError(f"segmentation_failures has no column {', '.join(unknown)}")
        with DbConnection(**credentials, connect_attempts=1) as dbconn:
            dbconn.insert(_insert_statement(columns, "segmentation_failures", None), failure)

    try:
        retry(write, transient=is_transient_error, first_wait=0.5,
              seconds=FAILURE_RECORD_SECONDS)
        return True
    except Exception as error:  # noqa: BLE001 - recording must not replace the failure
        logger.error("could not record the failure of experiment %s in the database "
                     "(%s): %s: %s", failure.get("ophys_experiment_id"), one_line(error),
                     failure.get("failure_class"), failure.get("message"))
        return False
