"""Benchmark: where Suite2P's extraction stage spends its time as segment runs it.

::

    python bench/bench_extraction.py --movie_dir DIR [--size 256] [--nframes 48000]
                                     [--seed 0] [--bin_size 115]

1. segment's Suite2P run (``suite2p_outputs``, segment's default options, frames
   streamed from the HDF5 movie) on the realistic synthetic movie
   ``realistic_{size}x{size}x{nframes}_{seed}.h5`` in ``--movie_dir`` (written
   there when missing, named as ``bench_quality.py`` names its movies), with its
   stage timings; its ROIs and traces are kept.
2. Suite2P's extraction (``extraction_wrapper``: masks, then ``extract_traces``
   over ``H5Frames``) is run again on those ROIs, step by step with a clock on
   each step:

   * masks: ``create_cell_pix`` (the percentile filter of the weight map),
     ``create_cell_mask`` for every ROI, ``create_neuropil_masks``;
   * the sparse mask matrices (Python lists of every mask pixel, COO, CSC);
   * per batch of frames: reading the HDF5 chunks, the int16 conversion,
     waiting for the read-ahead, ``torch.from_numpy(...).float()``, the neuropil
     product ``data @ nmasks / npix``, the cell product ``data @ cmasks``, and
     the copies of the results into ``F`` / ``Fneu``.

   The step-by-step traces must equal the run's ``F.npy`` and ``Fneu.npy`` bit
   for bit (printed): the steps are the same computation, only clocked.
3. One read of the movie through ``H5Frames`` (the blocks extraction reads,
   from the page cache after the run) for comparison.

The machine's load average is printed: it is shared, and times grow with it.
"""
import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from slapp.data_selection.segmentation_manifest import DEFAULT_BIN_SIZE
from slapp.demo.synthetic_movie import ground_truth_path, preset_spec, write_movie
from slapp.segmentation.h5_frames import H5Frames, suite2p_int16
from slapp.segmentation.settings import Suite2pOptions
from slapp.segmentation.suite2p_runner import suite2p_outputs


