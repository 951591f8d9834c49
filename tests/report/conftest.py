"""A batch of every kind of manifest entry in the labeling database, with outline PNGs."""
import json

import numpy as np
import pytest
from report_batch import BATCH, COMMIT, DIGEST, FAILURE_MESSAGE, LONG_BATCH, SHAPE
from stored_runs import insert_failure, insert_run, random_masks

from slapp.segmentation.plot import render_roi_plot


@pytest.fixture
def batch(labeling_db, tmp_path):
    """A manifest of 8 entries (6 done, 1 failed, 1 missing) and the plots of the done ones.

    Returns the manifest path and the run id of each done experiment.
    """
    return _write_batch(labeling_db, tmp_path, BATCH)


@pytest.fixture
def long_batch(labeling_db, tmp_path):
    """The batch and 40 more done runs (48 entries): a table several screens tall."""
    return _write_batch(labeling_db, tmp_path, LONG_BATCH)


def _write_batch(labeling_db, tmp_path, batch):
    batch_dir = tmp_path / "batch"
    plot_dir = batch_dir / "segmentation_plots"
    plot_dir.mkdir(parents=True)
    manifest = batch_dir / "manifest.json"
    manifest.write_text(json.dumps({"manifest": [
        {"experiment_id": experiment_id, "nbinned": 10,
         "input_video": f"/movies/{experiment_id}.h5"} for experiment_id in batch]}))
    rng = np.random.default_rng(1)
    runs = {}
    for index, (experiment_id, n_rois) in enumerate(batch.items()):
        if n_rois == "failed":
            insert_failure(labeling_db, experiment_id, manifest, index, FAILURE_MESSAGE)
        elif n_rois != "missing":
            masks = random_masks(rng, SHAPE, n_rois)
            runs[experiment_id] = insert_run(labeling_db, experiment_id, masks,
                                             video_shape=SHAPE, seed=index,
                                             ophys_segmentation_commit_hash=COMMIT,
                                             parameters_digest=DIGEST)
            png = render_roi_plot(rng.normal(size=SHAPE), [(r, c) for r, c, _ in masks],
                                  [True] * n_rois, f"experiment {experiment_id}")
            (plot_dir / f"{experiment_id}.png").write_bytes(png)
    return manifest, runs
