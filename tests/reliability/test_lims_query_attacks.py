"""A catalogue of LIMS query strings that try to write, run through the real command.

Many labs' LIMS accounts may write, so slapp cannot lean on the role: every
string below is given to ``select_data`` as a LIMS account that may write every
LIMS table, and as a superuser (which may also write files and run programs on
the server). Each must end with exit status 1 and one line on stderr, leave
every LIMS table as it was (no row, no new table), and leave the directory the
server could write into empty. A control test runs a few of the same strings
through a plain psycopg2 connection to show the harm they do without slapp.
"""
import json
import os
import shutil
import tempfile
from contextlib import closing
from pathlib import Path

import psycopg2
import psycopg2.extensions
import pytest
from psycopg2 import sql as pgsql

from slapp import embedded
from slapp.data_selection.select_data import DataSelector
from slapp.demo.lims import add_experiment
from slapp.utils.query_utils import DbConnection
from slapp.utils.read_only_sql import UnsafeQueryException

WRITER, WRITER_PASSWORD = "lims_writer", "writer-password-for-tests"
LIMS_TABLES = ("ophys_experiments", "ophys_sessions", "imaging_depths", "donors_genotypes",
               "genotypes", "genotype_types", "specimens", "donors", "projects")
SELECT_ALL = "SELECT id AS exp_id FROM ophys_experiments"

# (name, query string; {dir} is a directory the server's user may write into)
ATTACKS = [
    ("commit then write", f"{SELECT_ALL}; COMMIT; BEGIN READ WRITE; "
                          f"DELETE FROM ophys_experiments WHERE id > 2; COMMIT; {SELECT_ALL}"),
    ("rollback then write", "ROLLBACK; DELETE FROM projects; SELECT 1 AS exp_id"),
    ("end then truncate", "END; TRUNCATE ophys_experiments CASCADE; SELECT 1 AS exp_id"),
    ("savepoint", f"{SELECT_ALL}; SAVEPOINT s; DELETE FROM projects; RELEASE s"),
    ("set", "SET default_transaction_read_only = off"),
    ("set local timeout", f"SET LOCAL statement_timeout = 0; {SELECT_ALL}"),
    ("session characteristics",
     "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE; COMMIT; "
     "DELETE FROM projects; SELECT 1 AS exp_id"),
    ("set role", "SET ROLE postgres; COMMIT; DELETE FROM projects; SELECT 1 AS exp_id"),
    ("reset", "RESET ALL; COMMIT; DELETE FROM projects; SELECT 1 AS exp_id"),
    ("data-modifying cte",
     "WITH gone AS (DELETE FROM ophys_experiments RETURNING id) SELECT id AS exp_id FROM gone"),
    ("updating cte", "WITH x AS (UPDATE ophys_experiments SET workflow_state = 'failed' "
                     "RETURNING id) SELECT id AS exp_id FROM x"),
    ("select into", "SELECT id AS exp_id INTO stolen FROM ophys_experiments"),
    ("create table as", "CREATE TABLE stolen AS SELECT id AS exp_id FROM ophys_experiments"),
    ("copy to file", "COPY (SELECT id FROM ophys_experiments) TO '{dir}/copied.txt'"),
    ("copy to program", "COPY (SELECT 1) TO PROGRAM 'touch {dir}/program_ran'"),
    ("copy from program", "COPY projects (id, code) FROM PROGRAM 'echo 99,Injected' "
                          "WITH (FORMAT csv)"),
    ("do block", "DO $$ BEGIN DELETE FROM projects; END $$"),
    ("prepare and execute", "PREPARE p AS DELETE FROM projects; EXECUTE p"),
    ("lock", "LOCK TABLE ophys_experiments IN ACCESS EXCLUSIVE MODE"),
    ("explain analyze", "EXPLAIN ANALYZE DELETE FROM projects"),
    ("select for update", f"{SELECT_ALL} FOR UPDATE"),
    ("hidden after a line comment", f"{SELECT_ALL} -- harmless\n; DELETE FROM projects"),
    ("hidden between block comments",
     f"/* ; */ {SELECT_ALL}; /* */ DELETE FROM projects /* ; */"),
    ("hidden after dollar quotes",
     "SELECT $q$ ; $q$ AS note, 1 AS exp_id; DELETE FROM projects; SELECT $$ $$"),
    ("terminate backends", "SELECT pg_terminate_backend(pid) AS exp_id FROM pg_stat_activity "
                           "WHERE pid = -1"),
    ("large object export", "SELECT lo_export(lo_from_bytea(0, 'x'), '{dir}/lo.txt') AS exp_id"),
    ("set_config", "SELECT set_config('statement_timeout', '0', false) AS exp_id, "
                   "id FROM ophys_experiments"),
    ("read a server file", "SELECT length(pg_read_file('/etc/hostname')) AS exp_id"),
    ("sql given as text", "SELECT 1 AS exp_id, "
                          "query_to_xml('DELETE FROM projects', true, false, '')"),
    ("notify", "NOTIFY slapp_attack"),
    ("advisory lock", "SELECT pg_advisory_lock(1) AS exp_id"),
]


