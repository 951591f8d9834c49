"""Which manifest entries are segmented, which failed and why, and the array specs to resubmit.

::

    python -m slapp.segmentation.status --manifest_json ./example_output.json
    python -m slapp.segmentation.status --manifest_json ./example_output.json \\
        --threshold_scaling 0.9

The question is asked for the code version that is running now
(``code_version()``; set ``TRANSFORM_HASH`` to ask about another version) and
for the Suite2P options given (the segment command's, with the same defaults),
each entry's ``nbinned`` and the installed Suite2P version: together they make
each entry's run identity, exactly as a segment task computes it. An entry is

* *done* when a run of that identity is stored;
* *failed* when not done and a task of this code version and these parameters
  recorded a failure (the latest one is shown with its class and message);
* *missing* otherwise. A missing entry segmented only with other parameters
  (or only by other code versions) says so.

Two queries read every entry's runs and latest failures. The command prints
one line per entry, a summary, and the ``qsub -t`` / ``sbatch --array``
commands that resubmit the missing entries, the failed ones, and only those
that failed for a transient reason (killed, out of memory, database
unreachable), throttled to ``--max_concurrent`` tasks at once. It only reads
the database.
"""
import dataclasses
import shlex
import sys
from importlib.metadata import PackageNotFoundError
from pathlib import Path

import argschema
import marshmallow as mm

from slapp.contracts.manifest import load_manifest
from slapp.errors import SlappError
from slapp.segmentation.array_spec import array_spec
from slapp.segmentation.failures import TRANSIENT_CLASSES
from slapp.segmentation.settings import (SettingsException, Suite2pOptions,
                                         Suite2pSettingsSchema, options_from_recorded_settings,
                                         parameters_digest)
from slapp.segmentation.suite2p_runner import suite2p_version as installed_suite2p_version
from slapp.utils.cli import run_main
from slapp.utils.code_version import code_version
from slapp.utils.files import write_json_atomically
from slapp.utils.options import ManifestJsonSchema
from slapp.utils.query_utils import DbConnection, get_db_credentials, label_defaults

PBS_SCRIPT = "suite2p_array_job_example.pbs"
SLURM_SCRIPT = "suite2p_array_job_example.slurm"
DONE, FAILED, MISSING = "done", "failed", "missing"

RUNS_QUERY = """
SELECT runs.id, runs.ophys_experiment_id, runs.ophys_segmentation_commit_hash,
       runs.parameters_digest, runs.nbinned, runs.suite2p_version, runs.suite2p_settings,
       runs.created_at,
       (SELECT count(*) FROM rois WHERE rois.segmentation_run_id = runs.id) AS n_rois
FROM segmentation_runs AS runs
WHERE runs.ophys_experiment_id = ANY(%s::bigint[])
ORDER BY runs.created_at, runs.id
"""

# The latest failure of each (experiment, parameters) of one code version.
FAILURES_QUERY = """
SELECT DISTINCT ON (ophys_experiment_id, parameters_digest)
       ophys_experiment_id, parameters_digest, failure_class, message, created_at, hostname,
       scheduler_job_id, scheduler_task_id
FROM segmentation_failures
WHERE ophys_experiment_id = ANY(%s::bigint[]) AND ophys_segmentation_commit_hash = %s
ORDER BY ophys_experiment_id, parameters_digest, created_at DESC, id DESC
"""


class StatusException(SlappError):
    """The status cannot be worked out from these inputs."""


class SegmentationStatusSchema(argschema.ArgSchema, ManifestJsonSchema, Suite2pSettingsSchema):
    """Report which manifest entries are done for this code version and these parameters."""

    max_concurrent = mm.fields.Int(
        dump_default=10, validate=mm.validate.Range(min=0),
        metadata={"description": "at most this many tasks at once in the printed "
                                 "resubmission (the array spec's throttle suffix). 10, as "
                                 "the original jobs ran, keeps the labeling database's "
                                 "connections and the file server's load of many 512x512 "
                                 "movies read at once modest; 0 means no limit"})
    suite2p_version = mm.fields.Str(
        dump_default=None, allow_none=True,
        metadata={"description": "the Suite2P version the tasks run (part of a run's "
                                 "parameters). Default: the one installed here, which is "
                                 "the tasks' when status runs in their environment; give it "
                                 "where Suite2P is not installed"})


