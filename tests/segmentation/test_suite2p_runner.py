"""The Suite2P runner: the streamed path gives what plain ``run_s2p`` gives.

Each slow test segments a real synthetic movie with :func:`suite2p_outputs`
(which streams the frames from the HDF5 file) and with one plain
``suite2p.run_s2p`` call given the ``db`` and ``settings`` the run recorded, and
compares ROIs (pixels and weights), traces, classes and mean images.
"""
import dataclasses
import threading
import time

import h5py
import numpy as np
import pytest

from slapp.demo.synthetic_movie import MovieSpec, generate_movie
from slapp.segmentation.scratch import directory_bytes
from slapp.segmentation.suite2p_runner import (BINARY, HDF5_STREAM, STAGES, Suite2pOptions,
                                               Suite2pRunException, binary_path_reason,
                                               build_suite2p_inputs,
                                               estimated_scratch_bytes, suite2p_outputs)

SPEC = MovieSpec(nframes=1200, height=96, width=96, ncells=20, seed=3)
NBINNED = SPEC.nframes // 115
OPTIONS = Suite2pOptions(fs=31.0, tau=0.7, diameter=14.0, threshold_scaling=0.75,
                         spatial_scale=2, highpass_neuropil=25, max_overlap=0.75,
                         neuropil_coefficient=0.7, do_registration=False, torch_device="cpu",
                         classifier_path=None)


@pytest.fixture(scope="module")
def synthetic_uint16():
    movie, _ = generate_movie(SPEC)
    return movie


def write(path, frames, **layout):
    with h5py.File(path, "w") as movie:
        movie.create_dataset("data", data=frames, **layout)
    return path


MOVIES = {
    # detector values scaled into the top half of uint16: Suite2P halves them
    "uint16 above 32767": lambda movie: (np.minimum(movie.astype(np.uint32) * 120, 65535)
                                         .astype(np.uint16), {}),
    "int16": lambda movie: ((movie.astype(np.int32) - 150).astype(np.int16), {}),
    "float32": lambda movie: (movie.astype(np.float32) * 1.37 + 0.5, {}),
    "uint16 chunked gzip": lambda movie: (movie, {"chunks": (16, 48, 96), "compression": "gzip",
                                                  "shuffle": True}),
}


def plain_run_s2p(recorded, work_dir):
    """One plain ``run_s2p`` call with the recorded db and settings; its plane folder."""
    from suite2p import run_s2p

    db, settings = recorded["db"], recorded["settings"]
    db.update({"save_path0": str(work_dir), "fast_disk": str(work_dir)})
    run_s2p(db=db, settings=settings)
    plane = work_dir / "suite2p" / "plane0"
    return {"stat": np.load(plane / "stat.npy", allow_pickle=True),
            "F": np.load(plane / "F.npy"), "Fneu": np.load(plane / "Fneu.npy"),
            "iscell": np.load(plane / "iscell.npy"),
            "db": np.load(plane / "db.npy", allow_pickle=True).item()}


def assert_same_as_plain(output, plain):
    assert output.n_rois == len(plain["stat"]) > 0
    for ours, theirs in zip(output.stat, plain["stat"]):
        for key in ("ypix", "xpix", "lam", "med"):
            np.testing.assert_array_equal(ours[key], theirs[key])
        assert ours["skew"] == pytest.approx(theirs["skew"], rel=1e-6)
    np.testing.assert_allclose(output.traces, plain["F"], rtol=1e-6)
    np.testing.assert_allclose(output.neuropil_traces, plain["Fneu"], rtol=1e-6)
    np.testing.assert_allclose(output.iscell, plain["iscell"], rtol=1e-6)
    np.testing.assert_array_equal(output.mean_image, plain["db"]["meanImg"])
    assert output.nframes == plain["db"]["nframes"]


class ScratchWatcher(threading.Thread):
    """Polls a directory's size while Suite2P runs, keeping the largest seen."""

    def __init__(self, directory):
        super().__init__(daemon=True)
        self.directory, self.peak, self.done = directory, 0, threading.Event()

    def run(self):
        while not self.done.is_set():
            try:
                self.peak = max(self.peak, directory_bytes(self.directory))
            except FileNotFoundError:  # a file deleted while walking
                pass
            time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize("kind", MOVIES)
