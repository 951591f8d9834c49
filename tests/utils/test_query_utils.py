"""The database layer against the real embedded server."""
import logging

import numpy as np
import psycopg2
import pytest

from psycopg2 import sql as pgsql

from slapp.utils import query_utils
from slapp.utils.query_utils import (CredentialsException, DbConnection,
                                     ReadOnlyConnectionException, get_db_credentials)
from slapp.utils.read_only_sql import UnsafeQueryException


@pytest.fixture
def scratch(labeling_db):
    labeling_db.execute("DROP TABLE IF EXISTS scratch")
    labeling_db.execute("CREATE TABLE scratch (id int PRIMARY KEY, note text)")
    yield labeling_db
    labeling_db.execute("DROP TABLE IF EXISTS scratch")


# --- credentials -------------------------------------------------------------------

def test_credentials_environment_beats_keywords(monkeypatch):
    monkeypatch.setenv("LABELING_USER", "ann")
    monkeypatch.setenv("LABELING_PASSWORD", "s3cret")
    monkeypatch.setenv("LABELING_HOST", "db.example.org")
    monkeypatch.setenv("LABELING_PORT", "6543")
    monkeypatch.delenv("LABELING_DATABASE", raising=False)
    credentials = get_db_credentials(host="localhost", database="labeling", port=5432)
    assert credentials == {"user": "ann", "password": "s3cret", "host": "db.example.org",
                           "database": "labeling", "port": 6543}


def test_credentials_keywords_are_the_fallback(monkeypatch):
    for name in ("HOST", "PORT", "DATABASE"):
        monkeypatch.delenv(f"LIMS_{name}", raising=False)
    monkeypatch.setenv("LIMS_USER", "reader")
    monkeypatch.setenv("LIMS_PASSWORD", "pw")
    credentials = get_db_credentials(env_prefix="LIMS_", host="lims.example.org",
                                     database="lims2", port=5433)
    assert credentials == {"user": "reader", "password": "pw", "host": "lims.example.org",
                           "database": "lims2", "port": 5433}


@pytest.mark.parametrize("missing", ["HOST", "PORT", "DATABASE"])
def test_host_port_and_database_must_come_from_somewhere(monkeypatch, missing):
    given = {"host": "h", "database": "d", "port": 5432}
    for name in ("HOST", "PORT", "DATABASE"):
        monkeypatch.delenv(f"X_{name}", raising=False)
    monkeypatch.setenv("X_USER", "u")
    monkeypatch.setenv("X_PASSWORD", "p")
    del given[missing.lower()]
    with pytest.raises(CredentialsException, match=f"X_{missing} is not set"):
        get_db_credentials(env_prefix="X_", **given)


@pytest.mark.parametrize("defaults", [query_utils.lims_defaults, query_utils.label_defaults])
def test_both_defaults_follow_one_rule(monkeypatch, defaults):
    """Nothing site-specific is guessed: host and database come from the environment."""
    assert defaults == {"host": None, "database": None, "port": 5432}
    for name in ("HOST", "PORT", "DATABASE"):
        monkeypatch.delenv(f"LIMS_{name}", raising=False)
    monkeypatch.setenv("LIMS_USER", "reader")
    monkeypatch.setenv("LIMS_PASSWORD", "pw")
    with pytest.raises(CredentialsException, match="LIMS_HOST is not set"):
        get_db_credentials(env_prefix="LIMS_", **defaults)
    monkeypatch.setenv("LIMS_HOST", "lims.example.org")
    monkeypatch.setenv("LIMS_DATABASE", "lims2")
    assert get_db_credentials(env_prefix="LIMS_", **defaults)["port"] == 5432


