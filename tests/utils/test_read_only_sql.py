"""PostgreSQL's parser decides what a LIMS query string is (no server needed here).

The catalogue of attacks against a real server, through the real command, is
tests/reliability/test_lims_query_attacks.py; this file checks the parser's
verdicts and the names it hands to the server's volatility check.
"""
import pytest

from slapp.utils.read_only_sql import UnsafeQueryException, parse_read_only_query

LEGITIMATE = [
    "SELECT id AS exp_id FROM ophys_experiments",
    "SELECT id AS exp_id FROM ophys_experiments;",
    "SELECT id AS exp_id FROM ophys_experiments ;  -- trailing comment",
    "SELECT id AS exp_id FROM ophys_experiments WHERE workflow_state <> 'a;b'",
    "SELECT id AS exp_id FROM ophys_experiments WHERE storage_directory LIKE E'%\\\\;%'",
    "SELECT $$; DELETE FROM projects; $$ AS note, id AS exp_id FROM ophys_experiments",
    "SELECT $tag$ ' ; $tag$ AS note, 1 AS exp_id",
    "-- pick the passed ones; all of them\nSELECT id AS exp_id FROM ophys_experiments",
    "/* outer /* nested; */ still a comment; */ SELECT 1 AS exp_id",
    "WITH passed AS (SELECT id FROM ophys_experiments WHERE workflow_state = 'passed') "
    "SELECT id AS exp_id FROM passed",
    "WITH RECURSIVE n(i) AS (VALUES (1) UNION ALL SELECT i + 1 FROM n WHERE i < 5) "
    "SELECT i AS exp_id FROM n",
    "VALUES (1), (2)",
    "TABLE ophys_experiments",
    "(SELECT 1 AS exp_id) UNION (SELECT 2)",
    "SELECT oe.id AS exp_id FROM ophys_experiments oe "
    "WHERE oe.id IN (SELECT id FROM ophys_experiments WHERE lower(workflow_state) = 'passed')",
    'SELECT "select" AS exp_id FROM (SELECT 1 AS "select; delete") AS "t;"',
]


@pytest.mark.parametrize("query", LEGITIMATE)
def test_legitimate_queries_parse(query):
    parse_read_only_query(query)


REFUSED = [
    ("", "holds no statement"),
    ("-- only a comment\n;", "holds no statement"),
    ("SELECT 1; SELECT 2", "holds 2 statements"),
    ("SELECT 1 AS exp_id; COMMIT; BEGIN READ WRITE; DELETE FROM t; COMMIT",
     "holds 5 statements (SELECT, COMMIT, BEGIN, DELETE, COMMIT)"),
    ("END", "is an END statement"),
    ("ROLLBACK", "is a ROLLBACK statement"),
    ("SAVEPOINT s", "is a SAVEPOINT statement"),
    ("SET statement_timeout = 0", "is a SET statement"),
    ("SET LOCAL transaction_read_only = off", "is a SET statement"),
    ("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE", "is a SET statement"),
    ("SET ROLE postgres", "is a SET statement"),
    ("RESET ALL", "is a RESET statement"),
    ("DELETE FROM t RETURNING id AS exp_id", "is a DELETE statement"),
    ("WITH x AS (SELECT 1) DELETE FROM t", "is a DELETE statement"),
    ("WITH gone AS (DELETE FROM t RETURNING id) SELECT id AS exp_id FROM gone",
     "holds a DELETE"),
    ("WITH a AS (WITH b AS (UPDATE t SET x = 1 RETURNING id) SELECT * FROM b) TABLE a",
     "holds an UPDATE"),
    ("SELECT id INTO stolen FROM t", "SELECT ... INTO creates a table"),
    ("CREATE TABLE stolen AS SELECT 1", "is a CREATE statement"),
    ("COPY (SELECT 1) TO '/tmp/x'", "is a COPY statement"),
    ("COPY t FROM PROGRAM 'id'", "is a COPY statement"),
    ("DO $$ BEGIN DELETE FROM t; END $$", "is a DO statement"),
    ("PREPARE p AS DELETE FROM t", "is a PREPARE statement"),
    ("EXECUTE p", "is an EXECUTE statement"),
    ("LOCK TABLE t", "is a LOCK statement"),
    ("EXPLAIN ANALYZE DELETE FROM t", "is an EXPLAIN statement"),
    ("SELECT id FROM t FOR UPDATE", "FOR UPDATE/FOR SHARE locks rows"),
    ("SELECT 1 -- \n; DELETE FROM t", "holds 2 statements"),
    ("SELECT $$ $$; DELETE FROM t; SELECT $$ $$", "holds 3 statements"),
    ("SELECT query_to_xml('DELETE FROM t', true, false, '')", "runs SQL given as text"),
    ("SELECT 'unterminated", "is not valid SQL: unterminated quoted string"),
    ("SELECT 1\x00; DELETE FROM t", "contains a NUL character"),
]


@pytest.mark.parametrize("query,reason", REFUSED)
def test_refused_strings_say_why_in_one_line(query, reason):
    with pytest.raises(UnsafeQueryException) as refused:
        parse_read_only_query(query)
    assert reason in str(refused.value)
    assert "\n" not in str(refused.value)


def test_called_names_cover_functions_operators_and_attribute_notation():
    called = parse_read_only_query(
        "SELECT pg_catalog.lower(code), set_config('a', 'b', true), t.id || t.f, "
        "1 OPERATOR(myschema.+) 2 FROM projects t WHERE pg_terminate_backend(1)")
    assert called.functions == {"set_config", "pg_terminate_backend"}
    assert called.qualified_functions == {"pg_catalog.lower"}
    assert called.operators == {"||"}
    assert called.qualified_operators == {"myschema.+"}
    assert called.attributes == {"id", "f"}
