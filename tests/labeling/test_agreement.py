"""The consensus rules and Fleiss' kappa: the original toolkit's compute_majority cases."""
import pytest

from slapp.labeling.agreement import consensus_label, fleiss_kappa, precision_recall


# The original Lambda's compute_majority(labels, exact_len) cases, with the label it
# expected. exact_len becomes min_labels: with no more labels than asked for, the
# two agree.
@pytest.mark.parametrize("labels, exact, expected", [
    ([0], None, "not cell"),
    ([1], None, "cell"),
    ([1], 1, "cell"),
    ([1], 2, None),
    ([0, 0], None, "not cell"),
    ([1, 1], None, "cell"),
    ([1, 1], 2, "cell"),
    ([1, 1], 3, None),
    ([0, 1], None, None),
    ([0, 0, 0], None, "not cell"),
    ([0, 0, 1], None, "not cell"),
    ([1, 0, 1], None, "cell"),
    ([1, 0, 1], 3, "cell"),
    ([1, 0, 1], 4, None),
    ([True, False, True], None, "cell"),
    ([1, 1, 1], None, "cell"),
    ([1, 1, 0, 0], None, None),
    ([1, 1, 1, 0], None, "cell"),
    ([1, 0, 0, 0], None, "not cell"),
])
def test_the_original_compute_majority_cases_hold_for_majority(labels, exact, expected):
    decided = consensus_label(labels, "majority", min_labels=exact or 1)
    assert decided.label == expected
    assert (decided.n_labels, decided.n_cell) == (len(labels), sum(labels))


def test_more_labels_than_the_minimum_still_count():
    """The one deliberate difference from exact_len: the original's ([1, 0, 1], 2) gave
    None; a ROI re-queued after a tie has more labels than the minimum and must be decided."""
    assert consensus_label([1, 0, 1], "majority", min_labels=2).label == "cell"
    assert consensus_label(["cell", "not cell", "cell", "not cell", "cell"],
                           min_labels=3).label == "cell"


def test_ties_and_short_rois_say_why_they_have_no_label():
    tie = consensus_label(["cell", "not cell"], min_labels=2)
    assert (tie.label, tie.tie, tie.too_few) == (None, True, False)
    short = consensus_label(["cell", None, "cell"], min_labels=3)  # a worker timed out
    assert (short.label, short.tie, short.too_few, short.n_labels) == (None, False, True, 2)
    nothing = consensus_label([], min_labels=1)
    assert (nothing.label, nothing.too_few) == (None, True)


@pytest.mark.parametrize("labels, majority, consensus, any_", [
    (["cell", "cell", "cell"], "cell", "cell", "cell"),
    (["cell", "cell", "not cell"], "cell", "not cell", "cell"),
    (["cell", "not cell", "not cell"], "not cell", "not cell", "cell"),
    (["not cell"] * 3, "not cell", "not cell", "not cell"),
])
def test_deepcells_three_tallying_strategies(labels, majority, consensus, any_):
    assert consensus_label(labels, "majority", 3).label == majority
    assert consensus_label(labels, "consensus", 3).label == consensus
    assert consensus_label(labels, "any", 3).label == any_


def test_unknown_strategies_and_labels_are_refused():
    with pytest.raises(ValueError, match="unknown strategy"):
        consensus_label(["cell"], "vote")
    with pytest.raises(ValueError, match="'maybe'"):
        consensus_label(["maybe"])


def test_fleiss_kappa_of_fleiss_example():
    """Fleiss (1971) as worked on Wikipedia: 10 subjects, 14 raters, 5 categories."""
    counts = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0],
              [2, 2, 8, 1, 1], [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2],
              [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    assert fleiss_kappa(counts) == pytest.approx(0.20993, abs=1e-5)


def test_fleiss_kappa_limits():
    assert fleiss_kappa([[3, 0], [0, 3], [3, 0]]) == pytest.approx(1.0)
    # raters split as evenly as possible on every item: below chance
    assert fleiss_kappa([[2, 1], [1, 2], [2, 1], [1, 2]]) < 0
    # one category only, or nothing with two ratings: undefined
    assert fleiss_kappa([[3, 0], [3, 0]]) is None
    assert fleiss_kappa([[1, 0], [0, 1]]) is None
    # items rated once are left out; different rater counts are allowed
    assert fleiss_kappa([[3, 0], [0, 2], [1, 0]]) == pytest.approx(1.0)


def test_precision_and_recall_of_cell():
    given = ["cell", "cell", "not cell", "not cell", "cell"]
    reference = ["cell", "not cell", "cell", "not cell", "cell"]
    assert precision_recall(given, reference) == {
        "n_rois": 5, "precision": pytest.approx(2 / 3), "recall": pytest.approx(2 / 3),
        "agreement": pytest.approx(3 / 5)}
    assert precision_recall(["not cell"], ["not cell"])["precision"] is None
