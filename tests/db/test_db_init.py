"""``python -m slapp.db.init`` creates the contract tables, idempotently."""
import pytest

CONTRACT_COLUMNS = {
    "experiment_selection": {"id", "created_at", "base64_query_strings", "slapp_commit_hash",
                             "ophys_experiment_ids", "sub_selection_counts", "sub_selected_ids",
                             "random_seed",
                             "comment_string"},
    "segmentation_runs": {"id", "created_at", "ophys_experiment_id",
                          "ophys_segmentation_commit_hash", "source_video_path", "video_shape"},
    "rois": {"id", "segmentation_run_id", "coo_row", "coo_col", "coo_data", "trace"},
}


def schema_snapshot(dbconn):
    return dbconn.query(
        "SELECT table_name, column_name, data_type, is_nullable, column_default "
        "FROM information_schema.columns WHERE table_schema = 'public' "
        "ORDER BY table_name, ordinal_position")


def test_init_twice_changes_nothing(labeling_db, run_cli):
    labeling_db.execute("DROP TABLE IF EXISTS rois, segmentation_runs, experiment_selection")
    first = run_cli("slapp.db.init")
    assert first.returncode == 0, first.stderr
    assert "created tables: experiment_selection, segmentation_runs, rois" in first.stderr
    snapshot = schema_snapshot(labeling_db)
    labeling_db.execute("INSERT INTO experiment_selection (base64_query_strings, "
                        "slapp_commit_hash, ophys_experiment_ids, sub_selection_counts, sub_selected_ids, "
                        "random_seed) VALUES ('{}', 'abc', '{{1}}', '{1}', '{1}', 42)")
    second = run_cli("slapp.db.init")
    assert second.returncode == 0, second.stderr
    assert "nothing to do" in second.stderr
    assert schema_snapshot(labeling_db) == snapshot
    assert labeling_db.query("SELECT count(*) AS n FROM experiment_selection") == [{"n": 1}]


def test_tables_carry_the_contract_columns(labeling_db):
    for table, expected in CONTRACT_COLUMNS.items():
        columns = {row["column_name"] for row in labeling_db.query(
            "SELECT column_name FROM information_schema.columns WHERE table_name = %s",
            (table,))}
        assert expected <= columns, (table, expected - columns)


def test_one_run_per_experiment_and_code_version(labeling_db):
    insert = ("INSERT INTO segmentation_runs (ophys_experiment_id, "
              "ophys_segmentation_commit_hash, source_video_path, video_shape, nframes, nbinned,"
              " suite2p_version, suite2p_settings, suite2p_seconds, total_seconds, hostname) "
              "VALUES (%s, %s, 'movie.h5', '{512,512}', 1000, 8, '1.1.0', '{}', 1, 1, 'node')")
    labeling_db.execute(insert, (1, "abc"))
    labeling_db.execute(insert, (1, "def"))
    with pytest.raises(Exception, match="one_run_per_experiment_and_code_version"):
        labeling_db.execute(insert, (1, "abc"))


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
        "slapp.db.init: error: environment variable LABELING_PASSWORD is not set")
