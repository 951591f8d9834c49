"""Stream a movie once, in blocks of binned frames; compute a run's images from it.

The frames are read with :class:`slapp.segmentation.h5_frames.H5Frames`, so they
are in Suite2P's int16 units (a uint16 movie halved, as Suite2P converts it): the
units of the mean image ``segment`` stores, which the artifacts' intensity
cut-offs come from. Blocks hold a few hundred frames, never the movie.
"""
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from slapp.segmentation.h5_frames import H5Frames
from slapp.segmentation.images import ARTIFACTS, RunImages

# Frames per block read: ~130 MB of a 512 x 512 movie in int16, a few Suite2P batches.
BLOCK_FRAMES = 256
# The neighbours of the correlation image, each used in both directions (8 in all).
_OFFSETS = ((0, 1), (1, 0), (1, 1), (1, -1))


@dataclass(frozen=True)
class Block:
    """Frames ``first_frame ...`` of the movie (int16) and their means over bins of
    ``bin_frames`` (float32), the first of which is bin ``first_bin``."""

    first_frame: int
    frames: np.ndarray
    first_bin: int
    binned: np.ndarray


def stream_blocks(path: Path, bin_frames: int, bins_per_step: int = 1) -> Iterator[Block]:
    """Read the movie's whole bins of ``bin_frames`` frames in order, block by block.

    Parameters
    ----------
    path : Path
        The HDF5 movie (dataset ``data``).
    bin_frames : int
        Frames averaged into one binned frame; frames after the last whole bin are
        not read.
    bins_per_step : int
        Each block but the last holds a multiple of this many bins (so that bins
        of bins, e.g. the full-field video's, never straddle blocks).

    Yields
    ------
    Block
    """
    with H5Frames(path, batch_frames=BLOCK_FRAMES) as frames:
        nbins = frames.shape[0] // bin_frames
        step_bins = bins_per_step * max(1, math.ceil(BLOCK_FRAMES / (bin_frames * bins_per_step)))
        for first_bin in range(0, nbins, step_bins):
            last_bin = min(first_bin + step_bins, nbins)
            block = frames[first_bin * bin_frames:last_bin * bin_frames]
            binned = block.reshape(last_bin - first_bin, bin_frames, *block.shape[1:]).mean(
                axis=1, dtype=np.float32)
            yield Block(first_bin * bin_frames, block, first_bin, binned)


class _CorrelationSums:
    """Running sums for the local correlation image: each pixel's correlation over
    time with its 8 neighbours, averaged."""

    def __init__(self, shape: tuple[int, int]):
        self.count = 0
        self.total = np.zeros(shape, np.float64)
        self.squares = np.zeros(shape, np.float64)
        self.products = [np.zeros(shape, np.float64) for _ in _OFFSETS]

    def add(self, frames: np.ndarray) -> None:
        frames = frames.astype(np.float32, copy=False)
        self.count += len(frames)
        self.total += frames.sum(axis=0, dtype=np.float64)
        self.squares += np.einsum("tij,tij->ij", frames, frames, dtype=np.float64)
        for products, (dy, dx) in zip(self.products, _OFFSETS):
            here, there = _overlap(frames, dy, dx)
            _overlap(products, dy, dx)[0][...] += np.einsum("tij,tij->ij", here, there,
                                                            dtype=np.float64)

    def image(self) -> np.ndarray:
        mean = self.total / max(self.count, 1)
        sd = np.sqrt(np.maximum(self.squares / max(self.count, 1) - mean ** 2, 0))
        summed = np.zeros_like(mean)
        neighbours = np.zeros_like(mean)
        for products, (dy, dx) in zip(self.products, _OFFSETS):
            product, _ = _overlap(products, dy, dx)
            mean_here, mean_there = _overlap(mean, dy, dx)
            sd_here, sd_there = _overlap(sd, dy, dx)
            denominator = sd_here * sd_there
            correlation = np.divide(product / max(self.count, 1) - mean_here * mean_there,
                                    denominator, out=np.zeros_like(denominator),
                                    where=denominator > 0)
            for part in _overlap(summed, dy, dx):
                part += correlation
            for part in _overlap(neighbours, dy, dx):
                part += 1
        return (summed / np.maximum(neighbours, 1)).astype(np.float32)


def _overlap(array: np.ndarray, dy: int, dx: int) -> tuple[np.ndarray, np.ndarray]:
    """Views of the pixels p and p + (dy, dx) over the last two axes, where both exist."""
    height, width = array.shape[-2:]
    rows_here, rows_there = slice(0, height - dy), slice(dy, height)
    if dx >= 0:
        cols_here, cols_there = slice(0, width - dx), slice(dx, width)
    else:
        cols_here, cols_there = slice(-dx, width), slice(0, width + dx)
    return array[..., rows_here, cols_here], array[..., rows_there, cols_there]


def compute_images(path: Path, bin_frames: int) -> RunImages:
    """A run's three images from its movie, streamed once.

    The mean image is Suite2P's (``meanImg`` over every frame, in its int16
    units); the max projection is the maximum over frames binned by
    ``bin_frames``, the correlation image each pixel's mean correlation with its
    8 neighbours over those binned frames: the kind of images Suite2P computes
    from its binned movie, not the same numbers.

    Parameters
    ----------
    path : Path
        The HDF5 movie.
    bin_frames : int
        Frames per bin for the max projection and the correlation image.

    Returns
    -------
    RunImages
        ``computed_by = 'artifacts'``.
    """
    with H5Frames(path, batch_frames=BLOCK_FRAMES) as frames:
        shape = frames.shape[1:]
        bin_frames = max(1, min(bin_frames, frames.shape[0]))
        nbins = frames.shape[0] // bin_frames
        step_bins = max(1, BLOCK_FRAMES // bin_frames)
        maximum = np.full(shape, -np.inf, np.float32)
        sums = _CorrelationSums(shape)
        for first_bin in range(0, nbins, step_bins):
            last_bin = min(first_bin + step_bins, nbins)
            block = frames[first_bin * bin_frames:last_bin * bin_frames]
            binned = block.reshape(last_bin - first_bin, bin_frames, *shape).mean(
                axis=1, dtype=np.float32)
            np.maximum(maximum, binned.max(axis=0), out=maximum)
            sums.add(binned)
        mean = frames.mean_image()
    return RunImages(mean_image=mean, max_projection=maximum,
                     correlation_image=sums.image(), computed_by=ARTIFACTS)
