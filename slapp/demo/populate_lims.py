"""Fill the embedded server's ``lims`` database with a demo LIMS.

::

    python -m slapp.demo.populate_lims            # uses $SLAPP_HOME (default ./.slapp)
    python -m slapp.demo.populate_lims --movies_for_selection 1   # and writes movies

A few hundred synthetic experiments, always the same ones (a fixed seed),
spread over the projects, driver lines and depths that the seed's example
queries (``example_selection_input.json``) name, and over others that those
queries must not match: other projects and drivers, depths outside the
queried ranges, sessions that failed QC. Every donor also carries a reporter
genotype (genotype type ``reporter``), as real mice do, so a query that
forgets ``gt.name = 'driver'`` returns each experiment twice.

Every experiment gets a ``movie_number_of_frames`` and a LIMS-style
``storage_directory`` under ``$SLAPP_HOME/demo/storage``. The movies themselves
are made only for the experiments a selection picked (``--movies_for_selection``,
as the guide does, or ``run_demo``; :mod:`slapp.demo.storage`): all of them would
take 31 GB. Running the command again adds only what is missing, in one
transaction, and says how many storage directories it pointed elsewhere.
"""
import random
import sys
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import marshmallow as mm
import psycopg2.extras

from slapp.demo.lims import add_donor_genotype, add_experiment, create_lims_tables
from slapp.demo.storage import (DemoMovieOptions, DemoStorageException, ensure_movies,
                                experiment_storage_directory)
from slapp.embedded import (LABELING_DATABASE, LABELING_ROLE, LIMS_DATABASE, LIMS_ROLE,
                            EmbeddedServer)
from slapp.utils.cli import run_main
from slapp.utils.files import write_json_atomically
from slapp.utils.options import SlappHomeSchema, slapp_home
from slapp.utils.query_utils import DbConnection
from slapp.utils.schema import ArgSchema, ArgSchemaParser, StrictInt

DEMO_SEED = 20191209
# Demo movies are 97 s at 31 Hz: long enough for Suite2P to see every cell
# fire, short enough to generate and segment in seconds (see MovieSpec.nframes).
DEMO_NFRAMES = 3000
# Allen imaging planes lie between 75 and 375 um, in steps of 25 um here.
DEPTHS = tuple(range(75, 376, 25))
# Ids in the range of the seed's example ids (850517344 ... 1012112426).
FIRST_ID, LAST_ID = 850_000_000, 1_012_999_999
REPORTERS = {
    "Sst-IRES-Cre": "Ai148(TIT2L-GC6f-ICL-tTA2)",
    "Vip-IRES-Cre": "Ai148(TIT2L-GC6f-ICL-tTA2)",
    "Slc17a7-IRES2-Cre": "Ai93(TITL-GCaMP6f)",
}


@dataclass(frozen=True)
class _Group:
    """``count`` experiments of one project and driver, depths drawn from ``depths``."""

    project: str
    driver: str
    depths: tuple
    workflow_state: str
    count: int


def _depths(low: int, high: int) -> tuple:
    return tuple(depth for depth in DEPTHS if low <= depth <= high)


_VBM, _VBT = "VisualBehaviorMultiscope", "VisualBehaviorTask1B"
_SST, _SLC, _VIP = "Sst-IRES-Cre", "Slc17a7-IRES2-Cre", "Vip-IRES-Cre"
_GROUPS = (
    # what the four example queries select from (they ask for 75, 20, 25 and 10)
    _Group(_VBM, _SST, _depths(100, 300), "passed", 95),
    _Group(_VBT, _SST, _depths(100, 300), "passed", 28),
    _Group(_VBM, _SLC, _depths(100, 200), "passed", 34),
    _Group(_VBT, _SLC, _depths(100, 200), "passed", 14),
    # near misses: right project and driver, wrong depth or workflow state
    _Group(_VBM, _SST, (75, 325, 350, 375), "passed", 12),
    _Group(_VBM, _SST, _depths(100, 300), "failed", 6),
    _Group(_VBM, _SST, _depths(100, 300), "qc", 4),
    _Group(_VBT, _SST, (75, 325, 375), "passed", 5),
    _Group(_VBT, _SST, _depths(100, 300), "failed", 3),
    _Group(_VBM, _SLC, (75, *_depths(225, 375)), "passed", 14),
    _Group(_VBM, _SLC, _depths(100, 200), "qc", 4),
    _Group(_VBT, _SLC, _depths(225, 375), "passed", 6),
    _Group(_VBT, _SLC, _depths(100, 200), "failed", 3),
    # other drivers and other projects
    _Group(_VBM, _VIP, _depths(100, 300), "passed", 24),
    _Group(_VBT, _VIP, _depths(100, 300), "passed", 10),
    _Group("VisualCoding", _SST, _depths(100, 300), "passed", 15),
    _Group("VisualCoding", _SLC, _depths(100, 200), "passed", 20),
    _Group("OpenScopeX", _VIP, DEPTHS, "passed", 10),
    _Group("OpenScopeX", _SLC, _depths(100, 200), "passed", 8),
)


