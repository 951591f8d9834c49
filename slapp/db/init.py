"""Create or upgrade the labeling tables: ``python -m slapp.db.init``.

Connects with the ``LABELING_*`` environment variables, then, in one
transaction:

* a new database gets every table of ``schema.sql`` (schema version 2);
* a database made by the first release (schema version 1, whose runs were
  keyed by experiment and code version only) is upgraded in place, keeping
  every row: each stored run gets its parameters digest, computed from the
  Suite2P settings it recorded, its nbinned and its Suite2P version, so that
  a task with the same parameters still finds it done; its movie fingerprint
  is ``{}`` (unknown) and its code label ``''``;
* version 2 -> 3 (``upgrade_2_to_3.sql``): a run records the selection and manifest
  it came from (NULL, shown as unknown, for runs stored before) and the run that
  superseded it; one *current* run per identity replaces one run per identity;
* version 3 -> 4 (``upgrade_3_to_4.sql``): the ROIs' Suite2P features for labeling
  and classifiers (NULL for ROIs stored before); the labeling tables are new;
* a database at the current version gets any missing table and is otherwise left alone.

The version is recorded in ``slapp_schema_version``. A second run changes
nothing; a database newer than this slapp is refused.
"""
import argparse
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2.extras

from slapp.errors import SlappError
from slapp.segmentation.settings import (SettingsException, options_from_recorded_settings,
                                         parameters_digest)
from slapp.utils import query_utils
from slapp.utils.cli import LOG_LEVELS, run_main

SCHEMA_PATH = Path(__file__).with_name("schema.sql")
SCHEMA_VERSION = 4
TABLES = ("slapp_schema_version", "experiment_selection", "segmentation_runs", "rois",
          "segmentation_failures", "segmentation_images", "labeling_jobs", "labeling_tasks",
          "roi_manifests", "labelers", "labeler_sessions", "roi_labels", "label_consensus",
          "classifier_models", "roi_predictions")
# The SQL that takes a database from the version before to each version; version 2 is
# reached from 1 in Python (:func:`_upgrade_1_to_2`), since it computes digests.
UPGRADE_SCRIPTS = {version: Path(__file__).with_name(f"upgrade_{version - 1}_to_{version}.sql")
                   for version in (3, 4)}
# The parameters digest of a version 1 run whose recorded settings cannot be
# read: it never equals a real digest, so no task takes that run for its own.
UNKNOWN_PARAMETERS = "unknown"

logger = logging.getLogger("slapp.db.init")

_UPGRADE_1_TO_2_COLUMNS = """
ALTER TABLE segmentation_runs
    ADD COLUMN code_label        text NOT NULL DEFAULT '',
    ADD COLUMN parameters_digest text,
    ADD COLUMN movie_fingerprint jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN frame_source      text NOT NULL DEFAULT 'binary'
                                 CHECK (frame_source IN ('hdf5_stream', 'binary')),
    ADD COLUMN stage_seconds     jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN peak_rss_bytes    bigint,
    ADD COLUMN scratch_bytes     bigint,
    ADD COLUMN scheduler_job_id  text,
    ADD COLUMN scheduler_task_id text
"""

_UPGRADE_1_TO_2_KEY = """
ALTER TABLE segmentation_runs
    ALTER COLUMN parameters_digest SET NOT NULL,
    ALTER COLUMN movie_fingerprint DROP DEFAULT,
    DROP CONSTRAINT one_run_per_experiment_and_code_version,
    ADD CONSTRAINT one_run_per_identity
        UNIQUE (ophys_experiment_id, ophys_segmentation_commit_hash, parameters_digest)
"""


class SchemaVersionException(SlappError):
    """The labeling database has a schema this slapp cannot use or upgrade."""


@dataclass
class SchemaChanges:
    """What one initialisation changed."""

    created: list[str] = field(default_factory=list)
    upgraded_from: int | None = None
    runs_upgraded: int = 0
    runs_with_unknown_parameters: int = 0

    @property
    def nothing(self) -> bool:
        """True when the database was already complete and current."""
        return not self.created and self.upgraded_from is None


def _found_version(cursor, tables: set[str]) -> int | None:
    """The schema version of the database; None for an empty one."""
    if "slapp_schema_version" in tables:
        cursor.execute("SELECT max(version) AS version FROM slapp_schema_version")
        version = cursor.fetchone()["version"]
        if version is not None:
            return version
    if "segmentation_runs" not in tables:
        return None
    cursor.execute("SELECT 1 FROM information_schema.columns WHERE table_schema = "
                   "current_schema() AND table_name = 'segmentation_runs' "
                   "AND column_name = 'parameters_digest'")
    return 2 if cursor.fetchone() else 1


