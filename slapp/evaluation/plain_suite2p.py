"""Plain ``suite2p.run_s2p`` baselines, and scoring any Suite2P result against ground truth.

The segment step's Suite2P settings are judged against two plain Suite2P runs
on the same movie:

``original_jobs``
    What the original segmentation jobs ran: Suite2P's defaults with
    ``threshold_scaling`` 0.75 and ``nbins`` from the manifest (the original
    manifests gave ``nframes // 115``).
``suite2p_defaults``
    Suite2P's defaults untouched (``threshold_scaling`` 1.0, ``nbins`` 5000,
    so bins of ``round(tau * fs)`` frames).

Both are given the movie's frame rate (31 Hz; Suite2P's default of 10 Hz
describes other microscopes), run on the CPU, skip registration (the movies
are motion corrected) and deconvolution (it does not change ROIs), and use
Suite2P's built-in classifier, exactly as the segment step does.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from slapp.evaluation.matching import MatchResult, match_rois
from slapp.segmentation.settings import place_options
from slapp.segmentation.suite2p_runner import Suite2pOptions, base_inputs, suite2p_outputs

BASELINES = ("original_jobs", "suite2p_defaults")
# The original jobs' manifest bins 115 frames per detection frame.
ORIGINAL_BIN_SIZE = 115
# Allen two-photon movies are acquired at 31 Hz.
MOVIE_RATE_HZ = 31.0
# Suite2P 1.1 raises a ValueError starting with this when sparsery finds no ROI.
_NO_ROIS_FOUND = "no ROIs were found"


@dataclass(frozen=True)
class Segmentation:
    """The ROIs of one Suite2P run.

    Attributes
    ----------
    masks : list of (numpy.ndarray, numpy.ndarray)
        Each ROI's ``(ypix, xpix)``.
    is_cell : numpy.ndarray
        bool (n_rois,): Suite2P's classifier calls the ROI a cell.
    seconds : float
        Wall time of the Suite2P run.
    """

    masks: list
    is_cell: np.ndarray
    seconds: float


@dataclass(frozen=True)
class Scores:
    """How a segmentation matches the ground truth, one to one at an IoU threshold.

    Attributes
    ----------
    all_rois : MatchResult
        Every ROI scored: what the labelers are shown.
    cells : MatchResult
        Only the ROIs the classifier calls cells: Suite2P's own answer.
    """

    all_rois: MatchResult
    cells: MatchResult


def baseline_inputs(baseline: str, movie_path: Path, nbinned: int,
                    work_dir: Path) -> tuple[dict, dict]:
    """Return the complete ``db`` and ``settings`` of a plain Suite2P baseline run.

    Parameters
    ----------
    baseline : {"original_jobs", "suite2p_defaults"}
        Which baseline (see the module docstring).
    movie_path : pathlib.Path
        The HDF5 movie (dataset ``data``).
    nbinned : int
        The manifest's binned frames, on which ``original_jobs`` detects
        (``suite2p_defaults`` keeps Suite2P's own binning).
    work_dir : pathlib.Path
        Directory for Suite2P's binary file and outputs.

    Returns
    -------
    db, settings : dict

    Raises
    ------
    ValueError
        If ``baseline`` is unknown.
    """
    if baseline not in BASELINES:
        raise ValueError(f"unknown baseline {baseline!r}: choose one of {', '.join(BASELINES)}")
    db, settings = base_inputs(movie_path, work_dir)
    place_options(settings, db, {"fs": MOVIE_RATE_HZ, "torch_device": "cpu",
                                 "do_registration": False})
    if baseline == "original_jobs":
        place_options(settings, db, {"threshold_scaling": 0.75})
        settings["detection"]["nbins"] = int(nbinned)
    return db, settings


def run_baseline(baseline: str, movie_path: Path, nbinned: int,
                 tmp_dir: Path | None = None) -> Segmentation:
    """Run one plain Suite2P baseline on a movie; its files are deleted afterwards.

    Parameters
    ----------
    baseline : {"original_jobs", "suite2p_defaults"}
    movie_path : pathlib.Path
        The HDF5 movie.
    nbinned : int
        The manifest's binned frames (see :func:`baseline_inputs`).
    tmp_dir : pathlib.Path, optional
        Where Suite2P's working directory is made ($TMPDIR when None).

    Returns
    -------
    Segmentation
        No ROI at all is a result: empty masks.
    """
    from suite2p import run_s2p

    work_dir = Path(tempfile.mkdtemp(prefix="slapp_baseline_", dir=tmp_dir))
    try:
        db, settings = baseline_inputs(baseline, Path(movie_path), nbinned, work_dir)
        started = time.perf_counter()
        try:
            run_s2p(db=db, settings=settings)
        except ValueError as error:
            if not str(error).startswith(_NO_ROIS_FOUND):
                raise
            return Segmentation([], np.zeros(0, bool), time.perf_counter() - started)
        seconds = time.perf_counter() - started
        plane = work_dir / "suite2p" / "plane0"
        stat = np.load(plane / "stat.npy", allow_pickle=True)
        iscell = np.load(plane / "iscell.npy")
        return Segmentation([(roi["ypix"], roi["xpix"]) for roi in stat],
                            iscell[:, 0] > 0.5, seconds)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


def run_segment_settings(options: Suite2pOptions, movie_path: Path, nbinned: int,
                         tmp_dir: Path | None = None) -> Segmentation:
    """Run Suite2P exactly as the segment step does, without a database.

    Parameters
    ----------
    options : Suite2pOptions
        The segment step's Suite2P options (e.g. its schema's defaults).
    movie_path : pathlib.Path
        The HDF5 movie.
    nbinned : int
        Binned frames for detection, as the manifest gives them.
    tmp_dir : pathlib.Path, optional
        Where Suite2P's working directory is made.

    Returns
    -------
    Segmentation
    """
    with suite2p_outputs(Path(movie_path), nbinned, options, tmp_dir) as output:
        return Segmentation([(roi["ypix"], roi["xpix"]) for roi in output.stat],
                            np.asarray(output.iscell)[:, 0] > 0.5 if output.n_rois
                            else np.zeros(0, bool), output.seconds)


def score(segmentation: Segmentation, truth: np.ndarray,
          iou_threshold: float = 0.5) -> Scores:
    """Match a segmentation's ROIs to ground-truth cells one to one.

    Parameters
    ----------
    segmentation : Segmentation
    truth : numpy.ndarray
        (ncells, height, width) ground-truth footprints.
    iou_threshold : float
        Smallest IoU of a matched pair.

    Returns
    -------
    Scores
    """
    cells = [mask for mask, is_cell in zip(segmentation.masks, segmentation.is_cell)
             if is_cell]
    return Scores(all_rois=match_rois(segmentation.masks, truth, iou_threshold),
                  cells=match_rois(cells, truth, iou_threshold))
