"""A movie's fingerprint tells a changed movie from the one a run segmented."""
import json
import os
import re
import shutil

import h5py
import numpy as np
import pytest

from slapp.data_selection.utils import FindFileException
from slapp.segmentation.fingerprint import (fingerprint_changes, movie_fingerprint,
                                            sampled_frame_indices)

MTIME_NS = 1_790_000_000_123_456_789  # 2026-09-21T... UTC, with nanoseconds


def write_movie(path, nframes=50, dtype=np.uint16, seed=0, mtime_ns=MTIME_NS):
    frames = np.random.default_rng(seed).integers(0, 4000, (nframes, 32, 40)).astype(dtype)
    with h5py.File(path, "w") as movie:
        movie.create_dataset("data", data=frames)
    os.utime(path, ns=(mtime_ns, mtime_ns))
    return frames


def test_a_fingerprint_names_the_file_and_a_sample_of_its_frames(tmp_path):
    path = tmp_path / "movie.h5"
    write_movie(path)

    fingerprint = movie_fingerprint(path)

    assert fingerprint["size_bytes"] == path.stat().st_size
    assert fingerprint["mtime_ns"] == MTIME_NS
    assert fingerprint["shape"] == [50, 32, 40] and fingerprint["dtype"] == "uint16"
    assert fingerprint["sampled_frames"] == [0, 7, 14, 21, 28, 35, 42, 49]
    assert re.fullmatch("[0-9a-f]{64}", fingerprint["sampled_sha256"])
    # what jsonb stores and gives back compares equal
    assert fingerprint_changes(json.loads(json.dumps(fingerprint)), movie_fingerprint(path)) == []


def test_a_copy_that_keeps_the_time_is_the_same_movie(tmp_path):
    write_movie(tmp_path / "movie.h5")
    shutil.copy2(tmp_path / "movie.h5", tmp_path / "copy.h5")

    assert movie_fingerprint(tmp_path / "copy.h5") == movie_fingerprint(tmp_path / "movie.h5")


def test_another_movie_with_the_same_size_and_time_is_caught_by_its_frames(tmp_path):
    path = tmp_path / "movie.h5"
    write_movie(path)
    stored = movie_fingerprint(path)
    with h5py.File(path, "r+") as movie:
        movie["data"][21] = movie["data"][21] + 1  # one sampled frame changed in place
    os.utime(path, ns=(MTIME_NS, MTIME_NS))

    assert fingerprint_changes(stored, movie_fingerprint(path)) == ["sampled frames differ"]


def test_a_rewritten_movie_names_each_difference(tmp_path):
    path = tmp_path / "movie.h5"
    write_movie(path)
    stored = movie_fingerprint(path)
    write_movie(path, nframes=60, dtype=np.float32, seed=1, mtime_ns=MTIME_NS + 2 * 10**9)

    changes = fingerprint_changes(stored, movie_fingerprint(path))

    assert changes == [
        f"size {stored['size_bytes']} -> {path.stat().st_size} bytes",
        "mtime 2026-09-21T14:13:20.123456789Z -> 2026-09-21T14:13:22.123456789Z",
        "shape 50x32x40 -> 60x32x40",
        "dtype uint16 -> float32",
        "sampled frames differ",
    ]


def test_an_unknown_stored_fingerprint_reports_no_change(tmp_path):
    write_movie(tmp_path / "movie.h5")
    assert fingerprint_changes({}, movie_fingerprint(tmp_path / "movie.h5")) == []


def test_short_movies_sample_every_frame():
    assert sampled_frame_indices(1) == [0]
    assert sampled_frame_indices(3) == [0, 1, 2]
    assert sampled_frame_indices(100_000) == [0, 14285, 28571, 42856, 57142, 71427, 85713,
                                              99999]


@pytest.mark.parametrize("make, message", [
    (lambda path: None, "movie {path} does not exist"),
    (lambda path: path.write_text("not HDF5"), "cannot read movie {path} as HDF5: "),
])
def test_a_movie_that_cannot_be_read_is_named(tmp_path, make, message):
    path = tmp_path / "movie.h5"
    make(path)
    with pytest.raises(FindFileException) as error:
        movie_fingerprint(path)
    assert str(error.value).startswith(message.format(path=path))
