"""Bad input to ``python -m slapp.segmentation.segment``: one line, exit 1, nothing written.

Every case checks that no run, no ROI, no plot, no output JSON and no
temporary directory was left behind; none gets as far as Suite2P. A few cases
run the real command in a subprocess (the one-line message and exit status);
the others run the same ``Segment`` in this process, which is much faster.
"""
import json
import logging

import h5py
import numpy as np
import pytest
from stored_runs import insert_selection

from slapp.segmentation.segment import Segment, SegmentationException
from slapp.segmentation.suite2p_runner import Suite2pOutput, estimated_scratch_bytes

SEGMENT = "slapp.segmentation.segment"


def write_manifest(directory, entries):
    path = directory / "manifest.json"
    path.write_text(json.dumps({"manifest": [
        {"experiment_id": 1000 + index, "nbinned": 10, "log_level": "ERROR", **entry}
        for index, entry in enumerate(entries)]}))
    return path


def write_h5(path, **datasets):
    with h5py.File(path, "w") as h5:
        for name, data in datasets.items():
            h5.create_dataset(name, data=data)
    return path


@pytest.fixture
def workspace(tmp_path):
    """A manifest directory, an empty scratch directory and a valid 3-entry manifest."""
    movie = write_h5(tmp_path / "movie.h5", data=np.zeros((20, 8, 8), np.uint16))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    return tmp_path, scratch, movie


def assert_nothing_written(labeling_db, directory, scratch):
    counts = labeling_db.query("SELECT (SELECT count(*) FROM segmentation_runs) AS runs, "
                               "(SELECT count(*) FROM rois) AS rois")[0]
    assert counts == {"runs": 0, "rois": 0}
    assert list(scratch.iterdir()) == []
    assert not (directory / "segmentation_plots").exists()
    assert not (directory / "out.json").exists()


def run_segment(run_cli, manifest, index, directory, scratch, *extra, env=None):
    return run_cli(SEGMENT, "--manifest_json", manifest, "--manifest_index", index,
                   "--tmp_dir", scratch, "--output_json", directory / "out.json", *extra,
                   env=env)


def segment_error(labeling_db, manifest, index, directory, scratch):
    """Run ``Segment`` in this process and return its error message."""
    segment = Segment(args=["--manifest_json", str(manifest), "--manifest_index", str(index),
                            "--tmp_dir", str(scratch), "--output_json",
                            str(directory / "out.json")])
    with pytest.raises(SegmentationException) as error:
        segment.run(labeling_db)
    return str(error.value)


def one_error_line(result):
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("slapp segment: error: ")
    return lines[0][len("slapp segment: error: "):]


def test_an_index_beyond_the_manifest_has_nothing_to_do(labeling_db, run_cli, workspace):
    directory, scratch, movie = workspace
    manifest = write_manifest(directory, [{"input_video": str(movie)}] * 3)

    result = run_segment(run_cli, manifest, 7, directory, scratch)

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"manifest_index 7: nothing to do, manifest {manifest.resolve()} has 3 entries "
        "(indices 0-2)"]
    assert_nothing_written(labeling_db, directory, scratch)
    assert labeling_db.query("SELECT count(*) AS n FROM segmentation_failures") == [{"n": 0}]


def test_a_manifest_naming_a_selection_without_its_experiment_is_refused(
        labeling_db, run_cli, workspace):
    directory, scratch, movie = workspace
    manifest = write_manifest(directory, [{"input_video": str(movie)}])
    selection = insert_selection(labeling_db, [2000])
    document = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({"experiment_selection_id": selection, **document}))

    result = run_segment(run_cli, manifest, 0, directory, scratch)

    assert one_error_line(result) == (f"experiment selection {selection} does not hold "
                                      "experiment 1000")
    assert_nothing_written(labeling_db, directory, scratch)


