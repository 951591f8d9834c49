"""Store a trained classifier's probability for every ROI of segmentation runs.

::

    python -m slapp.labeling.predict --classifier_model_id 3 --segmentation_run_id 17 \\
        [--threshold 0.5] [--output_json out.json]
    python -m slapp.labeling.predict --classifier_model_id 3 --manifest_json manifest.json
    python -m slapp.labeling.predict --classifier_model_id 3 --experiment_selection_id 5

The runs are one run, or the runs that count (:mod:`slapp.db.runs`) for the
entries of a segmentation manifest or the experiments of a selection, under
this code version and the Suite2P options given (segment's, with its
defaults); entries without such a run are counted and skipped.

The model's classifier file (``classifier_models.file_path``) must still have
the digest recorded when it was trained; Suite2P's own ``Classifier`` loads it
and computes each ROI's probability from the ROI's stored features
(:mod:`slapp.labeling.classifier_file`), exactly as Suite2P would. Each
probability is written to ``roi_predictions`` with ``is_cell`` = probability
above ``--threshold``. A ROI has one prediction per model: running the command
again stores nothing new (a different ``--threshold`` then changes nothing
either; the stored threshold is kept beside each row). ROIs whose features
were not stored (runs from before the features were kept) are counted and
left out.
"""
import logging
import sys
from pathlib import Path

import argschema
import marshmallow as mm
import numpy as np
from psycopg2 import sql as pgsql
from psycopg2.extras import execute_values

from slapp.db.predictions import load_classifier_model, predictions_for_runs
from slapp.db.runs import (RunParameters, RunParametersSchema, counted_runs,
                           counted_runs_of_selection)
from slapp.errors import SlappError
from slapp.labeling.classifier_file import (ClassifierFileException, file_digest,
                                            load_classifier, predict_probabilities)
from slapp.utils.cli import run_main
from slapp.utils.files import write_json_atomically
from slapp.utils.query_utils import DbConnection, labeling_connection
from slapp.utils.schema import ArgSchema, ArgSchemaParser, StrictInt

logger = logging.getLogger(__name__)

INSERT_PREDICTIONS = """
INSERT INTO roi_predictions (roi_id, classifier_model_id, probability, is_cell, threshold)
VALUES %s
ON CONFLICT ON CONSTRAINT one_prediction_per_roi_and_model DO NOTHING
RETURNING roi_id
"""


class PredictException(SlappError):
    """The predictions cannot be made as asked."""


RUN_OPTIONS = ("segmentation_run_id", "manifest_json", "experiment_selection_id")


class PredictSchema(ArgSchema, RunParametersSchema):
    """Store a trained classifier's predictions for runs' ROIs."""

    classifier_model_id = StrictInt(
        required=True, metadata={"description": "classifier_models.id, as train printed it"})
    segmentation_run_id = StrictInt(
        metadata={"description": "segmentation_runs.id whose ROIs are classified"})
    manifest_json = argschema.fields.InputFile(
        metadata={"description": "classify the counted runs of this segmentation manifest's "
                                 "entries (with the Suite2P options given)"})
    experiment_selection_id = StrictInt(
        metadata={"description": "classify the counted runs of this selection's experiments "
                                 "(with the Suite2P options given)"})
    threshold = mm.fields.Float(
        dump_default=0.5, validate=mm.validate.Range(min=0, max=1),
        metadata={"description": "a ROI is a cell when its probability is above this; 0.5, "
                                 "as Suite2P's own classification"})

    @mm.validates_schema
    def one_source_of_runs(self, data, **kwargs):
        """Exactly one of the three ways to name the runs."""
        if sum(name in data for name in RUN_OPTIONS) != 1:
            raise mm.ValidationError("give one of --" + ", --".join(RUN_OPTIONS))


class PredictOutputSchema(mm.Schema):
    """What ``--output_json`` holds."""

    classifier_model_id = mm.fields.Int(required=True)
    segmentation_run_ids = mm.fields.List(mm.fields.Int(), required=True)
    n_rois = mm.fields.Int(required=True, metadata={
        "description": "ROIs of the runs with features, each predicted"})
    n_stored = mm.fields.Int(required=True, metadata={
        "description": "predictions written now (the rest were stored before)"})
    n_cells = mm.fields.Int(required=True, metadata={
        "description": "ROIs whose stored prediction calls them cells"})
    n_without_features = mm.fields.Int(required=True)
    n_entries_not_done = mm.fields.Int(metadata={
        "description": "manifest entries or selected experiments without a counted run"})


def find_model(dbconn: DbConnection, classifier_model_id: int) -> dict:
    """The ``classifier_models`` row, its file checked against the recorded digest."""
    model = load_classifier_model(dbconn, classifier_model_id)
    path = Path(model["file_path"])
    if not path.is_file():
        raise PredictException(f"classifier model {classifier_model_id}'s file {path} does "
                               "not exist")
    if file_digest(path) != model["file_digest"]:
        raise PredictException(f"classifier model {classifier_model_id}'s file {path} changed "
                               "since it was trained (its SHA-256 differs)")
    return model


