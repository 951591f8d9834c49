"""Benchmark: what the LIMS query check costs, against running the same query unchecked.

::

    python bench/bench_lims_guard.py [--experiments 1000] [--repeats 50]

Starts an embedded PostgreSQL server of its own (in a temporary directory),
fills its LIMS with ``--experiments`` synthetic experiments, and runs each of
the seed's four example queries (``example_selection_input.json``) ``--repeats``
times on one open connection in two ways, interleaved:

* baseline: a read-only transaction with a statement timeout that executes the
  string as it is and fetches the rows (what slapp did before the check);
* checked: ``DbConnection.query`` on a read-only connection, which also parses
  the string with PostgreSQL's parser (pglast) and asks the server's catalogue
  whether it calls a VOLATILE function.

It prints the median time per query of each and their ratio, and the time of
the parse alone.
"""
import argparse
import json
import statistics
import tempfile
import time
from contextlib import closing
from pathlib import Path

from slapp import embedded
from slapp.demo.lims import add_experiment, create_lims_tables
from slapp.utils.query_utils import DbConnection
from slapp.utils.read_only_sql import parse_read_only_query

EXAMPLE = Path(__file__).resolve().parents[1] / "example_selection_input.json"
PROJECTS = ("VisualBehaviorMultiscope", "VisualBehaviorTask1B")
GENOTYPES = ("Sst-IRES-Cre", "Slc17a7-IRES2-Cre", "Vip-IRES-Cre")


def fill_lims(server, experiments: int) -> None:
    with closing(server.admin_connection(embedded.LIMS_DATABASE)) as connection, \
            connection.cursor() as cursor:
        create_lims_tables(cursor)
        for index in range(experiments):
            add_experiment(cursor, 800_000_000 + index, project=PROJECTS[index % 2],
                           genotype=GENOTYPES[index % 3], depth=100 + 25 * (index % 9))


def baseline(dbconn: DbConnection, query: str) -> list:
    with dbconn.transaction() as cursor:
        cursor.execute("SET TRANSACTION READ ONLY")
        cursor.execute("SELECT set_config('statement_timeout', '300000', true)")
        cursor.execute(query)
        rows = cursor.fetchall()
        cursor.connection.rollback()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--experiments", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    queries = json.loads(EXAMPLE.read_text())["query_strings"]
    with tempfile.TemporaryDirectory(prefix="slapp-bench-guard-") as home:
        server = embedded.EmbeddedServer(Path(home))
        server.start()
        try:
            fill_lims(server, args.experiments)
            credentials = server.credentials(embedded.LIMS_ROLE, embedded.LIMS_DATABASE)
            with DbConnection(**credentials) as plain, \
                    DbConnection(**credentials, read_only=True) as checked:
                times = {"baseline": [], "checked": [], "parse only": []}
                for query in queries * 2:  # warm-up
                    assert len(baseline(plain, query)) == len(checked.query(query))
                for _ in range(args.repeats):
                    for query in queries:
                        for name, run in (("baseline", lambda: baseline(plain, query)),
                                          ("checked", lambda: checked.query(query)),
                                          ("parse only", lambda: parse_read_only_query(query))):
                            start = time.perf_counter()
                            run()
                            times[name].append(time.perf_counter() - start)
        finally:
            server.stop()
    medians = {name: statistics.median(values) * 1000 for name, values in times.items()}
    print(f"{len(queries)} seed queries x {args.repeats} on a LIMS of {args.experiments} "
          "experiments; median per query:")
    for name, value in medians.items():
        print(f"  {name:<10} {value:7.2f} ms")
    print(f"  checked / baseline: {medians['checked'] / medians['baseline']:.2f}x "
          f"(+{medians['checked'] - medians['baseline']:.2f} ms per query)")


if __name__ == "__main__":  # pragma: no cover
    main()
