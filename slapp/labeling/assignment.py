"""Which ROI a labeler sees next, and storing their label: the rules kept by the database.

Every function takes a cursor of an open transaction (a
:meth:`slapp.utils.query_utils.DbConnection.transaction` or a pooled
connection's), so a caller decides what commits together.

The rules:

* a task's *quota* is its job's ``labels_per_roi`` plus the task's
  ``extra_labels``; its *count* is the number of current labels (not
  superseded, not a timed-out Ground Truth worker's NULL);
* :func:`next_task` offers a labeler a task of the given jobs that they never
  labelled and whose count is below its quota, those closest to their quota
  first (counting the labels other labelers are expected to give now, the
  ``pending`` offers the caller keeps, so labelers working at once are spread
  over tasks; a task those would fill comes only when no other is open), then
  the lowest task id;
* :func:`submit_label` locks the task's row (``SELECT ... FOR UPDATE``), so two
  submissions for one task run one after the other: the second sees the first's
  label, and a task never gets more labels than its quota. The partial unique
  index ``one_current_label_per_task_and_labeler`` keeps one current label per
  labeler and task; a labeler who labels a task again changes their own label
  (the earlier row stays, its ``superseded_by`` set to the new row). A
  ``request_id`` seen before returns the stored row instead of writing again,
  so a retried request is stored once.
"""
from dataclasses import dataclass
from typing import Mapping, Sequence

from psycopg2.extras import Json

from slapp.errors import SlappError

LABELS = ("cell", "not cell")
SOURCES = ("page", "ground_truth", "simulated")

# A current label counts towards the quota; superseded rows are history and a NULL
# label is a Ground Truth worker who timed out.
_CURRENT = "superseded_by IS NULL AND label IS NOT NULL"

# Current labels per task of the jobs, and whether the labeler has one (or had one).
_TASK_COUNTS = f"""
SELECT tasks.id, tasks.roi_id, tasks.labeling_job_id, jobs.name AS labeling_job,
       jobs.labels_per_roi + tasks.extra_labels AS quota,
       count(labels.id) FILTER (WHERE labels.{_CURRENT}) AS n_labels,
       coalesce(bool_or(labels.labeler_id = %(labeler_id)s), false) AS seen_by_me,
       coalesce(bool_or(labels.labeler_id = %(labeler_id)s
                        AND labels.superseded_by IS NULL), false) AS labelled_by_me
FROM labeling_tasks AS tasks
JOIN labeling_jobs AS jobs ON jobs.id = tasks.labeling_job_id
LEFT JOIN roi_labels AS labels ON labels.labeling_task_id = tasks.id
WHERE tasks.labeling_job_id = ANY(%(job_ids)s::int[])
GROUP BY tasks.id, jobs.id
"""

# Open for the labeler: below quota and never labelled by them. The pending offers of
# others count first; a task they fill is offered only when no other is open. The
# labeler's progress comes from the same counts (one pass over the jobs' labels).
NEXT_TASK_QUERY = f"""
WITH counts AS ({_TASK_COUNTS}),
progress AS (
    SELECT count(*) FILTER (WHERE labelled_by_me) AS n_labelled_by_me,
           count(*) FILTER (WHERE NOT seen_by_me AND n_labels < quota) AS n_open_for_me,
           count(*) AS n_tasks
    FROM counts),
choice AS (
    SELECT counts.id AS labeling_task_id, counts.roi_id, counts.labeling_job_id,
           counts.labeling_job, counts.quota, counts.n_labels
    FROM counts
    LEFT JOIN unnest(%(pending_tasks)s::int[], %(pending_counts)s::int[])
              AS pending (labeling_task_id, n) ON pending.labeling_task_id = counts.id
    WHERE NOT counts.seen_by_me AND counts.n_labels < counts.quota
    ORDER BY counts.quota - counts.n_labels - coalesce(pending.n, 0) <= 0,
             counts.quota - counts.n_labels - coalesce(pending.n, 0), counts.id
    LIMIT 1)
SELECT progress.*, choice.* FROM progress LEFT JOIN choice ON true
"""
_PROGRESS_KEYS = ("n_labelled_by_me", "n_open_for_me", "n_tasks")


