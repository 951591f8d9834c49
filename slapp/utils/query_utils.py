"""The one database layer: credentials, connections, reads, writes and bulk writes.

Every step of the flow reads LIMS and writes the labeling database through
:class:`DbConnection`. Values always travel as query parameters or
``psycopg2.sql`` literals. A connection made with ``read_only=True`` (the LIMS
connection) runs every query through :meth:`DbConnection.query_readonly`: the
string must parse, with PostgreSQL's own parser, as exactly one query that only
reads and calls no VOLATILE function (:mod:`slapp.utils.read_only_sql`), and it
runs in a read-only transaction whose statement timeout it cannot change; such
a connection refuses every write. Writes are all-or-nothing. Connecting retries with backoff,
because a job array opens hundreds of connections at once; a command a person
waits for gives up within :data:`INTERACTIVE_CONNECT_SECONDS`
(:func:`labeling_connection`). A table or column of the labeling database that
is missing is reported as such, naming ``python -m slapp.db.init``, not as
raw SQL. Passwords never appear in a log line, a ``repr`` or an exception message.
"""
import logging
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import psycopg2.extras
from psycopg2 import sql as pgsql

from slapp.errors import BAD_INPUT, DATABASE_UNREACHABLE, SlappError
from slapp.utils import pg_copy
from slapp.utils.read_only_sql import parse_read_only_query, refuse_volatile_calls
from slapp.utils.retry import retry

logger = logging.getLogger(__name__)

# One rule for both: slapp guesses nothing that differs between sites. Host and
# database come from the environment (LIMS_HOST, LABELING_DATABASE, ...; `python
# -m slapp.embedded env` prints them for the embedded server), and a missing one
# is named in a CredentialsException; only PostgreSQL's standard port is given.
label_defaults = {"host": None, "database": None, "port": 5432}
lims_defaults = {"host": None, "database": None, "port": 5432}

# Server states that pass (SQLSTATE): shut down by an administrator, crashed,
# starting up, too many connections. With class 08 (connection exceptions)
# they are what a retry may cure.
_TRANSIENT_CODES = ("57P01", "57P02", "57P03", "53300")
# Connection failures that no amount of waiting will fix: fail at once.
_PERMANENT_CONNECT_ERRORS = (
    "password authentication failed",
    "no pg_hba.conf entry",
    "does not exist",
    "invalid port",
    "could not translate host name",
)


# How long a command a person waits for (status, report, compare, export.nwb,
# select_data, segmentation_manifest) tries to reach a server: two or three
# tries, enough for a server that is briefly out of connection slots, and an
# answer well within ten seconds (Python's start and imports included) when it
# is down or the port is wrong. Job-array tasks keep DbConnection's longer retries.
INTERACTIVE_CONNECT_SECONDS = 4.0
# libpq's shortest connect_timeout.
_MIN_CONNECT_TIMEOUT = 2
_INIT_COMMAND = "python -m slapp.db.init"


class MissingTableException(SlappError):
    """The labeling database lacks a table or column of slapp's schema."""


class CredentialsException(SlappError):
    """A database credential is missing from the environment."""


class ReadOnlyConnectionException(SlappError):
    """A write was attempted through a read-only (LIMS) connection."""