def test_user_and_password_come_only_from_the_environment(monkeypatch):
    monkeypatch.delenv("LABELING_USER", raising=False)
    monkeypatch.setenv("LABELING_HOST", "h")
    monkeypatch.setenv("LABELING_DATABASE", "d")
    monkeypatch.setenv("LABELING_PASSWORD", "do-not-print-me")
    with pytest.raises(CredentialsException, match="LABELING_USER") as raised:
        get_db_credentials(**query_utils.label_defaults)
    assert "do-not-print-me" not in str(raised.value)
    monkeypatch.setenv("LABELING_USER", "ann")
    monkeypatch.delenv("LABELING_PASSWORD")
    with pytest.raises(CredentialsException, match="LABELING_PASSWORD"):
        get_db_credentials(**query_utils.label_defaults)


def test_missing_host_names_the_variable(monkeypatch):
    monkeypatch.setenv("X_USER", "u")
    monkeypatch.setenv("X_PASSWORD", "p")
    monkeypatch.delenv("X_HOST", raising=False)
    with pytest.raises(CredentialsException, match="X_HOST"):
        get_db_credentials(env_prefix="X_", database="d")


def test_a_libpq_password_file_replaces_the_password_variable(embedded_server, run_cli,
                                                             tmp_path):
    """The route the job scripts recommend: no password in the environment at all."""
    credentials = embedded_server.credentials("labeling", "labeling")
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(f"127.0.0.1:{credentials['port']}:labeling:labeling:"
                      f"{credentials['password']}\n")
    pgpass.chmod(0o600)
    result = run_cli("slapp.db.init", env={"LABELING_PASSWORD": "", "PGPASSFILE": str(pgpass)})
    assert result.returncode == 0, result.stderr
    pgpass.unlink()
    result = run_cli("slapp.db.init", env={"LABELING_PASSWORD": "", "PGPASSFILE": str(pgpass)})
    assert (result.returncode, result.stderr.splitlines()) == (1, [
        "slapp db-init: error: environment variable LABELING_PASSWORD is not set, and there "
        "is no password file (PGPASSFILE or ~/.pgpass)"])


# --- queries and writes ------------------------------------------------------------

def test_query_returns_dicts_and_arrays_as_lists(labeling_db):
    rows = labeling_db.query("SELECT %s::int AS n, %s::bigint[] AS ids, %s AS word",
                             (7, [1, 2, None], "it's \\ ünïcode"))
    assert rows == [{"n": 7, "ids": [1, 2, None], "word": "it's \\ ünïcode"}]


def test_bulk_insert_is_all_or_nothing(scratch):
    statements = [("INSERT INTO scratch VALUES (%s, %s)", (1, "first")),
                  ("INSERT INTO scratch VALUES (%s, %s)", (2, "second")),
                  ("INSERT INTO scratch VALUES (%s, %s)", (1, "duplicate key"))]
    with pytest.raises(psycopg2.errors.UniqueViolation):
        scratch.bulk_insert(statements)
    assert scratch.query("SELECT count(*) AS n FROM scratch") == [{"n": 0}]
    scratch.bulk_insert(statements[:2])
    assert scratch.query("SELECT id FROM scratch ORDER BY id") == [{"id": 1}, {"id": 2}]


def test_transaction_rolls_back_on_error(scratch):
    with pytest.raises(RuntimeError):
        with scratch.transaction() as cursor:
            cursor.execute("INSERT INTO scratch VALUES (%s, %s)", (1, "x"))
            raise RuntimeError("crash mid-transaction")
    assert scratch.query("SELECT count(*) AS n FROM scratch") == [{"n": 0}]


def test_insert_returning(scratch):
    assert scratch.insert("INSERT INTO scratch VALUES (%s, %s) RETURNING id",
                          (5, "o'brien")) == [{"id": 5}]


# --- the read-only LIMS path -------------------------------------------------------

def test_readonly_query_reads(lims_admin, lims_db):
    with lims_admin.cursor() as cursor:
        cursor.execute("INSERT INTO projects (id, code) VALUES (1, 'VisualBehavior')")
    assert lims_db.query_readonly("SELECT code FROM projects") == [{"code": "VisualBehavior"}]


