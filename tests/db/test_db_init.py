"""``python -m slapp.db.init`` creates the contract tables, idempotently, and upgrades old ones."""
import dataclasses
from contextlib import closing
from pathlib import Path

import psycopg2.extras
import pytest

from slapp import embedded
from slapp.db.init import SCHEMA_VERSION, TABLES
from slapp.segmentation import store
from slapp.segmentation.settings import Suite2pOptions, parameters_digest
from slapp.utils.query_utils import DbConnection

CONTRACT_COLUMNS = {
    "experiment_selection": {"id", "created_at", "base64_query_strings", "slapp_commit_hash",
                             "ophys_experiment_ids", "sub_selection_counts", "sub_selected_ids",
                             "random_seed",
                             "comment_string"},
    "segmentation_runs": {"id", "created_at", "ophys_experiment_id",
                          "ophys_segmentation_commit_hash", "source_video_path", "video_shape",
                          "code_label", "parameters_digest", "movie_fingerprint",
                          "frame_source", "stage_seconds", "peak_rss_bytes", "scratch_bytes",
                          "scheduler_job_id", "scheduler_task_id"},
    "rois": {"id", "segmentation_run_id", "coo_row", "coo_col", "coo_data", "trace"},
}


def schema_snapshot(dbconn):
    return dbconn.query(
        "SELECT table_name, column_name, data_type, is_nullable, column_default "
        "FROM information_schema.columns WHERE table_schema = 'public' "
        "ORDER BY table_name, ordinal_position")


def test_init_twice_changes_nothing(labeling_db, run_cli):
    dropped = [table for table in TABLES if table != "slapp_schema_version"]
    labeling_db.execute(f"DROP TABLE IF EXISTS {', '.join(dropped)}")
    first = run_cli("slapp.db.init")
    assert first.returncode == 0, first.stderr
    assert f"created tables: {', '.join(dropped)}" in first.stderr
    snapshot = schema_snapshot(labeling_db)
    labeling_db.execute("INSERT INTO experiment_selection (base64_query_strings, "
                        "slapp_commit_hash, ophys_experiment_ids, sub_selection_counts, "
                        "sub_selected_ids, random_seed) "
                        "VALUES ('{}', 'abc', '{{1}}', '{1}', '{1}', 42)")
    second = run_cli("slapp.db.init")
    assert second.returncode == 0, second.stderr
    assert "nothing to do" in second.stderr
    assert schema_snapshot(labeling_db) == snapshot
    assert labeling_db.query("SELECT count(*) AS n FROM experiment_selection") == [{"n": 1}]
    assert {row["version"] for row in labeling_db.query(
        "SELECT version FROM slapp_schema_version")} == {SCHEMA_VERSION}


def test_tables_carry_the_contract_columns(labeling_db):
    for table, expected in CONTRACT_COLUMNS.items():
        columns = {row["column_name"] for row in labeling_db.query(
            "SELECT column_name FROM information_schema.columns WHERE table_name = %s",
            (table,))}
        assert expected <= columns, (table, expected - columns)


def test_one_run_per_identity(labeling_db):
    insert = ("INSERT INTO segmentation_runs (ophys_experiment_id, "
              "ophys_segmentation_commit_hash, parameters_digest, source_video_path, "
              "movie_fingerprint, video_shape, nframes, nbinned, suite2p_version, "
              "suite2p_settings, suite2p_seconds, total_seconds, hostname) "
              "VALUES (%s, %s, %s, 'movie.h5', '{}', '{512,512}', 1000, 8, '1.1.0', '{}', 1, "
              "1, 'node')")
    labeling_db.execute(insert, (1, "abc", "p1"))
    labeling_db.execute(insert, (1, "def", "p1"))
    labeling_db.execute(insert, (1, "abc", "p2"))  # a parameter sweep: a run beside the first
    with pytest.raises(Exception, match="one_current_run_per_identity"):
        labeling_db.execute(insert, (1, "abc", "p1"))
    # a superseded run steps aside: the identity may have a current run again
    labeling_db.execute("UPDATE segmentation_runs SET superseded_by = 2, superseded_at = now() "
                        "WHERE id = 1")
    labeling_db.execute(insert, (1, "abc", "p1"))
    assert labeling_db.query("SELECT count(*) AS n FROM segmentation_runs "
                             "WHERE parameters_digest = 'p1' AND "
                             "ophys_segmentation_commit_hash = 'abc'") == [{"n": 2}]