def _verifier(connection, password: str, role: str) -> str:
    return psycopg2.extensions.encrypt_password(password, role, connection, "scram-sha-256")


@pytest.fixture(scope="module")
def writer_role(embedded_server):
    """A LIMS login that may insert, update, delete and truncate every LIMS table."""
    with closing(embedded_server.admin_connection()) as connection, \
            connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (WRITER,))
        if cursor.fetchone() is None:
            cursor.execute(pgsql.SQL("CREATE ROLE {} LOGIN PASSWORD %s").format(
                pgsql.Identifier(WRITER)), (_verifier(connection, WRITER_PASSWORD, WRITER),))
    with closing(embedded_server.admin_connection(embedded.LIMS_DATABASE)) as connection, \
            connection.cursor() as cursor:
        cursor.execute(pgsql.SQL(
            "GRANT CONNECT ON DATABASE {db} TO {role}; GRANT USAGE, CREATE ON SCHEMA public "
            "TO {role}; GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}").format(
                db=pgsql.Identifier(embedded.LIMS_DATABASE), role=pgsql.Identifier(WRITER)))
    return {"LIMS_USER": WRITER, "LIMS_PASSWORD": WRITER_PASSWORD}


@pytest.fixture
def roles(writer_role, embedded_server):
    superuser = embedded_server.credentials(embedded.SUPERUSER, embedded.LIMS_DATABASE)
    return {"writer": writer_role,
            "superuser": {"LIMS_USER": superuser["user"],
                          "LIMS_PASSWORD": superuser["password"]}}


@pytest.fixture
def server_writable_dir():
    """A directory the server's user could write into, so a file appearing would show."""
    directory = Path(tempfile.mkdtemp(prefix="slapp-attack-"))
    directory.chmod(0o777)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def filled_lims(lims_admin):
    with lims_admin.cursor() as cursor:
        for experiment_id in range(1, 6):
            add_experiment(cursor, experiment_id, project="P", genotype="G", depth=100)
    return lims_admin


def lims_snapshot(lims_admin) -> dict:
    """Every LIMS table's content digest, and the list of tables in schema public."""
    snapshot = {}
    with lims_admin.cursor() as cursor:
        for table in LIMS_TABLES:
            cursor.execute(pgsql.SQL(
                "SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) "
                "FROM {} AS t").format(pgsql.Identifier(table)))
            snapshot[table] = cursor.fetchone()
        cursor.execute("SELECT array_agg(relname ORDER BY relname) FROM pg_class "
                       "WHERE relnamespace = 'public'::regnamespace")
        snapshot["relations"] = cursor.fetchone()[0]
        cursor.execute("SELECT count(*) FROM pg_largeobject_metadata")
        snapshot["large objects"] = cursor.fetchone()[0]
    return snapshot


def test_the_catalogue_covers_what_the_issue_lists():
    assert len(ATTACKS) >= 15
    text = " ".join(query for _, query in ATTACKS).upper()
    for word in ("COMMIT", "ROLLBACK", "BEGIN", "END;", "SAVEPOINT", "SET LOCAL",
                 "SET SESSION CHARACTERISTICS", "SET ROLE", "RESET", "WITH GONE AS (DELETE",
                 "INTO STOLEN", "CREATE TABLE STOLEN AS", "TO '", "FROM PROGRAM", "DO $$",
                 "PREPARE", "EXECUTE", "LOCK", "--", "/*", "$Q$", "PG_TERMINATE_BACKEND",
                 "LO_EXPORT", "SET_CONFIG", "PG_READ_FILE"):
        assert word in text, word


@pytest.mark.parametrize("role", ["writer", "superuser"])
@pytest.mark.parametrize("name,attack", ATTACKS, ids=[name for name, _ in ATTACKS])
def test_attack_is_refused_and_changes_nothing(name, attack, role, roles, filled_lims,
                                               labeling_db, server_writable_dir, run_cli,
                                               tmp_path):
    query = attack.replace("{dir}", str(server_writable_dir))
    input_json = tmp_path / "attack.json"
    input_json.write_text(json.dumps({"query_strings": [query], "sub_selection_counts": [1]}))
    before = lims_snapshot(filled_lims)
    result = run_cli("slapp.data_selection.select_data", "--input_json", input_json,
                     env=roles[role], timeout=120)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1, result.stderr
    assert len(lines) == 1 and lines[0].startswith("slapp select: error: query 0 refused: "), \
        result.stderr
    assert lims_snapshot(filled_lims) == before
    assert list(server_writable_dir.iterdir()) == []
    assert labeling_db.query("SELECT count(*) AS n FROM experiment_selection") == [{"n": 0}]


