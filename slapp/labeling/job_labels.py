"""A labeling job by name, and the current labels of its tasks: what the loop commands read."""
from slapp.errors import SlappError
from slapp.utils.query_utils import DbConnection


class UnknownJobException(SlappError):
    """There is no labeling job of the name given."""


# Every task of a job with its current labels (a label changed by its labeler is
# superseded and left out); a task without labels has one row with NULL labeler.
TASK_LABELS_QUERY = """
SELECT tasks.id AS labeling_task_id, tasks.roi_id, tasks.extra_labels,
       labels.labeler_id, labels.label
FROM labeling_tasks AS tasks
LEFT JOIN roi_labels AS labels
       ON labels.labeling_task_id = tasks.id AND labels.superseded_by IS NULL
WHERE tasks.labeling_job_id = %s
ORDER BY tasks.id, labels.labeler_id
"""


def find_job(dbconn: DbConnection, name: str) -> dict:
    """The ``labeling_jobs`` row named ``name``.

    Raises
    ------
    UnknownJobException
        When there is no such job.
    """
    rows = dbconn.query("SELECT * FROM labeling_jobs WHERE name = %s", (name,))
    if not rows:
        raise UnknownJobException(f"there is no labeling job named {name!r}")
    return rows[0]


def task_labels(dbconn: DbConnection, labeling_job_id: int) -> list[dict]:
    """Every task of a job with the list of its current labels.

    Returns
    -------
    list of dict
        One per task, in task order: ``labeling_task_id``, ``roi_id``,
        ``extra_labels`` and ``labels``, a dict labeler id -> ``"cell"`` /
        ``"not cell"`` / None (a Ground Truth worker who timed out).
    """
    tasks: dict[int, dict] = {}
    for row in dbconn.query(TASK_LABELS_QUERY, (labeling_job_id,)):
        task = tasks.setdefault(row["labeling_task_id"], {
            "labeling_task_id": row["labeling_task_id"], "roi_id": row["roi_id"],
            "extra_labels": row["extra_labels"], "labels": {}})
        if row["labeler_id"] is not None:
            task["labels"][row["labeler_id"]] = row["label"]
    return list(tasks.values())
