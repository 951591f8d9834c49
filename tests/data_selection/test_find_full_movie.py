"""find_full_movie: which file in a LIMS storage directory is the movie to segment;
movie_shape: its frame count and size, read without reading a frame."""
import h5py
import pytest

from slapp.data_selection.utils import (FindFileException, candidate_movie_names,
                                        find_full_movie, movie_shape)


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_candidate_names_prefer_the_concatenated_movie():
    assert candidate_movie_names == ["concat_31Hz_0.h5", "motion_corrected_video.h5"]


def test_finds_the_motion_corrected_movie_in_processed(tmp_path):
    movie = _touch(tmp_path / "processed" / "motion_corrected_video.h5")
    _touch(tmp_path / "processed" / "other_video.h5")

    assert find_full_movie(tmp_path) == movie


def test_concatenated_movie_wins_over_motion_corrected_one(tmp_path):
    _touch(tmp_path / "processed" / "motion_corrected_video.h5")
    concat = _touch(tmp_path / "processed" / "concat" / "concat_31Hz_0.h5")

    assert find_full_movie(tmp_path) == concat


def test_searches_nested_directories(tmp_path):
    movie = _touch(tmp_path / "a" / "b" / "c" / "d" / "motion_corrected_video.h5")

    assert find_full_movie(tmp_path) == movie


def test_two_movies_of_the_preferred_name_is_an_error_naming_both(tmp_path):
    first = _touch(tmp_path / "run1" / "concat_31Hz_0.h5")
    second = _touch(tmp_path / "run2" / "concat_31Hz_0.h5")
    _touch(tmp_path / "processed" / "motion_corrected_video.h5")

    with pytest.raises(FindFileException) as raised:
        find_full_movie(tmp_path)

    assert f"2 files named concat_31Hz_0.h5 in {tmp_path}" in str(raised.value)
    assert str(first) in str(raised.value) and str(second) in str(raised.value)


def test_two_fallback_movies_are_an_error(tmp_path):
    _touch(tmp_path / "processed" / "motion_corrected_video.h5")
    _touch(tmp_path / "old" / "processed" / "motion_corrected_video.h5")

    with pytest.raises(FindFileException, match="2 files named motion_corrected_video.h5"):
        find_full_movie(tmp_path)


def test_a_single_preferred_movie_is_used_even_if_the_fallback_is_duplicated(tmp_path):
    concat = _touch(tmp_path / "concat_31Hz_0.h5")
    _touch(tmp_path / "a" / "motion_corrected_video.h5")
    _touch(tmp_path / "b" / "motion_corrected_video.h5")

    assert find_full_movie(tmp_path) == concat


def test_no_movie_is_an_error_naming_the_directory(tmp_path):
    _touch(tmp_path / "processed" / "motion_corrected_video.h5.tmp")

    with pytest.raises(FindFileException, match=f"no movie .* in {tmp_path}$"):
        find_full_movie(tmp_path)


def test_missing_directory_is_an_error(tmp_path):
    with pytest.raises(FindFileException, match="storage directory .*gone does not exist"):
        find_full_movie(tmp_path / "gone")


def test_returns_the_resolved_absolute_path(tmp_path):
    movie = _touch(tmp_path / "real" / "processed" / "motion_corrected_video.h5")
    (tmp_path / "link").symlink_to(tmp_path / "real")

    found = find_full_movie(tmp_path / "link")

    assert found == movie.resolve()
    assert found.is_absolute() and "link" not in found.parts


def test_frame_count_comes_from_the_shape_alone(tmp_path):
    # 100,000 frames of 512 x 512: 52 GB if a frame were ever read, a few kB on disk.
    path = tmp_path / "long.h5"
    with h5py.File(path, "w") as movie:
        movie.create_dataset("data", shape=(100_000, 512, 512), dtype="uint16",
                             chunks=(1, 512, 512))

    assert movie_shape(path) == (100_000, 512, 512)
    assert path.stat().st_size < 1_000_000
