"""Which manifest entries are segmented, which failed and why, and the commands to resubmit.

::

    python -m slapp.segmentation.status --manifest_json ./example_output.json
    python -m slapp.segmentation.status --manifest_json ./example_output.json \\
        --threshold_scaling 0.9

The question is asked for the code version that is running now
(``code_version()``; set ``TRANSFORM_HASH`` to ask about another version) and
for the Suite2P options given (the segment command's, with the same defaults),
each entry's ``nbinned`` and the installed Suite2P version: together they make
each entry's run identity, exactly as a segment task computes it. Which run
counts and an entry's state are :mod:`slapp.db.runs`'s: an entry is

* *done* when its identity has a current run (not superseded);
* *failed* when not done and a task of this code version and these parameters
  recorded a failure (the latest one is shown with its class and message);
* *missing* otherwise. A missing entry segmented only with other parameters
  (or only by other code versions) says so.

The command prints one line per entry, a summary, and for the missing entries,
the failed ones, and only those that failed for a transient reason (killed,
out of memory, database unreachable) the complete commands that resubmit them
to SLURM (``sbatch --array``), Torque (``qsub -t``) and PBS Pro (``qsub -J``),
throttled to ``--max_concurrent`` tasks at once: the job script by its absolute
path, the manifest, and every Suite2P option that is not segment's default (see
:mod:`slapp.segmentation.resubmit`). It only reads the database.

The failed entries killed for memory are resubmitted by commands of their own
that ask for more memory (SLURM ``--mem=9G``, Torque ``-l mem=9gb``, PBS Pro
``-l select=1:mem=9gb``): :func:`slapp.segmentation.memory_model.out_of_memory_request`
of the largest peak :mod:`slapp.segmentation.plan` predicts for them from their
movies' headers and of the job scripts' default request
(:data:`~slapp.segmentation.memory_model.JOB_SCRIPT_REQUEST`), assumed to be the
request they died under since a task's request is not recorded; the printout
says so.
"""
import dataclasses
import sys
from pathlib import Path

import marshmallow as mm

from slapp.contracts.manifest import load_manifest
from slapp.db.runs import (DONE, FAILED, MISSING, EntryState, RunParameters,
                           RunParametersSchema, entry_states)
from slapp.segmentation.failures import OUT_OF_MEMORY, TRANSIENT_CLASSES
from slapp.segmentation.memory_model import JOB_SCRIPT_REQUEST, out_of_memory_request
from slapp.segmentation.plan import PlanException, entry_plan
from slapp.segmentation.array_spec import array_spec
from slapp.segmentation.resubmit import (PBS_PRO, PBS_SCRIPT, SLURM, SLURM_SCRIPT, TORQUE,
                                         Resubmission, resubmission)
from slapp.segmentation.settings import (SettingsException, Suite2pOptions,
                                         options_from_recorded_settings)
from slapp.utils.cli import run_main
from slapp.utils.files import write_json_atomically
from slapp.utils.options import ManifestJsonSchema
from slapp.utils.query_utils import DbConnection, labeling_connection
from slapp.utils.schema import ArgSchema, ArgSchemaParser, StrictInt


class SegmentationStatusSchema(ArgSchema, ManifestJsonSchema, RunParametersSchema):
    """Report which manifest entries are done for this code version and these parameters."""

    max_concurrent = StrictInt(
        dump_default=10, validate=mm.validate.Range(min=0),
        metadata={"description": "at most this many tasks at once in the printed "
                                 "resubmission (the array spec's throttle suffix). 10, as "
                                 "the original jobs ran, keeps the labeling database's "
                                 "connections and the file server's load of many 512x512 "
                                 "movies read at once modest; 0 means no limit"})
    slurm_script = mm.fields.Str(
        dump_default=str(SLURM_SCRIPT),
        metadata={"description": "the SLURM job script the printed sbatch commands submit, "
                                 "by absolute path. Default: the example this checkout "
                                 "ships; give your edited copy"})
    pbs_script = mm.fields.Str(
        dump_default=str(PBS_SCRIPT),
        metadata={"description": "the PBS job script the printed qsub commands (Torque and "
                                 "PBS Pro) submit, by absolute path. Default: the example "
                                 "this checkout ships; give your edited copy"})


class EntryStatusSchema(mm.Schema):
    """The state of one manifest entry."""

    manifest_index = StrictInt(
        required=True, metadata={"description": "array task id of the entry"})
    experiment_id = StrictInt(required=True)
    status = mm.fields.Str(required=True, validate=mm.validate.OneOf([DONE, FAILED, MISSING]))
    parameters_digest = mm.fields.Str(
        required=True, metadata={"description": "the run identity's parameters digest"})
    segmentation_run_id = StrictInt(
        allow_none=True, metadata={"description": "the run of this identity, if done"})
    n_rois = StrictInt(allow_none=True)
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


