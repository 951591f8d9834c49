"""Read what the labeling database knows about every entry of a batch, in one query.

Each entry gets its experiment's newest segmentation run (with ROI and cell
counts and the median ROI size, aggregated by the server) and, when it has
none, its newest recorded failure: matched by experiment, or by manifest path
and index for a failure whose entry could not even be read.
"""
from pathlib import Path

from slapp.utils.query_utils import DbConnection

DONE, MISSING, FAILED = "done", "missing", "failed"

_ENTRIES_QUERY = """
WITH entry AS (
    SELECT experiment_id, position - 1 AS manifest_index
    FROM unnest(%(experiment_ids)s::bigint[]) WITH ORDINALITY AS e(experiment_id, position)),
run AS (
    SELECT DISTINCT ON (ophys_experiment_id) * FROM segmentation_runs
    WHERE ophys_experiment_id = ANY(%(experiment_ids)s::bigint[])
    ORDER BY ophys_experiment_id, id DESC),
roi AS (
    SELECT segmentation_run_id, count(*) AS n_rois, count(*) FILTER (WHERE is_cell) AS n_cells,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY npix) AS median_npix
    FROM rois WHERE segmentation_run_id IN (SELECT id FROM run)
    GROUP BY segmentation_run_id),
failure_by_experiment AS (
    SELECT DISTINCT ON (ophys_experiment_id) * FROM segmentation_failures
    WHERE ophys_experiment_id = ANY(%(experiment_ids)s::bigint[])
    ORDER BY ophys_experiment_id, created_at DESC, id DESC),
failure_by_index AS (
    SELECT DISTINCT ON (manifest_index) * FROM segmentation_failures
    WHERE ophys_experiment_id IS NULL AND manifest_path = %(manifest_path)s
    ORDER BY manifest_index, created_at DESC, id DESC)
SELECT entry.manifest_index, entry.experiment_id,
       run.id AS segmentation_run_id, run.created_at, run.ophys_segmentation_commit_hash,
       run.code_label, run.parameters_digest, run.nframes, run.nbinned, run.video_shape,
       run.suite2p_version, run.suite2p_settings, run.total_seconds, run.suite2p_seconds,
       run.peak_rss_bytes, run.hostname,
       CASE WHEN run.id IS NOT NULL THEN coalesce(roi.n_rois, 0) END AS n_rois,
       CASE WHEN run.id IS NOT NULL THEN coalesce(roi.n_cells, 0) END AS n_cells,
       roi.median_npix,
       failure.failure_class, failure.message AS failure_message,
       failure.created_at AS failed_at
FROM entry
LEFT JOIN run ON run.ophys_experiment_id = entry.experiment_id
LEFT JOIN roi ON roi.segmentation_run_id = run.id
LEFT JOIN LATERAL (
    SELECT failure_class, message, created_at FROM (
        SELECT * FROM failure_by_experiment WHERE ophys_experiment_id = entry.experiment_id
        UNION ALL
        SELECT * FROM failure_by_index WHERE manifest_index = entry.manifest_index) AS f
    ORDER BY created_at DESC, id DESC LIMIT 1) AS failure ON run.id IS NULL
ORDER BY entry.manifest_index
"""

def fetch_entries(label_dbconn: DbConnection, experiment_ids: list[int],
                  manifest_path: Path | None = None) -> list[dict]:
    """Every entry's newest run or newest failure, with one query.

    Parameters
    ----------
    label_dbconn : DbConnection
        The labeling database.
    experiment_ids : list of int
        The batch's experiments, in manifest (array index) order.
    manifest_path : pathlib.Path, optional
        The manifest, to match failures recorded without an experiment id.

    Returns
    -------
    list of dict
        One per experiment, in order: ``manifest_index``, ``experiment_id``,
        ``status`` (``done``, ``missing`` or ``failed``), the run's columns
        (None when there is no run), ``n_rois``, ``n_cells``, ``median_npix``,
        ``failure_class``, ``failure_message``.
    """
    rows = label_dbconn.query(_ENTRIES_QUERY, {
        "experiment_ids": list(experiment_ids),
        "manifest_path": str(manifest_path) if manifest_path else None})
    for row in rows:
        row["manifest_index"] = int(row["manifest_index"])
        if row["segmentation_run_id"] is not None:
            row["status"] = DONE
        else:
            row["status"] = FAILED if row["failure_message"] is not None else MISSING
    return rows
