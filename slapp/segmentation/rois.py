"""Suite2P ROIs as ``rois`` table rows: sparse COO masks, traces and the classifier's output.

Each Suite2P ROI has pixel coordinates ``ypix``, ``xpix`` and weights ``lam``;
stored as a COO matrix in the movie's ``[height, width]`` frame they are
``coo_row``, ``coo_col`` and ``coo_data``. Rows are produced one ROI at a time,
reading one trace at a time from Suite2P's memory-mapped trace files, so a run
with thousands of ROIs and 100,000-frame traces is never held in memory at once.
"""
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import numpy as np

from slapp.errors import Suite2pError

# The rois table's columns written by COPY, with their PostgreSQL types.
ROI_COLUMNS = (
    ("segmentation_run_id", "int4"),
    ("suite2p_roi_index", "int4"),
    ("coo_row", "int4[]"),
    ("coo_col", "int4[]"),
    ("coo_data", "float4[]"),
    ("trace", "float4[]"),
    ("neuropil_trace", "float4[]"),
    ("is_cell", "bool"),
    ("cell_probability", "float4"),
    ("npix", "int4"),
    ("centroid_row", "float4"),
    ("centroid_col", "float4"),
    ("radius", "float4"),
    ("aspect_ratio", "float4"),
    ("compactness", "float4"),
    ("skew", "float4"),
    ("npix_norm", "float4"),
    ("npix_soma", "int4"),
    ("std", "float4"),
    ("footprint", "float4"),
    ("solidity", "float4"),
)
# The Suite2P stat features stored beside the shape statistics, as Suite2P names them;
# a stat that lacks one (older Suite2P versions) stores NULL.
STAT_FEATURES = ("npix_norm", "npix_soma", "std", "footprint")


class RoiException(Suite2pError):
    """A Suite2P ROI cannot be stored as given (e.g. a pixel outside the movie)."""


@dataclass(frozen=True)
class Roi:
    """One ROI as stored: its mask, traces, class and shape statistics."""

    suite2p_roi_index: int
    coo_row: np.ndarray
    coo_col: np.ndarray
    coo_data: np.ndarray
    trace: np.ndarray
    neuropil_trace: np.ndarray
    is_cell: bool
    cell_probability: float
    npix: int
    centroid_row: float
    centroid_col: float
    radius: float
    aspect_ratio: float
    compactness: float
    skew: float
    npix_norm: float | None = None
    npix_soma: int | None = None
    std: float | None = None
    footprint: float | None = None
    solidity: float | None = None

    def copy_row(self, segmentation_run_id: int) -> tuple:
        """The values of :data:`ROI_COLUMNS`, in order, for a run."""
        return (segmentation_run_id, self.suite2p_roi_index, self.coo_row, self.coo_col,
                self.coo_data, self.trace, self.neuropil_trace, self.is_cell,
                self.cell_probability, self.npix, self.centroid_row, self.centroid_col,
                self.radius, self.aspect_ratio, self.compactness, self.skew,
                self.npix_norm, self.npix_soma, self.std, self.footprint, self.solidity)


def solidity(rows: np.ndarray, cols: np.ndarray) -> float:
    """The mask's pixels over the pixels of its convex hull (1 for a convex mask).

    Suite2P 1.x no longer computes it; this is scikit-image's ``solidity`` of the
    mask's pixel set.

    Parameters
    ----------
    rows, cols : numpy.ndarray
        The mask's pixel coordinates (each pixel once).

    Returns
    -------
    float
    """
    import cv2  # OpenCV comes with Suite2P, which only the segmentation step installs

    top, left = int(rows.min()), int(cols.min())
    hull_image = np.zeros((int(rows.max()) - top + 1, int(cols.max()) - left + 1), np.uint8)
    points = np.column_stack([cols - left, rows - top]).astype(np.int32)
    cv2.fillConvexPoly(hull_image, cv2.convexHull(points), 1)
    hull_image[rows - top, cols - left] = 1  # a line-like mask: its pixels are its hull
    return float(len(np.unique(rows.astype(np.int64) * hull_image.shape[1] + cols))
                 / hull_image.sum())