class OutOfMemorySchema(mm.Schema):
    """The larger request of the failed entries killed for memory."""

    indices = mm.fields.List(StrictInt(), required=True)
    memory_request = mm.fields.Str(
        required=True, metadata={"description": "what their resubmit commands ask, e.g. 9G"})
    assumed_failed_request = mm.fields.Str(
        required=True, metadata={"description": "the request assumed they died under: the "
                                                "job scripts' default (a task's request is "
                                                "not recorded)"})
    predicted_peak_rss_bytes = StrictInt(
        allow_none=True, metadata={"description": "the largest of their predicted peaks; "
                                                  "null when no movie could be read"})
    unreadable = mm.fields.List(
        mm.fields.Str(), required=True,
        metadata={"description": "why a movie could not be read for its prediction"})


class SegmentationStatusOutputSchema(mm.Schema):
    """What ``--output_json`` holds."""

    manifest_json = mm.fields.Str(required=True)
    code_version = mm.fields.Str(required=True)
    suite2p_version = mm.fields.Str(required=True)
    entries = mm.fields.Nested(EntryStatusSchema, many=True, required=True)
    n_done = StrictInt(required=True)
    n_failed = StrictInt(required=True)
    n_missing = StrictInt(required=True)
    missing_indices = mm.fields.List(StrictInt(), required=True)
    failed_indices = mm.fields.List(StrictInt(), required=True)
    transient_failed_indices = mm.fields.List(
        StrictInt(), required=True,
        metadata={"description": "failed for a transient reason: " + ", ".join(
            TRANSIENT_CLASSES)})
    array_spec = mm.fields.Str(
        allow_none=True,
        metadata={"description": "qsub -t / sbatch --array value that resubmits the "
                                 "missing entries; null when none is missing"})
    failed_array_spec = mm.fields.Str(allow_none=True)
    transient_array_spec = mm.fields.Str(allow_none=True)
    resubmit_commands = mm.fields.Dict(
        keys=mm.fields.Str(), values=mm.fields.Dict(keys=mm.fields.Str(),
                                                    values=mm.fields.List(mm.fields.Str())),
        required=True,
        metadata={"description": "for each group with entries (missing, failed, transient): "
                                 "scheduler (SLURM, Torque, PBS Pro) -> the complete "
                                 "commands that resubmit it with these parameters (the "
                                 "entries killed for memory in commands of their own)"})
    out_of_memory = mm.fields.Nested(
        OutOfMemorySchema, allow_none=True, required=True,
        metadata={"description": "null when no failed entry was killed for memory"})


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


