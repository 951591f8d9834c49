"""Which run counts: a run's identity, the current run of an identity, an entry's state.

Every reader of ``segmentation_runs`` (status, report, run_local, the NWB export,
compare, the labeling steps) asks this module, so that "done" means one thing.

* A run's **identity** is (experiment, code version, parameters digest): see
  :class:`RunIdentity`. The digest covers every Suite2P option slapp sets, the
  manifest entry's ``nbinned`` and the Suite2P version
  (:func:`slapp.segmentation.settings.parameters_digest`).
* The run that **counts** for an identity is its *current* run: the one whose
  ``superseded_by`` is NULL. ``segment --overwrite`` inserts a new run and marks
  the old one superseded; the old run and its ROIs stay, but no reader counts
  them. The schema's partial unique index ``one_current_run_per_identity``
  keeps at most one current run per identity.
* A manifest entry's **state**, for the code version and parameters asked
  about (:class:`RunParameters`), is

  - ``done``: its identity has a current run;
  - ``failed``: not done, and a task of this code version recorded a failure
    for these parameters (or before its parameters were known);
  - ``missing``: otherwise. Current runs of the experiment with other
    parameters or other code versions are listed beside it; they do not count.

  A failure recorded after the counted run was stored is kept with a done
  entry (the entry stays done); one recorded before it is history.

A selection has no ``nbinned``: for an experiment of a selection the counted
run is the newest current run of the code version whose digest is that of the
parameters at the run's own ``nbinned``.
"""
import dataclasses
import datetime
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError
from pathlib import Path
from typing import Iterable, Sequence

import marshmallow as mm

from slapp.data_selection.segmentation_manifest import load_manifest
from slapp.errors import SlappError
from slapp.segmentation.settings import (Suite2pOptions, Suite2pSettingsSchema,
                                         parameters_digest)
from slapp.segmentation.suite2p_runner import suite2p_version as installed_suite2p_version
from slapp.utils.code_version import code_version
from slapp.utils.query_utils import DbConnection

DONE, FAILED, MISSING = "done", "failed", "missing"
STATUSES = (DONE, FAILED, MISSING)

# Every column of a run, its ROI and cell counts and its median ROI size (the
# aggregates read only the rois index and npix, never the traces).
_RUN_COLUMNS = """
SELECT runs.*, coalesce(roi.n_rois, 0) AS n_rois, coalesce(roi.n_cells, 0) AS n_cells,
       roi.median_npix
FROM segmentation_runs AS runs
LEFT JOIN LATERAL (
    SELECT count(*) AS n_rois, count(*) FILTER (WHERE is_cell) AS n_cells,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY npix) AS median_npix
    FROM rois WHERE rois.segmentation_run_id = runs.id) AS roi ON true
"""

_CURRENT_RUNS_OF_EXPERIMENTS = _RUN_COLUMNS + """
WHERE runs.ophys_experiment_id = ANY(%s::bigint[]) AND runs.superseded_by IS NULL
ORDER BY runs.created_at, runs.id
"""

_CURRENT_RUN_OF_IDENTITY = _RUN_COLUMNS + """
WHERE runs.ophys_experiment_id = %s AND runs.ophys_segmentation_commit_hash = %s
  AND runs.parameters_digest = %s AND runs.superseded_by IS NULL
"""

_RUNS_BY_ID = _RUN_COLUMNS + "WHERE runs.id = ANY(%s::int[]) ORDER BY runs.id"

# Failures of one code version: of the given experiments, and those recorded
# without an experiment (the entry could not be read) for the manifest's indices.
_FAILURES = """
SELECT id, created_at, ophys_experiment_id, parameters_digest, manifest_path,
       manifest_index, hostname, scheduler_job_id, scheduler_task_id, failure_class,
       message, log_path
FROM segmentation_failures
WHERE ophys_segmentation_commit_hash = %(version)s
  AND (ophys_experiment_id = ANY(%(experiment_ids)s::bigint[])
       OR (ophys_experiment_id IS NULL AND manifest_path = %(manifest_path)s))
ORDER BY created_at, id
"""

_SELECTION = "SELECT sub_selected_ids FROM experiment_selection WHERE id = %s"


class RunsException(SlappError):
    """A run, a selection or the parameters asked about cannot be found."""


class UnknownRunException(RunsException):
    """There is no segmentation run with the id given."""