def test_rois_need_a_run(labeling_db):
    with pytest.raises(Exception, match="foreign key"):
        labeling_db.execute(
            "INSERT INTO rois (segmentation_run_id, suite2p_roi_index, coo_row, coo_col, "
            "coo_data, trace, neuropil_trace, is_cell, cell_probability, npix, centroid_row, "
            "centroid_col, radius, aspect_ratio, compactness, skew) VALUES "
            "(99, 0, '{}', '{}', '{}', '{}', '{}', true, 1, 0, 0, 0, 0, 0, 0, 0)")


def test_init_without_credentials_names_the_variable(run_cli):
    result = run_cli("slapp.db.init", env={"LABELING_PASSWORD": ""})
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "slapp db-init: error: environment variable LABELING_PASSWORD is not set, "
        "and there is no password file (PGPASSFILE or ~/.pgpass)")


# --- upgrading a database made by the first release (schema version 1) -----------------

SCHEMA_V1 = Path(__file__).with_name("schema_v1.sql")  # slapp/db/schema.sql at 56adc0c
V1_DATABASE = "labeling_v1"
V1_COMMIT = "56adc0c0e1b2a3f4a5b6c7d8e9f0a1b2c3d4e5f6"


def full_schema(dbconn):
    """Columns (without their order), constraints and indexes of the labeling tables."""
    columns = {tuple(row.values()) for row in dbconn.query(
        "SELECT table_name, column_name, data_type, is_nullable, column_default "
        "FROM information_schema.columns WHERE table_schema = 'public'")}
    constraints = {tuple(row.values()) for row in dbconn.query(
        "SELECT conrelid::regclass::text AS table_name, conname, "
        "pg_get_constraintdef(oid) AS definition FROM pg_constraint "
        "WHERE connamespace = 'public'::regnamespace")}
    indexes = {tuple(row.values()) for row in dbconn.query(
        "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'")}
    return columns, constraints, indexes


def recorded_settings(options):
    """What a version 1 run recorded: Suite2P's db and settings dicts, as JSON."""
    from slapp.segmentation.suite2p_runner import build_suite2p_inputs, jsonable
    db, settings = build_suite2p_inputs(Path("/movies/m.h5"), 26, options, Path("/tmp/w"))
    return jsonable({"db": db, "settings": settings})


def dump(dbconn, table):
    return dbconn.query(f"SELECT * FROM {table} ORDER BY 1")


