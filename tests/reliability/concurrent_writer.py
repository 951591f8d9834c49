"""One job-array task's database write, for the reliability tests.

``python concurrent_writer.py EXPERIMENT_ID N_ROIS NFRAMES`` stores a
segmentation run of synthetic ROIs through the real write path
(:func:`slapp.segmentation.store.write_run`) with the ``LABELING_*``
credentials, then prints the outcome as JSON. It exits 1 with one line on
stderr if the write fails.
"""
import json
import sys

import numpy as np

from slapp.data_selection.segmentation_manifest import DEFAULT_BIN_SIZE
from slapp.segmentation.rois import Roi
from slapp.segmentation.store import write_run
from slapp.utils.cli import run_main
from slapp.utils.query_utils import DbConnection, get_db_credentials, label_defaults


def synthetic_rois(n_rois: int, nframes: int, seed: int):
    rng = np.random.default_rng(seed)
    for index in range(n_rois):
        rows, cols = np.nonzero(np.ones((12, 12), dtype=bool))
        yield Roi(suite2p_roi_index=index, coo_row=rows.astype(np.int32) + index,
                  coo_col=cols.astype(np.int32), coo_data=rng.random(rows.size, np.float32),
                  trace=rng.random(nframes, np.float32),
                  neuropil_trace=rng.random(nframes, np.float32), is_cell=True,
                  cell_probability=0.9, npix=rows.size, centroid_row=5.5 + index,
                  centroid_col=5.5, radius=6.0, aspect_ratio=1.0, compactness=1.0, skew=1.0)


def main() -> None:
    experiment_id, n_rois, nframes = map(int, sys.argv[1:4])
    run = {"ophys_experiment_id": experiment_id, "ophys_segmentation_commit_hash": "reliability",
           "code_label": "reliability", "parameters_digest": "reliability-parameters",
           "movie_fingerprint": {"size_bytes": 1}, "frame_source": "binary",
           "source_video_path": f"/movies/{experiment_id}.h5", "video_shape": [512, 512],
           "nframes": nframes, "nbinned": max(1, nframes // DEFAULT_BIN_SIZE), "suite2p_version": "1.1.0",
           "suite2p_settings": {"detection": {"threshold_scaling": 0.75}},
           "suite2p_seconds": 1.0, "total_seconds": 1.0, "stage_seconds": {},
           "peak_rss_bytes": None, "scratch_bytes": None, "hostname": "task",
           "scheduler_job_id": None, "scheduler_task_id": None}
    with DbConnection(**get_db_credentials(**label_defaults), backoff_seconds=0.2) as dbconn:
        stored = write_run(dbconn, run, lambda: synthetic_rois(n_rois, nframes, experiment_id))
    print(json.dumps({"experiment_id": experiment_id, "status": stored.status,
                      "segmentation_run_id": stored.segmentation_run_id,
                      "n_rois": stored.n_rois}))


if __name__ == "__main__":
    sys.exit(run_main(main, "concurrent_writer"))
