"""Serve an HDF5 movie to Suite2P's pipeline as int16 frames, straight from the file.

Suite2P's ``run_s2p`` first copies the whole movie into an int16 binary file on
scratch, then reads that file while it bins, detects and extracts. With
registration off the copy is not needed: Suite2P's ``pipeline()`` reads frames
only as ``frames[start:stop]`` slices of an array-like (when binning the movie
for detection and when extracting traces). :class:`H5Frames` is such an array-like
over the movie's ``data`` dataset:

* it converts every frame exactly as Suite2P's own HDF5 converter
  (``suite2p/io/h5.py``) does before writing its binary file, so the pipeline
  sees the same int16 numbers (:func:`suite2p_int16`);
* it reads whole blocks of frames aligned with the dataset's chunks, through an
  h5py chunk cache sized for one read, and never holds the whole movie;
* a background thread reads the block after the one just served while Suite2P
  computes on the current one (read-ahead);
* it accumulates the mean image, frame by frame in Suite2P's batches and in
  float32, as the converter does, while the blocks go by
  (:meth:`H5Frames.mean_image`);
* it refuses a floating-point movie holding NaN or infinity (which the int16
  conversion would turn into arbitrary numbers that Suite2P segments as
  cells): the first block that holds one raises :class:`NonFiniteMovieException`,
  naming how many values in which frames, so checking costs no extra pass
  over a good movie.
"""
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import h5py
import numpy as np

from slapp.contracts.movie import MOVIE_DATASET
from slapp.errors import SlappError

logger = logging.getLogger(__name__)

# Integer and floating-point movies convert to int16 as Suite2P converts them;
# anything else (booleans, complex numbers, strings) is left to Suite2P's binary path.
STREAMABLE_KINDS = "uif"
# A block holds whole chunks along time. Chunks longer than this many Suite2P
# batches would make one block (and the memory it takes) a large part of the movie.
MAX_CHUNK_BATCHES = 4
# One HDF5 read call covers about this many bytes of the stored movie: h5py keeps
# the GIL during a read, so reading a block in pieces lets Suite2P's thread run
# between them.
READ_PIECE_BYTES = 8 << 20
# Frame ranges a non-finite movie's message names before "(and N more frames)".
NAMED_RANGES = 3


class NonFiniteMovieException(SlappError):
    """A floating-point movie holds NaN or infinity."""


def nonfinite_per_frame(frames: np.ndarray) -> np.ndarray:
    """How many values of each frame are NaN or infinite (zeros for an integer movie).

    Parameters
    ----------
    frames : numpy.ndarray
        ``(frames, height, width)`` in the movie's dtype.

    Returns
    -------
    numpy.ndarray
        One count per frame.
    """
    if frames.dtype.kind != "f":
        return np.zeros(len(frames), np.int64)
    return np.count_nonzero(~np.isfinite(frames), axis=(1, 2))


def _frame_ranges(frames: list[int]) -> list[tuple[int, int]]:
    """Sorted frame indices as ranges: [3, 100, 101, 102] -> [(3, 3), (100, 102)]."""
    ranges: list[list[int]] = []
    for frame in frames:
        if ranges and frame == ranges[-1][1] + 1:
            ranges[-1][1] = frame
        else:
            ranges.append([frame, frame])
    return [(low, high) for low, high in ranges]


def nonfinite_exception(path: Path, counts: dict[int, int]) -> NonFiniteMovieException:
    """The one-line refusal of a movie with ``counts[frame]`` non-finite values per frame.

    Parameters
    ----------
    path : Path
        The movie.
    counts : dict
        Frame index -> number of NaN or infinite values in it (only frames with any).

    Returns
    -------
    NonFiniteMovieException
        e.g. ``movie m.h5 has 10,100 non-finite values (NaN or infinity) in frames
        7, 100-199: ...``; past three ranges, ``(and N more frames)``.
    """
    ranges = _frame_ranges(sorted(counts))
    named = ", ".join(f"{low}" if low == high else f"{low}-{high}"
                      for low, high in ranges[:NAMED_RANGES])
    more = sum(high - low + 1 for low, high in ranges[NAMED_RANGES:])
    if more:
        named += f" (and {more} more frame{'s' if more > 1 else ''})"
    total = sum(counts.values())
    return NonFiniteMovieException(
        f"movie {path} has {total:,} non-finite value{'s' if total > 1 else ''} (NaN or "
        f"infinity) in frame{'s' if len(counts) > 1 else ''} {named}: Suite2P needs finite "
        "numbers; fix or exclude the movie")


