"""Synthetic two-photon calcium-imaging movies with known ground truth.

The movie mimics an Allen Brain Observatory style recording that has already
been motion corrected: GCaMP-like somata of varied size, shape and brightness
(neighbours may overlap), a fluctuating neuropil background, slow bleaching,
photon shot noise and a little detector read noise. Every active cell's
spatial footprint is returned (and written) as ground truth so that a
segmentation can be scored with :mod:`slapp.evaluation.matching`.

Two presets (:func:`preset_spec`):

``easy``
    The :class:`MovieSpec` defaults: bright, busy, well separated somata on a
    smooth background. Suite2P finds nearly all of them; the demo's quick run.
``realistic``
    Dense, overlapping somata of a wider size range, a quarter of them dim, a
    third silent, sparse firing; out-of-focus somata (large blurred blobs) and
    dendrite-like streaks that have calcium activity of their own but are not
    cells; stronger bleaching and fewer photons. What a labeler sees.

Generation is deterministic given ``MovieSpec.seed``. The cell layout depends
only on the seed and the geometry fields, not on ``nframes``, so a longer movie
of the same seed shows the same cells. Footprints are kept sparse and frames
are rendered in batches on a few threads and written as they come: memory
holds a few batches of frames and the sources' traces (sources x frames,
~50 MB for a 512 x 512 x 8,000 realistic movie), never the movie.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np
import scipy.sparse
from scipy.ndimage import gaussian_filter
from scipy.signal import fftconvolve, lfilter

# the file formats are contracts of their own; they stay importable from here as well
from slapp.contracts.ground_truth import (MASKS_DATASET, create_masks_dataset,  # noqa: F401
                                          ground_truth_path, read_ground_truth)
from slapp.contracts.movie import MOVIE_DATASET

PRESETS = ("easy", "realistic")

# Pixels rendered at once (16 frames of 512 x 512): each float32 working array
# stays ~16 MB, and numpy calls stay large enough to run at full speed.
_RENDER_BATCH_PIXELS = 1 << 22
# Threads rendering batches: numpy's random fills, matrix products and element-wise
# arithmetic release the GIL, so two threads use two cores; the writer is the caller.
_RENDER_THREADS = 2
# Batches rendered ahead of the writer: bounds memory to a few batches.
_BATCHES_IN_FLIGHT = 2 * _RENDER_THREADS
# Target size of one HDF5 chunk of the movie: h5py recommends 10 KiB - 1 MiB.
_TARGET_CHUNK_BYTES = 1 << 19
# Independent random streams drawn from MovieSpec.seed, one per part of the scene.
# New streams go at the end: the earlier ones then stay as they were.
_RANDOM_STREAMS = ("layout", "activity", "neuropil", "noise", "cell_kinds", "distractors")
# Attempts per cell when placing centres at random before declaring the FOV full.
_PLACEMENT_ATTEMPTS_PER_CELL = 200
# Footprint weights below this are dropped from the blurred sources (blobs,
# dendrites): under 2 % of the peak, far below the shot noise, and it keeps them sparse.
_MIN_FOOTPRINT_WEIGHT = 0.02
# Allen two-photon fields: 512 px over ~400 um. Used to turn densities per mm^2 into counts.
_UM_PER_PX = 0.78
# Step along a dendrite's path when drawing it, in pixels: fine enough for a
# continuous line after the blur.
_DENDRITE_STEP_PX = 0.5
# Standard deviation of a dendrite's change of direction per pixel of length (radians):
# gently curved processes, as dendrites crossing an imaging plane look.
_DENDRITE_BENDING = 0.03


@dataclass(frozen=True)
class MovieSpec:
    """Parameters of a synthetic movie; every default is chosen to look like Allen data.

    Brightness values are expected photons per pixel per frame, before noise.
    Ranges are ``(low, high)`` and each cell draws its own value uniformly
    (log-uniformly for event rates) from them.
    """

    # 4500 frames (145 s at 31 Hz) give 39 detection bins under the original jobs'
    # nframes // 115 rule; over 20 seeds Suite2P then finds 87-100 % of the cells.
    # 3500 frames still find >= 80 %, 3000 frames (26 bins) as few as 70 %.
    nframes: int = 4500
    # 128 x 128 px is a 100 x 100 um crop of an Allen 512 x 512 px FOV (0.78 um/px):
    # big enough for a few dozen cells, small enough to segment in seconds.
    height: int = 128
    width: int = 128
    # 30 somata cover ~20 % of the crop, a dense but realistic layer 2/3 field.
    ncells: int = 30
    # Allen two-photon movies are acquired at 31 Hz.
    fs: float = 31.0
    # Seeds every random draw: the same spec always gives the same movie.
    seed: int = 0
    # Soma diameters of 8-12 um at 0.78 um/px; centred on Suite2P's default 12 px.
    cell_diameter_px: tuple[float, float] = (10.0, 15.0)
    # Somata are round to mildly elliptical (ratio of the short to the long axis).
    cell_axis_ratio: tuple[float, float] = (0.7, 1.0)
    # Relative amplitude of the 2nd-4th harmonics of the outline: a bumpy, not a perfect, ellipse.
    outline_irregularity: float = 0.06
    # Fraction of the radius over which the footprint fades to zero (soft soma edge).
    edge_fraction: float = 0.3
    # Minimum centre distance as a fraction of the two cells' summed radii;
    # below 1 neighbours can overlap by up to 15 % of their radii, as in dense tissue.
    min_center_separation: float = 0.85
    # A third of the cells sit right next to another one, as somata often do in layer 2/3.
    neighbor_fraction: float = 0.3
    # Resting soma brightness: GCaMP6 somata are about as bright as the neuropil, some dimmer.
    cell_baseline_photons: tuple[float, float] = (1.5, 4.0)
    # Mean neuropil brightness; with the somata this gives Allen-like ~5 photons/px/frame.
    neuropil_photons: float = 3.0
    # Relative standard deviation of the neuropil over time and space (population activity).
    neuropil_fluctuation: float = 0.1
    # Spatial correlation length of the neuropil, ~40 um: several cell diameters.
    neuropil_length_px: float = 50.0
    # Correlation time of the neuropil, slower than a single transient (population activity).
    neuropil_time_s: float = 2.0
    # Active visual-cortex somata show calcium events at ~0.1-0.5 Hz. Silent cells are
    # left out: activity-based segmentation cannot see them, they would only cap recall.
    event_rate_hz: tuple[float, float] = (0.1, 0.5)
    # Mean dF/F of one event: events are small bursts (GCaMP6f gives ~0.1-0.2 per spike).
    event_amplitude_dff: float = 1.0
    # GCaMP6f: rise ~50 ms, decay 0.5-1 s.
    rise_time_s: float = 0.05
    decay_time_s: tuple[float, float] = (0.5, 1.0)
    # Fraction of the fluorescence lost to bleaching by the last frame.
    bleach_fraction: float = 0.1
    # Detector gain and offset put values in the few-hundreds range of Allen uint16 movies.
    adu_per_photon: float = 20.0
    dark_offset_adu: float = 100.0
    # Read noise of half a photon: small next to the shot noise, as with GaAsP PMTs.
    read_noise_adu: float = 10.0

    # --- Harder scenes (the realistic preset). The defaults switch every one of
    # these off, which is the easy preset. ---
    # Fraction of somata with a weak indicator expression: their resting brightness
    # and hence their transients are ``dim_brightness`` times a normal cell's.
    dim_fraction: float = 0.0
    dim_brightness: float = 0.5
    # Fraction of somata that never fire during the movie (many cortical neurons are
    # silent in a given session). They are drawn, resting brightness only.
    silent_fraction: float = 0.0
    # A soma counts as ground truth when it has at least this many calcium events in
    # the movie: activity-based segmentation cannot see one that never fires.
    # 0 keeps every soma (the easy preset: all fire many times at its rates).
    min_truth_events: int = 0
    # Out-of-focus somata above and below the plane: large blurred blobs with their
    # own activity. Not cells of this plane, so never ground truth.
    out_of_focus_cells: int = 0
    out_of_focus_diameter_px: tuple[float, float] = (20.0, 40.0)
    # Peak resting photons of a blob: dimmer than an in-focus soma.
    out_of_focus_photons: tuple[float, float] = (0.3, 1.0)
    # Dendrite-like streaks: thin curved processes with their own activity; never
    # ground truth.
    dendrites: int = 0
    dendrite_length_px: tuple[float, float] = (40.0, 160.0)
    # Full width at half maximum of a streak: ~1.5 um dendrites under a ~1 um PSF.
    dendrite_width_px: float = 2.5
    dendrite_photons: tuple[float, float] = (0.5, 1.5)

    def __post_init__(self) -> None:
        problems = _spec_problems(self)
        if problems:
            raise ValueError("invalid MovieSpec: " + "; ".join(problems))


# The realistic preset, as changes to the MovieSpec defaults; densities are per mm^2
# of tissue at 0.78 um/px and become counts for the movie's frame size.
_REALISTIC = dict(
    # Somata of 6-12.5 um: small interneurons to large pyramids, a wider range than easy.
    cell_diameter_px=(8.0, 16.0),
    cell_axis_ratio=(0.6, 1.0),
    # Centres as close as 0.6x the summed radii: pairs overlap by up to 40 % of a radius,
    # and half the cells are placed against a neighbour, as in dense layer 2/3.
    min_center_separation=0.6,
    neighbor_fraction=0.5,
    # Fewer photons than easy: resting somata 1-3 photons/px/frame on a 2-photon
    # neuropil that fluctuates more and on a finer scale: the count rate of a 31 Hz
    # resonant scan of a GCaMP6f line, where somata barely stand out of the neuropil.
    cell_baseline_photons=(1.0, 3.0),
    neuropil_photons=2.0,
    neuropil_fluctuation=0.15,
    neuropil_length_px=30.0,
    # A quarter of the somata express the indicator weakly: half the brightness.
    dim_fraction=0.25,
    dim_brightness=0.5,
    # A third of the somata stay silent: drawn, never ground truth.
    silent_fraction=0.3,
    min_truth_events=1,
    # Sparse firing: one event every 3-30 s (Allen's visual-cortex somata fire mostly
    # below 0.3 Hz); events are bursts of a few spikes, mean dF/F 1.0 as in easy.
    event_rate_hz=(0.03, 0.3),
    decay_time_s=(0.4, 0.9),
    # Distractors as bright as the somata: out-of-focus blobs 0.5-1.5 photons at their
    # peak, dendrites 1-3 photons along their ridge.
    out_of_focus_photons=(0.5, 1.5),
    dendrite_photons=(1.0, 3.0),
    # A quarter of the light lost by the end: long sessions bleach noticeably.
    bleach_fraction=0.25,
)
# Somata, out-of-focus blobs and dendrites per mm^2 in the realistic preset. ~3000
# somata/mm^2 cut by the plane is layer 2/3's density (~10^5 neurons/mm^3 over a
# ~25 um slab, soma plus optical section); the out-of-focus layers above and below
# add a blob for every 2-3 somata, and processes crossing the plane a few hundred streaks.
_REALISTIC_PER_MM2 = {"ncells": 3000.0, "out_of_focus_cells": 1200.0, "dendrites": 600.0}
# The easy preset keeps the demo's 30 cells per 128 x 128 px at any frame size.
_EASY_CELLS_PER_PX = 30 / 128 ** 2


def preset_spec(preset: str, nframes: int, height: int, width: int, seed: int) -> MovieSpec:
    """Return the spec of a preset movie of the given size and seed.

    Parameters
    ----------
    preset : {"easy", "realistic"}
        ``easy``: the :class:`MovieSpec` defaults (30 cells per 128 x 128 px);
        ``realistic``: dense, overlapping, partly dim and silent somata, sparse
        firing, out-of-focus blobs and dendrites with their own activity, more
        bleaching, fewer photons (see the module docstring).
    nframes, height, width : int
        Movie size; cell counts scale with the frame's area.
    seed : int
        Seeds every random draw.

    Returns
    -------
    MovieSpec

    Raises
    ------
    ValueError
        If ``preset`` is not one of :data:`PRESETS`.
    """
    size = dict(nframes=nframes, height=height, width=width, seed=seed)
    if preset == "easy":
        return MovieSpec(ncells=round(_EASY_CELLS_PER_PX * height * width), **size)
    if preset == "realistic":
        area_mm2 = height * width * (_UM_PER_PX / 1000) ** 2
        counts = {name: round(per_mm2 * area_mm2)
                  for name, per_mm2 in _REALISTIC_PER_MM2.items()}
        return MovieSpec(**_REALISTIC, **counts, **size)
    raise ValueError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")


def _spec_problems(spec: MovieSpec) -> list[str]:
    """Return a human-readable description of every invalid field of ``spec``."""
    problems = []
    for name in ("nframes", "height", "width"):
        if getattr(spec, name) < 1:
            problems.append(f"{name} must be >= 1, got {getattr(spec, name)}")
    for name in ("ncells", "min_truth_events", "out_of_focus_cells", "dendrites"):
        if getattr(spec, name) < 0:
            problems.append(f"{name} must be >= 0, got {getattr(spec, name)}")
    for name in ("fs", "rise_time_s", "neuropil_length_px", "neuropil_time_s", "adu_per_photon",
                 "dim_brightness", "dendrite_width_px"):
        if not getattr(spec, name) > 0:
            problems.append(f"{name} must be > 0, got {getattr(spec, name)}")
    for name in ("cell_diameter_px", "cell_axis_ratio", "cell_baseline_photons",
                 "event_rate_hz", "decay_time_s", "out_of_focus_diameter_px",
                 "out_of_focus_photons", "dendrite_length_px", "dendrite_photons"):
        low, high = getattr(spec, name)
        if not 0 < low <= high:
            problems.append(f"{name} must satisfy 0 < low <= high, got {(low, high)}")
    if spec.cell_axis_ratio[1] > 1:
        problems.append(f"cell_axis_ratio must be <= 1, got {spec.cell_axis_ratio}")
    for name in ("neighbor_fraction", "dim_fraction", "silent_fraction"):
        if not 0 <= getattr(spec, name) <= 1:
            problems.append(f"{name} must be in [0, 1], got {getattr(spec, name)}")
    for name in ("outline_irregularity", "neuropil_fluctuation", "bleach_fraction"):
        if not 0 <= getattr(spec, name) < 1:
            problems.append(f"{name} must be in [0, 1), got {getattr(spec, name)}")
    if not 0 < spec.edge_fraction <= 1:
        problems.append(f"edge_fraction must be in (0, 1], got {spec.edge_fraction}")
    for name in ("min_center_separation", "neuropil_photons", "event_amplitude_dff",
                 "dark_offset_adu", "read_noise_adu"):
        if getattr(spec, name) < 0:
            problems.append(f"{name} must be >= 0, got {getattr(spec, name)}")
    return problems


@dataclass(frozen=True)
class Scene:
    """Everything about a movie except the per-frame noise.

    Sources are the somata (rows ``0 .. ncells - 1``), then the out-of-focus
    blobs, then the dendrites.

    Attributes
    ----------
    footprints : scipy.sparse.csr_matrix
        float32 (nsources, height * width): each source's spatial weights in [0, 1].
    baseline : numpy.ndarray
        (nsources,) resting photons per frame at footprint weight 1.
    events : numpy.ndarray
        float32 (nsources, nframes): summed dF/F amplitude of the events starting
        in each frame (0 where none).
    event_counts : numpy.ndarray
        int (nsources,): calcium events of each source in the movie.
    dff : numpy.ndarray
        float32 (nsources, nframes): dF/F traces, the events convolved with the
        indicator's kernel.
    is_dim, is_silent : numpy.ndarray
        bool (ncells,): somata drawn dim, and drawn silent.
    truth_cells : numpy.ndarray
        Indices of the somata that are ground truth (at least
        ``min_truth_events`` events), ascending.
    neuropil_mean : numpy.ndarray
        (height, width) mean neuropil photons.
    neuropil_maps : numpy.ndarray
        (ncomponents, height, width) fluctuation patterns.
    neuropil_traces : numpy.ndarray
        (nframes, ncomponents) their time courses.
    bleaching : numpy.ndarray
        (nframes,) multiplicative brightness factor.
    """

    footprints: scipy.sparse.csr_matrix
    baseline: np.ndarray
    events: np.ndarray
    event_counts: np.ndarray
    dff: np.ndarray
    is_dim: np.ndarray
    is_silent: np.ndarray
    truth_cells: np.ndarray
    neuropil_mean: np.ndarray
    neuropil_maps: np.ndarray
    neuropil_traces: np.ndarray
    bleaching: np.ndarray


def generate_movie(spec: MovieSpec) -> tuple[np.ndarray, np.ndarray]:
    """Generate a synthetic two-photon movie and its ground-truth cell footprints.

    Parameters
    ----------
    spec : MovieSpec
        Size, content and seed of the movie.

    Returns
    -------
    movie : numpy.ndarray
        uint16 array (nframes, height, width) of detector values.
    masks : numpy.ndarray
        float32 array (ntruth, height, width): the spatial footprint weights in
        [0, 1] of each ground-truth cell (see ``MovieSpec.min_truth_events``),
        0 outside the cell.

    Raises
    ------
    ValueError
        If the cells cannot be placed without overlapping more than
        ``spec.min_center_separation`` allows.
    """
    scene = draw_scene(spec)
    movie = np.empty((spec.nframes, spec.height, spec.width), np.uint16)
    for start, frames in _render_batches(spec, scene):
        movie[start:start + len(frames)] = frames
    return movie, truth_masks(spec, scene)


def truth_masks(spec: MovieSpec, scene: Scene) -> np.ndarray:
    """Return the ground-truth footprints of ``scene`` as a dense array.

    Parameters
    ----------
    spec : MovieSpec
        The spec the scene was drawn from.
    scene : Scene
        From :func:`draw_scene`.

    Returns
    -------
    numpy.ndarray
        float32 (ntruth, height, width), in the order of ``scene.truth_cells``.
    """
    return scene.footprints[scene.truth_cells].toarray().reshape(
        len(scene.truth_cells), spec.height, spec.width)


def write_movie(path: Path, spec: MovieSpec) -> Path:
    """Generate a movie and write it and its ground truth as HDF5, atomically.

    The movie goes to dataset ``data`` (nframes, height, width), uint16,
    chunked by a few frames so that reading a few frames is cheap; it is
    written batch by batch as it is rendered, never held whole in memory. The
    ground truth goes to :func:`ground_truth_path` as a gzip-compressed
    dataset ``masks`` (ntruth, height, width) float32 of the ground-truth
    cells (see ``MovieSpec.min_truth_events``), with the spec's fields as
    attributes. Both files are written to temporary names in the destination
    directory and renamed into place only once complete, so a failure never
    leaves a partial file behind.

    Parameters
    ----------
    path : pathlib.Path
        Destination of the movie; its directory must exist.
    spec : MovieSpec
        What to generate.

    Returns
    -------
    pathlib.Path
        Path of the ground-truth file.
    """
    path = Path(path)
    truth_path = ground_truth_path(path)
    spec_attrs = _spec_as_attrs(spec)
    with _atomic_h5(path) as movie_file, _atomic_h5(truth_path) as truth_file:
        scene = draw_scene(spec)
        frame_shape = (spec.height, spec.width)
        movie = movie_file.create_dataset(
            MOVIE_DATASET, shape=(spec.nframes, *frame_shape), dtype=np.uint16,
            chunks=(_chunk_frames(frame_shape, spec.nframes), *frame_shape))
        movie.attrs.update(spec_attrs)
        for start, frames in _render_batches(spec, scene):
            movie[start:start + len(frames)] = frames
        ntruth = len(scene.truth_cells)
        truth = create_masks_dataset(truth_file, ntruth, frame_shape)
        for row, cell in enumerate(scene.truth_cells):
            truth[row] = scene.footprints[cell].toarray().reshape(frame_shape)
        truth.attrs.update(spec_attrs)
    return truth_path


def read_movie_spec(path: Path) -> MovieSpec | None:
    """Return the spec a movie was written with by :func:`write_movie`.

    Parameters
    ----------
    path : pathlib.Path
        A movie HDF5 file.

    Returns
    -------
    MovieSpec or None
        None when the file cannot be read or records no complete spec of this
        generator (e.g. a movie written by an older version).
    """
    try:
        with h5py.File(path, "r") as f:
            attrs = dict(f[MOVIE_DATASET].attrs)
    except (OSError, KeyError):
        return None
    if set(attrs) != {field.name for field in dataclasses.fields(MovieSpec)}:
        return None
    values = {name: tuple(value.tolist()) if isinstance(value, np.ndarray) and value.ndim
              else value.item() if isinstance(value, (np.ndarray, np.generic)) else value
              for name, value in attrs.items()}
    try:
        return MovieSpec(**values)
    except (TypeError, ValueError):
        return None


@contextlib.contextmanager
def _atomic_h5(path: Path) -> Iterator[h5py.File]:
    """Yield an HDF5 file open on a temporary sibling; rename it to ``path`` on success.

    The temporary file is created by HDF5 itself, so it gets the usual
    umask-based permissions (``tempfile.mkstemp`` would make it owner-only).
    """
    tmp_path = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with h5py.File(tmp_path, "x") as f:
            yield f
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def _spec_as_attrs(spec: MovieSpec) -> dict:
    """Return the spec's fields as HDF5-storable attributes (tuples become arrays)."""
    return {name: np.asarray(value) if isinstance(value, tuple) else value
            for name, value in dataclasses.asdict(spec).items()}