def roi_from_suite2p(index: int, stat: dict, trace: np.ndarray, neuropil_trace: np.ndarray,
                     iscell: Sequence[float], video_shape: tuple[int, int]) -> Roi:
    """Build one :class:`Roi` from Suite2P's outputs for ROI ``index``.

    Parameters
    ----------
    index : int
        The ROI's index in ``stat.npy`` (and row of ``F.npy``, ``iscell.npy``).
    stat : dict
        Its ``stat.npy`` entry (``ypix``, ``xpix``, ``lam``, ``radius``,
        ``aspect_ratio``, ``compact``, ``skew``, and where present the features of
        :data:`STAT_FEATURES`).
    trace, neuropil_trace : numpy.ndarray
        Its rows of ``F.npy`` and ``Fneu.npy``.
    iscell : sequence of float
        Its row of ``iscell.npy``: ``(is cell 0/1, probability)``.
    video_shape : tuple of int
        ``(height, width)`` of the movie.

    Returns
    -------
    Roi

    Raises
    ------
    RoiException
        If the mask is empty, its arrays differ in length, or a pixel lies
        outside ``video_shape``.
    """
    rows = np.asarray(stat["ypix"], dtype=np.int32)
    cols = np.asarray(stat["xpix"], dtype=np.int32)
    weights = np.asarray(stat["lam"], dtype=np.float32)
    if not (rows.size == cols.size == weights.size) or rows.size == 0:
        raise RoiException(f"Suite2P ROI {index} has an empty or inconsistent mask "
                           f"({rows.size} rows, {cols.size} columns, {weights.size} weights)")
    height, width = video_shape
    if rows.min() < 0 or cols.min() < 0 or rows.max() >= height or cols.max() >= width:
        raise RoiException(f"Suite2P ROI {index} has pixels outside the {height}x{width} movie")
    total = float(weights.sum(dtype=np.float64))
    centre_weights = weights if total > 0 else np.ones_like(weights)
    return Roi(
        suite2p_roi_index=index,
        coo_row=rows, coo_col=cols, coo_data=weights,
        trace=np.asarray(trace, dtype=np.float32),
        neuropil_trace=np.asarray(neuropil_trace, dtype=np.float32),
        is_cell=bool(iscell[0] > 0.5),
        cell_probability=float(iscell[1]),
        npix=int(rows.size),
        centroid_row=float(np.average(rows, weights=centre_weights)),
        centroid_col=float(np.average(cols, weights=centre_weights)),
        radius=float(stat["radius"]),
        aspect_ratio=float(stat["aspect_ratio"]),
        compactness=float(stat["compact"]),
        skew=float(stat["skew"]),
        **{name: (None if stat.get(name) is None else
                  (int if name == "npix_soma" else float)(stat[name]))
           for name in STAT_FEATURES},
        solidity=solidity(rows, cols),
    )


def rois_from_suite2p(stat: Sequence[dict], traces: np.ndarray | None,
                      neuropil_traces: np.ndarray | None, iscell: np.ndarray,
                      video_shape: tuple[int, int]) -> Iterator[Roi]:
    """Yield every Suite2P ROI as a :class:`Roi`, reading one trace at a time.

    Parameters
    ----------
    stat : sequence of dict
        Suite2P's ``stat.npy``.
    traces, neuropil_traces : numpy.ndarray or None
        ``F.npy`` and ``Fneu.npy`` (memory-mapped is best); None when ``stat`` is empty.
    iscell : numpy.ndarray
        ``iscell.npy``, shape ``(n_rois, 2)``.
    video_shape : tuple of int
        ``(height, width)`` of the movie.

    Yields
    ------
    Roi
    """
    for index, roi_stat in enumerate(stat):
        yield roi_from_suite2p(index, roi_stat, traces[index], neuropil_traces[index],
                               iscell[index], video_shape)


def copy_rows(segmentation_run_id: int, rois: Iterable[Roi]) -> Iterator[tuple]:
    """Yield the COPY rows (:data:`ROI_COLUMNS`) of ``rois`` for one run."""
    for roi in rois:
        yield roi.copy_row(segmentation_run_id)
