"""Step 1: select a reproducible sample of experiments from LIMS.

::

    python -m slapp.data_selection.select_data --input_json example_selection_input.json

Each query string is handed, exactly as typed, to the LIMS connection's
``query`` method (slapp's read-only connection checks it is one query that only
reads, see :meth:`slapp.utils.query_utils.DbConnection.query_readonly`) and
must return an ``exp_id`` column. The ids of each query are de-duplicated and sorted, then
``sub_selection_counts[i]`` of them are drawn without replacement with a fresh
``numpy.random.default_rng(random_seed)`` per query. Sorting first makes the
draw independent of the order in which the server returns rows. One
``experiment_selection`` row records the queries (base64 of their UTF-8
text), the code version, every id of every query, the sub-selected ids, the
counts, the seed and the comment, so the selection can be explained and
redrawn later. The row is written with one ``insert`` call on the labeling
connection, its values composed as ``psycopg2.sql`` literals: these two
methods, ``query`` and ``insert`` with the SQL as their only argument, are all
that :meth:`DataSelector.run` asks of its connections, as in the original
toolkit.
"""
import base64
import json
import sys
from contextlib import ExitStack
from dataclasses import dataclass
from decimal import Decimal

import argschema
import marshmallow as mm
import numpy as np
import psycopg2
from psycopg2 import sql as pgsql

from slapp.errors import SlappError
from slapp.utils.cli import run_main
from slapp.utils.code_version import code_version
from slapp.utils.files import json_bytes, stage_bytes, write_bytes_atomically
from slapp.utils.query_utils import (INTERACTIVE_CONNECT_SECONDS, DbConnection,
                                     get_db_credentials, labeling_connection, lims_defaults)
from slapp.utils.read_only_sql import UnsafeQueryException
from slapp.utils.schema import ArgSchema, ArgSchemaParser, StrictInt

INSERT_SELECTION = pgsql.SQL(
    "INSERT INTO experiment_selection (base64_query_strings, slapp_commit_hash, "
    "ophys_experiment_ids, sub_selection_counts, sub_selected_ids, random_seed, comment_string) "
    "VALUES ({queries}::text[], {commit_hash}, {all_ids}::bigint[], {counts}::int[], "
    "{drawn}::bigint[], {seed}, {comment}) RETURNING id")
DELETE_SELECTION = pgsql.SQL("DELETE FROM experiment_selection WHERE id = {}")
# Earlier selections of the same queries, counts and seed that drew the same experiments.
IDENTICAL_SELECTIONS = (
    "SELECT earlier.id FROM experiment_selection AS selection "
    "JOIN experiment_selection AS earlier ON earlier.id <> selection.id "
    "AND earlier.base64_query_strings = selection.base64_query_strings "
    "AND earlier.sub_selection_counts = selection.sub_selection_counts "
    "AND earlier.random_seed = selection.random_seed "
    "AND earlier.sub_selected_ids = selection.sub_selected_ids "
    "WHERE selection.id = %s ORDER BY earlier.id")
MAX_NAMED_DUPLICATES = 10  # keeps the duplicate-experiment error on one readable line


class DataSelectionException(SlappError):
    """The experiments cannot be selected as the input asks."""


