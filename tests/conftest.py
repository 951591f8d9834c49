"""Fixtures shared by every test: one real embedded PostgreSQL server per test session.

The server lives in a temporary directory on a free port, so a developer's own
``.slapp`` server is never touched. Each test that uses a database starts from
empty tables.
"""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from contextlib import closing
from pathlib import Path

import pytest

from slapp import embedded
from slapp.db.init import TABLES, create_tables
from slapp.demo.lims import create_lims_tables
from slapp.utils.query_utils import DbConnection

REPO_ROOT = Path(__file__).resolve().parents[1]
LABELING_TABLES = ", ".join(table for table in TABLES if table != "slapp_schema_version")
LIMS_TABLES = ("ophys_experiments, ophys_sessions, imaging_depths, donors_genotypes, "
               "genotypes, genotype_types, specimens, donors, projects")


def _free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def server_home_factory():
    """Make directories for embedded servers, removed when the session ends.

    They live outside pytest's temporary tree on purpose: every pytest session
    run as root resets that tree to mode 0700, which would lock the server's
    unprivileged service user out of a server that another session is using.
    """
    homes = []

    def make() -> Path:
        homes.append(Path(tempfile.mkdtemp(prefix="slapp-test-server-")))
        return homes[-1]
    yield make
    for home in homes:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def embedded_server(server_home_factory):
    """A running embedded server, stopped when the session ends."""
    server = embedded.EmbeddedServer(server_home_factory(), port=_free_port())
    server.start()
    with DbConnection(**server.credentials(embedded.LABELING_ROLE,
                                           embedded.LABELING_DATABASE)) as dbconn:
        create_tables(dbconn)
    with closing(server.admin_connection(embedded.LIMS_DATABASE)) as connection, \
            connection.cursor() as cursor:
        create_lims_tables(cursor)
    yield server
    server.stop()


@pytest.fixture
def labeling_db(embedded_server):
    """The labeling database with empty tables, as the ``labeling`` role."""
    dbconn = DbConnection(**embedded_server.credentials(embedded.LABELING_ROLE,
                                                        embedded.LABELING_DATABASE))
    dbconn.execute(f"TRUNCATE {LABELING_TABLES} RESTART IDENTITY CASCADE")
    yield dbconn
    dbconn.close()


@pytest.fixture
def lims_admin(embedded_server):
    """An autocommit psycopg2 connection that may write the LIMS tables (emptied)."""
    connection = embedded_server.admin_connection(embedded.LIMS_DATABASE)
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {LIMS_TABLES} CASCADE")
    yield connection
    connection.close()


@pytest.fixture
def lims_db(embedded_server, lims_admin):
    """LIMS as the read-only ``lims_reader`` role, as the CLIs see it."""
    dbconn = DbConnection(**embedded_server.credentials(embedded.LIMS_ROLE,
                                                        embedded.LIMS_DATABASE),
                          read_only=True)
    yield dbconn
    dbconn.close()


@pytest.fixture
def cli_env(embedded_server):
    """Environment for running a slapp CLI in a subprocess against the test server."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("LIMS_", "LABELING_"))}
    env.update(embedded_server.environment())
    return env


@pytest.fixture
def run_cli(cli_env):
    """Run ``python -m module args...`` against the test server; returns the process.

    Keyword ``env`` adds or overrides variables; ``cwd`` sets the directory.
    """
    def run(module: str, *args, env: dict | None = None, cwd: Path | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", module, *map(str, args)],
                              env={**cli_env, **(env or {})}, cwd=cwd,
                              capture_output=True, text=True, timeout=timeout)
    return run