@pytest.mark.parametrize("statement", [
    "DELETE FROM projects",
    "INSERT INTO projects (id, code) VALUES (2, 'Injected')",
    "SELECT 1; COMMIT; DELETE FROM projects",
])
def test_readonly_path_refuses_writes(lims_admin, embedded_server, statement):
    with lims_admin.cursor() as cursor:
        cursor.execute("INSERT INTO projects (id, code) VALUES (1, 'VisualBehavior')")
    # even a role that may write is stopped before anything runs
    owner = DbConnection(**embedded_server.credentials("postgres", "lims"), read_only=True)
    with pytest.raises(UnsafeQueryException, match="a LIMS query must be one SELECT"):
        owner.query_readonly(statement)
    with pytest.raises(UnsafeQueryException):
        owner.query(statement)
    owner.close()
    with lims_admin.cursor() as cursor:
        cursor.execute("SELECT id, code FROM projects")
        assert cursor.fetchall() == [(1, "VisualBehavior")]


def test_the_transaction_itself_is_read_only(lims_admin, embedded_server):
    """Behind the parser, the query runs read-only and with standard-conforming strings."""
    owner = DbConnection(**embedded_server.credentials("postgres", "lims"), read_only=True)
    rows = owner.query("SELECT current_setting('transaction_read_only') AS ro, "
                       "current_setting('standard_conforming_strings') AS scs")
    owner.close()
    assert rows == [{"ro": "on", "scs": "on"}]


def test_readonly_statement_timeout(lims_db):
    slow = "SELECT count(*) FROM generate_series(1, 10000000000)"  # no volatile call
    with pytest.raises(psycopg2.errors.QueryCanceled, match="statement timeout"):
        lims_db.query_readonly(slow, timeout_seconds=0.2)
    assert lims_db.query_readonly("SELECT 1 AS one") == [{"one": 1}]


def test_the_read_only_connection_applies_its_timeout_to_query(embedded_server):
    lims = DbConnection(**embedded_server.credentials("lims_reader", "lims"), read_only=True,
                        query_timeout_seconds=0.2)
    with pytest.raises(psycopg2.errors.QueryCanceled, match="statement timeout"):
        lims.query("SELECT count(*) FROM generate_series(1, 10000000000)")
    lims.close()


@pytest.mark.parametrize("write", [
    lambda db: db.insert("INSERT INTO projects (id, code) VALUES (3, 'x')"),
    lambda db: db.execute("DELETE FROM projects"),
    lambda db: db.bulk_insert(["DELETE FROM projects"]),
    lambda db: db.copy_rows("projects", [("id", "int")], [(4,)]),
])
def test_a_read_only_connection_refuses_every_write(lims_admin, embedded_server, write):
    owner = DbConnection(**embedded_server.credentials("postgres", "lims"), read_only=True)
    with pytest.raises(ReadOnlyConnectionException, match="lims is read-only"):
        write(owner)
    owner.close()


def test_values_and_compositions_are_checked_as_the_server_gets_them(lims_admin, lims_db):
    with lims_admin.cursor() as cursor:
        cursor.execute("INSERT INTO projects (id, code) VALUES (1, 'a''; DELETE FROM x; --')")
    assert lims_db.query("SELECT id FROM projects WHERE code = %s",
                         ("a'; DELETE FROM x; --",)) == [{"id": 1}]
    composed = pgsql.SQL("SELECT id FROM projects WHERE code = {}").format(
        pgsql.Literal("a'; DELETE FROM x; --"))
    assert lims_db.query(composed) == [{"id": 1}]


# --- binary COPY -------------------------------------------------------------------