@pytest.fixture
def v1_database(embedded_server, cli_env):
    """A labeling database made by schema version 1, with a selection, runs and ROIs."""
    with closing(embedded_server.admin_connection()) as admin, admin.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {V1_DATABASE} WITH (FORCE)")
        cursor.execute(f"CREATE DATABASE {V1_DATABASE} OWNER {embedded.LABELING_ROLE}")
    credentials = {**embedded_server.credentials(embedded.LABELING_ROLE,
                                                 embedded.LABELING_DATABASE),
                   "database": V1_DATABASE}
    swept = dataclasses.replace(Suite2pOptions.defaults(), threshold_scaling=0.9)
    runs = [(850517344, Suite2pOptions.defaults(), 26, "1.1.0", 3),
            (850517345, swept, 40, "1.1.0", 2),
            (850517346, None, 26, "1.0.0", 0)]  # settings that cannot be read back
    with DbConnection(**credentials) as dbconn:
        dbconn.execute(SCHEMA_V1.read_text())
        dbconn.execute(
            "INSERT INTO experiment_selection (base64_query_strings, slapp_commit_hash, "
            "ophys_experiment_ids, sub_selection_counts, sub_selected_ids, random_seed) "
            "VALUES ('{c2VsZWN0}', %s, '{{850517344,850517345,850517346}}', '{3}', "
            "'{850517344,850517345,850517346}', 42)", (V1_COMMIT,))
        for experiment_id, options, nbinned, version, n_rois in runs:
            settings = recorded_settings(options) if options else {"settings": {}}
            [run] = dbconn.insert(
                "INSERT INTO segmentation_runs (ophys_experiment_id, "
                "ophys_segmentation_commit_hash, source_video_path, video_shape, nframes, "
                "nbinned, suite2p_version, suite2p_settings, suite2p_seconds, total_seconds, "
                "hostname) VALUES (%s, %s, '/movies/m.h5', '{32,40}', 3000, %s, %s, %s, 61.5, "
                "70.25, 'node7') RETURNING id",
                (experiment_id, V1_COMMIT, nbinned, version, psycopg2.extras.Json(settings)))
            for index in range(n_rois):
                dbconn.execute(
                    "INSERT INTO rois (segmentation_run_id, suite2p_roi_index, coo_row, "
                    "coo_col, coo_data, trace, neuropil_trace, is_cell, cell_probability, npix,"
                    " centroid_row, centroid_col, radius, aspect_ratio, compactness, skew) "
                    "VALUES (%s, %s, '{1,1,2}', '{3,4,3}', '{0.5,1,0.25}', '{400.5,401,399}', "
                    "'{200,201,199.5}', true, 0.875, 3, 1.25, 3.5, 1.5, 1.1, 1.02, 0.8)",
                    (run["id"], index))
        before = {table: dump(dbconn, table)
                  for table in ("experiment_selection", "segmentation_runs", "rois")}
    yield {"credentials": credentials, "runs": runs, "before": before,
           "env": {"LABELING_DATABASE": V1_DATABASE}}
    with closing(embedded_server.admin_connection()) as admin, admin.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {V1_DATABASE} WITH (FORCE)")


def test_a_version_1_database_is_upgraded_keeping_every_row(v1_database, labeling_db, run_cli):
    result = run_cli("slapp.db.init", env=v1_database["env"])

    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        "WARNING:slapp.db.init:segmentation run 3: the recorded Suite2P settings have no fs; "
        "its parameters digest is 'unknown'",
        f"INFO:slapp.db.init:upgraded from schema version 1 to {SCHEMA_VERSION}: 3 "
        "segmentation runs kept, each with its parameters digest (1 with unreadable "
        "settings: 'unknown')",
        "INFO:slapp.db.init:created tables: " + ", ".join(
            table for table in TABLES
            if table not in ("experiment_selection", "segmentation_runs", "rois"))]
    with DbConnection(**v1_database["credentials"]) as dbconn:
        # the same tables, columns, constraints and indexes as a new database
        assert full_schema(dbconn) == full_schema(labeling_db)
        for table, rows in v1_database["before"].items():
            after = dump(dbconn, table)
            assert [{key: row[key] for key in rows[0]} for row in after] == rows, table
        runs = dump(dbconn, "segmentation_runs")
        assert [run["parameters_digest"] for run in runs] == [
            parameters_digest(options, nbinned, version) if options else "unknown"
            for _, options, nbinned, version, _ in v1_database["runs"]]
        assert all(run["movie_fingerprint"] == {} and run["code_label"] == ""
                   and run["stage_seconds"] == {} and run["frame_source"] == "binary"
                   for run in runs)
        assert dbconn.query("SELECT version, how FROM slapp_schema_version") == [
            {"version": SCHEMA_VERSION, "how": "upgraded from 1"}]

        # the upgraded runs are found by their identity; other parameters are a new run
        found = store.find_run(dbconn, 850517344, V1_COMMIT, runs[0]["parameters_digest"])
        assert found == store.StoredRun(runs[0]["id"], store.SKIPPED, 3, {})
        assert store.find_run(dbconn, 850517344, V1_COMMIT, runs[1]["parameters_digest"]) \
            is None
        assert dbconn.execute(
            "INSERT INTO segmentation_runs (ophys_experiment_id, ophys_segmentation_commit_hash, "
            "parameters_digest, source_video_path, movie_fingerprint, video_shape, nframes, "
            "nbinned, suite2p_version, suite2p_settings, suite2p_seconds, total_seconds, "
            "hostname) SELECT ophys_experiment_id, ophys_segmentation_commit_hash, %s, "
            "source_video_path, '{}', video_shape, nframes, nbinned, suite2p_version, "
            "suite2p_settings, 1, 1, 'node8' FROM segmentation_runs WHERE id = 1",
            ("f" * 64,)) == 1


