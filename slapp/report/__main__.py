"""``python -m slapp.report``: write the batch report of a manifest or a selection.

::

    python -m slapp.report --manifest_json manifest.json --output_dir report/
    python -m slapp.report --experiment_selection_id 1 --output_dir report/

writes ``report/index.html``: one row per entry (done, missing, or failed with
its message), the figures of each run, its outline PNG as a thumbnail, the
distributions across the batch, and outliers flagged. The page needs no
network; the thumbnails are linked by relative path from the report directory,
so keep the report beside the manifest's ``segmentation_plots`` when moving it.
"""
import datetime
import sys
from pathlib import Path

import argschema
import marshmallow as mm

from slapp.contracts.manifest import PLOT_DIRECTORY_NAME, load_manifest
from slapp.errors import SlappError
from slapp.report.entries import DONE, FAILED, MISSING, fetch_entries
from slapp.report.page import render_page
from slapp.report.statistics import add_derived_figures, flag_outliers
from slapp.utils.cli import require_one_of, run_main
from slapp.utils.files import write_bytes_atomically, write_json_atomically
from slapp.utils.query_utils import DbConnection, get_db_credentials, label_defaults

REPORT_NAME = "index.html"


class ReportException(SlappError):
    """The report cannot be made as asked."""


class ReportSchema(argschema.ArgSchema):
    manifest_json = argschema.fields.InputFile(
        metadata={"description": "the segmentation manifest whose entries the report lists, "
                                 "in array-index order"})
    experiment_selection_id = mm.fields.Int(
        validate=mm.validate.Range(min=1),
        metadata={"description": "instead of a manifest: every experiment of this "
                                 "selection, in sub_selected_ids order"})
    output_dir = mm.fields.Str(
        required=True,
        metadata={"description": "directory of index.html, created if needed"})
    plot_dir = mm.fields.Str(
        metadata={"description": "where the outline PNGs <experiment_id>.png are. Default: "
                                 "segmentation_plots beside the manifest, where segment "
                                 "writes them; none for a selection"})

    @mm.validates_schema
    def one_source(self, data, **kwargs):
        require_one_of(data, "manifest_json", "experiment_selection_id")


class ReportOutputSchema(mm.Schema):
    index_html = mm.fields.Str(required=True)
    n_entries = mm.fields.Int(required=True)
    n_done = mm.fields.Int(required=True)
    n_missing = mm.fields.Int(required=True)
    n_failed = mm.fields.Int(required=True)
    n_zero_roi_runs = mm.fields.Int(required=True)
    n_flagged = mm.fields.Int(required=True,
                              metadata={"description": "entries with any flag"})


def selection_experiments(label_dbconn: DbConnection, experiment_selection_id: int) -> list:
    """The ``sub_selected_ids`` of a selection.

    Raises
    ------
    ReportException
        If there is no such selection.
    """
    rows = label_dbconn.query("SELECT sub_selected_ids FROM experiment_selection WHERE id = %s",
                              (experiment_selection_id,))
    if not rows:
        raise ReportException(
            f"there is no experiment selection with id {experiment_selection_id}")
    return rows[0]["sub_selected_ids"]


class BatchReport(argschema.ArgSchemaParser):
    """Write the HTML report of a batch."""

    default_schema = ReportSchema
    default_output_schema = ReportOutputSchema

    def _batch(self, label_dbconn: DbConnection) -> tuple[list, Path | None, str, Path | None]:
        if "manifest_json" in self.args:
            manifest_path = Path(self.args["manifest_json"]).resolve()
            experiment_ids = [entry["experiment_id"] for entry in load_manifest(manifest_path)]
            default_plots = manifest_path.parent / PLOT_DIRECTORY_NAME
            return experiment_ids, manifest_path, f"manifest {manifest_path}", default_plots
        selection_id = self.args["experiment_selection_id"]
        return (selection_experiments(label_dbconn, selection_id), None,
                f"experiment selection {selection_id}", None)

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
        experiment_ids, manifest_path, source, plot_dir = self._batch(label_dbconn)
        if self.args.get("plot_dir"):
            plot_dir = Path(self.args["plot_dir"]).resolve()
        output_dir = Path(self.args["output_dir"]).resolve()
        if output_dir.exists() and not output_dir.is_dir():
            raise ReportException(f"output_dir {output_dir} is not a directory")
        entries = fetch_entries(label_dbconn, experiment_ids, manifest_path)
        add_derived_figures(entries)
        outliers = flag_outliers(entries)
        generated_at = datetime.datetime.now(datetime.timezone.utc).strftime(
            "%Y-%m-%d %H:%M UTC")
        page = render_page(entries, outliers, source, plot_dir, output_dir, generated_at)
        output_dir.mkdir(parents=True, exist_ok=True)
        index_html = output_dir / REPORT_NAME
        write_bytes_atomically(index_html, page.encode("utf-8"))
        output = {"index_html": str(index_html), "n_entries": len(entries),
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
    with DbConnection(**get_db_credentials(**label_defaults)) as label_dbconn:
        parser.run(label_dbconn)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_main(main, "report"))