class Clock:
    """Seconds per named step, added up."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def add(self, name: str, started: float) -> float:
        now = time.perf_counter()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - started
        return now


def clocked_masks(stat, height: int, width: int, settings: dict, clock: Clock):
    """``create_masks`` of Suite2P 1.1, one clock per step."""
    from suite2p.extraction.masks import (create_cell_mask, create_cell_pix,
                                          create_neuropil_masks)

    started = time.perf_counter()
    cell_pix = create_cell_pix(stat, Ly=height, Lx=width,
                               lam_percentile=settings["lam_percentile"])
    started = clock.add("masks: cell pixels (percentile filter)", started)
    cell_masks = [create_cell_mask(roi, Ly=height, Lx=width,
                                   allow_overlap=settings["allow_overlap"]) for roi in stat]
    started = clock.add("masks: cell masks", started)
    neuropil_masks = create_neuropil_masks(
        ypixs=[roi["ypix"] for roi in stat], xpixs=[roi["xpix"] for roi in stat],
        cell_pix=cell_pix, inner_neuropil_radius=settings["inner_neuropil_radius"],
        min_neuropil_pixels=settings["min_neuropil_pixels"],
        circular=settings["circular_neuropil"])
    clock.add("masks: neuropil masks", started)
    return cell_masks, neuropil_masks


def clocked_traces(frames: H5Frames, cell_masks, neuropil_masks, batch_size: int,
                   clock: Clock):
    """``extract_traces`` of Suite2P 1.1 on the CPU, one clock per step."""
    import torch

    nframes, height, width = frames.shape
    ncells = len(cell_masks)
    started = time.perf_counter()
    npix_neuropil = torch.Tensor([len(mask) for mask in neuropil_masks])
    columns = [pixel for mask in neuropil_masks for pixel in mask]
    rows = [k for k in range(ncells) for pixel in neuropil_masks[k]]
    indices = torch.Tensor([columns, rows])
    nmasks = torch.sparse_coo_tensor(indices, torch.ones(len(rows)),
                                     size=(height * width, ncells)).to_sparse_csc()
    columns = [pixel for mask in cell_masks for pixel in mask[0]]
    rows = [k for k in range(ncells) for pixel in cell_masks[k][0]]
    weights = torch.Tensor([weight for mask in cell_masks for weight in mask[1]])
    indices = torch.Tensor([columns, rows])
    cmasks = torch.sparse_coo_tensor(indices, weights,
                                     size=(height * width, ncells)).to_sparse_csc()
    started = clock.add("sparse mask matrices", started)
    traces = np.zeros((ncells, nframes), np.float32)
    neuropil = np.zeros((ncells, nframes), np.float32)
    batch_size = min(int(batch_size), 1000)
    read_before, wait_before = frames.read_seconds, frames.wait_seconds
    for start in range(0, nframes, batch_size):
        stop = min(start + batch_size, nframes)
        started = time.perf_counter()
        block = frames[start:stop]
        started = clock.add("frames: H5Frames[start:stop] (wait for read-ahead, copy)", started)
        data = torch.from_numpy(block).reshape(-1, height * width).float()
        started = clock.add("compute: int16 -> float32", started)
        neuropil_batch = (data @ nmasks) / npix_neuropil
        started = clock.add("compute: neuropil product data @ nmasks / npix", started)
        neuropil[:, start:stop] = neuropil_batch.T.cpu().numpy()
        started = clock.add("compute: copies into F, Fneu", started)
        trace_batch = data @ cmasks
        started = clock.add("compute: cell product data @ cmasks", started)
        traces[:, start:stop] = trace_batch.T.cpu().numpy()
        clock.add("compute: copies into F, Fneu", started)
    clock.seconds["(read-ahead thread: HDF5 reads + conversion)"] = (
        frames.read_seconds - read_before)
    clock.seconds["(of which the main thread waited)"] = frames.wait_seconds - wait_before
    return traces, neuropil


def read_once(movie_path: Path, batch_size: int) -> dict:
    """Read every block as extraction does, without computing: HDF5 read and conversion."""
    with H5Frames(movie_path, batch_frames=batch_size, read_ahead=False) as frames:
        nframes = frames.shape[0]
        started = time.perf_counter()
        for start in range(0, nframes, batch_size):
            frames[start:min(start + batch_size, nframes)]
        total = time.perf_counter() - started
    # the conversion alone, on one block's worth of uint16 frames, times the blocks
    import h5py
    with h5py.File(movie_path, "r") as movie:
        raw = movie["data"][:batch_size]
    started = time.perf_counter()
    for _ in range(-(-nframes // batch_size)):
        suite2p_int16(raw.copy())
    conversion = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(-(-nframes // batch_size)):
        raw.copy()
    conversion -= time.perf_counter() - started
    return {"read": total, "conversion": max(conversion, 0.0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--movie_dir", type=Path, required=True)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--nframes", type=int, default=48000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bin_size", type=int, default=DEFAULT_BIN_SIZE)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("suite2p").setLevel(logging.ERROR)
    import torch
    from suite2p import default_settings

    movie_path = (args.movie_dir
                  / f"realistic_{args.size}x{args.size}x{args.nframes}_{args.seed}.h5")
    if not (movie_path.exists() and ground_truth_path(movie_path).exists()):
        args.movie_dir.mkdir(parents=True, exist_ok=True)
        write_movie(movie_path, preset_spec("realistic", args.nframes, args.size, args.size,
                                            args.seed))
    nbinned = args.nframes // args.bin_size
    print(f"# bench_extraction {time.strftime('%Y-%m-%d %H:%M:%S %Z')}: {movie_path.name}, "
          f"{nbinned} bins; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs, "
          f"torch threads {torch.get_num_threads()}", flush=True)
    with tempfile.TemporaryDirectory(dir=args.movie_dir) as scratch, \
            suite2p_outputs(movie_path, nbinned, Suite2pOptions.defaults(), Path(scratch)
                            ) as output:
        stages = ", ".join(f"{stage} {seconds:.1f} s"
                           for stage, seconds in output.stage_seconds.items())
        print(f"segment's Suite2P run: {output.n_rois} ROIs, {output.seconds:.1f} s "
              f"({stages})", flush=True)
        settings = default_settings()["extraction"]
        settings.update(output.settings["settings"]["extraction"])
        batch_size = output.settings["db"]["batch_size"]
        frames_batch = settings["batch_size"]
        stat = output.stat
        height, width = output.video_shape

        clock = Clock()
        cell_masks, neuropil_masks = clocked_masks(stat, height, width, settings, clock)
        with H5Frames(movie_path, batch_frames=batch_size) as frames:
            traces, neuropil = clocked_traces(frames, cell_masks, neuropil_masks,
                                              frames_batch, clock)
        identical = (np.array_equal(traces, output.traces)
                     and np.array_equal(neuropil, output.neuropil_traces))
        stepped = sum(seconds for name, seconds in clock.seconds.items()
                      if not name.startswith("("))
        print(f"\nstep by step: {stepped:.1f} s, traces "
              f"{'bit-identical to' if identical else 'DIFFERENT from'} the run's "
              f"({len(stat)} ROIs, {sum(len(mask) for mask in neuropil_masks) / len(stat):.0f} "
              f"neuropil and {sum(len(mask[0]) for mask in cell_masks) / len(stat):.0f} cell "
              f"pixels per ROI, batches of {min(frames_batch, 1000)} frames)")
        for name, seconds in clock.seconds.items():
            share = "" if name.startswith("(") else f" {100 * seconds / stepped:5.1f} %"
            print(f"  {name:60} {seconds:7.1f} s{share}")
    once = read_once(movie_path, batch_size)
    print(f"\none read of the movie through H5Frames (page cache), no read-ahead: "
          f"{once['read']:.1f} s, of which int16 conversion {once['conversion']:.1f} s; "
          f"load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    sys.exit(main())
