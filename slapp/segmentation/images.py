"""The three images of a run a labeler looks at: mean image, max projection, correlation image.

Suite2P computes them anyway: the mean image of the movie (``meanImg``), and,
while detecting, the maximum projection of the binned, high-pass filtered movie
(``max_proj``) and the correlation map sparsery detects on (``Vcorr``). The
latter two cover only the frame's ``yrange`` x ``xrange`` (the part registration
left valid) and are placed into the full ``video_shape`` frame here, zero outside,
as Suite2P's own ``combined`` output does. ``segment`` keeps them in
``segmentation_images`` (``computed_by = 'segment'``) in the transaction that
stores the run; for a run stored before, the artifacts step computes its own from
the movie (:mod:`slapp.labeling.projections`) and stores them with
``computed_by = 'artifacts'``.
"""
from dataclasses import dataclass

import numpy as np

SEGMENT = "segment"
ARTIFACTS = "artifacts"

_INSERT = """
INSERT INTO segmentation_images (segmentation_run_id, mean_image, max_projection,
                                 correlation_image, computed_by)
VALUES (%s, %s, %s, %s, %s)
ON CONFLICT (segmentation_run_id) DO NOTHING
"""

_SELECT = """
SELECT mean_image, max_projection, correlation_image, computed_by
FROM segmentation_images WHERE segmentation_run_id = %s
"""


@dataclass(frozen=True)
class RunImages:
    """A run's mean image, max projection and correlation image, each float32
    ``(height, width)`` in the movie's frame; ``computed_by`` says by which step."""

    mean_image: np.ndarray
    max_projection: np.ndarray
    correlation_image: np.ndarray
    computed_by: str = SEGMENT


def full_frame(image: np.ndarray, yrange, xrange, video_shape: tuple[int, int]) -> np.ndarray:
    """Place a Suite2P image of the ``yrange`` x ``xrange`` crop into the full frame.

    Parameters
    ----------
    image : numpy.ndarray
        ``(yrange[1] - yrange[0], xrange[1] - xrange[0])``, or already the full frame.
    yrange, xrange : sequence of int
        Suite2P's ``[start, stop)`` rows and columns of the crop.
    video_shape : tuple of int
        ``(height, width)`` of the movie.

    Returns
    -------
    numpy.ndarray
        float32 ``video_shape``, zero outside the crop.
    """
    image = np.asarray(image, dtype=np.float32)
    if image.shape == tuple(video_shape):
        return image
    placed = np.zeros(video_shape, np.float32)
    (top, bottom), (left, right) = (int(v) for v in yrange), (int(v) for v in xrange)
    if image.shape != (bottom - top, right - left):
        raise ValueError(f"a Suite2P image of shape {image.shape} does not fit rows "
                         f"{top}:{bottom} and columns {left}:{right}")
    placed[top:bottom, left:right] = image
    return placed


def insert_images(cursor, segmentation_run_id: int, images: RunImages) -> None:
    """Store a run's images (in the caller's transaction); a run that has them keeps them."""
    cursor.execute(_INSERT, (segmentation_run_id, images.mean_image.tolist(),
                             images.max_projection.tolist(),
                             images.correlation_image.tolist(), images.computed_by))


def read_images(dbconn, segmentation_run_id: int) -> RunImages | None:
    """A run's stored images, or None when it has none.

    Parameters
    ----------
    dbconn : slapp.utils.query_utils.DbConnection
        The labeling database.
    segmentation_run_id : int
        The run.

    Returns
    -------
    RunImages or None
    """
    rows = dbconn.query(_SELECT, (segmentation_run_id,))
    if not rows:
        return None
    row = rows[0]
    return RunImages(*(np.asarray(row[name], np.float32) for name in
                       ("mean_image", "max_projection", "correlation_image")),
                     computed_by=row["computed_by"])
