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
and no manifest is written, unless ``--excluded_json`` is given: then the
manifest lists the good experiments and that file lists each excluded one with
its problem. The manifest lists the experiments in the order of
``sub_selected_ids``; entry ``i`` is array task ``i`` of the segmentation job.

As in the original toolkit, :meth:`SegmentationManifest.run` makes one
``query`` call (the SQL its only argument, values as ``psycopg2.sql``
literals) on each connection, finds each movie with this module's
``find_full_movie``, opens it with this module's ``h5py.File``, compares
LIMS's frame count with ``shape[0]`` of its ``data`` dataset (the full
three-dimensional check is ``segment``'s), and writes through
:meth:`SegmentationManifest.output`.
"""
import os
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import h5py
import marshmallow as mm
from psycopg2 import sql as pgsql
from tqdm import tqdm

from slapp.contracts.manifest import (DECAY_BIN_SIZE, DEFAULT_BIN_SIZE,  # noqa: F401
                                      PLOT_DIRECTORY_NAME, SegmentationManifestEntrySchema,
                                      SegmentationManifestException,
                                      SegmentationManifestOutputSchema, load_manifest,
                                      load_manifest_document)
from slapp.data_selection.utils import FindFileException, dataset_shape, find_full_movie
from slapp.utils.cli import one_line, run_main
from slapp.utils.files import json_bytes, stage_bytes, write_json_atomically
from slapp.utils.query_utils import (INTERACTIVE_CONNECT_SECONDS, DbConnection,
                                     get_db_credentials, labeling_connection, lims_defaults)
from slapp.utils.schema import ArgSchema, ArgSchemaParser, OutputFile, StrictInt

SELECTION_QUERY = pgsql.SQL("SELECT sub_selected_ids FROM experiment_selection WHERE id = {}")
LIMS_QUERY = pgsql.SQL("SELECT id, movie_number_of_frames AS nframes, storage_directory "
                       "FROM ophys_experiments WHERE id = ANY({}::bigint[])")


# Messages of this many bad experiments go into the final error line; every
# one of them is also logged on its own line before it.
_PROBLEMS_IN_SUMMARY = 20


class SegmentationManifestSchema(ArgSchema):
    """Build the segmentation manifest of one stored experiment selection."""

    experiment_selection_id = StrictInt(
        required=True, validate=mm.validate.Range(min=1),
        metadata={"description": "id of the experiment_selection row (written by select_data) "
                                 "whose sub_selected_ids are segmented"})
    bin_size = StrictInt(
        dump_default=DEFAULT_BIN_SIZE, validate=mm.validate.Range(min=1),
        metadata={"description": (
            "frames averaged into one binned frame for Suite2P's detection; nbinned = "
            "int(nframes / bin_size). 115 is the seed's and the original jobs' value: a "
            "40,000-100,000-frame session at 31 Hz gives 350-870 binned frames, enough to "
            "find its cells, and a task's memory grows with the binned movie. 22 = "
            "round(tau * fs) for GCaMP6f at 31 Hz, one indicator decay per binned frame, "
            "finds a few more dim cells at about 5x the binned movie's memory and more "
            "time (docs/benchmarks_bins.rst); short movies need it, since 115 leaves a "
            "5,000-frame movie only 43 binned frames")})
    discovery_workers = StrictInt(
        dump_default=16, validate=mm.validate.Range(min=1),
        metadata={"description": "movie look-ups run at once. They wait on directory "
                                 "listings of a network file system, not on the CPU, so "
                                 "threads overlap the waits; 16 hides most latency "
                                 "without flooding the file server. 1 searches one "
                                 "directory after another"})
    output_json = OutputFile(
        required=True,
        metadata={"description": "where the manifest is written (replaced atomically, "
                                 "and only when every experiment checks out, or when "
                                 "excluded_json is given)"})
    excluded_json = OutputFile(
        load_default=None, dump_default=None, allow_none=True,
        metadata={"description": (
            "Leave experiments with a problem (no movie, an unreadable directory, a frame "
            "count that differs from LIMS, ...) out of the manifest and list each, with its "
            "problem, in this JSON file. Without it the manifest is all or nothing: a "
            "selection is meant to be segmented whole, so dropping part of it must be "
            "asked for by name.")})


def movie_frame_count(movie_path) -> int:
    """``shape[0]`` of a movie's ``data`` dataset, opened with this module's ``h5py``.

    Raises
    ------
    SegmentationManifestException
        If the file cannot be opened as HDF5 (permission denied included) or
        has no ``data`` dataset.
    """
    try:
        with h5py.File(movie_path, "r") as movie:
            shape = dataset_shape(movie, movie_path)
    except OSError as error:
        if error.errno:  # the file system refused (e.g. permission denied), not HDF5
            raise SegmentationManifestException(
                f"cannot read movie {movie_path}: {os.strerror(error.errno)}") from error
        raise SegmentationManifestException(
            f"cannot read movie {movie_path} as HDF5: {one_line(error)}") from error
    except FindFileException as error:
        raise SegmentationManifestException(str(error)) from error
    return int(shape[0])


def manifest_entry(experiment: dict, bin_size: int) -> dict:
    """Find one experiment's movie and check its frame count against LIMS.

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
        The manifest entry: ``experiment_id``, ``nbinned`` (possibly 0 for a
        movie shorter than one bin, which :meth:`SegmentationManifest.output`
        refuses), ``input_video``.

    Raises
    ------
    SegmentationManifestException
        If LIMS lacks the frame count or directory, the movie cannot be
        found or read (a permission error included), or its frame count
        differs from LIMS's.
    """
    if experiment["storage_directory"] is None:
        raise SegmentationManifestException("LIMS has no storage_directory")
    if experiment["nframes"] is None:
        raise SegmentationManifestException("LIMS has no movie_number_of_frames")
    try:
        movie_path = find_full_movie(Path(experiment["storage_directory"]))
    except FindFileException as error:
        raise SegmentationManifestException(str(error)) from error
    nframes = movie_frame_count(movie_path)
    if nframes != experiment["nframes"]:
        raise SegmentationManifestException(
            f"LIMS says {experiment['nframes']} frames, movie {movie_path} has {nframes}")
    return {"experiment_id": experiment["id"], "nbinned": int(nframes / bin_size),
            "input_video": str(movie_path)}


def too_short(entries: list[dict], bin_size: int, frame_counts: dict) -> dict:
    """Experiment id to problem, for the entries whose movie is shorter than one bin.

    ``frame_counts`` maps experiment ids to their (checked) frame counts.
    """
    return {entry["experiment_id"]: (
        f"movie {entry['input_video']} has {frame_counts.get(entry['experiment_id'], 'too few')}"
        f" frames, fewer than one bin of {bin_size} (nbinned would be 0)")
        for entry in entries if entry["nbinned"] < 1}


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
            except OSError as error:  # e.g. a directory the user may not enter
                problems[experiment_id] = f"cannot read its movie: {one_line(error)}"
            bar.update()
    return entries, problems


class SegmentationManifest(ArgSchemaParser):
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
        rows = label_dbconn.query(SELECTION_QUERY.format(pgsql.Literal(selection_id)))
        if not rows:
            raise SegmentationManifestException(
                f"no experiment_selection with id {selection_id}")
        if not rows[0]["sub_selected_ids"]:
            raise SegmentationManifestException(
                f"experiment_selection {selection_id} has no sub_selected_ids")
        return rows[0]["sub_selected_ids"]

    def run(self, lims_dbconn, label_dbconn) -> dict:
        """Find and check every experiment's movie, then write the manifest or refuse.

        Parameters
        ----------
        lims_dbconn : slapp.utils.query_utils.DbConnection
            LIMS (read-only is enough); one ``query`` call.
        label_dbconn : slapp.utils.query_utils.DbConnection
            The labeling database holding ``experiment_selection``; one ``query`` call.

        Returns
        -------
        dict
            What :meth:`output` returns: the manifest as written.

        Raises
        ------
        SegmentationManifestException
            If the selection does not exist or is empty, or (through
            :meth:`output`) if any experiment is listed twice, is missing from
            LIMS or fails a check of :func:`manifest_entry`, and
            ``excluded_json`` is not given.
        """
        output_path = Path(self.args["output_json"])
        if output_path.is_dir():
            raise SegmentationManifestException(
                f"output_json {output_path} is a directory, not a file")
        experiment_ids = self._selected_ids(label_dbconn)
        self.logger.info("selected %d experiments from table experiment_selection",
                         len(experiment_ids))
        lims_rows = lims_dbconn.query(LIMS_QUERY.format(pgsql.Literal(list(experiment_ids))))
        entries, problems = build_entries(
            lims_rows, self.args["bin_size"], self.args["discovery_workers"],
            progress=sys.stderr.isatty())
        distinct = list(dict.fromkeys(experiment_ids))
        if len(lims_rows) < len(distinct):
            # LIMS returns only ids asked for, each once (its primary key), so only a
            # shortfall can mean a missing experiment; the original compared the counts
            found = {row["id"] for row in lims_rows}
            problems.update({experiment_id: "not in LIMS ophys_experiments"
                             for experiment_id in distinct if experiment_id not in found})
        problems.update({experiment_id: f"listed {count} times in sub_selected_ids"
                         for experiment_id, count in Counter(experiment_ids).items()
                         if count > 1})
        self.selected_ids, self.problems = experiment_ids, problems
        self.frame_counts = {row["id"]: row["nframes"] for row in lims_rows}
        position = {experiment_id: index for index, experiment_id in enumerate(distinct)}
        ordered = sorted(entries.values(),
                         key=lambda entry: position.get(entry["experiment_id"], len(position)))
        return self.output({"manifest": ordered})

    def output(self, d: dict, output_path=None, **json_dump_options) -> dict:
        """Write the manifest that :meth:`run` built, or refuse and write nothing.

        Every problem :meth:`run` found, and every movie shorter than one bin,
        is reported together; unless ``excluded_json`` is given, any problem
        means no manifest. With it, the manifest lists the good experiments and
        ``excluded_json`` each excluded experiment and its problem; the two
        files are replaced together, after every check.

        Parameters
        ----------
        d : dict
            ``{"manifest": [entry, ...]}`` from :meth:`run` (the seed's shape);
            the file also records ``experiment_selection_id``, from ``d`` or
            else the one the manifest was built from.
        output_path : str, optional
            Defaults to ``output_json``.

        Returns
        -------
        dict
            The manifest as written.
        """
        output_path = Path(output_path or self.args["output_json"])
        entries = d["manifest"]
        problems = {**getattr(self, "problems", {}),
                    **too_short(entries, self.args["bin_size"],
                                getattr(self, "frame_counts", {}))}
        selected = getattr(self, "selected_ids", [entry["experiment_id"] for entry in entries])
        excluded_path = self.args.get("excluded_json")
        if problems and not excluded_path:
            raise SegmentationManifestException(
                self._report(selected, problems, "no manifest written"))
        good = [entry for entry in entries if entry["experiment_id"] not in problems]
        if not good:
            raise SegmentationManifestException(
                self._report(selected, problems, "no experiment left, nothing written"))
        manifest = self.get_output_json({
            "experiment_selection_id": d.get("experiment_selection_id",
                                             self.args["experiment_selection_id"]),
            "manifest": good})
        staged = None
        if excluded_path:
            staged = stage_bytes(excluded_path, json_bytes(self._excluded(selected, problems)))
        try:
            write_json_atomically(output_path, manifest)
            if staged is not None:
                os.replace(staged, excluded_path)
                staged = None
        finally:
            if staged is not None:
                staged.unlink(missing_ok=True)
        self.excluded = problems
        if problems:
            self.logger.warning("excluded %d of %d experiments, listed in %s", len(problems),
                                len(dict.fromkeys(selected)), excluded_path)
        self.logger.info("wrote %s", output_path)
        return manifest

    def _excluded(self, selected: list[int], problems: dict) -> dict:
        return {"experiment_selection_id": self.args["experiment_selection_id"],
                "manifest_json": str(Path(self.args["output_json"]).absolute()),
                "excluded": [{"experiment_id": experiment_id,
                              "problem": problems[experiment_id]}
                             for experiment_id in self._in_order(selected, problems)]}

    @staticmethod
    def _in_order(selected: list[int], problems: dict) -> list[int]:
        """The experiments with problems, in selection order (others after)."""
        ordered = [experiment_id for experiment_id in dict.fromkeys(selected)
                   if experiment_id in problems]
        return ordered + [experiment_id for experiment_id in problems
                          if experiment_id not in set(ordered)]

    def _report(self, selected: list[int], problems: dict, outcome: str) -> str:
        """Log each problem on its own line (level WARNING); return the one-line summary.

        At the default level (ERROR) the user sees one line, the summary; it
        names the first problems, and ``--log_level WARNING`` lists them all.
        """
        ordered = [f"{experiment_id}: {problems[experiment_id]}"
                   for experiment_id in self._in_order(selected, problems)]
        for line in ordered:
            self.logger.warning(line)
        summary = "; ".join(ordered[:_PROBLEMS_IN_SUMMARY])
        if len(ordered) > _PROBLEMS_IN_SUMMARY:
            summary += (f"; and {len(ordered) - _PROBLEMS_IN_SUMMARY} more "
                        "(--log_level WARNING lists each)")
        return (f"{len(ordered)} of {len(dict.fromkeys(selected))} experiments have "
                f"problems, {outcome}: {summary}")


def main() -> None:
    """Build the manifest from the command line, with credentials from the environment."""
    module = SegmentationManifest()
    with DbConnection(**get_db_credentials("LIMS_", **lims_defaults), read_only=True,
                      connect_seconds=INTERACTIVE_CONNECT_SECONDS) \
            as lims_dbconn, \
            labeling_connection(interactive=True) as label_dbconn:
        manifest = module.run(lims_dbconn, label_dbconn)
    excluded = len(module.excluded)
    if excluded:
        print(f"segmentation_manifest: wrote {len(manifest['manifest'])} experiments; excluded "
              f"{excluded}, each with its problem, in {module.args['excluded_json']}",
              file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_main(main, "manifest"))
