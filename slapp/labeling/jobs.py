"""Labeling jobs in the database: draw the ROIs of some runs once, as ``labeling_tasks``.

A job is known by its name. Its *inputs* (the runs, the sampling and its
settings) are stored with a digest: asking again for a job of the same name and
the same inputs finds the job that exists; the same name with other inputs is
refused, so a name always means one set of tasks. The job row and all its tasks
are written in one transaction; two processes creating the same job at once
end with one job (the name is unique).
"""
import hashlib
import json
import logging
from dataclasses import dataclass

import psycopg2.extras

from slapp.errors import SlappError
from slapp.labeling.sampling import STRATIFIED, UNCERTAIN, Candidate, draw

logger = logging.getLogger(__name__)

_RUNS = "SELECT id FROM segmentation_runs WHERE id = ANY(%s)"

_CANDIDATES = """
SELECT rois.id AS roi_id, runs.ophys_experiment_id AS experiment_id,
       rois.cell_probability AS probability
FROM rois JOIN segmentation_runs AS runs ON runs.id = rois.segmentation_run_id
WHERE runs.id = ANY(%s)
"""

_NEWEST_MODEL = "SELECT id FROM classifier_models ORDER BY created_at DESC, id DESC LIMIT 1"

_PREDICTIONS = """
SELECT roi_id, probability FROM roi_predictions
WHERE classifier_model_id = %s AND roi_id = ANY(%s)
"""

_INSERT_JOB = """
INSERT INTO labeling_jobs (name, labels_per_roi, sampling, random_seed, n_rois,
                           segmentation_run_ids, classifier_model_id, inputs, inputs_digest)
VALUES (%(name)s, %(labels_per_roi)s, %(sampling)s, %(random_seed)s, %(n_rois)s,
        %(segmentation_run_ids)s, %(classifier_model_id)s, %(inputs)s, %(inputs_digest)s)
ON CONFLICT (name) DO NOTHING
RETURNING id
"""

_FIND_JOB = """
SELECT jobs.id, jobs.inputs_digest,
       (SELECT count(*) FROM labeling_tasks WHERE labeling_job_id = jobs.id) AS n_tasks
FROM labeling_jobs AS jobs WHERE jobs.name = %s
"""

_INSERT_TASKS = """
INSERT INTO labeling_tasks (labeling_job_id, roi_id, stratum, probability) VALUES %s
"""


class LabelingJobException(SlappError):
    """A labeling job cannot be created as asked."""


@dataclass(frozen=True)
class JobOutcome:
    """The job's id and task count; ``created`` is False when it existed already."""

    labeling_job_id: int
    n_tasks: int
    created: bool


def inputs_digest(inputs: dict) -> str:
    """SHA-256 of the inputs as canonical JSON (sorted keys): what makes two jobs one."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode("utf-8")).hexdigest()


def _candidates(dbconn, run_ids: list[int], sampling: str) -> tuple[list[Candidate], int | None]:
    """The runs' ROIs with the probability the sampling reads, and the model read (if any)."""
    rows = dbconn.query(_CANDIDATES, (run_ids,))
    if sampling != UNCERTAIN:
        return [Candidate(**row) for row in rows], None
    models = dbconn.query(_NEWEST_MODEL)
    if not models:
        raise LabelingJobException("sampling 'uncertain' needs a trained classifier, and "
                                   "classifier_models has none yet: use another sampling")
    model_id = models[0]["id"]
    predicted = {row["roi_id"]: row["probability"]
                 for row in dbconn.query(_PREDICTIONS, (model_id, [row["roi_id"]
                                                                   for row in rows]))}
    return [Candidate(row["roi_id"], row["experiment_id"], predicted.get(row["roi_id"]))
            for row in rows], model_id


def create_job(dbconn, name: str, run_ids: list[int], sampling: str, n_rois: int | None,
               labels_per_roi: int, random_seed: int, strata: int,
               source: dict | None = None) -> JobOutcome:
    """Create the labeling job ``name`` over the ROIs of ``run_ids``, or find it.

    Parameters
    ----------
    dbconn : slapp.utils.query_utils.DbConnection
        The labeling database.
    name : str
        The job's unique name.
    run_ids : list of int
        ``segmentation_runs.id`` of the runs whose ROIs are drawn from.
    sampling : str
        One of :data:`slapp.labeling.sampling.SAMPLINGS`.
    n_rois : int or None
        At most this many tasks.
    labels_per_roi : int
        How many labelers judge each ROI.
    random_seed : int
        Seeds the draw.
    strata : int
        Bins of the probability for ``stratified``.
    source : dict, optional
        Where the runs came from (a manifest and its options, a selection),
        recorded in ``inputs`` beside the runs.

    Returns
    -------
    JobOutcome

    Raises
    ------
    LabelingJobException
        If a run does not exist, the runs have no ROI to draw, ``uncertain`` has
        no classifier, or a job of this name exists with other inputs.
    """
    run_ids = sorted(set(run_ids))
    found = {row["id"] for row in dbconn.query(_RUNS, (run_ids,))}
    missing = [run_id for run_id in run_ids if run_id not in found]
    if missing:
        raise LabelingJobException(
            f"no segmentation run {', '.join(map(str, missing))} in the labeling database")
    inputs = {"segmentation_run_ids": run_ids, "sampling": sampling, "n_rois": n_rois,
              "labels_per_roi": labels_per_roi, "random_seed": random_seed}
    if sampling == STRATIFIED:
        inputs["strata"] = strata
    digest = inputs_digest(inputs)
    existing = _existing(dbconn, name, digest)
    if existing is not None:
        return existing
    candidates, model_id = _candidates(dbconn, run_ids, sampling)
    drawn = draw(candidates, sampling, n_rois, random_seed, strata)
    if not drawn:
        raise LabelingJobException(
            f"runs {', '.join(map(str, run_ids))} have no ROI for sampling {sampling!r} "
            "to draw: no job created")
    row = {"name": name, "labels_per_roi": labels_per_roi, "sampling": sampling,
           "random_seed": random_seed, "n_rois": n_rois, "segmentation_run_ids": run_ids,
           "classifier_model_id": model_id, "inputs_digest": digest,
           "inputs": psycopg2.extras.Json({**inputs, **({"source": source} if source else {}),
                                           "classifier_model_id": model_id})}
    with dbconn.transaction() as cursor:
        cursor.execute(_INSERT_JOB, row)
        inserted = cursor.fetchone()
        if inserted is not None:
            psycopg2.extras.execute_values(
                cursor, _INSERT_TASKS,
                [(inserted["id"], task.roi_id, task.stratum, task.probability)
                 for task in drawn], page_size=1000)
    if inserted is None:  # another process created the job meanwhile
        return _existing(dbconn, name, digest)
    logger.info("labeling job %d %r: %d tasks drawn by %s from runs %s", inserted["id"], name,
                len(drawn), sampling, run_ids)
    return JobOutcome(inserted["id"], len(drawn), True)


def _existing(dbconn, name: str, digest: str) -> JobOutcome | None:
    rows = dbconn.query(_FIND_JOB, (name,))
    if not rows:
        return None
    if rows[0]["inputs_digest"] != digest:
        raise LabelingJobException(
            f"labeling job {name!r} exists (id {rows[0]['id']}) with other inputs: choose "
            "another name, or ask with the inputs it was created with")
    return JobOutcome(rows[0]["id"], int(rows[0]["n_tasks"]), False)
