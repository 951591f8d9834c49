"""Benchmark: how well segment's Suite2P settings find the cells, against plain Suite2P.

::

    python bench/bench_quality.py [--size 256] [--nframes 48000] [--seeds 0 1]
                                  [--presets realistic] [--configurations ...]
                                  [--movie_dir DIR] [--log bench-quality.log]

The defaults are the length labs record: realistic preset, 256x256 x 48,000
frames (26 minutes at 31 Hz), 2 seeds, the four configurations of
``DEFAULT_CONFIGURATIONS``; about 30 minutes on 2 busy cores (27 measured,
docs/benchmarks_bins.rst). 256x256 keeps that affordable (the frame's area scales the cell counts; see
``slapp.demo.synthetic_movie.preset_spec``). ``--nframes 5000 --size 512`` is
the older short-movie table, where 115-frame bins leave only 43 binned frames.

For every preset and seed, one synthetic movie (``slapp.demo.synthetic_movie``)
is written with its ground truth and segmented by:

``segment``
    Suite2P exactly as the segment step runs it
    (``slapp.segmentation.suite2p_runner``), with segment's default options
    (``slapp.segmentation.settings``) and the manifest's default bins,
    ``nbinned = nframes // DEFAULT_BIN_SIZE`` (115); no database.
``segment, 22-frame bins``
    The same on the manifest's finer documented choice, ``--bin_size 22``
    (``DECAY_BIN_SIZE``).
``segment, spatial_scale 0`` / ``segment, threshold 1.0`` (not run unless named)
    segment on its default bins with one default put back to Suite2P's own
    value (spatial_scale 0 is also the original jobs'), to see what each is worth.
``plain run_s2p, original jobs``
    Suite2P's defaults, threshold_scaling 0.75, nbins ``nframes // 115``.
``plain run_s2p, Suite2P defaults``
    Suite2P's defaults (threshold_scaling 1.0, bins of round(tau * fs) frames).

All runs use the movie's 31 Hz, the CPU, no registration (see
:mod:`slapp.evaluation.plain_suite2p`). Each configuration runs in a fresh
process, which reports Suite2P's wall time and its own peak resident memory
(``ru_maxrss``: Python, PyTorch and Suite2P together, what a job's memory
limit sees). Each run's ROIs are matched one to one with the ground-truth cells
at IoU >= 0.5 (:mod:`slapp.evaluation.matching`): over all ROIs (what the
labelers are shown) and over the ROIs Suite2P's classifier calls cells. The
table gives the mean and the range over seeds. Wall times depend on the
machine's load, which is printed alongside.
"""
import argparse
import json
import logging
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np

from slapp.data_selection.segmentation_manifest import DECAY_BIN_SIZE, DEFAULT_BIN_SIZE
from slapp.demo.synthetic_movie import (PRESETS, ground_truth_path, preset_spec,
                                        read_ground_truth, write_movie)
from slapp.evaluation.plain_suite2p import (ORIGINAL_BIN_SIZE, run_baseline,
                                            run_segment_settings, score)
from slapp.segmentation.settings import Suite2pOptions

# segment's runs: (changes to segment's default options, frames per detection bin).
SEGMENT_VARIANTS = {
    "segment": ({}, DEFAULT_BIN_SIZE),
    "segment, spatial_scale 0": ({"spatial_scale": 0}, DEFAULT_BIN_SIZE),
    "segment, threshold 1.0": ({"threshold_scaling": 1.0}, DEFAULT_BIN_SIZE),
    "segment, 22-frame bins": ({}, DECAY_BIN_SIZE),
}
BASELINE_CONFIGURATIONS = {"plain run_s2p, original jobs": "original_jobs",
                           "plain run_s2p, Suite2P defaults": "suite2p_defaults"}
CONFIGURATIONS = (*SEGMENT_VARIANTS, *BASELINE_CONFIGURATIONS)
DEFAULT_CONFIGURATIONS = ("segment", "segment, 22-frame bins", *BASELINE_CONFIGURATIONS)


