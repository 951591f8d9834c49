"""Which ROIs a labeling job shows: the samplings all, random, stratified and uncertain.

Every sampling takes the candidate ROIs (id, experiment, probability) and returns
the drawn ones in the order they were drawn, each with the stratum and
probability it was drawn with; ``n_rois`` caps every sampling. The draw depends
only on the candidates and ``random_seed`` (numpy's ``default_rng``), so the same
inputs always give the same job.

``all``
    Every candidate in ROI id order (the first ``n_rois`` of them).
``random``
    A uniform random sample without replacement (all of them, shuffled, without a cap).
``stratified``
    Within each experiment, equal numbers from each of ``strata`` equal-width bins
    of the classifier's probability over [0, 1], so that ROIs the classifier calls
    cells and ROIs it rejects both appear (an even number of strata puts a bin edge
    at 0.5). The cap is shared equally among the experiments and, within one,
    among its bins; a bin with too few ROIs gives its share to the others. Without
    a cap each experiment gives as many from each of its non-empty bins as its
    smallest non-empty bin holds.
``uncertain``
    The ROIs whose probability is closest to 0.5 (ties by ROI id): the ones a
    trained classifier learns most from.
"""
from dataclasses import dataclass
from typing import Sequence

import numpy as np

ALL, RANDOM, STRATIFIED, UNCERTAIN = "all", "random", "stratified", "uncertain"
SAMPLINGS = (ALL, RANDOM, STRATIFIED, UNCERTAIN)


@dataclass(frozen=True)
class Candidate:
    """A ROI that may be drawn: its ``rois.id``, experiment and classifier probability."""

    roi_id: int
    experiment_id: int
    probability: float | None = None


@dataclass(frozen=True)
class Draw:
    """A drawn ROI with the stratum and probability it was drawn with (None if unused)."""

    roi_id: int
    stratum: int | None = None
    probability: float | None = None


def equal_shares(total: int, capacities: Sequence[int]) -> list[int]:
    """Split ``total`` as equally as the capacities allow.

    Each share is at most its capacity; what a small one cannot take goes to the
    others; units left after equal division go to the first in order.

    Parameters
    ----------
    total : int
        What to share (capped at the sum of the capacities).
    capacities : sequence of int
        How much each can take.

    Returns
    -------
    list of int
        The shares, in the order of ``capacities``.
    """
    shares = [0] * len(capacities)
    left = min(total, sum(capacities))
    while left > 0:
        open_ = [index for index, capacity in enumerate(capacities) if shares[index] < capacity]
        each = max(1, left // len(open_))
        for index in open_:
            give = min(each, capacities[index] - shares[index], left)
            shares[index] += give
            left -= give
            if left == 0:
                break
    return shares


def stratum_of(probability: float, strata: int) -> int:
    """The bin of ``probability`` among ``strata`` equal-width bins of [0, 1]."""
    return min(int(probability * strata), strata - 1)


def draw(candidates: Sequence[Candidate], sampling: str, n_rois: int | None,
         random_seed: int, strata: int = 4) -> list[Draw]:
    """Draw a job's ROIs.

    Parameters
    ----------
    candidates : sequence of Candidate
        The ROIs of the job's runs; ``probability`` is needed by ``stratified``
        and ``uncertain`` (candidates without one are left out of those).
    sampling : {"all", "random", "stratified", "uncertain"}
        See the module docstring.
    n_rois : int or None
        At most this many ROIs; None for no cap.
    random_seed : int
        Seeds ``numpy.random.default_rng``.
    strata : int
        Bins of the probability for ``stratified``.

    Returns
    -------
    list of Draw
        In the order drawn.
    """
    rng = np.random.default_rng(random_seed)
    ordered = sorted(candidates, key=lambda candidate: candidate.roi_id)
    cap = len(ordered) if n_rois is None else n_rois
    if sampling == ALL:
        return [Draw(candidate.roi_id) for candidate in ordered[:cap]]
    if sampling == RANDOM:
        picked = rng.permutation(len(ordered))[:cap]
        return [Draw(ordered[index].roi_id) for index in picked]
    scored = [candidate for candidate in ordered if candidate.probability is not None]
    if sampling == UNCERTAIN:
        closest = sorted(scored, key=lambda candidate: (abs(candidate.probability - 0.5),
                                                        candidate.roi_id))
        return [Draw(candidate.roi_id, None, candidate.probability)
                for candidate in closest[:cap]]
    if sampling == STRATIFIED:
        return _stratified(scored, n_rois, rng, strata)
    raise ValueError(f"unknown sampling {sampling!r}")


def _stratified(scored: list[Candidate], n_rois: int | None, rng: np.random.Generator,
                strata: int) -> list[Draw]:
    experiments: dict[int, list[list[Candidate]]] = {}
    for candidate in scored:
        bins = experiments.setdefault(candidate.experiment_id, [[] for _ in range(strata)])
        bins[stratum_of(candidate.probability, strata)].append(candidate)
    order = sorted(experiments)
    if n_rois is None:
        per_experiment = [None] * len(order)
    else:
        per_experiment = equal_shares(
            n_rois, [sum(map(len, experiments[experiment])) for experiment in order])
    drawn = []
    for experiment, share in zip(order, per_experiment):
        bins = experiments[experiment]
        sizes = [len(members) for members in bins]
        if share is None:
            smallest = min(size for size in sizes if size)
            counts = [smallest if size else 0 for size in sizes]
        else:
            counts = equal_shares(share, sizes)
        for stratum, (members, count) in enumerate(zip(bins, counts)):
            for index in rng.permutation(len(members))[:count]:
                drawn.append(Draw(members[index].roi_id, stratum, members[index].probability))
    return drawn
