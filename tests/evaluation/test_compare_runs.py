"""Run against run: slapp.evaluation.compare --segmentation_run_id A --reference_run_id B."""
import json

import numpy as np
import pytest
from stored_runs import insert_run

from slapp.evaluation.compare import CompareException, compare_runs

SHAPE = (40, 40)
EXPERIMENT = 850000001


def _square(top, left, size=4, weight=1.0):
    rows, cols = np.mgrid[top:top + size, left:left + size]
    return rows.ravel(), cols.ravel(), np.full(rows.size, weight, np.float32)


def _reference_and_new(labeling_db):
    """A reference run of 5 squares and a 'new version' run that differs known ways.

    New run: squares 0-2 identical (IoU 1), square 3 shifted by one column
    (IoU 12/20 = 0.6), square 4 lost, two new squares. Classification: the
    reference calls 0, 1, 3 cells; the new run calls 0, 2, 3 cells.
    """
    reference = [_square(2, 2), _square(2, 12), _square(12, 2), _square(12, 12),
                 _square(22, 22)]
    new = [_square(2, 2, weight=0.5), _square(2, 12), _square(12, 2), _square(12, 13),
           _square(32, 2), _square(32, 32)]
    reference_id = insert_run(labeling_db, EXPERIMENT, reference, video_shape=SHAPE, seed=1,
                              is_cell=[True, True, False, True, False])
    new_id = insert_run(labeling_db, EXPERIMENT, new, video_shape=SHAPE, seed=2,
                        is_cell=[True, False, True, True, False, True])
    return new_id, reference_id


def test_two_runs_of_one_movie_are_paired_and_measured(labeling_db):
    new_id, reference_id = _reference_and_new(labeling_db)
    comparison = compare_runs(labeling_db, new_id, reference_id)
    assert comparison.match.true_positives == 4
    assert comparison.matched_fraction == pytest.approx(4 / 6)
    assert comparison.reference_matched_fraction == pytest.approx(4 / 5)
    assert comparison.mean_iou == pytest.approx((1 + 1 + 1 + 0.6) / 4)
    assert comparison.roi_count_shift == 1
    assert comparison.cell_agreement == {"both": 2, "neither": 0, "run_only": 1,
                                         "reference_only": 1}
    assert comparison.classification_agreement == pytest.approx(0.5)
    assert comparison.experiment_id == EXPERIMENT and comparison.video_shape == SHAPE
    # a stricter threshold drops the shifted square
    assert compare_runs(labeling_db, new_id, reference_id,
                        iou_threshold=0.7).match.true_positives == 3


def test_a_run_against_itself_matches_everything(labeling_db):
    _, reference_id = _reference_and_new(labeling_db)
    comparison = compare_runs(labeling_db, reference_id, reference_id)
    assert comparison.matched_fraction == comparison.reference_matched_fraction == 1.0
    assert comparison.mean_iou == 1.0 and comparison.roi_count_shift == 0
    assert comparison.classification_agreement == 1.0


def test_a_run_without_rois_matches_nothing(labeling_db):
    _, reference_id = _reference_and_new(labeling_db)
    empty_id = insert_run(labeling_db, EXPERIMENT, [], video_shape=SHAPE, seed=3)
    comparison = compare_runs(labeling_db, empty_id, reference_id)
    assert comparison.match.true_positives == 0
    assert comparison.matched_fraction == comparison.reference_matched_fraction == 0.0
    assert comparison.mean_iou is None and comparison.classification_agreement is None
    assert comparison.roi_count_shift == -5


def test_cli_prints_the_comparison_and_writes_output_json(labeling_db, run_cli, tmp_path):
    new_id, reference_id = _reference_and_new(labeling_db)
    output_json = tmp_path / "comparison.json"
    process = run_cli("slapp.evaluation.compare", "--segmentation_run_id", new_id,
                      "--reference_run_id", reference_id, "--output_json", output_json)
    assert process.returncode == 0, process.stderr
    assert process.stdout.splitlines() == [
        f"run {new_id} against reference run {reference_id} (experiment {EXPERIMENT}, "
        "40 x 40 px, pairs at IoU >= 0.5)",
        f"  matched: 4 of 6 ROIs of run {new_id} (0.67), 4 of 5 of run {reference_id} (0.80)",
        "  mean IoU of pairs 0.90; ROI count shift +1 (6 against 5, +20.0%)",
        f"  cell classification agrees on 2 of 4 pairs (0.50): cell in both 2, in neither 0, "
        f"only in run {new_id} 1, only in run {reference_id} 1"]
    assert json.loads(output_json.read_text()) == {
        "segmentation_run_id": new_id, "reference_run_id": reference_id,
        "experiment_id": EXPERIMENT, "iou_threshold": 0.5, "n_rois": 6,
        "n_reference_rois": 5, "n_matched": 4, "matched_fraction": pytest.approx(4 / 6),
        "reference_matched_fraction": 0.8, "mean_iou": pytest.approx(0.9),
        "roi_count_shift": 1, "classification_agreement": 0.5,
        "cell_agreement": {"both": 2, "neither": 0, "run_only": 1, "reference_only": 1}}


def test_runs_of_different_movies_are_refused_in_one_line(labeling_db, run_cli, tmp_path):
    new_id, reference_id = _reference_and_new(labeling_db)
    other_experiment = insert_run(labeling_db, EXPERIMENT + 1, [_square(2, 2)],
                                  video_shape=SHAPE, seed=4)
    other_shape = insert_run(labeling_db, EXPERIMENT, [_square(2, 2)], video_shape=(40, 64),
                             seed=5)
    output_json = tmp_path / "out" / "comparison.json"
    output_json.parent.mkdir()
    cases = {
        "experiment": (other_experiment, f"run {new_id} is of experiment {EXPERIMENT} but run "
                                         f"{other_experiment} is of experiment "
                                         f"{EXPERIMENT + 1}"),
        "shape": (other_shape, f"run {new_id} has 40 x 40 px frames but run {other_shape} "
                               "has 40 x 64 px"),
        "unknown": (999, "there is no segmentation run with id 999"),
    }
    for name, (reference, message) in cases.items():
        process = run_cli("slapp.evaluation.compare", "--segmentation_run_id", new_id,
                          "--reference_run_id", reference, "--output_json", output_json)
        lines = process.stderr.strip().splitlines()
        assert process.returncode == 1, name
        assert len(lines) == 1 and lines[0].startswith("slapp compare: error: "), (name, lines)
        assert message in lines[0], (name, lines)
        assert process.stdout == "" and list(output_json.parent.iterdir()) == [], name
    with pytest.raises(CompareException, match="only runs of one experiment"):
        compare_runs(labeling_db, new_id, other_experiment)


def test_cli_wants_exactly_one_of_ground_truth_and_reference(labeling_db, run_cli, tmp_path):
    for extra in ([], ["--ground_truth", tmp_path / "t.h5", "--reference_run_id", "2"]):
        process = run_cli("slapp.evaluation.compare", "--segmentation_run_id", 1, *extra)
        assert process.returncode == 1
        assert "give --ground_truth or --reference_run_id" in process.stderr
