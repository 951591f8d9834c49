"""``python -m slapp.segmentation.segment`` end to end: real Suite2P, real movie, real database.

One synthetic movie with 30 known cells is segmented once by the real command
(module fixture) and several tests check what it stored; then a rerun must
skip and ``--overwrite`` must replace. The tests of this file run in file
order and share that run, so none of them uses the ``labeling_db`` fixture
(which empties the tables).

The movie is the demo's (145 s at 31 Hz), its ``nbinned`` follows the
manifest step's default bins (nframes // DEFAULT_BIN_SIZE) and every Suite2P setting is the
command's default, threshold_scaling 0.75 included: what a user gets.
"""
import json
import os
import subprocess
import sys
from importlib.metadata import version as installed_version

import numpy as np
import pytest
import scipy.sparse

from slapp import embedded
from slapp.data_selection.segmentation_manifest import DEFAULT_BIN_SIZE
from slapp.demo.synthetic_movie import MovieSpec, read_ground_truth, write_movie
from slapp.evaluation.matching import match_rois
from slapp.segmentation.settings import Suite2pOptions, parameters_digest
from slapp.utils.query_utils import DbConnection

VERSION = "segment-test-version"
EXPERIMENT_ID = 850517344
NFRAMES, HEIGHT, WIDTH = 4500, 128, 128
NBINNED = NFRAMES // DEFAULT_BIN_SIZE


