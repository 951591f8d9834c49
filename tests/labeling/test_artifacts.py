"""python -m slapp.labeling.artifacts on a synthetic movie and its ground-truth ROIs."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from truth_runs import EXPERIMENT_ID, MOVIE_SPEC, insert_truth_run

from slapp.demo.synthetic_movie import read_ground_truth, write_movie
from slapp.labeling import render
from slapp.labeling.artifacts import CORRELATION_KEY, MANIFEST_KEYS
from slapp.labeling.jobs import create_job
from slapp.labeling.webm import decoded_frame_count
from slapp.segmentation.h5_frames import H5Frames
from slapp.segmentation.images import read_images

CROP = 128
FS = 31.0


@pytest.fixture(scope="session")
def movie(tmp_path_factory):
    """The movie's path and its ground-truth masks (ncells, height, width)."""
    path = tmp_path_factory.mktemp("labeling_movie") / "motion_corrected_video.h5"
    truth = read_ground_truth(write_movie(path, MOVIE_SPEC))
    return path, truth


@pytest.fixture
def truth_run(labeling_db, movie):
    """See :func:`truth_runs.insert_truth_run`."""
    return insert_truth_run(labeling_db, movie)


def _png(path):
    return np.asarray(Image.open(path).convert("L"))


@pytest.fixture
def made(labeling_db, truth_run, run_cli, tmp_path):
    """The artifacts of every ROI of the run, and what the command said."""
    run_id, roi_ids = truth_run
    manifest = tmp_path / "out" / "manifest.jsonl"
    result = run_cli("slapp.labeling.artifacts", "--segmentation_run_id", run_id,
                     "--output_dir", tmp_path / "out", "--output_manifest", manifest,
                     "--output_json", tmp_path / "result.json")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in manifest.read_text().splitlines()]
    rows = {row["roi_id"]: row for row in labeling_db.query("SELECT * FROM roi_manifests")}
    rois = {row["id"]: row for row in labeling_db.query("SELECT * FROM rois")}
    return {"run_id": run_id, "roi_ids": roi_ids, "lines": lines, "rows": rows, "rois": rois,
            "stdout": result.stdout, "tmp_path": tmp_path,
            "result": json.loads((tmp_path / "result.json").read_text())}


def test_every_roi_has_the_originals_manifest_line_and_row(made):
    assert [line["roi-id"] for line in made["lines"]] == made["roi_ids"]
    assert made["result"] == {"n_rois": len(made["roi_ids"]), "n_made": len(made["roi_ids"]),
                              "n_runs": 1, "manifest_path": str(made["tmp_path"] / "out" /
                                                                "manifest.jsonl")}
    for line in made["lines"]:
        assert list(line) == [*MANIFEST_KEYS, CORRELATION_KEY]
        assert line["experiment-id"] == EXPERIMENT_ID
        for key in [*MANIFEST_KEYS[2:], CORRELATION_KEY]:
            assert Path(line[key]).is_absolute() and Path(line[key]).is_file()
        row = made["rows"][line["roi-id"]]
        assert row["manifest"] == line
        assert row["artifact_dir"] == str(Path(line["source-ref"]).parent)
        assert len(row["code_version"]) == 64
        parameters = row["parameters"]
        assert parameters["images_computed_by"] == "artifacts"
        assert parameters["movie_quantiles"] == [0.1, 0.999]
        low, high = parameters["movie_cutoffs"]
        assert low < high


