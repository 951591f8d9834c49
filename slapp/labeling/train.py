"""Train a cell classifier on labeling jobs' consensus labels: Suite2P's own file, and its row.

::

    python -m slapp.labeling.train --labeling_jobs JOB1 JOB2 \\
        --output_classifier classifier.npy [--feature_keys skew compact npix_norm] \\
        [--strategy majority --min_labels 3] [--output_json out.json]

The ROIs of the jobs that have a consensus label under the rule given
(``consolidate``'s strategy and ``min_labels``; a ROI in several jobs counts
once, with its best-supported consensus) and their stored features become
Suite2P's classifier file (:mod:`slapp.labeling.classifier_file`): loadable
by ``suite2p.classification.Classifier``, its GUI, and ``segment
--classifier_path``. Its quality is measured first by stratified k-fold
cross-validation of the same Suite2P model (fitted on k-1 folds, scored on the
held-out one), giving the accuracy and F1 of "cell" at probability 0.5.

One ``classifier_models`` row records the jobs, the rule, how many labels and
ROIs it learned from, the features, the cross-validated accuracy and F1, the
file's absolute path and SHA-256, the code version, and the folds, seed and
class counts (``details``). The file is written beside its destination and
put in place only after the row is committed. ``--output_json`` gives
``{"classifier_model_id", ...}``.
"""
import logging
import os
import sys
import warnings
from pathlib import Path

import marshmallow as mm
import numpy as np
from psycopg2 import sql as pgsql
from psycopg2.extras import Json

from slapp.errors import SlappError
from slapp.labeling.agreement import CELL, STRATEGIES
from slapp.labeling.classifier_file import (FEATURE_KEYS, MIN_TRAINING_ROIS, SUITE2P_KEYS,
                                            classifier_bytes, content_digest, load_classifier,
                                            predict_probabilities)
from slapp.labeling.job_labels import find_job
from slapp.utils.cli import run_main
from slapp.utils.code_version import code_label, code_version
from slapp.utils.files import stage_bytes, write_json_atomically
from slapp.utils.query_utils import DbConnection, labeling_connection
from slapp.utils.schema import ArgSchema, ArgSchemaParser, StrictInt

logger = logging.getLogger(__name__)


class TrainException(SlappError):
    """The labels cannot train a classifier as asked."""


class TrainSchema(ArgSchema):
    """Train Suite2P's classifier on consensus labels."""

    labeling_jobs = mm.fields.List(
        mm.fields.Str(), required=True, validate=mm.validate.Length(min=1),
        metadata={"description": "names of the labeling jobs whose consensus labels are "
                                 "learned (space-separated)"})
    output_classifier = mm.fields.Str(
        required=True, metadata={"description": "where Suite2P's classifier file (.npy) is "
                                                "written; its directory must exist"})
    strategy = mm.fields.Str(
        dump_default="majority", validate=mm.validate.OneOf(STRATEGIES),
        metadata={"description": "which consensus is learned: consolidate's strategy and "
                                 "default, so that one consolidate run is enough"})
    min_labels = StrictInt(
        dump_default=3, validate=mm.validate.Range(min=1),
        metadata={"description": "which consensus is learned: consolidate's min_labels and "
                                 "default"})
    feature_keys = mm.fields.List(
        mm.fields.Str(validate=mm.validate.OneOf(FEATURE_KEYS)),
        dump_default=list(SUITE2P_KEYS), validate=mm.validate.Length(min=1),
        metadata={"description": "ROI features (Suite2P stat names) the classifier uses. "
                                 "Default: the three Suite2P's pipeline classifies with, so "
                                 "that segment --classifier_path gives the probabilities "
                                 "predict stores; Suite2P's pipeline ignores any other key"})
    cv_folds = StrictInt(
        dump_default=5, validate=mm.validate.Range(min=2),
        metadata={"description": "folds of the cross-validation; 5 trains each fold on 80 "
                                 "percent of the ROIs. More are used when needed to give "
                                 "every training fold Suite2P's minimum of 100 ROIs"})
    random_seed = StrictInt(
        dump_default=0, metadata={"description": "seeds the assignment of ROIs to folds"})


class TrainOutputSchema(mm.Schema):
    """What ``--output_json`` holds."""

    classifier_model_id = mm.fields.Int(required=True)
    file_path = mm.fields.Str(required=True)
    file_digest = mm.fields.Str(required=True)
    labeling_job_ids = mm.fields.List(mm.fields.Int(), required=True)
    n_labels = mm.fields.Int(required=True)
    n_rois = mm.fields.Int(required=True)
    n_cells = mm.fields.Int(required=True)
    feature_keys = mm.fields.List(mm.fields.Str(), required=True)
    cv_accuracy = mm.fields.Float(required=True)
    cv_f1 = mm.fields.Float(required=True)
    cv_folds = mm.fields.Int(required=True)


