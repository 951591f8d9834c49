"""The whole toolkit, end to end, on this machine: ``python -m slapp.demo.run_demo``.

No LIMS and no cluster needed. In ``$SLAPP_HOME`` (default ``./.slapp``) it

1. starts the embedded PostgreSQL server (``python -m slapp.embedded start``),
2. creates the labeling tables (``python -m slapp.db.init``),
3. fills a demo LIMS (``python -m slapp.demo.populate_lims``),
4. selects experiments with ``demo_selection_input.json`` (step 1, ``select_data``),
5. generates synthetic movies with ground truth for the selected experiments only,
6. builds the segmentation manifest (step 2, ``segmentation_manifest``),
7. segments every movie with Suite2P through the local runner (step 3, ``run_local``),
8. scores every run against its ground truth (:mod:`slapp.evaluation.compare`),
   beside plain Suite2P with the original jobs' settings on the same movies
   (:mod:`slapp.evaluation.plain_suite2p`), and prints a summary and where the
   ROI pictures are,
9. writes the batch report of the manifest (``python -m slapp.report``) and the
   first experiment's run as an NWB file (``python -m slapp.export.nwb``), and
   prints both paths.

``--preset easy`` (the default) makes quick, easy movies; ``--preset realistic``
makes movies as hard as real ones (dense, dim, sparse firing, out-of-focus
blobs and dendrites; see :mod:`slapp.demo.synthetic_movie`), where the scores
say more about real data.

Each step runs the real command as a subprocess, with the server's
``LIMS_*``/``LABELING_*`` variables in its environment, and its output is shown
as it comes. A second run reuses what exists: the stored selection with the
same queries, counts, seed and comment; the movies on disk; the segmentation
runs of this code version, plain Suite2P's scores. It takes seconds.
"""
import json
import logging
import os
import shlex
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

import marshmallow as mm

from slapp.data_selection.select_data import DataSelector, encode_query
from slapp.contracts.manifest import DECAY_BIN_SIZE, load_manifest
from slapp.demo.storage import DemoMovie, DemoMovieOptions, ensure_movies
from slapp.demo.synthetic_movie import read_ground_truth
from slapp.embedded import LABELING_DATABASE, LABELING_ROLE, LIMS_DATABASE, LIMS_ROLE
from slapp.embedded import EmbeddedServer
from slapp.errors import SlappError
from slapp.evaluation.compare import compare_run
from slapp.evaluation.plain_suite2p import run_baseline, score
from slapp.segmentation.suite2p_runner import suite2p_version
from slapp.utils.cli import run_main
from slapp.utils.files import write_json_atomically
from slapp.utils.options import SlappHomeSchema, slapp_home
from slapp.utils.query_utils import DbConnection
from slapp.utils.schema import ArgSchema, ArgSchemaParser, StrictInt

REPO_ROOT = Path(__file__).resolve().parents[2]
# Lines of a failing step's output kept for the error message.
_TAIL_LINES = 20


class RunDemoException(SlappError):
    """A step of the demo failed."""


class RunDemoSchema(DemoMovieOptions, ArgSchema, SlappHomeSchema):
    selection_input = mm.fields.Str(
        dump_default=str(REPO_ROOT / "demo_selection_input.json"),
        metadata={"description": "select_data's --input_json. The default draws one "
                                 "experiment from each of the seed's four example queries: "
                                 "every query shape of the real example, in minutes"})
    workers = StrictInt(
        dump_default=2, validate=mm.validate.Range(min=1),
        metadata={"description": "movies segmented at once by the local runner; 2 matches "
                                 "a 2-core laptop"})
    bin_size = StrictInt(
        dump_default=DECAY_BIN_SIZE, validate=mm.validate.Range(min=1),
        metadata={"description": "segmentation_manifest's --bin_size. The manifest's "
                                 "default 115 suits real 40,000-100,000-frame sessions "
                                 "(~420 binned frames for 50,000); a 3,000-frame demo "
                                 "movie would get 26, too few to tell cells from noise. "
                                 "22 frames, Suite2P's own smallest bin (tau 0.7 s x "
                                 "31 Hz), gives it 136"})


class RunDemoOutputSchema(mm.Schema):
    experiment_selection_id = StrictInt(required=True)
    manifest_json = mm.fields.Str(required=True)
    plot_dir = mm.fields.Str(required=True)
    report_html = mm.fields.Str(required=True, metadata={
        "description": "the batch report of the manifest, to open in a browser"})
    nwb_file = mm.fields.Str(required=True, metadata={
        "description": "the first experiment's run as an NWB file"})
    mean_f1 = mm.fields.Float(required=True)
    mean_plain_f1 = mm.fields.Float(required=True, metadata={
        "description": "mean F1 of plain Suite2P with the original jobs' settings on the "
                       "same movies (classified cells)"})
    experiments = mm.fields.List(mm.fields.Dict(), required=True, metadata={
        "description": "per experiment: experiment_id, segmentation_run_id, n_rois, "
                       "n_rois_classified_cells, n_cells, true_positives, precision, recall, "
                       "f1 (of the classified cells), f1_all_rois, plain_f1, "
                       "plain_f1_all_rois (plain Suite2P, original jobs' settings), movie, "
                       "ground_truth"})


