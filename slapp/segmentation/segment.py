"""Step 3: segment one manifest entry with Suite2P into ``segmentation_runs`` and ``rois``.

::

    python -m slapp.segmentation.segment --manifest_json manifest.json --manifest_index 7

One call is one task of a PBS / SLURM job array (or of the local runner): the
index picks the manifest entry. The command

1. reads and checks the entry and its movie (a bad one fails at once, with one
   line on stderr, and writes nothing);
2. asks the labeling database whether this code version already segmented the
   experiment, and if so stops with status ``skipped`` (exit 0), so that
   resubmitting a whole array is cheap and safe;
3. runs Suite2P on the movie in a temporary directory (on ``--tmp_dir``), holding
   no database connection during the minutes that takes;
4. renders the PNG of ROI outlines, then writes the run row and every ROI in
   one transaction (``--overwrite`` replaces an existing run in that same
   transaction), and only then puts the PNG in place;
5. deletes Suite2P's files, also on failure, unless ``--keep_suite2p_results``.

The outcome is printed as one line on stdout and, with ``--output_json``,
written as ``{"experiment_id", "segmentation_run_id", "status", "n_rois",
"plot_path"}``. Credentials come from ``LABELING_USER`` / ``LABELING_PASSWORD``
(and ``LABELING_HOST``, ``LABELING_PORT``, ``LABELING_DATABASE``).
"""
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Sequence

import argschema
import marshmallow as mm

from slapp.data_selection.segmentation_manifest import load_manifest
from slapp.data_selection.utils import MOVIE_DATASET, FindFileException
from slapp.data_selection.utils import movie_shape as read_movie_shape
from slapp.errors import SlappError
from slapp.segmentation import store
from slapp.segmentation.plot import render_roi_plot
from slapp.segmentation.rois import rois_from_suite2p
from slapp.segmentation.settings import Suite2pOptions, Suite2pSettingsSchema
from slapp.segmentation.suite2p_runner import Suite2pOutput, suite2p_outputs
from slapp.utils.cli import expand_bare_flags, run_main
from slapp.utils.code_version import code_version
from slapp.utils.files import write_bytes_atomically, write_json_atomically
from slapp.utils.query_utils import DbConnection, get_db_credentials, label_defaults

logger = logging.getLogger("slapp.segmentation.segment")

PLOT_DIRECTORY_NAME = "segmentation_plots"
# Boolean options that may be given as bare flags (``--overwrite``) as well as
# argschema's ``--overwrite True``.
BARE_FLAGS = ("--overwrite", "--keep_suite2p_results")


class SegmentationException(SlappError):
    """A manifest entry cannot be segmented: bad index, movie, directory or setting."""


class SegmentSchema(argschema.ArgSchema, Suite2pSettingsSchema):
    """Segment one entry of a segmentation manifest with Suite2P (options: see the base)."""

    manifest_json = argschema.fields.InputFile(
        required=True,
        metadata={"description": "the segmentation manifest (written by "
                                 "slapp.data_selection.segmentation_manifest)"})
    manifest_index = mm.fields.Int(
        required=True, validate=mm.validate.Range(min=0),
        metadata={"description": "which entry to segment, counted from 0: the job "
                                 "array's task id (PBS_ARRAYID, SLURM_ARRAY_TASK_ID)"})
    tmp_dir = mm.fields.Str(
        dump_default=None, allow_none=True,
        metadata={"description": "directory for Suite2P's binary copy of the movie and "
                                 "its other intermediate files (about 2 bytes per pixel "
                                 "per frame: 26 GB for a 512x512 movie of 50,000 frames). "
                                 "Default: the system's temporary directory ($TMPDIR), "
                                 "which batch systems usually point at the node's fast "
                                 "local scratch"})
    overwrite = mm.fields.Bool(
        dump_default=False,
        metadata={"description": "replace a run this code version already stored for the "
                                 "experiment (in one transaction). Off by default so that "
                                 "resubmitting an array only runs what is missing"})
    keep_suite2p_results = mm.fields.Bool(
        dump_default=False,
        metadata={"description": "keep Suite2P's intermediate files (their directory is "
                                 "logged) to inspect them. Off by default: they are as "
                                 "large as the movie and everything needed is stored"})
    plot_dir = mm.fields.Str(
        dump_default=None, allow_none=True,
        metadata={"description": "where <experiment_id>.png (ROI outlines over the mean "
                                 "image) is written. Default: segmentation_plots beside "
                                 "the manifest, so the plots of one manifest stay together"})


