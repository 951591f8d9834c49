"""Segment a synthetic movie with real Suite2P, create a job, make its artifacts, read them,
and label them through the labeling server."""
import json
from pathlib import Path

import numpy as np
import pytest
from labeling_server import RunningServer, sign_in
from PIL import Image

from slapp.demo.synthetic_movie import MovieSpec, write_movie
from slapp.labeling.artifacts import CORRELATION_KEY, MANIFEST_KEYS
from slapp.labeling.labelers import add_labeler
from slapp.labeling.webm import decoded_frame_count
from slapp.segmentation.h5_frames import H5Frames
from slapp.segmentation.images import read_images

SPEC = MovieSpec(nframes=900, height=96, width=96, ncells=10, seed=2)


@pytest.mark.slow
def test_segment_job_artifacts_manifest(labeling_db, run_cli, cli_env, tmp_path):
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

    # the labeling server serves these real artifacts: two labelers label every ROI twice
    twice = run_cli("slapp.labeling.create_job", "--name", "e2e-twice", "--manifest_json",
                    manifest, "--labels_per_roi", 2)
    assert twice.returncode == 0, twice.stderr
    assert run_cli("slapp.labeling.artifacts", "--labeling_job", "e2e-twice", "--output_dir",
                   tmp_path / "artifacts").returncode == 0
    tokens = [add_labeler(labeling_db, name) for name in ("ann", "ben")]
    server = RunningServer(cli_env, "--labeling_job", "e2e-twice", "--port", "0")
    try:
        for token in tokens:
            labeler = sign_in(server.url, token)
            while (task := labeler.get("/api/next").json()["task"]) is not None:
                for url in task["urls"].values():
                    served = labeler.get(url)
                    assert served.status_code == 200 and served.content, url
                assert labeler.post("/api/labels", json={
                    "labeling_task_id": task["labeling_task_id"], "label": "cell",
                    "seconds_shown": 1.0}).status_code == 201
            labeler.close()
    finally:
        server.stop()
    counts = labeling_db.query(
        "SELECT count(*) AS n, count(DISTINCT labeler_id) AS labelers FROM roi_labels "
        "JOIN labeling_tasks ON labeling_tasks.id = labeling_task_id "
        "JOIN labeling_jobs ON labeling_jobs.id = labeling_job_id "
        "WHERE labeling_jobs.name = 'e2e-twice' GROUP BY labeling_task_id")
    n_rois = labeling_db.query("SELECT count(*) AS n FROM rois")[0]["n"]
    assert counts == [{"n": 2, "labelers": 2}] * n_rois
