"""Create a labeling job: draw the ROIs people will judge from some segmentation runs.

::

    python -m slapp.labeling.create_job --name pilot --segmentation_run_ids 3 4 7 \\
        --sampling stratified --n_rois 300 --labels_per_roi 3 --random_seed 1
    python -m slapp.labeling.create_job --name batch1 --manifest_json manifest.json
    python -m slapp.labeling.create_job --name batch1 --experiment_selection_id 2

The runs are given by id, or as the runs that count (:mod:`slapp.db.runs`) for the
entries of a segmentation manifest (with the Suite2P options ``segment`` was run
with, as ``status`` takes them) or for the experiments of a selection; entries
without such a run are left out, and said so.

writes one ``labeling_jobs`` row and one ``labeling_tasks`` row per drawn ROI (in
one transaction), prints the job's id, and with ``--output_json`` writes
``{"labeling_job_id", "n_tasks"}``. The samplings are described in
:mod:`slapp.labeling.sampling`. The same name with the same inputs again finds the
job that exists and says so (exit 0); the same name with other inputs is refused.
Credentials come from ``LABELING_USER`` / ``LABELING_PASSWORD`` (and
``LABELING_HOST``, ``LABELING_PORT``, ``LABELING_DATABASE``).
"""
import sys
import warnings
from pathlib import Path

import argschema
import marshmallow as mm

from slapp.db.runs import (RunParameters, RunParametersSchema, counted_runs,
                           counted_runs_of_selection)
from slapp.labeling.jobs import LabelingJobException, create_job
from slapp.labeling.sampling import SAMPLINGS
from slapp.utils.cli import run_main
from slapp.utils.files import write_json_atomically
from slapp.utils.query_utils import DbConnection, labeling_connection
from slapp.utils.schema import ArgSchema, ArgSchemaParser, StrictInt


SOURCES = ("segmentation_run_ids", "manifest_json", "experiment_selection_id")


class CreateJobSchema(ArgSchema, RunParametersSchema):
    name = mm.fields.Str(
        required=True, validate=mm.validate.Length(min=1),
        metadata={"description": "the job's unique name: asking again with the same name "
                                 "and inputs finds the job instead of drawing another"})
    segmentation_run_ids = argschema.fields.List(
        StrictInt(validate=mm.validate.Range(min=1)), validate=mm.validate.Length(min=1),
        metadata={"description": "segmentation_runs.id of the runs whose ROIs are drawn "
                                 "from, space-separated"})
    manifest_json = argschema.fields.InputFile(
        metadata={"description": "instead of run ids: the runs that count for this "
                                 "segmentation manifest's entries, under the Suite2P "
                                 "options given (segment's defaults unless changed)"})
    experiment_selection_id = StrictInt(
        validate=mm.validate.Range(min=1),
        metadata={"description": "instead of run ids: the runs that count for this "
                                 "selection's experiments, under the Suite2P options given"})
    sampling = mm.fields.Str(
        dump_default="all", load_default="all", validate=mm.validate.OneOf(SAMPLINGS),
        metadata={"description": "which ROIs: all, random, stratified (equal numbers from "
                                 "bins of Suite2P's classifier probability within each "
                                 "experiment, so both classes appear) or uncertain "
                                 "(closest to 0.5 under the newest trained classifier). "
                                 "all by default: a first job usually labels every ROI"})
    n_rois = StrictInt(
        allow_none=True, dump_default=None, load_default=None,
        validate=mm.validate.Range(min=1),
        metadata={"description": "at most this many ROIs, whatever the sampling; no cap "
                                 "by default"})
    labels_per_roi = StrictInt(
        dump_default=3, load_default=3, validate=mm.validate.Range(min=1),
        metadata={"description": "how many labelers judge each ROI. 3, as the original "
                                 "labeling jobs asked: an odd number, so a majority exists"})
    random_seed = StrictInt(
        dump_default=42, load_default=42, validate=mm.validate.Range(min=0, max=2 ** 31 - 1),
        metadata={"description": "seeds the draw of random and stratified, so the same "
                                 "inputs draw the same ROIs. 42 as select_data's default; "
                                 "it must fit the int column random_seed"})
    strata = StrictInt(
        dump_default=4, load_default=4, validate=mm.validate.Range(min=2),
        metadata={"description": "bins of the probability for stratified. 4 equal-width "
                                 "bins put an edge at 0.5 (cells and non-cells in separate "
                                 "bins) and show confident and doubtful ROIs of each class"})


    @mm.validates_schema
    def one_source(self, data, **kwargs):
        if sum(name in data for name in SOURCES) != 1:
            raise mm.ValidationError("give --segmentation_run_ids, --manifest_json or "
                                     "--experiment_selection_id")