def segment(env, manifest, *args):
    return subprocess.run([sys.executable, "-m", "slapp.segmentation.segment",
                           "--manifest_json", str(manifest), "--manifest_index", "0",
                           *map(str, args)],
                          env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def movie(tmp_path_factory):
    directory = tmp_path_factory.mktemp("segment_movie")
    path = directory / "motion_corrected_video.h5"
    truth_path = write_movie(path, MovieSpec(nframes=NFRAMES, height=HEIGHT, width=WIDTH,
                                             ncells=30, seed=3))
    manifest = directory / "manifest.json"
    manifest.write_text(json.dumps({"manifest": [
        {"experiment_id": EXPERIMENT_ID, "nbinned": NBINNED, "input_video": str(path),
         "log_level": "ERROR"}]}))
    return {"path": path, "truth": read_ground_truth(truth_path), "manifest": manifest,
            "directory": directory}


@pytest.fixture(scope="module")
def dbconn(embedded_server):
    with DbConnection(**embedded_server.credentials(embedded.LABELING_ROLE,
                                                    embedded.LABELING_DATABASE)) as dbconn:
        dbconn.execute("TRUNCATE segmentation_runs, rois RESTART IDENTITY CASCADE")
        yield dbconn


@pytest.fixture(scope="module")
def env(embedded_server):
    variables = {key: value for key, value in os.environ.items()
                 if not key.startswith(("LIMS_", "LABELING_"))}
    return {**variables, **embedded_server.environment(), "TRANSFORM_HASH": VERSION}


@pytest.fixture(scope="module")
def segmented(movie, dbconn, env, tmp_path_factory):
    """The movie segmented once by the real command, with default settings."""
    scratch = tmp_path_factory.mktemp("scratch")
    output_json = movie["directory"] / "segment_output.json"
    result = segment(env, movie["manifest"], "--tmp_dir", scratch,
                     "--output_json", output_json, "--log_level", "INFO")
    assert result.returncode == 0, result.stderr
    output = json.loads(output_json.read_text())
    run = dbconn.query("SELECT * FROM segmentation_runs WHERE id = %s",
                       (output["segmentation_run_id"],))[0]
    rois = dbconn.query("SELECT * FROM rois WHERE segmentation_run_id = %s "
                        "ORDER BY suite2p_roi_index", (run["id"],))
    return {"result": result, "output": output, "run": run, "rois": rois, "scratch": scratch}


def stored_masks(rois, video_shape):
    return [scipy.sparse.coo_matrix((roi["coo_data"], (roi["coo_row"], roi["coo_col"])),
                                    shape=tuple(video_shape)) for roi in rois]


@pytest.mark.slow
def test_stored_rois_match_the_known_cells(segmented, movie):
    rois, shape = segmented["rois"], segmented["run"]["video_shape"]
    every_roi = match_rois(stored_masks(rois, shape), movie["truth"])
    cells = match_rois(stored_masks([roi for roi in rois if roi["is_cell"]], shape),
                       movie["truth"])
    print(f"\nall {every_roi.n_predicted} ROIs: precision {every_roi.precision:.2f} "
          f"recall {every_roi.recall:.2f}; the {cells.n_predicted} classified as cells: "
          f"precision {cells.precision:.2f} recall {cells.recall:.2f} "
          f"({every_roi.n_truth} true cells, IoU >= 0.5)")
    assert every_roi.precision >= 0.8 and every_roi.recall >= 0.8
    assert cells.precision >= 0.8 and cells.recall >= 0.8


def test_run_row_records_how_it_was_made(segmented, movie):
    run, output = segmented["run"], segmented["output"]
    assert run["ophys_experiment_id"] == EXPERIMENT_ID
    assert run["ophys_segmentation_commit_hash"] == VERSION
    assert run["source_video_path"] == str(movie["path"])
    assert run["video_shape"] == [HEIGHT, WIDTH]
    assert run["nframes"] == NFRAMES and run["nbinned"] == NBINNED
    assert run["suite2p_version"] == installed_version("suite2p")
    assert 0 < run["suite2p_seconds"] < run["total_seconds"]
    assert run["hostname"]
    settings = run["suite2p_settings"]["settings"]
    assert settings["detection"]["threshold_scaling"] == 0.75
    assert settings["detection"]["nbins"] == NBINNED
    assert settings["detection"]["algorithm"] == "sparsery"
    assert settings["fs"] == 31.0 and settings["tau"] == 0.7
    assert settings["run"]["do_registration"] == 0
    assert settings["classification"]["use_builtin_classifier"] is True
    db = run["suite2p_settings"]["db"]
    assert db["file_list"] == [movie["path"].name] and db["h5py_key"] == "data"
    assert "password" not in json.dumps(run["suite2p_settings"]).lower()
    assert output["status"] == "segmented" and output["n_rois"] == len(segmented["rois"]) > 0


def test_run_row_records_its_identity_movie_and_resources(segmented, movie):
    run = segmented["run"]
    options = Suite2pOptions.defaults()
    assert run["parameters_digest"] == parameters_digest(options, NBINNED,
                                                         installed_version("suite2p"))
    assert run["code_label"].startswith("slapp ")
    fingerprint = run["movie_fingerprint"]
    assert fingerprint["size_bytes"] == movie["path"].stat().st_size
    assert fingerprint["mtime_ns"] == movie["path"].stat().st_mtime_ns
    assert fingerprint["shape"] == [NFRAMES, HEIGHT, WIDTH]
    assert run["frame_source"] in ("binary", "hdf5_stream")
    assert run["stage_seconds"]["database_write"] > 0
    assert run["peak_rss_bytes"] > 100 * 2**20  # Suite2P and PyTorch loaded
    if run["frame_source"] == "binary":  # Suite2P's int16 copy of the movie was on scratch
        assert run["scratch_bytes"] >= 2 * NFRAMES * HEIGHT * WIDTH
    assert run["scheduler_job_id"] is None and run["scheduler_task_id"] is None


def test_rois_carry_traces_and_the_classifier_output(segmented):
    for index, roi in enumerate(segmented["rois"]):
        assert roi["suite2p_roi_index"] == index
        assert len(roi["trace"]) == len(roi["neuropil_trace"]) == NFRAMES
        assert roi["npix"] == len(roi["coo_row"]) == len(roi["coo_col"]) == len(roi["coo_data"])
        assert 0 <= min(roi["coo_row"]) and max(roi["coo_row"]) < HEIGHT
        assert 0 <= min(roi["coo_col"]) and max(roi["coo_col"]) < WIDTH
        assert min(roi["coo_row"]) <= roi["centroid_row"] <= max(roi["coo_row"])
        assert 0 <= roi["cell_probability"] <= 1
        assert roi["is_cell"] == (roi["cell_probability"] > 0.5)  # Suite2P's p_threshold
    traces = np.array([roi["trace"] for roi in segmented["rois"]])
    assert np.all(np.isfinite(traces)) and traces.std(axis=1).min() > 0


def test_plot_written_output_reported_and_no_intermediate_files_left(segmented, movie):
    plot = (movie["directory"] / "segmentation_plots"
            / f"{EXPERIMENT_ID}_{segmented['run']['id']}.png")  # one plot per run
    assert segmented["output"]["plot_path"] == str(plot)
    assert plot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert list(segmented["scratch"].iterdir()) == []
    assert segmented["result"].stdout.strip() == (
        f"experiment {EXPERIMENT_ID}: segmented as run {segmented['run']['id']} with "
        f"{len(segmented['rois'])} ROIs; plot {plot}")


def test_rerun_is_skipped_and_writes_nothing(segmented, movie, dbconn, env, tmp_path):
    before = dbconn.query("SELECT id FROM rois ORDER BY id")

    result = segment(env, movie["manifest"], "--tmp_dir", tmp_path,
                     "--output_json", tmp_path / "out.json", "--log_level", "ERROR")

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    run_id = segmented["run"]["id"]
    assert result.stdout.strip() == (
        f"experiment {EXPERIMENT_ID}: skipped, already segmented by code version {VERSION} "
        f"as run {run_id} ({len(before)} ROIs)")
    assert json.loads((tmp_path / "out.json").read_text()) == {
        "experiment_id": EXPERIMENT_ID, "segmentation_run_id": run_id, "status": "skipped",
        "n_rois": len(before), "plot_path": segmented["output"]["plot_path"]}
    assert dbconn.query("SELECT id FROM segmentation_runs") == [{"id": run_id}]
    assert dbconn.query("SELECT id FROM rois ORDER BY id") == before
    assert [path.name for path in tmp_path.iterdir()] == ["out.json"]


@pytest.mark.slow
def test_overwrite_supersedes_the_run_atomically(segmented, movie, dbconn, env, tmp_path):
    old_run_id = segmented["run"]["id"]
    old_rois = dbconn.query("SELECT id FROM rois WHERE segmentation_run_id = %s ORDER BY id",
                            (old_run_id,))

    result = segment(env, movie["manifest"], "--tmp_dir", tmp_path, "--overwrite",
                     "--output_json", tmp_path / "out.json")

    assert result.returncode == 0, result.stderr
    output = json.loads((tmp_path / "out.json").read_text())
    assert output["status"] == "segmented" and output["segmentation_run_id"] != old_run_id
    # the old run and its ROI ids stay, superseded by the new run
    assert dbconn.query("SELECT id, superseded_by FROM segmentation_runs ORDER BY id") == [
        {"id": old_run_id, "superseded_by": output["segmentation_run_id"]},
        {"id": output["segmentation_run_id"], "superseded_by": None}]
    assert dbconn.query("SELECT id FROM rois WHERE segmentation_run_id = %s ORDER BY id",
                        (old_run_id,)) == old_rois
    assert dbconn.query("SELECT count(*) AS n FROM rois") == [
        {"n": output["n_rois"] + len(old_rois)}]
    assert output["n_rois"] == len(segmented["rois"])  # same movie, same settings
    assert [path.name for path in tmp_path.iterdir()] == ["out.json"]
