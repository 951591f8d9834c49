"""Step 3: segment one manifest entry with Suite2P into ``segmentation_runs`` and ``rois``.

::

    python -m slapp.segmentation.segment --manifest_json manifest.json --manifest_index 7

One call is one task of a PBS / SLURM job array (or of the local runner): the
index picks the manifest entry. A run's *identity* is (experiment, code
version, parameters digest); the digest covers every Suite2P option, the
entry's ``nbinned`` and the Suite2P version. The command

1. reads and checks the entry, its settings and its movie (a bad one fails at
   once, with one line on stderr, and writes no run; so does a movie of fewer
   than 50 frames or fewer than the entry's ``nbinned``, before Suite2P is
   loaded, and a float movie holding NaN or infinity, as its frames are read),
   and takes the movie's
   fingerprint (size, mtime, shape, dtype, a hash of sampled frames). An index
   beyond the end of the manifest (an array submitted wider than it) prints
   one line, ``manifest_index N: nothing to do ...``, and exits 0 writing
   nothing; a command line the schema refuses (an option typo) is one error
   line and no ``segmentation_failures`` row, since it is no entry's failure,
   and so is a ``--classifier_path`` file that is missing or that Suite2P
   cannot load (checked before the movie is read);
2. looks for the current run of the same identity (:mod:`slapp.db.runs`).
   Found, with the same movie (or one fingerprinted before fingerprints
   existed): it stops with status ``skipped`` (exit 0), so resubmitting a
   whole array is cheap and safe. A movie whose only change is its
   modification time (``touch``, ``rsync`` without ``-t``) is the same movie:
   one INFO line says so and the run's stored fingerprint takes the new time.
   Found, but the movie's bytes changed: it fails with one line naming what
   changed, unless ``--overwrite``. Not found (a new experiment, or any
   parameter different): it segments, beside any run of other parameters;
3. creates ``--tmp_dir`` if needed and removes the scratch directories that
   killed tasks of this user left there (this is done before step 2, so
   also by a task that skips), checks the free space against what Suite2P
   will write, and runs Suite2P in a directory named by the job and task
   ids, holding no database connection during the minutes that takes;
4. renders the PNG of ROI outlines (a plot that fails is logged, the run is
   still stored), then writes the run row and every ROI in one transaction,
   with the manifest's ``experiment_selection_id`` and the manifest's
   absolute path as its provenance (``--overwrite`` supersedes the current
   run of the same identity in that same transaction: the old run and its
   ROIs stay, with ``superseded_by`` naming the new run), retrying the whole
   write for up to ``--write_retry_seconds`` while the database is
   unreachable, and only then puts the PNG in place as
   ``<experiment_id>_<run id>.png``;
5. deletes Suite2P's files, also on failure, unless ``--keep_suite2p_results``.

The outcome is printed as one line on stdout and, with ``--output_json``,
written as ``{"experiment_id", "segmentation_run_id", "status", "n_rois",
"plot_path"}``. A task that fails writes one ``segmentation_failures`` row
(see :mod:`slapp.segmentation.failures`; not for an error that names no
entry, such as an unreadable manifest, an index beyond it, an option typo
or an unwritable ``--output_json``) and, when stderr is not a terminal
(a job's log), the full traceback before the one error line; bad input stays
one line. Credentials come from ``LABELING_USER`` / ``LABELING_PASSWORD`` (and
``LABELING_HOST``, ``LABELING_PORT``, ``LABELING_DATABASE``).
"""
import logging
import os
import resource
import signal
import socket
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Sequence

import marshmallow as mm

from slapp.contracts.manifest import PLOT_DIRECTORY_NAME, load_manifest_document
from slapp.contracts.movie import FindFileException, movie_shape
from slapp.db.runs import check_selection_holds
from slapp.errors import SlappError
from slapp.labeling.classifier_file import suite2p_classification_settings
from slapp.segmentation import failures, scratch, store
from slapp.segmentation.fingerprint import (fingerprint_changes, movie_fingerprint,
                                            only_mtime_moved)