class DataSelectorSchema(ArgSchema):
    query_strings = argschema.fields.List(
        argschema.fields.Str(), required=True, validate=mm.validate.Length(min=1),
        metadata={"cli_as_single_argument": True, "description": (
            "LIMS queries, one per stratum of the sample (e.g. one per project, genotype "
            "and depth range). Each must return a column named exp_id holding "
            "ophys_experiments.id. They run in a read-only transaction exactly as typed, "
            "and are stored exactly as typed.")})
    sub_selection_counts = argschema.fields.List(
        StrictInt(validate=mm.validate.Range(min=0)), required=True,
        metadata={"cli_as_single_argument": True, "description": (
            "How many experiments to draw from each query, in query order. 0 is allowed so "
            "that a stratum can be recorded without being sampled; at least one count must "
            "be positive, since an empty selection has nothing to segment.")})
    random_seed = StrictInt(
        dump_default=42, load_default=42, validate=mm.validate.Range(min=0, max=2 ** 31 - 1),
        metadata={"description": (
            "Seed of numpy.random.default_rng, fresh for each query, so the same queries "
            "and seed draw the same experiments again. 42 as in the original toolkit; it "
            "must fit the int column random_seed.")})
    comment_string = argschema.fields.Str(
        dump_default="", load_default="",
        metadata={"description": (
            "Free text stored with the selection exactly as typed; empty by default "
            "because the queries and the seed already describe the selection.")})
    dry_run = argschema.fields.Boolean(
        dump_default=False, load_default=False,
        metadata={"description": (
            "Run the queries and draw the sample, print the selection as JSON on stdout, "
            "and write nothing (no row, no output_json); --dry_run alone means True. Off "
            "by default because a selection is meant to be recorded.")})
    query_timeout_seconds = argschema.fields.Float(
        dump_default=300.0, load_default=300.0,
        validate=mm.validate.Range(min=0, min_inclusive=False),
        metadata={"description": (
            "LIMS cancels a query that runs longer (the command gives it to the LIMS "
            "connection it opens; a caller of DataSelector.run sets it on its own "
            "connection). The seed's example queries take seconds; five minutes leaves "
            "room for a busy server, while a runaway join (a missing JOIN condition) "
            "still fails in bounded time.")})

    @mm.validates_schema
    def check_queries_and_counts(self, data, **kwargs):
        """One count per query, at least one positive count, no blank query."""
        queries = data.get("query_strings")
        counts = data.get("sub_selection_counts")
        if queries is None or counts is None:
            return
        if len(queries) != len(counts):
            raise mm.ValidationError(
                f"query_strings has {len(queries)} entries but sub_selection_counts has "
                f"{len(counts)}: give one count per query")
        if sum(counts) == 0:
            raise mm.ValidationError(
                "every sub_selection_count is 0: the selection would be empty")
        blank = [index for index, query in enumerate(queries) if not query.strip()]
        if blank:
            raise mm.ValidationError(f"query_strings {blank} are blank")
        if "\x00" in data.get("comment_string", ""):
            raise mm.ValidationError("comment_string contains a NUL character, "
                                     "which PostgreSQL text cannot hold")


class DataSelectorOutputSchema(argschema.schemas.DefaultSchema):
    experiment_selection_id = StrictInt(
        required=True, allow_none=True,
        metadata={"description": "id of the new experiment_selection row: the input of step "
                                 "2 (null only when the labeling connection's insert returns "
                                 "no rows, as the original toolkit's did)"})
    sub_selected_ids = argschema.fields.List(
        StrictInt(), required=True,
        metadata={"description": "the sub-selected ophys_experiments.id, in query order"})
    n_ids_per_query = argschema.fields.List(
        StrictInt(), required=True,
        metadata={"description": "how many distinct experiments each query returned"})


@dataclass(frozen=True)
class QueryIds:
    """The distinct experiment ids one query returned.

    Attributes
    ----------
    ids : list of int
        Sorted ascending, each once.
    repeated_rows : int
        Rows whose exp_id an earlier row of the same query already gave
        (e.g. a donor joined to two genotypes).
    """
    ids: list
    repeated_rows: int


def encode_query(query: str) -> str:
    """Base64 of the UTF-8 bytes of a query string, as stored in the table."""
    return base64.b64encode(query.encode("utf-8")).decode("ascii")


def _as_experiment_id(value, query_index: int) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, Decimal) and value == value.to_integral_value():
        return int(value)
    raise DataSelectionException(
        f"query {query_index} returned exp_id {value!r}, which is not an integer "
        "ophys_experiments.id")


