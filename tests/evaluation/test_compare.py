"""slapp.evaluation.compare against real rows in the labeling database and real HDF5 files."""
import json

import h5py
import numpy as np
import pytest
from stored_runs import insert_run

from slapp.db.runs import UnknownRunException
from slapp.demo.synthetic_movie import MovieSpec, read_ground_truth, write_movie
from slapp.evaluation.compare import compare_run

FRAME = (64, 64)


@pytest.fixture(scope="module")
def truth_path(tmp_path_factory):
    """A real ground-truth file of 8 cells, as the demo writes it."""
    movie_path = tmp_path_factory.mktemp("truth") / "movie.h5"
    spec = MovieSpec(nframes=20, height=FRAME[0], width=FRAME[1], ncells=8, seed=11)
    return write_movie(movie_path, spec)


def _insert_run(labeling_db, masks, is_cell=None, video_shape=FRAME) -> int:
    """Store a segmentation run whose ROIs are ``masks`` (each a 2-D weight array)."""
    coo = []
    for mask in masks:
        rows, cols = np.nonzero(mask)
        coo.append((rows, cols, mask[rows, cols]))
    return insert_run(labeling_db, 850000001, coo, nframes=20, video_shape=video_shape,
                      is_cell=[True] * len(masks) if is_cell is None else is_cell)


def _perturbed_masks(truth):
    """2 cells missed, 1 found badly (a single pixel), 3 ROIs where no cell is.

    Returns the masks and whether each is a "cell": the 3 false ROIs are not.
    """
    masks = [mask.copy() for mask in truth[:6]]          # cells 6 and 7 are missed
    core = np.zeros(FRAME, np.float32)
    row, col = np.unravel_index(np.argmax(truth[5]), FRAME)
    core[row, col] = 1.0
    masks[5] = core                                      # IoU 1/area < 0.5: no match
    empty = truth.sum(axis=0) == 0
    false_rois = []
    for top in range(0, FRAME[0] - 2, 3):
        for left in range(0, FRAME[1] - 2, 3):
            if empty[top:top + 2, left:left + 2].all() and len(false_rois) < 3:
                square = np.zeros(FRAME, np.float32)
                square[top:top + 2, left:left + 2] = 0.5
                false_rois.append(square)
    assert len(false_rois) == 3
    return masks + false_rois, [True] * 6 + [False] * 3


def test_a_run_equal_to_the_ground_truth_scores_one(labeling_db, truth_path):
    truth = read_ground_truth(truth_path)
    run_id = _insert_run(labeling_db, list(truth))
    comparison = compare_run(labeling_db, run_id, truth_path)
    match = comparison.match
    assert (match.n_predicted, match.n_truth, match.true_positives) == (8, 8, 8)
    assert match.precision == match.recall == match.f1 == 1.0
    assert comparison.n_rois_in_run == 8


def test_a_perturbed_run_scores_the_known_counts(labeling_db, truth_path):
    masks, is_cell = _perturbed_masks(read_ground_truth(truth_path))
    run_id = _insert_run(labeling_db, masks, is_cell)

    every_roi = compare_run(labeling_db, run_id, truth_path, only_cells=False).match
    assert (every_roi.n_predicted, every_roi.n_truth, every_roi.true_positives) == (9, 8, 5)
    assert every_roi.precision == pytest.approx(5 / 9)
    assert every_roi.recall == pytest.approx(5 / 8)
    assert every_roi.f1 == pytest.approx(10 / 17)

    cells = compare_run(labeling_db, run_id, truth_path)  # the default: Suite2P's cells
    assert (cells.match.n_predicted, cells.match.true_positives) == (6, 5)
    assert cells.match.precision == pytest.approx(5 / 6)
    assert cells.match.f1 == pytest.approx(10 / 14)
    assert cells.n_rois_in_run == 9


def test_a_run_without_cells_scores_zero(labeling_db, truth_path):
    truth = read_ground_truth(truth_path)
    run_id = _insert_run(labeling_db, list(truth), is_cell=[False] * len(truth))
    match = compare_run(labeling_db, run_id, truth_path).match
    assert (match.n_predicted, match.true_positives) == (0, 0)
    assert match.precision == match.recall == match.f1 == 0.0
    assert compare_run(labeling_db, run_id, truth_path, only_cells=False).match.f1 == 1.0


