"""Score a stored segmentation run against ground-truth cell masks, or against another run.

::

    python -m slapp.evaluation.compare --segmentation_run_id 3 \\
        --ground_truth .slapp/demo/storage/.../motion_corrected_video_ground_truth.h5
    precision 0.93  recall 0.90  F1 0.91 (28 of 31 cells, 30 ROIs classified as cells, of 61)

    python -m slapp.evaluation.compare --segmentation_run_id 7 --reference_run_id 3

The second form pairs the ROIs of two runs of one experiment (say, before and
after a Suite2P upgrade) one to one by IoU, over every ROI of each, and prints
the fraction of each run's ROIs that found a partner, the mean IoU of the
pairs, the shift in ROI count, and how often the two runs' cell classifiers
agree on a pair. Runs of different experiments or frame shapes are refused.

The run's ROIs are read from the labeling database (``LABELING_*`` variables):
each ROI's COO mask (``coo_row``, ``coo_col``, ``coo_data``) in the run's
``video_shape`` frame. The ground truth is an HDF5 file with a dataset
``masks`` (cells, height, width), as :func:`slapp.demo.synthetic_movie.write_movie`
writes it. ROIs and cells are paired one to one by
:func:`slapp.evaluation.matching.match_rois`: a pair counts when the
intersection over union of their pixel supports is at least the threshold.

By default only the ROIs that Suite2P's built-in classifier calls cells
(``is_cell``) are scored: that is Suite2P's answer to "where are the cells".
The segmentation deliberately over-detects (``threshold_scaling`` 0.75) so that
the labelers see every candidate, and most of the extra ROIs are neuropil
patches the classifier rejects. ``--only_cells False`` scores every ROI, which
measures what the labelers are shown.

A ground truth is refused, in one line, when its masks are not the run's frame
shape (also by their ``height`` / ``width`` attributes when the file records
them), when they fit the run only transposed (a square frame), or when it
holds no cell.
"""
import sys
from dataclasses import dataclass
from pathlib import Path

import h5py
import marshmallow as mm
import numpy as np
import scipy.sparse

from slapp.contracts.ground_truth import MASKS_DATASET, read_ground_truth
from slapp.db.runs import load_run
from slapp.errors import SlappError
from slapp.evaluation.matching import MatchResult, match_rois
from slapp.utils.cli import require_one_of, run_main
from slapp.utils.files import write_json_atomically
from slapp.utils.query_utils import DbConnection, labeling_connection
from slapp.utils.schema import ArgSchema, ArgSchemaParser, StrictInt


# Ground-truth masks that match the run at least this well (F1) once transposed,
# and twice as well as stored, were written with height and width swapped.
TRANSPOSED_F1 = 0.5


class CompareException(SlappError):
    """A run or a ground-truth file cannot be compared."""


@dataclass(frozen=True)
class RunComparison:
    """How a stored run's ROIs match the ground truth.

    Attributes
    ----------
    match : MatchResult
        Counts, precision, recall, F1 and matched pairs of the scored ROIs.
    only_cells : bool
        Whether only the ROIs Suite2P classifies as cells were scored.
    n_rois_in_run : int
        All ROIs of the run, scored or not.
    """

    match: MatchResult
    only_cells: bool
    n_rois_in_run: int


def load_run_masks(label_dbconn: DbConnection, segmentation_run_id: int
                   ) -> tuple[list[scipy.sparse.coo_matrix], np.ndarray, tuple]:
    """Read a segmentation run's ROI masks from the labeling database.

    Parameters
    ----------
    label_dbconn : DbConnection
        The labeling database.
    segmentation_run_id : int
        ``segmentation_runs.id``.

    Returns
    -------
    masks : list of scipy.sparse.coo_matrix
        One weighted mask per ROI, shape ``video_shape``, in Suite2P index order.
    is_cell : numpy.ndarray
        bool (n_rois,): Suite2P's classifier output for each mask.
    video_shape : tuple of int
        ``(height, width)`` of the run's movie.

    Raises
    ------
    slapp.db.runs.UnknownRunException
        If there is no such run.
    """
    video_shape = tuple(load_run(label_dbconn, segmentation_run_id).columns["video_shape"])
    rows = label_dbconn.query(
        "SELECT coo_row, coo_col, coo_data, is_cell FROM rois "
        "WHERE segmentation_run_id = %s ORDER BY suite2p_roi_index", (segmentation_run_id,))
    masks = [scipy.sparse.coo_matrix((row["coo_data"], (row["coo_row"], row["coo_col"])),
                                     shape=video_shape) for row in rows]
    is_cell = np.array([row["is_cell"] for row in rows], dtype=bool)
    return masks, is_cell, video_shape