def test_copy_rows_round_trips_arrays(labeling_db):
    labeling_db.execute("DROP TABLE IF EXISTS copied")
    labeling_db.execute("CREATE TABLE copied (k bigint, name text, rows int[], "
                        "vals real[], grid int[], flag boolean, p real, meta jsonb)")
    rng = np.random.default_rng(0)
    values = rng.normal(size=1000).astype(np.float32)
    rows = [(1, "ünïcode 'q'", np.arange(5, dtype=np.int32), values, np.arange(6).reshape(2, 3),
             True, 0.25, {"a": [1, 2]}),
            (2, None, np.array([], dtype=np.int32), np.array([], dtype=np.float32), [[1]],
             False, None, None)]
    columns = [("k", "bigint"), ("name", "text"), ("rows", "int[]"), ("vals", "real[]"),
               ("grid", "int4[]"), ("flag", "bool"), ("p", "real"), ("meta", "jsonb")]
    labeling_db.copy_rows("copied", columns, rows)
    stored = labeling_db.query("SELECT * FROM copied ORDER BY k")
    labeling_db.execute("DROP TABLE copied")
    assert stored[0]["name"] == "ünïcode 'q'"
    assert stored[0]["rows"] == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(np.array(stored[0]["vals"], dtype=np.float32), values)
    assert stored[0]["grid"] == [[0, 1, 2], [3, 4, 5]]
    assert stored[0]["flag"] is True and stored[0]["p"] == 0.25
    assert stored[0]["meta"] == {"a": [1, 2]}
    assert stored[1] == {"k": 2, "name": None, "rows": [], "vals": [], "grid": [[1]],
                         "flag": False, "p": None, "meta": None}


def test_copy_inside_a_failed_transaction_leaves_nothing(labeling_db):
    labeling_db.execute("DROP TABLE IF EXISTS copied")
    labeling_db.execute("CREATE TABLE copied (k int PRIMARY KEY, vals real[])")
    with pytest.raises(psycopg2.errors.UniqueViolation):
        with labeling_db.transaction() as cursor:
            labeling_db.copy_rows("copied", [("k", "int"), ("vals", "real[]")],
                                  [(1, [1.0]), (2, [2.0])], cursor=cursor)
            cursor.execute("INSERT INTO copied VALUES (1, '{}')")
    assert labeling_db.query("SELECT count(*) AS n FROM copied") == [{"n": 0}]
    labeling_db.execute("DROP TABLE copied")


def test_copy_raises_the_rows_own_error_and_stores_nothing(labeling_db):
    labeling_db.execute("DROP TABLE IF EXISTS copied")
    labeling_db.execute("CREATE TABLE copied (k int)")

    def rows():
        yield (1,)
        raise ValueError("ROI 1 has pixels outside the movie")

    with pytest.raises(ValueError, match="ROI 1 has pixels outside the movie"):
        labeling_db.copy_rows("copied", [("k", "int")], rows())
    assert labeling_db.query("SELECT count(*) AS n FROM copied") == [{"n": 0}]
    labeling_db.execute("DROP TABLE copied")


# --- connecting --------------------------------------------------------------------

def test_wrong_password_fails_at_once_without_echoing_it(embedded_server):
    credentials = embedded_server.credentials("labeling", "labeling")
    credentials["password"] = "Wr0ng-Passw0rd-Marker"
    dbconn = DbConnection(**credentials, connect_attempts=5, backoff_seconds=10)
    with pytest.raises(psycopg2.OperationalError) as raised:
        dbconn.query("SELECT 1")
    assert "password authentication failed" in str(raised.value)
    assert "Wr0ng-Passw0rd-Marker" not in str(raised.value)
    assert "Wr0ng-Passw0rd-Marker" not in repr(dbconn)


def test_connect_retries_with_backoff_then_gives_up(embedded_server, caplog):
    # argschema sets the root logger's level when a command runs in-process; be explicit
    caplog.set_level(logging.WARNING, logger="slapp.utils.query_utils")
    credentials = embedded_server.credentials("labeling", "labeling")
    credentials["port"] = 1  # nothing listens there
    dbconn = DbConnection(**credentials, connect_attempts=3, backoff_seconds=0.01)
    with pytest.raises(psycopg2.OperationalError):
        dbconn.query("SELECT 1")
    retries = [r for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retries) == 2
    assert credentials["password"] not in caplog.text


def test_reconnects_after_the_connection_is_lost(labeling_db, embedded_server):
    pid = labeling_db.query("SELECT pg_backend_pid() AS pid")[0]["pid"]
    with embedded_server.admin_connection() as admin, admin.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", (pid,))
    assert labeling_db.query("SELECT 1 AS one") == [{"one": 1}]
