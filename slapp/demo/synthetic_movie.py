"""Synthetic two-photon calcium-imaging movies with known ground truth.

The movie mimics an Allen Brain Observatory style recording that has already
been motion corrected: GCaMP-like somata of varied size, shape and brightness
(neighbours may overlap a little), a fluctuating neuropil background, slow
bleaching, photon shot noise and a little detector read noise. Every cell's
spatial footprint is returned (and written) as ground truth so that a
segmentation can be scored with :mod:`slapp.evaluation.matching`.

Generation is deterministic given ``MovieSpec.seed``. The cell layout depends
only on the seed and the geometry fields, not on ``nframes``, so a longer movie
of the same seed shows the same cells.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.signal import fftconvolve, lfilter

MOVIE_DATASET = "data"
MASKS_DATASET = "masks"

# Pixels rendered at once (128 frames of 128 x 128): each float64 working array
# stays ~16 MB, and numpy calls stay large enough to run at full speed.
_RENDER_BATCH_PIXELS = 1 << 21
# Target size of one HDF5 chunk of the movie: h5py recommends 10 KiB - 1 MiB.
_TARGET_CHUNK_BYTES = 1 << 19
# Independent random streams drawn from MovieSpec.seed, one per part of the scene.
_RANDOM_STREAMS = ("layout", "activity", "neuropil", "noise")
# Attempts per cell when placing centres at random before declaring the FOV full.
_PLACEMENT_ATTEMPTS_PER_CELL = 200


@dataclass(frozen=True)
class MovieSpec:
    """Parameters of a synthetic movie; every default is chosen to look like Allen data.

    Brightness values are expected photons per pixel per frame, before noise.
    Ranges are ``(low, high)`` and each cell draws its own value uniformly
    (log-uniformly for event rates) from them.
    """

    # 4500 frames (145 s at 31 Hz) give 39 detection bins under the pipeline's
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

    def __post_init__(self) -> None:
        problems = _spec_problems(self)
        if problems:
            raise ValueError("invalid MovieSpec: " + "; ".join(problems))


def _spec_problems(spec: MovieSpec) -> list[str]:
    """Return a human-readable description of every invalid field of ``spec``."""
    problems = []
    for name in ("nframes", "height", "width"):
        if getattr(spec, name) < 1:
            problems.append(f"{name} must be >= 1, got {getattr(spec, name)}")
    if spec.ncells < 0:
        problems.append(f"ncells must be >= 0, got {spec.ncells}")
    for name in ("fs", "rise_time_s", "neuropil_length_px", "neuropil_time_s", "adu_per_photon"):
        if not getattr(spec, name) > 0:
            problems.append(f"{name} must be > 0, got {getattr(spec, name)}")
    for name in ("cell_diameter_px", "cell_axis_ratio", "cell_baseline_photons",
                 "event_rate_hz", "decay_time_s"):
        low, high = getattr(spec, name)
        if not 0 < low <= high:
            problems.append(f"{name} must satisfy 0 < low <= high, got {(low, high)}")
    if spec.cell_axis_ratio[1] > 1:
        problems.append(f"cell_axis_ratio must be <= 1, got {spec.cell_axis_ratio}")
    if not 0 <= spec.neighbor_fraction <= 1:
        problems.append(f"neighbor_fraction must be in [0, 1], got {spec.neighbor_fraction}")
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
class _Scene:
    """Everything about the movie except the per-frame noise."""

    masks: np.ndarray              # (ncells, height, width) float32 footprints
    cell_baseline: np.ndarray      # (ncells,) resting photons at footprint weight 1
    dff: np.ndarray                # (ncells, nframes) float32 dF/F traces
    neuropil_mean: np.ndarray      # (height, width) mean neuropil photons
    neuropil_maps: np.ndarray      # (ncomponents, height, width) fluctuation patterns
    neuropil_traces: np.ndarray    # (nframes, ncomponents) their time courses
    bleaching: np.ndarray          # (nframes,) multiplicative brightness factor


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
        float32 array (ncells, height, width): each cell's spatial footprint
        weights in [0, 1], 0 outside the cell.

    Raises
    ------
    ValueError
        If the cells cannot be placed without overlapping more than
        ``spec.min_center_separation`` allows.
    """
    scene = _build_scene(spec)
    movie = np.empty((spec.nframes, spec.height, spec.width), np.uint16)
    for start, frames in _render_batches(spec, scene):
        movie[start:start + len(frames)] = frames
    return movie, scene.masks