class CreateJobOutputSchema(mm.Schema):
    labeling_job_id = mm.fields.Int(required=True)
    n_tasks = mm.fields.Int(required=True,
                            metadata={"description": "ROIs drawn (one task per ROI)"})


class CreateJob(ArgSchemaParser):
    """Create (or find) a labeling job."""

    default_schema = CreateJobSchema
    default_output_schema = CreateJobOutputSchema

    def _runs(self, label_dbconn: DbConnection) -> tuple[list[int], dict | None]:
        """The runs asked for, and where they came from (None for run ids)."""
        args = self.args
        if "segmentation_run_ids" in args:
            return args["segmentation_run_ids"], None
        parameters = RunParameters.from_args(args)
        if "manifest_json" in args:
            source = {"manifest_json": str(Path(args["manifest_json"]).resolve())}
            runs = counted_runs(label_dbconn, args["manifest_json"], parameters)
        else:
            source = {"experiment_selection_id": args["experiment_selection_id"]}
            runs = list(counted_runs_of_selection(
                label_dbconn, args["experiment_selection_id"], parameters).values())
        source["parameters"] = parameters.description()
        what = next(iter(source.items()))
        done = [run_id for run_id in runs if run_id is not None]
        if not done:
            raise LabelingJobException(
                f"no entry of {what[0]} {what[1]} has a run for this code version and "
                f"{parameters.description()}: nothing to label")
        if len(done) < len(runs):
            print(f"{len(runs) - len(done)} of {len(runs)} entries of {what[0]} {what[1]} "
                  f"have no run for these parameters: left out")
        return done, source

    def run(self, label_dbconn: DbConnection) -> dict:
        """Create or find the job, print its id, write the output JSON.

        Parameters
        ----------
        label_dbconn : DbConnection
            The labeling database.

        Returns
        -------
        dict
            ``labeling_job_id`` and ``n_tasks``.
        """
        args = self.args
        run_ids, source = self._runs(label_dbconn)
        outcome = create_job(label_dbconn, args["name"], run_ids, args["sampling"],
                             args["n_rois"], args["labels_per_roi"], args["random_seed"],
                             args["strata"], source)
        if outcome.created:
            print(f"labeling job {outcome.labeling_job_id} {args['name']!r}: "
                  f"{outcome.n_tasks} ROIs drawn ({args['sampling']}), "
                  f"{args['labels_per_roi']} labels each")
        else:
            print(f"labeling job {outcome.labeling_job_id} {args['name']!r} already exists "
                  f"with these inputs ({outcome.n_tasks} ROIs); nothing changed")
        output = {"labeling_job_id": outcome.labeling_job_id, "n_tasks": outcome.n_tasks}
        if args.get("output_json"):
            write_json_atomically(args["output_json"], self.get_output_json(output))
        return output


def main() -> None:  # pragma: no cover - thin CLI
    """Run the command with the labeling database from the environment."""
    with warnings.catch_warnings():
        # argschema warns that space-separated list options (--segmentation_run_ids 1 2)
        # are its old syntax; they are this command's documented syntax.
        warnings.filterwarnings("ignore", "'--segmentation_run_ids' is using old-style",
                                FutureWarning)
        parser = CreateJob(logger_name="CreateJob")
    with labeling_connection(interactive=True) as label_dbconn:
        parser.run(label_dbconn)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_main(main, "create-job"))