class LabelException(SlappError):
    """A label that cannot be stored; ``reason`` says why, for an API's status code."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


QUOTA_REACHED, UNKNOWN_TASK, INVALID, NOT_YOURS = (
    "quota_reached", "unknown_task", "invalid", "not_yours")


@dataclass(frozen=True)
class StoredLabel:
    """The outcome of :func:`submit_label`.

    Attributes
    ----------
    id : int
        The ``roi_labels`` row holding the label.
    labeling_task_id : int
        Its task.
    label : str
        ``'cell'`` or ``'not cell'``.
    replayed : bool
        True when the ``request_id`` had been stored before: nothing was written.
    superseded_id : int or None
        The labeler's earlier label of the task that this one replaced.
    """

    id: int
    labeling_task_id: int
    label: str
    replayed: bool
    superseded_id: int | None


def job_ids_by_name(cursor, names: Sequence[str]) -> dict[str, int]:
    """The ids of the labeling jobs named.

    Parameters
    ----------
    cursor : psycopg2 cursor
        A dict-row cursor (``RealDictCursor``) of an open transaction.
    names : sequence of str
        Job names.

    Returns
    -------
    dict
        Name -> id of the jobs that exist (a missing name is absent).
    """
    cursor.execute("SELECT name, id FROM labeling_jobs WHERE name = ANY(%s)", (list(names),))
    return {row["name"]: row["id"] for row in cursor.fetchall()}


def next_task_and_progress(cursor, labeler_id: int, job_ids: Sequence[int],
                           pending: Mapping[int, int] | None = None) -> tuple:
    """The task a labeler should label next (None when none is left), and their progress.

    Parameters
    ----------
    cursor : psycopg2 cursor
        A dict-row cursor of an open transaction.
    labeler_id : int
        The ``labelers`` row.
    job_ids : sequence of int
        The labeling jobs served.
    pending : mapping, optional
        Task id -> labels expected soon from *other* labelers (tasks offered to
        them and not yet answered). They order the tasks here only, so
        labelers working at once are spread over tasks; :func:`submit_label`
        does not read them.

    Returns
    -------
    task : dict or None
        ``labeling_task_id``, ``roi_id``, ``labeling_job_id``,
        ``labeling_job``, ``quota`` and ``n_labels`` (current labels).
    progress : dict
        ``n_labelled_by_me`` (tasks with their current label),
        ``n_open_for_me`` (tasks below quota they have not labelled) and
        ``n_tasks`` (all tasks of the jobs).
    """
    pending = dict(pending or {})
    cursor.execute(NEXT_TASK_QUERY, {
        "labeler_id": labeler_id, "job_ids": list(job_ids),
        "pending_tasks": list(pending), "pending_counts": list(pending.values())})
    row = dict(cursor.fetchone())
    progress = {key: row.pop(key) for key in _PROGRESS_KEYS}
    return (row if row["labeling_task_id"] is not None else None), progress


def next_task(cursor, labeler_id: int, job_ids: Sequence[int],
              pending: Mapping[int, int] | None = None) -> dict | None:
    """The task a labeler should label next, or None: :func:`next_task_and_progress`'s task."""
    return next_task_and_progress(cursor, labeler_id, job_ids, pending)[0]


def progress(cursor, labeler_id: int, job_ids: Sequence[int]) -> dict:
    """How far a labeler is with the given jobs: :func:`next_task_and_progress`'s progress."""
    return next_task_and_progress(cursor, labeler_id, job_ids)[1]


def _validate(label: str, source: str, seconds_shown: float | None) -> None:
    if label not in LABELS:
        raise LabelException(f"label must be 'cell' or 'not cell', not {label!r}", INVALID)
    if source not in SOURCES:
        raise LabelException(f"source must be one of {', '.join(SOURCES)}, not {source!r}",
                             INVALID)
    if seconds_shown is not None and not seconds_shown >= 0:
        raise LabelException("seconds_shown must be a number >= 0", INVALID)


