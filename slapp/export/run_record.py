"""Read one stored segmentation run, its selection and its ROIs from the labeling database.

The NWB export needs everything a run row records (settings, versions, movie
fingerprint, timings; read through :mod:`slapp.db.runs`) and the selection its
manifest was built from, so that the file can say how it was made. The
selection is the run's own (``segmentation_runs.experiment_selection_id``),
never guessed: a run stored before runs recorded it has none (unknown). ROIs
are read in batches of a fixed size into preallocated arrays: a 512 x 512
movie of 100,000 frames with 500 ROIs has 400 MB of traces, which as Python
lists of floats would take 3 GB. A classifier model's stored predictions
for the run's ROIs (:mod:`slapp.db.predictions`) are read beside them when
the export names a model.
"""
import base64
from dataclasses import dataclass

import numpy as np

from slapp.db import runs
from slapp.db.predictions import predictions_for_runs
from slapp.errors import SlappError
from slapp.utils.query_utils import DbConnection

# ROIs read per query: a batch of full-length traces of a long movie stays
# within tens of MB while a run of hundreds of ROIs needs only a few queries.
ROI_BATCH_SIZE = 64

SHAPE_COLUMNS = ("npix", "centroid_row", "centroid_col", "radius", "aspect_ratio",
                 "compactness", "skew")

_SELECTION_QUERY = """
SELECT id, created_at, base64_query_strings, slapp_commit_hash, sub_selection_counts,
       sub_selected_ids, random_seed, comment_string
FROM experiment_selection WHERE id = %s
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


@dataclass
class ModelPredictions:
    """A classifier model's stored predictions for a run's ROIs, in :class:`RunRois` order.

    Attributes
    ----------
    model : dict
        The ``classifier_models`` row.
    probability : numpy.ndarray
        float32 (n,): the model's probability that the ROI is a cell; NaN where
        the model has no stored prediction for the ROI.
    is_cell : numpy.ndarray
        bool (n,): the stored ``is_cell``; False where there is no prediction.
    """

    model: dict
    probability: np.ndarray
    is_cell: np.ndarray

    @property
    def n_predicted(self) -> int:
        """ROIs with a stored prediction."""
        return int(np.count_nonzero(~np.isnan(self.probability)))


def load_predictions(label_dbconn: DbConnection, model: dict, run: dict,
                     rois: RunRois) -> ModelPredictions:
    """A model's stored predictions for the ROIs of a run, aligned with ``rois``.

    Parameters
    ----------
    label_dbconn : DbConnection
        The labeling database.
    model : dict
        The ``classifier_models`` row
        (:func:`slapp.db.predictions.load_classifier_model`).
    run : dict
        From :func:`load_run`.
    rois : RunRois
        From :func:`load_rois`.

    Returns
    -------
    ModelPredictions
    """
    probability = np.full(len(rois.roi_ids), np.nan, np.float32)
    is_cell = np.zeros(len(rois.roi_ids), bool)
    position = {roi_id: index for index, roi_id in enumerate(rois.roi_ids.tolist())}
    for prediction in predictions_for_runs(label_dbconn, model["id"], [run["id"]]):
        index = position[prediction["roi_id"]]
        probability[index] = prediction["probability"]
        is_cell[index] = prediction["is_cell"]
    return ModelPredictions(model, probability, is_cell)


def load_run(label_dbconn: DbConnection, segmentation_run_id: int) -> dict:
    """Read one run (see :func:`slapp.db.runs.load_run`) as the export reads it.

    Parameters
    ----------
    label_dbconn : DbConnection
        The labeling database.
    segmentation_run_id : int
        ``segmentation_runs.id`` (current or superseded).

    Returns
    -------
    dict
        The row's columns and ``n_rois``.

    Raises
    ------
    slapp.db.runs.UnknownRunException
        If there is no such run.
    """
    run = runs.load_run(label_dbconn, segmentation_run_id)
    return {**run.columns, "n_rois": run.n_rois}


def load_selection(label_dbconn: DbConnection, run: dict,
                   experiment_selection_id: int | None = None) -> dict | None:
    """The selection a run came from, with its query strings decoded.

    Parameters
    ----------
    label_dbconn : DbConnection
        The labeling database.
    run : dict
        From :func:`load_run`.
    experiment_selection_id : int, optional
        Record this selection instead of the run's own; it must hold the
        run's experiment.

    Returns
    -------
    dict or None
        ``experiment_selection_id``, ``created_at`` (ISO text), ``query_strings``
        (decoded UTF-8), ``sub_selection_counts``, ``random_seed``,
        ``comment_string`` and ``slapp_commit_hash``; None when the run does not
        record its selection (stored before runs did) and none is given.

    Raises
    ------
    slapp.db.runs.RunsException
        If the selection given does not exist or does not hold the experiment.
    """
    if experiment_selection_id is not None:
        runs.check_selection_holds(label_dbconn, experiment_selection_id,
                                   run["ophys_experiment_id"])
    else:
        experiment_selection_id = run["experiment_selection_id"]
    if experiment_selection_id is None:
        return None
    row = label_dbconn.query(_SELECTION_QUERY, (experiment_selection_id,))[0]
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


def provenance(run: dict, selection: dict | None, exporter_version: str,
               predictions: ModelPredictions | None = None) -> dict:
    """Everything a reader needs to know how a run was made, as plain JSON values.

    Parameters
    ----------
    run : dict
        From :func:`load_run`.
    selection : dict or None
        From :func:`load_selection` (None: unknown).
    exporter_version : str
        The code version of the slapp that writes the export.
    predictions : ModelPredictions, optional
        The classifier model whose predictions the export shows.

    Returns
    -------
    dict
        Keys ``segmentation_run``, ``experiment_selection`` and ``exported_by``;
        with ``predictions``, also ``classifier_model``: the model's
        ``classifier_models`` row (id, labeling jobs, file digest, code
        version, ...) and ``n_predicted_rois``.
    """
    recorded = {key: value for key, value in run.items() if key != "n_rois"}
    recorded["segmentation_run_id"] = recorded.pop("id")
    recorded["created_at"] = run["created_at"].isoformat()
    if run.get("superseded_at") is not None:
        recorded["superseded_at"] = run["superseded_at"].isoformat()
    recorded["video_shape"] = list(run["video_shape"])
    recorded["n_rois"] = int(run["n_rois"])
    record = {"segmentation_run": recorded, "experiment_selection": selection,
              "exported_by": {"slapp_code_version": exporter_version}}
    if predictions is not None:
        model = dict(predictions.model)
        model["classifier_model_id"] = model.pop("id")
        model["created_at"] = model["created_at"].isoformat()
        record["classifier_model"] = {**model, "n_predicted_rois": predictions.n_predicted}
    return record
