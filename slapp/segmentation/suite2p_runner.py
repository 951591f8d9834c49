"""Run Suite2P on one HDF5 movie in a private working directory, and always clean up.

Suite2P 1.x converts the movie to a binary file, detects ROIs on a binned copy,
extracts traces and classifies the ROIs, leaving everything in a ``suite2p``
folder. :func:`suite2p_outputs` gives that folder a fresh temporary directory of
its own (on ``tmp_dir``, e.g. a node's fast scratch), hands the outputs to the
caller while they are needed, and deletes the directory afterwards, also when
Suite2P or the caller fails, unless the caller asks to keep it.

Suite2P is imported only here and only when it runs: importing it loads PyTorch,
which a task that finds its entry already segmented should not pay for.
"""
import copy
import logging
import math
import shutil
import tempfile
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from slapp.errors import SlappError
from slapp.segmentation.settings import Suite2pOptions

logger = logging.getLogger(__name__)
_SUITE2P_WARNINGS = logging.getLogger("suite2p.warnings")

# Suite2P 1.1 raises a ValueError with this text when sparsery finds no ROI at
# all (suite2p/detection/detect.py). For us that is a valid result: a run
# with zero ROIs.
_NO_ROIS_FOUND = "no ROIs were found"


class Suite2pRunException(SlappError):
    """Suite2P failed on a movie, or left outputs that cannot be read."""


@dataclass(frozen=True)
class Suite2pOutput:
    """What one Suite2P run produced.

    ``traces`` and ``neuropil_traces`` are memory-mapped ``(n_rois, nframes)``
    float32 arrays (``None`` when no ROI was found); they stay readable only
    inside :func:`suite2p_outputs`.
    """

    stat: list[dict]
    traces: np.ndarray | None
    neuropil_traces: np.ndarray | None
    iscell: np.ndarray
    mean_image: np.ndarray
    nframes: int
    video_shape: tuple[int, int]
    settings: dict
    suite2p_version: str
    seconds: float
    kept_directory: Path | None = None

    @property
    def n_rois(self) -> int:
        """Number of ROIs Suite2P kept."""
        return len(self.stat)


def suite2p_version() -> str:
    """The installed Suite2P version, read without importing Suite2P."""
    return installed_version("suite2p")


def build_suite2p_inputs(movie_path: Path, nbinned: int, options: Suite2pOptions,
                         work_dir: Path) -> tuple[dict, dict]:
    """Make the complete ``db`` and ``settings`` dicts for ``suite2p.run_s2p``.

    Every Suite2P default is spelled out (nested dicts included), so that what is
    recorded is everything that was used, and so that Suite2P's shallow merge of
    user settings over its defaults cannot drop a nested default.

    Parameters
    ----------
    movie_path : Path
        The HDF5 movie (dataset ``data``).
    nbinned : int
        Binned frames for detection (Suite2P's ``detection.nbins``).
    options : Suite2pOptions
        The settings slapp exposes.
    work_dir : Path
        Directory for Suite2P's save folder and binary file.

    Returns
    -------
    db, settings : dict
        Suite2P's two input dicts.
    """
    from suite2p import default_db, default_settings

    db = copy.deepcopy(default_db())
    db.update({
        "data_path": [str(movie_path.parent)],
        "file_list": [movie_path.name],
        "input_format": "h5",
        "h5py_key": "data",
        "save_path0": str(work_dir),
        "fast_disk": str(work_dir),
        "save_folder": "suite2p",
    })
    settings = copy.deepcopy(default_settings())
    settings.update({"fs": options.fs, "tau": options.tau,
                     "diameter": [options.diameter, options.diameter],
                     "torch_device": options.torch_device})
    settings["run"].update({
        "do_registration": int(options.do_registration),
        # Deconvolved spikes are not stored, so computing them would only cost time.
        "do_deconvolution": False,
        # No GUI reads the outputs; the temporary folder is deleted anyway.
        "do_regmetrics": False,
    })
    settings["detection"].update({
        "algorithm": "sparsery",
        "nbins": int(nbinned),
        "threshold_scaling": options.threshold_scaling,
        "max_overlap": options.max_overlap,
    })
    settings["detection"]["sparsery_settings"].update({
        "spatial_scale": options.spatial_scale,
        "highpass_neuropil": options.highpass_neuropil,
    })
    settings["extraction"]["neuropil_coefficient"] = options.neuropil_coefficient
    # The classifier shipped inside the Suite2P package: the same for every user and
    # node, never a per-user file from ~/.suite2p, never a download.
    settings["classification"]["use_builtin_classifier"] = True
    settings["io"].update({"save_mat": False, "save_NWB": False, "delete_bin": False,
                           "move_bin": False})
    return db, settings


def jsonable(value: Any) -> Any:
    """Convert Suite2P settings into plain JSON that PostgreSQL ``jsonb`` accepts.

    Tuples and numpy arrays become lists, numpy scalars Python numbers, paths
    strings; infinities and NaN (which ``jsonb`` rejects) become strings.
    """
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [jsonable(item) for item in (value.tolist() if isinstance(value, np.ndarray)
                                            else value)]
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _plane_folder(work_dir: Path) -> Path:
    return work_dir / "suite2p" / "plane0"


