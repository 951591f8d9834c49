"""Run Suite2P on one HDF5 movie in a private working directory, and always clean up.

Suite2P 1.x detects ROIs on a binned copy of the movie, extracts traces and
classifies the ROIs, leaving everything in a ``suite2p`` folder. Its
``run_s2p`` first copies the whole movie into an int16 binary file (2 bytes per
pixel per frame of scratch). slapp feeds Suite2P one of two ways, and says which
in the log and in :attr:`Suite2pOutput.frame_source`:

``hdf5_stream`` (registration off, the default)
    Suite2P's ``pipeline()`` reads the frames straight from the HDF5 movie
    through :class:`slapp.segmentation.h5_frames.H5Frames`, converted exactly as
    Suite2P's converter converts them: the same ROIs and traces as ``run_s2p``
    with the same settings, without the binary copy.
``binary``
    Plain ``run_s2p``: with registration (which rewrites the frames), or for a
    movie the stream cannot serve (see :func:`binary_path_reason`).

:func:`suite2p_outputs` gives the ``suite2p`` folder a fresh temporary directory of
its own (on ``tmp_dir``, e.g. a node's fast scratch), hands the outputs to the
caller while they are needed, and deletes the directory afterwards, also when
Suite2P or the caller fails, unless the caller asks to keep it.

Suite2P is imported only here and only when it runs: importing it loads PyTorch,
which a task that finds its entry already segmented should not pay for.
"""
import copy
import dataclasses
import functools
import importlib
import logging
import math
import shutil
import tempfile
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from slapp.contracts.movie import MOVIE_DATASET
from slapp.errors import OutOfMemoryError, SlappError, Suite2pError
from slapp.segmentation.h5_frames import H5Frames, check_finite, stream_problem
from slapp.segmentation.images import RunImages, full_frame
from slapp.segmentation.scratch import directory_bytes
from slapp.segmentation.settings import Suite2pOptions, place_options

logger = logging.getLogger(__name__)
_SUITE2P_WARNINGS = logging.getLogger("suite2p.warnings")

# Suite2P 1.1 raises a ValueError with this text when sparsery finds no ROI at
# all (suite2p/detection/detect.py). For us that is a valid result: a run
# with zero ROIs.
_NO_ROIS_FOUND = "no ROIs were found"
# Suite2P refuses fewer frames ("number of frames should be at least 50"); slapp
# refuses them before Suite2P and PyTorch are loaded.
MIN_FRAMES = 50

HDF5_STREAM = "hdf5_stream"
BINARY = "binary"
# The stages timed in Suite2pOutput.stage_seconds, in the order they run.
STAGES = ("read_and_bin", "detection", "extraction", "classification")
# Files Suite2P's run_plane reads from the movie's folder when they exist
# (frames to exclude; a z-stack to align to): the binary path honours them as
# plain run_s2p does.
SUITE2P_SIDE_FILES = ("bad_frames.npy", "zstack.npy")
# Suite2P names slapp relies on beyond its documented entry points (run_s2p,
# default_db, default_settings, io.init_dbs, pipeline): the private function that
# picks the torch device as run_s2p does, and the stage functions the stage clock
# times. tests/segmentation/test_suite2p_internals.py checks that the installed
# Suite2P has each, so an upgrade that removes one fails there, by name.
SUITE2P_INTERNALS = (
    ("suite2p.run_s2p", "_assign_torch_device"),
    ("suite2p.run_s2p", "files_to_binary"),
    ("suite2p.detection.detect", "bin_movie"),
    ("suite2p.detection", "detection_wrapper"),
    ("suite2p.extraction", "extraction_wrapper"),
    ("suite2p.classification", "classify"),
)
# Bound on ROIs per pixel for the scratch estimate: one ROI per 100 pixels is
# denser than any cortical field (a 12-pixel soma covers ~110 pixels).
ROIS_PER_PIXEL = 0.01
# Bound on Suite2P's other files (stat, detection images, settings, logs), in
# float32 images of the field of view.
OTHER_FILES_IMAGES = 32


class Suite2pRunException(Suite2pError):
    """Suite2P failed on a movie, or left outputs that cannot be read."""