def test_missing_movie(labeling_db, workspace):
    directory, scratch, _ = workspace
    missing = directory / "no_such_movie.h5"
    manifest = write_manifest(directory, [{"input_video": str(missing)}])

    message = segment_error(labeling_db, manifest, 0, directory, scratch)

    assert message == f"movie {missing} does not exist"
    assert_nothing_written(labeling_db, directory, scratch)


def test_directory_where_the_movie_belongs(labeling_db, workspace):
    directory, scratch, _ = workspace
    folder = directory / "movie_folder.h5"
    folder.mkdir()
    manifest = write_manifest(directory, [{"input_video": str(folder)}])

    message = segment_error(labeling_db, manifest, 0, directory, scratch)

    assert message == f"movie {folder} is a directory, not an HDF5 file"
    assert_nothing_written(labeling_db, directory, scratch)


def test_file_that_is_not_hdf5(labeling_db, workspace):
    directory, scratch, _ = workspace
    text = directory / "notes.h5"
    text.write_text("not an HDF5 file\n")
    manifest = write_manifest(directory, [{"input_video": str(text)}])

    message = segment_error(labeling_db, manifest, 0, directory, scratch)

    assert message.startswith(f"cannot read movie {text} as HDF5: ")
    assert_nothing_written(labeling_db, directory, scratch)


def test_hdf5_without_data_dataset(labeling_db, workspace):
    directory, scratch, _ = workspace
    movie = write_h5(directory / "other.h5", frames=np.zeros((20, 8, 8), np.uint16))
    manifest = write_manifest(directory, [{"input_video": str(movie)}])

    message = segment_error(labeling_db, manifest, 0, directory, scratch)

    assert message == f"movie {movie} has no 'data' dataset"
    assert_nothing_written(labeling_db, directory, scratch)


def test_data_that_is_not_a_movie(labeling_db, workspace):
    directory, scratch, _ = workspace
    movie = write_h5(directory / "flat.h5", data=np.zeros((20, 64), np.uint16))
    manifest = write_manifest(directory, [{"input_video": str(movie)}])

    message = segment_error(labeling_db, manifest, 0, directory, scratch)

    assert message == (f"movie {movie}: dataset 'data' has shape (20, 64), "
                                      "not (frames, height, width)")
    assert_nothing_written(labeling_db, directory, scratch)


def test_nbinned_below_one(labeling_db, run_cli, workspace):
    directory, scratch, movie = workspace
    manifest = write_manifest(directory, [{"input_video": str(movie), "nbinned": 0}])

    result = run_segment(run_cli, manifest, 0, directory, scratch)

    message = one_error_line(result)
    assert message.startswith(f"manifest {manifest} is not valid: ")
    assert "manifest.0.nbinned" in message
    assert_nothing_written(labeling_db, directory, scratch)


def test_a_tmp_dir_that_cannot_be_created(labeling_db, run_cli, workspace):
    directory, scratch, movie = workspace
    manifest = write_manifest(directory, [{"input_video": str(movie)}])
    (scratch / "a_file").write_text("not a directory")
    impossible = scratch / "a_file" / "tmp"

    result = run_cli(SEGMENT, "--manifest_json", manifest, "--manifest_index", 0,
                     "--tmp_dir", impossible)

    assert one_error_line(result) == f"tmp_dir {impossible} cannot be created: Not a directory"
    (scratch / "a_file").unlink()
    assert_nothing_written(labeling_db, directory, scratch)


@pytest.mark.parametrize("extra", [(), ("--do_registration", "True")])
def test_a_movie_too_large_for_the_scratch_space_names_needed_and_free_bytes(
        labeling_db, run_cli, workspace, extra):
    directory, scratch, _ = workspace
    huge = directory / "huge.h5"  # 10 million 512x512 frames declared, none stored
    with h5py.File(huge, "w") as h5:
        h5.create_dataset("data", shape=(10_000_000, 512, 512), dtype=np.uint16,
                          chunks=(1, 512, 512))
    manifest = write_manifest(directory, [{"input_video": str(huge)}])

    result = run_segment(run_cli, manifest, 0, directory, scratch, *extra)

    message = one_error_line(result)
    assert message.startswith(f"tmp_dir {scratch} is too small: the run needs ")
    needed, free = (int(part.split()[0]) for part in
                    message.split("the run needs ")[1].split(", "))
    registration = bool(extra)
    assert needed == estimated_scratch_bytes((10_000_000, 512, 512), registration) > free
    # the binary copy (2 bytes per pixel per frame) is needed only to register
    assert (needed > 2 * 10_000_000 * 512 * 512) == registration
    assert_nothing_written(labeling_db, directory, scratch)


