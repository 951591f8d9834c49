"""Which manifest entries are segmented, and the array spec that resubmits the rest.

::

    python -m slapp.segmentation.status --manifest_json ./example_output.json

An entry is *done* when ``segmentation_runs`` holds a run of its experiment made
by the code version that is running now (``ophys_segmentation_commit_hash ==
code_version()``; set ``TRANSFORM_HASH`` to ask about another version). One
parameterized query reads the runs of every entry. The command prints one line
per entry, a summary, and the ``qsub -t`` / ``sbatch --array`` commands that
resubmit only the missing entries, throttled to ``--max_concurrent`` tasks at
once. It only reads the database.
"""
import shlex
import sys
from pathlib import Path

import argschema
import marshmallow as mm

from slapp.data_selection.segmentation_manifest import load_manifest
from slapp.segmentation.array_spec import array_spec
from slapp.utils.cli import run_main
from slapp.utils.code_version import code_version
from slapp.utils.files import write_json_atomically
from slapp.utils.query_utils import DbConnection, get_db_credentials, label_defaults

PBS_SCRIPT = "suite2p_array_job_example.pbs"
SLURM_SCRIPT = "suite2p_array_job_example.slurm"

RUNS_QUERY = """
SELECT runs.id, runs.ophys_experiment_id, runs.ophys_segmentation_commit_hash,
       runs.created_at,
       (SELECT count(*) FROM rois WHERE rois.segmentation_run_id = runs.id) AS n_rois
FROM segmentation_runs AS runs
WHERE runs.ophys_experiment_id = ANY(%s::bigint[])
ORDER BY runs.created_at, runs.id
"""


class SegmentationStatusSchema(argschema.ArgSchema):
    """Report which entries of a segmentation manifest are done for this code version."""

    manifest_json = argschema.fields.InputFile(
        required=True,
        metadata={"description": "the segmentation manifest the array job runs over "
                                 "(written by slapp.data_selection.segmentation_manifest)"})
    max_concurrent = mm.fields.Int(
        dump_default=10, validate=mm.validate.Range(min=0),
        metadata={"description": "at most this many tasks at once in the printed "
                                 "resubmission (the array spec's throttle suffix). 10, as "
                                 "the original jobs ran, keeps the labeling database's "
                                 "connections and the file server's load of many 512x512 "
                                 "movies read at once modest; 0 means no limit"})


class EntryStatusSchema(mm.Schema):
    """The state of one manifest entry."""

    manifest_index = mm.fields.Int(
        required=True, metadata={"description": "array task id of the entry"})
    experiment_id = mm.fields.Int(required=True)
    status = mm.fields.Str(required=True, validate=mm.validate.OneOf(["done", "missing"]))
    segmentation_run_id = mm.fields.Int(
        allow_none=True, metadata={"description": "the run of this code version, if done"})
    n_rois = mm.fields.Int(allow_none=True)
    created_at = mm.fields.Str(
        allow_none=True, metadata={"description": "when the run was written (ISO 8601)"})
    other_code_versions = mm.fields.List(
        mm.fields.Str(), required=True,
        metadata={"description": "code versions other than this one that segmented "
                                 "the experiment (their runs do not count as done)"})


class SegmentationStatusOutputSchema(mm.Schema):
    """What ``--output_json`` holds."""

    manifest_json = mm.fields.Str(required=True)
    code_version = mm.fields.Str(required=True)
    entries = mm.fields.Nested(EntryStatusSchema, many=True, required=True)
    n_done = mm.fields.Int(required=True)
    n_missing = mm.fields.Int(required=True)
    missing_indices = mm.fields.List(mm.fields.Int(), required=True)
    array_spec = mm.fields.Str(
        allow_none=True,
        metadata={"description": "qsub -t / sbatch --array value that resubmits the "
                                 "missing entries; null when none is missing"})


def fetch_runs(label_dbconn: DbConnection, experiment_ids: list[int]) -> dict[int, list[dict]]:
    """Read every segmentation run of the given experiments, with one query.

    Parameters
    ----------
    label_dbconn : DbConnection
        The labeling database.
    experiment_ids : list of int
        LIMS ophys experiment ids.

    Returns
    -------
    dict
        Experiment id -> its runs, oldest first, each a dict with ``id``,
        ``ophys_segmentation_commit_hash``, ``created_at`` and ``n_rois``.
    """
    runs: dict[int, list[dict]] = {}
    for row in label_dbconn.query(RUNS_QUERY, (list(experiment_ids),)):
        runs.setdefault(row["ophys_experiment_id"], []).append(row)
    return runs