def _heading(text: str) -> None:
    print(f"\n== {text} ==", flush=True)


class RunDemo(ArgSchemaParser):
    """Run the demo's steps in order; stop at the first that fails."""

    default_schema = RunDemoSchema
    default_output_schema = RunDemoOutputSchema

    def _step(self, title: str, module: str, *arguments) -> None:
        """Run ``python -m module arguments``, echoing its output; raise if it fails."""
        _heading(title)
        command = [sys.executable, "-m", module, *map(str, arguments)]
        print("$ " + shlex.join(["python", *command[1:]]), flush=True)
        started = time.monotonic()
        tail = deque(maxlen=_TAIL_LINES)
        with subprocess.Popen(command, env=self.environment, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, bufsize=1) as process:
            for line in process.stdout:
                print("  " + line, end="", flush=True)
                if line.strip():
                    tail.append(line.strip())
        if process.returncode != 0:
            last = tail[-1] if tail else f"exit status {process.returncode}"
            raise RunDemoException(f"{title} failed: {last}")
        print(f"  ({time.monotonic() - started:.1f} s)", flush=True)

    def run(self) -> dict:
        """Run the demo end to end and print its summary.

        Returns
        -------
        dict
            See :class:`RunDemoOutputSchema`.

        Raises
        ------
        RunDemoException
            When a step fails; its output has been printed already.
        """
        started = time.monotonic()
        home = slapp_home(self.args)
        selection_input = Path(self.args["selection_input"]).resolve()
        if not selection_input.is_file():
            raise RunDemoException(f"selection input {selection_input} does not exist")
        # validated as select_data will validate it, before anything runs; the log level
        # is ours to keep (argschema sets the root logger's level from it)
        selector_args = DataSelector(input_data={**_read_json(selection_input),
                                                 "log_level": "WARNING"}, args=[]).args
        demo_dir = home / "demo"
        manifest_json = demo_dir / "manifest.json"

        self.environment = {key: value for key, value in os.environ.items()
                            if not key.startswith(("LIMS_", "LABELING_"))}
        self.environment["SLAPP_HOME"] = str(home)
        self._step("Embedded PostgreSQL server", "slapp.embedded", "start", "--slapp_home", home)
        server = EmbeddedServer(home)
        self.environment.update(server.environment())
        demo_dir.mkdir(parents=True, exist_ok=True)
        self._step("Labeling tables", "slapp.db.init")
        self._step("Demo LIMS", "slapp.demo.populate_lims", "--slapp_home", home)

        with DbConnection(**server.credentials(LABELING_ROLE, LABELING_DATABASE)) as label_db, \
                DbConnection(**server.credentials(LIMS_ROLE, LIMS_DATABASE),
                             read_only=True) as lims_db:
            selection = self._select(label_db, selection_input, selector_args, demo_dir)
            _heading("Synthetic movies for the selected experiments")
            step_started = time.monotonic()
            movies = ensure_movies(lims_db, selection["sub_selected_ids"],
                                   self.args["frame_size"], self.args["preset"])
            print(f"  preset: {self.args['preset']}")
            for movie in movies:
                print(f"  {'generated' if movie.generated else 'kept     '} {movie.movie_path}")
            # a movie made now replaces another one: its stored run is stale
            overwrite = ["--overwrite", "True"] if any(m.generated for m in movies) else []
            print(f"  ({time.monotonic() - step_started:.1f} s)", flush=True)
            self._step("Step 2: segmentation manifest",
                       "slapp.data_selection.segmentation_manifest",
                       "--experiment_selection_id", selection["experiment_selection_id"],
                       "--bin_size", self.args["bin_size"], "--output_json", manifest_json,
                       "--log_level", "INFO")
            segmentation_json = demo_dir / "segmentation.json"
            self._step("Step 3: Suite2P segmentation (local runner)",
                       "slapp.segmentation.run_local", "--manifest_json", manifest_json,
                       "--workers", self.args["workers"], "--output_json", segmentation_json,
                       "--log_level", "INFO", *overwrite)
            experiments = _score_runs(label_db, movies, _read_json(segmentation_json))
        _heading("Plain Suite2P (original jobs' settings) on the same movies")
        step_started = time.monotonic()
        nbinned = {entry["experiment_id"]: entry["nbinned"]
                   for entry in load_manifest(manifest_json)}
        for movie, row in zip(movies, experiments):
            row.update(plain_suite2p_scores(movie, nbinned[movie.experiment_id]))
        print(f"  ({time.monotonic() - step_started:.1f} s)", flush=True)

        report_html, nwb_file = self._report_and_export(manifest_json, experiments[0])

        output = {"experiment_selection_id": selection["experiment_selection_id"],
                  "manifest_json": str(manifest_json),
                  "plot_dir": str(manifest_json.parent / "segmentation_plots"),
                  "report_html": str(report_html), "nwb_file": str(nwb_file),
                  "mean_f1": sum(row["f1"] for row in experiments) / len(experiments),
                  "mean_plain_f1": sum(row["plain_f1"] for row in experiments)
                  / len(experiments),
                  "experiments": experiments}
        _print_summary(output, time.monotonic() - started)
        if self.args.get("output_json"):
            write_json_atomically(Path(self.args["output_json"]), self.get_output_json(output))
        return output

    def _report_and_export(self, manifest_json: Path, experiment: dict) -> tuple[Path, Path]:
        """The batch report of the manifest and one run as NWB; returns both paths."""
        report_dir = manifest_json.parent / "report"
        self._step("Batch report", "slapp.report", "--manifest_json", manifest_json,
                   "--output_dir", report_dir)
        nwb_file = manifest_json.parent / "nwb" / f"{experiment['experiment_id']}.nwb"
        nwb_file.parent.mkdir(exist_ok=True)
        self._step("NWB export of one run", "slapp.export.nwb", "--segmentation_run_id",
                   experiment["segmentation_run_id"], "--output_nwb", nwb_file)
        return report_dir / "index.html", nwb_file

    def _select(self, label_db: DbConnection, selection_input: Path, selector_args: dict,
                demo_dir: Path) -> dict:
        """Step 1, or the stored selection that the same input made before."""
        title = "Step 1: select experiments"
        previous = find_selection(label_db, selector_args)
        if previous is not None:
            _heading(title)
            print(f"  reusing experiment_selection id {previous['experiment_selection_id']}: "
                  f"same queries, counts, seed and comment as {selection_input.name}")
            return previous
        selection_json = demo_dir / "selection.json"
        self._step(title, "slapp.data_selection.select_data", "--input_json", selection_input,
                   "--output_json", selection_json, "--log_level", "INFO")
        return _read_json(selection_json)