class RunParametersSchema(Suite2pSettingsSchema):
    """The Suite2P options of ``segment`` and the Suite2P version: which runs count.

    Commands that ask which runs count (status, report, the labeling steps)
    take these fields, so that they are asked exactly as ``segment`` was run.
    """

    suite2p_version = mm.fields.Str(
        dump_default=None, allow_none=True,
        metadata={"description": "the Suite2P version the tasks run (part of a run's "
                                 "parameters). Default: the one installed here, which is "
                                 "the tasks' when this runs in their environment; give it "
                                 "where Suite2P is not installed"})


@dataclass(frozen=True)
class RunParameters:
    """The code version and parameters whose runs count.

    Attributes
    ----------
    code_version : str
        ``ophys_segmentation_commit_hash`` of the runs that count.
    options : Suite2pOptions
        The Suite2P options of the runs that count.
    suite2p_version : str
        The Suite2P version of the runs that count.
    """

    code_version: str
    options: Suite2pOptions
    suite2p_version: str

    @classmethod
    def from_args(cls, args: dict) -> "RunParameters":
        """The parameters a command was given (see :class:`RunParametersSchema`).

        The code version is the running code's (``TRANSFORM_HASH`` names
        another); the Suite2P version is ``args["suite2p_version"]`` or the
        installed one.

        Raises
        ------
        RunsException
            If no Suite2P version is given and Suite2P is not installed.
        """
        return cls(code_version(), Suite2pOptions.from_args(args),
                   args.get("suite2p_version") or _installed_suite2p_version())

    @classmethod
    def defaults(cls, suite2p_version: str | None = None) -> "RunParameters":
        """This code version with segment's default options."""
        return cls(code_version(), Suite2pOptions.defaults(),
                   suite2p_version or _installed_suite2p_version())

    def digest(self, nbinned: int) -> str:
        """The parameters digest of a manifest entry with this ``nbinned``."""
        return parameters_digest(self.options, nbinned, self.suite2p_version)

    def identity(self, experiment_id: int, nbinned: int) -> "RunIdentity":
        """The identity of an entry's run under these parameters."""
        return RunIdentity(experiment_id, self.code_version, self.digest(nbinned))

    def changed_options(self) -> list[tuple[str, object]]:
        """The Suite2P options that differ from segment's defaults, as (name, value)."""
        defaults = Suite2pOptions.defaults()
        return [(item.name, getattr(self.options, item.name))
                for item in dataclasses.fields(Suite2pOptions)
                if getattr(self.options, item.name) != getattr(defaults, item.name)]

    def description(self) -> str:
        """``"Suite2P 1.1.0, threshold_scaling 0.9 (other options default)"``."""
        changed = [f"{name} {value}" for name, value in self.changed_options()]
        return f"Suite2P {self.suite2p_version}, " + (
            f"{', '.join(changed)} (other options default)" if changed else "default options")


def _installed_suite2p_version() -> str:
    try:
        return installed_suite2p_version()
    except PackageNotFoundError:
        raise RunsException("Suite2P is not installed here: give --suite2p_version, the "
                            "version the segment tasks run") from None


@dataclass(frozen=True)
class RunIdentity:
    """(experiment, code version, parameters digest): at most one current run each."""

    experiment_id: int
    code_version: str
    parameters_digest: str


@dataclass(frozen=True)
class Run:
    """One stored run and its ROI figures.

    Attributes
    ----------
    segmentation_run_id : int
    experiment_id : int
    code_version : str
        ``ophys_segmentation_commit_hash``.
    parameters_digest : str
    created_at : datetime.datetime
    n_rois, n_cells : int
        Its ROIs, and those Suite2P's classifier called cells.
    median_npix : float or None
        Median pixels per ROI (None without ROIs).
    experiment_selection_id : int or None
        The selection its manifest was built from (None: unknown, stored
        before runs recorded it).
    manifest_path : str or None
        The manifest it was made from (None: unknown).
    superseded_by : int or None
        The run that replaced it (``segment --overwrite``); None for a current run.
    columns : dict
        Every ``segmentation_runs`` column of the row, as stored.
    """

    segmentation_run_id: int
    experiment_id: int
    code_version: str
    parameters_digest: str
    created_at: datetime.datetime
    n_rois: int
    n_cells: int
    median_npix: float | None
    experiment_selection_id: int | None
    manifest_path: str | None
    superseded_by: int | None
    columns: dict = field(repr=False, compare=False)

    @property
    def identity(self) -> RunIdentity:
        """The run's identity."""
        return RunIdentity(self.experiment_id, self.code_version, self.parameters_digest)

    @classmethod
    def from_row(cls, row: dict) -> "Run":
        """A run from a row of the run queries of this module."""
        aggregates = ("n_rois", "n_cells", "median_npix")
        return cls(row["id"], row["ophys_experiment_id"], row["ophys_segmentation_commit_hash"],
                   row["parameters_digest"], row["created_at"], int(row["n_rois"]),
                   int(row["n_cells"]), row["median_npix"], row["experiment_selection_id"],
                   row["manifest_path"], row["superseded_by"],
                   {key: value for key, value in row.items() if key not in aggregates})


