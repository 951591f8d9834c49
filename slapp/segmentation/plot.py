"""A PNG of every ROI's outline over the movie's mean image, for a person to check a run.

The figure is rendered to bytes, not to a file, so the segment command can
render it before its database write and put the file in place only once the
run is stored. Matplotlib's Agg canvas is used directly: no
display and no pyplot global state are needed on a cluster node.
"""
import io
from typing import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from scipy.ndimage import binary_erosion

# RGBA outline colours: classified cells in yellow, other ROIs in magenta,
# both easy to see on a grey image.
_CELL_RGBA = (1.0, 0.85, 0.0, 1.0)
_NOT_CELL_RGBA = (1.0, 0.0, 1.0, 1.0)
# Grey range of the mean image: clip the darkest and brightest pixels so that a
# few bright ones do not leave the rest of the field black.
_DISPLAY_PERCENTILES = (1.0, 99.5)
_DPI = 100


def outline_overlay(masks: Sequence[tuple[np.ndarray, np.ndarray]], is_cell: Sequence[bool],
                    shape: tuple[int, int]) -> np.ndarray:
    """An RGBA image that is transparent except on each ROI's one-pixel outline.

    Parameters
    ----------
    masks : sequence of (rows, cols)
        Each ROI's pixel coordinates.
    is_cell : sequence of bool
        Whether each ROI was classified as a cell (sets its colour).
    shape : tuple of int
        ``(height, width)`` of the image.

    Returns
    -------
    numpy.ndarray
        float32 array ``(height, width, 4)``.
    """
    overlay = np.zeros((*shape, 4), dtype=np.float32)
    for (rows, cols), cell in zip(masks, is_cell):
        rows, cols = np.asarray(rows), np.asarray(cols)
        if rows.size == 0:
            continue
        top, left = rows.min(), cols.min()
        box = np.zeros((rows.max() - top + 3, cols.max() - left + 3), dtype=bool)
        box[rows - top + 1, cols - left + 1] = True
        edge_rows, edge_cols = np.nonzero(box & ~binary_erosion(box))
        overlay[edge_rows + top - 1, edge_cols + left - 1] = _CELL_RGBA if cell else _NOT_CELL_RGBA
    return overlay


def render_roi_plot(mean_image: np.ndarray, masks: Sequence[tuple[np.ndarray, np.ndarray]],
                    is_cell: Sequence[bool], title: str) -> bytes:
    """Render ROI outlines over the mean image as PNG bytes.

    Parameters
    ----------
    mean_image : numpy.ndarray
        ``(height, width)`` mean of the movie.
    masks : sequence of (rows, cols)
        Each ROI's pixel coordinates in the image's frame.
    is_cell : sequence of bool
        Whether each ROI was classified as a cell.
    title : str
        Figure title, e.g. the experiment id and ROI counts.

    Returns
    -------
    bytes
        The PNG file's content.
    """
    height, width = mean_image.shape
    scale = max(1.0, 768 / max(height, width))  # small movies are enlarged to stay legible
    figure = Figure(figsize=(width * scale / _DPI + 0.4, height * scale / _DPI + 0.8), dpi=_DPI)
    FigureCanvasAgg(figure)
    axes = figure.add_axes((0.02, 0.02, 0.96, 0.88))
    low, high = np.percentile(mean_image, _DISPLAY_PERCENTILES) if mean_image.size else (0, 1)
    axes.imshow(mean_image, cmap="gray", vmin=low, vmax=max(high, low + 1e-6),
                interpolation="nearest")
    axes.imshow(outline_overlay(masks, is_cell, (height, width)), interpolation="nearest")
    axes.set_axis_off()
    axes.set_title(title, fontsize=10)
    axes.legend(handles=[Patch(color=_CELL_RGBA, label="cell"),
                         Patch(color=_NOT_CELL_RGBA, label="not cell")],
                loc="lower right", fontsize=8, framealpha=0.6)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI)
    return buffer.getvalue()