@dataclass(frozen=True)
class RunAgainstRun:
    """How the ROIs of one run match those of a reference run of the same movie.

    Attributes
    ----------
    segmentation_run_id, reference_run_id : int
        The two runs.
    experiment_id : int
        Their experiment.
    video_shape : tuple of int
        Their frame ``(height, width)``.
    match : MatchResult
        The one-to-one matching (``n_predicted``: the run's ROIs, ``n_truth``:
        the reference's).
    cell_agreement : dict
        Over the matched pairs: ``both`` cells, ``neither``, ``run_only``
        (cell in the run only), ``reference_only``.
    """

    segmentation_run_id: int
    reference_run_id: int
    experiment_id: int
    video_shape: tuple
    match: MatchResult
    cell_agreement: dict

    @property
    def matched_fraction(self) -> float:
        """Fraction of the run's ROIs with a partner in the reference (0 when it has none)."""
        return self.match.precision

    @property
    def reference_matched_fraction(self) -> float:
        """Fraction of the reference's ROIs with a partner in the run."""
        return self.match.recall

    @property
    def mean_iou(self) -> float | None:
        """Mean IoU of the matched pairs; None when nothing matched."""
        pairs = self.match.matched_pairs
        return float(np.mean([iou for _, _, iou in pairs])) if pairs else None

    @property
    def roi_count_shift(self) -> int:
        """The run's ROI count minus the reference's."""
        return self.match.n_predicted - self.match.n_truth

    @property
    def classification_agreement(self) -> float | None:
        """Fraction of matched pairs that both runs classify alike; None without pairs."""
        agreeing = self.cell_agreement["both"] + self.cell_agreement["neither"]
        total = agreeing + self.cell_agreement["run_only"] + self.cell_agreement["reference_only"]
        return agreeing / total if total else None


def compare_runs(label_dbconn: DbConnection, segmentation_run_id: int, reference_run_id: int,
                 iou_threshold: float = 0.5) -> RunAgainstRun:
    """Match every ROI of a run to every ROI of a reference run of the same movie.

    Parameters
    ----------
    label_dbconn : DbConnection
        The labeling database.
    segmentation_run_id : int
        The run under study (e.g. made by a new code or Suite2P version).
    reference_run_id : int
        The run it is compared with (e.g. the version in use).
    iou_threshold : float
        Minimum intersection over union for two ROIs to be a pair.

    Returns
    -------
    RunAgainstRun

    Raises
    ------
    CompareException
        If the runs are of different experiments or frame shapes.
    slapp.db.runs.UnknownRunException
        If a run does not exist.
    """
    run, reference = (load_run(label_dbconn, run_id).columns
                      for run_id in (segmentation_run_id, reference_run_id))
    if run["ophys_experiment_id"] != reference["ophys_experiment_id"]:
        raise CompareException(
            f"run {segmentation_run_id} is of experiment {run['ophys_experiment_id']} but "
            f"run {reference_run_id} is of experiment {reference['ophys_experiment_id']}: "
            f"only runs of one experiment can be compared")
    if list(run["video_shape"]) != list(reference["video_shape"]):
        raise CompareException(
            f"run {segmentation_run_id} has {run['video_shape'][0]} x {run['video_shape'][1]} "
            f"px frames but run {reference_run_id} has {reference['video_shape'][0]} x "
            f"{reference['video_shape'][1]} px: only runs of one movie can be compared")
    masks, is_cell, video_shape = load_run_masks(label_dbconn, segmentation_run_id)
    reference_masks, reference_is_cell, _ = load_run_masks(label_dbconn, reference_run_id)
    match = match_rois(masks, reference_masks, iou_threshold=iou_threshold) \
        if masks and reference_masks else _no_match(len(masks), len(reference_masks))
    agreement = {"both": 0, "neither": 0, "run_only": 0, "reference_only": 0}
    for index, reference_index, _ in match.matched_pairs:
        key = {(True, True): "both", (False, False): "neither", (True, False): "run_only",
               (False, True): "reference_only"}[(bool(is_cell[index]),
                                                 bool(reference_is_cell[reference_index]))]
        agreement[key] += 1
    return RunAgainstRun(segmentation_run_id=segmentation_run_id,
                         reference_run_id=reference_run_id,
                         experiment_id=run["ophys_experiment_id"], video_shape=video_shape,
                         match=match, cell_agreement=agreement)