@dataclass(frozen=True)
class Failure:
    """One recorded failure of a segment task (a ``segmentation_failures`` row)."""

    failure_id: int
    created_at: datetime.datetime
    failure_class: str
    message: str
    manifest_path: str
    manifest_index: int
    hostname: str
    scheduler_job_id: str | None
    scheduler_task_id: str | None
    parameters_digest: str | None
    log_path: str | None = None

    @classmethod
    def from_row(cls, row: dict) -> "Failure":
        """A failure from a row of this module's failure query."""
        return cls(row["id"], row["created_at"], row["failure_class"], row["message"],
                   row["manifest_path"], row["manifest_index"], row["hostname"],
                   row["scheduler_job_id"], row["scheduler_task_id"], row["parameters_digest"],
                   row["log_path"])


@dataclass(frozen=True)
class EntryState:
    """Whether one manifest (or selection) entry is done, failed or missing, and why.

    Attributes
    ----------
    manifest_index : int
        The entry's position (the array task id for a manifest).
    experiment_id : int
    status : str
        ``done``, ``failed`` or ``missing``.
    parameters_digest : str or None
        The digest the entry's run must have (None for a selection's entry,
        whose ``nbinned`` is not known).
    run : Run or None
        The run that counts, when done.
    failure : Failure or None
        When failed, the latest failure; when done, a failure recorded after
        the run (None otherwise).
    other_parameter_runs : list of Run
        Current runs of this code version with other parameters (not counted).
    other_code_versions : list of str
        Other code versions with a current run of the experiment, oldest first.
    """

    manifest_index: int
    experiment_id: int
    status: str
    parameters_digest: str | None
    run: Run | None
    failure: Failure | None
    other_parameter_runs: list[Run]
    other_code_versions: list[str]

    @property
    def segmentation_run_id(self) -> int | None:
        """The id of the run that counts, or None."""
        return None if self.run is None else self.run.segmentation_run_id

    @property
    def run_created_at(self) -> datetime.datetime | None:
        """When the run that counts was stored, or None."""
        return None if self.run is None else self.run.created_at


def find_current_run(dbconn: DbConnection, identity: RunIdentity) -> Run | None:
    """The current run of one identity, if there is one.

    Parameters
    ----------
    dbconn : DbConnection
        The labeling database.
    identity : RunIdentity

    Returns
    -------
    Run or None
    """
    rows = dbconn.query(_CURRENT_RUN_OF_IDENTITY, (
        identity.experiment_id, identity.code_version, identity.parameters_digest))
    return Run.from_row(rows[0]) if rows else None


def load_runs(dbconn: DbConnection, run_ids: Sequence[int]) -> list[Run]:
    """Read runs by id (current or superseded), in the order given.

    Parameters
    ----------
    dbconn : DbConnection
        The labeling database.
    run_ids : sequence of int
        ``segmentation_runs.id`` values.

    Returns
    -------
    list of Run

    Raises
    ------
    UnknownRunException
        Naming the ids that do not exist.
    """
    found = {row["id"]: Run.from_row(row)
             for row in dbconn.query(_RUNS_BY_ID, (list(run_ids),))}
    unknown = [run_id for run_id in run_ids if run_id not in found]
    if len(unknown) == 1:
        raise UnknownRunException(f"there is no segmentation run with id {unknown[0]}")
    if unknown:
        raise UnknownRunException(
            f"there are no segmentation runs with ids {', '.join(map(str, unknown))}")
    return [found[run_id] for run_id in run_ids]


def load_run(dbconn: DbConnection, segmentation_run_id: int) -> Run:
    """Read one run by id (see :func:`load_runs`)."""
    return load_runs(dbconn, [segmentation_run_id])[0]


