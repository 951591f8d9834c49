"""Synthetic movie: determinism, content, presets, ground truth, HDF5 layout, atomic writes."""
import os
import stat

import h5py
import numpy as np
import pytest

from slapp.demo.synthetic_movie import (
    MovieSpec,
    draw_scene,
    generate_movie,
    ground_truth_path,
    preset_spec,
    read_ground_truth,
    read_movie_spec,
    write_movie,
)

# Small enough to generate in well under a second; same physics as the default.
SMALL = MovieSpec(nframes=310, height=64, width=48, ncells=8, seed=3)


@pytest.fixture(scope="module")
def small_movie():
    return generate_movie(SMALL)


def test_shapes_and_dtypes(small_movie):
    movie, masks = small_movie
    assert movie.shape == (SMALL.nframes, SMALL.height, SMALL.width)
    assert movie.dtype == np.uint16
    assert masks.shape == (SMALL.ncells, SMALL.height, SMALL.width)
    assert masks.dtype == np.float32


def test_same_seed_gives_identical_movie(small_movie):
    movie, masks = generate_movie(SMALL)
    np.testing.assert_array_equal(movie, small_movie[0])
    np.testing.assert_array_equal(masks, small_movie[1])


def test_other_seed_gives_other_movie(small_movie):
    movie, masks = generate_movie(MovieSpec(**{**SMALL.__dict__, "seed": SMALL.seed + 1}))
    assert not np.array_equal(masks, small_movie[1])
    assert not np.array_equal(movie, small_movie[0])


def test_cell_layout_does_not_depend_on_movie_length(small_movie):
    _, masks = generate_movie(MovieSpec(**{**SMALL.__dict__, "nframes": 40}))
    np.testing.assert_array_equal(masks, small_movie[1])


def test_masks_are_compact_soma_footprints(small_movie):
    _, masks = small_movie
    assert masks.min() == 0 and masks.max() == 1
    areas = (masks > 0).sum(axis=(1, 2))
    low, high = SMALL.cell_diameter_px
    # an ellipse with axes within the diameter range, give or take the irregular outline
    assert np.all(areas >= 0.6 * np.pi * (low / 2) ** 2 * SMALL.cell_axis_ratio[0])
    assert np.all(areas <= 1.3 * np.pi * (high / 2) ** 2)


def test_neighbouring_cells_can_overlap():
    _, masks = generate_movie(MovieSpec(nframes=10, seed=0))
    cells_per_pixel = (masks > 0).sum(axis=0)
    assert cells_per_pixel.max() == 2


def test_cells_are_brighter_and_more_active_than_background(small_movie):
    movie, masks = small_movie
    in_cells, background = masks.max(axis=0) > 0.9, masks.max(axis=0) == 0
    temporal_std = movie.std(axis=0)
    assert movie.mean(axis=0)[in_cells].mean() > movie.mean(axis=0)[background].mean()
    assert temporal_std[in_cells].mean() > 1.2 * temporal_std[background].mean()


def test_noise_is_photon_like(small_movie):
    movie, masks = small_movie
    background = movie[:, masks.max(axis=0) == 0].astype(np.float64)
    photons = (background - SMALL.dark_offset_adu) / SMALL.adu_per_photon
    frame_to_frame_variance = np.diff(photons, axis=0).var() / 2
    # Poisson: variance ~ mean photons, plus read noise and a little neuropil change
    assert photons.mean() == pytest.approx(frame_to_frame_variance, rel=0.25)


def test_bleaching_dims_the_movie_over_time():
    movie, _ = generate_movie(MovieSpec(**{**SMALL.__dict__, "nframes": 2000}))
    first, last = movie[:200].mean(), movie[-200:].mean()
    assert last < first