def _no_match(n_run: int, n_reference: int) -> MatchResult:
    """The matching of two ROI sets one of which is empty."""
    return MatchResult(n_predicted=n_run, n_truth=n_reference, true_positives=0,
                       precision=0.0, recall=0.0, f1=0.0, matched_pairs=[])


def format_runs_comparison(comparison: RunAgainstRun, iou_threshold: float) -> str:
    """Render a run-against-run comparison as a few lines for a person.

    Parameters
    ----------
    comparison : RunAgainstRun
        From :func:`compare_runs`.
    iou_threshold : float
        The threshold used, for the heading.

    Returns
    -------
    str
        Four lines: heading, matched fractions, mean IoU and count shift,
        classification agreement.
    """
    match = comparison.match
    run, reference = comparison.segmentation_run_id, comparison.reference_run_id
    height, width = comparison.video_shape
    mean_iou = "none" if comparison.mean_iou is None else f"{comparison.mean_iou:.2f}"
    relative = (f", {100 * comparison.roi_count_shift / match.n_truth:+.1f}%"
                if match.n_truth else "")
    agreement = comparison.cell_agreement
    agreeing = ("no pair to compare" if comparison.classification_agreement is None else
                f"{agreement['both'] + agreement['neither']} of {match.true_positives} pairs "
                f"({comparison.classification_agreement:.2f}): cell in both "
                f"{agreement['both']}, in neither {agreement['neither']}, only in run {run} "
                f"{agreement['run_only']}, only in run {reference} "
                f"{agreement['reference_only']}")
    return "\n".join([
        f"run {run} against reference run {reference} (experiment "
        f"{comparison.experiment_id}, {height} x {width} px, pairs at IoU >= "
        f"{iou_threshold:g})",
        f"  matched: {match.true_positives} of {match.n_predicted} ROIs of run {run} "
        f"({comparison.matched_fraction:.2f}), {match.true_positives} of {match.n_truth} of "
        f"run {reference} ({comparison.reference_matched_fraction:.2f})",
        f"  mean IoU of pairs {mean_iou}; ROI count shift {comparison.roi_count_shift:+d} "
        f"({match.n_predicted} against {match.n_truth}{relative})",
        f"  cell classification agrees on {agreeing}"])