def find_selection(label_dbconn: DbConnection, selector_args: dict) -> dict | None:
    """Find the newest stored selection made from the same select_data input.

    Same input means the same query strings in the same order, the same
    counts, seed and comment.

    Parameters
    ----------
    label_dbconn : DbConnection
        The labeling database.
    selector_args : dict
        Validated select_data input (``query_strings``, ``sub_selection_counts``,
        ``random_seed``, ``comment_string``).

    Returns
    -------
    dict or None
        ``experiment_selection_id`` and ``sub_selected_ids``, or None.
    """
    rows = label_dbconn.query(
        "SELECT id, sub_selected_ids FROM experiment_selection "
        "WHERE base64_query_strings = %s::text[] AND sub_selection_counts = %s::int[] "
        "AND random_seed = %s AND comment_string = %s ORDER BY id DESC LIMIT 1",
        ([encode_query(query) for query in selector_args["query_strings"]],
         selector_args["sub_selection_counts"], selector_args["random_seed"],
         selector_args["comment_string"]))
    if not rows:
        return None
    return {"experiment_selection_id": rows[0]["id"],
            "sub_selected_ids": rows[0]["sub_selected_ids"]}


def _score_runs(label_db: DbConnection, movies: list, segmentation: dict) -> list[dict]:
    """Compare the run of each movie that run_local reported with its ground truth."""
    run_ids = {task["experiment_id"]: task["segmentation_run_id"]
               for task in segmentation["tasks"] if task.get("segmentation_run_id")}
    missing = [str(movie.experiment_id) for movie in movies if movie.experiment_id not in run_ids]
    if missing:
        raise RunDemoException(f"the local runner reports no segmentation run for experiment "
                               f"{', '.join(missing)}")
    experiments = []
    for movie in movies:
        run_id = run_ids[movie.experiment_id]
        cells = compare_run(label_db, run_id, movie.ground_truth_path, only_cells=True)
        every_roi = compare_run(label_db, run_id, movie.ground_truth_path, only_cells=False)
        experiments.append({
            "experiment_id": movie.experiment_id, "segmentation_run_id": run_id,
            "n_rois": cells.n_rois_in_run, "n_rois_classified_cells": cells.match.n_predicted,
            "n_cells": cells.match.n_truth, "true_positives": cells.match.true_positives,
            "precision": cells.match.precision, "recall": cells.match.recall,
            "f1": cells.match.f1, "f1_all_rois": every_roi.match.f1,
            "movie": str(movie.movie_path), "ground_truth": str(movie.ground_truth_path)})
    return experiments