class EntryStatusSchema(mm.Schema):
    """The state of one manifest entry."""

    manifest_index = mm.fields.Int(
        required=True, metadata={"description": "array task id of the entry"})
    experiment_id = mm.fields.Int(required=True)
    status = mm.fields.Str(required=True, validate=mm.validate.OneOf([DONE, FAILED, MISSING]))
    parameters_digest = mm.fields.Str(
        required=True, metadata={"description": "the run identity's parameters digest"})
    segmentation_run_id = mm.fields.Int(
        allow_none=True, metadata={"description": "the run of this identity, if done"})
    n_rois = mm.fields.Int(allow_none=True)
    created_at = mm.fields.Str(
        allow_none=True, metadata={"description": "when the run was written (ISO 8601)"})
    failure_class = mm.fields.Str(
        allow_none=True, metadata={"description": "of the latest failure, if failed (or if a "
                                                  "task failed after the run was stored)"})
    failure_message = mm.fields.Str(allow_none=True)
    failed_at = mm.fields.Str(allow_none=True)
    other_parameters = mm.fields.List(
        mm.fields.Str(), required=True,
        metadata={"description": "runs of this code version with other parameters, each "
                                 "described by what differs (they do not count as done)"})
    other_code_versions = mm.fields.List(
        mm.fields.Str(), required=True,
        metadata={"description": "code versions other than this one that segmented "
                                 "the experiment (their runs do not count as done)"})