def _upgrade_1_to_2(cursor, changes: SchemaChanges) -> None:
    """Add the version 2 columns and key to ``segmentation_runs``, keeping every run."""
    cursor.execute(_UPGRADE_1_TO_2_COLUMNS)
    cursor.execute("SELECT id, nbinned, suite2p_version, suite2p_settings "
                   "FROM segmentation_runs ORDER BY id")
    digests = []
    for run in cursor.fetchall():
        try:
            options = options_from_recorded_settings(run["suite2p_settings"])
            digest = parameters_digest(options, run["nbinned"], run["suite2p_version"])
        except SettingsException as error:
            logger.warning("segmentation run %d: %s; its parameters digest is '%s'",
                           run["id"], error, UNKNOWN_PARAMETERS)
            digest = UNKNOWN_PARAMETERS
            changes.runs_with_unknown_parameters += 1
        digests.append((digest, run["id"]))
    psycopg2.extras.execute_batch(
        cursor, "UPDATE segmentation_runs SET parameters_digest = %s WHERE id = %s", digests)
    cursor.execute(_UPGRADE_1_TO_2_KEY)
    changes.upgraded_from, changes.runs_upgraded = 1, len(digests)


def init_schema(dbconn: query_utils.DbConnection) -> SchemaChanges:
    """Create the missing labeling tables and upgrade old ones, in one transaction.

    Parameters
    ----------
    dbconn : DbConnection
        The labeling database.

    Returns
    -------
    SchemaChanges
        The tables created, and the version upgraded from (None when none was).

    Raises
    ------
    SchemaVersionException
        If the database has a newer schema version than this slapp.
    """
    changes = SchemaChanges()
    with dbconn.transaction() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext('slapp.db.init'))")
        cursor.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
        before = {row["tablename"] for row in cursor.fetchall()}
        version = _found_version(cursor, before)
        if version is not None and version > SCHEMA_VERSION:
            raise SchemaVersionException(
                f"the labeling database has schema version {version}, newer than this slapp "
                f"(version {SCHEMA_VERSION}): install a newer slapp")
        if version == 1:
            _upgrade_1_to_2(cursor, changes)
        for target, script in UPGRADE_SCRIPTS.items():
            if version is not None and version < target:
                cursor.execute(script.read_text())
                changes.upgraded_from = version
        cursor.execute(SCHEMA_PATH.read_text())
        how = "created" if version is None else f"upgraded from {version}"
        cursor.execute("INSERT INTO slapp_schema_version (version, how) VALUES (%s, %s) "
                       "ON CONFLICT (version) DO NOTHING", (SCHEMA_VERSION, how))
    changes.created = [table for table in TABLES if table not in before]
    return changes


def create_tables(dbconn: query_utils.DbConnection) -> list[str]:
    """Bring the labeling tables to the current schema (see :func:`init_schema`).

    Returns
    -------
    list of str
        The tables that this call created (empty when all existed).
    """
    return init_schema(dbconn).created


def main(argv: list[str] | None = None) -> None:
    """The command: create or upgrade the tables of the ``LABELING_*`` database."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log_level", default="INFO", choices=LOG_LEVELS,
                        help="how much to log (default INFO: what was created or upgraded)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(levelname)s:%(name)s:%(message)s")
    with query_utils.DbConnection(
            **query_utils.get_db_credentials(**query_utils.label_defaults)) as dbconn:
        changes = init_schema(dbconn)
    if changes.upgraded_from == 1:
        logger.info("upgraded from schema version %d to %d: %d segmentation runs kept, each "
                    "with its parameters digest (%d with unreadable settings: '%s')",
                    changes.upgraded_from, SCHEMA_VERSION, changes.runs_upgraded,
                    changes.runs_with_unknown_parameters, UNKNOWN_PARAMETERS)
    elif changes.upgraded_from is not None:
        logger.info("upgraded from schema version %d to %d: every row kept",
                    changes.upgraded_from, SCHEMA_VERSION)
    if changes.created:
        logger.info("created tables: %s", ", ".join(changes.created))
    if changes.nothing:
        logger.info("all tables exist at schema version %d: nothing to do", SCHEMA_VERSION)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_main(main, "db-init"))