def test_a_second_init_after_the_upgrade_changes_nothing(v1_database, run_cli):
    assert run_cli("slapp.db.init", env=v1_database["env"]).returncode == 0
    with DbConnection(**v1_database["credentials"]) as dbconn:
        schema = full_schema(dbconn)
        rows = {table: dump(dbconn, table) for table in
                ("slapp_schema_version", "experiment_selection", "segmentation_runs", "rois")}

        second = run_cli("slapp.db.init", env=v1_database["env"])

        assert second.returncode == 0, second.stderr
        assert second.stderr.splitlines() == [
            f"INFO:slapp.db.init:all tables exist at schema version {SCHEMA_VERSION}: "
            "nothing to do"]
        assert full_schema(dbconn) == schema
        assert {table: dump(dbconn, table) for table in rows} == rows


def test_a_database_newer_than_this_slapp_is_refused(v1_database, run_cli):
    assert run_cli("slapp.db.init", env=v1_database["env"]).returncode == 0
    with DbConnection(**v1_database["credentials"]) as dbconn:
        dbconn.execute("INSERT INTO slapp_schema_version (version, how) VALUES (%s, 'future')",
                       (SCHEMA_VERSION + 1,))
        schema = full_schema(dbconn)

        result = run_cli("slapp.db.init", env=v1_database["env"])

        assert result.returncode == 1
        assert result.stderr.strip() == (
            f"slapp db-init: error: the labeling database has schema version "
            f"{SCHEMA_VERSION + 1}, newer than this slapp (version {SCHEMA_VERSION}): "
            "install a newer slapp")
        assert full_schema(dbconn) == schema


def test_schema_v1_fixture_is_the_first_release():
    """The fixture is the DDL of commit 56adc0c, where runs had no parameters digest."""
    text = SCHEMA_V1.read_text()
    assert "CONSTRAINT one_run_per_experiment_and_code_version" in text
    assert "parameters_digest" not in text and "slapp_schema_version" not in text


# --- upgrading databases made by schema versions 2 and 3 ---------------------------------

FIXTURES = {2: Path(__file__).with_name("schema_v2.sql"),  # slapp/db/schema.sql at fd499e3
            3: Path(__file__).with_name("schema_v3.sql")}  # before the labeling tables