def experiment_ids_from_rows(rows: list[dict], query_index: int) -> QueryIds:
    """Check a query's rows and collect its distinct experiment ids, sorted.

    Parameters
    ----------
    rows : list of dict
        The query's rows, as :meth:`DbConnection.query` returns them.
    query_index : int
        Position of the query in the input, named in errors.

    Returns
    -------
    QueryIds
        The sorted distinct ids and how many rows repeated one.

    Raises
    ------
    DataSelectionException
        When the rows have no ``exp_id`` column, or an ``exp_id`` is NULL or
        not an integer. A NULL is refused rather than dropped, because it
        means the query does not select what its author thinks.
    """
    if rows and "exp_id" not in rows[0]:
        raise DataSelectionException(
            f"query {query_index} has no exp_id column (it returned "
            f"{', '.join(rows[0]) or 'no columns'}): name the experiment id column exp_id, "
            "e.g. SELECT oe.id AS exp_id")
    null_rows = sum(row["exp_id"] is None for row in rows)
    if null_rows:
        raise DataSelectionException(
            f"query {query_index} returned a NULL exp_id in {null_rows} of {len(rows)} rows: "
            "every row must name an experiment (add WHERE ... IS NOT NULL)")
    ids = {_as_experiment_id(row["exp_id"], query_index) for row in rows}
    return QueryIds(ids=sorted(ids), repeated_rows=len(rows) - len(ids))


def sub_select(sorted_ids: list[int], count: int, random_seed: int) -> list[int]:
    """Draw ``count`` ids without replacement with a fresh generator.

    Parameters
    ----------
    sorted_ids : list of int
        One query's distinct ids, sorted, so the draw does not depend on row order.
    count : int
        How many to draw; at most ``len(sorted_ids)``.
    random_seed : int
        Seed of ``numpy.random.default_rng``.

    Returns
    -------
    list of int
        ``default_rng(random_seed).choice(sorted_ids, size=count, replace=False)``.
    """
    drawn = np.random.default_rng(random_seed).choice(sorted_ids, size=count, replace=False)
    return [int(experiment_id) for experiment_id in drawn]


def check_counts(query_ids: list[QueryIds], counts: list[int]) -> None:
    """Refuse a count larger than the number of distinct ids its query returned."""
    shortfalls = [f"query {index} returned {len(found.ids)} ids, {count} requested"
                  for index, (found, count) in enumerate(zip(query_ids, counts))
                  if count > len(found.ids)]
    if shortfalls:
        raise DataSelectionException("; ".join(shortfalls))


def _name_queries(indices: list[int]) -> str:
    names = [str(index) for index in indices]
    return "queries " + (", ".join(names[:-1]) + " and " + names[-1])


def check_disjoint(sub_selections: list[list[int]]) -> None:
    """Refuse a selection in which one experiment was drawn by two queries.

    Only the drawn ids must be disjoint; the full id lists of two queries may
    overlap. The error names each repeated experiment and its queries.

    Raises
    ------
    DataSelectionException
        Naming up to ``MAX_NAMED_DUPLICATES`` repeated ids.
    """
    drawn_by: dict[int, list[int]] = {}
    for index, drawn in enumerate(sub_selections):
        for experiment_id in drawn:
            drawn_by.setdefault(experiment_id, []).append(index)
    repeated = sorted((experiment_id, indices) for experiment_id, indices in drawn_by.items()
                      if len(indices) > 1)
    if not repeated:
        return
    named = ", ".join(f"{experiment_id} ({_name_queries(indices)})"
                      for experiment_id, indices in repeated[:MAX_NAMED_DUPLICATES])
    more = len(repeated) - MAX_NAMED_DUPLICATES
    if more > 0:
        named += f" and {more} more"
    raise DataSelectionException(
        f"{len(repeated)} experiments were sub-selected by more than one query: {named}; "
        "a selection holds each experiment once: make the queries disjoint")


def padded_id_array_literal(id_lists: list[list[int]]) -> str:
    """Every id of every query as a 2-D PostgreSQL ``bigint[]`` literal, one row per query.

    PostgreSQL arrays are rectangular, so shorter rows are padded with NULL.
    The text form is sent as a query parameter: the server parses it several
    times faster than an ``ARRAY[...]`` expression of as many elements.

    Parameters
    ----------
    id_lists : list of list of int
        Each query's ids.

    Returns
    -------
    str
        E.g. ``"{{3,5,8},{4,NULL,NULL}}"``.
    """
    width = max(len(ids) for ids in id_lists)
    rows = (",".join([str(int(experiment_id)) for experiment_id in ids]
                     + ["NULL"] * (width - len(ids))) for ids in id_lists)
    return "{" + ",".join("{" + row + "}" for row in rows) + "}"