def load_truth_masks(path: Path, video_shape: tuple) -> np.ndarray:
    """Read ground-truth cell masks and check that they fit the run's frame.

    Parameters
    ----------
    path : pathlib.Path
        HDF5 file with a dataset ``masks`` (cells, height, width).
    video_shape : tuple of int
        ``(height, width)`` the masks must have.

    Returns
    -------
    numpy.ndarray
        float32 (cells, height, width).

    Raises
    ------
    CompareException
        If the file is missing, unreadable, has no ``masks`` dataset, or its
        masks have another shape.
    """
    path = Path(path)
    if path.is_dir():
        raise CompareException(f"ground truth {path} is a directory, not a mask file")
    if not path.is_file():
        raise CompareException(f"ground truth file {path} does not exist")
    try:
        truth = read_ground_truth(path)
    except (OSError, KeyError) as error:
        raise CompareException(
            f"cannot read ground truth masks (HDF5 dataset 'masks') from {path}: "
            f"{str(error).strip() or type(error).__name__}") from None
    if truth.ndim != 3:
        raise CompareException(
            f"ground truth masks in {path} must be (cells, height, width), got shape "
            f"{truth.shape}")
    if tuple(truth.shape[1:]) != tuple(video_shape):
        raise CompareException(
            f"ground truth masks in {path} are {truth.shape[1]} x {truth.shape[2]} px but the "
            f"segmentation run's movie is {video_shape[0]} x {video_shape[1]} px")
    stored = _stored_frame_shape(path)
    if stored is not None and stored != tuple(video_shape):
        raise CompareException(
            f"ground truth masks in {path} were made for {stored[0]} x {stored[1]} px frames "
            f"(their height and width attributes) but the segmentation run's movie is "
            f"{video_shape[0]} x {video_shape[1]} px")
    if not np.any(truth):
        raise CompareException(f"ground truth {path} holds no cells ({len(truth)} masks, "
                               "none with a pixel): there is nothing to score against")
    return truth


def _stored_frame_shape(path: Path) -> tuple[int, int] | None:
    """The frame ``(height, width)`` the masks' attributes record (as the synthetic
    movies' ground truth does), or None when they record none."""
    with h5py.File(path, "r") as stream:
        attributes = stream[MASKS_DATASET].attrs
        if "height" in attributes and "width" in attributes:
            return int(attributes["height"]), int(attributes["width"])
    return None


def check_orientation(scored: list, truth: np.ndarray, iou_threshold: float,
                      path: Path) -> MatchResult:
    """Match ROIs to the ground truth, refusing masks that fit only when transposed.

    On a square frame, masks written as (cells, width, height) have the
    right shape and score F1 near 0; they are detected by matching them
    transposed as well.

    Parameters
    ----------
    scored : list
        The run's scored ROI masks.
    truth : numpy.ndarray
        (cells, height, width) ground-truth masks.
    iou_threshold : float
        As for :func:`match_rois`.
    path : Path
        The ground-truth file, for the message.

    Returns
    -------
    MatchResult
        The match of ``scored`` to ``truth`` as stored.

    Raises
    ------
    CompareException
        When the transposed masks match at least half the cells (F1 >= 0.5)
        and more than twice as well as the stored ones.
    """
    match = match_rois(scored, truth, iou_threshold=iou_threshold)
    if truth.shape[1] != truth.shape[2]:
        return match
    transposed = match_rois(scored, truth.transpose(0, 2, 1), iou_threshold=iou_threshold)
    if transposed.f1 >= TRANSPOSED_F1 and transposed.f1 > 2 * match.f1:
        raise CompareException(
            f"ground truth masks in {path} look transposed: F1 {match.f1:.2f} as stored, "
            f"{transposed.f1:.2f} with height and width swapped; store them as "
            "(cells, height, width)")
    return match


def compare_run(label_dbconn: DbConnection, segmentation_run_id: int, ground_truth: Path,
                iou_threshold: float = 0.5, only_cells: bool = True) -> RunComparison:
    """Match a stored run's ROIs to ground-truth cells.

    Parameters
    ----------
    label_dbconn : DbConnection
        The labeling database.
    segmentation_run_id : int
        ``segmentation_runs.id``.
    ground_truth : pathlib.Path
        Ground-truth masks (see :func:`load_truth_masks`).
    iou_threshold : float
        Minimum intersection over union for a ROI to count as finding a cell.
    only_cells : bool
        Score only the ROIs that Suite2P's classifier calls cells (the default),
        or every ROI.

    Returns
    -------
    RunComparison
        The match of the scored ROIs, and how many ROIs the run has in all.

    Raises
    ------
    CompareException
        If the run does not exist or the ground truth does not fit it.
    """
    masks, is_cell, video_shape = load_run_masks(label_dbconn, segmentation_run_id)
    truth = load_truth_masks(ground_truth, video_shape)
    scored = [mask for mask, cell in zip(masks, is_cell) if cell or not only_cells]
    return RunComparison(match=check_orientation(scored, truth, iou_threshold, ground_truth),
                         only_cells=only_cells, n_rois_in_run=len(masks))