def test_crops_are_128_square_and_centred_on_the_centroid(made):
    for line in made["lines"]:
        roi = made["rois"][line["roi-id"]]
        for key in ("max-source-ref", "avg-source-ref", CORRELATION_KEY, "roi-mask-source-ref",
                    "source-ref"):
            assert _png(line[key]).shape == (CROP, CROP)
        mask = _png(line["roi-mask-source-ref"]).astype(float)
        rows, cols = np.nonzero(mask)
        centre = (np.average(rows, weights=mask[rows, cols]),
                  np.average(cols, weights=mask[rows, cols]))
        offset = (roi["centroid_row"] - round(roi["centroid_row"]),
                  roi["centroid_col"] - round(roi["centroid_col"]))
        # the mask's 8-bit rounding moves its centroid by a small fraction of a pixel
        assert centre[0] == pytest.approx(CROP // 2 + offset[0], abs=0.1)
        assert centre[1] == pytest.approx(CROP // 2 + offset[1], abs=0.1)


def test_projection_crops_are_the_stored_images_normalised(made, labeling_db):
    images = read_images(labeling_db, made["run_id"])
    for line in made["lines"]:
        roi = made["rois"][line["roi-id"]]
        parameters = made["rows"][line["roi-id"]]["parameters"]
        window = render.centred_window(roi["centroid_row"], roi["centroid_col"], (CROP, CROP))
        expected = window.crop(render.normalize(images.max_projection,
                                                parameters["max_cutoffs"]))
        np.testing.assert_array_equal(_png(line["max-source-ref"]), expected)
        # padding: the movie is 96 px, the crop 128 px, so some of it lies outside
        top, left = window.top, window.left
        outside = np.ones((CROP, CROP), bool)
        outside[max(0, -top):MOVIE_SPEC.height - top, max(0, -left):MOVIE_SPEC.width - left] = False
        assert outside.any() and not _png(line["avg-source-ref"])[outside].any()


def test_the_images_computed_from_the_movie_are_stored(made, labeling_db, movie):
    images = read_images(labeling_db, made["run_id"])
    assert images.computed_by == "artifacts"
    with H5Frames(movie[0]) as frames:
        frames[0:len(frames)]
        np.testing.assert_allclose(images.mean_image, frames.mean_image(), rtol=1e-6)
    assert images.correlation_image.shape == (MOVIE_SPEC.height, MOVIE_SPEC.width)
    assert -1 <= images.correlation_image.min() and images.correlation_image.max() <= 1


def test_outline_pixels_lie_on_the_masks_edge(made):
    for line in made["lines"]:
        roi = made["rois"][line["roi-id"]]
        weights = render.dense_mask(np.asarray(roi["coo_row"]), np.asarray(roi["coo_col"]),
                                    np.asarray(roi["coo_data"], np.float32),
                                    (MOVIE_SPEC.height, MOVIE_SPEC.width))
        binary = render.binary_mask(weights, 0.1)
        inside = np.pad(binary, 1)
        interior = (inside[:-2, 1:-1] & inside[2:, 1:-1] & inside[1:-1, :-2] & inside[1:-1, 2:])
        edge = binary & ~interior
        drawn = _png(line["full-outline-source-ref"]) == 0
        # the 40 um scale bar and its label, drawn alone on white
        bar = render.add_scale_bar(np.full(binary.shape, 255, np.uint8), 12, 0.78125, 40.0,
                                   1.5, 0.8) == 0
        assert (drawn & ~bar).any()
        np.testing.assert_array_equal(drawn & ~bar, edge & ~bar)
        # the cropped outline: the same edge, in the crop's window
        window = render.centred_window(roi["centroid_row"], roi["centroid_col"], (CROP, CROP))
        small_bar = render.add_scale_bar(np.full((CROP, CROP), 255, np.uint8), 3, 0.78125,
                                         10.0, 1.0, 0.3) == 0
        np.testing.assert_array_equal((_png(line["source-ref"]) == 0) & ~small_bar,
                                      window.crop(edge) & ~small_bar)


def test_the_scale_bars_are_13_and_51_pixels(made):
    line = made["lines"][0]
    outline = _png(line["source-ref"])
    corner_row, corner_col = CROP - 3, 3
    vertical = outline[:, corner_col] == 0
    horizontal = outline[corner_row, :] == 0
    assert vertical[corner_row - 12:corner_row + 1].all() and not vertical[corner_row - 13]
    assert horizontal[corner_col:corner_col + 13].all() and not horizontal[corner_col - 1]
    full = _png(line["full-outline-source-ref"])  # 40 um = 51.2 -> 51 px, 2 px thick
    corner_row, corner_col = MOVIE_SPEC.height - 12, 12
    assert (full[corner_row - 50:corner_row + 1, corner_col] == 0).all()
    assert full[corner_row - 52, corner_col] == 255


def test_the_clip_and_the_trace_share_one_time_axis(made):
    for line in made["lines"]:
        trace = json.loads(Path(line["trace-source-ref"]).read_text())
        parameters = made["rows"][line["roi-id"]]["parameters"]
        bin_frames = parameters["clip_bin_frames"]
        assert bin_frames == 4 and parameters["clip_frame_rate"] == pytest.approx(FS / 4)
        assert trace["dataLength"] == len(trace["trace"])
        assert decoded_frame_count(Path(line["video-source-ref"])) == trace["dataLength"]
        assert trace["pointInterval"] == pytest.approx(4 / FS)
        start = parameters["clip_start_frame"]
        assert trace["pointStart"] == pytest.approx(start / FS)
        assert parameters["clip_stop_frame"] - start == trace["dataLength"] * bin_frames
        # 20 s of clip at 7.75 fps is 155 bins of the movie's 155
        assert trace["dataLength"] == min(155, MOVIE_SPEC.nframes // 4)
        full_trace = np.asarray(made["rois"][line["roi-id"]]["trace"], np.float32)
        expected = full_trace[start:start + trace["dataLength"] * 4].reshape(-1, 4).mean(axis=1)
        np.testing.assert_allclose(trace["trace"], expected, atol=1e-3)


def test_the_full_field_video_covers_the_movie(made):
    parameters = made["rows"][made["roi_ids"][0]]["parameters"]
    assert parameters["full_video_bin_frames"] == 8
    video = Path(made["lines"][0]["full-video-source-ref"])
    assert decoded_frame_count(video) == MOVIE_SPEC.nframes // 8


def test_asking_again_redoes_nothing(made, run_cli):
    tmp_path = made["tmp_path"]
    mtimes = {path: path.stat().st_mtime_ns for path in (tmp_path / "out").rglob("*")}
    again = run_cli("slapp.labeling.artifacts", "--segmentation_run_id", made["run_id"],
                    "--output_dir", tmp_path / "out")
    assert again.returncode == 0, again.stderr
    assert f"{len(made['roi_ids'])} ROIs of 1 run(s)" in again.stdout
    assert "0 made" in again.stdout
    assert {path: path.stat().st_mtime_ns for path in (tmp_path / "out").rglob("*")} == mtimes
    # the manifest written from the stored rows keeps the original's key order
    again = run_cli("slapp.labeling.artifacts", "--segmentation_run_id", made["run_id"],
                    "--output_dir", tmp_path / "out", "--output_manifest", tmp_path / "again.jsonl")
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "again.jsonl").read_text() == (tmp_path / "out" / "manifest.jsonl"
                                                      ).read_text()


def test_a_missing_file_is_made_again(made, run_cli, labeling_db):
    line = made["lines"][2]
    Path(line["video-source-ref"]).unlink()
    again = run_cli("slapp.labeling.artifacts", "--segmentation_run_id", made["run_id"],
                    "--output_dir", made["tmp_path"] / "out")
    assert again.returncode == 0 and "1 made" in again.stdout
    assert Path(line["video-source-ref"]).is_file()
    assert labeling_db.query("SELECT count(*) AS n FROM roi_manifests")[0]["n"] == len(
        made["roi_ids"])


def test_a_job_gets_the_artifacts_of_its_rois_in_task_order(labeling_db, truth_run, run_cli,
                                                            tmp_path):
    run_id, roi_ids = truth_run
    create_job(labeling_db, "pilot", [run_id], "random", 3, 3, 11, 4)
    tasks = [row["roi_id"] for row in labeling_db.query(
        "SELECT roi_id FROM labeling_tasks ORDER BY id")]
    result = run_cli("slapp.labeling.artifacts", "--labeling_job", "pilot", "--output_dir",
                     tmp_path, "--output_manifest", tmp_path / "m.jsonl")
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["roi-id"] for line in
            (tmp_path / "m.jsonl").read_text().splitlines()] == tasks
    assert {row["roi_id"] for row in labeling_db.query("SELECT roi_id FROM roi_manifests")} == set(
        tasks)


def test_an_unknown_job_is_one_line_and_writes_nothing(labeling_db, run_cli, tmp_path):
    result = run_cli("slapp.labeling.artifacts", "--labeling_job", "nope", "--output_dir",
                     tmp_path / "out")
    assert result.returncode == 1
    assert result.stderr.strip() == "slapp artifacts: error: there is no labeling job named 'nope'"
    assert not (tmp_path / "out").exists()


def test_runs_are_made_in_parallel_workers(labeling_db, movie, run_cli, tmp_path):
    runs = [insert_truth_run(labeling_db, movie, EXPERIMENT_ID + index, seed=index)[0]
            for index in range(2)]
    create_job(labeling_db, "two", runs, "all", None, 3, 0, 4)
    n_rois = 2 * len(movie[1])
    result = run_cli("slapp.labeling.artifacts", "--labeling_job", "two", "--output_dir",
                     tmp_path, "--workers", 2, "--output_manifest", tmp_path / "m.jsonl")
    assert result.returncode == 0, result.stderr
    assert f"{n_rois} ROIs of 2 run(s)" in result.stdout and f"{n_rois} made" in result.stdout
    lines = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert len(lines) == n_rois
    assert {line["experiment-id"] for line in lines} == {EXPERIMENT_ID, EXPERIMENT_ID + 1}
    assert {Path(line["full-video-source-ref"]).parent.name.split("_")[1]
            for line in lines} == {str(run) for run in runs}
    for line in lines:
        assert decoded_frame_count(Path(line["video-source-ref"])) == json.loads(
            Path(line["trace-source-ref"]).read_text())["dataLength"]


def test_an_unwritable_manifest_is_refused_before_any_work(labeling_db, truth_run, run_cli,
                                                           tmp_path):
    result = run_cli("slapp.labeling.artifacts", "--segmentation_run_id", truth_run[0],
                     "--output_dir", tmp_path / "out", "--output_manifest",
                     tmp_path / "missing" / "m.jsonl")
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert "does not exist" in result.stderr
    assert not list((tmp_path / "out").rglob("*.png"))
    assert labeling_db.query("SELECT count(*) AS n FROM roi_manifests")[0]["n"] == 0
