"""Assignment and label storage in the database: quotas, one label per labeler, history."""
import threading

import pytest

from labeling_job import make_job
from slapp.labeling import assignment
from slapp.labeling.labelers import add_labeler


@pytest.fixture
def small_job(labeling_db, tmp_path):
    job = make_job(labeling_db, tmp_path / "artifacts", n_rois=3, labels_per_roi=2)
    labelers = {}
    for name in ("ann", "ben", "cy"):
        add_labeler(labeling_db, name)
        labelers[name] = labeling_db.query("SELECT id FROM labelers WHERE name = %s",
                                           (name,))[0]["id"]
    return job, labelers


def _next(dbconn, labeler_id, job_id, pending=None):
    with dbconn.transaction() as cursor:
        return assignment.next_task(cursor, labeler_id, [job_id], pending)


def _submit(dbconn, labeler_id, task_id, label="cell", **options):
    with dbconn.transaction() as cursor:
        return assignment.submit_label(cursor, labeler_id, task_id, label, **options)


def test_three_labelers_fill_quotas_and_never_exceed_them(labeling_db, small_job):
    job, labelers = small_job
    given = []
    for _ in range(20):  # round robin until nobody gets anything
        offered = False
        for name, labeler_id in labelers.items():
            task = _next(labeling_db, labeler_id, job["job_id"])
            if task:
                offered = True
                _submit(labeling_db, labeler_id, task["labeling_task_id"])
                given.append((name, task["labeling_task_id"]))
        if not offered:
            break
    rows = labeling_db.query("SELECT labeling_task_id, labeler_id FROM roi_labels")
    assert len(rows) == 3 * 2
    per_task = {}
    for row in rows:
        per_task.setdefault(row["labeling_task_id"], []).append(row["labeler_id"])
    assert sorted(per_task) == job["task_ids"]
    assert all(len(set(ids)) == 2 for ids in per_task.values())
    # closest to quota first: the second label of a task comes before a new task's first
    assert given[:2] == [("ann", job["task_ids"][0]), ("ben", job["task_ids"][0])]


def test_pending_offers_send_others_elsewhere(labeling_db, small_job):
    job, labelers = small_job
    first = _next(labeling_db, labelers["ann"], job["job_id"])
    # ben and cy have both been offered the first task: it is full for a third labeler
    task = _next(labeling_db, labelers["ann"], job["job_id"],
                 {first["labeling_task_id"]: 2})
    assert task["labeling_task_id"] == job["task_ids"][1]


def test_a_full_task_refuses_a_third_label(labeling_db, small_job):
    job, labelers = small_job
    task_id = job["task_ids"][0]
    _submit(labeling_db, labelers["ann"], task_id)
    _submit(labeling_db, labelers["ben"], task_id, "not cell")
    with pytest.raises(assignment.LabelException) as refused:
        _submit(labeling_db, labelers["cy"], task_id)
    assert refused.value.reason == assignment.QUOTA_REACHED
    assert labeling_db.query("SELECT count(*) AS n FROM roi_labels")[0]["n"] == 2


def test_a_changed_label_keeps_the_earlier_one_as_history(labeling_db, small_job):
    job, labelers = small_job
    task_id = job["task_ids"][0]
    first = _submit(labeling_db, labelers["ann"], task_id, "cell", note="round")
    _submit(labeling_db, labelers["ben"], task_id, "cell")
    # the task is full, but ann may still change her own label
    second = _submit(labeling_db, labelers["ann"], task_id, "not cell")
    assert second.superseded_id == first.id
    rows = labeling_db.query("SELECT id, label, note, superseded_by FROM roi_labels "
                             "WHERE labeler_id = %s ORDER BY id", (labelers["ann"],))
    assert rows == [{"id": first.id, "label": "cell", "note": "round",
                     "superseded_by": second.id},
                    {"id": second.id, "label": "not cell", "note": None,
                     "superseded_by": None}]
    assert _next(labeling_db, labelers["ann"], job["job_id"])["labeling_task_id"] != task_id


def test_a_retried_request_is_stored_once(labeling_db, small_job):
    job, labelers = small_job
    task_id = job["task_ids"][1]
    first = _submit(labeling_db, labelers["ann"], task_id, request_id="r-1")
    again = _submit(labeling_db, labelers["ann"], task_id, request_id="r-1")
    assert (again.id, again.replayed, first.replayed) == (first.id, True, False)
    with pytest.raises(assignment.LabelException) as other:
        _submit(labeling_db, labelers["ben"], task_id, request_id="r-1")
    assert other.value.reason == assignment.NOT_YOURS
    assert labeling_db.query("SELECT count(*) AS n FROM roi_labels")[0]["n"] == 1


def test_bad_labels_are_refused(labeling_db, small_job):
    job, labelers = small_job
    for label, options in (("maybe", {}), ("cell", {"seconds_shown": -1}),
                           ("cell", {"source": "robot"})):
        with pytest.raises(assignment.LabelException) as refused:
            _submit(labeling_db, labelers["ann"], job["task_ids"][0], label, **options)
        assert refused.value.reason == assignment.INVALID
    with pytest.raises(assignment.LabelException) as unknown:
        _submit(labeling_db, labelers["ann"], 999_999)
    assert unknown.value.reason == assignment.UNKNOWN_TASK


def test_labelers_at_once_never_push_a_task_past_its_quota(labeling_db, small_job,
                                                           embedded_server):
    from slapp import embedded
    from slapp.utils.query_utils import DbConnection
    job, _ = small_job
    ids = [labeling_db.insert("INSERT INTO labelers (name) VALUES (%s) RETURNING id",
                              (f"sim{index}",))[0]["id"] for index in range(12)]
    task_id = job["task_ids"][2]
    outcomes = []
    barrier = threading.Barrier(len(ids))

    def label(labeler_id):
        with DbConnection(**embedded_server.credentials(
                embedded.LABELING_ROLE, embedded.LABELING_DATABASE)) as dbconn:
            barrier.wait()
            try:
                _submit(dbconn, labeler_id, task_id, source="simulated")
                outcomes.append("stored")
            except assignment.LabelException as error:
                outcomes.append(error.reason)
    threads = [threading.Thread(target=label, args=(labeler_id,)) for labeler_id in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["quota_reached"] * 10 + ["stored"] * 2
    assert labeling_db.query("SELECT count(*) AS n FROM roi_labels WHERE labeling_task_id = %s",
                             (task_id,))[0]["n"] == 2
