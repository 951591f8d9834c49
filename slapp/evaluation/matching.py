"""Match predicted ROIs to ground-truth cells by intersection over union (IoU).

Masks can be given in any of these forms (the two arguments may differ):

* a numpy array ``(n, height, width)`` of weights; a mask's support is
  ``weight > 0`` (e.g. :func:`slapp.demo.synthetic_movie.read_ground_truth`);
* a sequence of ``n`` 2-D arrays or scipy.sparse matrices of shape
  ``(height, width)``, support again ``weight > 0``;
* a sequence of ``n`` ``(row_indices, column_indices)`` pairs, e.g.
  ``[(s["ypix"], s["xpix"]) for s in stat]`` from Suite2P's ``stat.npy``.

Only the supports matter: IoU is computed on binary masks.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Union

import numpy as np
import scipy.sparse
from scipy.optimize import linear_sum_assignment

Masks = Union[np.ndarray, Sequence]


@dataclass(frozen=True)
class MatchResult:
    """Outcome of one-to-one matching of predicted to true ROIs.

    ``precision`` is ``true_positives / n_predicted`` and ``recall`` is
    ``true_positives / n_truth``; each is 0.0 when its denominator is 0.
    ``f1`` is their harmonic mean, 0.0 when both are 0.
    ``matched_pairs`` lists ``(predicted_index, truth_index, iou)`` sorted by
    predicted index.
    """

    n_predicted: int
    n_truth: int
    true_positives: int
    precision: float
    recall: float
    f1: float
    matched_pairs: list[tuple[int, int, float]]


def iou_matrix(predicted: Masks, truth: Masks) -> np.ndarray:
    """Return the IoU of the binary support of every predicted and every true mask.

    Parameters
    ----------
    predicted, truth : numpy.ndarray or sequence
        Masks in any of the forms listed in the module docstring. Array and
        sparse masks of both arguments must share one frame shape.

    Returns
    -------
    numpy.ndarray
        float64 array (n_predicted, n_truth); 0 where two masks share no
        pixel or both are empty.

    Raises
    ------
    ValueError
        If the masks' frame shapes disagree, or pixel indices are negative or
        fall outside the frame given by array masks.
    """
    predicted_pixels, predicted_shape = _mask_pixels(predicted)
    truth_pixels, truth_shape = _mask_pixels(truth)
    frame_shape = _common_frame_shape(predicted_pixels + truth_pixels,
                                      [s for s in (predicted_shape, truth_shape) if s])
    predicted_matrix = _support_matrix(predicted_pixels, frame_shape)
    truth_matrix = _support_matrix(truth_pixels, frame_shape)

    intersection = (predicted_matrix @ truth_matrix.T).toarray().astype(np.float64)
    predicted_area = np.asarray(predicted_matrix.sum(axis=1), np.float64).reshape(-1, 1)
    truth_area = np.asarray(truth_matrix.sum(axis=1), np.float64).reshape(1, -1)
    union = predicted_area + truth_area - intersection
    return np.divide(intersection, union, out=np.zeros_like(intersection), where=union > 0)


def match_rois(predicted_masks: Masks, truth_masks: Masks,
               iou_threshold: float = 0.5) -> MatchResult:
    """Match predicted to true ROIs one-to-one and score the segmentation.

    The Hungarian algorithm pairs predictions with true cells so that the
    summed IoU over pairs at or above ``iou_threshold`` is maximal; each
    prediction and each true cell is used at most once, so two predictions
    on one cell count as one true positive and one false positive.

    Parameters
    ----------
    predicted_masks, truth_masks : numpy.ndarray or sequence
        Masks in any of the forms listed in the module docstring.
    iou_threshold : float, optional
        Minimum IoU (inclusive) for a pair to count as a match. 0.5 is the
        usual choice and makes matches unambiguous for disjoint masks.

    Returns
    -------
    MatchResult
        Counts, precision, recall, F1 and the matched pairs.
    """
    iou = iou_matrix(predicted_masks, truth_masks)
    eligible = np.where(iou >= iou_threshold, iou, 0.0)
    predicted_indices, truth_indices = linear_sum_assignment(eligible, maximize=True)
    matched_pairs = [(int(p), int(t), float(iou[p, t]))
                     for p, t in zip(predicted_indices, truth_indices)
                     if iou[p, t] >= iou_threshold]
    n_predicted, n_truth = iou.shape
    true_positives = len(matched_pairs)
    precision = _safe_ratio(true_positives, n_predicted)
    recall = _safe_ratio(true_positives, n_truth)
    return MatchResult(
        n_predicted=n_predicted,
        n_truth=n_truth,
        true_positives=true_positives,
        precision=precision,
        recall=recall,
        f1=_safe_ratio(2 * precision * recall, precision + recall),
        matched_pairs=matched_pairs,
    )


def _safe_ratio(numerator: float, denominator: float) -> float:
    """Return ``numerator / denominator``, or 0.0 when the denominator is 0."""
    return float(numerator / denominator) if denominator else 0.0


def _mask_pixels(masks: Masks) -> tuple[list[tuple[np.ndarray, np.ndarray]], tuple[int, int] | None]:
    """Return each mask's support as ``(rows, columns)`` and the frame shape if the input has one."""
    if isinstance(masks, np.ndarray):
        if masks.ndim != 3:
            raise ValueError(f"mask array must be (n, height, width), got shape {masks.shape}")
        return [np.nonzero(mask > 0) for mask in masks], masks.shape[1:]
    pixels, shapes = [], set()
    for mask in masks:
        if scipy.sparse.issparse(mask):
            coo = scipy.sparse.coo_matrix(mask)
            support = coo.data > 0
            pixels.append((coo.row[support], coo.col[support]))
            shapes.add(coo.shape)
        elif isinstance(mask, np.ndarray) and mask.ndim == 2:
            pixels.append(np.nonzero(mask > 0))
            shapes.add(mask.shape)
        else:
            rows, columns = mask
            pixels.append((np.asarray(rows, np.int64), np.asarray(columns, np.int64)))
    if len(shapes) > 1:
        raise ValueError(f"masks have different frame shapes: {sorted(shapes)}")
    return pixels, shapes.pop() if shapes else None