class DataSelector(ArgSchemaParser):
    """Select experiments from LIMS and record the selection in the labeling database.

    ``DataSelector(input_data={...}, args=[]).run(lims_dbconn, label_dbconn)``;
    a length mismatch between ``query_strings`` and ``sub_selection_counts``
    raises ``marshmallow.ValidationError`` at construction.
    """
    default_schema = DataSelectorSchema
    default_output_schema = DataSelectorOutputSchema

    def __init__(self, input_data=None, schema_type=None, output_schema_type=None, args=None,
                 logger_name="DataSelector"):
        super().__init__(input_data=input_data, schema_type=schema_type,
                         output_schema_type=output_schema_type, args=args,
                         logger_name=logger_name)

    def _fetch_ids(self, lims_dbconn, query_index: int, query: str) -> QueryIds:
        try:
            rows = lims_dbconn.query(query)
        except UnsafeQueryException as error:
            raise DataSelectionException(f"query {query_index} refused: {error}") from error
        except psycopg2.Error as error:
            first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise DataSelectionException(f"query {query_index} failed: {first_line}") from error
        return experiment_ids_from_rows(rows, query_index)

    def _draw(self, lims_dbconn) -> tuple[list[QueryIds], list[list[int]]]:
        """Run every query, check the counts, draw each query's sample; log the result."""
        counts, seed = self.args["sub_selection_counts"], self.args["random_seed"]
        query_ids = [self._fetch_ids(lims_dbconn, index, query)
                     for index, query in enumerate(self.args["query_strings"])]
        check_counts(query_ids, counts)
        sub_selections = [sub_select(found.ids, count, seed)
                          for found, count in zip(query_ids, counts)]
        check_disjoint(sub_selections)
        for index, (found, drawn) in enumerate(zip(query_ids, sub_selections)):
            if found.repeated_rows:
                self.logger.info("query %d repeated an exp_id in %d rows; each experiment "
                                 "counts once", index, found.repeated_rows)
            self.logger.info("query %d returned %d ids, sub-selected %d",
                             index, len(found.ids), len(drawn))
        return query_ids, sub_selections

    def _insert_statement(self, query_ids: list[QueryIds], sub_selected_ids: list[int],
                          commit_hash: str) -> pgsql.Composed:
        """The row's INSERT, every value a ``psycopg2.sql.Literal`` (never formatted text)."""
        return INSERT_SELECTION.format(
            queries=pgsql.Literal([encode_query(query) for query in self.args["query_strings"]]),
            commit_hash=pgsql.Literal(commit_hash),
            all_ids=pgsql.Literal(padded_id_array_literal([found.ids for found in query_ids])),
            counts=pgsql.Literal(self.args["sub_selection_counts"]),
            drawn=pgsql.Literal(sub_selected_ids),
            seed=pgsql.Literal(self.args["random_seed"]),
            comment=pgsql.Literal(self.args["comment_string"]))

    def _record(self, label_dbconn, statement: pgsql.Composed, selection: dict) -> dict:
        """Insert the row with one ``insert`` call and write ``output_json``: both, or neither.

        The output directory is tried before the insert; if writing the file
        still fails after it, the row is deleted again.
        """
        output_path = self.args.get("output_json")
        if output_path:
            stage_bytes(output_path, b"").unlink()  # the directory takes new files
        rows = label_dbconn.insert(statement)
        selection_id = rows[0]["id"] if rows else None  # the original's insert returns None
        output = {"experiment_selection_id": selection_id, **selection}
        if output_path:
            try:
                write_bytes_atomically(output_path, json_bytes(self.get_output_json(output)))
            except BaseException:
                if selection_id is not None:
                    label_dbconn.insert(DELETE_SELECTION.format(pgsql.Literal(selection_id)))
                raise
        self.logger.info("wrote experiment_selection id %s: %d experiments from %d queries",
                         selection_id, len(selection["sub_selected_ids"]),
                         len(self.args["query_strings"]))
        if output_path:
            self.logger.info("wrote %s", output_path)
        return output

    def run(self, lims_dbconn, label_dbconn=None) -> dict:
        """Run the queries, draw the sample and store it (unless ``dry_run``).

        Everything is checked before anything is written; the row and the
        ``output_json`` are written together or not at all.

        Parameters
        ----------
        lims_dbconn : DbConnection
            LIMS: ``lims_dbconn.query(query_string)`` is called once per query
            string, in order, exactly as typed; a read-only
            :class:`~slapp.utils.query_utils.DbConnection` checks and confines it.
        label_dbconn : DbConnection, optional
            The labeling database: one ``label_dbconn.insert(statement)`` call
            writes the row. May be None only with ``dry_run``.

        Returns
        -------
        dict
            ``experiment_selection_id`` (None on a dry run),
            ``sub_selected_ids`` and ``n_ids_per_query``.

        Raises
        ------
        DataSelectionException
            When a query fails, lacks ``exp_id``, returns fewer ids than its
            count, or two queries draw the same experiment.
        """
        dry_run = self.args["dry_run"]
        if label_dbconn is None and not dry_run:
            raise DataSelectionException("a labeling database connection is needed "
                                         "unless dry_run is set")
        commit_hash = code_version()
        query_ids, sub_selections = self._draw(lims_dbconn)
        selection = {
            "sub_selected_ids": [experiment_id for drawn in sub_selections
                                 for experiment_id in drawn],
            "n_ids_per_query": [len(found.ids) for found in query_ids],
        }
        if dry_run:
            print(json.dumps({"dry_run": True, "slapp_commit_hash": commit_hash,
                              "random_seed": self.args["random_seed"],
                              "comment_string": self.args["comment_string"], **selection}))
            return {"experiment_selection_id": None, **selection}
        statement = self._insert_statement(query_ids, selection["sub_selected_ids"],
                                           commit_hash)
        return self._record(label_dbconn, statement, selection)


