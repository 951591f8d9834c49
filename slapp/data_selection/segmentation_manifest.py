"""Step 2: turn a stored experiment selection into the manifest that the array job segments.

::

    python -m slapp.data_selection.segmentation_manifest \\
        --experiment_selection_id 5 --output_json ./example_output.json --log_level INFO

The ``sub_selected_ids`` of one ``experiment_selection`` row are looked up in
LIMS with one query (frame count and storage directory). Each experiment's
movie is then found on disk and its ``data`` dataset's shape read (never its
frames); these look-ups run concurrently, because on a cluster they are
directory listings on a network file system. Every experiment is checked
before anything is written: if any is bad, all problems are reported together
and no manifest is written. The manifest lists the experiments in the order of
``sub_selected_ids``; entry ``i`` is array task ``i`` of the segmentation job.
"""
import json
import os
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import argschema
import marshmallow as mm
from tqdm import tqdm

from slapp.data_selection.utils import FindFileException, find_full_movie, movie_shape
from slapp.errors import SlappError
from slapp.utils.cli import one_line, run_main
from slapp.utils.files import write_json_atomically
from slapp.utils.query_utils import (DbConnection, get_db_credentials, label_defaults,
                                     lims_defaults)

# Messages of this many bad experiments go into the final error line; every
# one of them is also logged on its own line before it.
_PROBLEMS_IN_SUMMARY = 20


class SegmentationManifestException(SlappError):
    """The manifest cannot be built or read: a bad selection, experiment or file."""


class SegmentationManifestSchema(argschema.ArgSchema):
    """Build the segmentation manifest of one stored experiment selection."""

    experiment_selection_id = mm.fields.Int(
        required=True, validate=mm.validate.Range(min=1),
        metadata={"description": "id of the experiment_selection row (written by select_data) "
                                 "whose sub_selected_ids are segmented"})
    bin_size = mm.fields.Int(
        dump_default=115, validate=mm.validate.Range(min=1),
        metadata={"description": "frames averaged into one binned frame for Suite2P's "
                                 "detection; nbinned = int(nframes / bin_size). 115 is "
                                 "what the original jobs used: a ~50,000-frame 31 Hz "
                                 "movie becomes ~420 binned frames, enough to find cells "
                                 "and small enough to fit in a task's memory"})
    discovery_workers = mm.fields.Int(
        dump_default=16, validate=mm.validate.Range(min=1),
        metadata={"description": "movie look-ups run at once. They wait on directory "
                                 "listings of a network file system, not on the CPU, so "
                                 "threads overlap the waits; 16 hides most latency "
                                 "without flooding the file server. 1 searches one "
                                 "directory after another"})
    output_json = argschema.fields.OutputFile(
        required=True,
        metadata={"description": "where the manifest is written (replaced atomically, "
                                 "and only when every experiment checks out)"})


def _require_absolute_path(path: str) -> None:
    if not os.path.isabs(path):
        raise mm.ValidationError(f"{path!r} is not an absolute path")


# The manifest schemas are plain marshmallow schemas: argschema's DefaultSchema
# fills defaults by writing into the document it loads and fails with a
# TypeError on an entry that is not an object, and argschema's LogLevel field
# sets the root logger's level whenever it is loaded, which a reader of the
# manifest must not suffer. The default "ERROR" is filled on load and on dump.
class SegmentationManifestEntrySchema(mm.Schema):
    """One experiment to segment: one task of the segmentation array job."""

    log_level = mm.fields.Str(
        load_default="ERROR", dump_default="ERROR",
        validate=mm.validate.OneOf(argschema.fields.LogLevel.options),
        metadata={"description": "log level of this entry's segmentation task; ERROR keeps "
                                 "the logs of hundreds of array tasks short"})
    experiment_id = mm.fields.Int(
        required=True, metadata={"description": "LIMS ophys_experiments.id"})
    nbinned = mm.fields.Int(
        required=True, validate=mm.validate.Range(min=1),
        metadata={"description": "binned frames Suite2P detects ROIs on "
                                 "(int(nframes / bin_size))"})
    input_video = mm.fields.Str(
        required=True,
        validate=_require_absolute_path,
        metadata={"description": "absolute, resolved path of the motion-corrected HDF5 "
                                 "movie (dataset 'data': frames x height x width)"})


