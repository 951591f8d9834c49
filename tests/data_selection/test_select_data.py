"""Step 1, select_data, against the real embedded PostgreSQL and the real CLI."""
import base64
import json
import logging
from pathlib import Path

import marshmallow
import numpy as np
import pytest

from slapp.data_selection.select_data import DataSelectionException, DataSelector
from slapp.demo.lims import add_experiment
from slapp.utils.code_version import code_version

MODULE = "slapp.data_selection.select_data"
EXAMPLE_INPUT = Path(__file__).resolve().parents[2] / "example_selection_input.json"
EXAMPLE = json.loads(EXAMPLE_INPUT.read_text())
SEED = EXAMPLE["random_seed"]
COUNTS = EXAMPLE["sub_selection_counts"]
SIMPLE_QUERY = "SELECT id AS exp_id FROM ophys_experiments WHERE id BETWEEN %d AND %d"

# (project, genotype, depths, how many) of experiments each example query matches ...
MATCHING = [
    ("VisualBehaviorMultiscope", "Sst-IRES-Cre", (100, 150, 200, 250, 300), 151),
    ("VisualBehaviorTask1B", "Sst-IRES-Cre", (100, 175, 300), 40),
    ("VisualBehaviorMultiscope", "Slc17a7-IRES2-Cre", (100, 150, 200), 60),
    ("VisualBehaviorTask1B", "Slc17a7-IRES2-Cre", (100, 200), 20),
]
# ... and experiments that are close to a query but must not be matched.
NOT_MATCHING = [
    dict(project="VisualBehaviorMultiscope", genotype="Sst-IRES-Cre", depth=350),
    dict(project="VisualBehaviorMultiscope", genotype="Sst-IRES-Cre", depth=150,
         workflow_state="failed"),
    dict(project="VisualBehaviorMultiscope", genotype="Slc17a7-IRES2-Cre", depth=250),
    dict(project="VisualBehaviorTask1B", genotype="Vip-IRES-Cre", depth=150),
    dict(project="OtherProject", genotype="Sst-IRES-Cre", depth=150),
    dict(project="VisualBehaviorTask1B", genotype="Ai93(TITL-GCaMP6f)", depth=150,
         genotype_type="reporter"),
]


def _fill_lims(lims_admin, experiments):
    with lims_admin.cursor() as cursor:
        cursor.execute("BEGIN")
        for experiment_id, attributes in experiments:
            add_experiment(cursor, experiment_id, **attributes)
        cursor.execute("COMMIT")


@pytest.fixture
def example_lims(lims_admin):
    """LIMS holding experiments for each example query, in shuffled id order.

    Returns the set of ids each example query must return.
    """
    rng = np.random.default_rng(7)
    n_matching = sum(n for *_, n in MATCHING)
    ids = iter(850_000_000 + rng.choice(200_000_000, n_matching + 5 * len(NOT_MATCHING),
                                        replace=False))
    experiments, expected = [], []
    for project, genotype, depths, n in MATCHING:
        stratum = [(int(next(ids)), dict(project=project, genotype=genotype,
                                         depth=depths[i % len(depths)])) for i in range(n)]
        experiments += stratum
        expected.append({experiment_id for experiment_id, _ in stratum})
    experiments += [(int(next(ids)), attributes)
                    for attributes in NOT_MATCHING for _ in range(5)]
    rng.shuffle(experiments)
    _fill_lims(lims_admin, experiments)
    return expected


@pytest.fixture
def small_lims(lims_admin):
    """LIMS with experiments 1..30 (any project): for queries by id range."""
    _fill_lims(lims_admin, [(i, dict(project="P", genotype="G", depth=100))
                            for i in range(1, 31)])


def expected_draw(ids, count, seed=SEED):
    return [int(i) for i in np.random.default_rng(seed).choice(sorted(ids), size=count,
                                                               replace=False)]


def selection_rows(labeling_db):
    return labeling_db.query("SELECT * FROM experiment_selection ORDER BY id")


def write_input(tmp_path, **fields):
    path = tmp_path / "input.json"
    path.write_text(json.dumps({**EXAMPLE, **fields}))
    return path