def test_streamed_run_equals_plain_run_s2p(tmp_path, synthetic_uint16, kind):
    frames, layout = MOVIES[kind](synthetic_uint16)
    path = write(tmp_path / "movie.h5", frames, **layout)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    watcher = ScratchWatcher(scratch)
    watcher.start()
    with suite2p_outputs(path, NBINNED, OPTIONS, scratch) as output:
        watcher.done.set()
        watcher.join()
        assert output.frame_source == HDF5_STREAM
        assert set(output.stage_seconds) == set(STAGES)
        assert all(seconds >= 0 for seconds in output.stage_seconds.values())
        assert sum(output.stage_seconds.values()) <= output.seconds
        plain = plain_run_s2p(output.settings, tmp_path / "plain")
        assert_same_as_plain(output, plain)
        binary_bytes = 2 * frames.size
        # no binary copy: Suite2P's outputs only, a few percent of the copy at this size
        assert output.scratch_bytes == directory_bytes(scratch)
        assert watcher.peak <= output.scratch_bytes < binary_bytes / 10
        assert output.scratch_bytes < estimated_scratch_bytes(frames.shape, False)
    assert list(scratch.iterdir()) == []


@pytest.mark.slow
def test_a_classifier_file_classifies_the_rois_instead_of_the_builtin_one(tmp_path,
                                                                         synthetic_uint16):
    from suite2p.classification import builtin_classfile, classify

    from slapp.labeling.classifier_file import SUITE2P_KEYS, classifier_bytes

    rng = np.random.default_rng(2)
    lab = tmp_path / "lab.npy"
    lab.write_bytes(classifier_bytes(rng.normal(size=(200, 3)), np.tile([0, 1], 100),
                                     SUITE2P_KEYS))
    path = write(tmp_path / "movie.h5", synthetic_uint16)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    options = dataclasses.replace(OPTIONS, classifier_path=str(lab))
    with suite2p_outputs(path, NBINNED, options, scratch) as output:
        stat = np.asarray(output.stat)
        np.testing.assert_allclose(output.iscell, classify(stat=stat, classfile=str(lab)),
                                   rtol=1e-6)
        assert not np.allclose(output.iscell, classify(stat=stat, classfile=builtin_classfile))
        assert output.settings["settings"]["classification"]["classifier_path"] == str(lab)


@pytest.mark.slow
def test_registration_uses_the_binary_path(tmp_path, caplog):
    # Suite2P's non-rigid registration fails on frames of one or two of its 128-pixel blocks
    movie, _ = generate_movie(MovieSpec(nframes=300, height=256, width=256, ncells=40))
    path = write(tmp_path / "movie.h5", movie)
    options = Suite2pOptions(**{**OPTIONS.__dict__, "do_registration": True})
    with caplog.at_level("INFO", logger="slapp"):
        with suite2p_outputs(path, NBINNED, options, tmp_path) as output:
            assert output.frame_source == BINARY
            assert output.scratch_bytes >= 2 * movie.size  # the binary copy
            assert output.scratch_bytes <= estimated_scratch_bytes(movie.shape, True)
            assert output.stage_seconds["read_and_bin"] > 0
    assert "frame source binary (registration is on)" in caplog.text


def test_side_files_suite2p_reads_send_the_run_to_the_binary_path(tmp_path):
    path = write(tmp_path / "movie.h5", np.zeros((20, 8, 8), np.uint16))
    db, settings = build_suite2p_inputs(path, 2, OPTIONS, tmp_path)
    assert binary_path_reason(path, db, settings) is None
    np.save(tmp_path / "bad_frames.npy", np.array([3]))
    assert "bad_frames.npy exists" in binary_path_reason(path, db, settings)
    complex_path = write(tmp_path / "c.h5", np.zeros((20, 8, 8), np.complex64))
    (tmp_path / "bad_frames.npy").unlink()
    assert "cannot be streamed" in binary_path_reason(complex_path, db, settings)


def test_scratch_estimate():
    shape = (100_000, 512, 512)
    streamed, registered = estimated_scratch_bytes(shape, False), estimated_scratch_bytes(shape,
                                                                                        True)
    assert registered - streamed == 2 * 100_000 * 512 * 512
    assert streamed < 0.1 * registered


@pytest.mark.slow
def test_no_roi_is_a_result_on_the_stream(tmp_path):
    rng = np.random.default_rng(0)
    path = write(tmp_path / "flat.h5", rng.poisson(100, (300, 48, 48)).astype(np.uint16))
    with suite2p_outputs(path, 2, OPTIONS, tmp_path) as output:
        assert output.frame_source == HDF5_STREAM
        assert output.n_rois == 0 and output.traces is None
        assert output.mean_image.shape == (48, 48)
        assert output.stage_seconds["extraction"] == 0


def test_a_failure_on_the_stream_is_suite2ps_message_and_leaves_no_work_dir(tmp_path):
    path = write(tmp_path / "movie.h5", np.zeros((5, 8, 8), np.uint16))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with pytest.raises(Suite2pRunException, match="number of frames should be at least 50"):
        with suite2p_outputs(path, 1, OPTIONS, scratch):
            pass
    assert list(scratch.iterdir()) == []
