"""Segment a synthetic movie with real Suite2P, create a job, make its artifacts, read them."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from slapp.demo.synthetic_movie import MovieSpec, write_movie
from slapp.labeling.artifacts import CORRELATION_KEY, MANIFEST_KEYS
from slapp.labeling.webm import decoded_frame_count
from slapp.segmentation.h5_frames import H5Frames
from slapp.segmentation.images import read_images

SPEC = MovieSpec(nframes=900, height=96, width=96, ncells=10, seed=2)


@pytest.mark.slow
def test_segment_job_artifacts_manifest(labeling_db, run_cli, tmp_path):
    movie = tmp_path / "motion_corrected_video.h5"
    write_movie(movie, SPEC)
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"manifest": [
        {"experiment_id": 7001, "nbinned": SPEC.nframes // 22, "input_video": str(movie),
         "log_level": "INFO"}]}))
    segmented = run_cli("slapp.segmentation.segment", "--manifest_json", manifest,
                        "--manifest_index", 0, "--tmp_dir", tmp_path / "scratch")
    assert segmented.returncode == 0, segmented.stderr
    run = labeling_db.query("SELECT id, video_shape FROM segmentation_runs")[0]

    # segment kept Suite2P's images, in the full frame, and the stat features
    images = read_images(labeling_db, run["id"])
    assert images.computed_by == "segment"
    for image in (images.mean_image, images.max_projection, images.correlation_image):
        assert image.shape == (SPEC.height, SPEC.width) and np.isfinite(image).all()
    with H5Frames(movie) as frames:
        frames[0:len(frames)]
        np.testing.assert_allclose(images.mean_image, frames.mean_image(), rtol=1e-6)
    assert images.correlation_image.any() and images.max_projection.any()
    rois = labeling_db.query("SELECT npix, npix_norm, npix_soma, std, footprint, solidity, "
                             "compact, compactness FROM rois")
    assert rois
    for roi in rois:
        assert None not in roi.values()
        assert 0 < roi["solidity"] <= 1 and 0 < roi["npix_soma"] <= roi["npix"]
        assert roi["compact"] == roi["compactness"]

    job = run_cli("slapp.labeling.create_job", "--name", "e2e", "--manifest_json", manifest,
                  "--sampling", "stratified", "--strata", 2)
    assert job.returncode == 0, job.stderr
    lines_path = tmp_path / "manifest.jsonl"
    made = run_cli("slapp.labeling.artifacts", "--labeling_job", "e2e", "--output_dir",
                   tmp_path / "artifacts", "--output_manifest", lines_path)
    assert made.returncode == 0, made.stderr
    lines = [json.loads(line) for line in lines_path.read_text().splitlines()]
    tasks = labeling_db.query("SELECT roi_id FROM labeling_tasks ORDER BY id")
    assert [line["roi-id"] for line in lines] == [task["roi_id"] for task in tasks]
    for line in lines:
        assert list(line) == [*MANIFEST_KEYS, CORRELATION_KEY]
        for key in ("source-ref", "roi-mask-source-ref", "max-source-ref", "avg-source-ref",
                    CORRELATION_KEY):
            assert Image.open(line[key]).size == (128, 128)
        assert Image.open(line["full-outline-source-ref"]).size == (SPEC.width, SPEC.height)
        trace = json.loads(Path(line["trace-source-ref"]).read_text())
        assert decoded_frame_count(Path(line["video-source-ref"])) == trace["dataLength"]
        assert decoded_frame_count(Path(line["full-video-source-ref"])) > 0
    parameters = labeling_db.query("SELECT parameters FROM roi_manifests LIMIT 1")[0][
        "parameters"]
    assert parameters["images_computed_by"] == "segment"
