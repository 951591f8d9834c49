"""Write one segmentation run and all its ROIs in one transaction; skip or replace a done run.

A run is *done* when ``segmentation_runs`` holds a row for its
(experiment, code version). :func:`write_run` inserts the run row and streams
every ROI with binary COPY inside one transaction, so a crash at any moment
leaves either the whole run or nothing. When two tasks finish the same
experiment at once, the table's unique constraint decides: the second insert
does nothing and that task reports ``"skipped"``.
"""
import logging
from dataclasses import dataclass
from typing import Iterable

import psycopg2.extras

from slapp.errors import SlappError
from slapp.segmentation.rois import ROI_COLUMNS, Roi, copy_rows
from slapp.utils.query_utils import DbConnection

logger = logging.getLogger(__name__)

SEGMENTED = "segmented"
SKIPPED = "skipped"

_FIND_RUN = """
SELECT runs.id,
       (SELECT count(*) FROM rois WHERE rois.segmentation_run_id = runs.id) AS n_rois
FROM segmentation_runs AS runs
WHERE runs.ophys_experiment_id = %s AND runs.ophys_segmentation_commit_hash = %s
"""

_DELETE_RUN = """
DELETE FROM segmentation_runs
WHERE ophys_experiment_id = %s AND ophys_segmentation_commit_hash = %s
RETURNING id
"""

_INSERT_RUN = """
INSERT INTO segmentation_runs (
    ophys_experiment_id, ophys_segmentation_commit_hash, source_video_path, video_shape,
    nframes, nbinned, suite2p_version, suite2p_settings, suite2p_seconds, total_seconds,
    hostname)
VALUES (
    %(ophys_experiment_id)s, %(ophys_segmentation_commit_hash)s, %(source_video_path)s,
    %(video_shape)s, %(nframes)s, %(nbinned)s, %(suite2p_version)s, %(suite2p_settings)s,
    %(suite2p_seconds)s, %(total_seconds)s, %(hostname)s)
ON CONFLICT ON CONSTRAINT one_run_per_experiment_and_code_version DO NOTHING
RETURNING id
"""


class SegmentationStoreException(SlappError):
    """A run could not be stored."""


@dataclass(frozen=True)
class StoredRun:
    """The outcome of storing (or finding) a run."""

    segmentation_run_id: int
    status: str
    n_rois: int


def find_run(dbconn: DbConnection, experiment_id: int, code_version: str) -> StoredRun | None:
    """The run of ``experiment_id`` by ``code_version``, if there is one.

    Parameters
    ----------
    dbconn : DbConnection
        The labeling database.
    experiment_id : int
        LIMS ``ophys_experiments.id``.
    code_version : str
        ``ophys_segmentation_commit_hash`` to look for.

    Returns
    -------
    StoredRun or None
        With status ``"skipped"``, or None when the experiment is not done.
    """
    rows = dbconn.query(_FIND_RUN, (experiment_id, code_version))
    if not rows:
        return None
    return StoredRun(rows[0]["id"], SKIPPED, rows[0]["n_rois"])


class _CountedRows:
    """The ROI rows as they stream into COPY, counted."""

    def __init__(self, segmentation_run_id: int, rois: Iterable[Roi]):
        self._rows = copy_rows(segmentation_run_id, rois)
        self.count = 0

    def __iter__(self):
        for row in self._rows:
            self.count += 1
            yield row


def write_run(dbconn: DbConnection, run: dict, rois: Iterable[Roi], *,
              overwrite: bool = False) -> StoredRun:
    """Store a run row and all its ROIs, all or nothing.

    Parameters
    ----------
    dbconn : DbConnection
        The labeling database.
    run : dict
        The ``segmentation_runs`` values: ``ophys_experiment_id``,
        ``ophys_segmentation_commit_hash``, ``source_video_path``,
        ``video_shape``, ``nframes``, ``nbinned``, ``suite2p_version``,
        ``suite2p_settings`` (a JSON-able dict), ``suite2p_seconds``,
        ``total_seconds``, ``hostname``.
    rois : iterable of Roi
        Streamed to the database with binary COPY; may be empty.
    overwrite : bool
        Delete the run of the same experiment and code version (its ROIs go
        with it) in the same transaction, so readers see the old run or the
        new one, never neither.

    Returns
    -------
    StoredRun
        ``"segmented"`` with the new run's id, or ``"skipped"`` with the id of
        the run another task stored first.
    """
    key = (run["ophys_experiment_id"], run["ophys_segmentation_commit_hash"])
    params = {**run, "suite2p_settings": psycopg2.extras.Json(run["suite2p_settings"])}
    with dbconn.transaction() as cursor:
        if overwrite:
            cursor.execute(_DELETE_RUN, key)
            for row in cursor.fetchall():
                logger.info("replacing segmentation run %d", row["id"])
        cursor.execute(_INSERT_RUN, params)
        inserted = cursor.fetchone()
        if inserted is not None:
            rows = _CountedRows(inserted["id"], rois)
            dbconn.copy_rows("rois", ROI_COLUMNS, rows, cursor=cursor)
            return StoredRun(inserted["id"], SEGMENTED, rows.count)
    existing = find_run(dbconn, *key)
    if existing is None:  # the other task's run was deleted again meanwhile
        raise SegmentationStoreException(
            f"experiment {key[0]} was stored and removed again by other tasks meanwhile; rerun it")
    logger.info("experiment %d was stored by another task as run %d", key[0],
                existing.segmentation_run_id)
    return existing
