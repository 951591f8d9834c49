"""slapp.labeling.sampling: the draws are reproducible from the seed and the counts hold."""
import collections

import numpy as np
import pytest

from slapp.labeling.sampling import Candidate, draw, equal_shares, stratum_of


def _candidates(n_experiments=3, per_experiment=60, seed=0, skewed=True):
    rng = np.random.default_rng(seed)
    candidates, roi_id = [], 1
    for experiment in range(n_experiments):
        # skewed towards cells, as Suite2P's classifier often is, or uniform
        probabilities = (rng.beta(3, 1.5, per_experiment) if skewed
                         else rng.uniform(0, 1, per_experiment))
        for probability in probabilities:
            candidates.append(Candidate(roi_id, 1000 + experiment, float(probability)))
            roi_id += 1
    return candidates


@pytest.mark.parametrize("sampling", ["all", "random", "stratified", "uncertain"])
def test_the_same_seed_draws_the_same_rois(sampling):
    candidates = _candidates()
    first = draw(candidates, sampling, 40, random_seed=7)
    assert first == draw(list(reversed(candidates)), sampling, 40, random_seed=7)
    assert len(first) == 40 and len({task.roi_id for task in first}) == 40


@pytest.mark.parametrize("sampling", ["random", "stratified"])
def test_another_seed_draws_other_rois(sampling):
    candidates = _candidates()
    assert ({task.roi_id for task in draw(candidates, sampling, 40, random_seed=1)}
            != {task.roi_id for task in draw(candidates, sampling, 40, random_seed=2)})


@pytest.mark.parametrize("sampling", ["all", "random", "stratified", "uncertain"])
def test_n_rois_caps_every_sampling(sampling):
    candidates = _candidates()
    assert len(draw(candidates, sampling, 13, random_seed=0)) == 13
    assert len(draw(candidates, sampling, 10_000, random_seed=0)) <= len(candidates)


def test_all_is_every_roi_in_id_order():
    candidates = _candidates()
    assert [task.roi_id for task in draw(candidates, "all", None, 0)] == list(
        range(1, len(candidates) + 1))


def test_stratified_draws_equal_numbers_per_bin_in_each_experiment():
    candidates = _candidates(n_experiments=3, per_experiment=200, skewed=False)
    drawn = draw(candidates, "stratified", 120, random_seed=3, strata=4)
    by_roi = {candidate.roi_id: candidate for candidate in candidates}
    counts = collections.Counter((by_roi[task.roi_id].experiment_id, task.stratum)
                                 for task in drawn)
    # 120 over 3 experiments, 40 each, 10 from each of the 4 bins (each bin holds >= 10)
    assert counts == {(1000 + e, s): 10 for e in range(3) for s in range(4)}
    for task in drawn:
        assert task.stratum == stratum_of(by_roi[task.roi_id].probability, 4)
        assert task.probability == pytest.approx(by_roi[task.roi_id].probability)
    labels = {task.probability > 0.5 for task in drawn}
    assert labels == {True, False}  # both classes appear


def test_a_short_bin_gives_its_share_to_the_others():
    candidates = ([Candidate(i, 1, 0.1) for i in range(1, 3)]        # 2 in bin 0
                  + [Candidate(i, 1, 0.9) for i in range(3, 50)])    # 47 in bin 3
    drawn = draw(candidates, "stratified", 10, random_seed=0, strata=4)
    assert collections.Counter(task.stratum for task in drawn) == {0: 2, 3: 8}


def test_stratified_without_a_cap_takes_the_smallest_bin_from_each():
    candidates = ([Candidate(i, 1, 0.2) for i in range(1, 6)]
                  + [Candidate(i, 1, 0.8) for i in range(6, 30)])
    drawn = draw(candidates, "stratified", None, random_seed=0, strata=2)
    assert collections.Counter(task.stratum for task in drawn) == {0: 5, 1: 5}


def test_uncertain_takes_the_closest_to_one_half():
    candidates = [Candidate(i, 1, p) for i, p in enumerate([0.1, 0.45, 0.9, 0.52, 0.5, 0.7], 1)]
    assert [task.roi_id for task in draw(candidates, "uncertain", 3, 0)] == [5, 4, 2]


@pytest.mark.parametrize("total, capacities, shares", [
    (10, [5, 5], [5, 5]), (10, [2, 20, 20], [2, 4, 4]), (7, [3, 3, 3], [3, 2, 2]),
    (100, [1, 2], [1, 2]), (0, [4], [0])])
def test_equal_shares(total, capacities, shares):
    assert equal_shares(total, capacities) == shares
