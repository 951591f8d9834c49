"""The demo LIMS: the seed's example queries find what they ask for, and no more."""
import json
import re
from pathlib import Path

import h5py
import pytest
from stored_runs import insert_selection

from slapp.demo.populate_lims import DEMO_NFRAMES, demo_experiments, populate_demo_lims

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = json.loads((REPO_ROOT / "example_selection_input.json").read_text())


@pytest.fixture
def demo_lims(lims_admin, lims_db, tmp_path):
    """The demo LIMS in the test server, storage under tmp_path; the read-only connection."""
    _populate_in_one_transaction(lims_admin, tmp_path / "storage")
    return lims_db


def _populate_in_one_transaction(connection, storage_root) -> tuple[int, int]:
    connection.autocommit = False  # as the CLI does: one commit, not one per statement
    try:
        with connection, connection.cursor() as cursor:
            return populate_demo_lims(cursor, storage_root)
    finally:
        connection.autocommit = True


def _example_results(lims_db) -> list[list[int]]:
    return [[row["exp_id"] for row in lims_db.query_readonly(query)]
            for query in EXAMPLE["query_strings"]]


def test_each_example_query_finds_at_least_its_count_and_they_are_disjoint(demo_lims):
    results = _example_results(demo_lims)
    for ids, count in zip(results, EXAMPLE["sub_selection_counts"]):
        assert len(ids) >= count
        assert len(set(ids)) == len(ids)  # the reporter genotype adds no duplicate row
    all_ids = [experiment_id for ids in results for experiment_id in ids]
    assert len(set(all_ids)) == len(all_ids)


def test_experiments_the_queries_must_not_match_exist(demo_lims):
    matched = {experiment_id for ids in _example_results(demo_lims) for experiment_id in ids}
    rows = demo_lims.query(
        "SELECT oe.id, oe.workflow_state, idep.depth, projects.code AS project, "
        "array_agg(genotypes.name ORDER BY gt.name) AS genotypes, "
        "array_agg(gt.name ORDER BY gt.name) AS genotype_types "
        "FROM ophys_experiments AS oe JOIN ophys_sessions AS os ON os.id = oe.ophys_session_id "
        "JOIN projects ON projects.id = os.project_id "
        "JOIN imaging_depths AS idep ON idep.id = oe.imaging_depth_id "
        "JOIN specimens ON specimens.id = os.specimen_id "
        "JOIN donors_genotypes AS dg ON dg.donor_id = specimens.donor_id "
        "JOIN genotypes ON genotypes.id = dg.genotype_id "
        "JOIN genotype_types AS gt ON gt.id = genotypes.genotype_type_id "
        "GROUP BY oe.id, oe.workflow_state, idep.depth, projects.code")
    unmatched = [row for row in rows if row["id"] not in matched]
    assert len(rows) == len(demo_experiments()) >= 300
    assert all(row["genotype_types"] == ["driver", "reporter"] for row in rows)
    # the near misses of the first query: its project and driver, but failed or too deep
    first_query_misses = [row for row in unmatched if row["project"] == "VisualBehaviorMultiscope"
                          and "Sst-IRES-Cre" in row["genotypes"]]
    assert any(row["workflow_state"] != "passed" and 100 <= row["depth"] <= 300
               for row in first_query_misses)
    assert any(row["workflow_state"] == "passed" and not 100 <= row["depth"] <= 300
               for row in first_query_misses)
    assert {"VisualCoding", "OpenScopeX"} <= {row["project"] for row in unmatched}
    assert any("Vip-IRES-Cre" in row["genotypes"] for row in unmatched)


def test_every_experiment_has_frames_and_a_lims_style_storage_directory(demo_lims, tmp_path):
    rows = demo_lims.query(
        "SELECT oe.id, oe.movie_number_of_frames, oe.storage_directory, os.id AS session_id, "
        "os.specimen_id FROM ophys_experiments AS oe "
        "JOIN ophys_sessions AS os ON os.id = oe.ophys_session_id")
    storage = re.escape(str((tmp_path / "storage")))
    for row in rows:
        assert row["movie_number_of_frames"] == 3000
        assert re.fullmatch(
            storage + rf"/specimen_{row['specimen_id']}/ophys_session_{row['session_id']}"
            rf"/ophys_experiment_{row['id']}/", row["storage_directory"])
        assert 850_000_000 <= row["id"] < 1_013_000_000


def test_populating_again_adds_nothing_and_follows_a_moved_storage_root(demo_lims, lims_admin,
                                                                        tmp_path):
    before = demo_lims.query("SELECT id, workflow_state FROM ophys_experiments ORDER BY id")
    assert _populate_in_one_transaction(lims_admin, tmp_path / "moved") == (0, len(before))
    after = demo_lims.query("SELECT id, workflow_state, storage_directory FROM ophys_experiments "
                            "ORDER BY id")
    assert [(row["id"], row["workflow_state"]) for row in after] == \
        [(row["id"], row["workflow_state"]) for row in before]
    assert all(row["storage_directory"].startswith(str(tmp_path / "moved") + "/")
               for row in after)
    assert demo_lims.query("SELECT count(*) AS n FROM donors_genotypes")[0]["n"] == 2 * len(after)
    assert _populate_in_one_transaction(lims_admin, tmp_path / "moved") == (0, 0)


