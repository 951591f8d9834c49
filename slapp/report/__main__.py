"""``python -m slapp.report``: write the batch report of a manifest or a selection.

::

    python -m slapp.report --manifest_json manifest.json --output_dir report/
    python -m slapp.report --manifest_json manifest.json --threshold_scaling 0.9 \
        --output_dir report_0.9/
    python -m slapp.report --experiment_selection_id 1 --output_dir report/
    python -m slapp.report --manifest_json manifest.json --segmentation_run_ids 12,14 \
        --output_dir report/
    python -m slapp.report --manifest_json manifest.json --classifier_model_id 3 \
        --output_dir report/

writes ``report/index.html``: one row per entry (done, missing, or failed with
its message), the run that counts with its id and date, the figures of each
run, its outline PNG as a thumbnail, the distributions across the batch, and
outliers flagged. Which run counts is asked exactly as ``status`` asks it
(:mod:`slapp.db.runs`): the current run of this code version and the Suite2P
options given (segment's defaults unless given); runs of other parameters are
named beside an entry but not counted. ``--segmentation_run_ids`` shows an
explicit set of runs instead. A failed entry shows its failure's class,
message, time and where its task ran (host, scheduler job and task: the name
of its log). ``--output_json`` lists every entry as ``{"manifest_index",
"experiment_id", "status", "segmentation_run_id", "n_predicted_rois",
"n_model_cells"}``. ``--classifier_model_id`` adds a column beside Suite2P's
cells: the ROIs of the run that the model's stored predictions
(``roi_predictions``, written by ``predict``) call cells, of how many it
predicted, or "no predictions" when it has none for the run (its counts are
then null, as they are without a model). The page needs no
network; the thumbnails (``<experiment>_<run id>.png``) are linked by relative
path from the report directory, so keep the report beside the manifest's
``segmentation_plots`` when moving it.
"""
import datetime
import sys
from pathlib import Path

import argschema
import marshmallow as mm

from slapp.contracts.manifest import PLOT_DIRECTORY_NAME, load_manifest
from slapp.db.predictions import load_classifier_model, predictions_for_runs
from slapp.db.runs import (DONE, FAILED, MISSING, STATUSES, RunParameters, RunParametersSchema,
                           chosen_run_states, entry_states, selection_experiments)
from slapp.errors import SlappError
from slapp.report.entries import report_entries
from slapp.report.page import render_page
from slapp.report.statistics import add_derived_figures, flag_outliers
from slapp.utils.cli import require_one_of, run_main
from slapp.utils.files import write_bytes_atomically, write_json_atomically
from slapp.utils.query_utils import DbConnection, labeling_connection
from slapp.utils.schema import ArgSchema, ArgSchemaParser, StrictInt

REPORT_NAME = "index.html"


class ReportException(SlappError):
    """The report cannot be made as asked."""


class ReportSchema(ArgSchema, RunParametersSchema):
    """The batch (a manifest or a selection) and which runs count (segment's options)."""

    manifest_json = argschema.fields.InputFile(
        metadata={"description": "the segmentation manifest whose entries the report lists, "
                                 "in array-index order"})
    experiment_selection_id = StrictInt(
        validate=mm.validate.Range(min=1),
        metadata={"description": "instead of a manifest: every experiment of this "
                                 "selection, in sub_selected_ids order"})
    output_dir = mm.fields.Str(
        required=True,
        metadata={"description": "directory of index.html, created if needed"})
    plot_dir = mm.fields.Str(
        metadata={"description": "where the outline PNGs <experiment_id>_<run id>.png are. "
                                 "Default: segmentation_plots beside the manifest, where "
                                 "segment writes them; none for a selection"})
    segmentation_run_ids = argschema.fields.List(
        StrictInt(validate=mm.validate.Range(min=1)),
        validate=mm.validate.Length(min=1),
        metadata={"cli_as_single_argument": True,
                  "description": "show these runs (comma-separated, at most one per "
                                 "experiment of the batch) instead of the runs that count "
                                 "for the code version and Suite2P options; entries "
                                 "without one are missing"})

    classifier_model_id = StrictInt(
        validate=mm.validate.Range(min=1),
        metadata={"description": "classifier_models.id of a trained model whose stored "
                                 "predictions (predict's) are shown beside Suite2P's cell "
                                 "count; default: Suite2P's alone"})

    @mm.validates_schema
    def one_source(self, data, **kwargs):
        require_one_of(data, "manifest_json", "experiment_selection_id")


class ReportEntrySchema(mm.Schema):
    """One entry of the batch and the run the report shows for it."""

    manifest_index = StrictInt(required=True)
    experiment_id = StrictInt(required=True)
    status = mm.fields.Str(required=True, validate=mm.validate.OneOf(STATUSES))
    segmentation_run_id = StrictInt(
        required=True, allow_none=True,
        metadata={"description": "the run that counts (or the one chosen); null when none"})
    n_predicted_rois = StrictInt(
        required=True, allow_none=True,
        metadata={"description": "ROIs of the run with a prediction from "
                                 "--classifier_model_id; null without a model or a run"})
    n_model_cells = StrictInt(
        required=True, allow_none=True,
        metadata={"description": "of those, the ROIs the model calls cells; null without a "
                                 "model, a run, or any prediction for the run"})