from slapp.segmentation.plot import render_roi_plot
from slapp.segmentation.rois import rois_from_suite2p
from slapp.segmentation.scheduler import current_task
from slapp.segmentation.settings import Suite2pOptions, parameters_digest
from slapp.segmentation.suite2p_runner import (MIN_FRAMES, Suite2pOutput,
                                               estimated_scratch_bytes, suite2p_outputs,
                                               suite2p_version)
from slapp.segmentation.task_options import SegmentSchema
from slapp.utils.cli import UsageError, one_line, run_main
from slapp.utils.code_version import code_label, code_version
from slapp.utils.files import write_bytes_atomically, write_json_atomically
from slapp.utils.query_utils import DbConnection, labeling_connection
from slapp.utils.schema import ArgSchemaParser, StrictInt

logger = logging.getLogger("slapp.segmentation.segment")

class SegmentationException(SlappError):
    """A manifest entry cannot be segmented: bad index, movie, directory or setting."""


class MovieChangedException(SegmentationException):
    """The movie differs from the one the stored run of the same identity was made from."""


class SegmentOutputSchema(mm.Schema):
    """The outcome of segmenting one entry."""

    experiment_id = StrictInt(required=True)
    segmentation_run_id = StrictInt(
        required=True, metadata={"description": "segmentation_runs.id of the stored run"})
    status = mm.fields.Str(
        required=True, validate=mm.validate.OneOf([store.SEGMENTED, store.SKIPPED]),
        metadata={"description": "segmented: written now; skipped: this code version "
                                 "had already stored it with the same parameters"})
    n_rois = StrictInt(required=True)
    plot_path = mm.fields.Str(
        allow_none=True, metadata={"description": "the PNG of ROI outlines, if it exists"})


def select_entry(manifest: list[dict], index: int) -> dict | None:
    """Return entry ``index`` of a manifest, or None when the manifest is shorter.

    An array submitted wider than its manifest (``--array=0-99`` for 60
    entries) runs tasks with nothing to do: they are not failures of any entry.
    """
    return manifest[index] if 0 <= index < len(manifest) else None


def nothing_to_do_line(manifest_path: Path, manifest: list[dict], index: int) -> str:
    """The one line a task beyond the end of its manifest prints."""
    count = f"{len(manifest)} entr{'y' if len(manifest) == 1 else 'ies'}"
    return (f"manifest_index {index}: nothing to do, manifest {manifest_path} has {count} "
            f"(indices 0-{len(manifest) - 1})")


def plot_file(plot_dir: Path, experiment_id: int, segmentation_run_id: int) -> Path:
    """``<plot_dir>/<experiment_id>_<run id>.png``: one plot per run, never replaced."""
    return plot_dir / f"{experiment_id}_{segmentation_run_id}.png"


def check_frame_count(movie_path: Path, nframes: int, nbinned: int) -> None:
    """Refuse a movie too short for Suite2P, or shorter than the entry's ``nbinned``.

    Raises
    ------
    SegmentationException
        Naming the frame count and what it falls short of.
    """
    if nframes < MIN_FRAMES:
        raise SegmentationException(f"movie {movie_path} has {nframes} frame"
                                    f"{'s' if nframes > 1 else ''}: Suite2P needs at least "
                                    f"{MIN_FRAMES}")
    if nframes < nbinned:
        raise SegmentationException(
            f"movie {movie_path} has {nframes} frames, fewer than the entry's nbinned "
            f"{nbinned}: the manifest was not made from this movie; make it again")


class OutputJsonException(SlappError):
    """``--output_json`` could not be written (the run itself is stored)."""


def belongs_to_the_entry(error: Exception) -> bool:
    """Whether a refused command line is a failure of its manifest entry.

    An option typo, and an ``--output_json`` that cannot be written, are the
    submitter's to fix, whatever the entry: printed (and in the job's log),
    not stored as the entry's failure.
    """
    if isinstance(error, (UsageError, OutputJsonException)):
        return False
    return not (isinstance(error, mm.ValidationError) and isinstance(error.messages, dict)
                and set(error.messages) <= {"output_json"})