class SegmentationStatusOutputSchema(mm.Schema):
    """What ``--output_json`` holds."""

    manifest_json = mm.fields.Str(required=True)
    code_version = mm.fields.Str(required=True)
    suite2p_version = mm.fields.Str(required=True)
    entries = mm.fields.Nested(EntryStatusSchema, many=True, required=True)
    n_done = mm.fields.Int(required=True)
    n_failed = mm.fields.Int(required=True)
    n_missing = mm.fields.Int(required=True)
    missing_indices = mm.fields.List(mm.fields.Int(), required=True)
    failed_indices = mm.fields.List(mm.fields.Int(), required=True)
    transient_failed_indices = mm.fields.List(
        mm.fields.Int(), required=True,
        metadata={"description": "failed for a transient reason: " + ", ".join(
            TRANSIENT_CLASSES)})
    array_spec = mm.fields.Str(
        allow_none=True,
        metadata={"description": "qsub -t / sbatch --array value that resubmits the "
                                 "missing entries; null when none is missing"})
    failed_array_spec = mm.fields.Str(allow_none=True)
    transient_array_spec = mm.fields.Str(allow_none=True)


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
        ``ophys_segmentation_commit_hash``, ``parameters_digest``, ``nbinned``,
        ``suite2p_version``, ``suite2p_settings``, ``created_at`` and ``n_rois``.
    """
    runs: dict[int, list[dict]] = {}
    for row in label_dbconn.query(RUNS_QUERY, (list(experiment_ids),)):
        runs.setdefault(row["ophys_experiment_id"], []).append(row)
    return runs


def fetch_failures(label_dbconn: DbConnection, experiment_ids: list[int],
                   version: str) -> dict[int, list[dict]]:
    """The latest recorded failure of each (experiment, parameters digest) of ``version``.

    Returns
    -------
    dict
        Experiment id -> its failures (``parameters_digest`` may be None: the
        task failed before its settings were known).
    """
    failures: dict[int, list[dict]] = {}
    for row in label_dbconn.query(FAILURES_QUERY, (list(experiment_ids), version)):
        failures.setdefault(row["ophys_experiment_id"], []).append(row)
    return failures


def describe_other_parameters(run: dict, options: Suite2pOptions, nbinned: int,
                              suite2p_version: str) -> str:
    """Name a run of other parameters by what differs from the ones asked about.

    E.g. ``"run 7: threshold_scaling 0.9"`` or ``"run 7: nbinned 39, Suite2P 1.0.0"``.
    """
    differences = []
    try:
        recorded = options_from_recorded_settings(run["suite2p_settings"])
    except SettingsException:
        differences.append("settings not readable")
    else:
        differences += [f"{field.name} {getattr(recorded, field.name)}"
                        for field in dataclasses.fields(Suite2pOptions)
                        if getattr(recorded, field.name) != getattr(options, field.name)]
    if run["nbinned"] != nbinned:
        differences.append(f"nbinned {run['nbinned']}")
    if run["suite2p_version"] != suite2p_version:
        differences.append(f"Suite2P {run['suite2p_version']}")
    return f"run {run['id']}: {', '.join(differences) or 'other parameters'}"


def _when(moment) -> str:
    return moment.isoformat(timespec="seconds")


def entry_statuses(manifest: list[dict], runs: dict[int, list[dict]],
                   failures: dict[int, list[dict]], version: str, options: Suite2pOptions,
                   suite2p_version: str) -> list[dict]:
    """Decide, for each manifest entry, whether it is done, failed or missing.

    Parameters
    ----------
    manifest : list of dict
        Manifest entries (``experiment_id`` and ``nbinned`` are used), in
        array-index order.
    runs : dict
        Output of :func:`fetch_runs`.
    failures : dict
        Output of :func:`fetch_failures` for ``version``.
    version : str
        The code version whose runs count.
    options : Suite2pOptions
        The Suite2P options whose runs count.
    suite2p_version : str
        The Suite2P version whose runs count.

    Returns
    -------
    list of dict
        One dict per entry, as :class:`EntryStatusSchema` describes.
    """
    statuses = []
    for index, entry in enumerate(manifest):
        experiment_id = entry["experiment_id"]
        digest = parameters_digest(options, entry["nbinned"], suite2p_version)
        experiment_runs = runs.get(experiment_id, [])
        this_version = [run for run in experiment_runs
                        if run["ophys_segmentation_commit_hash"] == version]
        run = next((run for run in this_version if run["parameters_digest"] == digest), None)
        failure = max((failure for failure in failures.get(experiment_id, [])
                       if failure["parameters_digest"] in (digest, None)),
                      key=lambda failure: failure["created_at"], default=None)
        if run is not None and failure is not None and failure["created_at"] < run["created_at"]:
            failure = None  # a failure before the run was stored is history
        status = DONE if run is not None else FAILED if failure is not None else MISSING
        others = [run["ophys_segmentation_commit_hash"] for run in experiment_runs
                  if run["ophys_segmentation_commit_hash"] != version]
        statuses.append({
            "manifest_index": index,
            "experiment_id": experiment_id,
            "status": status,
            "parameters_digest": digest,
            "segmentation_run_id": run["id"] if run else None,
            "n_rois": run["n_rois"] if run else None,
            "created_at": _when(run["created_at"]) if run else None,
            "failure_class": failure["failure_class"] if failure else None,
            "failure_message": failure["message"] if failure else None,
            "failed_at": _when(failure["created_at"]) if failure else None,
            "other_parameters": [
                describe_other_parameters(other, options, entry["nbinned"], suite2p_version)
                for other in this_version if other["parameters_digest"] != digest],
            "other_code_versions": list(dict.fromkeys(others)),
        })
    return statuses


def _entry_line(status: dict, index_width: int) -> str:
    head = f"{status['manifest_index']:>{index_width}}  {status['experiment_id']}  "
    failure = f"{status['failure_class']}: {status['failure_message']} ({status['failed_at']})"
    if status["status"] == DONE:
        line = (head + f"done     run {status['segmentation_run_id']}, {status['n_rois']} ROIs, "
                f"{status['created_at']}")
        return line + (f"; a later task failed, {failure}" if status["failure_class"] else "")
    if status["status"] == FAILED:
        return head + f"failed   {failure}"
    if status["other_parameters"]:
        runs = status["other_parameters"]
        return head + ("missing  (segmented only with other parameters: "
                       f"{'; '.join(runs)})")
    if status["other_code_versions"]:
        others = status["other_code_versions"]
        versions = "another code version" if len(others) == 1 else \
            f"{len(others)} other code versions, latest"
        return head + f"missing  (segmented only by {versions}: {others[-1]})"
    return head + "missing"


def _resubmission(what: str, indices: list[int], spec: str, manifest_path: Path) -> list[str]:
    manifest = shlex.quote(str(manifest_path))
    return [
        f"resubmit the {len(indices)} {what.format('entry' if len(indices) == 1 else 'entries')}:",
        f"  PBS:   #PBS -t {spec}",
        f"         qsub -t {spec} -v MANIFEST={manifest} {PBS_SCRIPT}",
        f"  SLURM: #SBATCH --array={spec}",
        f"         sbatch --array={spec} --export=ALL,MANIFEST={manifest} {SLURM_SCRIPT}",
    ]


def report_lines(statuses: list[dict], specs: dict[str, str | None], manifest_path: Path,
                 version: str, options_text: str = "") -> list[str]:
    """Write the human-readable report: one line per entry, a summary, the resubmissions.

    Parameters
    ----------
    statuses : list of dict
        Output of :func:`entry_statuses`.
    specs : dict
        Array specs under ``"missing"``, ``"failed"`` and ``"transient"`` (None
        where there is no entry).
    manifest_path : Path
        The manifest, named in the header and the resubmission commands.
    version : str
        The code version the statuses refer to.
    options_text : str
        How the parameters asked about are described in the header.

    Returns
    -------
    list of str
        The lines to print.
    """
    lines = [f"code version {version}: {len(statuses)} entries in {manifest_path}"]
    if options_text:
        lines.append(f"parameters: {options_text}")
    index_width = len(str(max(len(statuses) - 1, 0)))
    lines += [_entry_line(status, index_width) for status in statuses]
    count = {name: sum(status["status"] == name for status in statuses)
             for name in (DONE, FAILED, MISSING)}
    transient = sum(status["status"] == FAILED and status["failure_class"] in TRANSIENT_CLASSES
                    for status in statuses)
    failed = f"{count[FAILED]} failed" + (f" ({transient} for a transient reason)"
                                          if transient else "")
    lines.append(f"{count[DONE]} done, {failed}, {count[MISSING]} missing")
    if specs["missing"] is None and specs["failed"] is None:
        lines.append("nothing to resubmit: every entry is done")
        return lines
    for key, what in (("missing", "missing {}"), ("failed", "failed {}"),
                      ("transient", "{} that failed for a transient reason (killed, out of "
                                    "memory, database unreachable)")):
        indices = [status["manifest_index"] for status in statuses
                   if _selected(status, key)]
        if specs[key] is not None:
            lines += _resubmission(what, indices, specs[key], manifest_path)
    return lines


def _selected(status: dict, key: str) -> bool:
    if key == "missing":
        return status["status"] == MISSING
    if key == "failed":
        return status["status"] == FAILED
    return status["status"] == FAILED and status["failure_class"] in TRANSIENT_CLASSES


def options_description(options: Suite2pOptions, suite2p_version: str) -> str:
    """``"Suite2P 1.1.0, threshold_scaling 0.9 (other options default)"``."""
    defaults = Suite2pOptions.defaults()
    changed = [f"{field.name} {getattr(options, field.name)}"
               for field in dataclasses.fields(Suite2pOptions)
               if getattr(options, field.name) != getattr(defaults, field.name)]
    return f"Suite2P {suite2p_version}, " + (
        f"{', '.join(changed)} (other options default)" if changed else "default options")


class SegmentationStatus(argschema.ArgSchemaParser):
    """``python -m slapp.segmentation.status``: see the module docstring."""

    default_schema = SegmentationStatusSchema
    default_output_schema = SegmentationStatusOutputSchema

    def _suite2p_version(self) -> str:
        if self.args["suite2p_version"]:
            return self.args["suite2p_version"]
        try:
            return installed_suite2p_version()
        except PackageNotFoundError:
            raise StatusException("Suite2P is not installed here: give --suite2p_version, "
                                  "the version the segment tasks run") from None

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
        options = Suite2pOptions.from_args(self.args)
        suite2p_version = self._suite2p_version()
        experiment_ids = [entry["experiment_id"] for entry in manifest]
        statuses = entry_statuses(manifest, fetch_runs(label_dbconn, experiment_ids),
                                  fetch_failures(label_dbconn, experiment_ids, version),
                                  version, options, suite2p_version)
        indices = {key: [status["manifest_index"] for status in statuses
                         if _selected(status, key)]
                   for key in ("missing", "failed", "transient")}
        specs = {key: array_spec(found, self.args["max_concurrent"]) if found else None
                 for key, found in indices.items()}
        print("\n".join(report_lines(statuses, specs, manifest_path, version,
                                     options_description(options, suite2p_version))))
        report = {
            "manifest_json": str(manifest_path),
            "code_version": version,
            "suite2p_version": suite2p_version,
            "entries": statuses,
            "n_done": sum(status["status"] == DONE for status in statuses),
            "n_failed": len(indices["failed"]),
            "n_missing": len(indices["missing"]),
            "missing_indices": indices["missing"],
            "failed_indices": indices["failed"],
            "transient_failed_indices": indices["transient"],
            "array_spec": specs["missing"],
            "failed_array_spec": specs["failed"],
            "transient_array_spec": specs["transient"],
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
