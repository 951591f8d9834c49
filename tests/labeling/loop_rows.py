"""Labeling jobs, labelers, labels and ROI features written with SQL for the loop tests
(consolidate, train, predict, Ground Truth); the fixture is imported by those modules."""
import json

import numpy as np
import pytest
from stored_runs import insert_run, random_masks

FEATURES = ("skew", "npix_norm", "std", "footprint", "npix_soma", "solidity")


def insert_features(dbconn, run_id, is_cell, seed=0):
    """Give each ROI of a run features that tell cells from the rest (with overlap).

    Returns the features as a dict ROI id -> {key: value}, compact and radius and
    aspect_ratio included (as stored).
    """
    rng = np.random.default_rng(seed)
    rois = dbconn.query("SELECT id FROM rois WHERE segmentation_run_id = %s "
                        "ORDER BY suite2p_roi_index", (run_id,))
    statements = []
    for row, cell in zip(rois, is_cell):
        shift = 1.0 if cell else 0.0
        statements.append((
            "UPDATE rois SET skew = %s, compactness = %s, npix_norm = %s, std = %s, "
            "footprint = %s, npix_soma = %s, solidity = %s, radius = %s, aspect_ratio = %s "
            "WHERE id = %s",
            (float(rng.normal(1.0 + 1.5 * shift, 0.8)), float(rng.normal(1.4 - 0.3 * shift, 0.15)),
             float(rng.normal(1.0, 0.3)), float(rng.normal(20 + 10 * shift, 5)),
             float(rng.normal(1.0, 0.3)), int(rng.integers(30, 120)),
             float(rng.uniform(0.6, 1.0)), float(rng.normal(5, 1)),
             float(rng.uniform(1.0, 1.6)), row["id"])))
    dbconn.bulk_insert(statements)
    return {row["id"]: row for row in dbconn.query(
        "SELECT id, skew, compact, npix_norm, std, footprint, npix_soma, solidity, radius, "
        "aspect_ratio FROM rois WHERE segmentation_run_id = %s", (run_id,))}


def make_run(dbconn, experiment_id, n_rois, seed=0, features=True):
    """A run of ``n_rois`` ROIs, two in five of them true cells; returns (run id, truth)."""
    rng = np.random.default_rng(seed)
    truth = rng.uniform(size=n_rois) < 0.4
    run_id = insert_run(dbconn, experiment_id, random_masks(rng, (64, 64), n_rois),
                        video_shape=(64, 64), seed=seed, is_cell=rng.uniform(size=n_rois) < 0.5)
    if features:
        insert_features(dbconn, run_id, truth, seed)
    return run_id, truth


def make_job(dbconn, name, roi_ids, labels_per_roi=3, sampling="random"):
    """A labeling job with one task per ROI; returns (job id, {roi id: task id})."""
    job_id = dbconn.insert(
        "INSERT INTO labeling_jobs (name, labels_per_roi, sampling, random_seed, n_rois, "
        "segmentation_run_ids, inputs, inputs_digest) VALUES (%s, %s, %s, 0, %s, '{}', %s, "
        "'digest') RETURNING id",
        (name, labels_per_roi, sampling, len(roi_ids), json.dumps({"test": name})))[0]["id"]
    tasks = {}
    for roi_id in roi_ids:
        tasks[roi_id] = dbconn.insert(
            "INSERT INTO labeling_tasks (labeling_job_id, roi_id) VALUES (%s, %s) RETURNING id",
            (job_id, roi_id))[0]["id"]
    return job_id, tasks


def make_labeler(dbconn, name):
    """A labeler who signs in (a token hash); returns the id."""
    return dbconn.insert("INSERT INTO labelers (name, token_hash) VALUES (%s, %s) RETURNING id",
                         (name, f"hash-{name}"))[0]["id"]


def add_labels(dbconn, task_id, labels, source="page"):
    """Labels of one task: ``labels`` maps labeler id -> 'cell' / 'not cell' / None."""
    dbconn.bulk_insert([
        ("INSERT INTO roi_labels (labeling_task_id, labeler_id, label, source) "
         "VALUES (%s, %s, %s, %s)", (task_id, labeler_id, label, source))
        for labeler_id, label in labels.items()])


@pytest.fixture
def labeled_job(labeling_db):
    """A 150-ROI run and a job whose three labelers label every ROI; a few mistakes.

    Returns a dict with run_id, job name, truth (ROI id -> bool) and labeler ids.
    """
    run_id, truth = make_run(labeling_db, 850000001, 150, seed=1)
    roi_ids = [row["id"] for row in labeling_db.query(
        "SELECT id FROM rois WHERE segmentation_run_id = %s ORDER BY suite2p_roi_index",
        (run_id,))]
    _, tasks = make_job(labeling_db, "training job", roi_ids)
    labelers = [make_labeler(labeling_db, name) for name in ("ann", "bob", "cy")]
    rng = np.random.default_rng(2)
    statements = []
    for roi_id, cell in zip(roi_ids, truth):
        for labeler_id in labelers:
            said = cell != (rng.uniform() < 0.1)
            statements.append(("INSERT INTO roi_labels (labeling_task_id, labeler_id, label) "
                               "VALUES (%s, %s, %s)",
                               (tasks[roi_id], labeler_id, "cell" if said else "not cell")))
    labeling_db.bulk_insert(statements)
    return {"run_id": run_id, "job": "training job", "roi_ids": roi_ids,
            "truth": dict(zip(roi_ids, truth)), "labelers": labelers, "tasks": tasks}
