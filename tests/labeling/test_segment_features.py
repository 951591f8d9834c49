"""What segment keeps beside the ROIs: images in the full frame and the solidity feature."""
import numpy as np
import pytest

from slapp.segmentation.images import full_frame
from slapp.segmentation.rois import roi_from_suite2p, solidity


def test_a_cropped_image_is_placed_in_the_full_frame():
    image = np.arange(12, dtype=np.float32).reshape(3, 4)
    placed = full_frame(image, (2, 5), (1, 5), (8, 6))
    assert placed.shape == (8, 6)
    np.testing.assert_array_equal(placed[2:5, 1:5], image)
    assert placed.sum() == image.sum()
    np.testing.assert_array_equal(full_frame(placed, (2, 5), (1, 5), (8, 6)), placed)
    with pytest.raises(ValueError, match="does not fit"):
        full_frame(image, (0, 4), (0, 4), (8, 6))


def test_solidity_is_one_for_a_rectangle_near_one_for_a_disk_and_less_for_an_l():
    rows, cols = np.nonzero(np.ones((5, 7)))
    assert solidity(rows, cols) == 1.0
    disk = np.add.outer((np.arange(15) - 7) ** 2, (np.arange(15) - 7) ** 2) <= 49
    # a digital disk's lone tips make its hull a little larger than itself
    assert 0.9 < solidity(*np.nonzero(disk)) < 1.0
    l_shape = np.zeros((10, 10), bool)
    l_shape[:, :2] = l_shape[-2:, :] = True
    assert 0.3 < solidity(*np.nonzero(l_shape)) < 0.6
    assert solidity(np.array([3]), np.array([4])) == 1.0


def test_stat_features_are_kept_and_missing_ones_are_null():
    stat = {"ypix": np.array([1, 1, 2]), "xpix": np.array([1, 2, 1]),
            "lam": np.ones(3, np.float32), "radius": 2.0, "aspect_ratio": 1.0,
            "compact": 1.1, "skew": 0.5, "npix_norm": 0.8, "npix_soma": 3, "std": 12.5,
            "footprint": 1.0}
    roi = roi_from_suite2p(0, stat, np.zeros(4), np.zeros(4), (1, 0.9), (4, 4))
    assert (roi.npix_norm, roi.npix_soma, roi.std, roi.footprint) == (
        pytest.approx(0.8), 3, 12.5, 1.0)
    assert roi.solidity == 1.0
    del stat["std"], stat["npix_norm"]
    roi = roi_from_suite2p(0, stat, np.zeros(4), np.zeros(4), (1, 0.9), (4, 4))
    assert roi.std is None and roi.npix_norm is None
