"""Benchmark: segment's peak memory and scratch against the binned movie's size, and the fit.

::

    python bench/bench_memory.py --movie 512x512x8000 --bin_sizes 115 22 \\
        [--tau 0.7] [--seed 0] --movie_dir DIR [--results memory_points.jsonl]
    python bench/bench_memory.py --movie 512x512x8000 --bin_sizes 2 --tau 0.05 ...

For each ``--bin_sizes`` value, segment's Suite2P run (``suite2p_outputs`` with
segment's default options, frames streamed from the HDF5 movie, as a segment
task runs it) segments one realistic synthetic movie (``slapp.demo.synthetic_movie``)
of the given ``HEIGHTxWIDTHxFRAMES`` with ``nbinned = nframes // bin_size``,
each time in a fresh process that reports its peak resident memory
(``ru_maxrss``: Python, PyTorch, Suite2P and the run, what a job's memory limit
sees), the bytes Suite2P wrote to scratch, its wall time and ROIs.

Suite2P never bins fewer than ``round(tau * fs)`` frames together (22 at
segment's default tau 0.7 s), so bins shorter than that need a smaller
``--tau`` (0.05 s: 2 frames); the point records the bins Suite2P allocated
(``memory_model.detection_bins``), and the fit uses them.

Each point is appended as one JSON line to ``--results``; then every point in
that file is printed and the model of :mod:`slapp.segmentation.memory_model`
is fitted to them by least squares::

    peak = a + b * bins * height * width * 4 bytes

with its residuals and its predictions for a 512x512 x 100,000-frame movie.
``--quality_results`` adds the runs of ``bench_quality.py --results`` that are
segment's (``segment`` and ``segment, 22-frame bins``: the same run, its peak
RSS measured the same way, no scratch figure) as points.
Run points one at a time (one invocation per point, e.g. under ``flock``) on a
busy machine; a 512x512 point with 4,000 bins peaks near 20 GB. A movie of
fewer frames with the same bin count stands in for a long one: the streamed run
holds only the binned movie and blocks of frames, not the whole movie.
"""
import argparse
import json
import multiprocessing
import os
import resource
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np

from slapp.data_selection.segmentation_manifest import DECAY_BIN_SIZE, DEFAULT_BIN_SIZE
from slapp.demo.synthetic_movie import ground_truth_path, preset_spec, write_movie
from slapp.segmentation import memory_model

LONG_SESSION = (100_000, 512, 512)
# bench_quality.py's configurations that are segment's run, and their bins.
QUALITY_SEGMENT_RUNS = {"segment": DEFAULT_BIN_SIZE, "segment, 22-frame bins": DECAY_BIN_SIZE}


