"""Read one stored segmentation run, its selection and its ROIs from the labeling database.

The NWB export needs everything a run row records (settings, versions, movie
fingerprint, timings) and the selection that chose its experiment, so that the
file can say how it was made. ROIs are read in batches of a fixed size into
preallocated arrays: a 512 x 512 movie of 100,000 frames with 500 ROIs has
400 MB of traces, which as Python lists of floats would take 3 GB.
"""
import base64
from dataclasses import dataclass

import numpy as np

from slapp.errors import SlappError
from slapp.utils.query_utils import DbConnection

# ROIs read per query: a batch of full-length traces of a long movie stays
# within tens of MB while a run of hundreds of ROIs needs only a few queries.
ROI_BATCH_SIZE = 64

SHAPE_COLUMNS = ("npix", "centroid_row", "centroid_col", "radius", "aspect_ratio",
                 "compactness", "skew")

_RUN_QUERY = """
SELECT id, created_at, ophys_experiment_id, ophys_segmentation_commit_hash, code_label,
       parameters_digest, source_video_path, movie_fingerprint, video_shape, nframes,
       nbinned, suite2p_version, suite2p_settings, frame_source, suite2p_seconds,
       total_seconds, stage_seconds, peak_rss_bytes, scratch_bytes, hostname,
       scheduler_job_id, scheduler_task_id,
       (SELECT count(*) FROM rois WHERE rois.segmentation_run_id = runs.id) AS n_rois
FROM segmentation_runs AS runs WHERE id = %s
"""

_SELECTION_QUERY = """
SELECT id, created_at, base64_query_strings, slapp_commit_hash, sub_selection_counts,
       sub_selected_ids, random_seed, comment_string
FROM experiment_selection
WHERE (%(selection_id)s::int IS NULL OR id = %(selection_id)s)
  AND %(experiment_id)s = ANY(sub_selected_ids)
ORDER BY id DESC LIMIT 1
"""

_ROI_BATCH_QUERY = """
SELECT id, suite2p_roi_index, coo_row, coo_col, coo_data, trace, neuropil_trace, is_cell,
       cell_probability, npix, centroid_row, centroid_col, radius, aspect_ratio,
       compactness, skew
FROM rois WHERE segmentation_run_id = %s AND suite2p_roi_index > %s
ORDER BY suite2p_roi_index LIMIT %s
"""


class RunRecordException(SlappError):
    """A stored run cannot be read as a whole."""


@dataclass
class RunRois:
    """Every ROI of a run, as arrays in Suite2P index order.

    Attributes
    ----------
    roi_ids : numpy.ndarray
        int64 (n,): ``rois.id``.
    suite2p_roi_index : numpy.ndarray
        int64 (n,): the index in Suite2P's ``stat.npy``.
    masks : list of tuple
        ``(rows, cols, weights)`` arrays of each ROI's COO mask.
    traces, neuropil_traces : numpy.ndarray
        float32 (frames, n): raw and neuropil fluorescence.
    is_cell : numpy.ndarray
        bool (n,).
    cell_probability : numpy.ndarray
        float32 (n,).
    shape : dict
        :data:`SHAPE_COLUMNS` name -> (n,) array.
    """

    roi_ids: np.ndarray
    suite2p_roi_index: np.ndarray
    masks: list
    traces: np.ndarray
    neuropil_traces: np.ndarray
    is_cell: np.ndarray
    cell_probability: np.ndarray
    shape: dict


def load_run(label_dbconn: DbConnection, segmentation_run_id: int) -> dict:
    """Read one ``segmentation_runs`` row and its ROI count.

    Parameters
    ----------
    label_dbconn : DbConnection
        The labeling database.
    segmentation_run_id : int
        ``segmentation_runs.id``.

    Returns
    -------
    dict
        The row's columns and ``n_rois``.

    Raises
    ------
    RunRecordException
        If there is no such run.
    """
    rows = label_dbconn.query(_RUN_QUERY, (segmentation_run_id,))
    if not rows:
        raise RunRecordException(f"there is no segmentation run with id {segmentation_run_id}")
    return rows[0]


def load_selection(label_dbconn: DbConnection, experiment_id: int,
                   experiment_selection_id: int | None = None) -> dict | None:
    """The selection that chose an experiment, with its query strings decoded.

    Parameters
    ----------
    label_dbconn : DbConnection
        The labeling database.
    experiment_id : int
        The experiment the selection must hold in ``sub_selected_ids``.
    experiment_selection_id : int, optional
        This selection; without it, the newest selection that holds the experiment.

    Returns
    -------
    dict or None
        ``experiment_selection_id``, ``created_at`` (ISO text), ``query_strings``
        (decoded UTF-8), ``sub_selection_counts``, ``random_seed``,
        ``comment_string`` and ``slapp_commit_hash``; None when no selection holds
        the experiment.
    """
    rows = label_dbconn.query(_SELECTION_QUERY, {"selection_id": experiment_selection_id,
                                                 "experiment_id": experiment_id})
    if not rows:
        return None
    row = rows[0]
    return {"experiment_selection_id": row["id"],
            "created_at": row["created_at"].isoformat(),
            "query_strings": [base64.b64decode(text).decode("utf-8")
                              for text in row["base64_query_strings"]],
            "sub_selection_counts": row["sub_selection_counts"],
            "random_seed": row["random_seed"],
            "comment_string": row["comment_string"],
            "slapp_commit_hash": row["slapp_commit_hash"]}


