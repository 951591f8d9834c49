"""The segment step's pieces without Suite2P: ROI conversion, the one-transaction store, the plot.

The store is exercised against the real labeling database: rows are read back
and compared with what was written, element for element.
"""
import json
import math

import numpy as np
import pytest

from slapp.segmentation import store
from slapp.segmentation.plot import outline_overlay, render_roi_plot
from slapp.segmentation.rois import RoiException, roi_from_suite2p, rois_from_suite2p
from slapp.segmentation.suite2p_runner import jsonable

VERSION = "store-test-version"
SHAPE = (32, 40)


def run_values(experiment_id=850517344, version=VERSION, **changes):
    return {"ophys_experiment_id": experiment_id, "ophys_segmentation_commit_hash": version,
            "source_video_path": "/movies/m.h5", "video_shape": list(SHAPE), "nframes": 50,
            "nbinned": 5, "suite2p_version": "1.1.0",
            "suite2p_settings": {"settings": {"detection": {"threshold_scaling": 0.75}}},
            "suite2p_seconds": 1.5, "total_seconds": 2.5, "hostname": "node7", **changes}


def suite2p_stat(top, left, size=4, nframes=50):
    rows, cols = np.meshgrid(np.arange(top, top + size), np.arange(left, left + size),
                             indexing="ij")
    return {"ypix": rows.ravel(), "xpix": cols.ravel(),
            "lam": np.linspace(0.1, 1.0, size * size).astype(np.float32),
            "radius": 2.5, "aspect_ratio": 1.1, "compact": 1.02, "skew": 0.8}


