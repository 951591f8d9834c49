"""The movie a manifest entry points at: an HDF5 file with one 3-D dataset.

The motion-correction pipeline writes each experiment's movie as dataset
``data`` (:data:`MOVIE_DATASET`) of shape (frames, height, width).
``slapp manifest`` checks its frame count, ``segment`` its shape
(:func:`movie_shape`), Suite2P reads it by that dataset name, and the demo's
synthetic movies are written to it.
"""
from pathlib import Path

import h5py

from slapp.errors import SlappError
from slapp.utils.cli import one_line

MOVIE_DATASET = "data"  # frames x height x width, as the motion-correction pipeline writes it


class FindFileException(SlappError):
    """No movie, or more than one movie of one name, in a storage directory; or a
    movie file that cannot be read as one."""


def dataset_shape(movie, path) -> tuple:
    """The shape of the ``data`` dataset of an open movie file.

    Parameters
    ----------
    movie : h5py.File or mapping
        The open file; anything with ``get`` whose ``data`` has a ``shape``.
    path : Path
        The file's path, named in errors.

    Raises
    ------
    FindFileException
        If there is no ``data`` dataset (a missing name, or a group), or it
        is a scalar.
    """
    shape = getattr(movie.get(MOVIE_DATASET), "shape", None)
    if not shape:
        raise FindFileException(f"movie {path} has no '{MOVIE_DATASET}' dataset")
    return tuple(shape)


def movie_shape(path: Path) -> tuple[int, int, int]:
    """Read ``(nframes, height, width)`` of an HDF5 movie without reading its frames.

    Only the ``data`` dataset's shape is read, so this costs the same for a
    movie of 100 frames or of 100,000.

    Parameters
    ----------
    path : Path
        An HDF5 file with dataset ``data`` (frames x height x width).

    Returns
    -------
    tuple of int
        The dataset's shape.

    Raises
    ------
    FindFileException
        If the file is missing, a directory, not HDF5, or has no
        three-dimensional ``data`` dataset with at least one frame.
    """
    path = Path(path)
    if not path.exists():
        raise FindFileException(f"movie {path} does not exist")
    if path.is_dir():
        raise FindFileException(f"movie {path} is a directory, not an HDF5 file")
    try:
        with h5py.File(path, "r") as movie:
            shape = dataset_shape(movie, path)
    except OSError as error:
        raise FindFileException(f"cannot read movie {path} as HDF5: {one_line(error)}") from error
    if len(shape) != 3 or min(shape) < 1:
        raise FindFileException(f"movie {path}: dataset '{MOVIE_DATASET}' has shape {shape}, "
                                "not (frames, height, width)")
    return shape
