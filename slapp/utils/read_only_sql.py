"""Decide, with PostgreSQL's own parser, whether a SQL string is one query that only reads.

A LIMS query string is typed by a user and run as typed, so slapp must know what
it is before the server runs it. Regular expressions cannot know: a ``;`` may
sit in a string, a dollar quote or a comment. :func:`parse_read_only_query`
parses the text with pglast, which embeds the parser of PostgreSQL itself, and
accepts exactly one statement that is a query: ``SELECT``, ``VALUES``,
``TABLE`` or ``WITH ... SELECT`` whose every part is itself a query, with no
``INTO`` (which creates a table) and no ``FOR UPDATE``/``FOR SHARE`` (which
takes row locks).

A read-only transaction stops writes to tables but not every side effect of a
function: ``pg_terminate_backend``, ``lo_export``, ``set_config``,
``pg_read_file``, ``dblink`` and the like run in one. The rule slapp applies is
PostgreSQL's own classification: a query may only call functions and operators
that the server's catalogue declares ``IMMUTABLE`` or ``STABLE``; PostgreSQL
defines both as unable to modify the database, and marks every function with a
side effect (and every function that runs SQL given as text, such as
``query_to_xml``) ``VOLATILE``. :data:`VOLATILE_CALLS` is the catalogue look-up
that enforces it; :func:`parse_read_only_query` collects the names it checks.
"""
from dataclasses import dataclass, field

from pglast import ast, parse_sql
from pglast.parser import ParseError

from slapp.errors import SlappError

ACCEPTED = "a LIMS query must be one SELECT, VALUES, TABLE or WITH ... SELECT"

# Statements that may appear inside a query but write (data-modifying WITH).
_WRITING_NODES = {ast.InsertStmt: "INSERT", ast.UpdateStmt: "UPDATE",
                  ast.DeleteStmt: "DELETE", ast.MergeStmt: "MERGE"}

# Functions that run SQL handed to them as text, which the parser cannot see.
# PostgreSQL 18 marks them VOLATILE (so the catalogue rule refuses them); they
# are named here too because older servers did not mark all of them so.
SQL_TEXT_FUNCTIONS = frozenset({
    "query_to_xml", "query_to_xmlschema", "query_to_xml_and_xmlschema",
    "cursor_to_xml", "cursor_to_xmlschema", "ts_stat", "ts_rewrite"})

# Volatile but harmless: refused all the same (the rule has no exceptions), with a hint,
# because a query that samples at random cannot be drawn again.
_RANDOM_FUNCTIONS = {"random()", "random_normal()", "setseed()"}

# Volatile functions and operators among the names a query uses. Unqualified
# names are looked up in every schema of the search path (pg_catalog included),
# qualified ones in their schema; a name counts if any of its overloads is
# VOLATILE. Attribute names (``t.f``) count only for functions callable with one
# argument, because PostgreSQL reads ``t.f`` as ``f(t)`` when ``t`` has no column ``f``.
VOLATILE_CALLS = """
SELECT DISTINCT format('%%s()', p.proname) AS name
FROM pg_catalog.pg_proc AS p JOIN pg_catalog.pg_namespace AS n ON n.oid = p.pronamespace
WHERE p.provolatile = 'v' AND (
      (p.proname = ANY(%(functions)s) AND n.nspname = ANY(pg_catalog.current_schemas(true)))
   OR (n.nspname || '.' || p.proname) = ANY(%(qualified_functions)s)
   OR (p.proname = ANY(%(attributes)s) AND p.pronargs >= 1
       AND p.pronargs - p.pronargdefaults <= 1
       AND n.nspname = ANY(pg_catalog.current_schemas(true))))
UNION
SELECT DISTINCT format('operator %%s', o.oprname)
FROM pg_catalog.pg_operator AS o
JOIN pg_catalog.pg_namespace AS n ON n.oid = o.oprnamespace
JOIN pg_catalog.pg_proc AS p ON p.oid = o.oprcode
WHERE p.provolatile = 'v' AND (
      (o.oprname = ANY(%(operators)s) AND n.nspname = ANY(pg_catalog.current_schemas(true)))
   OR (n.nspname || '.' || o.oprname) = ANY(%(qualified_operators)s))
ORDER BY 1
"""


class UnsafeQueryException(SlappError):
    """A LIMS query string that is not exactly one query that only reads."""


@dataclass
class CalledNames:
    """The names of the functions and operators a query calls, for :data:`VOLATILE_CALLS`."""

    functions: set = field(default_factory=set)
    qualified_functions: set = field(default_factory=set)
    attributes: set = field(default_factory=set)
    operators: set = field(default_factory=set)
    qualified_operators: set = field(default_factory=set)

    def as_parameters(self) -> dict:
        """The sets as sorted lists, the parameters of :data:`VOLATILE_CALLS`."""
        return {name: sorted(values) for name, values in vars(self).items()}


def _nodes(node):
    """Every AST node below ``node`` (itself included), depth first."""
    if isinstance(node, ast.Node):
        yield node
        for attribute in node.__slots__:
            yield from _nodes(getattr(node, attribute))
    elif isinstance(node, (tuple, list)):
        for item in node:
            yield from _nodes(item)