def training_rows(dbconn: DbConnection, job_ids: list[int], strategy: str, min_labels: int,
                  keys: list[str]) -> list[dict]:
    """Each ROI with a consensus label in the jobs, with its features.

    A ROI in several jobs appears once, with the consensus of most labels (the
    newest among equals).

    Returns
    -------
    list of dict
        ``roi_id``, ``label``, ``n_labels`` and each key, ordered by ROI id.
    """
    query = pgsql.SQL("""
        SELECT DISTINCT ON (consensus.roi_id) consensus.roi_id, consensus.label,
               consensus.n_labels, {features}
        FROM label_consensus AS consensus
        JOIN labeling_tasks AS tasks ON tasks.id = consensus.labeling_task_id
        JOIN rois ON rois.id = consensus.roi_id
        WHERE tasks.labeling_job_id = ANY(%s) AND consensus.strategy = %s
          AND consensus.min_labels = %s AND consensus.label IS NOT NULL
        ORDER BY consensus.roi_id, consensus.n_labels DESC, consensus.created_at DESC
    """).format(features=pgsql.SQL(", ").join(
        pgsql.SQL("rois.{}").format(pgsql.Identifier(key)) for key in keys))
    return dbconn.query(query, (job_ids, strategy, min_labels))


def fold_assignment(iscell: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Stratified folds: each ROI's fold number, classes spread evenly, shuffled by ``seed``."""
    assignment = np.empty(len(iscell), dtype=int)
    rng = np.random.default_rng(seed)
    offset = 0
    for label in (0, 1):
        members = np.flatnonzero(iscell == label)
        rng.shuffle(members)
        assignment[members] = (np.arange(len(members)) + offset) % folds
        offset += len(members)
    return assignment


def folds_needed(n_rois: int, asked: int) -> int:
    """The fold count: ``asked``, or more so that each training part has 100 ROIs."""
    if n_rois <= MIN_TRAINING_ROIS:
        raise TrainException(
            f"{n_rois} labeled ROIs are too few to train and cross-validate Suite2P's "
            f"classifier: it needs more than {MIN_TRAINING_ROIS}")
    needed = int(np.ceil(n_rois / (n_rois - MIN_TRAINING_ROIS)))
    return min(max(asked, needed), n_rois)


def cross_validate(stats: np.ndarray, iscell: np.ndarray, keys: list[str], folds: int,
                   seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold probabilities of Suite2P's classifier, each fold fitted on the others.

    Returns
    -------
    probabilities, assignment : numpy.ndarray
        Each ROI's probability from the model that did not see it, and its fold.
    """
    assignment = fold_assignment(iscell, folds, seed)
    probabilities = np.zeros(len(iscell))
    for fold in range(folds):
        held_out = assignment == fold
        classifier = load_classifier(classifier_bytes(stats[~held_out], iscell[~held_out],
                                                      keys))
        probabilities[held_out] = predict_probabilities(classifier, stats[held_out], keys)
    return probabilities, assignment


def accuracy_and_f1(truth: np.ndarray, predicted: np.ndarray) -> tuple[float, float]:
    """Accuracy, and F1 of the "cell" class (0 when nothing is or is called a cell)."""
    truth, predicted = truth.astype(bool), predicted.astype(bool)
    true_positives = int((truth & predicted).sum())
    denominator = int(truth.sum() + predicted.sum())
    return float((truth == predicted).mean()), (2 * true_positives / denominator
                                                if denominator else 0.0)


def train(dbconn: DbConnection, job_names: list[str], output_classifier: str | Path,
          strategy: str = "majority", min_labels: int = 3,
          feature_keys: list[str] = SUITE2P_KEYS, cv_folds: int = 5,
          random_seed: int = 0) -> dict:
    """Train, write the classifier file and its ``classifier_models`` row.

    Parameters
    ----------
    dbconn : DbConnection
        The labeling database.
    job_names : list of str
        Labeling jobs whose consensus labels are learned.
    output_classifier : str or Path
        Destination of Suite2P's classifier file.
    strategy, min_labels : str, int
        The consensus rule (as ``consolidate`` wrote it).
    feature_keys : list of str
        Features, among :data:`slapp.labeling.classifier_file.FEATURE_KEYS`.
    cv_folds : int
        Cross-validation folds asked for (see :func:`folds_needed`).
    random_seed : int
        Seeds the folds.

    Returns
    -------
    dict
        As :class:`TrainOutputSchema` describes.
    """
    keys = list(dict.fromkeys(feature_keys))
    jobs = [find_job(dbconn, name) for name in dict.fromkeys(job_names)]
    job_ids = [job["id"] for job in jobs]
    rows = training_rows(dbconn, job_ids, strategy, min_labels, keys)
    if not rows:
        raise TrainException(
            f"no ROI of {', '.join(job['name'] for job in jobs)} has a {strategy} consensus "
            f"of at least {min_labels} labels: run slapp.labeling.consolidate first")
    complete = [row for row in rows if all(row[key] is not None for key in keys)]
    n_without = len(rows) - len(complete)
    if not complete:
        raise TrainException(
            f"none of the {len(rows)} labeled ROIs has stored {', '.join(keys)}: their runs "
            "were stored before segment kept Suite2P's features")
    if n_without:
        logger.warning("%d labeled ROIs have no stored %s (runs stored before the features "
                       "were kept) and are left out", n_without, "/".join(keys))
    stats = np.array([[row[key] for key in keys] for row in complete], dtype=np.float64)
    iscell = np.array([row["label"] == CELL for row in complete], dtype=np.float32)
    folds = folds_needed(len(complete), cv_folds)
    content = classifier_bytes(stats, iscell, keys)  # refuses data Suite2P cannot fit
    probabilities, assignment = cross_validate(stats, iscell, keys, folds, random_seed)
    cv_accuracy, cv_f1 = accuracy_and_f1(iscell, probabilities > 0.5)
    destination = Path(output_classifier).absolute()
    if not destination.parent.is_dir():
        raise TrainException(f"the directory of --output_classifier, {destination.parent}, "
                             "does not exist")
    digest = content_digest(content)
    n_labels = int(sum(row["n_labels"] for row in complete))
    details = {"cv_folds": folds, "random_seed": random_seed,
               "n_cells": int(iscell.sum()), "n_not_cells": int((iscell == 0).sum()),
               "n_rois_without_features": n_without, "threshold": 0.5,
               "fold_accuracy": [accuracy_and_f1(iscell[assignment == fold],
                                                 probabilities[assignment == fold] > 0.5)[0]
                                 for fold in range(folds)],
               "model": "Suite2P Classifier (100-node naive Bayes log-odds, logistic "
                        "regression C=100)",
               "job_names": [job["name"] for job in jobs]}
    staged = stage_bytes(destination, content)
    try:
        model_id = dbconn.insert(
            "INSERT INTO classifier_models (labeling_job_ids, strategy, n_labels, n_rois, "
            "feature_keys, cv_accuracy, cv_f1, file_path, file_digest, code_version, "
            "code_label, details) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
            "RETURNING id",
            (job_ids, strategy, n_labels, len(complete), keys, cv_accuracy, cv_f1,
             str(destination), digest, code_version(), code_label(), Json(details)))[0]["id"]
        os.replace(staged, destination)
    finally:
        staged.unlink(missing_ok=True)
    return {"classifier_model_id": model_id, "file_path": str(destination),
            "file_digest": digest, "labeling_job_ids": job_ids, "n_labels": n_labels,
            "n_rois": len(complete), "n_cells": int(iscell.sum()), "feature_keys": keys,
            "cv_accuracy": cv_accuracy, "cv_f1": cv_f1, "cv_folds": folds}


class Train(ArgSchemaParser):
    """``python -m slapp.labeling.train``: see the module docstring."""

    default_schema = TrainSchema
    default_output_schema = TrainOutputSchema

    def run(self, dbconn: DbConnection) -> dict:
        """Train, print one line and write ``--output_json``."""
        result = train(dbconn, self.args["labeling_jobs"], self.args["output_classifier"],
                       self.args["strategy"], self.args["min_labels"],
                       self.args["feature_keys"], self.args["cv_folds"],
                       self.args["random_seed"])
        print(f"classifier model {result['classifier_model_id']}: {result['n_rois']} ROIs "
              f"({result['n_cells']} cells, {result['n_labels']} labels), features "
              f"{', '.join(result['feature_keys'])}; {result['cv_folds']}-fold cross-validated "
              f"accuracy {result['cv_accuracy']:.3f}, F1 {result['cv_f1']:.3f}; "
              f"{result['file_path']}")
        if self.args.get("output_json"):
            write_json_atomically(self.args["output_json"], self.get_output_json(result))
        return result


def main() -> None:
    """Parse the command line, connect to the labeling database and train."""
    # space-separated lists (--labeling_jobs A B) are what argschema calls old-style
    warnings.filterwarnings("ignore", message=".*old-style command-line syntax",
                            category=FutureWarning)
    command = Train()
    with labeling_connection(interactive=True) as dbconn:
        command.run(dbconn)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_main(main, "train"))