def check_finite(path: Path, batch_frames: int) -> None:
    """Read a floating-point movie once and refuse it if it holds NaN or infinity.

    For Suite2P's binary path, whose converter reads the frames itself; the
    stream checks as it reads (:class:`H5Frames`). An integer movie is not read.

    Parameters
    ----------
    path : Path
        The HDF5 movie.
    batch_frames : int
        Frames read at once.

    Raises
    ------
    NonFiniteMovieException
        Naming how many values in which frames.
    """
    with h5py.File(path, "r") as movie:
        dataset = movie[MOVIE_DATASET]
        if dataset.dtype.kind != "f":
            return
        counts: dict[int, int] = {}
        for start in range(0, dataset.shape[0], batch_frames):
            per_frame = nonfinite_per_frame(dataset[start:start + batch_frames])
            counts.update({start + int(index): int(per_frame[index])
                           for index in np.flatnonzero(per_frame)})
    if counts:
        raise nonfinite_exception(path, counts)


def suite2p_int16(frames: np.ndarray) -> np.ndarray:
    """Convert frames to int16 exactly as Suite2P 1.1's HDF5 converter does.

    Suite2P halves uint16 frames (``im / 2`` in float64, then truncated to
    int16), which is ``frames >> 1`` for every uint16 value, and casts every
    other dtype to int16 with numpy's ``astype`` (int16 unchanged, wider integers
    wrapped, floats truncated toward zero).

    Parameters
    ----------
    frames : numpy.ndarray
        Frames in the movie's dtype. A uint16 array is halved in place.

    Returns
    -------
    numpy.ndarray
        int16 frames; for uint16 and int16 input a view of ``frames``.
    """
    if frames.dtype.kind == "u" and frames.dtype.itemsize == 2:
        np.right_shift(frames, 1, out=frames)
        return frames.view(np.int16)
    if frames.dtype == np.int16:
        return frames
    return frames.astype(np.int16)


def stream_problem(path: Path, batch_frames: int) -> str | None:
    """Say why the movie at ``path`` cannot be streamed, or return None if it can.

    Parameters
    ----------
    path : Path
        The HDF5 movie (dataset ``data``, frames x height x width).
    batch_frames : int
        Suite2P's batch of frames (its ``db["batch_size"]``).

    Returns
    -------
    str or None
        A reason for the log, e.g. ``"dataset dtype complex64"``.
    """
    with h5py.File(path, "r") as movie:
        dataset = movie[MOVIE_DATASET]
        if dataset.ndim != 3:
            return f"dataset has {dataset.ndim} dimensions, not 3"
        if dataset.dtype.kind not in STREAMABLE_KINDS:
            return f"dataset dtype {dataset.dtype} is not a number type"
        chunk_frames = dataset.chunks[0] if dataset.chunks else 1
        if chunk_frames > MAX_CHUNK_BATCHES * batch_frames:
            return f"its chunks span {chunk_frames} frames"
    return None


