"""consolidate: consensus rows, re-queued ties and short ROIs, labeler agreement, kappa."""
import json

import pytest
from loop_rows import add_labels, make_job, make_labeler, make_run

from slapp.labeling.consolidate import consolidate


@pytest.fixture
def small_job(labeling_db):
    """Five ROIs, three labelers: unanimous cell, 2-1 not cell, a tie of two, a timeout, none."""
    run_id, _ = make_run(labeling_db, 850000002, 5, features=False)
    roi_ids = [row["id"] for row in labeling_db.query(
        "SELECT id FROM rois WHERE segmentation_run_id = %s ORDER BY suite2p_roi_index",
        (run_id,))]
    job_id, tasks = make_job(labeling_db, "small", roi_ids)
    a, b, c = (make_labeler(labeling_db, name) for name in ("ann", "bob", "cy"))
    task = [tasks[roi_id] for roi_id in roi_ids]
    add_labels(labeling_db, task[0], {a: "cell", b: "cell", c: "cell"})
    add_labels(labeling_db, task[1], {a: "not cell", b: "cell", c: "not cell"})
    add_labels(labeling_db, task[2], {a: "cell", b: "not cell", c: None})  # c timed out
    add_labels(labeling_db, task[3], {a: "cell", b: "not cell"})  # c still to come
    return {"job_id": job_id, "tasks": task, "labelers": (a, b, c), "roi_ids": roi_ids}


def consensus_rows(dbconn):
    return {row["labeling_task_id"]: row for row in dbconn.query(
        "SELECT * FROM label_consensus ORDER BY labeling_task_id")}


def extra_labels(dbconn):
    return {row["id"]: row["extra_labels"] for row in dbconn.query(
        "SELECT id, extra_labels FROM labeling_tasks")}


def test_majority_writes_one_row_per_task_and_requeues_once(labeling_db, small_job):
    task = small_job["tasks"]
    result = consolidate(labeling_db, "small")
    rows = consensus_rows(labeling_db)
    assert [rows[t]["label"] for t in task] == ["cell", "not cell", None, None, None]
    assert [(rows[t]["n_labels"], rows[t]["n_cell"]) for t in task] == [
        (3, 3), (3, 1), (2, 1), (2, 1), (0, 0)]
    assert {row["strategy"] for row in rows.values()} == {"majority"}
    assert {row["min_labels"] for row in rows.values()} == {3}
    assert [rows[t]["roi_id"] for t in task] == small_job["roi_ids"]
    assert (result["n_cell"], result["n_not_cell"], result["n_tie"], result["n_too_few"]) == \
        (1, 1, 0, 3)
    # the timed-out ROI has all its three answers and wants a fourth; the two whose
    # regular labels are still coming are not re-queued
    assert result["n_requeued"] == 1
    assert extra_labels(labeling_db) == {task[0]: 0, task[1]: 0, task[2]: 1, task[3]: 0,
                                         task[4]: 0}

    again = consolidate(labeling_db, "small")
    assert again["n_requeued"] == 0
    assert extra_labels(labeling_db)[task[2]] == 1
    assert labeling_db.query("SELECT count(*) AS n FROM label_consensus")[0]["n"] == 5


def test_a_tie_wants_one_more_label_and_the_next_one_decides(labeling_db, small_job):
    task, (a, b, c) = small_job["tasks"], small_job["labelers"]
    add_labels(labeling_db, task[3], {c: "not cell"})
    d = make_labeler(labeling_db, "dee")
    add_labels(labeling_db, task[0], {d: "not cell"})  # 3-1: still cell
    consolidate(labeling_db, "small", min_labels=2)
    rows = consensus_rows(labeling_db)
    assert rows[task[0]]["label"] == "cell"
    assert rows[task[2]]["label"] is None  # 1-1 after the timeout: a tie
    assert extra_labels(labeling_db)[task[2]] == 1
    add_labels(labeling_db, task[2], {d: "cell"})
    result = consolidate(labeling_db, "small", min_labels=2)
    assert consensus_rows(labeling_db)[task[2]]["label"] == "cell"
    assert result["n_requeued"] == 0
    # the rows of min_labels 2 were updated in place, beside none of min_labels 3
    assert labeling_db.query("SELECT count(*) AS n FROM label_consensus")[0]["n"] == 5