class SegmentationManifestOutputSchema(mm.Schema):
    """The segmentation manifest: ``{"manifest": [entry, ...]}``."""

    manifest = mm.fields.Nested(
        SegmentationManifestEntrySchema, many=True, required=True,
        validate=mm.validate.Length(min=1, error="lists no experiment"),
        metadata={"description": "one entry per experiment, in the order of the "
                                 "selection's sub_selected_ids"})


def load_manifest(path: str | Path) -> list[dict]:
    """Read and validate a segmentation manifest.

    Parameters
    ----------
    path : str or Path
        A JSON file written by this module.

    Returns
    -------
    list of dict
        The entries in order, each with ``log_level``, ``experiment_id``,
        ``nbinned`` and ``input_video``.

    Raises
    ------
    SegmentationManifestException
        If the file cannot be read, is not JSON, or does not match
        :class:`SegmentationManifestOutputSchema`; the message names the file.
    """
    try:
        with open(path) as manifest_file:
            document = json.load(manifest_file)
        return SegmentationManifestOutputSchema().load(document)["manifest"]
    except OSError as error:
        raise SegmentationManifestException(
            f"cannot read manifest {path}: {error.strerror}") from error
    except (ValueError, mm.ValidationError) as error:  # JSONDecodeError is a ValueError
        raise SegmentationManifestException(
            f"manifest {path} is not valid: {one_line(error)}") from error


def manifest_entry(experiment: dict, bin_size: int) -> dict:
    """Find one experiment's movie and check it against LIMS.

    Parameters
    ----------
    experiment : dict
        A LIMS row: ``id``, ``nframes`` (``movie_number_of_frames``) and
        ``storage_directory``.
    bin_size : int
        Frames per binned frame.

    Returns
    -------
    dict
        The manifest entry: ``experiment_id``, ``nbinned``, ``input_video``.

    Raises
    ------
    SegmentationManifestException
        If LIMS lacks the frame count or directory, the movie cannot be
        found or read, its frame count differs from LIMS's, or it is shorter
        than one bin.
    """
    if experiment["storage_directory"] is None:
        raise SegmentationManifestException("LIMS has no storage_directory")
    if experiment["nframes"] is None:
        raise SegmentationManifestException("LIMS has no movie_number_of_frames")
    try:
        movie_path = find_full_movie(Path(experiment["storage_directory"]))
        nframes = movie_shape(movie_path)[0]
    except FindFileException as error:
        raise SegmentationManifestException(str(error)) from error
    if nframes != experiment["nframes"]:
        raise SegmentationManifestException(
            f"LIMS says {experiment['nframes']} frames, movie {movie_path} has {nframes}")
    nbinned = int(nframes / bin_size)
    if nbinned == 0:
        raise SegmentationManifestException(
            f"movie {movie_path} has {nframes} frames, fewer than one bin of {bin_size} "
            f"(nbinned would be 0)")
    return {"experiment_id": experiment["id"], "nbinned": nbinned,
            "input_video": str(movie_path)}


def build_entries(experiments: list[dict], bin_size: int, workers: int,
                  progress: bool = False) -> tuple[dict, dict]:
    """Run :func:`manifest_entry` for many experiments, ``workers`` at a time.

    Parameters
    ----------
    experiments : list of dict
        LIMS rows, as :func:`manifest_entry` takes them.
    bin_size : int
        Frames per binned frame.
    workers : int
        Threads; the work is waiting on file-system listings, which threads
        overlap. 1 looks the movies up one after another.
    progress : bool
        Show a progress bar on stderr.

    Returns
    -------
    entries : dict
        Experiment id to manifest entry, for the experiments that check out.
    problems : dict
        Experiment id to the message saying what is wrong, for the rest.
    """
    entries, problems = {}, {}
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(experiments)))) as pool, \
            tqdm(total=len(experiments), desc="finding movies", unit="movie",
                 disable=not progress) as bar:
        futures = {pool.submit(manifest_entry, experiment, bin_size): experiment["id"]
                   for experiment in experiments}
        for future in as_completed(futures):
            experiment_id = futures[future]
            try:
                entries[experiment_id] = future.result()
            except SegmentationManifestException as error:
                problems[experiment_id] = str(error)
            bar.update()
    return entries, problems


