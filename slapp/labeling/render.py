"""The still images of one ROI: crops of the projections, its mask, its outline with a scale bar.

As the original toolkit drew them: intensities clipped to two quantiles and
stretched to 0-255 (:func:`normalize`); the mask's weights scaled so the largest
is 255, transparent where zero; the outline black (0) on white (255), transparent
white, drawn on the pixels of the thresholded mask that touch its outside,
with an L-shaped scale bar and its length in µm in the lower left corner
(:func:`add_scale_bar`). Crops are ``crop_shape`` windows centred on the ROI's
weighted centroid, padded with zeros where they leave the field of view.
"""
import io
from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class Window:
    """A ``shape`` window of the frame whose top-left corner is ``(top, left)``
    (either may be negative or run past the frame: those pixels are padding)."""

    top: int
    left: int
    shape: tuple[int, int]

    def crop(self, image: np.ndarray) -> np.ndarray:
        """The window of a 2-D image (or of the last two axes of a stack), zero-padded."""
        height, width = image.shape[-2:]
        out = np.zeros((*image.shape[:-2], *self.shape), image.dtype)
        rows = slice(max(self.top, 0), min(self.top + self.shape[0], height))
        cols = slice(max(self.left, 0), min(self.left + self.shape[1], width))
        if rows.start < rows.stop and cols.start < cols.stop:
            out[..., rows.start - self.top:rows.stop - self.top,
                cols.start - self.left:cols.stop - self.left] = image[..., rows, cols]
        return out


def centred_window(centroid_row: float, centroid_col: float,
                   crop_shape: tuple[int, int]) -> Window:
    """The ``crop_shape`` window whose centre pixel ``(h // 2, w // 2)`` is the centroid's."""
    return Window(int(round(centroid_row)) - crop_shape[0] // 2,
                  int(round(centroid_col)) - crop_shape[1] // 2, tuple(crop_shape))


def quantile_cutoffs(image: np.ndarray, quantiles: tuple[float, float]) -> tuple[float, float]:
    """The image's values at two quantiles: what :func:`normalize` maps to 0 and 255."""
    low, high = np.quantile(np.asarray(image, np.float64), quantiles)
    return float(low), float(high)


def normalize(array: np.ndarray, cutoffs: tuple[float, float]) -> np.ndarray:
    """Clip to ``cutoffs`` and stretch to uint8 0-255 (the original's ``normalize_array``)."""
    low, high = cutoffs
    scale = 255.0 / (high - low) if high > low else 0.0
    scaled = (np.asarray(array, np.float32) - np.float32(low)) * np.float32(scale)
    return np.clip(scaled, 0, 255).astype(np.uint8)


def dense_mask(rows: np.ndarray, cols: np.ndarray, weights: np.ndarray,
               shape: tuple[int, int]) -> np.ndarray:
    """The weighted mask as a float32 image of ``shape``."""
    mask = np.zeros(shape, np.float32)
    mask[rows, cols] = weights
    return mask


def binary_mask(weights_image: np.ndarray, quantile: float) -> np.ndarray:
    """The pixels whose weight exceeds the ``quantile`` of the mask's own weights
    (the original outlined the mask thresholded this way, at 0.1)."""
    inside = weights_image > 0
    if not inside.any():
        return inside
    return weights_image > np.quantile(weights_image[inside], quantile)


def edge_pixels(binary: np.ndarray) -> np.ndarray:
    """The mask's pixels that have a 4-neighbour outside it (the frame's border counts
    as outside): the inner outline the original drew with OpenCV's contours."""
    return binary & ~ndimage.binary_erosion(binary, border_value=0)


def outline_image(binary: np.ndarray) -> np.ndarray:
    """uint8: 0 on the mask's edge, 255 elsewhere."""
    return np.where(edge_pixels(binary), 0, 255).astype(np.uint8)


def scale_bar_pixels(um_per_pixel: float, length_um: float) -> int:
    """The bar's length in pixels: ``round(length_um / um_per_pixel)`` (13 for 10 µm at
    0.78125 µm/px)."""
    return int(round(length_um / um_per_pixel))


def add_scale_bar(image: np.ndarray, offset: int, um_per_pixel: float, length_um: float,
                  thickness_um: float, font_scale: float) -> np.ndarray:
    """Draw the original's L-shaped scale bar and its label in black.

    The corner is ``offset`` pixels from the left and bottom edges; the horizontal
    and the vertical arm are each :func:`scale_bar_pixels` long (corner included),
    the label ``"<length>um"`` sits right of the horizontal arm's end.

    Parameters
    ----------
    image : numpy.ndarray
        uint8 2-D image; a copy is drawn on.
    offset : int
        Pixels from the left and bottom edges to the corner.
    um_per_pixel, length_um, thickness_um : float
        Pixel size, bar length and line thickness in µm.
    font_scale : float
        OpenCV's font scale of the label.

    Returns
    -------
    numpy.ndarray
    """
    import cv2  # OpenCV comes with Suite2P

    annotated = np.ascontiguousarray(image.copy())
    length = scale_bar_pixels(um_per_pixel, length_um)
    thickness = max(1, int(round(thickness_um / um_per_pixel)))
    corner = (offset, image.shape[0] - offset)
    up = (corner[0], corner[1] - length + 1)
    right = (corner[0] + length - 1, corner[1])
    cv2.putText(annotated, f"{length_um:g}um", right, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 0,
                thickness, cv2.LINE_4)
    cv2.line(annotated, corner, up, 0, thickness, cv2.LINE_4)
    cv2.line(annotated, corner, right, 0, thickness, cv2.LINE_4)
    return annotated


def png_bytes(image: np.ndarray, transparent: int | None = None) -> bytes:
    """A uint8 grayscale image as PNG bytes; ``transparent``: the gray value shown as clear."""
    from PIL import Image

    buffer = io.BytesIO()
    options = {} if transparent is None else {"transparency": transparent}
    Image.fromarray(np.ascontiguousarray(image, np.uint8)).save(buffer, format="PNG", **options)
    return buffer.getvalue()
