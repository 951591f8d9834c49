"""Find an experiment's motion-corrected movie in its LIMS storage directory; read its shape.

LIMS records a storage directory per experiment but not which file in it is the
movie to segment, and the tree below it differs between rigs and pipeline
versions. :func:`find_full_movie` walks the directory once and picks the movie by
name, refusing to guess when a name is missing or ambiguous.
"""
import os
from pathlib import Path

import h5py

from slapp.errors import SlappError
from slapp.utils.cli import one_line

MOVIE_DATASET = "data"  # frames x height x width, as the motion-correction pipeline writes it

# Preferred first: a concatenated 31 Hz movie, when a session was recorded in
# parts, holds every frame; otherwise the single motion-corrected movie does.
candidate_movie_names = ['concat_31Hz_0.h5', 'motion_corrected_video.h5']


class FindFileException(SlappError):
    """No movie, or more than one movie of one name, in a storage directory; or a
    movie file that cannot be read as one."""


def _raise_listing_error(error: OSError) -> None:
    raise FindFileException(f"cannot list {error.filename}: {error.strerror}") from error


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


def find_full_movie(search_dir: Path) -> Path:
    """Find the one movie to segment below a storage directory.

    The tree is listed once (``os.walk``, which reads each directory with
    ``os.scandir``: one listing per directory, the cost that dominates on a
    network file system). The names of :data:`candidate_movie_names` are
    tried in order; the first name found exactly once wins.

    Parameters
    ----------
    search_dir : Path
        An experiment's ``storage_directory`` from LIMS.

    Returns
    -------
    Path
        The movie's absolute path with symbolic links resolved.

    Raises
    ------
    FindFileException
        If ``search_dir`` is not a directory, if it or a directory below it
        cannot be read (e.g. permission denied: the message names the
        directory), if a candidate name occurs more than once (which one is
        meant cannot be known), or if no candidate name occurs at all.
    """
    search_dir = Path(search_dir)
    try:
        found = _movies_by_name(search_dir)
    except OSError as error:  # e.g. a parent directory the user may not enter
        raise FindFileException(f"cannot read storage directory {error.filename or search_dir}"
                                f": {error.strerror or one_line(error)}") from error
    for name in candidate_movie_names:
        if len(found[name]) > 1:
            paths = ", ".join(sorted(str(path) for path in found[name]))
            raise FindFileException(
                f"{len(found[name])} files named {name} in {search_dir}: {paths}")
        if found[name]:
            return found[name][0]
    raise FindFileException(
        f"no movie ({' or '.join(candidate_movie_names)}) in {search_dir}")


def _movies_by_name(search_dir: Path) -> dict:
    """Candidate name to the resolved paths of the files of that name below ``search_dir``."""
    if not search_dir.is_dir():
        raise FindFileException(f"storage directory {search_dir} does not exist")
    found = {name: [] for name in candidate_movie_names}
    for directory, _, file_names in os.walk(search_dir, onerror=_raise_listing_error):
        for name in found.keys() & set(file_names):
            found[name].append(Path(directory, name).resolve())
    return found


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
        three-dimensional ``data`` dataset.
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
    if len(shape) != 3:
        raise FindFileException(f"movie {path}: dataset '{MOVIE_DATASET}' has shape {shape}, "
                                "not (frames, height, width)")
    return shape