def _chunk_frames(frame_shape: tuple[int, int], nframes: int) -> int:
    """Return how many uint16 frames make one HDF5 chunk of about ``_TARGET_CHUNK_BYTES``."""
    frame_bytes = frame_shape[0] * frame_shape[1] * np.dtype(np.uint16).itemsize
    return int(np.clip(_TARGET_CHUNK_BYTES // frame_bytes, 1, nframes))


def draw_scene(spec: MovieSpec) -> Scene:
    """Draw the sources, their activity, the neuropil and the bleaching curve of ``spec``.

    Parameters
    ----------
    spec : MovieSpec
        What to draw.

    Returns
    -------
    Scene

    Raises
    ------
    ValueError
        If the cells cannot be placed (see :func:`generate_movie`).
    """
    layout_rng = _stream_rng(spec.seed, "layout")
    shape = (spec.height, spec.width)
    cell_patches = _cell_patches(layout_rng, spec)
    cell_baseline = layout_rng.uniform(*spec.cell_baseline_photons, size=spec.ncells)
    kinds_rng = _stream_rng(spec.seed, "cell_kinds")
    is_dim = _exact_fraction(kinds_rng, spec.ncells, spec.dim_fraction)
    is_silent = _exact_fraction(kinds_rng, spec.ncells, spec.silent_fraction)
    cell_baseline[is_dim] *= spec.dim_brightness

    distractor_rng = _stream_rng(spec.seed, "distractors")
    blob_patches = [_blob_patch(distractor_rng, spec) for _ in range(spec.out_of_focus_cells)]
    dendrite_patches = [_dendrite_patch(distractor_rng, spec) for _ in range(spec.dendrites)]
    distractor_baseline = np.concatenate([
        distractor_rng.uniform(*spec.out_of_focus_photons, size=spec.out_of_focus_cells),
        distractor_rng.uniform(*spec.dendrite_photons, size=spec.dendrites)])

    cell_counts, cell_events, cell_decay = _calcium_activity(
        _stream_rng(spec.seed, "activity"), spec, spec.ncells)
    cell_counts[is_silent] = 0
    cell_events[is_silent] = 0
    distractor_counts, distractor_events, distractor_decay = _calcium_activity(
        distractor_rng, spec, spec.out_of_focus_cells + spec.dendrites)
    events = np.concatenate([cell_events, distractor_events])
    event_counts = np.concatenate([cell_counts, distractor_counts]).sum(axis=1)
    dff = _calcium_dff(spec, events, np.concatenate([cell_decay, distractor_decay]))
    neuropil_mean, neuropil_maps, neuropil_traces = _neuropil(
        _stream_rng(spec.seed, "neuropil"), spec)
    truth_cells = np.flatnonzero(event_counts[:spec.ncells] >= spec.min_truth_events)
    return Scene(
        footprints=_footprint_matrix(cell_patches + blob_patches + dendrite_patches, shape),
        baseline=np.concatenate([cell_baseline, distractor_baseline]).astype(np.float32),
        events=events,
        event_counts=event_counts,
        dff=dff,
        is_dim=is_dim,
        is_silent=is_silent,
        truth_cells=truth_cells,
        neuropil_mean=neuropil_mean.astype(np.float32),
        neuropil_maps=neuropil_maps,
        neuropil_traces=neuropil_traces,
        bleaching=_bleaching_curve(spec.nframes, spec.bleach_fraction).astype(np.float32),
    )


def _stream_rng(seed: int, stream: str) -> np.random.Generator:
    """Return the generator of one independent random stream of ``seed``.

    Separate streams keep e.g. the cell layout unchanged when only
    ``nframes`` changes.
    """
    return np.random.default_rng(_stream_seed(seed, stream))


def _stream_seed(seed: int, stream: str) -> np.random.SeedSequence:
    """Return the seed sequence of one random stream of ``seed``."""
    return np.random.SeedSequence(seed).spawn(len(_RANDOM_STREAMS))[
        _RANDOM_STREAMS.index(stream)]


def _exact_fraction(rng: np.random.Generator, n: int, fraction: float) -> np.ndarray:
    """Return a bool mask of ``n`` items with exactly ``round(fraction * n)`` chosen at random."""
    chosen = np.zeros(n, bool)
    chosen[rng.choice(n, size=round(fraction * n), replace=False)] = True
    return chosen


# A source's footprint inside its bounding box: (first row, first column, weights).
_Patch = tuple[int, int, np.ndarray]


def _footprint_matrix(patches: list[_Patch], shape: tuple[int, int]) -> scipy.sparse.csr_matrix:
    """Return the patches as rows of a float32 CSR matrix (npatches, height * width).

    Parts of a patch outside the frame and weights below ``_MIN_FOOTPRINT_WEIGHT``
    (for blurred sources) or of exactly 0 are left out.
    """
    indptr, indices, data = [0], [], []
    for top, left, weights in patches:
        rows, columns = np.nonzero(weights > 0)
        values = weights[rows, columns]
        rows, columns = rows + top, columns + left
        inside = (rows >= 0) & (rows < shape[0]) & (columns >= 0) & (columns < shape[1])
        indices.append(rows[inside] * shape[1] + columns[inside])
        data.append(values[inside])
        indptr.append(indptr[-1] + int(inside.sum()))
    return scipy.sparse.csr_matrix(
        (np.concatenate(data + [np.zeros(0, np.float32)]).astype(np.float32),
         np.concatenate(indices + [np.zeros(0, np.int64)]), indptr),
        shape=(len(patches), shape[0] * shape[1]))


def _place_cells(rng: np.random.Generator, spec: MovieSpec) -> tuple[np.ndarray, np.ndarray]:
    """Return centres (ncells, 2) and long semi-axes (ncells,) of the cells.

    Cells lie fully inside the frame and two cells' centres are at least
    ``min_center_separation`` times the sum of their long semi-axes apart. A
    fraction ``neighbor_fraction`` of the cells is placed right next to an
    earlier cell, so that touching and slightly overlapping pairs are common.

    Raises
    ------
    ValueError
        If the frame is too crowded to place ``spec.ncells`` cells.
    """
    radii = rng.uniform(*spec.cell_diameter_px, size=spec.ncells) / 2
    centers = np.empty((spec.ncells, 2))
    frame_size = np.array([spec.height, spec.width])
    for i, radius in enumerate(radii):
        low, high = radius + 1, np.maximum(frame_size - radius - 2, radius + 1)
        next_to_neighbor = i > 0 and rng.random() < spec.neighbor_fraction
        for _ in range(_PLACEMENT_ATTEMPTS_PER_CELL):
            if next_to_neighbor:
                neighbor = rng.integers(i)
                distance = rng.uniform(spec.min_center_separation, 1) * (radii[neighbor] + radius)
                direction = rng.uniform(0, 2 * np.pi)
                candidate = centers[neighbor] + distance * np.array(
                    [np.sin(direction), np.cos(direction)])
            else:
                candidate = rng.uniform(low, high)
            inside = np.all((candidate >= low) & (candidate <= high))
            distances = np.hypot(*(centers[:i] - candidate).T)
            if inside and np.all(distances >= spec.min_center_separation * (radii[:i] + radius)):
                centers[i] = candidate
                break
        else:
            raise ValueError(
                f"cannot place {spec.ncells} cells of diameter {spec.cell_diameter_px} px in a "
                f"{spec.height} x {spec.width} px frame with min_center_separation="
                f"{spec.min_center_separation}: placed only {i}; use fewer or smaller cells")
    return centers, radii


def _cell_patches(rng: np.random.Generator, spec: MovieSpec) -> list[_Patch]:
    """Return irregular elliptical soma footprints in [0, 1], one patch per cell."""
    centers, long_radii = _place_cells(rng, spec)
    short_radii = long_radii * rng.uniform(*spec.cell_axis_ratio, size=spec.ncells)
    angles = rng.uniform(0, np.pi, size=spec.ncells)
    harmonics = np.arange(2, 5)
    outline_amplitudes = rng.uniform(0, spec.outline_irregularity,
                                     size=(spec.ncells, len(harmonics)))
    outline_phases = rng.uniform(0, 2 * np.pi, size=(spec.ncells, len(harmonics)))

    patches = []
    for i, (cy, cx) in enumerate(centers):
        reach = int(np.ceil(long_radii[i] * (1 + len(harmonics) * spec.outline_irregularity))) + 1
        ys = np.arange(max(0, int(cy) - reach), min(spec.height, int(cy) + reach + 2))
        xs = np.arange(max(0, int(cx) - reach), min(spec.width, int(cx) + reach + 2))
        dy, dx = np.meshgrid(ys - cy, xs - cx, indexing="ij")
        along = (dx * np.cos(angles[i]) + dy * np.sin(angles[i])) / long_radii[i]
        across = (-dx * np.sin(angles[i]) + dy * np.cos(angles[i])) / short_radii[i]
        polar_angle = np.arctan2(across, along)[..., None]
        outline = 1 + (outline_amplitudes[i]
                       * np.cos(harmonics * polar_angle + outline_phases[i])).sum(-1)
        relative_radius = np.hypot(along, across) / outline
        patches.append((ys[0], xs[0], _soft_disk_profile(relative_radius, spec.edge_fraction)))
    return patches


def _soft_disk_profile(relative_radius: np.ndarray, edge_fraction: float) -> np.ndarray:
    """Return 1 inside ``1 - edge_fraction``, a cosine fade to 0 at 1, and 0 beyond."""
    fade = np.clip((relative_radius - (1 - edge_fraction)) / edge_fraction, 0, 1)
    return np.where(relative_radius < 1, 0.5 * (1 + np.cos(np.pi * fade)), 0).astype(np.float32)


def _blob_patch(rng: np.random.Generator, spec: MovieSpec) -> _Patch:
    """Return an out-of-focus soma: a Gaussian blob of peak 1, centred anywhere in the frame.

    Its diameter (drawn from ``out_of_focus_diameter_px``) is the blob's full
    width at a tenth of its peak, a defocused soma's apparent size.
    """
    center = rng.uniform((0, 0), (spec.height, spec.width))
    sigma = rng.uniform(*spec.out_of_focus_diameter_px) / (2 * np.sqrt(2 * np.log(10)))
    reach = int(np.ceil(sigma * np.sqrt(-2 * np.log(_MIN_FOOTPRINT_WEIGHT))))
    top, left = (int(value) - reach for value in center)
    dy, dx = np.meshgrid(np.arange(top, top + 2 * reach + 2) - center[0],
                         np.arange(left, left + 2 * reach + 2) - center[1], indexing="ij")
    weights = np.exp(-(dy ** 2 + dx ** 2) / (2 * sigma ** 2)).astype(np.float32)
    weights[weights < _MIN_FOOTPRINT_WEIGHT] = 0
    return top, left, weights


def _dendrite_patch(rng: np.random.Generator, spec: MovieSpec) -> _Patch:
    """Return a dendrite-like streak: a gently curving line of peak weight 1.

    The path starts anywhere in the frame in a random direction and bends a
    little at every step; it is drawn one pixel wide and blurred to
    ``dendrite_width_px`` (full width at half maximum).
    """
    length = rng.uniform(*spec.dendrite_length_px)
    nsteps = int(np.ceil(length / _DENDRITE_STEP_PX))
    direction = rng.uniform(0, 2 * np.pi) + np.cumsum(
        rng.normal(0, _DENDRITE_BENDING * np.sqrt(_DENDRITE_STEP_PX), size=nsteps))
    start = rng.uniform((0, 0), (spec.height, spec.width))
    path = start + _DENDRITE_STEP_PX * np.cumsum(
        np.stack([np.sin(direction), np.cos(direction)], axis=1), axis=0)
    sigma = spec.dendrite_width_px / (2 * np.sqrt(2 * np.log(2)))
    margin = int(np.ceil(3 * sigma)) + 1
    top, left = (int(np.floor(value)) - margin for value in path.min(axis=0))
    pixels = np.rint(path - (top, left)).astype(int)
    weights = np.zeros(pixels.max(axis=0) + margin + 1, np.float32)
    weights[pixels[:, 0], pixels[:, 1]] = 1
    weights = gaussian_filter(weights, sigma)
    weights /= weights.max()
    weights[weights < _MIN_FOOTPRINT_WEIGHT] = 0
    return top, left, weights


def _calcium_activity(rng: np.random.Generator, spec: MovieSpec,
                      nsources: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw the calcium events of ``nsources`` sources.

    Events arrive as a Poisson process with a per-source rate (log-uniform in
    ``event_rate_hz``) and have gamma-distributed amplitudes (many small, a few
    large bursts) of mean ``event_amplitude_dff``; each source draws a decay
    time from ``decay_time_s``.

    Returns
    -------
    counts : numpy.ndarray
        int (nsources, nframes): events starting in each frame.
    amplitudes : numpy.ndarray
        float32 (nsources, nframes): their summed dF/F.
    decay_s : numpy.ndarray
        (nsources, 1) decay time constants.
    """
    log_rates = rng.uniform(*np.log(spec.event_rate_hz), size=(nsources, 1))
    counts = rng.poisson(np.exp(log_rates) / spec.fs, size=(nsources, spec.nframes))
    amplitude_shape = 2.0  # gamma shape 2: mode at half the mean, long tail of bursts
    amplitudes = rng.gamma(amplitude_shape, spec.event_amplitude_dff / amplitude_shape,
                           size=counts.shape)
    decay_s = rng.uniform(*spec.decay_time_s, size=(nsources, 1))
    return counts, (counts * amplitudes).astype(np.float32), decay_s


def _calcium_dff(spec: MovieSpec, amplitudes: np.ndarray, decay_s: np.ndarray) -> np.ndarray:
    """Return GCaMP-like dF/F traces (nsources, nframes), float32: the events
    convolved with a difference-of-exponentials kernel (fast rise, per-source decay)."""
    if len(amplitudes) == 0:
        return np.zeros((0, spec.nframes), np.float32)
    kernel_t = np.arange(int(np.ceil(5 * spec.decay_time_s[1] * spec.fs))) / spec.fs
    kernels = (1 - np.exp(-kernel_t / spec.rise_time_s)) * np.exp(-kernel_t / decay_s)
    kernels /= kernels.max(axis=1, keepdims=True)
    dff = fftconvolve(amplitudes, kernels.astype(np.float32), axes=1)[:, :spec.nframes]
    return dff.clip(0).astype(np.float32)


def _neuropil(rng: np.random.Generator,
              spec: MovieSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the neuropil's mean image, fluctuation maps and their time courses.

    The neuropil at frame t is
    ``mean * (1 + (maps * traces[t][:, None, None]).sum(0))``: spatially
    smooth random patterns (correlation length ``neuropil_length_px``)
    modulated by AR(1) processes with correlation time ``neuropil_time_s``.
    """
    ncomponents = 4  # a handful of independent patches of population activity
    shape = (spec.height, spec.width)
    static_pattern = _smooth_random_field(rng, shape, spec.neuropil_length_px)
    neuropil_mean = spec.neuropil_photons * np.clip(
        1 + spec.neuropil_fluctuation * static_pattern, 0.1, None)
    maps = np.stack([_smooth_random_field(rng, shape, spec.neuropil_length_px)
                     for _ in range(ncomponents)])
    maps *= spec.neuropil_fluctuation / np.sqrt(ncomponents)
    decay = np.exp(-1 / (spec.neuropil_time_s * spec.fs))
    innovations = rng.standard_normal((spec.nframes, ncomponents)) * np.sqrt(1 - decay**2)
    traces = lfilter([1.0], [1.0, -decay], innovations, axis=0)
    return neuropil_mean, maps.astype(np.float32), traces.astype(np.float32)


def _smooth_random_field(rng: np.random.Generator, shape: tuple[int, int],
                         length_px: float) -> np.ndarray:
    """Return a Gaussian random field of zero mean and unit std, smooth over ``length_px``."""
    field = gaussian_filter(rng.standard_normal(shape), sigma=length_px / 2, mode="wrap")
    return (field - field.mean()) / (field.std() + 1e-12)


def _bleaching_curve(nframes: int, bleach_fraction: float) -> np.ndarray:
    """Return an exponential decay from 1 to ``1 - bleach_fraction`` over ``nframes``."""
    if nframes == 1 or bleach_fraction == 0:
        return np.ones(nframes)
    return (1 - bleach_fraction) ** (np.arange(nframes) / (nframes - 1))


def _render_batches(spec: MovieSpec, scene: Scene) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(first_frame, uint16 frames)`` batches of the noisy movie, in order.

    Batches are rendered by ``_RENDER_THREADS`` threads, at most
    ``_BATCHES_IN_FLIGHT`` ahead of the consumer, each with its own random
    stream (so the movie does not depend on the thread count). Expected
    photons are the sources plus the neuropil, times bleaching. Shot noise
    and detector read noise are drawn together as one Gaussian whose variance
    is the Poisson variance of the photon count (its mean) plus the read
    noise's: after Suite2P averages dozens of frames per bin this is
    indistinguishable from Poisson counts, and it costs one normal draw per
    pixel instead of a Poisson draw several times dearer. Values are in
    detector units (gain and offset), rounded and clipped to uint16.
    """
    npixels = spec.height * spec.width
    batch_frames = max(1, _RENDER_BATCH_PIXELS // npixels)
    starts = range(0, spec.nframes, batch_frames)
    batch_seeds = _stream_seed(spec.seed, "noise").spawn(len(starts))
    pixels_by_source = scene.footprints.T.tocsr()
    flat_neuropil_mean = scene.neuropil_mean.reshape(npixels)
    flat_neuropil_maps = scene.neuropil_maps.reshape(len(scene.neuropil_maps), npixels)
    gain, read_variance = np.float32(spec.adu_per_photon), np.float32(spec.read_noise_adu ** 2)
    uint16_max = np.iinfo(np.uint16).max

    def render(start: int, seed: np.random.SeedSequence) -> np.ndarray:
        stop = min(start + batch_frames, spec.nframes)
        photons = scene.neuropil_traces[start:stop] @ flat_neuropil_maps
        photons += 1
        photons *= flat_neuropil_mean
        brightness = scene.baseline[:, None] * (1 + scene.dff[:, start:stop])
        photons += (pixels_by_source @ brightness).T
        photons *= scene.bleaching[start:stop, None]
        np.maximum(photons, 0, out=photons)
        spread = photons * (gain * gain)
        spread += read_variance
        np.sqrt(spread, out=spread)
        noise = np.random.default_rng(seed).standard_normal(photons.shape, dtype=np.float32)
        noise *= spread
        photons *= gain
        photons += np.float32(spec.dark_offset_adu)
        photons += noise
        np.rint(photons, out=photons)
        np.clip(photons, 0, uint16_max, out=photons)
        return photons.astype(np.uint16).reshape(stop - start, spec.height, spec.width)

    with ThreadPoolExecutor(_RENDER_THREADS) as pool:
        pending = collections.deque()
        for start, seed in zip(starts, batch_seeds):
            pending.append((start, pool.submit(render, start, seed)))
            if len(pending) >= _BATCHES_IN_FLIGHT:
                first, frames = pending.popleft()
                yield first, frames.result()
        while pending:
            first, frames = pending.popleft()
            yield first, frames.result()