def format_result(comparison: RunComparison) -> str:
    """Render a comparison as one line for a person.

    Parameters
    ----------
    comparison : RunComparison
        From :func:`compare_run`.

    Returns
    -------
    str
        e.g. ``precision 0.93  recall 0.90  F1 0.91 (28 of 31 cells, 30 ROIs)``,
        followed by ``classified as cells, of 61`` when only cells were scored.
    """
    match = comparison.match
    scored = f"{match.n_predicted} ROIs"
    if comparison.only_cells:
        scored += f" classified as cells, of {comparison.n_rois_in_run}"
    return (f"precision {match.precision:.2f}  recall {match.recall:.2f}  F1 {match.f1:.2f} "
            f"({match.true_positives} of {match.n_truth} cells, {scored})")


class CompareSchema(ArgSchema):
    segmentation_run_id = StrictInt(
        required=True, validate=mm.validate.Range(min=1),
        metadata={"description": "segmentation_runs.id of the run to score"})
    ground_truth = mm.fields.Str(
        metadata={"description": "HDF5 file with the true cell masks, dataset 'masks' "
                                 "(cells, height, width) in the movie's frame"})
    reference_run_id = StrictInt(
        validate=mm.validate.Range(min=1),
        metadata={"description": "instead of --ground_truth: segmentation_runs.id of another "
                                 "run of the same experiment to compare with, every ROI of "
                                 "each (--only_cells does not apply)"})
    iou_threshold = mm.fields.Float(
        dump_default=0.5, validate=mm.validate.Range(min=0, max=1, min_inclusive=False),
        metadata={"description": "minimum intersection over union for a ROI to count as "
                                 "finding a cell. 0.5 is the usual criterion and makes a "
                                 "match unambiguous: no ROI can reach it with two cells "
                                 "that do not overlap"})
    only_cells = mm.fields.Bool(
        dump_default=True,
        metadata={"description": "score only the ROIs Suite2P's classifier calls cells: "
                                 "Suite2P's own answer to where the cells are. False "
                                 "scores every ROI, i.e. what the labelers are shown; the "
                                 "segmentation over-detects on purpose, so precision is "
                                 "lower"})

    @mm.validates_schema
    def one_reference(self, data, **kwargs):
        require_one_of(data, "ground_truth", "reference_run_id")


class CompareOutputSchema(mm.Schema):
    segmentation_run_id = StrictInt(required=True)
    ground_truth = mm.fields.Str(required=True)
    iou_threshold = mm.fields.Float(required=True)
    only_cells = mm.fields.Bool(required=True)
    n_rois = StrictInt(required=True, metadata={"description": "ROIs scored"})
    n_rois_in_run = StrictInt(required=True,
                              metadata={"description": "all ROIs of the run"})
    n_cells = StrictInt(required=True, metadata={"description": "true cells"})
    true_positives = StrictInt(required=True,
                               metadata={"description": "ROI-cell pairs matched"})
    precision = mm.fields.Float(required=True)
    recall = mm.fields.Float(required=True)
    f1 = mm.fields.Float(required=True)


class CellAgreementSchema(mm.Schema):
    both = StrictInt(required=True)
    neither = StrictInt(required=True)
    run_only = StrictInt(required=True)
    reference_only = StrictInt(required=True)


