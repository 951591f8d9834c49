"""Read a SageMaker Ground Truth output manifest into labelers and labels.

::

    python -m slapp.labeling.import_gt --output_manifest output.manifest \\
        --labeling_job NAME [--labels_per_roi 3]

Each line of a Ground Truth output manifest, as the original toolkit's
post-annotation Lambda made it, carries the input manifest's keys
(``roi-id`` is ``rois.id``), the job's label attribute ``<attribute>`` =
``{"sourceData", "majorityLabel", "workerAnnotations": [{"workerId",
"roiLabel"}, ...]}`` and ``<attribute>-metadata``. The attribute is the one
key with a ``-metadata`` twin (a line with none or several is refused, as the
original's merge did).

Every worker becomes a labeler named by its ``workerId``, who cannot sign in
(``token_hash`` NULL), and every annotation a ``roi_labels`` row with source
``ground_truth``: ``roiLabel`` ``"cell"`` / ``"not cell"``, or NULL when the
worker timed out. The Lambda's ``majorityLabel`` is not read:
``consolidate`` takes the consensus from the labels themselves.

A job of that name that does not exist yet is created (sampling
``ground_truth``) with the manifest's ROIs as its tasks; importing into a
Ground Truth job again adds the ROIs it lacks, so the outputs of several
Ground Truth jobs over the same ROIs merge into one labeling job (what the
original's ``merge_utils`` did with files). A worker's annotation already
stored is kept; a different one replaces it and keeps it as history. The
import is one transaction: a bad line stores nothing.
"""
import hashlib
import json
import sys
from pathlib import Path

import argschema
import marshmallow as mm
from psycopg2.extras import Json

from slapp.errors import SlappError
from slapp.labeling.agreement import CELL, NOT_CELL
from slapp.utils.cli import run_main
from slapp.utils.files import write_json_atomically
from slapp.utils.query_utils import DbConnection, labeling_connection
from slapp.utils.schema import ArgSchema, ArgSchemaParser, StrictInt

METADATA_SUFFIX = "-metadata"


class ImportException(SlappError):
    """A Ground Truth output manifest that cannot be imported."""


class ImportGtSchema(ArgSchema):
    """Import a Ground Truth output manifest's annotations as labels."""

    output_manifest = argschema.fields.InputFile(required=True, metadata={
        "description": "the Ground Truth job's output manifest (JSON lines)"})
    labeling_job = mm.fields.Str(required=True, metadata={
        "description": "the labeling job the labels belong to; created when missing"})
    labels_per_roi = StrictInt(dump_default=3, validate=mm.validate.Range(min=1), metadata={
        "description": "labels wanted per ROI of a job created here: 3, the workers per "
                       "ROI of the original's Ground Truth jobs"})


class ImportGtOutputSchema(mm.Schema):
    """What ``--output_json`` holds."""

    labeling_job = mm.fields.Str(required=True)
    labeling_job_id = mm.fields.Int(required=True)
    created_job = mm.fields.Bool(required=True)
    attribute = mm.fields.Str(required=True, metadata={
        "description": "the Ground Truth job's label attribute name"})
    n_records = mm.fields.Int(required=True)
    n_tasks_added = mm.fields.Int(required=True)
    n_workers = mm.fields.Int(required=True)
    n_labels_stored = mm.fields.Int(required=True, metadata={
        "description": "annotations stored now (new, or replacing a different one)"})
    n_labels_unchanged = mm.fields.Int(required=True)
    n_timeouts = mm.fields.Int(required=True, metadata={
        "description": "annotations without a label (the worker timed out)"})


def label_attribute(record: dict, line_number: int) -> str:
    """The record's label attribute: the one key with a ``-metadata`` twin."""
    if "roi-id" not in record:
        raise ImportException(f"line {line_number} has no 'roi-id'")
    candidates = [key for key in record if key.endswith(METADATA_SUFFIX)]
    if len(candidates) != 1:
        raise ImportException(f"line {line_number} (roi-id {record['roi-id']}) has "
                              f"{len(candidates)} keys ending in '-metadata', expected one")
    attribute = candidates[0][:-len(METADATA_SUFFIX)]
    if not isinstance(record.get(attribute), dict):
        raise ImportException(f"line {line_number} (roi-id {record['roi-id']}) has "
                              f"{candidates[0]} but no {attribute!r} object")
    return attribute