def plain_suite2p_scores(movie: DemoMovie, nbinned: int) -> dict:
    """Score plain Suite2P with the original jobs' settings on one demo movie.

    The scores are kept in ``<movie>_plain_suite2p.json`` beside the movie and
    reused while the movie file, ``nbinned`` and the Suite2P version stay the same.

    Parameters
    ----------
    movie : DemoMovie
        The movie and its ground truth.
    nbinned : int
        The manifest's binned frames for the movie, as the segment run used.

    Returns
    -------
    dict
        ``plain_f1`` (classified cells) and ``plain_f1_all_rois``.
    """
    cache_path = movie.movie_path.with_name(movie.movie_path.stem + "_plain_suite2p.json")
    status = movie.movie_path.stat()
    key = {"movie_size": status.st_size, "movie_mtime_ns": status.st_mtime_ns,
           "nbinned": nbinned, "suite2p_version": suite2p_version()}
    if cache_path.is_file():
        cached = _read_json(cache_path)
        if cached.get("key") == key:
            print(f"  kept      {cache_path}")
            return cached["scores"]
    # Suite2P's and cellpose's notes (skipped deconvolution, optional models) are not
    # the demo's business; their errors still show
    for name in ("suite2p", "cellpose"):
        logging.getLogger(name).setLevel(logging.ERROR)
    segmentation = run_baseline("original_jobs", movie.movie_path, nbinned)
    scores = score(segmentation, read_ground_truth(movie.ground_truth_path))
    result = {"plain_f1": scores.cells.f1, "plain_f1_all_rois": scores.all_rois.f1}
    write_json_atomically(cache_path, {"key": key, "scores": result})
    print(f"  scored    {movie.movie_path}: {len(segmentation.masks)} ROIs, F1 "
          f"{result['plain_f1']:.2f} ({segmentation.seconds:.0f} s)", flush=True)
    return result


def _print_summary(output: dict, seconds: float) -> None:
    _heading("Summary: Suite2P's cells against the ground truth (IoU >= 0.5)")
    print(f"  {'experiment':>11} {'run':>4} {'ROIs':>5} {'cells':>6} {'true':>5} {'found':>6} "
          f"{'precision':>10} {'recall':>7} {'F1':>5}   {'F1 all ROIs':>11}   "
          f"{'plain F1':>8} {'all ROIs':>8}")
    for row in output["experiments"]:
        print(f"  {row['experiment_id']:>11} {row['segmentation_run_id']:>4} {row['n_rois']:>5} "
              f"{row['n_rois_classified_cells']:>6} {row['n_cells']:>5} "
              f"{row['true_positives']:>6} {row['precision']:>10.2f} {row['recall']:>7.2f} "
              f"{row['f1']:>5.2f}   {row['f1_all_rois']:>11.2f}   {row['plain_f1']:>8.2f} "
              f"{row['plain_f1_all_rois']:>8.2f}")
    print(f"  mean F1 {output['mean_f1']:.2f} over {len(output['experiments'])} experiments; "
          f"plain Suite2P with the original jobs' settings: {output['mean_plain_f1']:.2f}")
    print("  (ROIs: all Suite2P found; cells: those its classifier calls cells, which are "
          "scored;\n   true: cells in the movie that fire; found: true cells matched by a "
          "scored ROI;\n   plain: run_s2p with Suite2P's defaults, threshold_scaling 0.75, "
          "the same bins.\n   Labelers reject false ROIs, so recall of the true cells, over "
          "all ROIs, matters most)")
    print(f"\n  ROI outlines over each movie's mean image: "
          f"{output['plot_dir']}/<experiment>_<run>.png")
    print(f"  manifest: {output['manifest_json']}")
    print(f"  batch report (open in a browser): {output['report_html']}")
    print(f"  NWB file of run {output['experiments'][0]['segmentation_run_id']}: "
          f"{output['nwb_file']}")
    first = output["experiments"][0]
    print("  score a run yourself:\n"
          "    . .venv/bin/activate && eval \"$(python -m slapp.embedded env)\"\n"
          f"    python -m slapp.evaluation.compare --segmentation_run_id "
          f"{first['segmentation_run_id']} --ground_truth {first['ground_truth']}")
    print(f"  demo finished in {seconds:.0f} s", flush=True)


def _read_json(path: Path) -> dict:
    with open(path) as handle:
        return json.load(handle)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_main(lambda: RunDemo(logger_name="RunDemo").run(), "demo"))
