"""No password appears in anything the tools print or write.

The test gives its own embedded server distinctive passwords, runs every
command of the flow (at DEBUG log level) successfully and with a wrong or
missing password, and then searches everything: stdout, stderr, every file
the commands wrote (outputs, manifests, logs, plots), every row of every table
in both databases, and the PostgreSQL server's own log.
"""
import json
import os
import socket
import subprocess
import sys
from contextlib import closing

import pytest

from slapp import embedded
from slapp.demo.lims import add_experiment, create_lims_tables
from slapp.demo.synthetic_movie import MovieSpec, write_movie

PASSWORDS = {"postgres": "Pg-Zebra-Sup3ruser-7781", "lims_reader": "Lims-Zebra-Quokka-4410",
             "labeling": "Label-Zebra-Narwhal-9902"}
WRONG_PASSWORD = "Wr0ng-Zebra-Pangolin-3317"
SECRETS = [*PASSWORDS.values(), WRONG_PASSWORD]
QUERY = ("SELECT oe.id AS exp_id FROM ophys_experiments AS oe "
         "WHERE oe.workflow_state = 'passed'")


@pytest.fixture(scope="module")
def secret_server(server_home_factory):
    home = server_home_factory()
    with closing(socket.socket()) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    descriptor = os.open(home / "server.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump({"port": port, "passwords": PASSWORDS}, handle)
    server = embedded.EmbeddedServer(home)
    server.start()
    yield server
    server.stop()


def everything_stored(server) -> str:
    """Every row of every table of both databases, as JSON text."""
    dumps = []
    for database in (embedded.LIMS_DATABASE, embedded.LABELING_DATABASE):
        with closing(server.admin_connection(database)) as connection, \
                connection.cursor() as cursor:
            cursor.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            for (table,) in cursor.fetchall():
                cursor.execute(f'SELECT row_to_json(t)::text FROM "{table}" AS t')
                dumps.extend(row for (row,) in cursor.fetchall())
    return "\n".join(dumps)


@pytest.mark.slow
def test_no_password_anywhere(secret_server, tmp_path):
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("LIMS_", "LABELING_"))}
    env.update(secret_server.environment())
    assert env["LABELING_PASSWORD"] == PASSWORDS["labeling"]
    storage = tmp_path / "storage"
    with closing(secret_server.admin_connection(embedded.LIMS_DATABASE)) as connection, \
            connection.cursor() as cursor:
        create_lims_tables(cursor)
        for experiment_id in (901, 902):
            directory = storage / f"ophys_experiment_{experiment_id}"
            spec = MovieSpec(nframes=400, height=48, width=48, ncells=4, seed=experiment_id)
            (directory / "processed").mkdir(parents=True)
            write_movie(directory / "processed" / "motion_corrected_video.h5", spec)
            add_experiment(cursor, experiment_id, project="Leaks", genotype="Sst-IRES-Cre",
                           depth=175, nframes=spec.nframes, storage_directory=str(directory))
    work = tmp_path / "work"
    work.mkdir()
    printed = []

    def run(module, *args, **overrides):
        result = subprocess.run([sys.executable, "-m", module, *map(str, args)],
                                env={**env, **overrides}, capture_output=True, text=True,
                                cwd=work, timeout=600)
        printed.append(f"$ {module} {args}\n{result.stdout}\n{result.stderr}")
        return result

    succeeded = [
        run("slapp.db.init", "--log_level", "DEBUG"),
        run("slapp.data_selection.select_data", "--query_strings", json.dumps([QUERY]),
            "--sub_selection_counts", "[2]", "--output_json", work / "selection.json",
            "--log_level", "DEBUG"),
        run("slapp.data_selection.segmentation_manifest", "--experiment_selection_id", 1,
            "--bin_size", 20, "--output_json", work / "manifest.json", "--log_level", "DEBUG"),
        run("slapp.segmentation.segment", "--manifest_json", work / "manifest.json",
            "--manifest_index", 0, "--output_json", work / "segment.json",
            "--log_level", "DEBUG"),
        run("slapp.segmentation.run_local", "--manifest_json", work / "manifest.json",
            "--workers", 1, "--task_log_level", "DEBUG", "--log_dir", work / "logs",
            "--output_json", work / "run_local.json", "--log_level", "DEBUG"),
        run("slapp.segmentation.status", "--manifest_json", work / "manifest.json",
            "--output_json", work / "status.json", "--log_level", "DEBUG"),
    ]
    assert [result.returncode for result in succeeded] == [0] * len(succeeded), printed
    run_id = json.loads((work / "segment.json").read_text())["segmentation_run_id"]
    truth = next(storage.rglob("*_ground_truth.h5"))
    assert run("slapp.evaluation.compare", "--segmentation_run_id", run_id,
               "--ground_truth", truth, "--output_json", work / "compare.json").returncode == 0

    wrong = {"LABELING_PASSWORD": WRONG_PASSWORD}
    failed = [
        run("slapp.db.init", "--log_level", "DEBUG", **wrong),
        run("slapp.data_selection.select_data", "--query_strings", json.dumps([QUERY]),
            "--sub_selection_counts", "[1]", "--log_level", "DEBUG",
            LIMS_PASSWORD=WRONG_PASSWORD),
        run("slapp.data_selection.segmentation_manifest", "--experiment_selection_id", 1,
            "--output_json", work / "again.json", "--log_level", "DEBUG", **wrong),
        run("slapp.segmentation.segment", "--manifest_json", work / "manifest.json",
            "--manifest_index", 1, "--overwrite", "--log_level", "DEBUG", **wrong),
        run("slapp.segmentation.status", "--manifest_json", work / "manifest.json", **wrong),
        run("slapp.evaluation.compare", "--segmentation_run_id", run_id,
            "--ground_truth", truth, **wrong),
        run("slapp.db.init", LABELING_PASSWORD=""),
    ]
    assert all(result.returncode != 0 for result in failed), printed
    assert any("password authentication failed" in text for text in printed)

    written = [path.read_bytes() for path in work.rglob("*") if path.is_file()]
    assert len(written) >= 6
    server_logs = [path.read_bytes() for path in (secret_server.home / "log").rglob("*")
                   if path.is_file()]
    stored = everything_stored(secret_server)
    for secret in SECRETS:
        assert not any(secret in text for text in printed), f"{secret} was printed"
        assert not any(secret.encode() in data for data in written), f"{secret} in a file"
        assert not any(secret.encode() in data for data in server_logs), \
            f"{secret} in the server log"
        assert secret not in stored, f"{secret} in a table"