def check_unchanged_movie(movie_path: Path, done: store.StoredRun, current: dict) -> bool:
    """Refuse to call a run done when its movie changed since it was stored.

    A run stored before fingerprints existed has an empty one: it cannot be
    compared, and counts as done (as it did before). A movie whose only
    difference is its modification time is the same movie.

    Returns
    -------
    bool
        True when only the modification time moved (the stored fingerprint
        should follow it).

    Raises
    ------
    MovieChangedException
        Naming what changed and how to replace the run.
    """
    if not done.movie_fingerprint:
        return False
    if only_mtime_moved(done.movie_fingerprint, current):
        return True
    changes = fingerprint_changes(done.movie_fingerprint, current)
    if changes:
        raise MovieChangedException(
            f"movie {movie_path} changed since run {done.segmentation_run_id} was made from "
            f"it ({'; '.join(changes)}); rerun with --overwrite to replace that run")


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
        plot = result["plot_path"] or "not rendered (see the log)"
        line = (f"experiment {result['experiment_id']}: segmented as run "
                f"{result['segmentation_run_id']} with {result['n_rois']} ROIs; plot {plot}")
    return line + (f"; Suite2P's files kept in {kept_directory}" if kept_directory else "")


def peak_rss_bytes() -> int:
    """This process's peak resident memory so far (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Segment(ArgSchemaParser):
    """``python -m slapp.segmentation.segment``: see the module docstring."""

    default_schema = SegmentSchema
    default_output_schema = SegmentOutputSchema

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # What is known about the task so far, for its failure row.
        self.known: dict = {"experiment_id": None, "parameters_digest": None}

    def _set_log_levels(self) -> None:
        level = logging.getLevelName(self.args["log_level"])
        for name in ("slapp", "suite2p"):
            logging.getLogger(name).setLevel(level)

    def run(self, label_dbconn: DbConnection) -> dict:
        """Skip, refuse or segment the entry (see the module docstring); print the outcome.

        Parameters
        ----------
        label_dbconn : DbConnection
            The labeling database. It is closed while Suite2P runs and opened
            again (lazily) for the write.

        Returns
        -------
        dict or None
            As :class:`SegmentOutputSchema` describes; None (and no
            ``--output_json``) when the index is beyond the manifest's end.

        Raises
        ------
        MovieChangedException
            If the run of this identity was made from a movie that changed since,
            and ``--overwrite`` is not given.
        """
        started = time.perf_counter()
        self._set_log_levels()
        manifest_path = Path(self.args["manifest_json"]).resolve()
        document = load_manifest_document(manifest_path)
        entry = select_entry(document["manifest"], self.args["manifest_index"])
        if entry is None:
            print(nothing_to_do_line(manifest_path, document["manifest"],
                                     self.args["manifest_index"]))
            return None
        options = Suite2pOptions.from_args(self.args)
        if options.classifier_path is not None:  # as an option typo: no entry's failure
            suite2p_classification_settings(options.classifier_path)
        experiment_id, movie_path = entry["experiment_id"], Path(entry["input_video"])
        self.known["experiment_id"] = experiment_id
        digest = parameters_digest(options, entry["nbinned"], suite2p_version())
        self.known["parameters_digest"] = digest
        try:
            shape = movie_shape(movie_path)
            fingerprint = movie_fingerprint(movie_path)
        except FindFileException as error:
            raise SegmentationException(str(error)) from error
        tmp_dir = scratch.prepared_tmp_dir(self.args["tmp_dir"])
        # Every task, also one that skips, clears what killed tasks left on this node.
        scratch.remove_stale_directories(tmp_dir, current_task())
        plot_dir = Path(self.args["plot_dir"] or manifest_path.parent / PLOT_DIRECTORY_NAME)
        _check_writable_directory(plot_dir, "plot_dir", create=True)
        plot_dir = plot_dir.resolve()
        selection_id = document["experiment_selection_id"]
        if selection_id is not None:  # a manifest naming another database's selection
            check_selection_holds(label_dbconn, selection_id, experiment_id)
        check_frame_count(movie_path, shape[0], entry["nbinned"])
        version = code_version()
        logger.info("experiment %d: %s (%d frames of %dx%d), nbinned %d, code version %s, "
                    "parameters %s", experiment_id, movie_path, *shape, entry["nbinned"],
                    version, digest)

        done = None if self.args["overwrite"] else store.find_run(
            label_dbconn, experiment_id, version, digest)
        label_dbconn.close()  # no connection is held during the minutes Suite2P runs
        kept_directory = None
        if done is not None:
            if check_unchanged_movie(movie_path, done, fingerprint):
                logger.info("movie %s: only its modification time moved since run %d (%s); "
                            "its size and sampled frames are unchanged, so it is the same "
                            "movie and the run's fingerprint now records the new time",
                            movie_path, done.segmentation_run_id,
                            fingerprint_changes(done.movie_fingerprint, fingerprint)[0])
                store.follow_moved_movie(label_dbconn, done.segmentation_run_id,
                                         fingerprint["mtime_ns"])
            result = self._result(experiment_id, done, plot_dir)
        else:
            run = {"ophys_experiment_id": experiment_id,
                   "ophys_segmentation_commit_hash": version, "code_label": code_label(),
                   "parameters_digest": digest, "movie_fingerprint": fingerprint,
                   "source_video_path": str(movie_path), "nbinned": entry["nbinned"],
                   "experiment_selection_id": selection_id,
                   "manifest_path": str(manifest_path)}
            result, kept_directory = self._segment(label_dbconn, run, options, shape,
                                                   tmp_dir, plot_dir, started)
        print(_outcome_line(result, kept_directory))
        if self.args.get("output_json"):
            try:
                write_json_atomically(self.args["output_json"], self.get_output_json(result))
            except OSError as error:
                raise OutputJsonException(f"cannot write output_json: {error}") from error
        return result

    def _segment(self, label_dbconn: DbConnection, run: dict, options: Suite2pOptions,
                 shape: tuple[int, int, int], tmp_dir: Path, plot_dir: Path,
                 started: float) -> tuple[dict, Path | None]:
        """Run Suite2P in scratch, store the run, place the plot; return result and kept files."""
        experiment_id, movie_path = run["ophys_experiment_id"], Path(run["source_video_path"])
        task = current_task()
        keep = self.args["keep_suite2p_results"]
        needed = estimated_scratch_bytes(shape, options.do_registration)
        free = scratch.check_free_space(tmp_dir, needed)
        logger.info("scratch %s: the run needs about %d bytes, %d free", tmp_dir, needed, free)
        # Kept files stay where a user looks for them (directly on tmp_dir), out of
        # the reach of stale-directory removal.
        work_dirs = nullcontext(tmp_dir) if keep else scratch.task_directory(
            tmp_dir, task, self.args["manifest_index"])
        with work_dirs as work_dir, \
                suite2p_outputs(movie_path, run["nbinned"], options, work_dir, keep) as output:
            png = self._render_plot(experiment_id, output)
            run.update({
                "video_shape": list(output.video_shape),
                "nframes": output.nframes,
                "suite2p_version": output.suite2p_version,
                "suite2p_settings": output.settings,
                "frame_source": output.frame_source,
                "suite2p_seconds": output.seconds,
                "stage_seconds": dict(output.stage_seconds),
                "peak_rss_bytes": peak_rss_bytes(),
                "scratch_bytes": output.scratch_bytes,
                "hostname": socket.gethostname(),
                "scheduler_job_id": task.job_id,
                "scheduler_task_id": task.task_id,
                "total_seconds": time.perf_counter() - started,
            })

            def rois():
                return rois_from_suite2p(output.stat, output.traces, output.neuropil_traces,
                                         output.iscell, output.video_shape)
            stored = store.write_run(label_dbconn, run, rois, overwrite=self.args["overwrite"],
                                     retry_seconds=self.args["write_retry_seconds"],
                                     images=output.images)
        if stored.status == store.SEGMENTED and png is not None:
            plot_dir.mkdir(parents=True, exist_ok=True)
            write_bytes_atomically(plot_file(plot_dir, experiment_id,
                                             stored.segmentation_run_id), png)
        return self._result(experiment_id, stored, plot_dir), output.kept_directory

    @staticmethod
    def _render_plot(experiment_id: int, output: Suite2pOutput) -> bytes | None:
        """The PNG of ROI outlines, or None (logged) when it cannot be rendered."""
        masks = [(roi["ypix"], roi["xpix"]) for roi in output.stat]
        is_cell = [bool(row[0] > 0.5) for row in output.iscell]
        title = (f"experiment {experiment_id}: {output.n_rois} ROIs, "
                 f"{sum(is_cell)} classified as cells")
        try:
            return render_roi_plot(output.mean_image, masks, is_cell, title)
        except Exception:  # noqa: BLE001 - a plot is a convenience; the run is what matters
            logger.exception("experiment %d: the plot of ROI outlines could not be rendered; "
                             "the run is stored without it", experiment_id)
            return None

    @staticmethod
    def _result(experiment_id: int, stored: store.StoredRun, plot_dir: Path) -> dict:
        plot_path = plot_file(plot_dir, experiment_id, stored.segmentation_run_id)
        return {"experiment_id": experiment_id,
                "segmentation_run_id": stored.segmentation_run_id,
                "status": stored.status,
                "n_rois": stored.n_rois,
                "plot_path": str(plot_path) if plot_path.exists() else None}

    def record_failure(self, error: Exception, duration_seconds: float) -> None:
        """Write the ``segmentation_failures`` row of ``error`` (or log it); never raises."""
        failure_class = failures.classify_exception(error)
        failure = failures.failure_row(
            manifest_path=Path(self.args["manifest_json"]).resolve(),
            manifest_index=self.args["manifest_index"], failure_class=failure_class,
            message=one_line(error), experiment_id=self.known["experiment_id"],
            parameters_digest=self.known["parameters_digest"],
            traceback_text=failures.format_traceback(error), exit_status=1,
            duration_seconds=duration_seconds)
        failures.record(failure)


def _exit_on_sigterm(signum, frame):
    """Turn SIGTERM (scancel, qdel, a job's time limit) into SystemExit, so that the
    open transaction rolls back and Suite2P's files are deleted on the way out.
    Further SIGTERMs (a scheduler and the job script both send one) are ignored, so
    that they cannot interrupt that cleanup."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the command line, segment the entry, and record a failure if it fails.

    A failure by an exception is recorded here (a refused command line is not:
    it belongs to no entry); a task stopped by a signal is recorded by whatever
    started it (job script, ``run_local``), which sees how it ended.
    """
    started = time.perf_counter()
    arguments = list(sys.argv[1:] if argv is None else argv)
    # A refused command line (an option typo) fails every task alike: it is printed
    # (the task's log), not recorded as a failure of the entry.
    segment = Segment(args=arguments)
    try:
        with labeling_connection(interactive=False) as dbconn:
            segment.run(dbconn)
    except Exception as error:
        if (failures.classify_exception(error) != failures.BAD_INPUT
                and not sys.stderr.isatty() and not os.environ.get("SLAPP_TRACEBACK")):
            sys.stderr.write(failures.format_traceback(error))
            sys.stderr.flush()
        if belongs_to_the_entry(error) and segment.known["experiment_id"] is not None:
            segment.record_failure(error, time.perf_counter() - started)
        raise


if __name__ == "__main__":  # pragma: no cover
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    sys.exit(run_main(main, "segment"))