def get_db_credentials(env_prefix: str = "LABELING_", host: str | None = None,
                       database: str | None = None, port: int | None = None) -> dict:
    """Collect the connection parameters of one database.

    The user name and password come only from the environment
    (``{env_prefix}USER``, ``{env_prefix}PASSWORD``), so they are never written
    into a file of the project; when ``{env_prefix}PASSWORD`` is not set but a
    libpq password file exists (``$PGPASSFILE``, else ``~/.pgpass``), the
    password is None and libpq reads it from that file when connecting, which
    keeps it out of the environment and of a job scheduler's records. Host,
    database and port come from ``{env_prefix}HOST``, ``{env_prefix}DATABASE``
    and ``{env_prefix}PORT`` when set, and otherwise from the keyword
    arguments; when neither gives one of them, that is an error, as in the
    original toolkit (``lims_defaults`` and ``label_defaults`` give only the
    port).

    Parameters
    ----------
    env_prefix : str
        Prefix of the environment variables, ``"LABELING_"`` or ``"LIMS_"``.
    host, database : str, optional
        Fallbacks when the environment does not set them.
    port : int, optional
        Fallback port.

    Returns
    -------
    dict
        Keys ``user``, ``host``, ``database``, ``password`` (None when libpq
        will read it from the password file), ``port``: the keyword arguments
        of :class:`DbConnection`.

    Raises
    ------
    CredentialsException
        Naming the first missing variable (never a value).
    """
    def setting(name: str, fallback: Any = None) -> Any:
        value = os.environ.get(env_prefix + name)
        if value in (None, ""):
            value = fallback
        if value in (None, ""):
            raise CredentialsException(
                f"environment variable {env_prefix}{name} is not set")
        return value

    password = os.environ.get(env_prefix + "PASSWORD") or None
    if password is None and password_file() is None:
        raise CredentialsException(
            f"environment variable {env_prefix}PASSWORD is not set, and there is no "
            "password file (PGPASSFILE or ~/.pgpass)")
    credentials = {
        "user": setting("USER"),
        "password": password,
        "host": setting("HOST", host),
        "database": setting("DATABASE", database),
    }
    port_text = setting("PORT", port)
    try:
        credentials["port"] = int(port_text)
    except ValueError:
        raise CredentialsException(
            f"{env_prefix}PORT must be a number, not {port_text!r}") from None
    return credentials


def password_file() -> Path | None:
    """The libpq password file that connecting would read, if it exists.

    ``$PGPASSFILE`` when set, else ``~/.pgpass``; libpq ignores it unless only
    its owner may read it (``chmod 600``).
    """
    path = Path(os.environ.get("PGPASSFILE") or Path.home() / ".pgpass")
    return path if path.is_file() else None


def _final_text(cursor, query, params) -> str:
    """The SQL text the server will receive: values merged in, compositions rendered."""
    if params is not None:
        return cursor.mogrify(query, params).decode("utf-8")
    if isinstance(query, pgsql.Composable):
        return query.as_string(cursor)
    return query


def is_permanent_connect_error(error: psycopg2.OperationalError) -> bool:
    """Whether waiting cannot fix this connection failure (a wrong password, no database).

    Parameters
    ----------
    error : psycopg2.OperationalError
        Raised while connecting.

    Returns
    -------
    bool
        True for a failure that a retry would only repeat.
    """
    message = str(error).lower()
    return any(marker in message for marker in _PERMANENT_CONNECT_ERRORS)


def is_transient_error(error: Exception) -> bool:
    """Whether waiting may fix ``error``: the connection failed or was lost, the server
    was restarting or full. A wrong password or database name is not, nor is any
    error of the SQL itself.

    This and :func:`database_failure_class` are slapp's one reading of
    psycopg2's errors; the rest of slapp asks them.
    """
    if isinstance(error, psycopg2.InterfaceError):
        return True
    if not isinstance(error, psycopg2.OperationalError) or is_permanent_connect_error(error):
        return False
    return error.pgcode is None or error.pgcode in _TRANSIENT_CODES \
        or error.pgcode.startswith("08")


def database_failure_class(error: BaseException) -> str | None:
    """The failure class (see :mod:`slapp.errors`) of a database error that ended a task.

    Returns
    -------
    str or None
        ``bad_input`` for a connection that waiting cannot fix (a wrong password,
        no such database), ``database_unreachable`` for any other failed or lost
        connection or server trouble, None for anything else (not a database
        error, or an error of slapp's SQL: a bug).
    """
    if not isinstance(error, (psycopg2.OperationalError, psycopg2.InterfaceError)):
        return None
    if isinstance(error, psycopg2.OperationalError) and is_permanent_connect_error(error):
        return BAD_INPUT
    return DATABASE_UNREACHABLE


def _is_connection_lost(error: Exception, connection: Any) -> bool:
    return (isinstance(error, (psycopg2.OperationalError, psycopg2.InterfaceError))
            and (connection is None or connection.closed != 0))


