"""The HDF5 frame source against Suite2P's own HDF5 converter, on real files.

Every frame :class:`H5Frames` serves, and the mean image it accumulates, must
equal what ``suite2p.io.h5py_to_binary`` writes into its binary file and
``db.npy`` for the same file: per dtype (uint16 halved, also above 32767; int16
as is; float32 and others cast) and per storage layout (contiguous, chunked,
gzip-compressed). The full-pipeline comparisons are in test_suite2p_runner.py.
"""
import numpy as np
import h5py
import pytest

from slapp.segmentation.h5_frames import (H5Frames, MAX_CHUNK_BATCHES, NonFiniteMovieException,
                                          check_finite, chunk_cache_settings, stream_problem,
                                          suite2p_int16)

NFRAMES, HEIGHT, WIDTH = 1130, 24, 40  # three Suite2P batches of 500, the last one short


def random_frames(dtype, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return rng.normal(900, 400, (NFRAMES, HEIGHT, WIDTH)).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, (NFRAMES, HEIGHT, WIDTH), endpoint=True,
                        dtype=dtype)


def write(path, frames, **layout):
    with h5py.File(path, "w") as movie:
        movie.create_dataset("data", data=frames, **layout)
    return path


def suite2p_conversion(path, tmp_path):
    """Suite2P's own converter on the file: its int16 frames and db (meanImg)."""
    from suite2p.io import h5py_to_binary

    db = {"file_list": [str(path)], "nplanes": 1, "nchannels": 1, "batch_size": 500,
          "h5py_key": "data", "functional_chan": 1, "db_path": str(tmp_path / "db.npy"),
          "settings_path": str(tmp_path / "settings.npy")}
    with open(tmp_path / "data.bin", "wb") as binary:
        h5py_to_binary([db], {"run": {"do_registration": 0}}, [binary], None)
    frames = np.fromfile(tmp_path / "data.bin", np.int16).reshape(-1, HEIGHT, WIDTH)
    return frames, db


LAYOUTS = {
    "contiguous": {},
    "chunked": {"chunks": (7, 16, 40)},
    "gzip": {"chunks": (64, 24, 40), "compression": "gzip", "shuffle": True},
}
DTYPES = [np.uint16, np.int16, np.float32, np.uint8, np.int32, np.float64, ">u2"]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_frames_and_mean_image_equal_suite2p_conversion(tmp_path, dtype, layout):
    frames = random_frames(np.dtype(dtype).newbyteorder("="))
    path = write(tmp_path / "movie.h5", frames.astype(dtype), **LAYOUTS[layout])
    expected, db = suite2p_conversion(path, tmp_path)
    for read_ahead in (True, False):
        with H5Frames(path, read_ahead=read_ahead) as source:
            assert source.shape == (NFRAMES, HEIGHT, WIDTH) and source.dtype == np.int16
            # Suite2P's two passes: binning batches of 500, then extraction batches
            served = np.concatenate([source[start:start + 500]
                                     for start in range(0, NFRAMES, 500)])
            np.testing.assert_array_equal(served, expected)
            again = np.concatenate([source[start:start + 300]
                                    for start in range(0, NFRAMES, 300)])
            np.testing.assert_array_equal(again, expected)
            mean = source.mean_image()
        assert mean.dtype == np.float32
        np.testing.assert_array_equal(mean, db["meanImg"])


def test_uint16_above_32767_is_halved_like_suite2p(tmp_path):
    frames = np.full((20, 4, 4), 65535, np.uint16)
    frames[:, 0, 0] = 32769
    frames[:, 0, 1] = 1
    path = write(tmp_path / "movie.h5", frames)
    with H5Frames(path) as source:
        served = source[0:20]
    assert served[0, 0, 0] == 16384 and served[0, 0, 1] == 0 and served[0, 1, 1] == 32767
    np.testing.assert_array_equal(
        suite2p_int16(np.array([0, 1, 32767, 32768, 65535], np.uint16)),
        (np.array([0, 1, 32767, 32768, 65535]) / 2).astype(np.int16))