def test_the_threshold_decides_what_counts(labeling_db, truth_path):
    truth = read_ground_truth(truth_path)
    halves = []
    for mask in truth:  # keep only the upper rows of each cell: IoU well below 1
        rows = np.nonzero(mask.any(axis=1))[0]
        half = mask.copy()
        half[rows[len(rows) * 2 // 3]:] = 0
        halves.append(half)
    run_id = _insert_run(labeling_db, halves)
    assert compare_run(labeling_db, run_id, truth_path,
                       iou_threshold=0.3).match.true_positives == 8
    assert compare_run(labeling_db, run_id, truth_path,
                       iou_threshold=0.9).match.true_positives == 0


def test_cli_prints_one_line_and_writes_output_json(labeling_db, truth_path, run_cli, tmp_path):
    masks, is_cell = _perturbed_masks(read_ground_truth(truth_path))
    run_id = _insert_run(labeling_db, masks, is_cell)
    output_json = tmp_path / "score.json"
    process = run_cli("slapp.evaluation.compare", "--segmentation_run_id", run_id,
                      "--ground_truth", truth_path, "--output_json", output_json)
    assert process.returncode == 0, process.stderr
    assert process.stdout.strip() == (
        "precision 0.83  recall 0.62  F1 0.71 (5 of 8 cells, 6 ROIs classified as cells, of 9)")
    score = json.loads(output_json.read_text())
    assert score == {
        "segmentation_run_id": run_id, "ground_truth": str(truth_path.resolve()),
        "iou_threshold": 0.5, "only_cells": True, "n_rois": 6, "n_rois_in_run": 9,
        "n_cells": 8, "true_positives": 5, "precision": pytest.approx(5 / 6),
        "recall": pytest.approx(5 / 8), "f1": pytest.approx(10 / 14)}
    assert [path.name for path in tmp_path.iterdir()] == ["score.json"]

    every_roi = run_cli("slapp.evaluation.compare", "--segmentation_run_id", run_id,
                        "--ground_truth", truth_path, "--only_cells", "False")
    assert every_roi.returncode == 0, every_roi.stderr
    assert every_roi.stdout.strip() == (
        "precision 0.56  recall 0.62  F1 0.59 (5 of 8 cells, 9 ROIs)")


def _bad_ground_truths(tmp_path):
    text_file = tmp_path / "notes.h5"
    text_file.write_text("not HDF5")
    no_masks = tmp_path / "no_masks.h5"
    with h5py.File(no_masks, "w") as handle:
        handle["data"] = np.zeros((2, 64, 64))
    wrong_shape = tmp_path / "wrong_shape.h5"
    with h5py.File(wrong_shape, "w") as handle:
        handle["masks"] = np.zeros((3, 32, 64), np.float32)
    return {
        "missing": (tmp_path / "absent.h5", "absent.h5 does not exist"),
        "not HDF5": (text_file, "cannot read ground truth masks"),
        "no masks dataset": (no_masks, "cannot read ground truth masks"),
        "shape mismatch": (wrong_shape, "are 32 x 64 px but the segmentation run's movie "
                                        "is 64 x 64 px"),
    }


def test_cli_errors_are_one_line_and_write_nothing(labeling_db, truth_path, run_cli, tmp_path):
    run_id = _insert_run(labeling_db, list(read_ground_truth(truth_path)))
    output_json = tmp_path / "out" / "score.json"
    output_json.parent.mkdir()
    cases = {name: (run_id, path, message)
             for name, (path, message) in _bad_ground_truths(tmp_path).items()}
    cases["unknown run"] = (run_id + 100, truth_path,
                            f"there is no segmentation run with id {run_id + 100}")
    for name, (bad_run_id, path, message) in cases.items():
        process = run_cli("slapp.evaluation.compare", "--segmentation_run_id", bad_run_id,
                          "--ground_truth", path, "--output_json", output_json)
        lines = process.stderr.strip().splitlines()
        assert process.returncode == 1, name
        assert len(lines) == 1 and lines[0].startswith("slapp compare: error: "), (name, lines)
        assert message in lines[0], (name, lines)
        assert list(output_json.parent.iterdir()) == [], name


def test_an_unknown_run_raises(labeling_db, truth_path):
    # run lookups are slapp.db.runs's, for every command alike
    with pytest.raises(UnknownRunException, match="^there is no segmentation run with id 42$"):
        compare_run(labeling_db, 42, truth_path)
