"""How much memory a segment task needs, known before the job is submitted.

Suite2P's detection holds the binned movie in memory as float32
(``bins x height x width x 4`` bytes) together with a few working copies of
it, so a task's peak resident memory grows with the binned movie's bytes; the
rest (Python, PyTorch, Suite2P, the blocks of frames being read, the traces) is
nearly constant at the sizes labs record. :func:`predicted_peak_rss_bytes` is
the line fitted to measured peaks (see :data:`BASE_BYTES`), for the streamed
path (registration off, segment's default). The bins are Suite2P's
(:func:`detection_bins`): the manifest's ``nbinned``, unless that would make
bins shorter than ``round(tau * fs)`` frames, Suite2P's smallest bin.

:func:`memory_request` turns a prediction into a scheduler request with a
margin; :func:`out_of_memory_request` gives an entry that was killed for memory
a larger one than the request it died under.
"""
import math
import re

from slapp.contracts.manifest import DEFAULT_BIN_SIZE
from slapp.errors import SlappError

# Fitted by bench/bench_memory.py (least squares over 8 measured runs; residuals
# -0.10 to +0.34 GB): peak RSS of segment's Suite2P run in a fresh process (Python,
# PyTorch, Suite2P and the run) on realistic synthetic movies: 256x256 x 8,000
# frames with 69 and 363 bins, 512x512 x 8,000 frames with 363 and 4,000 bins
# (19.7 GB measured), 256x256 x 48,000 frames with 417 and 2,181 bins (seeds 0 and
# 1, bench_quality.py's segment runs). Points and fit: docs/benchmarks_bins.rst.
BASE_BYTES = 1.100e9
BYTES_PER_BINNED_BYTE = 4.422
# A request is the prediction plus this fraction, rounded up to whole GiB: the
# fit's largest residual stays well inside it, and a page cache or a node's own
# accounting can add a little.
REQUEST_MARGIN = 0.25
# The smallest request printed: the interpreter, PyTorch and Suite2P alone take
# over 1 GiB.
MIN_REQUEST_GIB = 2
# An entry killed for memory under a request gets at least this many times it.
OUT_OF_MEMORY_GROWTH = 1.5
GIB = 1 << 30

_UNITS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_REQUEST = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)


class MemoryRequestException(SlappError):
    """A memory request that cannot be read."""


def detection_bins(nframes: int, nbinned: int, tau: float = 0.7, fs: float = 31.0) -> int:
    """The binned frames Suite2P 1.1 allocates for detection.

    Suite2P bins ``max(1, nframes // nbinned, round(tau * fs))`` frames
    together (``suite2p/detection/detect.py``), so an ``nbinned`` above
    ``nframes / round(tau * fs)`` (above ``nframes / 22`` at segment's default
    tau 0.7 s and 31 Hz) gives no more bins.

    Parameters
    ----------
    nframes, nbinned : int
        The movie's frames and the manifest entry's ``nbinned``.
    tau, fs : float
        The run's Suite2P ``tau`` (s) and ``fs`` (Hz); segment's defaults.

    Returns
    -------
    int
    """
    bin_size = max(1, nframes // nbinned, int(round(tau * fs)))
    return min(nbinned, nframes // bin_size)


def binned_movie_bytes(bins: int, height: int, width: int) -> int:
    """Bytes of the binned movie Suite2P detects on: float32 binned frames."""
    return int(bins) * int(height) * int(width) * 4


def predicted_peak_rss_bytes(nframes: int, nbinned: int, height: int, width: int,
                             tau: float = 0.7, fs: float = 31.0) -> int:
    """Predict the peak resident memory of segmenting one movie.

    Parameters
    ----------
    nframes : int
        Frames of the movie. The streamed run reads it in blocks, so the
        frame count enters through the bins (:func:`detection_bins`).
    nbinned : int
        Binned frames for detection (the manifest entry's ``nbinned``).
    height, width : int
        Frame size in pixels.
    tau, fs : float
        The run's Suite2P ``tau`` and ``fs`` (segment's defaults), which set
        Suite2P's smallest bin.

    Returns
    -------
    int
        Predicted peak RSS in bytes of the segment task.
    """
    if min(nframes, nbinned, height, width) < 1:
        raise ValueError(f"a movie of {nframes} frames of {height}x{width} with {nbinned} "
                         f"bins has no binned movie")
    bins = detection_bins(nframes, nbinned, tau, fs)
    return math.ceil(BASE_BYTES + BYTES_PER_BINNED_BYTE * binned_movie_bytes(bins, height, width))


def _request_gib(nbytes: int) -> int:
    return max(MIN_REQUEST_GIB, math.ceil(nbytes * (1 + REQUEST_MARGIN) / GIB))


def memory_request(nbytes: int) -> str:
    """The scheduler request for a task predicted to peak at ``nbytes``.

    Parameters
    ----------
    nbytes : int
        Predicted peak RSS in bytes.

    Returns
    -------
    str
        Whole GiB, e.g. ``"24G"``: ``nbytes`` plus :data:`REQUEST_MARGIN`,
        rounded up, at least :data:`MIN_REQUEST_GIB`. SLURM reads it as
        ``--mem=24G``; PBS as ``mem=24gb``.
    """
    return f"{_request_gib(nbytes)}G"


def request_bytes(request: str) -> int:
    """Read a memory request (``"16G"``, ``"16gb"``, ``"16000M"``, ``"16000"`` = MB) in bytes.

    Raises
    ------
    MemoryRequestException
        If ``request`` is not a number with an optional K/M/G/T unit.
    """
    match = _REQUEST.match(str(request))
    if not match:
        raise MemoryRequestException(
            f"cannot read memory request {request!r}: expected e.g. 16G, 16gb or 16000M")
    number, unit = match.groups()
    return math.ceil(float(number) * _UNITS[(unit or "m").lower()])


def out_of_memory_request(predicted_bytes: int | None, failed_request: str | None) -> str:
    """A larger request for an entry whose task was killed for memory.

    Parameters
    ----------
    predicted_bytes : int or None
        The entry's predicted peak RSS (:func:`predicted_peak_rss_bytes`);
        None when its movie cannot be read (then the failed request alone,
        at least :data:`MIN_REQUEST_GIB`).
    failed_request : str or None
        The request the task died under (e.g. ``"16G"``), None when unknown.

    Returns
    -------
    str
        The larger of the prediction's request and
        :data:`OUT_OF_MEMORY_GROWTH` times the failed request (whole GiB), so
        that a task that died under a request the model thought enough still
        gets more.
    """
    gib = MIN_REQUEST_GIB if predicted_bytes is None else _request_gib(predicted_bytes)
    if failed_request is not None:
        gib = max(gib, math.ceil(request_bytes(failed_request) * OUT_OF_MEMORY_GROWTH / GIB))
    return f"{gib}G"


# What the job scripts ask (``#SBATCH --mem``, ``#PBS -l mem``): the request of a
# 100,000-frame 512x512 session at the manifest's default bins, the long sessions
# labs record.
JOB_SCRIPT_REQUEST = memory_request(predicted_peak_rss_bytes(
    100_000, 100_000 // DEFAULT_BIN_SIZE, 512, 512))
