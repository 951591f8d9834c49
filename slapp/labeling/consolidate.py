"""Take each ROI's consensus of a labeling job's labels, re-queue ties, measure agreement.

::

    python -m slapp.labeling.consolidate --labeling_job NAME \\
        [--strategy majority|consensus|any] [--min_labels 3] [--output_json out.json]

For every task of the job, the current labels (a label its labeler changed
counts in its latest form; a Ground Truth worker's timeout is no label) are
combined by the strategy (:mod:`slapp.labeling.agreement`) and written to
``label_consensus``, one row per task, strategy and ``min_labels``: running
the command again updates those rows. A tie (majority only) or a ROI with
fewer than ``min_labels`` labels gets no label and is re-queued: its task's
``extra_labels`` is raised so that it wants one label more than it has now.
Raising it *to* that number, not by one, makes a second consolidation of the
same labels change nothing; once the extra label arrives and the ROI is still
tied or short, the next consolidation asks for one more again. A ROI whose
regular labels are still being collected is not re-queued.

It then prints, and writes with ``--output_json`` under ``labelers``, each
labeler's precision and recall of "cell" against the consensus (over the ROIs
that have one), and the job's Fleiss' kappa (``fleiss_kappa``, over the ROIs
with at least two labels; null when undefined).
"""
import sys

import marshmallow as mm
from psycopg2.extras import execute_values

from slapp.labeling.agreement import (CELL, NOT_CELL, STRATEGIES, Consensus, consensus_label,
                                      fleiss_kappa, precision_recall)
from slapp.labeling.job_labels import find_job, task_labels
from slapp.utils.cli import run_main
from slapp.utils.files import write_json_atomically
from slapp.utils.query_utils import DbConnection, labeling_connection
from slapp.utils.schema import ArgSchema, ArgSchemaParser, StrictInt

UPSERT_CONSENSUS = """
INSERT INTO label_consensus (labeling_task_id, roi_id, label, n_labels, n_cell, strategy,
                             min_labels)
VALUES %s
ON CONFLICT ON CONSTRAINT one_consensus_per_task_and_rule DO UPDATE
SET label = EXCLUDED.label, n_labels = EXCLUDED.n_labels, n_cell = EXCLUDED.n_cell,
    created_at = now()
WHERE (label_consensus.label, label_consensus.n_labels, label_consensus.n_cell)
      IS DISTINCT FROM (EXCLUDED.label, EXCLUDED.n_labels, EXCLUDED.n_cell)
"""

# Want one label more than the task has now; never lowers what an earlier run asked.
REQUEUE = """
UPDATE labeling_tasks AS tasks SET extra_labels = wanted.extra
FROM (VALUES %s) AS wanted (id, extra)
WHERE tasks.id = wanted.id AND wanted.extra > tasks.extra_labels
RETURNING tasks.id
"""


class ConsolidateSchema(ArgSchema):
    """Combine a labeling job's labels into one per ROI."""

    labeling_job = mm.fields.Str(
        required=True, metadata={"description": "the labeling job's name (labeling_jobs.name)"})
    strategy = mm.fields.Str(
        dump_default="majority", validate=mm.validate.OneOf(STRATEGIES),
        metadata={"description": "majority: more cell than not-cell labels (a tie has none), "
                                 "as the original Ground Truth jobs took; consensus: a cell "
                                 "only when every labeler says so; any: a cell when one does"})
    min_labels = StrictInt(
        dump_default=3, validate=mm.validate.Range(min=1),
        metadata={"description": "ROIs with fewer labels get no consensus and are re-queued; "
                                 "3, the original's three workers per ROI, is the smallest "
                                 "number whose majority cannot tie"})


class LabelerAgreementSchema(mm.Schema):
    """One labeler against the consensus."""

    labeler_id = mm.fields.Int(required=True)
    name = mm.fields.Str(required=True)
    n_rois = mm.fields.Int(required=True, metadata={
        "description": "ROIs this labeler labeled that have a consensus"})
    precision = mm.fields.Float(allow_none=True, metadata={
        "description": "of this labeler's cells, the fraction the consensus calls cells"})
    recall = mm.fields.Float(allow_none=True, metadata={
        "description": "of the consensus's cells, the fraction this labeler called cells"})
    agreement = mm.fields.Float(allow_none=True)


class ConsolidateOutputSchema(mm.Schema):
    """What ``--output_json`` holds."""

    labeling_job = mm.fields.Str(required=True)
    labeling_job_id = mm.fields.Int(required=True)
    strategy = mm.fields.Str(required=True)
    min_labels = mm.fields.Int(required=True)
    n_tasks = mm.fields.Int(required=True)
    n_cell = mm.fields.Int(required=True)
    n_not_cell = mm.fields.Int(required=True)
    n_tie = mm.fields.Int(required=True)
    n_too_few = mm.fields.Int(required=True)
    n_requeued = mm.fields.Int(required=True, metadata={
        "description": "tasks whose extra_labels this run raised"})
    labelers = mm.fields.Nested(LabelerAgreementSchema, many=True, required=True)
    fleiss_kappa = mm.fields.Float(allow_none=True, required=True)