def _names(name_nodes) -> list[str]:
    return [getattr(node, "sval", "") for node in name_nodes or ()]


def _record_call(names: list[str], unqualified: set, qualified: set) -> None:
    if len(names) == 1:
        unqualified.add(names[0])
    elif names:
        qualified.add(".".join(names[-2:]))


def _statement_keyword(sql: str, raw: ast.RawStmt) -> str:
    statement = raw.stmt
    for node_type, keyword in _WRITING_NODES.items():
        if isinstance(statement, node_type):
            return keyword
    words = sql[raw.stmt_location:].split(None, 1)
    return words[0].upper().rstrip(";") if words else type(statement).__name__


def _a(word: str) -> str:
    return ("an " if word[:1] in "AEIOU" else "a ") + word


def _refuse_writing_parts(statement: ast.SelectStmt) -> CalledNames:
    """Walk a SELECT; refuse what writes or locks, collect the names it calls."""
    called = CalledNames()
    for node in _nodes(statement):
        for node_type, keyword in _WRITING_NODES.items():
            if isinstance(node, node_type):
                raise UnsafeQueryException(
                    f"it holds {_a(keyword)} (a data-modifying WITH); {ACCEPTED}")
        if isinstance(node, ast.IntoClause):
            raise UnsafeQueryException(f"SELECT ... INTO creates a table; {ACCEPTED}")
        if isinstance(node, ast.LockingClause):
            raise UnsafeQueryException(
                "FOR UPDATE/FOR SHARE locks rows; a LIMS query only reads")
        if isinstance(node, ast.FuncCall):
            names = _names(node.funcname)
            if names and names[-1].lower() in SQL_TEXT_FUNCTIONS:
                raise UnsafeQueryException(
                    f"it calls {names[-1]}(), which runs SQL given as text; "
                    "a LIMS query must say what it runs")
            _record_call(names, called.functions, called.qualified_functions)
        elif isinstance(node, ast.A_Expr) and node.name:
            _record_call(_names(node.name), called.operators, called.qualified_operators)
        elif isinstance(node, ast.ColumnRef) and node.fields and len(node.fields) > 1:
            last = node.fields[-1]
            if isinstance(last, ast.String):
                called.attributes.add(last.sval)
    return called


def parse_read_only_query(sql: str) -> CalledNames:
    """Check that ``sql`` is exactly one query that reads, with PostgreSQL's parser.

    Comments, a trailing ``;``, ``;`` inside literals, dollar quotes or
    comments, and common table expressions are all fine: the parser, not a
    pattern, decides where statements end.

    Parameters
    ----------
    sql : str
        The query as it will be sent to the server (``standard_conforming_strings``
        on, as :meth:`slapp.utils.query_utils.DbConnection.query_readonly` sets it).

    Returns
    -------
    CalledNames
        The functions and operators the query calls, which the server's
        catalogue must then confirm are not VOLATILE.

    Raises
    ------
    UnsafeQueryException
        With a message saying why the string is refused: not valid SQL, no
        statement, more than one, a statement that is not a query, or a query
        that writes, locks, creates a table or runs SQL given as text.
    """
    if "\x00" in sql:
        raise UnsafeQueryException("it contains a NUL character")
    try:
        statements = parse_sql(sql)
    except ParseError as error:
        raise UnsafeQueryException(f"it is not valid SQL: {error.args[0]}") from None
    if not statements:
        raise UnsafeQueryException(f"it holds no statement; {ACCEPTED}")
    if len(statements) > 1:
        keywords = ", ".join(_statement_keyword(sql, raw) for raw in statements)
        raise UnsafeQueryException(
            f"it holds {len(statements)} statements ({keywords}); {ACCEPTED}")
    raw = statements[0]
    if not isinstance(raw.stmt, ast.SelectStmt):
        raise UnsafeQueryException(
            f"it is {_a(_statement_keyword(sql, raw))} statement; {ACCEPTED}")
    return _refuse_writing_parts(raw.stmt)


def refuse_volatile_calls(cursor, called: CalledNames) -> None:
    """Refuse a query that calls a VOLATILE function or operator, asking the server.

    Parameters
    ----------
    cursor : psycopg2 cursor
        On the database the query will run in, in the transaction it will run in.
    called : CalledNames
        From :func:`parse_read_only_query`.

    Raises
    ------
    UnsafeQueryException
        Naming the volatile functions and operators.
    """
    parameters = called.as_parameters()
    if not any(parameters.values()):
        return
    cursor.execute(VOLATILE_CALLS, parameters)
    volatile = [row["name"] if isinstance(row, dict) else row[0] for row in cursor.fetchall()]
    if volatile:
        hint = ("; slapp draws the sample itself, from random_seed"
                if set(volatile) & _RANDOM_FUNCTIONS else "")
        raise UnsafeQueryException(
            f"it calls {', '.join(volatile)}, which the server declares VOLATILE (able to "
            "change the database or the server); a LIMS query may only call IMMUTABLE or "
            f"STABLE functions{hint}")