# --- the seed's example ------------------------------------------------------------

def test_example_input_is_stored_as_the_seed_describes(example_lims, labeling_db, run_cli,
                                                       tmp_path):
    output_json = tmp_path / "selection.json"
    result = run_cli(MODULE, "--input_json", EXAMPLE_INPUT, "--output_json", output_json)
    assert result.returncode == 0, result.stderr

    [row] = selection_rows(labeling_db)
    decoded = [base64.b64decode(text).decode("utf-8") for text in row["base64_query_strings"]]
    assert decoded == EXAMPLE["query_strings"]
    expected = [expected_draw(ids, count) for ids, count in zip(example_lims, COUNTS)]
    assert row["sub_selected_ids"] == [i for drawn in expected for i in drawn]
    assert row["random_seed"] == 42
    assert row["comment_string"] == "example query for README in repo"

    # every id of every query, sorted, as a 2-D array padded with NULL
    width = max(len(ids) for ids in example_lims)
    assert len(row["ophys_experiment_ids"]) == len(COUNTS)
    for stored, ids in zip(row["ophys_experiment_ids"], example_lims):
        assert stored == sorted(ids) + [None] * (width - len(ids))

    assert json.loads(output_json.read_text()) == {
        "experiment_selection_id": row["id"],
        "sub_selected_ids": row["sub_selected_ids"],
        "n_ids_per_query": [151, 40, 60, 20],
    }
    assert "INFO:DataSelector:query 0 returned 151 ids, sub-selected 75" in result.stderr
    assert "INFO:DataSelector:query 3 returned 20 ids, sub-selected 10" in result.stderr
    assert f"INFO:DataSelector:wrote experiment_selection id {row['id']}" in result.stderr
    assert not list(tmp_path.glob(".*.tmp"))


def test_second_run_stores_the_same_selection(example_lims, labeling_db, lims_db):
    for _ in range(2):
        DataSelector(input_data=dict(EXAMPLE), args=[]).run(lims_db, labeling_db)
    first, second = selection_rows(labeling_db)
    assert second["id"] != first["id"]
    for column in ("sub_selected_ids", "ophys_experiment_ids", "base64_query_strings",
                   "slapp_commit_hash", "random_seed", "sub_selection_counts"):
        assert second[column] == first[column]


def test_stored_row_alone_reproduces_the_draw(example_lims, labeling_db, lims_db):
    DataSelector(input_data=dict(EXAMPLE, random_seed=1234), args=[]).run(lims_db, labeling_db)
    [row] = selection_rows(labeling_db)
    redrawn = [expected_draw([i for i in ids if i is not None], count, row["random_seed"])
               for ids, count in zip(row["ophys_experiment_ids"], row["sub_selection_counts"])]
    assert row["sub_selected_ids"] == [i for drawn in redrawn for i in drawn]
    assert row["sub_selected_ids"][:75] != expected_draw(example_lims[0], 75)  # not seed 42's


def test_selection_does_not_depend_on_row_order(small_lims, labeling_db, lims_db):
    selections = []
    for order in ("ORDER BY exp_id ASC", "ORDER BY exp_id DESC", "ORDER BY md5(id::text)"):
        query = SIMPLE_QUERY % (1, 30) + " " + order
        result = DataSelector(input_data=dict(query_strings=[query], sub_selection_counts=[7]),
                              args=[]).run(lims_db, labeling_db)
        selections.append(result["sub_selected_ids"])
    assert selections[0] == selections[1] == selections[2] == expected_draw(range(1, 31), 7)


def test_code_version_is_recorded(small_lims, labeling_db, lims_db):
    DataSelector(input_data=dict(query_strings=[SIMPLE_QUERY % (1, 30)],
                                 sub_selection_counts=[3]), args=[]).run(lims_db, labeling_db)
    [row] = selection_rows(labeling_db)
    assert row["slapp_commit_hash"] == code_version()
    assert row["comment_string"] == "" and row["random_seed"] == 42