class SegmentationManifest(argschema.ArgSchemaParser):
    """Build and write the segmentation manifest of a stored selection.

    ``SegmentationManifest(input_data={...}, args=[]).run(lims_dbconn,
    label_dbconn)`` writes the manifest to ``output_json`` and returns it.
    """

    default_schema = SegmentationManifestSchema
    default_output_schema = SegmentationManifestOutputSchema

    def __init__(self, *args, logger_name: str = "SegmentationManifest", **kwargs):
        super().__init__(*args, logger_name=logger_name, **kwargs)

    def _selected_ids(self, label_dbconn) -> list[int]:
        selection_id = self.args["experiment_selection_id"]
        rows = label_dbconn.query(
            "SELECT sub_selected_ids FROM experiment_selection WHERE id = %s", (selection_id,))
        if not rows:
            raise SegmentationManifestException(
                f"no experiment_selection with id {selection_id}")
        if not rows[0]["sub_selected_ids"]:
            raise SegmentationManifestException(
                f"experiment_selection {selection_id} has no sub_selected_ids")
        return rows[0]["sub_selected_ids"]

    def run(self, lims_dbconn, label_dbconn) -> dict:
        """Build the manifest and write it, or write nothing and raise.

        Parameters
        ----------
        lims_dbconn : slapp.utils.query_utils.DbConnection
            LIMS (read-only is enough).
        label_dbconn : slapp.utils.query_utils.DbConnection
            The labeling database holding ``experiment_selection``.

        Returns
        -------
        dict
            The manifest as written: ``{"manifest": [entry, ...]}``.

        Raises
        ------
        SegmentationManifestException
            If the selection does not exist or is empty, or if any experiment
            is listed twice, is missing from LIMS, or fails a check of :func:`manifest_entry`;
            every bad experiment is logged and summarised in the message.
        """
        output_path = Path(self.args["output_json"])
        if output_path.is_dir():
            raise SegmentationManifestException(
                f"output_json {output_path} is a directory, not a file")
        experiment_ids = self._selected_ids(label_dbconn)
        self.logger.info("selected %d experiments from table experiment_selection",
                         len(experiment_ids))
        lims_rows = lims_dbconn.query(
            "SELECT id, movie_number_of_frames AS nframes, storage_directory "
            "FROM ophys_experiments WHERE id = ANY(%s)", (experiment_ids,))
        in_lims = {row["id"]: row for row in lims_rows}
        entries, problems = build_entries(
            list(in_lims.values()), self.args["bin_size"], self.args["discovery_workers"],
            progress=sys.stderr.isatty())
        problems.update({experiment_id: "not in LIMS ophys_experiments"
                         for experiment_id in experiment_ids if experiment_id not in in_lims})
        problems.update({experiment_id: f"listed {count} times in sub_selected_ids"
                         for experiment_id, count in Counter(experiment_ids).items()
                         if count > 1})
        if problems:
            raise SegmentationManifestException(self._report(experiment_ids, problems))
        manifest = self.get_output_json(
            {"manifest": [entries[experiment_id] for experiment_id in experiment_ids]})
        write_json_atomically(output_path, manifest)
        self.logger.info("wrote %s", self.args["output_json"])
        return manifest

    def _report(self, experiment_ids: list[int], problems: dict) -> str:
        """Log each problem on its own line (level WARNING); return the one-line summary.

        At the default level (ERROR) the user sees one line, the summary; it
        names the first problems, and ``--log_level WARNING`` lists them all.
        """
        ordered = [f"{experiment_id}: {problems[experiment_id]}"
                   for experiment_id in dict.fromkeys(experiment_ids)
                   if experiment_id in problems]
        for line in ordered:
            self.logger.warning(line)
        summary = "; ".join(ordered[:_PROBLEMS_IN_SUMMARY])
        if len(ordered) > _PROBLEMS_IN_SUMMARY:
            summary += f"; and {len(ordered) - _PROBLEMS_IN_SUMMARY} more (--log_level WARNING lists each)"
        return (f"{len(ordered)} of {len(dict.fromkeys(experiment_ids))} experiments have "
                f"problems, no manifest written: {summary}")


def main() -> None:
    """Build the manifest from the command line, with credentials from the environment."""
    module = SegmentationManifest()
    with DbConnection(**get_db_credentials("LIMS_", **lims_defaults), read_only=True) \
            as lims_dbconn, \
            DbConnection(**get_db_credentials("LABELING_", **label_defaults)) as label_dbconn:
        module.run(lims_dbconn, label_dbconn)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_main(main, "segmentation_manifest"))