def _read_outputs(plane: Path, settings: dict, seconds: float,
                  kept_directory: Path | None) -> Suite2pOutput:
    """Read a finished plane folder: ROI stats, traces (memory-mapped), classes, mean image."""
    try:
        db = np.load(plane / "db.npy", allow_pickle=True).item()
        stat_path = plane / "stat.npy"
        stat = list(np.load(stat_path, allow_pickle=True)) if stat_path.exists() else []
        if stat:
            traces = np.load(plane / "F.npy", mmap_mode="r")
            neuropil_traces = np.load(plane / "Fneu.npy", mmap_mode="r")
            iscell = np.load(plane / "iscell.npy")
        else:
            traces = neuropil_traces = None
            iscell = np.zeros((0, 2))
    except (OSError, ValueError, KeyError) as error:
        raise Suite2pRunException(f"cannot read Suite2P's outputs in {plane}: {error}") from error
    if traces is not None and not (len(stat) == len(traces) == len(neuropil_traces)
                                   == len(iscell)):
        raise Suite2pRunException(
            f"Suite2P's outputs in {plane} disagree: {len(stat)} ROIs, {len(traces)} traces, "
            f"{len(neuropil_traces)} neuropil traces, {len(iscell)} classifications")
    return Suite2pOutput(
        stat=stat, traces=traces, neuropil_traces=neuropil_traces, iscell=iscell,
        mean_image=np.asarray(db["meanImg"], dtype=np.float32),
        nframes=int(db["nframes"]), video_shape=(int(db["Ly"]), int(db["Lx"])),
        settings=settings, suite2p_version=suite2p_version(), seconds=seconds,
        kept_directory=kept_directory)


@contextmanager
def suite2p_outputs(movie_path: Path, nbinned: int, options: Suite2pOptions,
                    tmp_dir: Path | None = None,
                    keep_results: bool = False) -> Iterator[Suite2pOutput]:
    """Run Suite2P on one movie and yield its outputs; delete its files on leaving.

    Parameters
    ----------
    movie_path : Path
        The motion-corrected HDF5 movie (dataset ``data``, frames x height x width).
    nbinned : int
        Binned frames for detection.
    options : Suite2pOptions
        The settings slapp exposes.
    tmp_dir : Path, optional
        Where the working directory (binary file and save folder) is made; the
        system's temporary directory (``$TMPDIR``) when None.
    keep_results : bool
        Keep the working directory and log where it is, instead of deleting it.

    Yields
    ------
    Suite2pOutput
        The run's ROIs, traces, classes, mean image, settings and duration.
        ``settings`` holds ``{"db": ..., "settings": ...}`` exactly as given to
        Suite2P, as plain JSON; ``kept_directory`` is set with ``keep_results``.

    Raises
    ------
    Suite2pRunException
        If Suite2P fails; the working directory is deleted all the same (or,
        with ``keep_results``, named in the message).
    """
    work_dir = Path(tempfile.mkdtemp(prefix="slapp_suite2p_", dir=tmp_dir))
    try:
        db, settings = build_suite2p_inputs(movie_path, nbinned, options, work_dir)
        recorded = jsonable({"db": db, "settings": settings})
        logger.info("running Suite2P %s on %s in %s", suite2p_version(), movie_path, work_dir)
        started = time.perf_counter()
        try:
            _run_s2p(db, settings, movie_path)
            output = _read_outputs(_plane_folder(work_dir), recorded,
                                   time.perf_counter() - started,
                                   work_dir if keep_results else None)
        except Suite2pRunException as error:
            if keep_results:
                raise Suite2pRunException(f"{error} (Suite2P's files kept in {work_dir})"
                                          ) from error
            raise
        logger.info("Suite2P found %d ROIs in %.1f s", output.n_rois, output.seconds)
        yield output
    finally:
        if keep_results:
            logger.warning("kept Suite2P's files in %s", work_dir)
        else:
            shutil.rmtree(work_dir, ignore_errors=True)


def _run_s2p(db: dict, settings: dict, movie_path: Path) -> None:
    """Call ``suite2p.run_s2p``; no ROI at all is a result, any other failure is raised.

    Python warnings raised inside Suite2P and PyTorch are logged through the
    ``suite2p`` logger, so that ``--log_level`` governs them like Suite2P's own
    messages and stderr keeps to errors.
    """
    from suite2p import run_s2p

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")
            try:
                run_s2p(db=db, settings=settings)
            finally:
                for warning in caught:
                    _SUITE2P_WARNINGS.warning("%s: %s", warning.category.__name__,
                                              warning.message)
    except ValueError as error:
        if str(error).startswith(_NO_ROIS_FOUND):
            logger.info("Suite2P found no ROI in %s", movie_path)
            return
        raise Suite2pRunException(f"Suite2P failed on {movie_path}: {error}") from error
    except Exception as error:
        raise Suite2pRunException(
            f"Suite2P failed on {movie_path}: {type(error).__name__}: {error}") from error