@dataclass(frozen=True)
class DemoExperiment:
    """One experiment of the demo LIMS (its donor, specimen and session share its id)."""

    experiment_id: int
    project: str
    driver: str
    reporter: str
    depth: int
    workflow_state: str
    nframes: int


def demo_experiments() -> list[DemoExperiment]:
    """Return the demo LIMS's experiments; the same list on every call and machine.

    Returns
    -------
    list of DemoExperiment
        Sorted by id. Python's own ``random.Random`` draws them, whose
        integer and sampling streams do not change between Python versions.
    """
    rng = random.Random(DEMO_SEED)
    total = sum(group.count for group in _GROUPS)
    ids = rng.sample(range(FIRST_ID, LAST_ID + 1), total)
    experiments = []
    for group in _GROUPS:
        for _ in range(group.count):
            experiments.append(DemoExperiment(
                experiment_id=ids.pop(), project=group.project, driver=group.driver,
                reporter=REPORTERS[group.driver], depth=rng.choice(group.depths),
                workflow_state=group.workflow_state, nframes=DEMO_NFRAMES))
    return sorted(experiments, key=lambda experiment: experiment.experiment_id)


def populate_demo_lims(cursor, storage_root: Path) -> tuple[int, int]:
    """Create the LIMS tables if needed and add the demo experiments they lack.

    Experiments present already are left as they are, except that their
    ``storage_directory`` is pointed at ``storage_root`` (so a moved
    ``$SLAPP_HOME`` keeps working); the second number counts them.

    Parameters
    ----------
    cursor : psycopg2 cursor
        On the LIMS database, as a role that may write it.
    storage_root : pathlib.Path
        Top of the demo storage tree.

    Returns
    -------
    added, repointed : int
        How many experiments were added, and how many existing ones got a new
        ``storage_directory``.
    """
    create_lims_tables(cursor)
    experiments = demo_experiments()
    cursor.execute("SELECT id FROM ophys_experiments WHERE id = ANY(%s)",
                   ([experiment.experiment_id for experiment in experiments],))
    existing = {row[0] if isinstance(row, tuple) else row["id"] for row in cursor.fetchall()}
    directories = {experiment.experiment_id: str(experiment_storage_directory(
        storage_root, experiment.experiment_id, experiment.experiment_id,
        experiment.experiment_id)) + "/" for experiment in experiments}
    added = 0
    for experiment in experiments:
        if experiment.experiment_id in existing:
            continue
        add_experiment(cursor, experiment.experiment_id, project=experiment.project,
                       genotype=experiment.driver, depth=experiment.depth,
                       workflow_state=experiment.workflow_state, nframes=experiment.nframes,
                       storage_directory=directories[experiment.experiment_id])
        add_donor_genotype(cursor, experiment.experiment_id, experiment.reporter, "reporter")
        added += 1
    psycopg2.extras.execute_values(
        cursor,
        "UPDATE ophys_experiments AS oe SET storage_directory = moved.directory "
        "FROM (VALUES %s) AS moved (id, directory) "
        "WHERE oe.id = moved.id AND oe.storage_directory IS DISTINCT FROM moved.directory",
        list(directories.items()), page_size=len(directories))
    return added, cursor.rowcount