def segment_movie(configuration: str, movie_path: Path, nframes: int, scratch: Path):
    """Run one configuration on one movie; return its Segmentation."""
    if configuration in BASELINE_CONFIGURATIONS:
        return run_baseline(BASELINE_CONFIGURATIONS[configuration], movie_path,
                            max(1, nframes // ORIGINAL_BIN_SIZE), scratch)
    changes, bin_size = SEGMENT_VARIANTS[configuration]
    options = replace(Suite2pOptions.defaults(), **changes)
    return run_segment_settings(options, movie_path, max(1, nframes // bin_size), scratch)


def _segment_in_this_process(configuration: str, movie_path: Path, nframes: int,
                             scratch: Path):
    """Run in a fresh process: the Segmentation and this process's peak RSS in bytes."""
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("suite2p").setLevel(logging.ERROR)
    segmentation = segment_movie(configuration, movie_path, nframes, scratch)
    return segmentation, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def segment_in_fresh_process(configuration: str, movie_path: Path, nframes: int,
                             scratch: Path):
    """:func:`segment_movie` in a new (spawned) process, so that its peak RSS is its own."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_segment_in_this_process, configuration, movie_path, nframes,
                           scratch).result()


class Report:
    """Print lines and append them to a log file."""

    def __init__(self, log_path: Path | None):
        self.log = open(log_path, "a") if log_path else None

    def __call__(self, line: str = "") -> None:
        print(line, flush=True)
        if self.log:
            self.log.write(line + "\n")
            self.log.flush()


def summary_table(results: dict, report: Report) -> None:
    """Print mean [min-max] over seeds of each preset and configuration."""
    report(f"\n{'preset':10} {'configuration':32} {'ROIs':>5} {'cells':>5} "
           f"{'P all':>6} {'R all':>6} {'F1 all':>16}   {'P cell':>6} {'R cell':>6} "
           f"{'F1 cells':>16} {'wall s':>6} {'RSS GB':>6}")
    for (preset, configuration), rows in results.items():
        def column(name):
            values = np.array([row[name] for row in rows])
            return values.mean(), values.min(), values.max()

        def spread(name):
            mean, low, high = column(name)
            return f"{mean:.2f} [{low:.2f}-{high:.2f}]"

        report(f"{preset:10} {configuration:32} {column('n_rois')[0]:5.0f} "
               f"{column('n_cells')[0]:5.0f} {column('precision_all')[0]:6.2f} "
               f"{column('recall_all')[0]:6.2f} {spread('f1_all'):>16}   "
               f"{column('precision_cells')[0]:6.2f} {column('recall_cells')[0]:6.2f} "
               f"{spread('f1_cells'):>16} {column('seconds')[0]:6.0f} "
               f"{column('peak_rss_bytes')[0] / 1e9:6.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=256, help="frame height and width")
    parser.add_argument("--nframes", type=int, default=48000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--presets", nargs="+", default=["realistic"],
                        choices=PRESETS)
    parser.add_argument("--configurations", nargs="+", default=list(DEFAULT_CONFIGURATIONS),
                        choices=CONFIGURATIONS)
    parser.add_argument("--movie_dir", type=Path,
                        help="write the movies here and keep them (a movie already there "
                             "with its ground truth is reused); a temporary directory, "
                             "emptied as it goes, when not given")
    parser.add_argument("--results", type=Path,
                        help="append each run's scores as a JSON line to this file, and "
                             "summarise every run in it of this movie size: seeds run by "
                             "separate invocations make one table")
    parser.add_argument("--log", type=Path, help="also append the output to this file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("suite2p").setLevel(logging.ERROR)
    report = Report(args.log)
    started = time.perf_counter()
    report(f"\n# bench_quality {time.strftime('%Y-%m-%d %H:%M:%S %Z')}: {args.size}x{args.size} "
           f"x {args.nframes} frames, seeds {args.seeds}, presets {args.presets}, "
           f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    results = {}
    size_key = [args.size, args.size, args.nframes]
    if args.results and args.results.exists():
        for line in args.results.read_text().splitlines():
            row = json.loads(line)
            if row["movie"] == size_key:
                results.setdefault((row["preset"], row["configuration"]), []).append(row)
    with tempfile.TemporaryDirectory(prefix="bench_quality_") as work:
        work = Path(work)
        for preset in args.presets:
            for seed in args.seeds:
                spec = preset_spec(preset, args.nframes, args.size, args.size, seed)
                movie_path = ((args.movie_dir or work)
                              / f"{preset}_{args.size}x{args.size}x{args.nframes}_{seed}.h5")
                movie_path.parent.mkdir(parents=True, exist_ok=True)
                generation_started = time.perf_counter()
                reused = (args.movie_dir is not None and movie_path.exists()
                          and ground_truth_path(movie_path).exists())
                if not reused:
                    write_movie(movie_path, spec)
                truth = read_ground_truth(ground_truth_path(movie_path))
                report(f"{preset} seed {seed}: {spec.ncells} somata, {len(truth)} fire "
                       f"(ground truth), {spec.out_of_focus_cells} out-of-focus, "
                       f"{spec.dendrites} dendrites; "
                       + (f"reused {movie_path}" if reused else
                          f"written in {time.perf_counter() - generation_started:.1f} s"))
                for configuration in args.configurations:
                    segmentation, peak_rss = segment_in_fresh_process(
                        configuration, movie_path, args.nframes, work)
                    scores = score(segmentation, truth)
                    row = {"seed": seed, "n_rois": len(segmentation.masks),
                           "n_cells": int(segmentation.is_cell.sum()),
                           "precision_all": scores.all_rois.precision,
                           "recall_all": scores.all_rois.recall,
                           "f1_all": scores.all_rois.f1,
                           "precision_cells": scores.cells.precision,
                           "recall_cells": scores.cells.recall,
                           "f1_cells": scores.cells.f1, "seconds": segmentation.seconds,
                           "peak_rss_bytes": peak_rss}
                    results.setdefault((preset, configuration), []).append(row)
                    if args.results:
                        with open(args.results, "a") as stored:
                            stored.write(json.dumps({"movie": size_key, "preset": preset,
                                                     "seed": seed,
                                                     "configuration": configuration,
                                                     **row}) + "\n")
                    report(f"  {configuration:32} {row['n_rois']:4d} ROIs "
                           f"{row['n_cells']:4d} cells | all: P {row['precision_all']:.2f} "
                           f"R {row['recall_all']:.2f} F1 {row['f1_all']:.2f} | cells: "
                           f"P {row['precision_cells']:.2f} R {row['recall_cells']:.2f} "
                           f"F1 {row['f1_cells']:.2f} | {row['seconds']:.0f} s, peak RSS "
                           f"{peak_rss / 1e9:.2f} GB, load {os.getloadavg()[0]:.1f}")
                if args.movie_dir is None:
                    movie_path.unlink()
                    ground_truth_path(movie_path).unlink()
    summary_table(results, report)
    seeds = sorted({row["seed"] for rows in results.values() for row in rows})
    report(f"(IoU >= 0.5, one to one; mean [min-max] over seeds {seeds}; "
           f"wall s: Suite2P seconds; RSS GB: peak resident memory of the configuration's "
           f"process, 1e9 bytes; total {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    sys.exit(main())