def _block_frames(chunk_frames: int, batch_frames: int, nframes: int) -> int:
    """Frames per block: Suite2P's batch rounded up to whole chunks along time."""
    return min(nframes, -(-batch_frames // chunk_frames) * chunk_frames)


def _piece_frames(chunk_frames: int, frame_bytes: int, block_frames: int) -> int:
    """Frames per HDF5 read: whole chunks along time, about READ_PIECE_BYTES."""
    chunks = max(1, READ_PIECE_BYTES // (chunk_frames * frame_bytes))
    return min(block_frames, chunks * chunk_frames)


def _next_prime(number: int) -> int:
    """The smallest prime >= number (HDF5 wants a prime count of chunk-cache slots)."""
    candidate = max(2, number)
    while any(candidate % divisor == 0 for divisor in range(2, int(candidate ** 0.5) + 1)):
        candidate += 1
    return candidate


def chunk_cache_settings(shape: tuple[int, int, int], chunks: tuple[int, int, int] | None,
                         itemsize: int, piece_frames: int) -> dict:
    """h5py ``File`` keywords for a chunk cache that holds every chunk one read touches.

    Each chunk is then read (and decompressed) once per read, also when a read
    covers a chunk only in part; chunks fully read are evicted first.

    Parameters
    ----------
    shape : tuple of int
        The dataset's ``(frames, height, width)``.
    chunks : tuple of int or None
        Its chunk shape; None for contiguous storage (which needs no cache).
    itemsize : int
        Bytes per stored value.
    piece_frames : int
        Frames per read.

    Returns
    -------
    dict
        ``rdcc_nbytes``, ``rdcc_nslots`` and ``rdcc_w0`` for ``h5py.File``.
    """
    if chunks is None:
        return {"rdcc_nbytes": 0, "rdcc_nslots": 1, "rdcc_w0": 1.0}
    along = [-(-piece_frames // chunks[0]) + 1, -(-shape[1] // chunks[1]),
             -(-shape[2] // chunks[2])]
    count = int(np.prod(along))
    return {"rdcc_nbytes": count * int(np.prod(chunks)) * itemsize,
            "rdcc_nslots": _next_prime(10 * count), "rdcc_w0": 1.0}


class _SequentialMean:
    """Suite2P's mean image: float32 sums over its batches, frames added in order.

    Suite2P's converter adds ``batch.astype(float32).sum(axis=0)`` of each batch
    of ``batch_frames`` frames to a float32 total, then divides by the frame
    count; numpy sums along the first axis frame after frame, so adding frames
    one by one to a batch sum gives the very same float32 numbers.
    """

    def __init__(self, nframes: int, frame_shape: tuple[int, int], batch_frames: int):
        self.nframes, self.batch_frames = nframes, batch_frames
        self.cursor = 0
        self._total = np.zeros(frame_shape, np.float32)
        self._batch = np.zeros(frame_shape, np.float32)

    @property
    def complete(self) -> bool:
        return self.cursor == self.nframes

    def add(self, start: int, frames: np.ndarray) -> None:
        """Add frames ``start ...``; ignored unless they continue the frames added so far."""
        if not start <= self.cursor < start + len(frames):
            return
        for frame in frames[self.cursor - start:]:
            self._batch += frame
            self.cursor += 1
            if self.cursor % self.batch_frames == 0 or self.cursor == self.nframes:
                self._total += self._batch
                self._batch[:] = 0

    def mean(self) -> np.ndarray:
        mean = self._total.copy()
        mean /= self.nframes
        return mean


class H5Frames:
    """The movie's ``data`` dataset as Suite2P's int16 frames, read block by block.

    Supports what Suite2P's pipeline uses of its frame source: ``shape``,
    ``dtype``, ``ndim``, ``len()`` and ``frames[start:stop]`` (a slice of whole
    frames, optionally followed by indices of the other axes), which returns a new
    int16 array.

    Parameters
    ----------
    path : Path
        The HDF5 movie (dataset ``data``, frames x height x width).
    batch_frames : int
        Suite2P's batch of frames: blocks are this many frames rounded up to
        whole chunks, and the mean image is summed in batches of it.
    read_ahead : bool
        Read the next block in a background thread while the caller computes.

    Raises
    ------
    NonFiniteMovieException
        From a read (``frames[...]``, :meth:`mean_image`) of a block holding NaN
        or infinity, once the rest of the movie has been counted too, so the
        message names every such frame.
    """

    dtype = np.dtype(np.int16)
    ndim = 3

    def __init__(self, path: Path, batch_frames: int = 500, read_ahead: bool = True):
        self.path = Path(path)
        with h5py.File(self.path, "r") as movie:
            dataset = movie[MOVIE_DATASET]
            self.shape = tuple(int(size) for size in dataset.shape)
            stored_dtype, chunks = dataset.dtype, dataset.chunks
        nframes, height, width = self.shape
        chunk_frames = chunks[0] if chunks else 1
        self._stored_dtype = stored_dtype.newbyteorder("=")
        self.block_frames = _block_frames(chunk_frames, batch_frames, nframes)
        self._piece_frames = _piece_frames(chunk_frames, height * width * stored_dtype.itemsize,
                                           self.block_frames)
        self.cache_settings = chunk_cache_settings(self.shape, chunks, stored_dtype.itemsize,
                                                   self._piece_frames)
        self._file = h5py.File(self.path, "r", **self.cache_settings)
        self._dataset = self._file[MOVIE_DATASET]
        self._mean = _SequentialMean(nframes, (height, width), batch_frames)
        self._blocks: dict[int, np.ndarray] = {}
        self._pending: dict[int, Future] = {}
        self._executor = ThreadPoolExecutor(1, "h5-read-ahead") if read_ahead else None
        self._lock = threading.Lock()
        self.read_seconds = 0.0
        self.wait_seconds = 0.0
        self.blocks_read = 0

    def __len__(self) -> int:
        return self.shape[0]

    def __enter__(self) -> "H5Frames":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop the read-ahead thread and close the file."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        self._blocks.clear()
        self._pending.clear()
        if self._file.id.valid:
            self._file.close()

    def __getitem__(self, key) -> np.ndarray:
        frame_key, rest = (key[0], key[1:]) if isinstance(key, tuple) else (key, ())
        if isinstance(frame_key, (int, np.integer)):
            return self[int(frame_key):int(frame_key) + 1][(0, *rest)]
        if not isinstance(frame_key, slice):
            raise TypeError(f"H5Frames takes a slice of frames, not {type(frame_key).__name__}")
        start, stop, step = frame_key.indices(self.shape[0])
        if step != 1:
            raise TypeError("H5Frames takes a slice of consecutive frames (step 1)")
        frames = self._frames(start, max(start, stop))
        return frames[(slice(None), *rest)] if rest else frames

    def _frames(self, start: int, stop: int) -> np.ndarray:
        """Frames ``start:stop`` as a new int16 array; the next block is then read ahead."""
        first, last = start // self.block_frames, (stop - 1) // self.block_frames
        for index in [index for index in self._blocks if index < first]:
            del self._blocks[index]
        for index in [index for index in self._pending if index < first]:
            self._pending.pop(index).cancel()  # a guess that missed: drop it
        if stop - start == 0:
            out = np.empty((0, *self.shape[1:]), np.int16)
        elif first == last and self._block_span(first) == (start, stop):
            out = self._block(first)
            del self._blocks[first]  # handed out whole: never aliased by a later request
        else:
            out = np.empty((stop - start, *self.shape[1:]), np.int16)
            for index in range(first, last + 1):
                block_start, block_stop = self._block_span(index)
                low, high = max(start, block_start), min(stop, block_stop)
                out[low - start:high - start] = self._block(index)[low - block_start:
                                                                    high - block_start]
                if index < last:  # only the last block may serve the next request
                    del self._blocks[index]
        if stop < self.shape[0]:
            self._read_ahead(stop // self.block_frames)
        return out

    def _block_span(self, index: int) -> tuple[int, int]:
        start = index * self.block_frames
        return start, min(start + self.block_frames, self.shape[0])

    def _block(self, index: int) -> np.ndarray:
        """Block ``index`` from the cache, the read-ahead, or read now (and cached)."""
        if index not in self._blocks:
            started = time.perf_counter()
            if self._executor is None:
                block = self._read_block(index)
            else:
                self._read_ahead(index)
                block = self._pending.pop(index).result()
            self.wait_seconds += time.perf_counter() - started
            self._blocks[index] = block
        return self._blocks[index]

    def _read_ahead(self, index: int) -> None:
        if (self._executor is not None and index not in self._blocks
                and index not in self._pending):
            self._pending[index] = self._executor.submit(self._read_block, index)

    def _read_block(self, index: int) -> np.ndarray:
        """Read one block in chunk-aligned pieces, convert it, feed the mean image."""
        started = time.perf_counter()
        block_start, block_stop = self._block_span(index)
        raw = np.empty((block_stop - block_start, *self.shape[1:]), self._stored_dtype)
        nonfinite: dict[int, int] = {}
        for low in range(block_start, block_stop, self._piece_frames):
            high = min(low + self._piece_frames, block_stop)
            self._dataset.read_direct(raw, np.s_[low:high],
                                      np.s_[low - block_start:high - block_start])
            per_frame = nonfinite_per_frame(raw[low - block_start:high - block_start])
            nonfinite.update({low + int(index): int(per_frame[index])
                              for index in np.flatnonzero(per_frame)})
        if nonfinite:
            self._refuse_nonfinite(nonfinite, block_stop)
        block = suite2p_int16(raw)
        with self._lock:
            self._mean.add(block_start, block)
            self.read_seconds += time.perf_counter() - started
            self.blocks_read += 1
        return block

    def _refuse_nonfinite(self, counts: dict[int, int], scanned_to: int) -> None:
        """Count the non-finite values of the frames after ``scanned_to`` too, then raise."""
        for low in range(scanned_to, self.shape[0], self._piece_frames):
            per_frame = nonfinite_per_frame(self._dataset[low:low + self._piece_frames])
            counts.update({low + int(index): int(per_frame[index])
                           for index in np.flatnonzero(per_frame)})
        raise nonfinite_exception(self.path, counts)

    def mean_image(self) -> np.ndarray:
        """Suite2P's ``meanImg`` of the movie, reading the frames it has not seen yet.

        Returns
        -------
        numpy.ndarray
            float32 ``(height, width)``, equal to what Suite2P's converter computes.
        """
        while not self._mean.complete:
            index = self._mean.cursor // self.block_frames
            if index in self._pending:
                self._pending.pop(index).result()
            elif index in self._blocks:
                with self._lock:
                    self._mean.add(self._block_span(index)[0], self._blocks[index])
            else:
                self._read_block(index)
        return self._mean.mean()