def test_indexing_as_the_pipeline_and_numpy_index(tmp_path):
    frames = random_frames(np.int16)
    path = write(tmp_path / "movie.h5", frames, chunks=(10, 24, 40))
    with H5Frames(path, batch_frames=100) as source:
        np.testing.assert_array_equal(source[np.int64(990):np.int64(1010)], frames[990:1010])
        np.testing.assert_array_equal(source[5], frames[5])
        np.testing.assert_array_equal(source[3:9, 2:5, ::2], frames[3:9, 2:5, ::2])
        np.testing.assert_array_equal(source[1120:5000], frames[1120:])
        assert source[10:10].shape == (0, HEIGHT, WIDTH)
        assert len(source) == NFRAMES and source.ndim == 3
        # a slice handed out whole is the caller's: changing it changes no later read
        whole = source[0:100]
        whole[:] = 0
        np.testing.assert_array_equal(source[0:100], frames[0:100])
        with pytest.raises(TypeError, match="consecutive"):
            source[0:10:2]


def test_no_read_holds_the_whole_movie(tmp_path):
    frames = random_frames(np.uint16)
    path = write(tmp_path / "movie.h5", frames, chunks=(10, 24, 40))
    with H5Frames(path, batch_frames=100) as source:
        for start in range(0, NFRAMES, 100):
            source[start:start + 100]
            resident = sum(block.nbytes for block in source._blocks.values())
            assert resident <= 2 * 100 * HEIGHT * WIDTH * 2
        assert source.blocks_read == -(-NFRAMES // 100)  # each block read once
        np.testing.assert_array_equal(source[:], frames >> 1)  # the caller asked for it all
        assert len(source._blocks) == 1  # but only the last block stays


def test_blocks_follow_chunks_and_cache_holds_one_read(tmp_path):
    path = write(tmp_path / "movie.h5", random_frames(np.uint16), chunks=(64, 12, 20),
                 compression="gzip")
    with H5Frames(path, batch_frames=500) as source:
        assert source.block_frames == 512  # 500 rounded up to whole 64-frame chunks
        cache = source.cache_settings
    chunk_bytes = 64 * 12 * 20 * 2
    assert cache["rdcc_nbytes"] >= 4 * chunk_bytes  # every chunk of a frame range fits
    assert chunk_cache_settings((10, 4, 4), None, 2, 10)["rdcc_nbytes"] == 0


def test_stream_problem_names_what_the_stream_cannot_serve(tmp_path):
    assert stream_problem(write(tmp_path / "ok.h5", random_frames(np.uint16)), 500) is None
    complex_movie = write(tmp_path / "complex.h5", np.zeros((20, 4, 4), np.complex64))
    assert "complex64 is not a number type" in stream_problem(complex_movie, 500)
    long_chunks = write(tmp_path / "long.h5", np.zeros((3000, 4, 4), np.uint16),
                        chunks=(MAX_CHUNK_BATCHES * 500 + 1, 4, 4))
    assert "chunks span 2001 frames" in stream_problem(long_chunks, 500)


@pytest.mark.parametrize("read_ahead", [True, False])
@pytest.mark.parametrize("layout", [{}, {"chunks": (100, HEIGHT, WIDTH)}])
def test_non_finite_values_stop_the_first_read_that_meets_them_counting_the_whole_movie(
        tmp_path, read_ahead, layout):
    frames = random_frames(np.float32)
    frames[600, 3, 4] = np.nan   # in the second batch of 500
    frames[601:603] = np.inf     # 2 x 960 values
    frames[1129, 0, :5] = -np.inf  # in the last, short batch: counted all the same
    path = write(tmp_path / "movie.h5", frames, **layout)

    with H5Frames(path, batch_frames=500, read_ahead=read_ahead) as served:
        first = served[0:500]  # a clean batch is served as usual
        with pytest.raises(NonFiniteMovieException) as refused:
            served[500:1000]

    assert np.array_equal(first, suite2p_int16(frames[:500].copy()))
    assert str(refused.value) == (
        f"movie {path} has 1,926 non-finite values (NaN or infinity) in frames 600-602, 1129: "
        "Suite2P needs finite numbers; fix or exclude the movie")


def test_check_finite_reads_only_float_movies_and_names_every_frame(tmp_path):
    integers = write(tmp_path / "integers.h5", random_frames(np.uint16))
    frames = random_frames(np.float64)
    for frame in (1, 3, 5, 7, 8):
        frames[frame, 0, 0] = np.nan
    floats = write(tmp_path / "floats.h5", frames)

    check_finite(integers, 500)
    with pytest.raises(NonFiniteMovieException) as refused:
        check_finite(floats, 500)

    assert str(refused.value) == (
        f"movie {floats} has 5 non-finite values (NaN or infinity) in frames 1, 3, 5 (and 2 "
        "more frames): Suite2P needs finite numbers; fix or exclude the movie")