def _common_frame_shape(pixels: list[tuple[np.ndarray, np.ndarray]],
                        declared_shapes: list[tuple[int, int]]) -> tuple[int, int]:
    """Return the frame shape all masks live in, checking that every pixel fits in it."""
    if len(set(declared_shapes)) > 1:
        raise ValueError(f"predicted and true masks have different frame shapes: {declared_shapes}")
    all_rows = np.concatenate([rows for rows, _ in pixels] + [np.zeros(0, np.int64)])
    all_columns = np.concatenate([columns for _, columns in pixels] + [np.zeros(0, np.int64)])
    if all_rows.size and min(all_rows.min(), all_columns.min()) < 0:
        raise ValueError("mask pixel indices must be non-negative")
    needed = (int(all_rows.max()) + 1, int(all_columns.max()) + 1) if all_rows.size else (0, 0)
    if not declared_shapes:
        return needed
    shape = tuple(declared_shapes[0])
    if needed[0] > shape[0] or needed[1] > shape[1]:
        raise ValueError(f"mask pixel indices reach {needed}, outside the frame shape {shape}")
    return shape


def _support_matrix(pixels: list[tuple[np.ndarray, np.ndarray]],
                    frame_shape: tuple[int, int]) -> scipy.sparse.csr_matrix:
    """Return a binary CSR matrix (n_masks, height * width) with 1 on each mask's pixels."""
    flat_indices = [np.unique(np.ravel_multi_index((rows, columns), frame_shape))
                    if len(rows) else np.zeros(0, np.int64) for rows, columns in pixels]
    indptr = np.concatenate([[0], np.cumsum([len(i) for i in flat_indices])])
    indices = np.concatenate(flat_indices + [np.zeros(0, np.int64)])
    data = np.ones(len(indices), np.int32)
    return scipy.sparse.csr_matrix((data, indices, indptr),
                                   shape=(len(pixels), frame_shape[0] * frame_shape[1]))
