"""A movie's fingerprint, stored with each run: has the movie changed since it was segmented?

The fingerprint holds the file's size and modification time, the movie's shape
and dtype, and a SHA-256 of a few frames spread over the movie. Size and time
catch a rewritten file at the cost of one ``stat``; the sampled frames catch a
replacement that kept both (a copy with ``cp -p`` or ``rsync -t`` of another
movie of the same shape), and cost a few frames read, however long the movie.
Any difference counts as a change.
"""
import datetime
import hashlib
from pathlib import Path

import h5py
import numpy as np

from slapp.contracts.movie import MOVIE_DATASET, FindFileException, movie_shape
from slapp.utils.cli import one_line

# Eight frames (first, last and six between): 4 MB of a 512x512 uint16 movie,
# read in milliseconds, yet spread over every eighth of the recording.
SAMPLED_FRAME_COUNT = 8


def sampled_frame_indices(nframes: int, count: int = SAMPLED_FRAME_COUNT) -> list[int]:
    """``count`` frame indices spread evenly from the first frame to the last.

    Integer arithmetic only, so every machine picks the same frames.
    """
    if nframes <= count:
        return list(range(nframes))
    return [step * (nframes - 1) // (count - 1) for step in range(count)]


def movie_fingerprint(path: Path) -> dict:
    """Fingerprint an HDF5 movie (dataset ``data``, frames x height x width).

    Parameters
    ----------
    path : Path
        The movie.

    Returns
    -------
    dict
        JSON-ready: ``size_bytes`` and ``mtime_ns`` (ints), ``shape`` (list),
        ``dtype`` (e.g. ``"uint16"``), ``sampled_frames`` (the indices read)
        and ``sampled_sha256`` (hex digest of those frames' bytes, in order).

    Raises
    ------
    FindFileException
        If the file is missing, not an HDF5 movie, or its frames cannot be read.
    """
    path = Path(path)
    shape = movie_shape(path)
    status = path.stat()
    indices = sampled_frame_indices(shape[0])
    digest = hashlib.sha256()
    try:
        with h5py.File(path, "r") as movie:
            dataset = movie[MOVIE_DATASET]
            dtype = dataset.dtype
            for index in indices:
                digest.update(np.ascontiguousarray(dataset[index]).tobytes())
    except (OSError, ValueError) as error:
        raise FindFileException(f"cannot read frames of movie {path}: {one_line(error)}"
                                ) from error
    return {"size_bytes": status.st_size, "mtime_ns": status.st_mtime_ns,
            "shape": list(shape), "dtype": str(dtype), "sampled_frames": indices,
            "sampled_sha256": digest.hexdigest()}


def _time(mtime_ns: int) -> str:
    when = datetime.datetime.fromtimestamp(mtime_ns // 10**9, tz=datetime.timezone.utc)
    return f"{when:%Y-%m-%dT%H:%M:%S}.{mtime_ns % 10**9:09d}Z"


def mtime_change(stored: dict, current: dict) -> str | None:
    """``"mtime <before> -> <after>"`` when the modification times differ, else None."""
    if stored.get("mtime_ns") == current.get("mtime_ns"):
        return None
    before, after = (_time(value) if isinstance(value, int) else str(value)
                     for value in (stored.get("mtime_ns"), current.get("mtime_ns")))
    return f"mtime {before} -> {after}"


def only_mtime_moved(stored: dict, current: dict) -> bool:
    """Whether the modification time is the only difference (the same movie, touched)."""
    return bool(stored) and fingerprint_changes(stored, current) == [
        mtime_change(stored, current)]


def fingerprint_changes(stored: dict, current: dict) -> list[str]:
    """What differs between a stored fingerprint and the movie's current one.

    Parameters
    ----------
    stored : dict
        A run's ``movie_fingerprint``. An empty one (a run stored before
        fingerprints were recorded) is unknown: there is nothing to compare
        and no change is reported.
    current : dict
        :func:`movie_fingerprint` of the movie now.

    Returns
    -------
    list of str
        One phrase per difference, e.g. ``"size 1000 -> 1200 bytes"``,
        ``"mtime 2026-11-30T10:00:00.000000000Z -> ..."``, ``"sampled frames
        differ"``; empty when the movie is unchanged.
    """
    if not stored:
        return []
    changes = []
    if stored.get("size_bytes") != current.get("size_bytes"):
        changes.append(f"size {stored.get('size_bytes')} -> {current.get('size_bytes')} bytes")
    moved = mtime_change(stored, current)
    if moved:
        changes.append(moved)
    if list(stored.get("shape") or []) != list(current.get("shape") or []):
        changes.append(f"shape {'x'.join(map(str, stored.get('shape') or []))} -> "
                       f"{'x'.join(map(str, current.get('shape') or []))}")
    if stored.get("dtype") != current.get("dtype"):
        changes.append(f"dtype {stored.get('dtype')} -> {current.get('dtype')}")
    if (stored.get("sampled_sha256") != current.get("sampled_sha256")
            or list(stored.get("sampled_frames") or []) != list(current.get("sampled_frames")
                                                                 or [])):
        changes.append("sampled frames differ")
    return changes