class DbConnection:
    """A PostgreSQL database, connected lazily and reconnected when lost.

    Parameters
    ----------
    user, host, database, password : str
        Connection parameters, e.g. from :func:`get_db_credentials`.
    port : int
        Server port.
    read_only : bool
        The LIMS connection: every transaction of the session is read-only,
        :meth:`query` takes the checked path of :meth:`query_readonly`, and
        every writing method raises :class:`ReadOnlyConnectionException`.
    query_timeout_seconds : float
        Statement timeout of :meth:`query` on a read-only connection. Five
        minutes leaves room for a busy LIMS, while a runaway join (a missing
        JOIN condition) still fails in bounded time.
    connect_attempts : int
        Tries before a connection failure is raised. Eight tries with the
        backoff below wait up to about a minute in all, long enough for a
        server that is restarting or briefly out of connection slots, short
        enough that a misconfigured job fails within its first minute.
    backoff_seconds : float
        First wait between tries; it doubles each time (with jitter, so the
        tasks of a job array do not retry in lockstep), capped at 15 s.
    connect_seconds : float, optional
        Give up connecting after about this long in all (each try's timeout
        included); None: ``connect_attempts`` tries of up to 10 s each.
    slapp_tables : bool
        The database's tables are slapp's own (the labeling database): a
        statement that finds one of them, or one of their columns, missing
        raises :class:`MissingTableException` naming ``python -m slapp.db.init``.
    """

    def __init__(self, user: str, host: str, database: str, password: str, port: int = 5432,
                 *, read_only: bool = False, query_timeout_seconds: float = 300.0,
                 connect_attempts: int = 8, backoff_seconds: float = 0.5,
                 connect_seconds: float | None = None, slapp_tables: bool = False):
        self.user, self.host, self.database, self.port = user, host, database, int(port)
        self.read_only = read_only
        self.slapp_tables = slapp_tables
        self._connect_seconds = connect_seconds
        self.query_timeout_seconds = query_timeout_seconds
        self._password = password
        self._connect_attempts = max(1, connect_attempts)
        self._backoff_seconds = backoff_seconds
        self._connection = None

    def __repr__(self) -> str:
        return (f"DbConnection(user={self.user!r}, host={self.host!r}, "
                f"database={self.database!r}, port={self.port})")

    def _connect(self):
        options = "-c default_transaction_read_only=on" if self.read_only else None
        deadline = (None if self._connect_seconds is None
                    else time.monotonic() + self._connect_seconds)

        def connect():
            # an interactive command's deadline also bounds each attempt's own wait
            timeout = 10 if deadline is None else max(
                _MIN_CONNECT_TIMEOUT, min(10, int(deadline - time.monotonic())))
            connection = psycopg2.connect(
                user=self.user, password=self._password, host=self.host,
                dbname=self.database, port=self.port, options=options,
                connect_timeout=timeout, application_name="slapp", client_encoding="UTF8")
            connection.autocommit = False
            return connection

        def log_wait(error: Exception, attempt: int, delay: float, _left: float) -> None:
            logger.warning("cannot connect to %s (try %d of %d), retrying in %.1f s: %s",
                           self.database, attempt, self._connect_attempts, delay,
                           str(error).strip().splitlines()[0])

        return retry(connect, transient=lambda error: (
            isinstance(error, psycopg2.OperationalError)
            and not is_permanent_connect_error(error)),
            first_wait=self._backoff_seconds, longest_wait=15.0,
            attempts=self._connect_attempts, before_wait=log_wait,
            seconds=None if deadline is None else max(
                0.0, deadline - time.monotonic() - _MIN_CONNECT_TIMEOUT))

    def connect(self):
        """Open the connection now, with retries, unless it is open; return it."""
        if self._connection is None or self._connection.closed:
            self._connection = self._connect()
        return self._connection

    @property
    def connection(self):
        """The open psycopg2 connection, (re)connecting with retries if needed."""
        return self.connect()

    def close(self) -> None:
        """Close the connection; the next call reconnects."""
        if self._connection is not None and not self._connection.closed:
            self._connection.close()
        self._connection = None

    def __enter__(self) -> "DbConnection":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[psycopg2.extensions.cursor]:
        """A cursor whose statements commit together or not at all.

        Yields
        ------
        psycopg2.extensions.cursor
            A ``RealDictCursor``: fetched rows are dicts.
        """
        connection = self.connection
        try:
            with connection.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cursor:
                yield cursor
            connection.commit()
        except BaseException as error:
            if not connection.closed:
                connection.rollback()
            if self.slapp_tables and isinstance(error, (psycopg2.errors.UndefinedTable,
                                                        psycopg2.errors.UndefinedColumn)):
                raise MissingTableException(
                    f"{error.diag.message_primary} in the labeling database {self.database}: "
                    f"run {_INIT_COMMAND} to create or upgrade its tables") from error
            raise

    def _run(self, work, retry_if_lost: bool):
        self.connect()  # a failure to connect has had its retries already: raise it here
        try:
            with self.transaction() as cursor:
                return work(cursor)
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as error:
            if not (retry_if_lost and _is_connection_lost(error, self._connection)):
                raise
            logger.warning("connection to %s lost, reconnecting once", self.database)
            self.close()
            with self.transaction() as cursor:
                return work(cursor)

    def _refuse_if_read_only(self, what: str) -> None:
        if self.read_only:
            raise ReadOnlyConnectionException(
                f"{what} refused: the connection to {self.database} is read-only")

    def query(self, query, params: Sequence | dict | None = None) -> list[dict]:
        """Run one statement and return its rows.

        On a read-only connection this is :meth:`query_readonly` with the
        connection's ``query_timeout_seconds``, so every caller of the LIMS
        connection gets its checks.

        Parameters
        ----------
        query : str or psycopg2.sql.Composable
            SQL with ``%s`` or ``%(name)s`` placeholders for every value, or a
            statement composed with ``psycopg2.sql`` literals.
        params : sequence or dict, optional
            The values, sent separately from the SQL text.

        Returns
        -------
        list of dict
            One dict per row; PostgreSQL arrays are Python lists.
        """
        if self.read_only:
            return self.query_readonly(query, params, self.query_timeout_seconds)

        def work(cursor):
            cursor.execute(query, params)
            return [dict(row) for row in cursor.fetchall()] if cursor.description else []
        return self._run(work, retry_if_lost=True)

    def query_readonly(self, query, params: Sequence | dict | None = None,
                       timeout_seconds: float = 300.0) -> list[dict]:
        """Run a query string a user wrote, which must be one query that only reads.

        Before it runs, the final SQL text (after the values are merged in) is
        parsed with PostgreSQL's parser and must be exactly one ``SELECT``,
        ``VALUES``, ``TABLE`` or ``WITH ... SELECT`` that writes nothing,
        locks nothing, creates nothing and calls no function or operator the
        server declares VOLATILE (:mod:`slapp.utils.read_only_sql`). It then
        runs in a read-only transaction, with ``standard_conforming_strings``
        on (so the server reads quotes as the parser did) and a statement
        timeout the query cannot change (it can run no SET and no
        ``set_config``); the transaction is rolled back afterwards.

        Parameters
        ----------
        query : str or psycopg2.sql.Composable
            The SQL, executed as given when ``params`` is None.
        params : sequence or dict, optional
            Values for placeholders in ``query``.
        timeout_seconds : float
            The server cancels the query after this long.

        Returns
        -------
        list of dict
            One dict per row.

        Raises
        ------
        slapp.utils.read_only_sql.UnsafeQueryException
            When the string is refused; the message says why, in one line.
        """
        def work(cursor):
            cursor.execute("SET TRANSACTION READ ONLY; "  # one round trip for the three
                           "SET LOCAL standard_conforming_strings TO on; "
                           "SELECT set_config('statement_timeout', %s, true)",
                           (str(max(1, int(timeout_seconds * 1000))),))
            sql_text = _final_text(cursor, query, params)
            refuse_volatile_calls(cursor, parse_read_only_query(sql_text))
            cursor.execute(sql_text)
            rows = [dict(row) for row in cursor.fetchall()] if cursor.description else []
            cursor.connection.rollback()
            return rows
        return self._run(work, retry_if_lost=True)

    def execute(self, statement: str, params: Sequence | dict | None = None) -> int:
        """Run one writing statement in its own transaction.

        Returns
        -------
        int
            The number of rows it affected.
        """
        self._refuse_if_read_only("a write")

        def work(cursor):
            cursor.execute(statement, params)
            return cursor.rowcount
        return self._run(work, retry_if_lost=False)

    def insert(self, statement, params: Sequence | dict | None = None) -> list[dict]:
        """Run one insert and commit it; returns the rows of a ``RETURNING`` clause.

        ``statement`` may be a ``psycopg2.sql`` composition whose values are
        ``psycopg2.sql.Literal``, the form the original toolkit's callers pass.
        """
        self._refuse_if_read_only("an insert")

        def work(cursor):
            cursor.execute(statement, params)
            return [dict(row) for row in cursor.fetchall()] if cursor.description else []
        return self._run(work, retry_if_lost=False)

    def bulk_insert(self, statements: Iterable[str | tuple[str, Sequence | dict]]) -> None:
        """Run many statements in one transaction: all commit, or none does.

        Parameters
        ----------
        statements : iterable
            Each a SQL string, or a ``(sql, params)`` pair.
        """
        self._refuse_if_read_only("a write")

        def work(cursor):
            for statement in statements:
                sql_text, params = (statement, None) if isinstance(statement, str) else statement
                cursor.execute(sql_text, params)
        self._run(work, retry_if_lost=False)

    def copy_rows(self, table: str, columns: Sequence[tuple[str, str]],
                  rows: Iterable[Sequence[Any]], cursor=None) -> None:
        """Write rows with PostgreSQL's binary COPY, the fast path for large arrays.

        Parameters
        ----------
        table : str
            Target table.
        columns : sequence of (name, pg_type)
            The columns written and their PostgreSQL types, e.g.
            ``("trace", "real[]")``.
        rows : iterable of sequences
            One value per column; streamed, never held all at once. An
            exception raised while producing them propagates as it was raised
            (and the copy is rolled back).
        cursor : cursor, optional
            A cursor of an open :meth:`transaction` to join; without one the
            copy runs (and commits) in a transaction of its own.
        """
        self._refuse_if_read_only("a COPY")
        statement = pgsql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT binary)").format(
            pgsql.Identifier(table),
            pgsql.SQL(", ").join(pgsql.Identifier(name) for name, _ in columns))
        pg_types = [pg_type for _, pg_type in columns]

        def work(copy_cursor):
            stream = pg_copy.StreamReader(pg_copy.encode_rows(rows, pg_types))
            try:
                copy_cursor.copy_expert(statement, stream, size=1 << 20)
            except psycopg2.Error:
                if stream.failure is not None:  # the rows failed, not the server
                    raise stream.failure from None
                raise

        if cursor is not None:
            work(cursor)
        else:
            self._run(work, retry_if_lost=False)


def labeling_connection(*, interactive: bool, read_only: bool = False) -> DbConnection:
    """The labeling database, with the credentials of ``LABELING_*`` (:func:`get_db_credentials`).

    Parameters
    ----------
    interactive : bool
        A command a person waits for: give up connecting after
        :data:`INTERACTIVE_CONNECT_SECONDS`. False for a job-array task, which
        keeps :class:`DbConnection`'s longer retries.
    read_only : bool
        Refuse writes (see :class:`DbConnection`).

    Returns
    -------
    DbConnection
        Not yet connected; a missing table is reported naming ``python -m slapp.db.init``.
    """
    return DbConnection(**get_db_credentials(**label_defaults), read_only=read_only,
                        connect_seconds=INTERACTIVE_CONNECT_SECONDS if interactive else None,
                        slapp_tables=True)
