"""The report's rows: each entry's state, as :mod:`slapp.db.runs` decides it, made flat.

The run that counts (the current run of the code version and parameters
asked about), the failure behind a failed entry (or one recorded after the
run), and the other-parameter runs beside it all come from
:mod:`slapp.db.runs`; this module only lays them out as the page and the
statistics read them. With a classifier model named, each run's row also
counts the ROIs the model has a stored prediction for and those it calls
cells (:mod:`slapp.db.predictions`).
"""
from slapp.db.runs import DONE, FAILED, MISSING, EntryState

__all__ = ["DONE", "FAILED", "MISSING", "report_entries", "RUN_FIELDS"]

# The run columns a row carries (None when the entry has no run).
RUN_FIELDS = ("created_at", "ophys_segmentation_commit_hash", "code_label", "parameters_digest",
              "nframes", "nbinned", "video_shape", "suite2p_version", "suite2p_settings",
              "total_seconds", "suite2p_seconds", "peak_rss_bytes", "hostname",
              "experiment_selection_id", "manifest_path")


def _prediction_counts(predictions: list[dict]) -> dict[int, tuple[int, int]]:
    """Run id -> (ROIs with a prediction, ROIs predicted cells)."""
    counts = {}
    for prediction in predictions:
        predicted, cells = counts.get(prediction["segmentation_run_id"], (0, 0))
        counts[prediction["segmentation_run_id"]] = (predicted + 1,
                                                     cells + bool(prediction["is_cell"]))
    return counts


def report_entries(states: list[EntryState],
                   predictions: list[dict] | None = None) -> list[dict]:
    """One row per entry: its state, its run's columns and figures, its failure.

    Parameters
    ----------
    states : list of EntryState
        From :mod:`slapp.db.runs`, in batch order.
    predictions : list of dict, optional
        A classifier model's stored predictions for the runs
        (:func:`slapp.db.predictions.predictions_for_runs`); None when no
        model is shown.

    Returns
    -------
    list of dict
        ``manifest_index``, ``experiment_id``, ``status``,
        ``segmentation_run_id``, the run's :data:`RUN_FIELDS`, ``n_rois``,
        ``n_cells``, ``median_npix`` (None without a run); ``failure_class``,
        ``failure_message``, ``failed_at``, ``failure_hostname``,
        ``failure_job`` (``"<job id> task <task id>"``, the scheduler ids that
        name the task's log; None outside a scheduler) and
        ``failure_manifest_path``, ``failure_log_path`` (None when not
        recorded); ``other_parameter_run_ids``;
        ``n_predicted_rois`` (ROIs of the run the model has a prediction for:
        None without a model or a run) and ``n_model_cells`` (those it calls
        cells: None also when it has no prediction for the run).
    """
    counts = _prediction_counts(predictions or [])
    rows = []
    for state in states:
        run, failure = state.run, state.failure
        row = {"manifest_index": state.manifest_index, "experiment_id": state.experiment_id,
               "status": state.status, "segmentation_run_id": state.segmentation_run_id,
               **{name: run.columns[name] if run else None for name in RUN_FIELDS},
               "n_rois": run.n_rois if run else None, "n_cells": run.n_cells if run else None,
               "median_npix": run.median_npix if run else None,
               "n_predicted_rois": (counts.get(run.segmentation_run_id, (0, 0))[0]
                                    if run and predictions is not None else None),
               "n_model_cells": (counts[run.segmentation_run_id][1]
                                 if run and run.segmentation_run_id in counts else None),
               "other_parameter_run_ids": [other.segmentation_run_id
                                           for other in state.other_parameter_runs]}
        row.update({
            "failure_class": failure.failure_class if failure else None,
            "failure_message": failure.message if failure else None,
            "failed_at": failure.created_at if failure else None,
            "failure_hostname": failure.hostname if failure else None,
            "failure_job": (f"{failure.scheduler_job_id} task {failure.scheduler_task_id}"
                            if failure and failure.scheduler_job_id else None),
            "failure_manifest_path": failure.manifest_path if failure else None,
            "failure_log_path": failure.log_path if failure else None,
        })
        rows.append(row)
    return rows