def test_write_movie_writes_chunked_data_and_compressed_ground_truth(tmp_path, small_movie):
    movie_path = tmp_path / "demo.h5"
    truth_path = write_movie(movie_path, SMALL)
    assert truth_path == ground_truth_path(movie_path) == tmp_path / "demo_ground_truth.h5"
    with h5py.File(movie_path, "r") as f:
        data = f["data"]
        assert data.shape == (SMALL.nframes, SMALL.height, SMALL.width)
        assert data.dtype == np.uint16
        assert data.chunks[1:] == (SMALL.height, SMALL.width)
        assert 1 <= data.chunks[0] < SMALL.nframes
        np.testing.assert_array_equal(data[()], small_movie[0])
    with h5py.File(truth_path, "r") as f:
        assert f["masks"].compression == "gzip"
        assert f["masks"].attrs["seed"] == SMALL.seed
        assert f["masks"].attrs["nframes"] == SMALL.nframes
        np.testing.assert_array_equal(f["masks"].attrs["cell_diameter_px"], SMALL.cell_diameter_px)
    truth = read_ground_truth(truth_path)
    assert truth.dtype == np.float32
    np.testing.assert_array_equal(truth, small_movie[1])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.h5", "demo_ground_truth.h5"]


def test_written_files_follow_the_umask(tmp_path):
    previous_umask = os.umask(0o022)
    try:
        truth_path = write_movie(tmp_path / "shared.h5", SMALL)
    finally:
        os.umask(previous_umask)
    for path in (tmp_path / "shared.h5", truth_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_movie_without_cells_is_written(tmp_path):
    truth_path = write_movie(tmp_path / "empty.h5", MovieSpec(nframes=20, height=16, width=16, ncells=0))
    assert read_ground_truth(truth_path).shape == (0, 16, 16)


def test_invalid_spec_is_rejected_with_every_problem_named():
    with pytest.raises(ValueError, match="nframes must be >= 1.*cell_diameter_px must satisfy"):
        MovieSpec(nframes=0, cell_diameter_px=(14.0, 9.0))


def test_failed_generation_leaves_no_file_behind(tmp_path):
    crowded = MovieSpec(nframes=20, height=32, width=32, ncells=40)
    with pytest.raises(ValueError, match="cannot place 40 cells"):
        write_movie(tmp_path / "crowded.h5", crowded)
    assert list(tmp_path.iterdir()) == []


def test_failed_generation_keeps_the_previous_files(tmp_path, small_movie):
    movie_path = tmp_path / "demo.h5"
    write_movie(movie_path, SMALL)
    with pytest.raises(ValueError):
        write_movie(movie_path, MovieSpec(nframes=20, height=32, width=32, ncells=40))
    with h5py.File(movie_path, "r") as f:
        np.testing.assert_array_equal(f["data"][()], small_movie[0])
    np.testing.assert_array_equal(read_ground_truth(ground_truth_path(movie_path)), small_movie[1])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.h5", "demo_ground_truth.h5"]


# A realistic-preset movie small enough for a test: 17 somata, 7 blobs, 3 dendrites;
# 20 s at the preset's sparse rates leaves several somata without an event.
REALISTIC_SMALL = preset_spec("realistic", nframes=620, height=96, width=96, seed=1)


def test_each_cell_of_the_easy_movie_lights_up_with_its_own_trace():
    spec = MovieSpec(**{**SMALL.__dict__, "nframes": 1550})  # 50 s: every cell fires
    movie, masks = generate_movie(spec)
    scene = draw_scene(spec)
    assert np.all(scene.event_counts >= 3)
    frames = movie.reshape(len(movie), -1).astype(np.float64)
    for cell, mask in enumerate(masks):
        core = mask.ravel() == 1
        correlation = np.corrcoef(frames[:, core].mean(axis=1), scene.dff[cell])[0, 1]
        assert correlation > 0.6, cell


def test_ground_truth_is_the_drawn_masks_of_the_cells_that_fire(tmp_path):
    scene = draw_scene(REALISTIC_SMALL)
    spec = REALISTIC_SMALL
    cell_counts = scene.event_counts[:spec.ncells]
    assert list(scene.truth_cells) == list(np.flatnonzero(cell_counts >= 1))
    assert 0 < len(scene.truth_cells) < spec.ncells  # some somata never fire
    assert np.all(cell_counts[scene.is_silent] == 0)
    drawn = scene.footprints[:spec.ncells].toarray().reshape(spec.ncells, spec.height, spec.width)

    truth = read_ground_truth(write_movie(tmp_path / "realistic.h5", spec))
    np.testing.assert_array_equal(truth, drawn[scene.truth_cells])
    _, generated_truth = generate_movie(spec)
    np.testing.assert_array_equal(generated_truth, truth)
    with h5py.File(tmp_path / "realistic.h5", "r") as f:
        assert f["data"].shape == (spec.nframes, spec.height, spec.width)
        assert f["data"].dtype == np.uint16


def test_distractors_are_drawn_but_never_ground_truth():
    spec = REALISTIC_SMALL
    scene = draw_scene(spec)
    nsources = spec.ncells + spec.out_of_focus_cells + spec.dendrites
    assert scene.footprints.shape == (nsources, spec.height * spec.width)
    assert np.all(scene.truth_cells < spec.ncells)
    footprints = scene.footprints.toarray().reshape(nsources, spec.height, spec.width)
    areas = (footprints > 0).sum(axis=(1, 2))
    blobs = slice(spec.ncells, spec.ncells + spec.out_of_focus_cells)
    # out-of-focus somata are wider than in-focus ones
    assert np.median(areas[blobs]) > 2 * np.median(areas[:spec.ncells])
    for dendrite in footprints[spec.ncells + spec.out_of_focus_cells:]:
        rows, columns = np.nonzero(dendrite)
        spread = np.linalg.eigvalsh(np.cov(rows, columns))
        assert spread[1] > 9 * spread[0]  # a streak: 3x longer than wide, at least
    assert np.all(scene.event_counts[spec.ncells:] >= 0)
    assert scene.event_counts[spec.ncells:].sum() > 0  # distractors have activity of their own


def test_activity_statistics_follow_the_spec():
    spec = MovieSpec(nframes=3100, height=256, width=256, ncells=200, seed=2,
                     dim_fraction=0.25, silent_fraction=0.3, min_truth_events=1,
                     event_rate_hz=(0.05, 0.5), event_amplitude_dff=0.8,
                     out_of_focus_cells=20, dendrites=20)
    scene = draw_scene(spec)
    assert scene.is_dim.sum() == 50 and scene.is_silent.sum() == 60
    baseline = scene.baseline[:spec.ncells]
    low, high = spec.cell_baseline_photons
    assert np.all((baseline[~scene.is_dim] >= low) & (baseline[~scene.is_dim] <= high))
    dim_baseline = baseline[scene.is_dim] / spec.dim_brightness
    assert np.all((dim_baseline >= low - 1e-5) & (dim_baseline <= high + 1e-5))

    firing = np.flatnonzero(~scene.is_silent)
    seconds = spec.nframes / spec.fs
    low, high = spec.event_rate_hz
    log_uniform_mean = (high - low) / np.log(high / low)
    observed_rate = scene.event_counts[firing].mean() / seconds
    assert observed_rate == pytest.approx(log_uniform_mean, rel=0.15)
    per_cell_rates = scene.event_counts[firing] / seconds
    assert np.median(per_cell_rates) == pytest.approx(np.sqrt(low * high), rel=0.35)
    amplitudes = scene.events[firing][scene.events[firing] > 0]
    assert amplitudes.mean() == pytest.approx(spec.event_amplitude_dff, rel=0.1)
    assert np.all(scene.dff >= 0)
    assert scene.bleaching[0] == 1 and scene.bleaching[-1] == pytest.approx(1 - spec.bleach_fraction)


def test_presets_scale_their_cells_with_the_frame():
    assert preset_spec("easy", 4500, 128, 128, 0) == MovieSpec(seed=0)
    assert preset_spec("easy", 100, 256, 256, 0).ncells == 120
    small = preset_spec("realistic", 100, 128, 128, 0)
    large = preset_spec("realistic", 100, 256, 256, 0)
    for name in ("ncells", "out_of_focus_cells", "dendrites"):
        assert getattr(large, name) == pytest.approx(4 * getattr(small, name), abs=2)
        assert getattr(small, name) > 0
    assert large.dim_fraction == 0.25 and large.min_truth_events == 1
    with pytest.raises(ValueError, match="unknown preset 'hard': choose one of easy, realistic"):
        preset_spec("hard", 100, 64, 64, 0)


def test_a_movie_records_the_spec_it_was_made_from(tmp_path):
    movie_path = tmp_path / "movie.h5"
    write_movie(movie_path, REALISTIC_SMALL)
    assert read_movie_spec(movie_path) == REALISTIC_SMALL
    with h5py.File(movie_path, "a") as f:
        del f["data"].attrs["dendrites"]  # as a movie of an older generator
    assert read_movie_spec(movie_path) is None
    assert read_movie_spec(tmp_path / "missing.h5") is None