class ReportOutputSchema(mm.Schema):
    index_html = mm.fields.Str(required=True)
    code_version = mm.fields.Str(
        required=True, allow_none=True,
        metadata={"description": "whose runs count; null with --segmentation_run_ids"})
    parameters = mm.fields.Str(
        required=True, allow_none=True,
        metadata={"description": "the Suite2P version and options whose runs count"})
    classifier_model_id = StrictInt(
        required=True, allow_none=True,
        metadata={"description": "the model whose predictions are shown; null for none"})
    entries = mm.fields.Nested(ReportEntrySchema, many=True, required=True)
    n_entries = StrictInt(required=True)
    n_done = StrictInt(required=True)
    n_missing = StrictInt(required=True)
    n_failed = StrictInt(required=True)
    n_zero_roi_runs = StrictInt(required=True)
    n_flagged = StrictInt(required=True,
                              metadata={"description": "entries with any flag"})


class BatchReport(ArgSchemaParser):
    """Write the HTML report of a batch."""

    default_schema = ReportSchema
    default_output_schema = ReportOutputSchema

    def _batch(self, label_dbconn: DbConnection) -> tuple[list, Path | None, str, Path | None]:
        """The batch's entries (experiment_id, nbinned where known), manifest, name, plots."""
        if "manifest_json" in self.args:
            manifest_path = Path(self.args["manifest_json"]).resolve()
            default_plots = manifest_path.parent / PLOT_DIRECTORY_NAME
            return (load_manifest(manifest_path), manifest_path, f"manifest {manifest_path}",
                    default_plots)
        selection_id = self.args["experiment_selection_id"]
        return ([{"experiment_id": experiment_id} for experiment_id
                 in selection_experiments(label_dbconn, selection_id)], None,
                f"experiment selection {selection_id}", None)

    def _states(self, label_dbconn: DbConnection, batch: list[dict],
                manifest_path: Path | None) -> tuple[list, RunParameters | None]:
        if "segmentation_run_ids" in self.args:
            return chosen_run_states(label_dbconn, [entry["experiment_id"] for entry in batch],
                                     self.args["segmentation_run_ids"]), None
        parameters = RunParameters.from_args(self.args)
        return entry_states(label_dbconn, batch, parameters, manifest_path), parameters

    def run(self, label_dbconn: DbConnection) -> dict:
        """Query every entry, write ``index.html``, print its path and a summary.

        Parameters
        ----------
        label_dbconn : DbConnection
            The labeling database.

        Returns
        -------
        dict
            See :class:`ReportOutputSchema`.
        """
        model = (load_classifier_model(label_dbconn, self.args["classifier_model_id"])
                 if "classifier_model_id" in self.args else None)
        batch, manifest_path, source, plot_dir = self._batch(label_dbconn)
        if self.args.get("plot_dir"):
            plot_dir = Path(self.args["plot_dir"]).resolve()
        output_dir = Path(self.args["output_dir"]).resolve()
        if output_dir.exists() and not output_dir.is_dir():
            raise ReportException(f"output_dir {output_dir} is not a directory")
        states, parameters = self._states(label_dbconn, batch, manifest_path)
        if parameters is None:
            source += "; the runs chosen: " + ", ".join(map(str, self.args[
                "segmentation_run_ids"]))
        else:
            source += (f"; runs of code version {parameters.code_version}, "
                       f"{parameters.description()}")
        predictions = (predictions_for_runs(label_dbconn, model["id"], [
            state.segmentation_run_id for state in states if state.run]) if model else None)
        entries = report_entries(states, predictions)
        add_derived_figures(entries)
        outliers = flag_outliers(entries)
        generated_at = datetime.datetime.now(datetime.timezone.utc).strftime(
            "%Y-%m-%d %H:%M UTC")
        page = render_page(entries, outliers, source, plot_dir, output_dir, generated_at,
                           model)
        output_dir.mkdir(parents=True, exist_ok=True)
        index_html = output_dir / REPORT_NAME
        write_bytes_atomically(index_html, page.encode("utf-8"))
        output = {"index_html": str(index_html),
                  "code_version": parameters.code_version if parameters else None,
                  "parameters": parameters.description() if parameters else None,
                  "classifier_model_id": model["id"] if model else None,
                  "entries": [{key: entry[key] for key in ReportEntrySchema().fields}
                              for entry in entries],
                  "n_entries": len(entries),
                  **{f"n_{status}": sum(entry["status"] == status for entry in entries)
                     for status in (DONE, MISSING, FAILED)},
                  "n_zero_roi_runs": outliers["zero_roi_runs"],
                  "n_flagged": sum(bool(entry["flags"]) for entry in entries)}
        print(f"report: {index_html} ({output['n_entries']} entries: {output['n_done']} done, "
              f"{output['n_missing']} missing, {output['n_failed']} failed; "
              f"{output['n_flagged']} flagged)")
        if self.args.get("output_json"):
            write_json_atomically(self.args["output_json"], self.get_output_json(output))
        return output


def main() -> None:  # pragma: no cover - thin CLI
    """Run the command with the labeling database from the environment."""
    parser = BatchReport(logger_name="BatchReport")
    with labeling_connection(interactive=True) as label_dbconn:
        parser.run(label_dbconn)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_main(main, "report"))