class PopulateLimsSchema(DemoMovieOptions, ArgSchema, SlappHomeSchema):
    storage_root = mm.fields.Str(
        metadata={"description": "top of the demo storage tree that storage_directory "
                                 "points into. Default: <slapp_home>/demo/storage, so "
                                 "everything the demo makes lives in one directory that "
                                 "is easy to delete"})
    movies_for_selection = StrictInt(
        validate=mm.validate.Range(min=1),
        metadata={"description": "id of an experiment_selection row (what select_data "
                                 "wrote) whose experiments get a synthetic movie and its "
                                 "ground truth in their storage directory, so that the "
                                 "manifest step finds them. Default: none, as a movie for "
                                 "every demo experiment would take 31 GB"})


class PopulateLimsOutputSchema(mm.Schema):
    n_experiments = StrictInt(required=True,
                                  metadata={"description": "demo experiments now in LIMS"})
    n_added = StrictInt(required=True,
                            metadata={"description": "experiments this run added"})
    n_repointed = StrictInt(required=True, metadata={
        "description": "experiments present already whose storage_directory this run "
                       "pointed at storage_root"})
    storage_root = mm.fields.Str(required=True,
                                 metadata={"description": "top of the demo storage tree"})
    movies = mm.fields.List(mm.fields.Str(), required=True, metadata={
        "description": "the movies of --movies_for_selection's experiments, in its order"})


class PopulateLims(ArgSchemaParser):
    """Fill the embedded ``lims`` database with the demo experiments."""

    default_schema = PopulateLimsSchema
    default_output_schema = PopulateLimsOutputSchema

    def run(self) -> dict:
        """Populate the demo LIMS in one transaction and report what it holds.

        Returns
        -------
        dict
            See :class:`PopulateLimsOutputSchema`.

        Raises
        ------
        DemoStorageException
            If ``movies_for_selection`` names no selection.
        """
        home = slapp_home(self.args)
        storage_root = (Path(self.args["storage_root"]) if self.args.get("storage_root")
                        else home / "demo" / "storage").resolve()
        server = EmbeddedServer(home)
        with closing(server.admin_connection(LIMS_DATABASE)) as connection:
            connection.autocommit = False
            with connection, connection.cursor() as cursor:
                added, repointed = populate_demo_lims(cursor, storage_root)
        output = {"n_experiments": len(demo_experiments()), "n_added": added,
                  "n_repointed": repointed, "storage_root": str(storage_root), "movies": []}
        print(f"demo LIMS: {output['n_experiments']} experiments ({added} added now), "
              f"storage_directory under {storage_root}")
        if repointed:
            print(f"demo LIMS: pointed the storage_directory of {repointed} existing "
                  f"experiments at {storage_root}")
        if self.args.get("movies_for_selection"):
            output["movies"] = self._write_movies(server, self.args["movies_for_selection"])
        if self.args.get("output_json"):
            write_json_atomically(Path(self.args["output_json"]), self.get_output_json(output))
        return output

    def _write_movies(self, server: EmbeddedServer, selection_id: int) -> list[str]:
        """Write (or keep) the movie of each experiment of a selection; their paths."""
        with DbConnection(**server.credentials(LABELING_ROLE, LABELING_DATABASE)) as label_db:
            rows = label_db.query("SELECT sub_selected_ids FROM experiment_selection "
                                  "WHERE id = %s", (selection_id,))
        if not rows:
            raise DemoStorageException(f"experiment_selection {selection_id} does not exist: "
                                       "run select_data first")
        with DbConnection(**server.credentials(LIMS_ROLE, LIMS_DATABASE),
                          read_only=True) as lims_db:
            movies = ensure_movies(lims_db, rows[0]["sub_selected_ids"],
                                   self.args["frame_size"], self.args["preset"])
        for movie in movies:
            print(f"movie of experiment {movie.experiment_id}: "
                  f"{'generated' if movie.generated else 'kept'} {movie.movie_path}")
        return [str(movie.movie_path) for movie in movies]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_main(lambda: PopulateLims(logger_name="PopulateLims").run(), "populate-lims"))