@dataclass(frozen=True)
class Suite2pOutput:
    """What one Suite2P run produced.

    ``traces`` and ``neuropil_traces`` are memory-mapped ``(n_rois, nframes)``
    float32 arrays (``None`` when no ROI was found); they stay readable only
    inside :func:`suite2p_outputs`. ``frame_source`` is ``"hdf5_stream"`` or
    ``"binary"``; ``stage_seconds`` has the keys of :data:`STAGES`;
    ``scratch_bytes`` is what Suite2P wrote under the working directory;
    ``images`` are the mean image, max projection and correlation image in the
    movie's frame (None when Suite2P found no ROI, and so kept no detection images).
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
    frame_source: str
    stage_seconds: dict
    scratch_bytes: int
    kept_directory: Path | None = None
    images: RunImages | None = None

    @property
    def n_rois(self) -> int:
        """Number of ROIs Suite2P kept."""
        return len(self.stat)


def suite2p_version() -> str:
    """The installed Suite2P version, read without importing Suite2P."""
    return installed_version("suite2p")


def base_inputs(movie_path: Path, work_dir: Path) -> tuple[dict, dict]:
    """Suite2P's complete ``db`` and ``settings`` with what every slapp run of it fixes.

    Every Suite2P default is spelled out (nested dicts included), so that what is
    recorded is everything that was used, and so that Suite2P's shallow merge of
    user settings over its defaults cannot drop a nested default. On top of the
    defaults: the movie as Suite2P's input, ``work_dir`` for its files, no
    deconvolution or registration metrics, Suite2P's built-in classifier, no
    extra output files. The segment step (:func:`build_suite2p_inputs`) and the
    plain Suite2P baselines (:mod:`slapp.evaluation.plain_suite2p`) start here.

    Parameters
    ----------
    movie_path : Path
        The HDF5 movie (dataset ``data``).
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
        "h5py_key": MOVIE_DATASET,
        "save_path0": str(work_dir),
        "fast_disk": str(work_dir),
        "save_folder": "suite2p",
    })
    settings = copy.deepcopy(default_settings())
    settings["run"].update({
        # Deconvolved spikes are not stored, so computing them would only cost time.
        "do_deconvolution": False,
        # No GUI reads the outputs; the temporary folder is deleted anyway.
        "do_regmetrics": False,
    })
    # The classifier shipped inside the Suite2P package: the same for every user and
    # node, never a per-user file from ~/.suite2p, never a download (the option
    # classifier_path names another file).
    settings["classification"]["use_builtin_classifier"] = True
    settings["io"].update({"save_mat": False, "save_NWB": False, "delete_bin": False,
                           "move_bin": False})
    return db, settings


