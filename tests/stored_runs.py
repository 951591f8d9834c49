"""Write selections, segmentation runs, ROIs and failures into the labeling database with SQL.

The tests of the readers of these tables (NWB export, report, run comparison)
build their rows here, with every column of the schema, so they do not depend
on how the segment step fills them.
"""
import base64
import json

import numpy as np
from psycopg2 import sql as pgsql

SETTINGS = {"db": {"data_path": ["/movies"], "nchannels": 1},
            "settings": {"fs": 31.0, "tau": 0.7, "diameter": [14, 14],
                         "detection": {"threshold_scaling": 0.75, "nbins": 136}}}


def insert_selection(dbconn, experiment_ids, queries=("SELECT 1 AS exp_id",), seed=42) -> int:
    """One experiment_selection row holding ``experiment_ids``; returns its id."""
    encoded = [base64.b64encode(query.encode("utf-8")).decode("ascii") for query in queries]
    counts = [len(experiment_ids)] + [0] * (len(queries) - 1)
    rows = [list(experiment_ids)] + [[None] * len(experiment_ids)] * (len(queries) - 1)
    return dbconn.insert(
        "INSERT INTO experiment_selection (base64_query_strings, slapp_commit_hash, "
        "ophys_experiment_ids, sub_selection_counts, sub_selected_ids, random_seed, "
        "comment_string) VALUES (%s, 'selcommit', %s, %s, %s, %s, 'test selection') "
        "RETURNING id", (encoded, rows, counts, list(experiment_ids), seed))[0]["id"]


def random_masks(rng, shape, n_rois, radius=3):
    """``n_rois`` weighted disk masks as (rows, cols, weights) inside ``shape``."""
    masks = []
    for _ in range(n_rois):
        centre = rng.integers(radius, np.array(shape) - radius)
        rows, cols = np.mgrid[-radius:radius + 1, -radius:radius + 1]
        inside = rows ** 2 + cols ** 2 <= radius ** 2
        rows, cols = rows[inside] + centre[0], cols[inside] + centre[1]
        masks.append((rows, cols, rng.uniform(0.1, 1.0, len(rows)).astype(np.float32)))
    return masks


def insert_run(dbconn, experiment_id, masks, *, nframes=50, video_shape=(32, 48),
               is_cell=None, seed=0, **columns) -> int:
    """A segmentation_runs row with every column, and one rois row per mask.

    ``masks`` are (rows, cols, weights); traces are random (seeded). Keyword
    ``columns`` override run columns. Returns the run id.
    """
    rng = np.random.default_rng(seed)
    run = {"ophys_experiment_id": experiment_id,
           "ophys_segmentation_commit_hash": f"commit{seed}", "code_label": "0.1.0 (abc123)",
           "parameters_digest": f"digest{seed}", "source_video_path": "/movies/movie.h5",
           "movie_fingerprint": json.dumps({"size": 1234, "shape": [nframes, *video_shape],
                                            "sampled_sha256": "ab" * 32}),
           "video_shape": list(video_shape), "nframes": nframes, "nbinned": 2,
           "suite2p_version": "1.1.0", "suite2p_settings": json.dumps(SETTINGS),
           "frame_source": "hdf5_stream", "suite2p_seconds": 4.5, "total_seconds": 6.0,
           "stage_seconds": json.dumps({"read_and_bin": 1.0, "detection": 2.0,
                                        "extraction": 1.0, "classification": 0.5,
                                        "database_write": 0.25}),
           "peak_rss_bytes": 512 * 2 ** 20, "scratch_bytes": 2 ** 20, "hostname": "node7",
           "scheduler_job_id": "4242", "scheduler_task_id": "3"}
    run.update(columns)
    names = list(run)
    statement = pgsql.SQL("INSERT INTO segmentation_runs ({}) VALUES ({}) RETURNING id").format(
        pgsql.SQL(", ").join(map(pgsql.Identifier, names)),
        pgsql.SQL(", ").join(pgsql.Placeholder() * len(names)))
    run_id = dbconn.insert(statement, [run[name] for name in names])[0]["id"]
    statements = []
    for index, (rows, cols, weights) in enumerate(masks):
        cell = bool(index % 3) if is_cell is None else bool(is_cell[index])
        statements.append((
            "INSERT INTO rois (segmentation_run_id, suite2p_roi_index, coo_row, coo_col, "
            "coo_data, trace, neuropil_trace, is_cell, cell_probability, npix, centroid_row, "
            "centroid_col, radius, aspect_ratio, compactness, skew) VALUES "
            "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (run_id, index, np.asarray(rows).tolist(), np.asarray(cols).tolist(),
             np.asarray(weights, np.float32).tolist(),
             rng.normal(100, 10, nframes).astype(np.float32).tolist(),
             rng.normal(50, 5, nframes).astype(np.float32).tolist(),
             cell, float(rng.uniform()), len(rows), float(np.mean(rows)),
             float(np.mean(cols)), 3.0, 1.1, 1.05, float(rng.normal()))))
    dbconn.bulk_insert(statements)
    return run_id


def insert_failure(dbconn, experiment_id, manifest_path, manifest_index, message,
                   failure_class="suite2p_error", code_version="commit0",
                   parameters_digest="digest0") -> int:
    """One segmentation_failures row (of task 3 of job 4242 on node7); returns its id."""
    return dbconn.insert(
        "INSERT INTO segmentation_failures (ophys_experiment_id, "
        "ophys_segmentation_commit_hash, parameters_digest, manifest_path, manifest_index, "
        "hostname, scheduler_job_id, scheduler_task_id, failure_class, message, traceback, "
        "exit_status, duration_seconds) VALUES "
        "(%s, %s, %s, %s, %s, 'node7', '4242', '3', %s, %s, 'Traceback ...', 1, 3.5) "
        "RETURNING id",
        (experiment_id, code_version, parameters_digest, str(manifest_path), manifest_index,
         failure_class, message))[0]["id"]


MODEL_DIGEST = "cd" * 32


def insert_model(dbconn, probabilities, threshold=0.5) -> int:
    """A classifier_models row (of labeling jobs 4 and 5) and its roi_predictions rows.

    ``probabilities`` maps ``rois.id`` to the model's probability; ``is_cell``
    is probability above ``threshold``, as predict stores it. Returns the model id.
    """
    model_id = dbconn.insert(
        "INSERT INTO classifier_models (labeling_job_ids, strategy, n_labels, n_rois, "
        "feature_keys, cv_accuracy, cv_f1, file_path, file_digest, code_version) VALUES "
        "('{4,5}', 'majority', 360, 120, '{skew,compact,npix_norm}', 0.9, 0.85, "
        "'/models/model.npy', %s, 'modelcommit') RETURNING id", (MODEL_DIGEST,))[0]["id"]
    dbconn.bulk_insert([
        ("INSERT INTO roi_predictions (roi_id, classifier_model_id, probability, is_cell, "
         "threshold) VALUES (%s, %s, %s, %s, %s)",
         (roi_id, model_id, probability, probability > threshold, threshold))
        for roi_id, probability in probabilities.items()])
    return model_id