def test_without_slapp_the_same_strings_do_harm(roles, filled_lims, embedded_server,
                                                server_writable_dir):
    """The control: in a plain read-only transaction, as the writer and the superuser."""
    attacks = dict(ATTACKS)
    writer = psycopg2.connect(host="127.0.0.1", port=embedded_server.port, dbname="lims",
                              user=WRITER, password=WRITER_PASSWORD)
    with closing(writer), writer.cursor() as cursor:
        cursor.execute("SET TRANSACTION READ ONLY")
        cursor.execute(attacks["commit then write"])
        writer.commit()
    assert lims_snapshot(filled_lims)["ophys_experiments"][0] == 2
    superuser = embedded_server.admin_connection(embedded.LIMS_DATABASE)
    with closing(superuser), superuser.cursor() as cursor:
        cursor.execute(attacks["copy to program"].replace("{dir}", str(server_writable_dir)))
    assert [path.name for path in server_writable_dir.iterdir()] == ["program_ran"]
    os.unlink(server_writable_dir / "program_ran")


LEGITIMATE = [
    f"{SELECT_ALL};",
    f"{SELECT_ALL} WHERE workflow_state <> 'a;b' ;  -- trailing; comment",
    f"/* a comment; with /* nesting */ */ {SELECT_ALL}",
    f"-- the passed ones; all of them\n{SELECT_ALL} WHERE workflow_state = 'passed'",
    "SELECT $$; DELETE FROM projects; $$ AS note, id AS exp_id FROM ophys_experiments",
    "WITH passed AS (SELECT id FROM ophys_experiments WHERE workflow_state = 'passed') "
    "SELECT id AS exp_id FROM passed",
    "WITH RECURSIVE n(i) AS (VALUES (1) UNION ALL SELECT i + 1 FROM n WHERE i < 5) "
    "SELECT i AS exp_id FROM n",
    "SELECT column1 AS exp_id FROM (VALUES (1), (2), (3), (4), (5)) AS v",
    "SELECT oe.id AS exp_id FROM ophys_experiments oe JOIN ophys_sessions os "
    "ON oe.ophys_session_id = os.id JOIN projects ON projects.id = os.project_id "
    "WHERE lower(projects.code) = 'p' AND now() > '2000-01-01' AND oe.id = ANY(ARRAY[1,2,3,4,5])",
    "SELECT id AS exp_id FROM ophys_experiments WHERE id IN (SELECT generate_series(1, 5))",
]


@pytest.mark.parametrize("query", LEGITIMATE)
def test_legitimate_queries_still_work(query, filled_lims, labeling_db, lims_db):
    result = DataSelector(input_data={"query_strings": [query], "sub_selection_counts": [5]},
                          args=[]).run(lims_db, labeling_db)
    assert sorted(result["sub_selected_ids"]) == [1, 2, 3, 4, 5]


def test_table_query_works_through_the_command(filled_lims, labeling_db, run_cli, tmp_path):
    input_json = tmp_path / "table.json"
    input_json.write_text(json.dumps({
        "query_strings": ["WITH e AS (TABLE ophys_experiments) SELECT id AS exp_id FROM e;"],
        "sub_selection_counts": [2]}))
    result = run_cli("slapp.data_selection.select_data", "--input_json", input_json)
    assert result.returncode == 0, result.stderr
    assert labeling_db.query("SELECT count(*) AS n FROM experiment_selection") == [{"n": 1}]


def test_random_sampling_in_sql_is_refused_with_a_hint(filled_lims, lims_db):
    with pytest.raises(UnsafeQueryException,
                       match=r"calls random\(\), .*slapp draws the sample itself"):
        lims_db.query(f"{SELECT_ALL} ORDER BY random() LIMIT 2")


def test_attribute_notation_cannot_call_a_volatile_function(filled_lims, embedded_server):
    """PostgreSQL reads t.f as f(t); a volatile f taking t's row type is refused."""
    with filled_lims.cursor() as cursor:
        cursor.execute("CREATE OR REPLACE FUNCTION public.wipe(projects) RETURNS int "
                       "LANGUAGE sql VOLATILE AS 'SELECT 1'")
    owner = DbConnection(**embedded_server.credentials(embedded.SUPERUSER,
                                                       embedded.LIMS_DATABASE), read_only=True)
    try:
        with pytest.raises(UnsafeQueryException, match=r"calls wipe\(\)"):
            owner.query("SELECT p.wipe AS exp_id FROM projects AS p")
        assert owner.query("SELECT p.id AS exp_id FROM projects AS p ORDER BY 1 LIMIT 1") == [
            {"exp_id": 1}]
    finally:
        owner.close()
        with filled_lims.cursor() as cursor:
            cursor.execute("DROP FUNCTION public.wipe(projects)")