def selection_experiments(dbconn: DbConnection, experiment_selection_id: int) -> list[int]:
    """The ``sub_selected_ids`` of a selection, in order.

    Raises
    ------
    RunsException
        If there is no such selection.
    """
    rows = dbconn.query(_SELECTION, (experiment_selection_id,))
    if not rows:
        raise RunsException(f"there is no experiment selection with id "
                            f"{experiment_selection_id}")
    return list(rows[0]["sub_selected_ids"])


def check_selection_holds(dbconn: DbConnection, experiment_selection_id: int,
                          experiment_id: int) -> None:
    """Make sure a selection exists and holds an experiment (provenance is never guessed).

    Raises
    ------
    RunsException
        ``there is no experiment selection with id N``, or ``experiment
        selection N does not hold experiment E``.
    """
    if int(experiment_id) not in selection_experiments(dbconn, experiment_selection_id):
        raise RunsException(f"experiment selection {experiment_selection_id} does not hold "
                            f"experiment {experiment_id}")


def _entries(manifest: str | Path | Iterable[dict]) -> tuple[list[dict], Path | None]:
    if isinstance(manifest, (str, Path)):
        path = Path(manifest).resolve()
        return load_manifest(path), path
    return list(manifest), None


def entry_states(dbconn: DbConnection, entries: Sequence[dict], parameters: RunParameters,
                 manifest_path: str | Path | None = None) -> list[EntryState]:
    """Decide for each entry whether it is done, failed or missing, with two queries.

    Parameters
    ----------
    dbconn : DbConnection
        The labeling database (only read).
    entries : sequence of dict
        In order; each with ``experiment_id`` and ``nbinned`` (None or absent:
        not known, as for a selection's experiments).
    parameters : RunParameters
        The code version and parameters whose runs count.
    manifest_path : str or Path, optional
        The manifest the entries come from: failures recorded without an
        experiment (the entry could not be read) are matched by its path and
        the entry's index.

    Returns
    -------
    list of EntryState
        One per entry, in order.
    """
    experiment_ids = [int(entry["experiment_id"]) for entry in entries]
    runs: dict[int, list[Run]] = {}
    for row in dbconn.query(_CURRENT_RUNS_OF_EXPERIMENTS, (experiment_ids,)):
        runs.setdefault(row["ophys_experiment_id"], []).append(Run.from_row(row))
    by_experiment: dict[int, list[Failure]] = {}
    by_index: dict[int, list[Failure]] = {}
    for row in dbconn.query(_FAILURES, {
            "version": parameters.code_version, "experiment_ids": experiment_ids,
            "manifest_path": None if manifest_path is None else str(manifest_path)}):
        if row["ophys_experiment_id"] is None:
            by_index.setdefault(row["manifest_index"], []).append(Failure.from_row(row))
        else:
            by_experiment.setdefault(row["ophys_experiment_id"], []).append(
                Failure.from_row(row))
    return [_entry_state(index, entry, runs.get(entry["experiment_id"], []),
                         by_experiment.get(entry["experiment_id"], []) + by_index.get(index, []),
                         parameters)
            for index, entry in enumerate(entries)]


def _entry_state(index: int, entry: dict, runs: list[Run], failures: list[Failure],
                 parameters: RunParameters) -> EntryState:
    nbinned = entry.get("nbinned")
    this_version = [run for run in runs if run.code_version == parameters.code_version]
    if nbinned is None:  # a selection: each run is judged at its own nbinned
        digest = None
        counted = [run for run in this_version
                   if run.parameters_digest == parameters.digest(run.columns["nbinned"])]
        digests = {parameters.digest(run.columns["nbinned"]) for run in runs}
    else:
        digest = parameters.digest(nbinned)
        counted = [run for run in this_version if run.parameters_digest == digest]
        digests = {digest}
    run = counted[-1] if counted else None
    failure = max((failure for failure in failures
                   if failure.parameters_digest is None or failure.parameters_digest in digests),
                  key=lambda failure: (failure.created_at, failure.failure_id), default=None)
    if run is not None and failure is not None and failure.created_at < run.created_at:
        failure = None  # a failure before the run was stored is history
    status = DONE if run is not None else FAILED if failure is not None else MISSING
    others = [other for other in this_version if other not in counted]
    return EntryState(
        manifest_index=index, experiment_id=int(entry["experiment_id"]), status=status,
        parameters_digest=digest, run=run, failure=failure, other_parameter_runs=others,
        other_code_versions=list(dict.fromkeys(
            other.code_version for other in runs
            if other.code_version != parameters.code_version)))


