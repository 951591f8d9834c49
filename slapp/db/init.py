"""Create the labeling tables: ``python -m slapp.db.init``.

Connects with the ``LABELING_*`` environment variables and runs
``schema.sql``, whose statements are all idempotent: a second run changes
nothing.
"""
import argparse
import logging
import sys
from pathlib import Path

from slapp.utils import query_utils
from slapp.utils.cli import run_main

SCHEMA_PATH = Path(__file__).with_name("schema.sql")
TABLES = ("experiment_selection", "segmentation_runs", "rois", "segmentation_failures")

logger = logging.getLogger("slapp.db.init")


def create_tables(dbconn: query_utils.DbConnection) -> list[str]:
    """Create the labeling tables that do not exist yet, in one transaction.

    Parameters
    ----------
    dbconn : DbConnection
        The labeling database.

    Returns
    -------
    list of str
        The tables that this call created (empty when all existed).
    """
    existing_query = "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
    with dbconn.transaction() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext('slapp.db.init'))")
        cursor.execute(existing_query)
        before = {row["tablename"] for row in cursor.fetchall()}
        cursor.execute(SCHEMA_PATH.read_text())
    return [table for table in TABLES if table not in before]


def main(argv: list[str] | None = None) -> None:
    """The command: create the tables in the database of the ``LABELING_*`` variables."""
    parser = argparse.ArgumentParser(prog="python -m slapp.db.init", description=__doc__)
    parser.add_argument("--log_level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(levelname)s:%(name)s:%(message)s")
    with query_utils.DbConnection(
            **query_utils.get_db_credentials(**query_utils.label_defaults)) as dbconn:
        created = create_tables(dbconn)
    if created:
        logger.info("created tables: %s", ", ".join(created))
    else:
        logger.info("all tables exist: nothing to do")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_main(main, "slapp.db.init"))
