"""A synthetic movie and runs of its ground-truth cells, stored without Suite2P."""
import numpy as np
from stored_runs import insert_run

from slapp.demo.synthetic_movie import MovieSpec

# 96 x 96 px: ROIs near the edges get padded 128 x 128 crops; 620 frames = 20 s at 31 Hz.
MOVIE_SPEC = MovieSpec(nframes=620, height=96, width=96, ncells=8, seed=1)
EXPERIMENT_ID = 850517344


def mask_traces(path, masks):
    """Each mask's weighted mean of every frame: a trace with the movie's real transients."""
    import h5py
    with h5py.File(path, "r") as movie:
        frames = movie["data"][:].astype(np.float32)
    weights = masks.reshape(len(masks), -1)
    return (frames.reshape(len(frames), -1) @ weights.T / weights.sum(axis=1)).T


def insert_truth_run(labeling_db, movie, experiment_id=EXPERIMENT_ID, seed=0):
    """A run (without images, as runs stored before segment kept them) whose ROIs are the
    movie's ground-truth cells, with traces measured in the movie; (run id, ROI ids)."""
    path, truth = movie
    masks = [(*np.nonzero(mask), mask[np.nonzero(mask)].astype(np.float32)) for mask in truth]
    run_id = insert_run(labeling_db, experiment_id, masks, nframes=MOVIE_SPEC.nframes,
                        video_shape=(MOVIE_SPEC.height, MOVIE_SPEC.width),
                        source_video_path=str(path), seed=seed)
    traces = mask_traces(path, truth)
    roi_ids = [row["id"] for row in labeling_db.query(
        "SELECT id FROM rois WHERE segmentation_run_id = %s ORDER BY suite2p_roi_index",
        (run_id,))]
    labeling_db.bulk_insert([
        ("UPDATE rois SET trace = %s, neuropil_trace = %s, centroid_row = %s, "
         "centroid_col = %s WHERE id = %s",
         (trace.tolist(), np.zeros_like(trace).tolist(), float(np.average(rows, weights=w)),
          float(np.average(cols, weights=w)), roi_id))
        for roi_id, trace, (rows, cols, w) in zip(roi_ids, traces, masks)])
    return run_id, roi_ids