def chosen_run_states(dbconn: DbConnection, experiment_ids: Sequence[int],
                      run_ids: Sequence[int]) -> list[EntryState]:
    """Entry states from an explicit set of runs instead of the counted ones.

    An entry whose experiment has a run in the set is done with that run
    (current or superseded); any other entry is missing. Failures are not
    looked up: the set, not a code version and parameters, says what counts.

    Parameters
    ----------
    dbconn : DbConnection
        The labeling database.
    experiment_ids : sequence of int
        The batch's experiments, in order.
    run_ids : sequence of int
        ``segmentation_runs.id`` values, at most one per experiment, each of
        an experiment of the batch.

    Returns
    -------
    list of EntryState

    Raises
    ------
    UnknownRunException
        If a run does not exist.
    RunsException
        If two runs are of one experiment, or a run's experiment is not in the batch.
    """
    chosen: dict[int, Run] = {}
    for run in load_runs(dbconn, list(dict.fromkeys(run_ids))):
        if run.experiment_id in chosen:
            raise RunsException(
                f"runs {chosen[run.experiment_id].segmentation_run_id} and "
                f"{run.segmentation_run_id} are both of experiment {run.experiment_id}: "
                "give one run per experiment")
        chosen[run.experiment_id] = run
    outside = [run for eid, run in chosen.items() if eid not in set(experiment_ids)]
    if outside:
        raise RunsException(f"run {outside[0].segmentation_run_id} is of experiment "
                            f"{outside[0].experiment_id}, which is not in the batch")
    states = []
    for index, experiment_id in enumerate(experiment_ids):
        run = chosen.get(experiment_id)
        states.append(EntryState(index, experiment_id, DONE if run else MISSING,
                                 run.parameters_digest if run else None, run, None, [], []))
    return states


def manifest_entry_states(dbconn: DbConnection, manifest: str | Path | Iterable[dict],
                          parameters: RunParameters) -> list[EntryState]:
    """:func:`entry_states` of a manifest file (or of its entries already read).

    Raises
    ------
    SegmentationManifestException
        If the manifest file cannot be read.
    """
    entries, path = _entries(manifest)
    return entry_states(dbconn, entries, parameters, path)


def selection_entry_states(dbconn: DbConnection, experiment_selection_id: int,
                           parameters: RunParameters) -> list[EntryState]:
    """:func:`entry_states` of every experiment of a selection, in ``sub_selected_ids`` order.

    Raises
    ------
    RunsException
        If there is no such selection.
    """
    experiment_ids = selection_experiments(dbconn, experiment_selection_id)
    return entry_states(dbconn, [{"experiment_id": eid} for eid in experiment_ids], parameters)


def counted_runs(dbconn: DbConnection, manifest: str | Path | Iterable[dict],
                 parameters: RunParameters) -> list[int | None]:
    """The run that counts for each entry of a manifest.

    Parameters
    ----------
    dbconn : DbConnection
        The labeling database.
    manifest : str, Path or iterable of dict
        A manifest file, or its entries (``experiment_id``, ``nbinned``).
    parameters : RunParameters
        The code version and parameters whose runs count.

    Returns
    -------
    list of int or None
        ``segmentation_runs.id`` per entry, in manifest order; None where the
        entry is not done.
    """
    return [state.segmentation_run_id
            for state in manifest_entry_states(dbconn, manifest, parameters)]


def counted_runs_of_selection(dbconn: DbConnection, experiment_selection_id: int,
                              parameters: RunParameters) -> dict[int, int | None]:
    """The run that counts for each experiment of a selection.

    Parameters
    ----------
    dbconn : DbConnection
        The labeling database.
    experiment_selection_id : int
        ``experiment_selection.id``.
    parameters : RunParameters
        The code version and parameters whose runs count.

    Returns
    -------
    dict
        Experiment id -> ``segmentation_runs.id`` (None where not done), in
        ``sub_selected_ids`` order.

    Raises
    ------
    RunsException
        If there is no such selection.
    """
    return {state.experiment_id: state.segmentation_run_id
            for state in selection_entry_states(dbconn, experiment_selection_id, parameters)}