def ground_truth_path(movie_path: Path) -> Path:
    """Return where the ground truth of the movie at ``movie_path`` is stored.

    Parameters
    ----------
    movie_path : pathlib.Path
        Path of the movie HDF5 file, e.g. ``demo.h5``.

    Returns
    -------
    pathlib.Path
        Sibling file ``<stem>_ground_truth.h5``, e.g. ``demo_ground_truth.h5``.
    """
    movie_path = Path(movie_path)
    return movie_path.with_name(movie_path.stem + "_ground_truth.h5")


def write_movie(path: Path, spec: MovieSpec) -> Path:
    """Generate a movie and write it and its ground truth as HDF5, atomically.

    The movie goes to dataset ``data`` (nframes, height, width), uint16,
    chunked by a few frames so that reading a few frames is cheap. The
    ground truth goes to :func:`ground_truth_path` as a gzip-compressed
    dataset ``masks`` (ncells, height, width) float32, with the spec's
    fields as attributes. Both files are written to temporary names in the
    destination directory and renamed into place only once complete, so a
    failure never leaves a partial file behind.

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
        scene = _build_scene(spec)
        frame_shape = (spec.height, spec.width)
        movie = movie_file.create_dataset(
            MOVIE_DATASET, shape=(spec.nframes, *frame_shape), dtype=np.uint16,
            chunks=(_chunk_frames(frame_shape, spec.nframes), *frame_shape))
        movie.attrs.update(spec_attrs)
        for start, frames in _render_batches(spec, scene):
            movie[start:start + len(frames)] = frames
        truth = truth_file.create_dataset(
            MASKS_DATASET, data=scene.masks, compression="gzip", shuffle=True,
            chunks=(1, *frame_shape) if spec.ncells else None)
        truth.attrs.update(spec_attrs)
    return truth_path


def read_ground_truth(path: Path) -> np.ndarray:
    """Read ground-truth cell footprints written by :func:`write_movie`.

    Parameters
    ----------
    path : pathlib.Path
        Ground-truth HDF5 file (see :func:`ground_truth_path`).

    Returns
    -------
    numpy.ndarray
        float32 array (ncells, height, width) of footprint weights.
    """
    with h5py.File(path, "r") as f:
        return f[MASKS_DATASET][()].astype(np.float32, copy=False)


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


def _build_scene(spec: MovieSpec) -> _Scene:
    """Draw cells, their activity, the neuropil and the bleaching curve for ``spec``."""
    layout_rng = _stream_rng(spec.seed, "layout")
    masks = _cell_masks(layout_rng, spec)
    cell_baseline = layout_rng.uniform(*spec.cell_baseline_photons, size=spec.ncells)
    neuropil_mean, neuropil_maps, neuropil_traces = _neuropil(
        _stream_rng(spec.seed, "neuropil"), spec)
    return _Scene(
        masks=masks,
        cell_baseline=cell_baseline,
        dff=_calcium_dff(_stream_rng(spec.seed, "activity"), spec),
        neuropil_mean=neuropil_mean,
        neuropil_maps=neuropil_maps,
        neuropil_traces=neuropil_traces,
        bleaching=_bleaching_curve(spec.nframes, spec.bleach_fraction),
    )


def _stream_rng(seed: int, stream: str) -> np.random.Generator:
    """Return the generator of one independent random stream of ``seed``.

    Separate streams keep e.g. the cell layout unchanged when only
    ``nframes`` changes.
    """
    return np.random.default_rng(np.random.SeedSequence(seed).spawn(len(_RANDOM_STREAMS))[
        _RANDOM_STREAMS.index(stream)])


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
                candidate = centers[neighbor] + distance * np.array([np.sin(direction), np.cos(direction)])
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


def _cell_masks(rng: np.random.Generator, spec: MovieSpec) -> np.ndarray:
    """Return irregular elliptical soma footprints (ncells, height, width), float32 in [0, 1]."""
    centers, long_radii = _place_cells(rng, spec)
    short_radii = long_radii * rng.uniform(*spec.cell_axis_ratio, size=spec.ncells)
    angles = rng.uniform(0, np.pi, size=spec.ncells)
    harmonics = np.arange(2, 5)
    outline_amplitudes = rng.uniform(0, spec.outline_irregularity, size=(spec.ncells, len(harmonics)))
    outline_phases = rng.uniform(0, 2 * np.pi, size=(spec.ncells, len(harmonics)))

    masks = np.zeros((spec.ncells, spec.height, spec.width), np.float32)
    for i, (cy, cx) in enumerate(centers):
        reach = int(np.ceil(long_radii[i] * (1 + len(harmonics) * spec.outline_irregularity))) + 1
        ys = np.arange(max(0, int(cy) - reach), min(spec.height, int(cy) + reach + 2))
        xs = np.arange(max(0, int(cx) - reach), min(spec.width, int(cx) + reach + 2))
        dy, dx = np.meshgrid(ys - cy, xs - cx, indexing="ij")
        along = (dx * np.cos(angles[i]) + dy * np.sin(angles[i])) / long_radii[i]
        across = (-dx * np.sin(angles[i]) + dy * np.cos(angles[i])) / short_radii[i]
        polar_angle = np.arctan2(across, along)[..., None]
        outline = 1 + (outline_amplitudes[i] * np.cos(harmonics * polar_angle + outline_phases[i])).sum(-1)
        relative_radius = np.hypot(along, across) / outline
        masks[i, ys[0]:ys[-1] + 1, xs[0]:xs[-1] + 1] = _soft_disk_profile(
            relative_radius, spec.edge_fraction)
    return masks


def _soft_disk_profile(relative_radius: np.ndarray, edge_fraction: float) -> np.ndarray:
    """Return 1 inside ``1 - edge_fraction``, a cosine fade to 0 at 1, and 0 beyond."""
    fade = np.clip((relative_radius - (1 - edge_fraction)) / edge_fraction, 0, 1)
    return np.where(relative_radius < 1, 0.5 * (1 + np.cos(np.pi * fade)), 0).astype(np.float32)


def _calcium_dff(rng: np.random.Generator, spec: MovieSpec) -> np.ndarray:
    """Return GCaMP-like dF/F traces (ncells, nframes), float32.

    Events arrive as a Poisson process with a per-cell rate, have
    gamma-distributed amplitudes (many small, a few large bursts) and are
    convolved with a difference-of-exponentials kernel (fast rise, per-cell
    decay).
    """
    if spec.ncells == 0:
        return np.zeros((0, spec.nframes), np.float32)
    log_rates = rng.uniform(*np.log(spec.event_rate_hz), size=(spec.ncells, 1))
    event_counts = rng.poisson(np.exp(log_rates) / spec.fs, size=(spec.ncells, spec.nframes))
    amplitude_shape = 2.0  # gamma shape 2: mode at half the mean, long tail of bursts
    amplitudes = rng.gamma(amplitude_shape, spec.event_amplitude_dff / amplitude_shape,
                           size=event_counts.shape)
    events = (event_counts * amplitudes).astype(np.float32)

    decay_s = rng.uniform(*spec.decay_time_s, size=(spec.ncells, 1))
    kernel_t = np.arange(int(np.ceil(5 * spec.decay_time_s[1] * spec.fs))) / spec.fs
    kernels = (1 - np.exp(-kernel_t / spec.rise_time_s)) * np.exp(-kernel_t / decay_s)
    kernels /= kernels.max(axis=1, keepdims=True)
    return fftconvolve(events, kernels.astype(np.float32), axes=1)[:, :spec.nframes].clip(0)


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
    neuropil_mean = spec.neuropil_photons * np.clip(1 + spec.neuropil_fluctuation * static_pattern, 0.1, None)
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


def _render_batches(spec: MovieSpec, scene: _Scene) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(first_frame, uint16 frames)`` batches of the noisy movie, in order.

    Expected photons are cells plus neuropil times bleaching; counts are
    Poisson draws of those, converted to detector units with gain, offset
    and Gaussian read noise, then rounded and clipped to uint16.
    """
    noise_rng = _stream_rng(spec.seed, "noise")
    npixels = spec.height * spec.width
    flat_masks = scene.masks.reshape(spec.ncells, npixels)
    flat_neuropil_mean = scene.neuropil_mean.reshape(npixels)
    flat_neuropil_maps = scene.neuropil_maps.reshape(len(scene.neuropil_maps), npixels)
    uint16_max = np.iinfo(np.uint16).max
    batch_frames = max(1, _RENDER_BATCH_PIXELS // npixels)
    for start in range(0, spec.nframes, batch_frames):
        stop = min(start + batch_frames, spec.nframes)
        cell_brightness = scene.cell_baseline[:, None] * (1 + scene.dff[:, start:stop])
        photons = cell_brightness.T @ flat_masks
        photons += flat_neuropil_mean * (1 + scene.neuropil_traces[start:stop] @ flat_neuropil_maps)
        photons *= scene.bleaching[start:stop, None]
        counts = noise_rng.poisson(np.clip(photons, 0, None))
        detector = counts * spec.adu_per_photon + spec.dark_offset_adu
        detector += spec.read_noise_adu * noise_rng.standard_normal(detector.shape, dtype=np.float32)
        frames = np.clip(np.rint(detector), 0, uint16_max).astype(np.uint16)
        yield start, frames.reshape(stop - start, spec.height, spec.width)