def test_the_demo_lims_is_the_same_every_time():
    first, second = demo_experiments(), demo_experiments()
    assert first == second
    assert len({experiment.experiment_id for experiment in first}) == len(first)


def test_cli_populates_the_server_of_slapp_home(embedded_server, lims_admin, lims_db, run_cli,
                                                tmp_path):
    output_json = tmp_path / "populated.json"
    process = run_cli("slapp.demo.populate_lims", "--slapp_home", embedded_server.home,
                      "--storage_root", tmp_path / "storage", "--output_json", output_json)
    assert process.returncode == 0, process.stderr
    total = len(demo_experiments())
    assert json.loads(output_json.read_text()) == {
        "n_experiments": total, "n_added": total, "n_repointed": 0,
        "storage_root": str(tmp_path / "storage"), "movies": []}
    assert lims_db.query("SELECT count(*) AS n FROM ophys_experiments")[0]["n"] == total
    again = run_cli("slapp.demo.populate_lims", "--slapp_home", embedded_server.home,
                    "--storage_root", tmp_path / "storage")
    assert again.returncode == 0, again.stderr
    assert f"{total} experiments (0 added now)" in again.stdout
    assert "pointed" not in again.stdout
    # another storage root changes every existing row, and says so in one line
    moved = run_cli("slapp.demo.populate_lims", "--slapp_home", embedded_server.home,
                    "--storage_root", tmp_path / "moved")
    assert moved.returncode == 0, moved.stderr
    assert moved.stdout.splitlines()[1] == (
        f"demo LIMS: pointed the storage_directory of {total} existing experiments at "
        f"{tmp_path / 'moved'}")


def test_cli_writes_the_movies_of_a_selection(embedded_server, lims_admin, labeling_db,
                                              run_cli, tmp_path):
    storage = tmp_path / "storage"
    assert run_cli("slapp.demo.populate_lims", "--slapp_home", embedded_server.home,
                   "--storage_root", storage).returncode == 0
    experiment_ids = [experiment.experiment_id for experiment in demo_experiments()[:2]]
    selection_id = insert_selection(labeling_db, experiment_ids)
    output_json = tmp_path / "populated.json"
    process = run_cli("slapp.demo.populate_lims", "--slapp_home", embedded_server.home,
                      "--storage_root", storage, "--movies_for_selection", selection_id,
                      "--frame_size", 32, "--output_json", output_json)
    assert process.returncode == 0, process.stderr
    movies = [Path(movie) for movie in json.loads(output_json.read_text())["movies"]]
    assert len(movies) == 2
    for experiment_id, movie, line in zip(experiment_ids, movies,
                                          process.stdout.splitlines()[1:]):
        assert f"/ophys_experiment_{experiment_id}/" in str(movie)
        assert line == f"movie of experiment {experiment_id}: generated {movie}"
        with h5py.File(movie, "r") as handle:
            assert handle["data"].shape == (DEMO_NFRAMES, 32, 32)
    again = run_cli("slapp.demo.populate_lims", "--slapp_home", embedded_server.home,
                    "--storage_root", storage, "--movies_for_selection", selection_id,
                    "--frame_size", 32)
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[1].endswith(f"kept {movies[0]}")
    missing = run_cli("slapp.demo.populate_lims", "--slapp_home", embedded_server.home,
                      "--storage_root", storage, "--movies_for_selection", selection_id + 1)
    assert missing.returncode == 1
    assert missing.stderr.strip() == (f"slapp populate-lims: error: experiment_selection "
                                      f"{selection_id + 1} does not exist: run select_data "
                                      "first")


def test_cli_without_a_server_fails_in_one_line(run_cli, tmp_path):
    process = run_cli("slapp.demo.populate_lims", "--slapp_home", tmp_path / "nothing")
    assert process.returncode == 1
    assert process.stderr.strip() == (
        f"slapp populate-lims: error: no embedded server in {tmp_path / 'nothing'}: "
        "run `python -m slapp.embedded start`")


def test_select_data_picks_the_130_example_experiments(demo_lims, labeling_db, run_cli,
                                                       tmp_path):
    output_json = tmp_path / "selection.json"
    process = run_cli("slapp.data_selection.select_data", "--input_json",
                      REPO_ROOT / "example_selection_input.json", "--output_json", output_json)
    assert process.returncode == 0, process.stderr
    rows = labeling_db.query("SELECT sub_selected_ids FROM experiment_selection")
    assert len(rows) == 1
    selected = rows[0]["sub_selected_ids"]
    assert len(selected) == len(set(selected)) == 130
    results = _example_results(demo_lims)
    start = 0
    for ids, count in zip(results, EXAMPLE["sub_selection_counts"]):
        assert set(selected[start:start + count]) <= set(ids)
        start += count