def labeler_agreement(tasks: list[dict], consensus: list[Consensus],
                      names: dict[int, str]) -> list[dict]:
    """Each labeler's precision, recall and agreement against the consensus labels.

    Parameters
    ----------
    tasks : list of dict
        As :func:`slapp.labeling.job_labels.task_labels` gives them.
    consensus : list of Consensus
        One per task, in the same order.
    names : dict
        Labeler id -> name.

    Returns
    -------
    list of dict
        One per labeler with a label on a ROI that has a consensus, by id.
    """
    pairs: dict[int, tuple[list, list]] = {}
    for task, decided in zip(tasks, consensus):
        if decided.label is None:
            continue
        for labeler_id, label in task["labels"].items():
            if label is not None:
                given, reference = pairs.setdefault(labeler_id, ([], []))
                given.append(label)
                reference.append(decided.label)
    return [{"labeler_id": labeler_id, "name": names[labeler_id],
             **precision_recall(*pairs[labeler_id])} for labeler_id in sorted(pairs)]


def job_kappa(tasks: list[dict]) -> float | None:
    """Fleiss' kappa of a job's tasks over the two categories cell and not cell."""
    counts = [[sum(label == category for label in task["labels"].values())
               for category in (CELL, NOT_CELL)] for task in tasks]
    return fleiss_kappa(counts) if counts else None


def _format_share(value: float | None) -> str:
    return "  -  " if value is None else f"{value:.3f}"


def report_lines(result: dict) -> list[str]:
    """The printed summary: counts, re-queued tasks, each labeler, and kappa."""
    lines = [
        f"labeling job {result['labeling_job']} (id {result['labeling_job_id']}): "
        f"{result['n_tasks']} ROIs, {result['strategy']} of at least {result['min_labels']} "
        f"labels: {result['n_cell']} cell, {result['n_not_cell']} not cell, "
        f"{result['n_tie']} tied, {result['n_too_few']} with too few labels",
        f"re-queued for one more label: {result['n_requeued']}",
        "labeler                    ROIs  precision  recall  agreement (against the consensus)"]
    lines += [f"{labeler['name'][:24]:<24} {labeler['n_rois']:>6}  "
              f"{_format_share(labeler['precision']):>9}  {_format_share(labeler['recall']):>6}  "
              f"{_format_share(labeler['agreement']):>9}" for labeler in result["labelers"]]
    kappa = result["fleiss_kappa"]
    lines.append("Fleiss' kappa: " + ("undefined (no ROI with two labels, or only one "
                                      "category given)" if kappa is None else f"{kappa:.3f}"))
    return lines


def consolidate(dbconn: DbConnection, job_name: str, strategy: str = "majority",
                min_labels: int = 3) -> dict:
    """Write a job's consensus labels, re-queue its ties and short ROIs, measure agreement.

    Parameters
    ----------
    dbconn : DbConnection
        The labeling database.
    job_name : str
        ``labeling_jobs.name``.
    strategy : str
        One of :data:`slapp.labeling.agreement.STRATEGIES`.
    min_labels : int
        Fewest labels that give a consensus.

    Returns
    -------
    dict
        As :class:`ConsolidateOutputSchema` describes.
    """
    job = find_job(dbconn, job_name)
    tasks = task_labels(dbconn, job["id"])
    consensus = [consensus_label(task["labels"].values(), strategy, min_labels)
                 for task in tasks]
    wanted = [(task["labeling_task_id"], len(task["labels"]) + 1 - job["labels_per_roi"])
              for task, decided in zip(tasks, consensus)
              if decided.tie or decided.too_few]
    wanted = [(task_id, extra) for task_id, extra in wanted if extra > 0]
    requeued = []
    with dbconn.transaction() as cursor:
        if tasks:
            execute_values(cursor, UPSERT_CONSENSUS, [
                (task["labeling_task_id"], task["roi_id"], decided.label, decided.n_labels,
                 decided.n_cell, strategy, min_labels)
                for task, decided in zip(tasks, consensus)], page_size=1000)
        if wanted:
            requeued = execute_values(cursor, REQUEUE, wanted, fetch=True, page_size=1000)
    labeler_ids = sorted({labeler for task in tasks for labeler in task["labels"]})
    names = {row["id"]: row["name"] for row in dbconn.query(
        "SELECT id, name FROM labelers WHERE id = ANY(%s)", (labeler_ids,))}
    return {
        "labeling_job": job["name"], "labeling_job_id": job["id"], "strategy": strategy,
        "min_labels": min_labels, "n_tasks": len(tasks),
        "n_cell": sum(decided.label == CELL for decided in consensus),
        "n_not_cell": sum(decided.label == NOT_CELL for decided in consensus),
        "n_tie": sum(decided.tie for decided in consensus),
        "n_too_few": sum(decided.too_few for decided in consensus),
        "n_requeued": len(requeued),
        "labelers": labeler_agreement(tasks, consensus, names),
        "fleiss_kappa": job_kappa(tasks),
    }


class Consolidate(ArgSchemaParser):
    """``python -m slapp.labeling.consolidate``: see the module docstring."""

    default_schema = ConsolidateSchema
    default_output_schema = ConsolidateOutputSchema

    def run(self, dbconn: DbConnection) -> dict:
        """Consolidate, print the summary and write ``--output_json``."""
        result = consolidate(dbconn, self.args["labeling_job"], self.args["strategy"],
                             self.args["min_labels"])
        print("\n".join(report_lines(result)))
        if self.args.get("output_json"):
            write_json_atomically(self.args["output_json"], self.get_output_json(result))
        return result


def main() -> None:
    """Parse the command line, connect to the labeling database and consolidate."""
    command = Consolidate()
    with labeling_connection(interactive=True) as dbconn:
        command.run(dbconn)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_main(main, "consolidate"))
