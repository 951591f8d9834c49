"""Score a stored segmentation run against ground-truth cell masks.

::

    python -m slapp.evaluation.compare --segmentation_run_id 3 \\
        --ground_truth .slapp/demo/storage/.../motion_corrected_video_ground_truth.h5
    precision 0.93  recall 0.90  F1 0.91 (28 of 31 cells, 30 ROIs classified as cells, of 61)

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
"""
import sys
from dataclasses import dataclass
from pathlib import Path

import argschema
import marshmallow as mm
import numpy as np
import scipy.sparse

from slapp.demo.synthetic_movie import read_ground_truth
from slapp.errors import SlappError
from slapp.evaluation.matching import MatchResult, match_rois
from slapp.utils.cli import run_main
from slapp.utils.files import write_json_atomically
from slapp.utils.query_utils import DbConnection, get_db_credentials, label_defaults


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
    CompareException
        If there is no such run.
    """
    runs = label_dbconn.query("SELECT video_shape FROM segmentation_runs WHERE id = %s",
                              (segmentation_run_id,))
    if not runs:
        raise CompareException(f"there is no segmentation run with id {segmentation_run_id}")
    video_shape = tuple(runs[0]["video_shape"])
    rows = label_dbconn.query(
        "SELECT coo_row, coo_col, coo_data, is_cell FROM rois "
        "WHERE segmentation_run_id = %s ORDER BY suite2p_roi_index", (segmentation_run_id,))
    masks = [scipy.sparse.coo_matrix((row["coo_data"], (row["coo_row"], row["coo_col"])),
                                     shape=video_shape) for row in rows]
    is_cell = np.array([row["is_cell"] for row in rows], dtype=bool)
    return masks, is_cell, video_shape


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
    return truth


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
    return RunComparison(match=match_rois(scored, truth, iou_threshold=iou_threshold),
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


class CompareSchema(argschema.ArgSchema):
    segmentation_run_id = mm.fields.Int(
        required=True, validate=mm.validate.Range(min=1),
        metadata={"description": "segmentation_runs.id of the run to score"})
    ground_truth = mm.fields.Str(
        required=True,
        metadata={"description": "HDF5 file with the true cell masks, dataset 'masks' "
                                 "(cells, height, width) in the movie's frame"})
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


class CompareOutputSchema(mm.Schema):
    segmentation_run_id = mm.fields.Int(required=True)
    ground_truth = mm.fields.Str(required=True)
    iou_threshold = mm.fields.Float(required=True)
    only_cells = mm.fields.Bool(required=True)
    n_rois = mm.fields.Int(required=True, metadata={"description": "ROIs scored"})
    n_rois_in_run = mm.fields.Int(required=True,
                                  metadata={"description": "all ROIs of the run"})
    n_cells = mm.fields.Int(required=True, metadata={"description": "true cells"})
    true_positives = mm.fields.Int(required=True,
                                   metadata={"description": "ROI-cell pairs matched"})
    precision = mm.fields.Float(required=True)
    recall = mm.fields.Float(required=True)
    f1 = mm.fields.Float(required=True)


class CompareSegmentation(argschema.ArgSchemaParser):
    """Score one stored segmentation run against ground truth."""

    default_schema = CompareSchema
    default_output_schema = CompareOutputSchema

    def run(self, label_dbconn: DbConnection) -> dict:
        """Compare, print the one-line result, and write ``--output_json`` if asked.

        Parameters
        ----------
        label_dbconn : DbConnection
            The labeling database.

        Returns
        -------
        dict
            The output document (see :class:`CompareOutputSchema`).
        """
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


def main() -> None:  # pragma: no cover - thin CLI
    """Run the command with the labeling database from the environment."""
    parser = CompareSegmentation(logger_name="CompareSegmentation")
    with DbConnection(**get_db_credentials(**label_defaults)) as label_dbconn:
        parser.run(label_dbconn)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_main(main, "compare"))
