"""The ground truth of a movie: the true cells' footprints, to score a segmentation against.

A movie ``<stem>.h5`` has its ground truth beside it in ``<stem>_ground_truth.h5``
(:func:`ground_truth_path`): dataset ``masks`` (:data:`MASKS_DATASET`),
float32 (cells, height, width), each cell's footprint weights over the field
of view. The demo's synthetic movies are written with one
(:func:`slapp.demo.synthetic_movie.write_movie`); ``slapp compare`` and the
quality benchmark read it (:func:`read_ground_truth`).
"""
from pathlib import Path

import h5py
import numpy as np

MASKS_DATASET = "masks"


def ground_truth_path(movie_path: Path) -> Path:
    """Return where the ground truth of the movie at ``movie_path`` is stored.

    Parameters
    ----------
    movie_path : pathlib.Path
        Path of the movie HDF5 file, e.g. ``demo.h5``.

    Returns
    -------
    pathlib.Path
        Sibling file ``<stem>_ground_truth.h5``, e.g. ``demo_ground_truth.h5``.
    """
    movie_path = Path(movie_path)
    return movie_path.with_name(movie_path.stem + "_ground_truth.h5")


def create_masks_dataset(truth_file: h5py.File, ncells: int,
                         frame_shape: tuple[int, int]) -> h5py.Dataset:
    """Create the empty ``masks`` dataset of a ground-truth file, one row per cell.

    gzip-compressed and chunked by cell: the footprints are mostly zeros, and a
    reader may take one cell at a time.
    """
    return truth_file.create_dataset(
        MASKS_DATASET, shape=(ncells, *frame_shape), dtype=np.float32,
        compression="gzip", shuffle=True, chunks=(1, *frame_shape) if ncells else None)


def read_ground_truth(path: Path) -> np.ndarray:
    """Read the ground-truth cell footprints of a movie.

    Parameters
    ----------
    path : pathlib.Path
        Ground-truth HDF5 file (see :func:`ground_truth_path`).

    Returns
    -------
    numpy.ndarray
        float32 array (ncells, height, width) of footprint weights.
    """
    with h5py.File(path, "r") as f:
        return f[MASKS_DATASET][()].astype(np.float32, copy=False)