@pytest.fixture(params=sorted(FIXTURES))
def old_database(request, embedded_server):
    """A labeling database made by an earlier schema, with a selection, runs, ROIs, failures."""
    version, name = request.param, f"labeling_v{request.param}"
    with closing(embedded_server.admin_connection()) as admin, admin.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        cursor.execute(f"CREATE DATABASE {name} OWNER {embedded.LABELING_ROLE}")
    credentials = {**embedded_server.credentials(embedded.LABELING_ROLE,
                                                 embedded.LABELING_DATABASE), "database": name}
    with DbConnection(**credentials) as dbconn:
        dbconn.execute(FIXTURES[version].read_text())
        dbconn.execute("INSERT INTO slapp_schema_version (version, how) VALUES (%s, 'created')",
                       (version,))
        dbconn.execute(
            "INSERT INTO experiment_selection (base64_query_strings, slapp_commit_hash, "
            "ophys_experiment_ids, sub_selection_counts, sub_selected_ids, random_seed) "
            "VALUES ('{c2VsZWN0}', 'abc', '{{7,8}}', '{2}', '{7,8}', 42)")
        for experiment_id, digest in ((7, "p1"), (7, "p2"), (8, "p1")):
            [run] = dbconn.insert(
                "INSERT INTO segmentation_runs (ophys_experiment_id, "
                "ophys_segmentation_commit_hash, parameters_digest, source_video_path, "
                "movie_fingerprint, video_shape, nframes, nbinned, suite2p_version, "
                "suite2p_settings, suite2p_seconds, total_seconds, hostname) VALUES "
                "(%s, 'abc', %s, '/movies/m.h5', '{\"size\": 1}', '{32,40}', 3000, 26, "
                "'1.1.0', '{}', 61.5, 70.25, 'node7') RETURNING id", (experiment_id, digest))
            for index in range(3):
                dbconn.execute(
                    "INSERT INTO rois (segmentation_run_id, suite2p_roi_index, coo_row, "
                    "coo_col, coo_data, trace, neuropil_trace, is_cell, cell_probability, npix,"
                    " centroid_row, centroid_col, radius, aspect_ratio, compactness, skew) "
                    "VALUES (%s, %s, '{1,1,2}', '{3,4,3}', '{0.5,1,0.25}', '{400.5,401,399}', "
                    "'{200,201,199.5}', true, 0.875, 3, 1.25, 3.5, 1.5, 1.1, 1.02, 0.8)",
                    (run["id"], index))
        dbconn.execute(
            "INSERT INTO segmentation_failures (ophys_experiment_id, "
            "ophys_segmentation_commit_hash, manifest_path, manifest_index, hostname, "
            "failure_class, message) VALUES (9, 'abc', '/m.json', 2, 'node7', 'bad_input', "
            "'no movie')")
        before = {table: dump(dbconn, table) for table in
                  ("experiment_selection", "segmentation_runs", "rois", "segmentation_failures")}
    yield {"version": version, "credentials": credentials, "before": before,
           "env": {"LABELING_DATABASE": name}}
    with closing(embedded_server.admin_connection()) as admin, admin.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_an_earlier_database_is_upgraded_in_place_keeping_every_row(old_database, labeling_db,
                                                                     run_cli):
    result = run_cli("slapp.db.init", env=old_database["env"])

    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[0] == (
        f"INFO:slapp.db.init:upgraded from schema version {old_database['version']} to "
        f"{SCHEMA_VERSION}: every row kept")
    with DbConnection(**old_database["credentials"]) as dbconn:
        assert full_schema(dbconn) == full_schema(labeling_db)
        for table, rows in old_database["before"].items():
            after = dump(dbconn, table)
            assert [{key: row[key] for key in rows[0]} for row in after] == rows, table
        runs = dump(dbconn, "segmentation_runs")
        # provenance unknown, every run current
        assert {(run["experiment_selection_id"], run["manifest_path"], run["superseded_by"])
                for run in runs} == {(None, None, None)}
        rois = dump(dbconn, "rois")
        assert {(roi["npix_norm"], roi["std"], roi["footprint"]) for roi in rois} == {
            (None, None, None)}
        assert [roi["compact"] for roi in rois] == [pytest.approx(1.02)] * len(rois)
        assert [row["version"] for row in dbconn.query(
            "SELECT version FROM slapp_schema_version ORDER BY version")] == [
            old_database["version"], SCHEMA_VERSION]

        second = run_cli("slapp.db.init", env=old_database["env"])
        assert second.stderr.splitlines() == [
            f"INFO:slapp.db.init:all tables exist at schema version {SCHEMA_VERSION}: "
            "nothing to do"]