def roi_features(dbconn: DbConnection, run_ids: list[int], keys: list[str]) -> list[dict]:
    """``id``, ``segmentation_run_id`` and the features ``keys`` of every ROI of the runs."""
    query = pgsql.SQL("SELECT id, segmentation_run_id, {} FROM rois "
                      "WHERE segmentation_run_id = ANY(%s) ORDER BY id").format(
        pgsql.SQL(", ").join(map(pgsql.Identifier, keys)))
    return dbconn.query(query, (run_ids,))


def predict(dbconn: DbConnection, classifier_model_id: int, run_ids: list[int],
            threshold: float = 0.5) -> dict:
    """Compute and store the model's predictions for every ROI of the runs.

    Parameters
    ----------
    dbconn : DbConnection
        The labeling database.
    classifier_model_id : int
        ``classifier_models.id``.
    run_ids : list of int
        ``segmentation_runs.id`` values.
    threshold : float
        ``is_cell`` is probability above it.

    Returns
    -------
    dict
        As :class:`PredictOutputSchema` describes.
    """
    model = find_model(dbconn, classifier_model_id)
    found = {row["id"] for row in dbconn.query(
        "SELECT id FROM segmentation_runs WHERE id = ANY(%s)", (run_ids,))}
    missing = [run_id for run_id in run_ids if run_id not in found]
    if missing:
        raise PredictException(f"there is no segmentation run with id {missing[0]}")
    keys = list(model["feature_keys"])
    try:
        classifier = load_classifier(model["file_path"])
    except ClassifierFileException as error:
        raise PredictException(str(error)) from error
    rows = roi_features(dbconn, run_ids, keys)
    complete = [row for row in rows if all(row[key] is not None for key in keys)]
    if len(complete) < len(rows):
        logger.warning("%d ROIs have no stored %s and get no prediction",
                       len(rows) - len(complete), "/".join(keys))
    features = np.array([[row[key] for key in keys] for row in complete], dtype=np.float64)
    probabilities = predict_probabilities(classifier, features.reshape(len(complete), len(keys)),
                                          keys)
    stored = []
    if complete:
        with dbconn.transaction() as cursor:
            stored = execute_values(cursor, INSERT_PREDICTIONS, [
                (row["id"], classifier_model_id, float(probability),
                 bool(probability > threshold), threshold)
                for row, probability in zip(complete, probabilities)],
                fetch=True, page_size=1000)
    predictions = predictions_for_runs(dbconn, classifier_model_id, run_ids)
    return {"classifier_model_id": classifier_model_id, "segmentation_run_ids": run_ids,
            "n_rois": len(complete), "n_stored": len(stored),
            "n_cells": sum(prediction["is_cell"] for prediction in predictions),
            "n_without_features": len(rows) - len(complete)}


class Predict(ArgSchemaParser):
    """``python -m slapp.labeling.predict``: see the module docstring."""

    default_schema = PredictSchema
    default_output_schema = PredictOutputSchema

    def run_ids(self, dbconn: DbConnection) -> tuple[list[int], int]:
        """The runs asked for, and how many entries or experiments have none."""
        if "segmentation_run_id" in self.args:
            return [self.args["segmentation_run_id"]], 0
        parameters = RunParameters.from_args(self.args)
        if "manifest_json" in self.args:
            counted = counted_runs(dbconn, self.args["manifest_json"], parameters)
        else:
            counted = list(counted_runs_of_selection(
                dbconn, self.args["experiment_selection_id"], parameters).values())
        found = [run_id for run_id in counted if run_id is not None]
        if not found:
            raise PredictException(f"none of the {len(counted)} entries has a run of this "
                                   f"code version and these parameters "
                                   f"({parameters.description()})")
        return list(dict.fromkeys(found)), len(counted) - len(found)

    def run(self, dbconn: DbConnection) -> dict:
        """Predict, print one line and write ``--output_json``."""
        run_ids, not_done = self.run_ids(dbconn)
        result = predict(dbconn, self.args["classifier_model_id"], run_ids,
                         self.args["threshold"])
        result["n_entries_not_done"] = not_done
        if not_done:
            print(f"{not_done} entries have no counted run and are skipped")
        print(f"classifier model {result['classifier_model_id']} on run(s) "
              f"{', '.join(map(str, result['segmentation_run_ids']))}: {result['n_rois']} ROIs, "
              f"{result['n_cells']} cells; {result['n_stored']} predictions stored now, "
              f"{result['n_rois'] - result['n_stored']} were stored before"
              + (f"; {result['n_without_features']} ROIs without features"
                 if result["n_without_features"] else ""))
        if self.args.get("output_json"):
            write_json_atomically(self.args["output_json"], self.get_output_json(result))
        return result


def main() -> None:
    """Parse the command line, connect to the labeling database and predict."""
    command = Predict()
    with labeling_connection(interactive=True) as dbconn:
        command.run(dbconn)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_main(main, "predict"))