def test_transform_hash_overrides_the_code_version(small_lims, labeling_db, run_cli, tmp_path):
    input_json = write_input(tmp_path, query_strings=[SIMPLE_QUERY % (1, 30)],
                             sub_selection_counts=[3])
    result = run_cli(MODULE, "--input_json", input_json, env={"TRANSFORM_HASH": "abc123-mine"})
    assert result.returncode == 0, result.stderr
    assert [row["slapp_commit_hash"] for row in selection_rows(labeling_db)] == ["abc123-mine"]


def test_comment_is_stored_exactly_as_typed(small_lims, labeling_db, run_cli, tmp_path):
    comment = "it's \"balanced\" \\n C:\\data\\ 100% ; DROP TABLE rois; -- Δf/f 日本 🐭"
    input_json = write_input(tmp_path, query_strings=[SIMPLE_QUERY % (1, 30)],
                             sub_selection_counts=[3], comment_string=comment)
    result = run_cli(MODULE, "--input_json", input_json)
    assert result.returncode == 0, result.stderr
    assert [row["comment_string"] for row in selection_rows(labeling_db)] == [comment]


def test_cli_flags_override_the_input_json(small_lims, labeling_db, run_cli, tmp_path):
    input_json = write_input(tmp_path, query_strings=[SIMPLE_QUERY % (1, 30)],
                             sub_selection_counts=[3])
    result = run_cli(MODULE, "--input_json", input_json, "--random_seed", "5",
                     "--sub_selection_counts", "[4]", "--comment_string", "from the shell")
    assert result.returncode == 0, result.stderr
    [row] = selection_rows(labeling_db)
    assert row["random_seed"] == 5 and row["comment_string"] == "from the shell"
    assert row["sub_selected_ids"] == expected_draw(range(1, 31), 4, seed=5)


def test_dry_run_prints_the_selection_and_writes_nothing(example_lims, labeling_db, run_cli,
                                                         tmp_path):
    output_json = tmp_path / "selection.json"
    # no labeling credentials: a dry run does not need the labeling database
    result = run_cli(MODULE, "--input_json", EXAMPLE_INPUT, "--dry_run",
                     "--output_json", output_json,
                     env={"LABELING_USER": "", "LABELING_PASSWORD": ""})
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    expected = [expected_draw(ids, count) for ids, count in zip(example_lims, COUNTS)]
    assert printed["dry_run"] is True
    assert printed["sub_selected_ids"] == [i for drawn in expected for i in drawn]
    assert printed["n_ids_per_query"] == [151, 40, 60, 20]
    assert printed["random_seed"] == 42
    assert "query 2 returned 60 ids, sub-selected 25" in result.stderr
    assert selection_rows(labeling_db) == []
    assert list(tmp_path.iterdir()) == []


def test_repeated_ids_within_a_query_count_once(small_lims, labeling_db, lims_db, caplog):
    query = (SIMPLE_QUERY % (1, 10) + " UNION ALL " + SIMPLE_QUERY % (1, 4))
    with caplog.at_level(logging.INFO, logger="DataSelector"):
        result = DataSelector(input_data=dict(query_strings=[query], sub_selection_counts=[10],
                                              log_level="INFO"),
                              args=[]).run(lims_db, labeling_db)
    assert sorted(result["sub_selected_ids"]) == list(range(1, 11))
    assert result["n_ids_per_query"] == [10]
    assert "query 0 repeated an exp_id in 4 rows" in caplog.text
    [row] = selection_rows(labeling_db)
    assert row["ophys_experiment_ids"] == [list(range(1, 11))]


def test_overlapping_queries_are_fine_when_the_draws_are_disjoint(small_lims, labeling_db,
                                                                  lims_db):
    queries = [SIMPLE_QUERY % (1, 20), SIMPLE_QUERY % (11, 30)]
    result = DataSelector(input_data=dict(query_strings=queries, sub_selection_counts=[1, 1],
                                          random_seed=3), args=[]).run(lims_db, labeling_db)
    assert result["sub_selected_ids"] == (expected_draw(range(1, 21), 1, 3)
                                          + expected_draw(range(11, 31), 1, 3))
    assert len(set(result["sub_selected_ids"])) == 2