def entry_statuses(states: list[EntryState], parameters: RunParameters,
                   nbinned: list[int]) -> list[dict]:
    """Describe each entry's state (from :mod:`slapp.db.runs`) as status reports it.

    Parameters
    ----------
    states : list of EntryState
        From :func:`slapp.db.runs.entry_states`, in manifest order.
    parameters : RunParameters
        The code version and parameters asked about.
    nbinned : list of int
        Each entry's ``nbinned``.

    Returns
    -------
    list of dict
        One dict per entry, as :class:`EntryStatusSchema` describes.
    """
    statuses = []
    for state, entry_nbinned in zip(states, nbinned):
        run, failure = state.run, state.failure
        statuses.append({
            "manifest_index": state.manifest_index,
            "experiment_id": state.experiment_id,
            "status": state.status,
            "parameters_digest": state.parameters_digest,
            "segmentation_run_id": state.segmentation_run_id,
            "n_rois": run.n_rois if run else None,
            "created_at": _when(run.created_at) if run else None,
            "failure_class": failure.failure_class if failure else None,
            "failure_message": failure.message if failure else None,
            "failed_at": _when(failure.created_at) if failure else None,
            "other_parameters": [
                describe_other_parameters(other.columns, parameters.options, entry_nbinned,
                                          parameters.suite2p_version)
                for other in state.other_parameter_runs],
            "other_code_versions": state.other_code_versions,
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


GROUPS = {"missing": "missing {}", "failed": "failed {}",
          "transient": "{} that failed for a transient reason (killed, out of memory, "
                       "database unreachable)"}


def out_of_memory_retry(statuses: list[dict], manifest: list[dict],
                        options: Suite2pOptions) -> dict | None:
    """The larger request of the failed entries that were killed for memory.

    Parameters
    ----------
    statuses : list of dict
        Output of :func:`entry_statuses`.
    manifest : list of dict
        The manifest's entries (their movies are sized from the header).
    options : Suite2pOptions
        The Suite2P options asked about (``tau`` and ``fs`` set the bins).

    Returns
    -------
    dict or None
        As :class:`OutOfMemorySchema` describes; None when no failed entry
        was killed for memory.
    """
    indices = [status["manifest_index"] for status in statuses
               if status["status"] == FAILED and status["failure_class"] == OUT_OF_MEMORY]
    if not indices:
        return None
    peaks, unreadable = [], []
    for index in indices:
        try:
            peaks.append(entry_plan(index, manifest[index], options)["predicted_peak_rss_bytes"])
        except PlanException as error:
            unreadable.append(str(error))
    peak = max(peaks, default=None)
    return {"indices": indices, "memory_request": out_of_memory_request(peak, JOB_SCRIPT_REQUEST),
            "assumed_failed_request": JOB_SCRIPT_REQUEST, "predicted_peak_rss_bytes": peak,
            "unreadable": unreadable}


def _out_of_memory_lines(retry: dict) -> list[str]:
    peak = retry["predicted_peak_rss_bytes"]
    predicted = (f"largest predicted peak {peak / 1e9:.1f} GB" if peak is not None
                 else "no movie could be read for a prediction")
    return ([f"killed for memory ({array_spec(retry['indices'])}): resubmitted below with "
             f"{retry['memory_request']} ({predicted}; the request they died under is "
             f"assumed to be the job scripts' default {retry['assumed_failed_request']}, "
             f"since a task's request is not recorded)"]
            + [f"  cannot predict: {why}" for why in retry["unreadable"]])


def _resubmission_lines(what: str, group: Resubmission) -> list[str]:
    count = len(group.indices)
    lines = [f"resubmit the {count} {what.format('entry' if count == 1 else 'entries')}:"]
    for scheduler in (SLURM, TORQUE, PBS_PRO):
        label = f"  {scheduler}:".ljust(11)
        lines += [f"{label}{command}" if number == 0 else f"{' ' * 11}{command}"
                  for number, command in enumerate(group.commands[scheduler])]
    return lines


def report_lines(statuses: list[dict], groups: dict[str, Resubmission | None],
                 manifest_path: Path, version: str, options_text: str = "",
                 out_of_memory: dict | None = None) -> list[str]:
    """Write the human-readable report: one line per entry, a summary, the resubmissions.

    Parameters
    ----------
    statuses : list of dict
        Output of :func:`entry_statuses`.
    groups : dict
        The resubmissions of ``"missing"``, ``"failed"`` and ``"transient"``
        entries (None where there is no entry).
    manifest_path : Path
        The manifest, named in the header.
    version : str
        The code version the statuses refer to.
    options_text : str
        How the parameters asked about are described in the header.
    out_of_memory : dict, optional
        Output of :func:`out_of_memory_retry`, said before the resubmissions.

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
    if groups["missing"] is None and groups["failed"] is None:
        lines.append("nothing to resubmit: every entry is done")
        return lines
    if out_of_memory:
        lines += _out_of_memory_lines(out_of_memory)
    for key, what in GROUPS.items():
        if groups[key] is not None:
            lines += _resubmission_lines(what, groups[key])
    return lines


def _selected(status: dict, key: str) -> bool:
    if key == "missing":
        return status["status"] == MISSING
    if key == "failed":
        return status["status"] == FAILED
    return status["status"] == FAILED and status["failure_class"] in TRANSIENT_CLASSES


class SegmentationStatus(ArgSchemaParser):
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
        parameters = RunParameters.from_args(self.args)
        version = parameters.code_version
        states = entry_states(label_dbconn, manifest, parameters, manifest_path)
        statuses = entry_statuses(states, parameters, [entry["nbinned"] for entry in manifest])
        indices = {key: [status["manifest_index"] for status in statuses
                         if _selected(status, key)]
                   for key in GROUPS}
        retry = out_of_memory_retry(statuses, manifest, parameters.options)
        memory_by_index = dict.fromkeys(retry["indices"], retry["memory_request"]) \
            if retry else None
        groups = {key: resubmission(found, manifest_path, parameters,
                                    max_concurrent=self.args["max_concurrent"],
                                    memory_by_index=memory_by_index,
                                    slurm_script=Path(self.args["slurm_script"]),
                                    pbs_script=Path(self.args["pbs_script"]))
                  if found else None
                  for key, found in indices.items()}
        print("\n".join(report_lines(statuses, groups, manifest_path, version,
                                     parameters.description(), retry)))
        specs = {key: group.array_spec if group else None for key, group in groups.items()}
        report = {
            "manifest_json": str(manifest_path),
            "code_version": version,
            "suite2p_version": parameters.suite2p_version,
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
            "resubmit_commands": {key: group.commands for key, group in groups.items()
                                  if group is not None},
            "out_of_memory": retry,
        }
        if self.args.get("output_json"):
            write_json_atomically(self.args["output_json"], self.get_output_json(report))
        return report


def main() -> None:
    """Parse the command line, connect to the labeling database and report."""
    status = SegmentationStatus()
    with labeling_connection(interactive=True, read_only=True) as dbconn:
        status.run(dbconn)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_main(main, "status"))
