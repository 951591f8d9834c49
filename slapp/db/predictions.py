"""A trained classifier's row and its stored predictions, as the commands that show them read them.

``predict`` writes ``roi_predictions``; ``report`` and ``export.nwb`` show a
model's predictions beside Suite2P's own classification. They read the model
and its predictions here, without importing the labeling commands.
"""
from slapp.errors import BadInputError
from slapp.utils.query_utils import DbConnection

_MODEL_QUERY = "SELECT * FROM classifier_models WHERE id = %s"

_PREDICTIONS_QUERY = """
SELECT rois.segmentation_run_id, rois.id AS roi_id, rois.suite2p_roi_index,
       predictions.probability, predictions.is_cell, predictions.threshold
FROM roi_predictions AS predictions
JOIN rois ON rois.id = predictions.roi_id
WHERE predictions.classifier_model_id = %s AND rois.segmentation_run_id = ANY(%s)
ORDER BY rois.segmentation_run_id, rois.suite2p_roi_index
"""


class UnknownModelException(BadInputError):
    """There is no classifier model with the id given."""


def load_classifier_model(dbconn: DbConnection, classifier_model_id: int) -> dict:
    """The ``classifier_models`` row of a model.

    Parameters
    ----------
    dbconn : DbConnection
        The labeling database.
    classifier_model_id : int
        ``classifier_models.id``.

    Returns
    -------
    dict
        Every column of the row.

    Raises
    ------
    UnknownModelException
        If there is no such model.
    """
    rows = dbconn.query(_MODEL_QUERY, (classifier_model_id,))
    if not rows:
        raise UnknownModelException(f"there is no classifier model with id "
                                    f"{classifier_model_id}")
    return rows[0]


def predictions_for_runs(dbconn: DbConnection, classifier_model_id: int,
                         run_ids: list[int]) -> list[dict]:
    """A model's stored predictions for the ROIs of runs, for reports and exports.

    Parameters
    ----------
    dbconn : DbConnection
        The labeling database.
    classifier_model_id : int
        ``classifier_models.id``.
    run_ids : list of int
        ``segmentation_runs.id`` values.

    Returns
    -------
    list of dict
        ``segmentation_run_id``, ``roi_id``, ``suite2p_roi_index``,
        ``probability``, ``is_cell`` and ``threshold`` of each predicted ROI,
        by run and Suite2P index; ROIs without a prediction are absent.
    """
    return dbconn.query(_PREDICTIONS_QUERY, (classifier_model_id, list(run_ids)))
