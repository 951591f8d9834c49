"""Bad movies are refused before they become runs: one line, a ``bad_input`` row, no run.

Real float32 HDF5 movies with NaN and infinity, a one-frame movie and a movie
shorter than its entry's ``nbinned``, run through ``python -m
slapp.segmentation.segment`` against the embedded labeling database.
"""
import json

import h5py
import numpy as np
import pytest

SEGMENT = "slapp.segmentation.segment"
EXPERIMENT_ID = 940001


@pytest.fixture(scope="module")
def float_frames(tiny_movies):
    """The first tiny movie's frames as float32 (600 frames of 64 x 64)."""
    with h5py.File(tiny_movies[0], "r") as movie:
        return movie["data"][:].astype(np.float32)


def write_entry(directory, frames, nbinned=5):
    movie = directory / "movie.h5"
    with h5py.File(movie, "w") as stream:
        stream.create_dataset("data", data=frames, chunks=(min(50, len(frames)), 64, 64))
    manifest = directory / "manifest.json"
    manifest.write_text(json.dumps({"manifest": [
        {"experiment_id": EXPERIMENT_ID, "nbinned": nbinned, "input_video": str(movie)}]}))
    return movie, manifest


def segment(run_cli, manifest, *args):
    return run_cli(SEGMENT, "--manifest_json", manifest, "--manifest_index", 0,
                   "--tmp_dir", manifest.parent / "scratch", "--diameter", 14, *args)


def assert_refused_as_bad_input(labeling_db, result, message):
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"slapp segment: error: {message}"]
    [failure] = labeling_db.query("SELECT ophys_experiment_id, failure_class, message "
                                  "FROM segmentation_failures")
    assert failure == {"ophys_experiment_id": EXPERIMENT_ID, "failure_class": "bad_input",
                       "message": message}
    assert labeling_db.query("SELECT count(*) AS n FROM segmentation_runs") == [{"n": 0}]


@pytest.mark.slow
@pytest.mark.parametrize("frame_source", ["hdf5_stream", "binary"])
def test_non_finite_values_are_counted_by_frame_and_refused(
        frame_source, labeling_db, run_cli, tmp_path, float_frames):
    frames = float_frames.copy()
    frames[100:200] = np.nan          # 100 whole frames: 409,600 values
    frames[300, :10, :10] = np.inf    # a 10 x 10 patch
    frames[450:452, 0, 0] = -np.inf
    frames[590:600, 5, 5] = np.nan    # past the three ranges named
    movie, manifest = write_entry(tmp_path, frames)
    # Registration takes Suite2P's binary path, whose converter reads the frames itself.
    options = ("--do_registration", "True") if frame_source == "binary" else ()

    result = segment(run_cli, manifest, *options)

    assert_refused_as_bad_input(
        labeling_db, result,
        f"movie {movie} has 409,712 non-finite values (NaN or infinity) in frames 100-199, "
        "300, 450-451 (and 10 more frames): Suite2P needs finite numbers; fix or exclude "
        "the movie")


@pytest.mark.parametrize("nframes,nbinned,message", [
    (1, 5, "has 1 frame: Suite2P needs at least 50"),
    (49, 5, "has 49 frames: Suite2P needs at least 50"),
    (60, 100, "has 60 frames, fewer than the entry's nbinned 100: the manifest was not made "
              "from this movie; make it again"),
])
def test_too_few_frames_are_refused_before_suite2p(nframes, nbinned, message, labeling_db,
                                                   run_cli, tmp_path, float_frames):
    movie, manifest = write_entry(tmp_path, float_frames[:nframes], nbinned)

    result = segment(run_cli, manifest)

    assert_refused_as_bad_input(labeling_db, result, f"movie {movie} {message}")