class SegmentOutputSchema(mm.Schema):
    """The outcome of segmenting one entry."""

    experiment_id = mm.fields.Int(required=True)
    segmentation_run_id = mm.fields.Int(
        required=True, metadata={"description": "segmentation_runs.id of the stored run"})
    status = mm.fields.Str(
        required=True, validate=mm.validate.OneOf([store.SEGMENTED, store.SKIPPED]),
        metadata={"description": "segmented: written now; skipped: this code version "
                                 "had already stored it"})
    n_rois = mm.fields.Int(required=True)
    plot_path = mm.fields.Str(
        allow_none=True, metadata={"description": "the PNG of ROI outlines, if it exists"})


def select_entry(manifest: list[dict], index: int) -> dict:
    """Return entry ``index`` of a manifest, or explain why there is none.

    Raises
    ------
    SegmentationException
        If ``index`` is out of range.
    """
    if not 0 <= index < len(manifest):
        count = f"{len(manifest)} entr{'y' if len(manifest) == 1 else 'ies'}"
        raise SegmentationException(f"manifest_index {index} is out of range: the manifest "
                                    f"has {count}")
    return manifest[index]


def movie_shape(path: Path) -> tuple[int, int, int]:
    """Read ``(nframes, height, width)`` of an HDF5 movie without reading its frames.

    Raises
    ------
    SegmentationException
        If the file is missing, a directory, not HDF5, or has no 3-D ``data``
        dataset with at least one frame.
    """
    try:
        shape = read_movie_shape(path)
    except FindFileException as error:
        raise SegmentationException(str(error)) from error
    if min(shape) < 1:
        raise SegmentationException(f"movie {path}: dataset '{MOVIE_DATASET}' has shape "
                                    f"{shape}, not (frames, height, width)")
    return shape


