"""Find an experiment's motion-corrected movie in its LIMS storage directory.

LIMS records a storage directory per experiment but not which file in it is the
movie to segment, and the tree below it differs between rigs and pipeline
versions. :func:`find_full_movie` walks the directory once and picks the movie by
name, refusing to guess when a name is missing or ambiguous.
"""
import os
from pathlib import Path

from slapp.contracts.movie import (MOVIE_DATASET, FindFileException,  # noqa: F401
                                   dataset_shape, movie_shape)
from slapp.utils.cli import one_line

# Preferred first: a concatenated 31 Hz movie, when a session was recorded in
# parts, holds every frame; otherwise the single motion-corrected movie does.
candidate_movie_names = ['concat_31Hz_0.h5', 'motion_corrected_video.h5']


def _raise_listing_error(error: OSError) -> None:
    raise FindFileException(f"cannot list {error.filename}: {error.strerror}") from error


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