def test_a_changed_label_counts_in_its_latest_form(labeling_db, small_job):
    task, (a, b, c) = small_job["tasks"], small_job["labelers"]
    old = labeling_db.query("SELECT id FROM roi_labels WHERE labeling_task_id = %s AND "
                            "labeler_id = %s", (task[1], a))[0]["id"]
    with labeling_db.transaction() as cursor:  # one current label per task and labeler
        cursor.execute("INSERT INTO roi_labels (labeling_task_id, labeler_id, label, "
                       "superseded_by) VALUES (%s, %s, 'cell', %s) RETURNING id",
                       (task[1], a, old))
        new = cursor.fetchone()["id"]
        cursor.execute("UPDATE roi_labels SET superseded_by = %s WHERE id = %s", (new, old))
        cursor.execute("UPDATE roi_labels SET superseded_by = NULL WHERE id = %s", (new,))
    consolidate(labeling_db, "small")
    assert consensus_rows(labeling_db)[task[1]]["label"] == "cell"


@pytest.mark.parametrize("strategy, expected", [
    ("consensus", ["cell", "not cell", None, None, None]),
    ("any", ["cell", "cell", None, None, None]),
])
def test_consensus_and_any(labeling_db, small_job, strategy, expected):
    result = consolidate(labeling_db, "small", strategy=strategy)
    rows = consensus_rows(labeling_db)
    assert [rows[t]["label"] for t in small_job["tasks"]] == expected
    assert result["n_tie"] == 0


def test_labeler_precision_recall_and_kappa(labeling_db, small_job):
    result = consolidate(labeling_db, "small")
    by_name = {labeler["name"]: labeler for labeler in result["labelers"]}
    # against the two decided ROIs (cell, not cell): bob said cell twice
    assert by_name["ann"] == {"labeler_id": small_job["labelers"][0], "name": "ann",
                              "n_rois": 2, "precision": 1.0, "recall": 1.0, "agreement": 1.0}
    assert by_name["bob"]["precision"] == 0.5 and by_name["bob"]["recall"] == 1.0
    # kappa over the 4 ROIs with two labels or more: counts (3,0) (1,2) (1,1) (1,1)
    observed = (1 + 1 / 3 + 0 + 0) / 4
    p_cell = 6 / 10
    chance = p_cell ** 2 + (1 - p_cell) ** 2
    assert result["fleiss_kappa"] == pytest.approx((observed - chance) / (1 - chance))


def test_the_command_prints_and_writes_json(run_cli, labeling_db, small_job, tmp_path):
    output = tmp_path / "consolidated.json"
    done = run_cli("slapp.labeling.consolidate", "--labeling_job", "small", "--min_labels", "2",
                   "--output_json", output)
    assert done.returncode == 0, done.stderr
    assert "1 cell, 1 not cell, 2 tied, 1 with too few labels" in done.stdout
    assert "Fleiss' kappa:" in done.stdout
    written = json.loads(output.read_text())
    assert {"labelers", "fleiss_kappa"} <= set(written)
    assert [labeler["name"] for labeler in written["labelers"]] == ["ann", "bob", "cy"]


def test_an_unknown_job_is_one_line(run_cli, labeling_db, tmp_path):
    done = run_cli("slapp.labeling.consolidate", "--labeling_job", "nope",
                   "--output_json", tmp_path / "out.json")
    assert done.returncode == 1
    assert done.stderr.strip() == "slapp consolidate: error: there is no labeling job named 'nope'"
    assert not (tmp_path / "out.json").exists()
