"""Benchmark: how well segment's Suite2P settings find the cells, against plain Suite2P.

::

    python bench/bench_quality.py [--size 512] [--nframes 5000] [--seeds 0 1]
                                  [--presets realistic] [--log bench-quality.log]

The defaults (realistic preset, 512x512 x 5,000 frames, 2 seeds) take about
15-20 minutes on 2 busy cores; ``--presets easy`` shows every configuration
finding nearly every cell of the easy movies.

For every preset and seed, one synthetic movie (``slapp.demo.synthetic_movie``)
is written with its ground truth and segmented by:

``segment``
    Suite2P exactly as the segment step runs it
    (``slapp.segmentation.suite2p_runner``), with segment's default options
    (``slapp.segmentation.settings``) and the manifest's default bins,
    ``nbinned = nframes // DEFAULT_BIN_SIZE``; no database.
``segment, spatial_scale 0`` / ``segment, threshold 1.0``
    The same with one default put back to Suite2P's own value (spatial_scale 0
    is also the original jobs'), to see what each choice is worth.
``segment, 115-frame bins`` (not run unless named in ``--configurations``)
    segment's defaults on the original jobs' bins, what ``--bin_size 115`` gives.
``plain run_s2p, original jobs``
    Suite2P's defaults, threshold_scaling 0.75, nbins ``nframes // 115``.
``plain run_s2p, Suite2P defaults``
    Suite2P's defaults (threshold_scaling 1.0, bins of round(tau * fs) frames).

All runs use the movie's 31 Hz, the CPU, no registration (see
:mod:`slapp.evaluation.plain_suite2p`). Each run's ROIs are matched one to one
with the ground-truth cells at IoU >= 0.5 (:mod:`slapp.evaluation.matching`):
over all ROIs (what the labelers are shown) and over the ROIs Suite2P's
classifier calls cells. The table gives the mean and the range over seeds.
Suite2P's run time is printed too; it depends on the machine's load, which is
printed alongside.
"""
import argparse
import logging
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from slapp.data_selection.segmentation_manifest import DEFAULT_BIN_SIZE
from slapp.demo.synthetic_movie import PRESETS, preset_spec, read_ground_truth, write_movie
from slapp.evaluation.plain_suite2p import (ORIGINAL_BIN_SIZE, run_baseline,
                                            run_segment_settings, score)
from slapp.segmentation.settings import Suite2pOptions

# segment's runs: (changes to segment's default options, frames per detection bin).
SEGMENT_VARIANTS = {
    "segment": ({}, DEFAULT_BIN_SIZE),
    "segment, spatial_scale 0": ({"spatial_scale": 0}, DEFAULT_BIN_SIZE),
    "segment, threshold 1.0": ({"threshold_scaling": 1.0}, DEFAULT_BIN_SIZE),
    "segment, 115-frame bins": ({}, ORIGINAL_BIN_SIZE),
}
BASELINE_CONFIGURATIONS = {"plain run_s2p, original jobs": "original_jobs",
                           "plain run_s2p, Suite2P defaults": "suite2p_defaults"}
CONFIGURATIONS = (*SEGMENT_VARIANTS, *BASELINE_CONFIGURATIONS)
DEFAULT_CONFIGURATIONS = ("segment", "segment, spatial_scale 0", "segment, threshold 1.0",
                          *BASELINE_CONFIGURATIONS)


def segment_movie(configuration: str, movie_path: Path, nframes: int, scratch: Path):
    """Run one configuration on one movie; return its Segmentation."""
    if configuration in BASELINE_CONFIGURATIONS:
        return run_baseline(BASELINE_CONFIGURATIONS[configuration], movie_path,
                            max(1, nframes // ORIGINAL_BIN_SIZE), scratch)
    changes, bin_size = SEGMENT_VARIANTS[configuration]
    options = replace(Suite2pOptions.defaults(), **changes)
    return run_segment_settings(options, movie_path, max(1, nframes // bin_size), scratch)


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
           f"{'F1 cells':>16} {'s':>5}")
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
               f"{spread('f1_cells'):>16} {column('seconds')[0]:5.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=512, help="frame height and width")
    parser.add_argument("--nframes", type=int, default=5000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--presets", nargs="+", default=["realistic"],
                        choices=PRESETS)
    parser.add_argument("--configurations", nargs="+", default=list(DEFAULT_CONFIGURATIONS),
                        choices=CONFIGURATIONS)
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
    with tempfile.TemporaryDirectory(prefix="bench_quality_") as work:
        work = Path(work)
        for preset in args.presets:
            for seed in args.seeds:
                spec = preset_spec(preset, args.nframes, args.size, args.size, seed)
                movie_path = work / f"{preset}_{seed}" / "movie.h5"
                movie_path.parent.mkdir()
                generation_started = time.perf_counter()
                truth = read_ground_truth(write_movie(movie_path, spec))
                report(f"{preset} seed {seed}: {spec.ncells} somata, {len(truth)} fire "
                       f"(ground truth), {spec.out_of_focus_cells} out-of-focus, "
                       f"{spec.dendrites} dendrites; written in "
                       f"{time.perf_counter() - generation_started:.1f} s")
                for configuration in args.configurations:
                    segmentation = segment_movie(configuration, movie_path, args.nframes, work)
                    scores = score(segmentation, truth)
                    row = {"n_rois": len(segmentation.masks),
                           "n_cells": int(segmentation.is_cell.sum()),
                           "precision_all": scores.all_rois.precision,
                           "recall_all": scores.all_rois.recall,
                           "f1_all": scores.all_rois.f1,
                           "precision_cells": scores.cells.precision,
                           "recall_cells": scores.cells.recall,
                           "f1_cells": scores.cells.f1, "seconds": segmentation.seconds}
                    results.setdefault((preset, configuration), []).append(row)
                    report(f"  {configuration:32} {row['n_rois']:4d} ROIs "
                           f"{row['n_cells']:4d} cells | all: P {row['precision_all']:.2f} "
                           f"R {row['recall_all']:.2f} F1 {row['f1_all']:.2f} | cells: "
                           f"P {row['precision_cells']:.2f} R {row['recall_cells']:.2f} "
                           f"F1 {row['f1_cells']:.2f} | {row['seconds']:.0f} s, load "
                           f"{os.getloadavg()[0]:.1f}")
                movie_path.unlink()
    summary_table(results, report)
    report(f"(IoU >= 0.5, one to one; mean [min-max] over {len(args.seeds)} seeds; "
           f"s: Suite2P seconds; total {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    sys.exit(main())
