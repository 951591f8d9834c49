"""Real Suite2P 1.1 on the default synthetic demo movie finds its cells.

This pins down the recipe the demo and the pipeline rely on: one HDF5 movie
(dataset ``data``), registration off, ``threshold_scaling`` 0.75,
``nbins = nframes // 115`` (the original jobs' bins, ``ORIGINAL_BIN_SIZE``, with
which the floors below were measured; the manifest now defaults to finer
bins, ``DEFAULT_BIN_SIZE``), sparsery forced to its 12 px spatial scale, and
every ROI in ``stat.npy`` counted as a prediction.
"""
import copy
import time

import numpy as np
import pytest

from slapp.data_selection.segmentation_manifest import DEFAULT_BIN_SIZE
from slapp.demo.synthetic_movie import MovieSpec, preset_spec, read_ground_truth, write_movie
from slapp.evaluation.matching import match_rois
from slapp.evaluation.plain_suite2p import ORIGINAL_BIN_SIZE

# The default demo movie: 4500 frames, 30 cells of 10-15 px in 128 x 128 px.
SPEC = MovieSpec(seed=0)
# On the default movie, seeds 0-19 gave precision 1.0 and recall 0.87-1.0; the
# floors leave two cells of slack for numerical differences between platforms.
PRECISION_FLOOR = 0.9
RECALL_FLOOR = 0.8


def suite2p_settings(nframes: int) -> dict:
    """Return the Suite2P settings overrides for one already motion-corrected movie."""
    return {
        "torch_device": "cpu",
        "fs": 31.0,
        "tau": 0.7,                       # GCaMP6f decay; only used for deconvolution here
        "diameter": [12.0, 12.0],         # median soma; sparsery uses it only for ROI stats
        "run": {"do_registration": 0, "do_regmetrics": False, "do_detection": True,
                "do_deconvolution": True, "multiplane_parallel": False},
        "io": {"combined": False, "save_mat": False, "save_NWB": False,
               "save_ops_orig": False,    # ops.npy would repeat db, settings and detect_outputs
               "delete_bin": True,        # data.bin is a full int16 copy of the movie
               "move_bin": False},
        "detection": {"algorithm": "sparsery", "threshold_scaling": 0.75,
                      "nbins": nframes // ORIGINAL_BIN_SIZE,
                      # 2 = 12 px; auto-estimation sometimes picks 6 px, halving the
                      # threshold and adding ~15 neuropil ROIs
                      "sparsery_settings": {"spatial_scale": 2}},
        "classification": {"use_builtin_classifier": True},
    }


def deep_merged(base: dict, overrides: dict) -> dict:
    """Return ``base`` with ``overrides`` merged in at every nesting level.

    ``run_s2p`` merges only the top level, so a partial ``detection`` dict would
    drop every other detection key.
    """
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merged(merged[key], value)
        else:
            merged[key] = value
    return merged


@pytest.mark.slow
def test_suite2p_finds_the_synthetic_cells(tmp_path):
    import suite2p  # here, not at module level: importing torch and cellpose takes seconds
    movie_path = tmp_path / "input" / "movie.h5"
    movie_path.parent.mkdir()
    truth = read_ground_truth(write_movie(movie_path, SPEC))

    db = {
        "data_path": [str(movie_path.parent)],
        "file_list": [movie_path.name],   # without it the ground-truth .h5 beside it is read too
        "input_format": "h5",
        "h5py_key": "data",
        "save_path0": str(tmp_path / "output"),
        "fast_disk": str(tmp_path / "scratch"),
    }
    settings = deep_merged(suite2p.default_settings(), suite2p_settings(SPEC.nframes))
    start = time.perf_counter()
    suite2p.run_s2p(db=db, settings=settings)
    seconds = time.perf_counter() - start

    plane = tmp_path / "output" / "suite2p" / "plane0"
    stat = np.load(plane / "stat.npy", allow_pickle=True)
    result = match_rois([(roi["ypix"], roi["xpix"]) for roi in stat], truth)
    print(f"\nSuite2P {seconds:.1f} s: {result.n_predicted} ROIs for {result.n_truth} cells, "
          f"precision {result.precision:.3f} recall {result.recall:.3f} F1 {result.f1:.3f}")

    assert result.precision >= PRECISION_FLOOR
    assert result.recall >= RECALL_FLOOR
    assert np.median([iou for _, _, iou in result.matched_pairs]) >= 0.7
    assert {"ypix", "xpix", "lam", "med", "npix", "overlap", "radius", "aspect_ratio",
            "compact", "skew"} <= set(stat[0])
    assert np.load(plane / "F.npy").shape == (len(stat), SPEC.nframes)
    assert np.load(plane / "Fneu.npy").shape == (len(stat), SPEC.nframes)
    assert np.load(plane / "iscell.npy").shape == (len(stat), 2)
    assert not (plane / "ops.npy").exists()
    assert not any(path.is_file() for path in (tmp_path / "scratch").rglob("*"))



def test_plain_baselines_are_suite2p_defaults_with_the_documented_changes(tmp_path):
    import suite2p
    from slapp.evaluation.plain_suite2p import baseline_inputs

    movie_path = tmp_path / "movie.h5"
    jobs_db, jobs = baseline_inputs("original_jobs", movie_path, 26, tmp_path)
    _, defaults = baseline_inputs("suite2p_defaults", movie_path, 26, tmp_path)
    assert jobs_db["file_list"] == ["movie.h5"] and jobs_db["h5py_key"] == "data"
    assert jobs["detection"]["threshold_scaling"] == 0.75 and jobs["detection"]["nbins"] == 26
    untouched = suite2p.default_settings()
    assert defaults["detection"] == untouched["detection"]
    assert (defaults["tau"], defaults["diameter"]) == (untouched["tau"], untouched["diameter"])
    for settings in (jobs, defaults):
        assert settings["detection"]["sparsery_settings"]["spatial_scale"] == 0
        assert settings["fs"] == 31.0 and settings["run"]["do_registration"] == 0
    with pytest.raises(ValueError, match="unknown baseline 'mine'"):
        baseline_inputs("mine", movie_path, 26, tmp_path)


@pytest.mark.slow
def test_plain_suite2p_scores_of_a_demo_movie_are_computed_once(tmp_path, capsys):
    from slapp.demo.run_demo import plain_suite2p_scores
    from slapp.demo.storage import DemoMovie

    movie_path = tmp_path / "motion_corrected_video.h5"
    spec = preset_spec("realistic", nframes=1500, height=96, width=96, seed=4)
    truth_path = write_movie(movie_path, spec)
    movie = DemoMovie(4, movie_path, truth_path, generated=True)

    first = plain_suite2p_scores(movie, nbinned=1500 // DEFAULT_BIN_SIZE)
    assert "scored" in capsys.readouterr().out
    assert 0 <= first["plain_f1"] <= 1 and 0 <= first["plain_f1_all_rois"] <= 1
    assert plain_suite2p_scores(movie, nbinned=1500 // DEFAULT_BIN_SIZE) == first
    assert "kept" in capsys.readouterr().out
    assert (tmp_path / "motion_corrected_video_plain_suite2p.json").is_file()
