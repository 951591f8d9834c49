"""How several labelers' judgements of one ROI become one label, and how far they agree.

Pure functions, no database: :mod:`slapp.labeling.consolidate` feeds them the
current labels of a job.

Strategies (the names DeepCell gave its vote tallying):

``majority``
    more "cell" than "not cell" labels is a cell, more "not cell" is not, an
    equal number is a tie (no label). With three labels this is the original
    Ground Truth Lambda's ``compute_majority``.
``consensus``
    a cell only when every labeler says so; otherwise not a cell.
``any``
    a cell when at least one labeler says so.

Every strategy gives no label when fewer than ``min_labels`` labels were
given (a Ground Truth worker who timed out gave none).
"""
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

CELL, NOT_CELL = "cell", "not cell"
STRATEGIES = ("majority", "consensus", "any")


@dataclass(frozen=True)
class Consensus:
    """The label a rule gives one ROI, and why.

    ``label`` is ``"cell"``, ``"not cell"`` or None; ``tie`` and ``too_few``
    say why it is None (a tie needs one more label; too few needs more).
    """

    label: str | None
    n_labels: int
    n_cell: int
    tie: bool
    too_few: bool


def consensus_label(labels: Iterable[str | bool | int | None], strategy: str = "majority",
                    min_labels: int = 1) -> Consensus:
    """Combine one ROI's labels into one.

    Parameters
    ----------
    labels : iterable
        Each ``"cell"`` / ``"not cell"``, or True / 1 (cell) and False / 0 (not
        cell); None (a timeout) is not a label and is left out.
    strategy : {"majority", "consensus", "any"}
        How the labels are combined (see the module docstring).
    min_labels : int
        At least this many labels are needed for a label; fewer give None.
        Unlike the original's ``exact_len``, more labels than this still count:
        a tie re-queued for one more label must be decided by it.

    Returns
    -------
    Consensus

    Raises
    ------
    ValueError
        For an unknown strategy or label.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}: choose one of {', '.join(STRATEGIES)}")
    votes = [_is_cell(label) for label in labels if label is not None]
    n_labels, n_cell = len(votes), sum(votes)
    if n_labels < min_labels or n_labels == 0:
        return Consensus(None, n_labels, n_cell, tie=False, too_few=True)
    if strategy == "majority":
        if 2 * n_cell == n_labels:
            return Consensus(None, n_labels, n_cell, tie=True, too_few=False)
        cell = 2 * n_cell > n_labels
    elif strategy == "consensus":
        cell = n_cell == n_labels
    else:
        cell = n_cell > 0
    return Consensus(CELL if cell else NOT_CELL, n_labels, n_cell, tie=False, too_few=False)


def _is_cell(label: str | bool | int) -> bool:
    if label in (CELL, NOT_CELL):
        return label == CELL
    if isinstance(label, (bool, int, np.integer)) and label in (0, 1):
        return bool(label)
    raise ValueError(f"a label is 'cell' or 'not cell', not {label!r}")


def fleiss_kappa(counts: Sequence[Sequence[int]] | np.ndarray) -> float | None:
    """Fleiss' kappa of items each judged by several raters into categories.

    Items may have different numbers of raters (the generalisation that averages
    each item's pairwise agreement); items with fewer than two ratings carry no
    agreement and are left out.

    Parameters
    ----------
    counts : array-like (n_items, n_categories)
        How many raters put each item in each category.

    Returns
    -------
    float or None
        1 for perfect agreement, 0 for what chance gives, negative below it;
        None when no item has two ratings or every rating is the same category
        (chance agreement is then 1 and kappa undefined).
    """
    counts = np.asarray(counts, dtype=np.float64).reshape(len(counts), -1)
    raters = counts.sum(axis=1)
    counts, raters = counts[raters >= 2], raters[raters >= 2]
    if counts.shape[0] == 0:
        return None
    observed = ((counts * (counts - 1)).sum(axis=1) / (raters * (raters - 1))).mean()
    proportions = counts.sum(axis=0) / raters.sum()
    chance = float((proportions ** 2).sum())
    if chance >= 1.0:
        return None
    return float((observed - chance) / (1.0 - chance))


def precision_recall(labels: Sequence[str], reference: Sequence[str]) -> dict:
    """One labeler's "cell" against the reference labels of the same ROIs.

    Parameters
    ----------
    labels, reference : sequence of str
        ``"cell"`` / ``"not cell"``, paired by position.

    Returns
    -------
    dict
        ``n_rois``, ``precision`` (of the labeler's cells, the fraction the
        reference calls cells; None when the labeler called none), ``recall``
        (of the reference's cells, the fraction the labeler called cells; None
        when there are none) and ``agreement`` (fraction labeled alike).
    """
    given = np.array([label == CELL for label in labels], dtype=bool)
    truth = np.array([label == CELL for label in reference], dtype=bool)
    true_positives = int((given & truth).sum())
    return {
        "n_rois": int(given.size),
        "precision": true_positives / int(given.sum()) if given.any() else None,
        "recall": true_positives / int(truth.sum()) if truth.any() else None,
        "agreement": float((given == truth).mean()) if given.size else None,
    }