def test_query_with_no_rows_and_count_zero_is_recorded(small_lims, labeling_db, lims_db):
    queries = [SIMPLE_QUERY % (1, 3), SIMPLE_QUERY % (100, 200)]
    DataSelector(input_data=dict(query_strings=queries, sub_selection_counts=[2, 0]),
                 args=[]).run(lims_db, labeling_db)
    [row] = selection_rows(labeling_db)
    assert row["ophys_experiment_ids"] == [[1, 2, 3], [None, None, None]]
    assert row["sub_selected_ids"] == expected_draw([1, 2, 3], 2)


def test_no_row_when_the_output_json_cannot_be_written(small_lims, labeling_db, lims_db,
                                                     tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    selector = DataSelector(input_data=dict(query_strings=[SIMPLE_QUERY % (1, 30)],
                                            sub_selection_counts=[3],
                                            output_json=str(out_dir / "selection.json")),
                            args=[])
    out_dir.rmdir()  # gone between validation and writing
    with pytest.raises(FileNotFoundError):
        selector.run(lims_db, labeling_db)
    assert selection_rows(labeling_db) == []


def test_length_mismatch_raises_validation_error_at_construction():
    with pytest.raises(marshmallow.ValidationError, match="one count per query"):
        DataSelector(input_data=dict(query_strings=["SELECT 1 AS exp_id"] * 2,
                                     sub_selection_counts=[1]), args=[])


def test_dry_run_without_labeling_connection_only(small_lims, lims_db):
    selector = DataSelector(input_data=dict(query_strings=[SIMPLE_QUERY % (1, 30)],
                                            sub_selection_counts=[3]), args=[])
    with pytest.raises(DataSelectionException, match="labeling database connection"):
        selector.run(lims_db)


# --- errors: one line, non-zero exit, nothing written -------------------------------------

@pytest.fixture
def recorded_before(small_lims, labeling_db, lims_db):
    """One selection already stored, so that "unchanged" means something."""
    DataSelector(input_data=dict(query_strings=[SIMPLE_QUERY % (1, 30)],
                                 sub_selection_counts=[5]), args=[]).run(lims_db, labeling_db)
    return selection_rows(labeling_db)


def assert_refused(result, message, labeling_db, recorded_before, tmp_path):
    assert result.returncode != 0
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("slapp select: error: ")
    assert message in lines[0]
    assert selection_rows(labeling_db) == recorded_before
    assert not (tmp_path / "out.json").exists()
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("fields, message", [
    (dict(sub_selection_counts=[75, 20, 25]),
     "query_strings has 4 entries but sub_selection_counts has 3: give one count per query"),
    (dict(query_strings=[SIMPLE_QUERY % (1, 10), SIMPLE_QUERY % (11, 22)],
          sub_selection_counts=[5, 20]),
     "query 1 returned 12 ids, 20 requested"),
    (dict(query_strings=["SELECT id, workflow_state FROM ophys_experiments"],
          sub_selection_counts=[1]),
     "query 0 has no exp_id column (it returned id, workflow_state)"),
    (dict(query_strings=[SIMPLE_QUERY % (1, 10), "SELEC id AS exp_id FROM ophys_experiments"],
          sub_selection_counts=[1, 1]),
     'query 1 refused: it is not valid SQL: syntax error at or near "SELEC"'),
    (dict(query_strings=["SELECT id AS exp_id FROM no_such_table"], sub_selection_counts=[1]),
     'query 0 failed: relation "no_such_table" does not exist'),
    (dict(query_strings=["UPDATE ophys_experiments SET workflow_state = 'x' "
                         "RETURNING id AS exp_id"], sub_selection_counts=[1]),
     "query 0 refused: it is an UPDATE statement; a LIMS query must be one SELECT"),
    (dict(query_strings=["SELECT NULL::bigint AS exp_id UNION ALL " + SIMPLE_QUERY % (1, 3)],
          sub_selection_counts=[1]),
     "query 0 returned a NULL exp_id in 1 of 4 rows"),
    (dict(query_strings=["SELECT 'abc' AS exp_id"], sub_selection_counts=[1]),
     "query 0 returned exp_id 'abc', which is not an integer"),
    (dict(query_strings=[SIMPLE_QUERY % (1, 30)], sub_selection_counts=[0]),
     "every sub_selection_count is 0"),
    (dict(query_strings=[SIMPLE_QUERY % (1, 30)], sub_selection_counts=[-1]),
     "sub_selection_counts.0: Must be greater than or equal to 0"),
    (dict(query_strings=[], sub_selection_counts=[]), "query_strings: Shorter than minimum"),
    (dict(query_strings=["  "], sub_selection_counts=[1]), "query_strings [0] are blank"),
    (dict(query_strings=[SIMPLE_QUERY % (1, 30)], sub_selection_counts=[1], random_seed=-3),
     "random_seed: Must be greater than or equal to 0"),
])
def test_bad_input_is_refused(fields, message, recorded_before, labeling_db, lims_admin,
                              run_cli, tmp_path):
    input_json = write_input(tmp_path, **fields)
    result = run_cli(MODULE, "--input_json", input_json, "--output_json", tmp_path / "out.json")
    assert_refused(result, message, labeling_db, recorded_before, tmp_path)
    with lims_admin.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM ophys_experiments WHERE workflow_state = 'x'")
        assert cursor.fetchone()[0] == 0


def test_experiment_drawn_by_two_queries_is_refused(recorded_before, labeling_db, run_cli,
                                                    tmp_path):
    queries = [SIMPLE_QUERY % (1, 10), SIMPLE_QUERY % (1, 10) + " ORDER BY 1 DESC",
               SIMPLE_QUERY % (11, 20)]
    input_json = write_input(tmp_path, query_strings=queries, sub_selection_counts=[2, 2, 2])
    result = run_cli(MODULE, "--input_json", input_json, "--output_json", tmp_path / "out.json")
    first, second = sorted(expected_draw(range(1, 11), 2))
    assert_refused(result, f"2 experiments were sub-selected by more than one query: "
                           f"{first} (queries 0 and 1), {second} (queries 0 and 1); "
                           "a selection holds each experiment once: make the queries disjoint",
                   labeling_db, recorded_before, tmp_path)


@pytest.mark.parametrize("variable", ["LIMS_PASSWORD", "LABELING_USER", "LABELING_PASSWORD"])
def test_missing_credentials_name_the_variable(variable, recorded_before, labeling_db, run_cli,
                                               cli_env, tmp_path):
    input_json = write_input(tmp_path, query_strings=[SIMPLE_QUERY % (1, 30)],
                             sub_selection_counts=[2])
    result = run_cli(MODULE, "--input_json", input_json, "--output_json", tmp_path / "out.json",
                     env={variable: ""})
    assert_refused(result, f"environment variable {variable} is not set",
                   labeling_db, recorded_before, tmp_path)
    for name in ("LIMS_PASSWORD", "LABELING_PASSWORD"):
        assert cli_env[name] not in result.stderr + result.stdout


def test_wrong_password_is_not_printed(recorded_before, labeling_db, run_cli, tmp_path):
    input_json = write_input(tmp_path, query_strings=[SIMPLE_QUERY % (1, 30)],
                             sub_selection_counts=[2])
    wrong = "not-the-password-7f3a"
    result = run_cli(MODULE, "--input_json", input_json, "--output_json", tmp_path / "out.json",
                     env={"LABELING_PASSWORD": wrong})
    assert_refused(result, "password authentication failed", labeling_db, recorded_before,
                   tmp_path)
    assert wrong not in result.stderr


def test_output_json_in_a_missing_directory_is_refused(recorded_before, labeling_db, run_cli,
                                                       tmp_path):
    input_json = write_input(tmp_path, query_strings=[SIMPLE_QUERY % (1, 30)],
                             sub_selection_counts=[2])
    result = run_cli(MODULE, "--input_json", input_json,
                     "--output_json", tmp_path / "missing" / "out.json")
    assert_refused(result, "output_json", labeling_db, recorded_before, tmp_path)