def make_rois(count, nframes=50):
    rng = np.random.default_rng(count)
    stat = [suite2p_stat(2 + 5 * (k % 5), 3 + 6 * (k // 5)) for k in range(count)]
    traces = rng.normal(400, 20, (count, nframes)).astype(np.float32)
    neuropil = rng.normal(200, 10, (count, nframes)).astype(np.float32)
    iscell = np.column_stack([np.arange(count) % 2, np.linspace(0.2, 0.9, count)])
    return list(rois_from_suite2p(stat, traces, neuropil, iscell, SHAPE)), traces, neuropil


def stored_rois(dbconn, run_id):
    return dbconn.query("SELECT * FROM rois WHERE segmentation_run_id = %s "
                        "ORDER BY suite2p_roi_index", (run_id,))


def table_counts(dbconn):
    return dbconn.query("SELECT (SELECT count(*) FROM segmentation_runs) AS runs, "
                        "(SELECT count(*) FROM rois) AS rois")[0]


def test_roi_from_suite2p_keeps_the_weighted_mask_in_the_movie_frame():
    stat = {"ypix": np.array([3, 3, 4]), "xpix": np.array([5, 6, 5]),
            "lam": np.array([1.0, 3.0, 0.0]), "radius": 1.5, "aspect_ratio": 1.2,
            "compact": 1.01, "skew": 2.0}

    roi = roi_from_suite2p(4, stat, np.arange(6), np.ones(6), (1.0, 0.75), SHAPE)

    assert roi.suite2p_roi_index == 4
    assert roi.coo_row.tolist() == [3, 3, 4] and roi.coo_col.tolist() == [5, 6, 5]
    assert roi.coo_data.tolist() == [1.0, 3.0, 0.0]
    assert (roi.centroid_row, roi.centroid_col) == (3.0, 5.75)  # weighted by lam
    assert roi.is_cell is True and roi.cell_probability == 0.75 and roi.npix == 3
    assert roi.trace.dtype == np.float32 and roi.trace.tolist() == [0, 1, 2, 3, 4, 5]
    assert (roi.radius, roi.aspect_ratio, roi.compactness, roi.skew) == (1.5, 1.2, 1.01, 2.0)


@pytest.mark.parametrize("ypix, xpix, message", [
    ([3, 32], [1, 1], "Suite2P ROI 0 has pixels outside the 32x40 movie"),
    ([3, 4], [-1, 1], "Suite2P ROI 0 has pixels outside the 32x40 movie"),
    ([], [], "Suite2P ROI 0 has an empty or inconsistent mask (0 rows, 0 columns, 0 weights)"),
])
def test_roi_outside_the_movie_is_refused(ypix, xpix, message):
    stat = {**suite2p_stat(0, 0), "ypix": np.array(ypix), "xpix": np.array(xpix),
            "lam": np.ones(len(ypix))}
    with pytest.raises(RoiException) as error:
        roi_from_suite2p(0, stat, np.zeros(3), np.zeros(3), (0, 0.1), SHAPE)
    assert str(error.value) == message


def test_write_run_stores_the_run_and_every_roi_exactly(labeling_db):
    rois, traces, neuropil = make_rois(7)

    stored = store.write_run(labeling_db, run_values(), iter(rois))

    assert stored.status == store.SEGMENTED and stored.n_rois == 7
    run = labeling_db.query("SELECT * FROM segmentation_runs WHERE id = %s",
                            (stored.segmentation_run_id,))[0]
    assert run["video_shape"] == list(SHAPE) and run["hostname"] == "node7"
    assert run["suite2p_settings"] == {"settings": {"detection": {"threshold_scaling": 0.75}}}
    rows = stored_rois(labeling_db, stored.segmentation_run_id)
    assert [row["suite2p_roi_index"] for row in rows] == list(range(7))
    for row, roi, trace, neuropil_trace in zip(rows, rois, traces, neuropil):
        assert row["coo_row"] == roi.coo_row.tolist()
        assert row["coo_col"] == roi.coo_col.tolist()
        assert np.array_equal(np.float32(row["coo_data"]), roi.coo_data)
        assert np.array_equal(np.float32(row["trace"]), trace)  # float32 round trip, exact
        assert np.array_equal(np.float32(row["neuropil_trace"]), neuropil_trace)
        assert row["is_cell"] == roi.is_cell and row["npix"] == 16
        assert math.isclose(row["cell_probability"], roi.cell_probability, rel_tol=1e-6)
        assert math.isclose(row["centroid_row"], roi.centroid_row, rel_tol=1e-6)


def test_a_run_without_rois_is_a_run(labeling_db):
    stored = store.write_run(labeling_db, run_values(), iter([]))

    assert stored.status == store.SEGMENTED and stored.n_rois == 0
    assert table_counts(labeling_db) == {"runs": 1, "rois": 0}
    assert store.find_run(labeling_db, 850517344, VERSION) == store.StoredRun(
        stored.segmentation_run_id, store.SKIPPED, 0)


def test_second_write_of_the_same_run_is_skipped_and_writes_nothing(labeling_db):
    first = store.write_run(labeling_db, run_values(), iter(make_rois(3)[0]))

    second = store.write_run(labeling_db, run_values(hostname="node8"), iter(make_rois(5)[0]))

    assert second == store.StoredRun(first.segmentation_run_id, store.SKIPPED, 3)
    assert table_counts(labeling_db) == {"runs": 1, "rois": 3}
    assert labeling_db.query("SELECT hostname FROM segmentation_runs")[0]["hostname"] == "node7"


def test_other_code_versions_and_experiments_are_separate_runs(labeling_db):
    store.write_run(labeling_db, run_values(), iter(make_rois(2)[0]))
    store.write_run(labeling_db, run_values(version="another"), iter(make_rois(2)[0]))
    store.write_run(labeling_db, run_values(experiment_id=1), iter(make_rois(2)[0]))

    assert table_counts(labeling_db) == {"runs": 3, "rois": 6}
    assert store.find_run(labeling_db, 850517344, "never-ran") is None


def test_overwrite_replaces_the_run_and_its_rois(labeling_db):
    old = store.write_run(labeling_db, run_values(), iter(make_rois(4)[0]))
    other = store.write_run(labeling_db, run_values(version="another"), iter(make_rois(2)[0]))

    new = store.write_run(labeling_db, run_values(hostname="node9"), iter(make_rois(3)[0]),
                          overwrite=True)

    assert new.status == store.SEGMENTED and new.n_rois == 3
    assert new.segmentation_run_id not in (old.segmentation_run_id, other.segmentation_run_id)
    assert stored_rois(labeling_db, old.segmentation_run_id) == []
    assert len(stored_rois(labeling_db, other.segmentation_run_id)) == 2
    assert table_counts(labeling_db) == {"runs": 2, "rois": 5}


def test_a_bad_roi_midway_leaves_no_run_and_no_roi(labeling_db):
    rois, traces, neuropil = make_rois(6)
    stat = [suite2p_stat(2, 3) for _ in range(6)]
    stat[4] = {**stat[4], "ypix": stat[4]["ypix"] + 100}  # outside the movie
    streamed = rois_from_suite2p(stat, traces, neuropil, np.zeros((6, 2)), SHAPE)

    with pytest.raises(RoiException, match="Suite2P ROI 4 has pixels outside"):
        store.write_run(labeling_db, run_values(), streamed)

    assert table_counts(labeling_db) == {"runs": 0, "rois": 0}


def test_a_failed_overwrite_keeps_the_old_run(labeling_db):
    old = store.write_run(labeling_db, run_values(), iter(make_rois(4)[0]))

    def failing_rois():
        yield from make_rois(2)[0]
        raise RoiException("disk trouble")

    with pytest.raises(RoiException):
        store.write_run(labeling_db, run_values(), failing_rois(), overwrite=True)

    assert store.find_run(labeling_db, 850517344, VERSION) == store.StoredRun(
        old.segmentation_run_id, store.SKIPPED, 4)


def test_settings_become_plain_json_that_jsonb_accepts():
    settings = {"block_size": (128, 128), "diameter": np.array([12.0, 12.0]),
                "nbins": np.int64(26), "max": float("inf"), "flag": np.bool_(True),
                "nested": {"path": __import__("pathlib").Path("/tmp/x"), "none": None}}

    converted = jsonable(settings)

    assert converted == {"block_size": [128, 128], "diameter": [12.0, 12.0], "nbins": 26,
                         "max": "inf", "flag": True,
                         "nested": {"path": "/tmp/x", "none": None}}
    json.dumps(converted, allow_nan=False)


def test_outline_overlay_colours_only_the_edge_of_each_mask():
    rows, cols = np.meshgrid(np.arange(2, 7), np.arange(3, 8), indexing="ij")

    overlay = outline_overlay([(rows.ravel(), cols.ravel())], [True], (10, 10))

    painted = overlay[..., 3] > 0
    assert painted[2, 3:8].all() and painted[6, 3:8].all()  # top and bottom edges
    assert painted[2:7, 3].all() and painted[2:7, 7].all()  # left and right edges
    assert not painted[3:6, 4:7].any()                      # inside
    assert painted.sum() == 16 and not painted[0].any()


def test_plot_is_rendered_as_png_bytes():
    image = np.random.default_rng(0).normal(100, 10, SHAPE).astype(np.float32)

    png = render_roi_plot(image, [(np.array([4, 4, 5]), np.array([6, 7, 6]))], [False],
                          "experiment 1: 1 ROIs, 0 classified as cells")

    assert png.startswith(b"\x89PNG\r\n\x1a\n")