def _segment_in_this_process(movie_path: Path, nbinned: int, tau: float,
                             scratch: Path) -> dict:
    """Run in a fresh process: segment's Suite2P run and this process's peak RSS."""
    import logging

    from slapp.segmentation.settings import Suite2pOptions
    from slapp.segmentation.suite2p_runner import suite2p_outputs

    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("suite2p").setLevel(logging.ERROR)
    options = replace(Suite2pOptions.defaults(), tau=tau)
    with suite2p_outputs(movie_path, nbinned, options, scratch) as output:
        result = {"seconds": output.seconds, "stage_seconds": output.stage_seconds,
                  "scratch_bytes": output.scratch_bytes, "n_rois": output.n_rois}
    result["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return result


def measure_point(movie_path: Path, nbinned: int, tau: float, scratch: Path) -> dict:
    """One segment run in a new (spawned) process, so that its peak RSS is its own."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_segment_in_this_process, movie_path, nbinned, tau,
                           scratch).result()


def quality_points(path: Path) -> list[dict]:
    """segment's runs in a bench_quality.py results file, as points."""
    points = []
    for line in path.read_text().splitlines():
        row = json.loads(line)
        if row["configuration"] not in QUALITY_SEGMENT_RUNS:
            continue
        height, width, nframes = row["movie"]
        bin_size = QUALITY_SEGMENT_RUNS[row["configuration"]]
        nbinned = max(1, nframes // bin_size)
        bins = memory_model.detection_bins(nframes, nbinned)
        points.append({"height": height, "width": width, "nframes": nframes,
                       "seed": row["seed"], "bin_size": bin_size, "nbinned": nbinned,
                       "tau": 0.7, "bins": bins,
                       "binned_bytes": memory_model.binned_movie_bytes(bins, height, width),
                       "load": float("nan"), "seconds": row["seconds"], "scratch_bytes": None,
                       "n_rois": row["n_rois"], "peak_rss_bytes": row["peak_rss_bytes"],
                       "source": "bench_quality.py"})
    return points


def fit(points: list[dict]) -> tuple[float, float]:
    """Least-squares ``peak = a + b * binned bytes`` over the points; returns (a, b)."""
    binned = np.array([point["binned_bytes"] for point in points], float)
    peak = np.array([point["peak_rss_bytes"] for point in points], float)
    design = np.stack([np.ones_like(binned), binned], axis=1)
    (base, slope), *_ = np.linalg.lstsq(design, peak, rcond=None)
    return float(base), float(slope)


def _megabytes(nbytes: int | None) -> str:
    return "-" if nbytes is None else f"{nbytes / 1e6:.1f}"


def print_points_and_fit(points: list[dict]) -> None:
    print(f"\n{'movie':>17} {'bin':>4} {'bins':>5} {'binned GB':>9} {'peak GB':>8} "
          f"{'scratch MB':>10} {'ROIs':>5} {'wall s':>6}  load")
    for point in sorted(points, key=lambda point: point["binned_bytes"]):
        movie = f"{point['height']}x{point['width']}x{point['nframes']}"
        movie += " (q)" if point.get("source") else ""
        print(f"{movie:>17} {point['bin_size']:4d} {point['bins']:5d} "
              f"{point['binned_bytes'] / 1e9:9.2f} {point['peak_rss_bytes'] / 1e9:8.2f} "
              f"{_megabytes(point['scratch_bytes']):>10} {point['n_rois']:5d} "
              f"{point['seconds']:6.0f}  {point['load']:.1f}")
    if len({point["binned_bytes"] for point in points}) < 2:
        print("(at least two binned sizes are needed for a fit)")
        return
    base, slope = fit(points)
    print(f"\nfit over {len(points)} points: peak = {base / 1e9:.2f} GB + {slope:.2f} x "
          f"binned bytes (bins x height x width x 4); BASE_BYTES = {base:.4g}, "
          f"BYTES_PER_BINNED_BYTE = {slope:.3f}")
    for point in points:
        predicted = base + slope * point["binned_bytes"]
        print(f"  {point['height']}x{point['width']}x{point['nframes']} bin {point['bin_size']}: "
              f"measured {point['peak_rss_bytes'] / 1e9:.2f} GB, fitted {predicted / 1e9:.2f} GB "
              f"({(point['peak_rss_bytes'] - predicted) / 1e9:+.2f})")
    nframes, height, width = LONG_SESSION
    for bin_size in (DEFAULT_BIN_SIZE, DECAY_BIN_SIZE):
        nbinned = int(nframes / bin_size)
        bins = memory_model.detection_bins(nframes, nbinned)
        predicted = base + slope * memory_model.binned_movie_bytes(bins, height, width)
        model = memory_model.predicted_peak_rss_bytes(nframes, nbinned, height, width)
        print(f"{height}x{width} x {nframes:,} frames, bin_size {bin_size} ({bins} bins): "
              f"this fit {predicted / 1e9:.1f} GB; slapp's memory_model {model / 1e9:.1f} GB, "
              f"request {memory_model.memory_request(model)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--movie", default="512x512x8000",
                        help="HEIGHTxWIDTHxFRAMES of the realistic synthetic movie")
    parser.add_argument("--bin_sizes", type=int, nargs="+", default=[DEFAULT_BIN_SIZE])
    parser.add_argument("--tau", type=float, default=0.7,
                        help="Suite2P's tau: bins shorter than round(tau * 31) frames "
                             "need a smaller one")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--movie_dir", type=Path, required=True,
                        help="where the movie is written and kept (reused when there, "
                             "named as bench_quality.py names its movies) and Suite2P's "
                             "scratch goes")
    parser.add_argument("--results", type=Path, default=Path("memory_points.jsonl"),
                        help="JSON lines of every point measured so far; new points are "
                             "appended, and the fit is over all of them")
    parser.add_argument("--quality_results", type=Path,
                        help="bench_quality.py --results file whose segment runs join the "
                             "fit (marked (q))")
    parser.add_argument("--fit_only", action="store_true",
                        help="measure nothing: print the points in --results and the fit")
    args = parser.parse_args()
    points = ([json.loads(line) for line in args.results.read_text().splitlines() if line]
              if args.results.exists() else [])
    if not args.fit_only:
        height, width, nframes = (int(size) for size in args.movie.split("x"))
        movie_path = args.movie_dir / f"realistic_{height}x{width}x{nframes}_{args.seed}.h5"
        args.movie_dir.mkdir(parents=True, exist_ok=True)
        if not (movie_path.exists() and ground_truth_path(movie_path).exists()):
            started = time.perf_counter()
            write_movie(movie_path, preset_spec("realistic", nframes, height, width, args.seed))
            print(f"wrote {movie_path} in {time.perf_counter() - started:.0f} s", flush=True)
        for bin_size in args.bin_sizes:
            nbinned = nframes // bin_size
            bins = memory_model.detection_bins(nframes, nbinned, args.tau)
            result = measure_point(movie_path, nbinned, args.tau, args.movie_dir)
            point = {"height": height, "width": width, "nframes": nframes, "seed": args.seed,
                     "bin_size": bin_size, "nbinned": nbinned, "tau": args.tau, "bins": bins,
                     "binned_bytes": memory_model.binned_movie_bytes(bins, height, width),
                     "load": os.getloadavg()[0], "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                     **result}
            print(f"{args.movie} bin {bin_size}, tau {args.tau} ({bins} bins): peak "
                  f"{point['peak_rss_bytes'] / 1e9:.2f} GB, scratch "
                  f"{point['scratch_bytes'] / 1e6:.1f} MB, {point['n_rois']} ROIs, "
                  f"{point['seconds']:.0f} s, load {point['load']:.1f}", flush=True)
            with open(args.results, "a") as results:
                results.write(json.dumps(point) + "\n")
            points.append(point)
    if args.quality_results and args.quality_results.exists():
        points += quality_points(args.quality_results)
    print_points_and_fit(points)


if __name__ == "__main__":
    sys.exit(main())