def read_annotations(path: Path) -> tuple[str, list[dict]]:
    """Parse and check an output manifest.

    Returns
    -------
    attribute, records : str, list of dict
        The label attribute, and per line ``roi_id`` and ``annotations``, a list
        of ``(worker id, label or None)``.
    """
    attributes, records = set(), []
    with open(path, encoding="utf-8") as stream:
        for line_number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ImportException(f"line {line_number} is not JSON: {error}") from None
            if not isinstance(record, dict):
                raise ImportException(f"line {line_number} is not a JSON object")
            attribute = label_attribute(record, line_number)
            attributes.add(attribute)
            records.append({"roi_id": _roi_id(record["roi-id"], line_number),
                            "annotations": _annotations(record[attribute], line_number)})
    if not records:
        raise ImportException(f"{path} holds no annotations")
    if len(attributes) > 1:
        raise ImportException(f"the lines name several label attributes: "
                              f"{', '.join(sorted(attributes))}")
    return attributes.pop(), records


def _roi_id(value, line_number: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)) or \
            not str(value).isdigit():
        raise ImportException(f"line {line_number}: roi-id {value!r} is not a ROI id")
    return int(value)


def _annotations(project: dict, line_number: int) -> list[tuple[str, str | None]]:
    annotations = project.get("workerAnnotations")
    if not isinstance(annotations, list):
        raise ImportException(f"line {line_number} has no workerAnnotations list")
    found = []
    for annotation in annotations:
        if not isinstance(annotation, dict) or "workerId" not in annotation:
            raise ImportException(f"line {line_number}: an annotation has no workerId")
        label = annotation.get("roiLabel")
        if label not in (CELL, NOT_CELL, None):
            raise ImportException(f"line {line_number}: roiLabel {label!r} is not 'cell', "
                                  "'not cell' or null")
        found.append((str(annotation["workerId"]), label))
    return found


def _job(cursor, name: str, manifest: Path, attribute: str, roi_ids: list[int],
         labels_per_roi: int) -> tuple[dict, bool]:
    cursor.execute("SELECT * FROM labeling_jobs WHERE name = %s FOR UPDATE", (name,))
    job = cursor.fetchone()
    if job is not None:
        return dict(job), False
    cursor.execute("SELECT DISTINCT segmentation_run_id FROM rois WHERE id = ANY(%s) "
                   "ORDER BY 1", (roi_ids,))
    run_ids = [row["segmentation_run_id"] for row in cursor.fetchall()]
    inputs = {"output_manifest": str(manifest), "attribute": attribute,
              "manifest_sha256": hashlib.sha256(manifest.read_bytes()).hexdigest(),
              "labels_per_roi": labels_per_roi}
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()
    cursor.execute(
        "INSERT INTO labeling_jobs (name, labels_per_roi, sampling, n_rois, "
        "segmentation_run_ids, inputs, inputs_digest) VALUES (%s, %s, 'ground_truth', %s, "
        "%s, %s, %s) RETURNING *",
        (name, labels_per_roi, len(roi_ids), run_ids, Json(inputs), digest))
    return dict(cursor.fetchone()), True


def _tasks(cursor, job: dict, roi_ids: list[int]) -> tuple[dict[int, int], int]:
    """Task id of every ROI, adding the missing ones to a Ground Truth job."""
    cursor.execute("SELECT roi_id, id FROM labeling_tasks WHERE labeling_job_id = %s",
                   (job["id"],))
    tasks = {row["roi_id"]: row["id"] for row in cursor.fetchall()}
    missing = [roi_id for roi_id in roi_ids if roi_id not in tasks]
    if missing and job["sampling"] != "ground_truth":
        raise ImportException(
            f"ROI {missing[0]} is not a task of labeling job {job['name']!r} "
            f"({len(missing)} ROIs are not), which was not made from Ground Truth")
    for roi_id in missing:
        cursor.execute("INSERT INTO labeling_tasks (labeling_job_id, roi_id) VALUES (%s, %s) "
                       "RETURNING id", (job["id"], roi_id))
        tasks[roi_id] = cursor.fetchone()["id"]
    return tasks, len(missing)


def _workers(cursor, names: list[str]) -> dict[str, int]:
    """Labeler id of every worker, creating those not yet stored (they cannot sign in)."""
    cursor.execute("INSERT INTO labelers (name) SELECT unnest(%s::text[]) "
                   "ON CONFLICT (name) DO NOTHING", (names,))
    cursor.execute("SELECT id, name, token_hash FROM labelers WHERE name = ANY(%s)", (names,))
    rows = cursor.fetchall()
    signs_in = [row["name"] for row in rows if row["token_hash"] is not None]
    if signs_in:
        raise ImportException(f"worker {signs_in[0]!r} has the name of a labeler who signs "
                              "in to the labeling app; rename one of them")
    return {row["name"]: row["id"] for row in rows}


