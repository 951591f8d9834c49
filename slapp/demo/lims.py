"""Build LIMS tables in a database of ours, for the demo and the tests."""
from pathlib import Path

from psycopg2 import sql as pgsql

LIMS_SCHEMA_PATH = Path(__file__).with_name("lims_schema.sql")


def create_lims_tables(cursor) -> None:
    """Create the LIMS tables that the seed's example queries join (idempotent)."""
    cursor.execute(LIMS_SCHEMA_PATH.read_text())


def _first_value(row):
    return next(iter(row.values())) if isinstance(row, dict) else row[0]


def _lookup_or_insert(cursor, table: str, values: dict) -> int:
    """The id of the row whose first column in ``values`` matches, inserted if new."""
    key, key_value = next(iter(values.items()))
    cursor.execute(pgsql.SQL("SELECT id FROM {} WHERE {} = %s").format(
        pgsql.Identifier(table), pgsql.Identifier(key)), (key_value,))
    row = cursor.fetchone()
    if row is not None:
        return _first_value(row)
    cursor.execute(pgsql.SQL(
        "INSERT INTO {table} (id, {columns}) "
        "SELECT coalesce(max(id), 0) + 1, {placeholders} FROM {table} RETURNING id").format(
            table=pgsql.Identifier(table),
            columns=pgsql.SQL(", ").join(map(pgsql.Identifier, values)),
            placeholders=pgsql.SQL(", ").join(pgsql.Placeholder() * len(values))),
        list(values.values()))
    return _first_value(cursor.fetchone())


def add_donor_genotype(cursor, donor_id: int, genotype: str, genotype_type: str) -> None:
    """Give a donor one more genotype (e.g. its reporter line); nothing if it has it.

    Parameters
    ----------
    cursor : psycopg2 cursor
        On the LIMS database.
    donor_id : int
        ``donors.id``.
    genotype, genotype_type : str
        ``genotypes.name`` and ``genotype_types.name``; created if new.
    """
    type_id = _lookup_or_insert(cursor, "genotype_types", {"name": genotype_type})
    genotype_id = _lookup_or_insert(cursor, "genotypes",
                                    {"name": genotype, "genotype_type_id": type_id})
    cursor.execute("INSERT INTO donors_genotypes (donor_id, genotype_id) VALUES (%s, %s) "
                   "ON CONFLICT DO NOTHING", (donor_id, genotype_id))


def add_experiment(cursor, experiment_id: int, *, project: str, genotype: str, depth: int,
                   workflow_state: str = "passed", nframes: int | None = None,
                   storage_directory: str | None = None, genotype_type: str = "driver") -> None:
    """Insert one ophys experiment with the project, genotype and depth rows it needs.

    Rows for a project, genotype or depth that exist already are reused. The
    session, specimen and donor take the experiment's id, so each experiment
    has a mouse of its own. Every value travels as a query parameter.

    Parameters
    ----------
    cursor : psycopg2 cursor
        Inside a transaction on the LIMS database.
    experiment_id : int
        ``ophys_experiments.id``.
    project, genotype, genotype_type : str
        ``projects.code``, ``genotypes.name`` and ``genotype_types.name``.
    depth : int
        ``imaging_depths.depth`` in micrometres.
    workflow_state : str
        ``ophys_experiments.workflow_state``; the example queries want "passed".
    nframes : int, optional
        ``ophys_experiments.movie_number_of_frames``.
    storage_directory : str, optional
        ``ophys_experiments.storage_directory``, where the movie is found.
    """
    project_id = _lookup_or_insert(cursor, "projects", {"code": project})
    depth_id = _lookup_or_insert(cursor, "imaging_depths", {"depth": depth})
    cursor.execute("INSERT INTO donors (id, name) VALUES (%s, %s)",
                   (experiment_id, f"donor-{experiment_id}"))
    add_donor_genotype(cursor, experiment_id, genotype, genotype_type)
    cursor.execute("INSERT INTO specimens (id, donor_id, name) VALUES (%s, %s, %s)",
                   (experiment_id, experiment_id, f"specimen-{experiment_id}"))
    cursor.execute("INSERT INTO ophys_sessions (id, project_id, specimen_id) VALUES (%s, %s, %s)",
                   (experiment_id, project_id, experiment_id))
    cursor.execute(
        "INSERT INTO ophys_experiments (id, ophys_session_id, imaging_depth_id, workflow_state, "
        "movie_number_of_frames, storage_directory) VALUES (%s, %s, %s, %s, %s, %s)",
        (experiment_id, experiment_id, depth_id, workflow_state, nframes, storage_directory))
