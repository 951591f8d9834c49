"""IoU and one-to-one ROI matching on hand-built masks with known answers."""
import warnings

import numpy as np
import pytest
import scipy.sparse

from slapp.evaluation.matching import iou_matrix, match_rois

FRAME = (10, 12)


def square(top, left, size, weight=1.0):
    """Return a FRAME-sized mask with a ``size`` x ``size`` square of ``weight`` at (top, left)."""
    mask = np.zeros(FRAME, np.float32)
    mask[top:top + size, left:left + size] = weight
    return mask


def stack(*masks):
    return np.stack(masks) if masks else np.zeros((0, *FRAME), np.float32)


def test_iou_of_overlapping_squares_is_intersection_over_union():
    # 2x2 squares sharing one column: intersection 2, union 4 + 4 - 2 = 6
    iou = iou_matrix(stack(square(0, 0, 2)), stack(square(0, 1, 2), square(5, 5, 2)))
    np.testing.assert_allclose(iou, [[2 / 6, 0.0]])


def test_iou_uses_support_not_weights():
    faint, bright = square(0, 0, 3, weight=0.01), square(0, 0, 3, weight=5.0)
    assert iou_matrix(stack(faint), stack(bright))[0, 0] == 1.0


def test_all_mask_forms_give_the_same_iou():
    truth = stack(square(0, 0, 3), square(4, 4, 4))
    predicted = stack(square(1, 1, 3), square(4, 5, 4), square(8, 0, 2))
    expected = iou_matrix(predicted, truth)
    as_sparse = [scipy.sparse.coo_matrix(mask) for mask in predicted]
    as_pixels = [tuple(np.nonzero(mask)) for mask in predicted]
    as_list_of_arrays = list(predicted)
    for form in (as_sparse, as_pixels, as_list_of_arrays):
        np.testing.assert_allclose(iou_matrix(form, truth), expected)
    np.testing.assert_allclose(iou_matrix(as_pixels, [tuple(np.nonzero(m)) for m in truth]), expected)


def test_duplicate_pixel_indices_count_once():
    rows, columns = np.array([0, 0, 1]), np.array([0, 0, 1])
    assert iou_matrix([(rows, columns)], [(np.array([0, 1]), np.array([0, 1]))])[0, 0] == 1.0


def test_two_predictions_on_one_cell_count_once():
    truth = stack(square(0, 0, 4))
    predicted = stack(square(0, 0, 4), square(0, 0, 3))  # IoU 1 and 9/16
    result = match_rois(predicted, truth)
    assert result.true_positives == 1
    assert result.matched_pairs == [(0, 0, 1.0)]
    assert result.precision == 0.5
    assert result.recall == 1.0
    assert result.f1 == pytest.approx(2 / 3)


def test_assignment_maximises_matches_not_greedy_best_pairs():
    # Overlapping true cells 0 and 1. Prediction 0 fits truth 0 best but truth 1 well
    # enough; prediction 1 fits only truth 0. Greedy best-first would match one pair.
    truth = stack(square(0, 0, 4), square(0, 1, 4))
    wide = square(0, 0, 4)
    wide[0:2, 4] = 1
    predicted = stack(wide, square(0, 0, 3))
    iou = iou_matrix(predicted, truth)
    assert iou[0, 0] > iou[0, 1] >= 0.5 and iou[1, 0] >= 0.5 > iou[1, 1]
    result = match_rois(predicted, truth)
    assert sorted((p, t) for p, t, _ in result.matched_pairs) == [(0, 1), (1, 0)]
    assert result.f1 == 1.0


def test_iou_exactly_at_threshold_matches_and_just_below_does_not():
    truth = stack(square(0, 0, 2))
    predicted = stack(square(0, 0, 2) + square(2, 0, 2))   # intersection 4, union 8: IoU 0.5
    assert iou_matrix(predicted, truth)[0, 0] == 0.5
    assert match_rois(predicted, truth, iou_threshold=0.5).true_positives == 1
    assert match_rois(predicted, truth, iou_threshold=0.5 + 1e-9).true_positives == 0


@pytest.mark.parametrize("n_predicted, n_truth", [(0, 2), (2, 0), (0, 0)])
def test_empty_inputs_score_zero_without_warnings(n_predicted, n_truth):
    predicted = stack(*[square(0, 3 * i, 2) for i in range(n_predicted)])
    truth = stack(*[square(0, 3 * i, 2) for i in range(n_truth)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = match_rois(predicted, truth)
        assert iou_matrix(predicted, truth).shape == (n_predicted, n_truth)
    assert (result.n_predicted, result.n_truth, result.true_positives) == (n_predicted, n_truth, 0)
    assert (result.precision, result.recall, result.f1) == (0.0, 0.0, 0.0)
    assert result.matched_pairs == []


def test_empty_list_of_predictions_is_accepted():
    assert match_rois([], stack(square(0, 0, 2))).n_predicted == 0


def test_no_overlap_scores_zero():
    result = match_rois(stack(square(0, 0, 2)), stack(square(5, 5, 2)))
    assert (result.true_positives, result.precision, result.recall, result.f1) == (0, 0.0, 0.0, 0.0)


def test_mismatched_frame_shapes_are_rejected():
    with pytest.raises(ValueError, match="frame shape"):
        iou_matrix(stack(square(0, 0, 2)), np.zeros((1, 5, 5)))


def test_pixel_indices_outside_the_frame_are_rejected():
    with pytest.raises(ValueError, match="outside the frame"):
        iou_matrix([(np.array([0]), np.array([FRAME[1]]))], stack(square(0, 0, 2)))