def submit_label(cursor, labeler_id: int, labeling_task_id: int, label: str, *,
                 note: str | None = None, seconds_shown: float | None = None,
                 view_settings: dict | None = None, source: str = "page",
                 request_id: str | None = None,
                 job_ids: Sequence[int] | None = None) -> StoredLabel:
    """Store a labeler's label of one task, within the quota, once per request.

    The task's row is locked for the rest of the transaction; commit soon.

    Parameters
    ----------
    cursor : psycopg2 cursor
        A dict-row cursor of an open transaction; the caller commits.
    labeler_id : int
        Who labels.
    labeling_task_id : int
        What they label.
    label : str
        ``'cell'`` or ``'not cell'``.
    note : str, optional
        The labeler's free text, stored as given.
    seconds_shown : float, optional
        How long the ROI was on screen.
    view_settings : dict, optional
        How it was shown (brightness, contrast, views), stored as JSON.
    source : str
        ``'page'``, ``'ground_truth'`` or ``'simulated'``.
    request_id : str, optional
        The client's id of this submission; a second submission with the same
        id stores nothing and returns the first one's row.
    job_ids : sequence of int, optional
        When given, the task must belong to one of these jobs.

    Returns
    -------
    StoredLabel
        The stored (or earlier stored) label.

    Raises
    ------
    LabelException
        ``reason`` ``invalid`` (bad label, source or seconds), ``unknown_task``
        (no such task in these jobs), ``quota_reached`` (the task has all the
        labels it wants from others; the labeler has none on it) or
        ``not_yours`` (the request id is another labeler's).
    """
    _validate(label, source, seconds_shown)
    cursor.execute(
        "SELECT tasks.id, jobs.labels_per_roi + tasks.extra_labels AS quota "
        "FROM labeling_tasks AS tasks JOIN labeling_jobs AS jobs "
        "ON jobs.id = tasks.labeling_job_id WHERE tasks.id = %(task)s "
        "AND (%(jobs)s::int[] IS NULL OR tasks.labeling_job_id = ANY(%(jobs)s::int[])) "
        "FOR UPDATE OF tasks",
        {"task": labeling_task_id, "jobs": None if job_ids is None else list(job_ids)})
    task = cursor.fetchone()
    if task is None:
        raise LabelException(f"there is no labeling task {labeling_task_id} here",
                             UNKNOWN_TASK)
    # A statement after the lock sees every label committed before it was granted: a
    # retry racing its first attempt waits for it and finds its row.
    cursor.execute(
        "SELECT replay.id AS replay_id, replay.labeling_task_id AS replay_task, "
        "       replay.labeler_id AS replay_labeler, replay.label AS replay_label, "
        "       (SELECT id FROM roi_labels WHERE labeling_task_id = %(task)s "
        "        AND labeler_id = %(labeler)s AND superseded_by IS NULL) AS own, "
        f"      (SELECT count(*) FROM roi_labels WHERE labeling_task_id = %(task)s "
        f"       AND {_CURRENT}) AS n_labels "
        "FROM (SELECT 1) AS one "
        "LEFT JOIN roi_labels AS replay ON replay.request_id = %(request_id)s",
        {"request_id": request_id, "task": labeling_task_id, "labeler": labeler_id})
    found = cursor.fetchone()
    if found["replay_id"] is not None:
        if found["replay_labeler"] != labeler_id:
            raise LabelException("this request id belongs to another labeler's label",
                                 NOT_YOURS)
        return StoredLabel(found["replay_id"], found["replay_task"], found["replay_label"],
                           True, None)
    if found["own"] is None and found["n_labels"] >= task["quota"]:
        raise LabelException(f"task {labeling_task_id} has all the labels it wants",
                             QUOTA_REACHED)
    values = {"task": labeling_task_id, "labeler": labeler_id, "label": label,
              "note": note, "seconds": seconds_shown,
              "view": Json(view_settings or {}), "source": source,
              "request_id": request_id, "own": found["own"]}
    # The earlier label leaves the partial unique index before the new one enters it (the
    # CTE runs first because the insert reads it); the foreign key from superseded_by to
    # the new row is checked at the end of the statement, when the row exists.
    cursor.execute(
        "WITH new AS (SELECT nextval(pg_get_serial_sequence('roi_labels', 'id')) AS id), "
        "superseded AS (UPDATE roi_labels SET superseded_by = (SELECT id FROM new) "
        "               WHERE id = %(own)s RETURNING id) "
        "INSERT INTO roi_labels (id, labeling_task_id, labeler_id, label, note, "
        "seconds_shown, view_settings, source, request_id) "
        "SELECT new.id, %(task)s, %(labeler)s, %(label)s, %(note)s, %(seconds)s, %(view)s, "
        "%(source)s, %(request_id)s FROM new, (SELECT count(*) FROM superseded) AS first "
        "RETURNING id", values)
    return StoredLabel(cursor.fetchone()["id"], labeling_task_id, label, False, found["own"])