def _store_label(cursor, task_id: int, labeler_id: int, label: str | None,
                 current: dict) -> bool:
    """Store one annotation unless the same is current; True when stored."""
    key = (task_id, labeler_id)
    if key in current and current[key]["label"] == label:
        return False
    previous = current.get(key)
    cursor.execute("INSERT INTO roi_labels (labeling_task_id, labeler_id, label, source, "
                   "superseded_by) VALUES (%s, %s, %s, 'ground_truth', %s) RETURNING id",
                   (task_id, labeler_id, label, previous["id"] if previous else None))
    new_id = cursor.fetchone()["id"]
    if previous:  # one current label per task and labeler: swap in one transaction
        cursor.execute("UPDATE roi_labels SET superseded_by = %s WHERE id = %s",
                       (new_id, previous["id"]))
        cursor.execute("UPDATE roi_labels SET superseded_by = NULL WHERE id = %s", (new_id,))
    current[key] = {"id": new_id, "label": label}
    return True


def import_gt(dbconn: DbConnection, manifest: str | Path, job_name: str,
              labels_per_roi: int = 3) -> dict:
    """Store a Ground Truth output manifest's workers and annotations.

    Parameters
    ----------
    dbconn : DbConnection
        The labeling database.
    manifest : str or Path
        The output manifest.
    job_name : str
        The labeling job (created when missing).
    labels_per_roi : int
        ``labels_per_roi`` of a job created here.

    Returns
    -------
    dict
        As :class:`ImportGtOutputSchema` describes.
    """
    manifest = Path(manifest).absolute()
    attribute, records = read_annotations(manifest)
    roi_ids = list(dict.fromkeys(record["roi_id"] for record in records))
    workers = sorted({worker for record in records for worker, _ in record["annotations"]})
    stored = unchanged = 0
    with dbconn.transaction() as cursor:
        cursor.execute("SELECT id FROM rois WHERE id = ANY(%s)", (roi_ids,))
        known = {row["id"] for row in cursor.fetchall()}
        unknown = [roi_id for roi_id in roi_ids if roi_id not in known]
        if unknown:
            raise ImportException(f"roi-id {unknown[0]} is not a stored ROI "
                                  f"({len(unknown)} of the manifest's ROIs are not)")
        job, created = _job(cursor, job_name, manifest, attribute, roi_ids, labels_per_roi)
        tasks, added = _tasks(cursor, job, roi_ids)
        labeler_ids = _workers(cursor, workers) if workers else {}
        cursor.execute("SELECT id, labeling_task_id, labeler_id, label FROM roi_labels "
                       "WHERE labeling_task_id = ANY(%s) AND superseded_by IS NULL",
                       (list(tasks.values()),))
        current = {(row["labeling_task_id"], row["labeler_id"]): row
                   for row in cursor.fetchall()}
        for record in records:
            for worker, label in record["annotations"]:
                if _store_label(cursor, tasks[record["roi_id"]], labeler_ids[worker], label,
                                current):
                    stored += 1
                else:
                    unchanged += 1
    return {"labeling_job": job["name"], "labeling_job_id": job["id"], "created_job": created,
            "attribute": attribute, "n_records": len(records), "n_tasks_added": added,
            "n_workers": len(workers), "n_labels_stored": stored,
            "n_labels_unchanged": unchanged,
            "n_timeouts": sum(label is None for record in records
                              for _, label in record["annotations"])}


class ImportGt(ArgSchemaParser):
    """``python -m slapp.labeling.import_gt``: see the module docstring."""

    default_schema = ImportGtSchema
    default_output_schema = ImportGtOutputSchema

    def run(self, dbconn: DbConnection) -> dict:
        """Import, print one line and write ``--output_json``."""
        result = import_gt(dbconn, self.args["output_manifest"], self.args["labeling_job"],
                           self.args["labels_per_roi"])
        created = "created" if result["created_job"] else "existing"
        print(f"{created} labeling job {result['labeling_job']} (id "
              f"{result['labeling_job_id']}): {result['n_records']} ROIs of attribute "
              f"{result['attribute']}, {result['n_workers']} workers; "
              f"{result['n_labels_stored']} labels stored, {result['n_labels_unchanged']} "
              f"already stored, {result['n_timeouts']} timeouts")
        if self.args.get("output_json"):
            write_json_atomically(self.args["output_json"], self.get_output_json(result))
        return result


def main() -> None:
    """Parse the command line, connect to the labeling database and import."""
    command = ImportGt()
    with labeling_connection(interactive=True) as dbconn:
        command.run(dbconn)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_main(main, "import-gt"))