def test_plot_dir_that_is_a_file(labeling_db, workspace):
    directory, scratch, movie = workspace
    manifest = write_manifest(directory, [{"input_video": str(movie)}])
    (directory / "segmentation_plots").write_text("a file, not a directory")

    message = segment_error(labeling_db, manifest, 0, directory, scratch)

    assert message == f"plot_dir {directory / 'segmentation_plots'} is not a directory"
    assert list(scratch.iterdir()) == [] and not (directory / "out.json").exists()


def test_negative_index_is_refused_by_the_schema(labeling_db, run_cli, workspace):
    directory, scratch, movie = workspace
    manifest = write_manifest(directory, [{"input_video": str(movie)}])

    result = run_segment(run_cli, manifest, -1, directory, scratch)

    assert "manifest_index" in one_error_line(result)
    assert_nothing_written(labeling_db, directory, scratch)


@pytest.mark.parametrize("content", [None, b"not numpy"], ids=["missing", "unloadable"])
def test_a_classifier_file_suite2p_cannot_use_is_refused_before_the_movie(
        labeling_db, run_cli, workspace, content):
    directory, scratch, _ = workspace
    manifest = write_manifest(directory, [{"input_video": str(directory / "no_movie.h5")}])
    classifier = directory / "classifier.npy"
    if content is not None:
        classifier.write_bytes(content)

    result = run_segment(run_cli, manifest, 0, directory, scratch,
                         "--classifier_path", classifier)

    assert one_error_line(result) == (
        f"invalid input: classifier_path: classifier file {classifier} does not exist"
        if content is None
        else f"{classifier} is not a Suite2P classifier file: UnpicklingError")
    assert_nothing_written(labeling_db, directory, scratch)
    # the same for every entry, as an option typo: no entry's failure
    assert labeling_db.query("SELECT count(*) AS n FROM segmentation_failures")[0]["n"] == 0


def test_missing_credentials_are_named_without_any_value(labeling_db, run_cli, workspace):
    directory, scratch, movie = workspace
    manifest = write_manifest(directory, [{"input_video": str(movie)}])

    result = run_segment(run_cli, manifest, 0, directory, scratch,
                         env={"LABELING_PASSWORD": ""})

    assert one_error_line(result) == ("environment variable LABELING_PASSWORD is not set, and "
                                      "there is no password file (PGPASSFILE or ~/.pgpass)")
    assert_nothing_written(labeling_db, directory, scratch)


def test_a_plot_that_cannot_be_rendered_is_logged_and_does_not_stop_the_run(caplog):
    output = Suite2pOutput(
        stat=[{"ypix": np.array([1, 2]), "xpix": np.array([1, 2])}], traces=None,
        neuropil_traces=None, iscell=np.array([[1.0, 0.9]]),
        mean_image=np.zeros(0, np.float32),  # no image to draw on
        nframes=100, video_shape=(8, 8), settings={}, suite2p_version="1.1.0", seconds=1.0,
        frame_source="hdf5_stream", stage_seconds={}, scratch_bytes=0)

    with caplog.at_level(logging.ERROR, logger="slapp.segmentation.segment"):
        png = Segment._render_plot(1001, output)

    assert png is None
    [record] = caplog.records
    assert record.getMessage() == ("experiment 1001: the plot of ROI outlines could not be "
                                   "rendered; the run is stored without it")
    assert record.exc_info is not None