def entry_statuses(manifest: list[dict], runs: dict[int, list[dict]],
                   version: str) -> list[dict]:
    """Decide, for each manifest entry, whether this code version has segmented it.

    Parameters
    ----------
    manifest : list of dict
        Manifest entries (``experiment_id`` is used), in array-index order.
    runs : dict
        Output of :func:`fetch_runs`.
    version : str
        The code version whose runs count as done.

    Returns
    -------
    list of dict
        One dict per entry, as :class:`EntryStatusSchema` describes.
    """
    statuses = []
    for index, entry in enumerate(manifest):
        experiment_runs = runs.get(entry["experiment_id"], [])
        current = [run for run in experiment_runs
                   if run["ophys_segmentation_commit_hash"] == version]
        others = [run["ophys_segmentation_commit_hash"] for run in experiment_runs
                  if run["ophys_segmentation_commit_hash"] != version]
        run = current[0] if current else None
        statuses.append({
            "manifest_index": index,
            "experiment_id": entry["experiment_id"],
            "status": "done" if run else "missing",
            "segmentation_run_id": run["id"] if run else None,
            "n_rois": run["n_rois"] if run else None,
            "created_at": run["created_at"].isoformat(timespec="seconds") if run else None,
            "other_code_versions": list(dict.fromkeys(others)),
        })
    return statuses


def report_lines(statuses: list[dict], spec: str | None, manifest_path: Path,
                 version: str) -> list[str]:
    """Write the human-readable report: one line per entry, a summary, the resubmission.

    Parameters
    ----------
    statuses : list of dict
        Output of :func:`entry_statuses`.
    spec : str or None
        Array spec of the missing entries, None when nothing is missing.
    manifest_path : Path
        The manifest, named in the header and the resubmission commands.
    version : str
        The code version the statuses refer to.

    Returns
    -------
    list of str
        The lines to print.
    """
    lines = [f"code version {version}: {len(statuses)} entries in {manifest_path}"]
    index_width = len(str(max(len(statuses) - 1, 0)))
    for status in statuses:
        head = f"{status['manifest_index']:>{index_width}}  {status['experiment_id']}  "
        if status["status"] == "done":
            lines.append(head + f"done     run {status['segmentation_run_id']}, "
                                f"{status['n_rois']} ROIs, "
                                f"{status['created_at']}")
        elif status["other_code_versions"]:
            others = status["other_code_versions"]
            versions = "another code version" if len(others) == 1 else \
                f"{len(others)} other code versions, latest"
            lines.append(head + f"missing  (segmented only by {versions}: {others[-1]})")
        else:
            lines.append(head + "missing")
    n_missing = sum(status["status"] == "missing" for status in statuses)
    lines.append(f"{len(statuses) - n_missing} done, {n_missing} missing")
    if spec is None:
        lines.append("nothing to resubmit: every entry is done")
        return lines
    manifest = shlex.quote(str(manifest_path))
    lines += [
        f"resubmit the {n_missing} missing {'entry' if n_missing == 1 else 'entries'}:",
        f"  PBS:   #PBS -t {spec}",
        f"         qsub -t {spec} -v MANIFEST={manifest} {PBS_SCRIPT}",
        f"  SLURM: #SBATCH --array={spec}",
        f"         sbatch --array={spec} --export=ALL,MANIFEST={manifest} {SLURM_SCRIPT}",
    ]
    return lines


class SegmentationStatus(argschema.ArgSchemaParser):
    """``python -m slapp.segmentation.status``: see the module docstring."""

    default_schema = SegmentationStatusSchema
    default_output_schema = SegmentationStatusOutputSchema

    def run(self, label_dbconn: DbConnection) -> dict:
        """Check every manifest entry, print the report and write ``--output_json``.

        Parameters
        ----------
        label_dbconn : DbConnection
            The labeling database (only read).

        Returns
        -------
        dict
            The report, as :class:`SegmentationStatusOutputSchema` describes.
        """
        manifest_path = Path(self.args["manifest_json"]).resolve()
        manifest = load_manifest(manifest_path)
        version = code_version()
        runs = fetch_runs(label_dbconn, [entry["experiment_id"] for entry in manifest])
        statuses = entry_statuses(manifest, runs, version)
        missing = [status["manifest_index"] for status in statuses
                   if status["status"] == "missing"]
        spec = array_spec(missing, self.args["max_concurrent"]) if missing else None
        print("\n".join(report_lines(statuses, spec, manifest_path, version)))
        report = {
            "manifest_json": str(manifest_path),
            "code_version": version,
            "entries": statuses,
            "n_done": len(statuses) - len(missing),
            "n_missing": len(missing),
            "missing_indices": missing,
            "array_spec": spec,
        }
        if self.args.get("output_json"):
            write_json_atomically(self.args["output_json"], self.get_output_json(report))
        return report


def main() -> None:
    """Parse the command line, connect to the labeling database and report."""
    status = SegmentationStatus()
    with DbConnection(**get_db_credentials(**label_defaults), read_only=True) as dbconn:
        status.run(dbconn)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_main(main, "status"))