class RunAgainstRunOutputSchema(mm.Schema):
    segmentation_run_id = StrictInt(required=True)
    reference_run_id = StrictInt(required=True)
    experiment_id = StrictInt(required=True)
    iou_threshold = mm.fields.Float(required=True)
    n_rois = StrictInt(required=True, metadata={"description": "ROIs of the run"})
    n_reference_rois = StrictInt(required=True)
    n_matched = StrictInt(required=True, metadata={"description": "ROI pairs"})
    matched_fraction = mm.fields.Float(required=True,
                                       metadata={"description": "n_matched / n_rois"})
    reference_matched_fraction = mm.fields.Float(
        required=True, metadata={"description": "n_matched / n_reference_rois"})
    mean_iou = mm.fields.Float(allow_none=True, required=True,
                               metadata={"description": "null when nothing matched"})
    roi_count_shift = StrictInt(required=True,
                                metadata={"description": "n_rois - n_reference_rois"})
    classification_agreement = mm.fields.Float(
        allow_none=True, required=True,
        metadata={"description": "fraction of pairs classified alike; null without pairs"})
    cell_agreement = mm.fields.Nested(CellAgreementSchema, required=True)


class CompareSegmentation(ArgSchemaParser):
    """Score one stored segmentation run against ground truth or against another run."""

    default_schema = CompareSchema
    default_output_schema = CompareOutputSchema

    def run(self, label_dbconn: DbConnection) -> dict:
        """Compare with the ground truth or the reference run, print the result, and
        write ``--output_json`` if asked.

        Parameters
        ----------
        label_dbconn : DbConnection
            The labeling database.

        Returns
        -------
        dict
            The output document (see :class:`CompareOutputSchema`, or
            :class:`RunAgainstRunOutputSchema` for a reference run).
        """
        if "reference_run_id" in self.args:
            return self._against_run(label_dbconn)
        ground_truth = Path(self.args["ground_truth"]).resolve()
        comparison = compare_run(label_dbconn, self.args["segmentation_run_id"], ground_truth,
                                 self.args["iou_threshold"], self.args["only_cells"])
        match = comparison.match
        output = {"segmentation_run_id": self.args["segmentation_run_id"],
                  "ground_truth": str(ground_truth),
                  "iou_threshold": self.args["iou_threshold"],
                  "only_cells": comparison.only_cells,
                  "n_rois": match.n_predicted, "n_rois_in_run": comparison.n_rois_in_run,
                  "n_cells": match.n_truth, "true_positives": match.true_positives,
                  "precision": match.precision, "recall": match.recall, "f1": match.f1}
        print(format_result(comparison))
        if self.args.get("output_json"):
            write_json_atomically(self.args["output_json"], self.get_output_json(output))
        return output

    def _against_run(self, label_dbconn: DbConnection) -> dict:
        threshold = self.args["iou_threshold"]
        comparison = compare_runs(label_dbconn, self.args["segmentation_run_id"],
                                  self.args["reference_run_id"], threshold)
        match = comparison.match
        output = {"segmentation_run_id": comparison.segmentation_run_id,
                  "reference_run_id": comparison.reference_run_id,
                  "experiment_id": comparison.experiment_id, "iou_threshold": threshold,
                  "n_rois": match.n_predicted, "n_reference_rois": match.n_truth,
                  "n_matched": match.true_positives,
                  "matched_fraction": comparison.matched_fraction,
                  "reference_matched_fraction": comparison.reference_matched_fraction,
                  "mean_iou": comparison.mean_iou,
                  "roi_count_shift": comparison.roi_count_shift,
                  "classification_agreement": comparison.classification_agreement,
                  "cell_agreement": comparison.cell_agreement}
        print(format_runs_comparison(comparison, threshold))
        if self.args.get("output_json"):
            schema = RunAgainstRunOutputSchema()
            write_json_atomically(self.args["output_json"], schema.dump(schema.load(output)))
        return output


def main() -> None:  # pragma: no cover - thin CLI
    """Run the command with the labeling database from the environment."""
    parser = CompareSegmentation(logger_name="CompareSegmentation")
    with labeling_connection(interactive=True) as label_dbconn:
        parser.run(label_dbconn)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_main(main, "compare"))