def load_rois(label_dbconn: DbConnection, run: dict,
              batch_size: int = ROI_BATCH_SIZE) -> RunRois:
    """Read every ROI of a run, ``batch_size`` ROIs per query.

    Parameters
    ----------
    label_dbconn : DbConnection
        The labeling database.
    run : dict
        From :func:`load_run` (``id``, ``n_rois``, ``nframes`` are used).
    batch_size : int
        ROIs per query.

    Returns
    -------
    RunRois

    Raises
    ------
    RunRecordException
        If a ROI's trace length differs from the run's frame count.
    """
    n_rois, nframes = int(run["n_rois"]), int(run["nframes"])
    rois = RunRois(roi_ids=np.zeros(n_rois, np.int64),
                   suite2p_roi_index=np.zeros(n_rois, np.int64), masks=[],
                   traces=np.zeros((nframes, n_rois), np.float32),
                   neuropil_traces=np.zeros((nframes, n_rois), np.float32),
                   is_cell=np.zeros(n_rois, bool), cell_probability=np.zeros(n_rois, np.float32),
                   shape={name: np.zeros(n_rois, np.float64) for name in SHAPE_COLUMNS})
    position, last_index = 0, -1
    while position < n_rois:
        batch = label_dbconn.query(_ROI_BATCH_QUERY, (run["id"], last_index, batch_size))
        if not batch:
            break
        for row in batch:
            _fill_roi(rois, position, row, nframes)
            position += 1
        last_index = batch[-1]["suite2p_roi_index"]
    if position != n_rois:
        raise RunRecordException(f"segmentation run {run['id']} changed while it was read")
    return rois


def _fill_roi(rois: RunRois, position: int, row: dict, nframes: int) -> None:
    if len(row["trace"]) != nframes or len(row["neuropil_trace"]) != nframes:
        raise RunRecordException(
            f"ROI {row['id']} has {len(row['trace'])} trace values but its run has "
            f"{nframes} frames")
    rois.roi_ids[position] = row["id"]
    rois.suite2p_roi_index[position] = row["suite2p_roi_index"]
    rois.masks.append((np.asarray(row["coo_row"], np.int64),
                       np.asarray(row["coo_col"], np.int64),
                       np.asarray(row["coo_data"], np.float32)))
    rois.traces[:, position] = row["trace"]
    rois.neuropil_traces[:, position] = row["neuropil_trace"]
    rois.is_cell[position] = row["is_cell"]
    rois.cell_probability[position] = row["cell_probability"]
    for name in SHAPE_COLUMNS:
        rois.shape[name][position] = row[name]


def recorded_rate(run: dict) -> float:
    """The frame rate Suite2P was told, from the run's recorded settings.

    Parameters
    ----------
    run : dict
        From :func:`load_run`.

    Returns
    -------
    float
        ``fs`` in Hz.

    Raises
    ------
    RunRecordException
        If the settings hold no positive ``fs``.
    """
    settings = run["suite2p_settings"] or {}
    fs = (settings.get("settings") or {}).get("fs", settings.get("fs"))
    if not isinstance(fs, (int, float)) or isinstance(fs, bool) or fs <= 0:
        raise RunRecordException(
            f"segmentation run {run['id']} records no frame rate (suite2p_settings "
            f"'settings.fs'), so its traces have no time base")
    return float(fs)


def provenance(run: dict, selection: dict | None, exporter_version: str) -> dict:
    """Everything a reader needs to know how a run was made, as plain JSON values.

    Parameters
    ----------
    run : dict
        From :func:`load_run`.
    selection : dict or None
        From :func:`load_selection`.
    exporter_version : str
        The code version of the slapp that writes the export.

    Returns
    -------
    dict
        Keys ``segmentation_run``, ``experiment_selection`` and ``exported_by``.
    """
    recorded = {key: value for key, value in run.items() if key != "n_rois"}
    recorded["segmentation_run_id"] = recorded.pop("id")
    recorded["created_at"] = run["created_at"].isoformat()
    recorded["video_shape"] = list(run["video_shape"])
    recorded["n_rois"] = int(run["n_rois"])
    return {"segmentation_run": recorded, "experiment_selection": selection,
            "exported_by": {"slapp_code_version": exporter_version}}