def _check_writable_directory(path: Path, purpose: str, create: bool) -> None:
    """Fail early if ``path`` is not (or, with ``create``, cannot become) a writable directory."""
    existing = path
    while create and not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.exists():
        raise SegmentationException(f"{purpose} {path} does not exist")
    if not existing.is_dir():
        raise SegmentationException(f"{purpose} {path} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise SegmentationException(f"{purpose} {path} is not writable")


def _outcome_line(result: dict, kept_directory: Path | None) -> str:
    if result["status"] == store.SKIPPED:
        line = (f"experiment {result['experiment_id']}: skipped, already segmented by code "
                f"version {code_version()} as run {result['segmentation_run_id']} "
                f"({result['n_rois']} ROIs)")
    else:
        line = (f"experiment {result['experiment_id']}: segmented as run "
                f"{result['segmentation_run_id']} with {result['n_rois']} ROIs; plot "
                f"{result['plot_path']}")
    return line + (f"; Suite2P's files kept in {kept_directory}" if kept_directory else "")


class Segment(argschema.ArgSchemaParser):
    """``python -m slapp.segmentation.segment``: see the module docstring."""

    default_schema = SegmentSchema
    default_output_schema = SegmentOutputSchema

    def _suite2p_options(self) -> Suite2pOptions:
        return Suite2pOptions.from_args(self.args)

    def _set_log_levels(self) -> None:
        level = logging.getLevelName(self.args["log_level"])
        for name in ("slapp", "suite2p"):
            logging.getLogger(name).setLevel(level)

    def run(self, label_dbconn: DbConnection) -> dict:
        """Segment the entry, store the run, print and return the outcome.

        Parameters
        ----------
        label_dbconn : DbConnection
            The labeling database. It is closed while Suite2P runs and opened
            again (lazily) for the write.

        Returns
        -------
        dict
            As :class:`SegmentOutputSchema` describes.
        """
        started = time.perf_counter()
        self._set_log_levels()
        manifest_path = Path(self.args["manifest_json"]).resolve()
        entry = select_entry(load_manifest(manifest_path), self.args["manifest_index"])
        experiment_id, movie_path = entry["experiment_id"], Path(entry["input_video"])
        nframes, height, width = movie_shape(movie_path)
        tmp_dir = Path(self.args["tmp_dir"]) if self.args["tmp_dir"] else None
        if tmp_dir is not None:
            _check_writable_directory(tmp_dir, "tmp_dir", create=False)
        plot_dir = Path(self.args["plot_dir"] or manifest_path.parent / PLOT_DIRECTORY_NAME)
        _check_writable_directory(plot_dir, "plot_dir", create=True)
        plot_path = plot_dir.resolve() / f"{experiment_id}.png"
        version = code_version()
        logger.info("experiment %d: %s (%d frames of %dx%d), nbinned %d, code version %s",
                    experiment_id, movie_path, nframes, height, width, entry["nbinned"],
                    version)

        done = None if self.args["overwrite"] else store.find_run(
            label_dbconn, experiment_id, version)
        label_dbconn.close()  # no connection is held during the minutes Suite2P runs
        kept_directory = None
        if done is not None:
            result = self._result(experiment_id, done, plot_path)
        else:
            result, kept_directory = self._segment(label_dbconn, entry, movie_path, tmp_dir,
                                                   plot_path, version, started)
        print(_outcome_line(result, kept_directory))
        if self.args.get("output_json"):
            write_json_atomically(self.args["output_json"], self.get_output_json(result))
        return result

    def _segment(self, label_dbconn: DbConnection, entry: dict, movie_path: Path,
                 tmp_dir: Path | None, plot_path: Path, version: str,
                 started: float) -> tuple[dict, Path | None]:
        """Run Suite2P, store the run, place the plot; return the result and kept files."""
        experiment_id = entry["experiment_id"]
        with suite2p_outputs(movie_path, entry["nbinned"], self._suite2p_options(), tmp_dir,
                             self.args["keep_suite2p_results"]) as output:
            png = self._render_plot(experiment_id, output)
            run = {
                "ophys_experiment_id": experiment_id,
                "ophys_segmentation_commit_hash": version,
                "source_video_path": str(movie_path),
                "video_shape": list(output.video_shape),
                "nframes": output.nframes,
                "nbinned": entry["nbinned"],
                "suite2p_version": output.suite2p_version,
                "suite2p_settings": output.settings,
                "suite2p_seconds": output.seconds,
                "total_seconds": time.perf_counter() - started,
                "hostname": socket.gethostname(),
            }
            rois = rois_from_suite2p(output.stat, output.traces, output.neuropil_traces,
                                     output.iscell, output.video_shape)
            stored = store.write_run(label_dbconn, run, rois,
                                     overwrite=self.args["overwrite"])
        if stored.status == store.SEGMENTED:
            plot_path.parent.mkdir(parents=True, exist_ok=True)
            write_bytes_atomically(plot_path, png)
        return self._result(experiment_id, stored, plot_path), output.kept_directory

    @staticmethod
    def _render_plot(experiment_id: int, output: Suite2pOutput) -> bytes:
        masks = [(roi["ypix"], roi["xpix"]) for roi in output.stat]
        is_cell = [bool(row[0] > 0.5) for row in output.iscell]
        title = (f"experiment {experiment_id}: {output.n_rois} ROIs, "
                 f"{sum(is_cell)} classified as cells")
        return render_roi_plot(output.mean_image, masks, is_cell, title)

    @staticmethod
    def _result(experiment_id: int, stored: store.StoredRun, plot_path: Path) -> dict:
        return {"experiment_id": experiment_id,
                "segmentation_run_id": stored.segmentation_run_id,
                "status": stored.status,
                "n_rois": stored.n_rois,
                "plot_path": str(plot_path) if plot_path.exists() else None}


def _exit_on_sigterm(signum, frame):
    """Turn SIGTERM (scancel, qdel, a job's time limit) into SystemExit, so that the
    open transaction rolls back and Suite2P's files are deleted on the way out."""
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the command line, then segment the entry against the labeling database."""
    arguments = expand_bare_flags(sys.argv[1:] if argv is None else argv, BARE_FLAGS)
    segment = Segment(args=arguments)
    with DbConnection(**get_db_credentials(**label_defaults)) as dbconn:
        segment.run(dbconn)


if __name__ == "__main__":  # pragma: no cover
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    sys.exit(run_main(main, "segment"))