def build_suite2p_inputs(movie_path: Path, nbinned: int, options: Suite2pOptions,
                         work_dir: Path) -> tuple[dict, dict]:
    """Make the complete ``db`` and ``settings`` dicts for ``suite2p.run_s2p``.

    :func:`base_inputs`, sparsery detection on the manifest's binned frames, and
    every option where it belongs (:func:`~slapp.segmentation.settings.place_options`).

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
    db, settings = base_inputs(movie_path, work_dir)
    settings["detection"].update({"algorithm": "sparsery", "nbins": int(nbinned)})
    place_options(settings, db, dataclasses.asdict(options))
    return db, settings


def estimated_scratch_bytes(movie_shape: tuple[int, int, int], do_registration: bool) -> int:
    """Bound the bytes Suite2P will write under its working directory for one movie.

    Without registration the frames are streamed from the HDF5 movie and Suite2P
    writes only its outputs: the ROI traces (``F``, ``Fneu`` and ``spks``,
    float32, one row per ROI, bounded by :data:`ROIS_PER_PIXEL`) and a few images.
    With registration ``run_s2p`` also writes its int16 binary copy of the movie
    (2 bytes per pixel per frame). A movie the stream cannot serve (see
    :func:`binary_path_reason`) also takes the binary copy; such movies are rare
    and the bound does not count it.

    Parameters
    ----------
    movie_shape : tuple of int
        ``(nframes, height, width)``.
    do_registration : bool
        Whether Suite2P registers the movie (and so runs on its binary copy).

    Returns
    -------
    int
        Bytes to have free on the working directory's file system.
    """
    nframes, height, width = (int(size) for size in movie_shape)
    pixels = height * width
    max_rois = math.ceil(pixels * ROIS_PER_PIXEL)
    outputs = 3 * 4 * max_rois * nframes + OTHER_FILES_IMAGES * 4 * pixels
    return outputs + (2 * nframes * pixels if do_registration else 0)


def binary_path_reason(movie_path: Path, db: dict, settings: dict) -> str | None:
    """Say why this run must use Suite2P's binary path, or None to stream the frames.

    Parameters
    ----------
    movie_path : Path
        The HDF5 movie.
    db, settings : dict
        Suite2P's inputs, as :func:`build_suite2p_inputs` makes them.

    Returns
    -------
    str or None
        The reason, for the log.
    """
    if settings["run"]["do_registration"]:
        return "registration is on"
    for name in SUITE2P_SIDE_FILES:
        if (movie_path.parent / name).exists():
            return f"{movie_path.parent / name} exists, which Suite2P reads"
    problem = stream_problem(movie_path, db["batch_size"])
    return f"the movie cannot be streamed: {problem}" if problem else None


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


def _read_outputs(plane: Path, settings: dict, run: dict,
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
    mean_image = np.asarray(db["meanImg"], dtype=np.float32)
    video_shape = (int(db["Ly"]), int(db["Lx"]))
    return Suite2pOutput(
        stat=stat, traces=traces, neuropil_traces=neuropil_traces, iscell=iscell,
        mean_image=mean_image, nframes=int(db["nframes"]), video_shape=video_shape,
        settings=settings, suite2p_version=suite2p_version(), kept_directory=kept_directory,
        images=_read_images(plane, mean_image, video_shape), **run)


def _read_images(plane: Path, mean_image: np.ndarray,
                 video_shape: tuple[int, int]) -> RunImages | None:
    """The run's three images in the full frame, from the plane's detection outputs
    (``max_proj`` and ``Vcorr`` of the crop ``reg_outputs.npy`` names); None without
    detection outputs (no ROI found)."""
    detect_path, reg_path = plane / "detect_outputs.npy", plane / "reg_outputs.npy"
    if not detect_path.exists():
        return None
    try:
        detected = np.load(detect_path, allow_pickle=True).item()
        crop = np.load(reg_path, allow_pickle=True).item() if reg_path.exists() else {}
        yrange = crop.get("yrange", (0, video_shape[0]))
        xrange = crop.get("xrange", (0, video_shape[1]))
        return RunImages(
            mean_image=mean_image,
            max_projection=full_frame(detected["max_proj"], yrange, xrange, video_shape),
            correlation_image=full_frame(detected["Vcorr"], yrange, xrange, video_shape))
    except (OSError, ValueError, KeyError) as error:
        raise Suite2pRunException(
            f"cannot read Suite2P's detection images in {plane}: {error}") from error


@contextmanager
def suite2p_outputs(movie_path: Path, nbinned: int, options: Suite2pOptions,
                    tmp_dir: Path | None = None, keep_results: bool = False,
                    read_ahead: bool = True) -> Iterator[Suite2pOutput]:
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
        Where the working directory (Suite2P's save folder, and its binary file
        on the binary path) is made; the system's temporary directory
        (``$TMPDIR``) when None.
    keep_results : bool
        Keep the working directory and log where it is, instead of deleting it.
    read_ahead : bool
        When streaming, read the next block of frames while Suite2P computes on
        this one; the benchmark turns it off to measure what it buys.

    Yields
    ------
    Suite2pOutput
        The run's ROIs, traces, classes, mean image, settings, duration, frame
        source, stage timings and scratch bytes. ``settings`` holds
        ``{"db": ..., "settings": ...}`` exactly as plain ``run_s2p`` would be
        given them (on both paths), as plain JSON; ``kept_directory`` is set with
        ``keep_results``.

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
        reason = binary_path_reason(movie_path, db, settings)
        frame_source = BINARY if reason else HDF5_STREAM
        logger.info("running Suite2P %s on %s in %s; frame source %s (%s)", suite2p_version(),
                    movie_path, work_dir, frame_source,
                    reason or "frames read from the HDF5 movie, no binary copy")
        started = time.perf_counter()
        try:
            with _StageClock() as clock:
                if frame_source == HDF5_STREAM:
                    _call_suite2p(functools.partial(_run_streaming, read_ahead=read_ahead),
                                  movie_path, db, settings)
                else:
                    _call_suite2p(_run_binary, movie_path, db, settings)
            run = {"seconds": time.perf_counter() - started, "frame_source": frame_source,
                   "stage_seconds": clock.stage_seconds(),
                   "scratch_bytes": directory_bytes(work_dir)}
            output = _read_outputs(_plane_folder(work_dir), recorded, run,
                                   work_dir if keep_results else None)
        except Suite2pRunException as error:
            if keep_results:
                raise Suite2pRunException(f"{error} (Suite2P's files kept in {work_dir})"
                                          ) from error
            raise
        logger.info("Suite2P found %d ROIs in %.1f s (%s); wrote %d bytes to scratch",
                    output.n_rois, output.seconds,
                    ", ".join(f"{stage} {seconds:.1f} s"
                              for stage, seconds in output.stage_seconds.items()),
                    output.scratch_bytes)
        yield output
    finally:
        if keep_results:
            logger.warning("kept Suite2P's files in %s", work_dir)
        else:
            shutil.rmtree(work_dir, ignore_errors=True)


class _StageClock:
    """Time Suite2P's stages by wrapping the functions that run them, while active.

    ``pipeline()`` calls ``detection.detection_wrapper`` (which bins the movie
    with ``detect.bin_movie`` and then detects), ``extraction.extraction_wrapper``
    and ``classification.classify`` through their modules, and ``run_s2p`` converts
    an HDF5 movie with ``files_to_binary["h5"]``; each is wrapped so that its
    seconds add up, and restored on leaving.
    """

    def __init__(self):
        self.seconds = {"convert": 0.0, "bin": 0.0, "detect_and_bin": 0.0,
                        "extraction": 0.0, "classification": 0.0}
        self._restore = []

    def __enter__(self) -> "_StageClock":
        from suite2p import classification, detection, extraction
        from suite2p.detection import detect
        run_s2p = importlib.import_module("suite2p.run_s2p")  # the module, not the function

        self._wrap(detect, "bin_movie", "bin")
        self._wrap(detection, "detection_wrapper", "detect_and_bin")
        self._wrap(extraction, "extraction_wrapper", "extraction")
        self._wrap(classification, "classify", "classification")
        self._wrap(run_s2p.files_to_binary, "h5", "convert")
        return self

    def __exit__(self, *exc) -> None:
        for restore in reversed(self._restore):
            restore()

    def _wrap(self, owner, name: str, stage: str) -> None:
        is_dict = isinstance(owner, dict)
        original = owner[name] if is_dict else getattr(owner, name)

        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[stage] += time.perf_counter() - started

        if is_dict:
            owner[name] = timed
            self._restore.append(lambda: owner.__setitem__(name, original))
        else:
            setattr(owner, name, timed)
            self._restore.append(lambda: setattr(owner, name, original))

    def stage_seconds(self) -> dict:
        """Seconds per stage of :data:`STAGES` (reading and binning includes the
        binary copy on the binary path; on the stream it includes the reads)."""
        seconds = self.seconds
        return {"read_and_bin": seconds["convert"] + seconds["bin"],
                "detection": max(0.0, seconds["detect_and_bin"] - seconds["bin"]),
                "extraction": seconds["extraction"],
                "classification": seconds["classification"]}


def _call_suite2p(run, movie_path: Path, db: dict, settings: dict) -> None:
    """Call one of the Suite2P runners; no ROI at all is a result, any other failure is raised.

    Python warnings raised inside Suite2P and PyTorch are logged through the
    ``suite2p`` logger, so that ``--log_level`` governs them like Suite2P's own
    messages and stderr keeps to errors.
    """
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")
            try:
                run(movie_path, db, settings)
            finally:
                for warning in caught:
                    _SUITE2P_WARNINGS.warning("%s: %s", warning.category.__name__,
                                              warning.message)
    except SlappError:  # the movie refused while Suite2P read it: not Suite2P's failure
        raise
    except ValueError as error:
        if str(error).startswith(_NO_ROIS_FOUND):
            logger.info("Suite2P found no ROI in %s", movie_path)
            return
        raise Suite2pRunException(f"Suite2P failed on {movie_path}: {error}") from error
    except MemoryError as error:
        raise OutOfMemoryError(f"Suite2P ran out of memory on {movie_path}") from error
    except Exception as error:
        raise Suite2pRunException(
            f"Suite2P failed on {movie_path}: {type(error).__name__}: {error}") from error


def _run_binary(movie_path: Path, db: dict, settings: dict) -> None:
    """Plain ``suite2p.run_s2p``: binary copy of the movie, then the pipeline on it.

    Suite2P's converter reads the frames itself, so a floating-point movie is
    read once before, to refuse NaN or infinity (:func:`check_finite`).
    """
    from suite2p import run_s2p

    check_finite(movie_path, db["batch_size"])
    run_s2p(db=db, settings=settings)


def suite2p_internal(module: str, name: str) -> Any:
    """One of :data:`SUITE2P_INTERNALS`, from the installed Suite2P.

    Raises
    ------
    ValueError
        For a name not in that list (a bug: list it, so that it is tested).
    """
    if (module, name) not in SUITE2P_INTERNALS:
        raise ValueError(f"{module}.{name} is not in SUITE2P_INTERNALS")
    return getattr(importlib.import_module(module), name)


def _run_streaming(movie_path: Path, db: dict, settings: dict, read_ahead: bool = True) -> None:
    """Suite2P's pipeline on frames read from the HDF5 movie, as ``run_s2p`` would run it.

    Does what ``run_s2p`` and its ``run_plane`` do for one plane of one HDF5 file
    without registration (merge the defaults, make the plane folder, pick the
    device, check the frame count), except the binary copy: ``pipeline()`` gets
    an :class:`H5Frames` instead of Suite2P's ``BinaryFile``. The plane's
    ``db.npy`` gets what Suite2P's converter would have put there (frame count,
    size, mean image), with no ``reg_file`` since there is none.
    """
    from suite2p import default_db, default_settings, io, pipeline

    settings = {**default_settings(), **copy.deepcopy(settings)}
    db = {**default_db(), **copy.deepcopy(db)}
    # what io.get_file_list makes of our one-file list (it would also log "converting to binary")
    db["file_list"], db["first_files"] = [str(movie_path)], np.array([True])
    plane = io.init_dbs(db)[0]
    plane.pop("reg_file")
    settings["date_proc"] = datetime.now().astimezone()
    with H5Frames(movie_path, batch_frames=db["batch_size"], read_ahead=read_ahead) as frames:
        nframes, height, width = frames.shape
        if nframes < 10:  # run_plane's own check and message
            raise ValueError("number of frames should be at least 50")
        logger.info("streaming %d frames of %dx%d from %s in blocks of %d frames "
                    "(h5py chunk cache %d bytes)", nframes, height, width, movie_path,
                    frames.block_frames, frames.cache_settings["rdcc_nbytes"])
        no_rois = None
        try:
            pipeline(plane["save_path"], frames, run_registration=False, settings=settings,
                     badframes=np.zeros(nframes, bool),
                     device=suite2p_internal("suite2p.run_s2p", "_assign_torch_device")(
                         settings["torch_device"]))
        except ValueError as error:  # a valid result, told as run_s2p tells it, below
            if not str(error).startswith(_NO_ROIS_FOUND):
                raise
            no_rois = error
        plane.update({"Ly": height, "Lx": width, "nframes": nframes,
                      "nframes_per_folder": np.array([nframes], np.int32),
                      "yrange": np.array([0, height]), "xrange": np.array([0, width]),
                      "meanImg": frames.mean_image()})
        np.save(plane["db_path"], plane)
        np.save(plane["settings_path"], settings)
        logger.info("read %d blocks in %.1f s; Suite2P waited %.1f s for them",
                    frames.blocks_read, frames.read_seconds, frames.wait_seconds)
    if no_rois is not None:
        raise no_rois