def main(argv: list[str]) -> None:
    """The command: parse, connect to both databases (failing before the queries, which
    may take minutes), run."""
    selector = DataSelector(args=argv)
    lims_dbconn = DbConnection(**get_db_credentials(env_prefix="LIMS_", **lims_defaults),
                               read_only=True, connect_seconds=INTERACTIVE_CONNECT_SECONDS,
                               query_timeout_seconds=selector.args["query_timeout_seconds"])
    label_dbconn = (None if selector.args["dry_run"]
                    else labeling_connection(interactive=True))
    with ExitStack() as connections:
        for dbconn in (lims_dbconn, label_dbconn):
            if dbconn is not None:
                connections.enter_context(dbconn).connect()
        result = selector.run(lims_dbconn, label_dbconn)
        if label_dbconn is not None:
            print(outcome_line(label_dbconn, result, len(selector.args["query_strings"])))


def outcome_line(label_dbconn, result: dict, n_queries: int) -> str:
    """``experiment_selection id N: ...``, naming earlier identical selections if any.

    A selection is still recorded when an identical one exists (the seed
    records every call), but a user who ran the command twice by mistake is told.
    """
    selection_id = result["experiment_selection_id"]
    count = len(result["sub_selected_ids"])
    line = (f"experiment_selection id {selection_id}: {count} experiment"
            f"{'s' if count != 1 else ''} from {n_queries} quer{'ies' if n_queries != 1 else 'y'}")
    identical = [row["id"] for row in label_dbconn.query(IDENTICAL_SELECTIONS, (selection_id,))]
    if identical:
        line += (f"; identical to experiment_selection id {', '.join(map(str, identical))} "
                 "(same queries, counts, seed and experiments)")
    return line


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_main(lambda: main(sys.argv[1:]), "select"))
