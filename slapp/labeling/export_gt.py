"""Write a labeling job as a SageMaker Ground Truth input manifest, optionally uploaded to S3.

::

    python -m slapp.labeling.export_gt --labeling_job NAME --output_manifest rois.jsonl
    python -m slapp.labeling.export_gt --labeling_job NAME --output_manifest rois.jsonl \\
        --s3_uri s3://bucket/prefix [--endpoint_url https://s3.example.org]

For labs that still label with Ground Truth: one JSON line per ROI of the job,
the original toolkit's per-ROI manifest as the artifacts step stored it
(``roi_manifests.manifest``: ``experiment-id``, ``roi-id``, ``source-ref``,
``roi-mask-source-ref``, ``video-source-ref``, ... ; the newest row of each
ROI). Every ROI must have its artifacts.

With ``--s3_uri`` the files are uploaded with boto3 in the original's key
layout: each artifact at ``<prefix>/<file name>``, each experiment's full
movie once at ``<prefix>/<experiment-id>_<file name>``, and the manifest,
whose file references are then ``s3://`` URIs, at ``<prefix>/manifest.json``
(Ground Truth refuses a ``.jsonl`` name); ``--output_manifest`` gets that
same manifest. Credentials come from boto3's usual places (environment,
``~/.aws``), never from slapp. Nothing here launches a labeling job.
"""
import base64
import hashlib
import json
import sys
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

import marshmallow as mm

from slapp.errors import SlappError
from slapp.labeling.job_labels import find_job
from slapp.utils.cli import run_main
from slapp.utils.files import write_bytes_atomically, write_json_atomically
from slapp.utils.query_utils import DbConnection, labeling_connection
from slapp.utils.schema import ArgSchema, ArgSchemaParser

# Keys of a per-ROI manifest that name no file.
VALUE_KEYS = ("experiment-id", "roi-id")
# The one file shared by every ROI of an experiment: uploaded once, its name prefixed.
FULL_VIDEO_KEY = "full-video-source-ref"
MANIFEST_NAME = "manifest.json"

MANIFESTS_QUERY = """
SELECT DISTINCT ON (tasks.roi_id) tasks.roi_id, manifests.manifest
FROM labeling_tasks AS tasks
LEFT JOIN roi_manifests AS manifests ON manifests.roi_id = tasks.roi_id
WHERE tasks.labeling_job_id = %s
ORDER BY tasks.roi_id, manifests.created_at DESC NULLS LAST, manifests.id DESC
"""


class ExportException(SlappError):
    """The job cannot be exported as asked."""


def _s3_uri(value: str) -> str:
    parsed = urlparse(value)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise mm.ValidationError("must be s3://bucket or s3://bucket/prefix")
    return value


class ExportGtSchema(ArgSchema):
    """Export a labeling job as a Ground Truth input manifest."""

    labeling_job = mm.fields.Str(required=True, metadata={
        "description": "the labeling job's name (labeling_jobs.name)"})
    output_manifest = mm.fields.Str(required=True, metadata={
        "description": "the JSON-lines manifest written here (with s3:// references when "
                       "--s3_uri is given); its directory must exist"})
    s3_uri = mm.fields.Str(dump_default=None, allow_none=True, validate=_s3_uri, metadata={
        "description": "s3://bucket/prefix to upload the artifacts and manifest.json to; "
                       "without it nothing is uploaded"})
    endpoint_url = mm.fields.Str(dump_default=None, allow_none=True, metadata={
        "description": "the S3 API's address, for a store other than Amazon's; boto3's "
                       "default (AWS) when not given"})


class ExportGtOutputSchema(mm.Schema):
    """What ``--output_json`` holds."""

    labeling_job = mm.fields.Str(required=True)
    n_rois = mm.fields.Int(required=True)
    output_manifest = mm.fields.Str(required=True)
    manifest_uri = mm.fields.Str(allow_none=True, metadata={
        "description": "where manifest.json was uploaded; null without --s3_uri"})
    n_uploaded = mm.fields.Int(required=True, metadata={"description": "objects uploaded"})


def job_manifests(dbconn: DbConnection, labeling_job_id: int) -> list[dict]:
    """The newest per-ROI manifest of every ROI of a job, by ROI id.

    Raises
    ------
    ExportException
        When a ROI has no artifacts (or the job no ROI).
    """
    rows = dbconn.query(MANIFESTS_QUERY, (labeling_job_id,))
    if not rows:
        raise ExportException("the labeling job has no ROIs")
    missing = [row["roi_id"] for row in rows if row["manifest"] is None]
    if missing:
        raise ExportException(
            f"{len(missing)} ROIs of the job have no artifacts (roi_manifests), e.g. ROI "
            f"{missing[0]}: write them with the artifacts step first")
    return [row["manifest"] for row in rows]


def jsonl_bytes(lines: list[dict]) -> bytes:
    """JSON lines, one compact object per line."""
    return "".join(json.dumps(line, separators=(",", ":")) + "\n"
                   for line in lines).encode("utf-8")


def s3_layout(manifests: list[dict], bucket: str, prefix: str) -> tuple[list[dict], dict]:
    """The original's keys: the S3 manifest lines and each object key's local file.

    Returns
    -------
    lines, uploads : list of dict, dict
        The manifest with ``s3://`` references; object key -> local path.

    Raises
    ------
    ExportException
        When two different files would get the same key.
    """
    lines, uploads = [], {}
    for manifest in manifests:
        line = {}
        for key, value in manifest.items():
            if key in VALUE_KEYS or not isinstance(value, str):
                line[key] = value
                continue
            name = PurePosixPath(value).name
            if key == FULL_VIDEO_KEY:
                name = f"{manifest['experiment-id']}_{name}"
            object_key = f"{prefix}/{name}" if prefix else name
            if uploads.setdefault(object_key, value) != value:
                raise ExportException(f"{uploads[object_key]} and {value} would both be "
                                      f"uploaded as s3://{bucket}/{object_key}")
            line[key] = f"s3://{bucket}/{object_key}"
        lines.append(line)
    return lines, uploads


def upload(client, bucket: str, key: str, body: bytes) -> None:
    """One object, its MD5 checked by the server (as the original's uploads were)."""
    md5 = base64.b64encode(hashlib.md5(body).digest()).decode("ascii")
    client.put_object(Bucket=bucket, Key=key, Body=body, ContentMD5=md5)


def export_gt(dbconn: DbConnection, job_name: str, output_manifest: str | Path,
              s3_uri: str | None = None, endpoint_url: str | None = None) -> dict:
    """Write (and upload) a job's Ground Truth input manifest.

    Parameters
    ----------
    dbconn : DbConnection
        The labeling database.
    job_name : str
        ``labeling_jobs.name``.
    output_manifest : str or Path
        The local JSON-lines manifest.
    s3_uri : str, optional
        ``s3://bucket/prefix``: upload there.
    endpoint_url : str, optional
        The S3 API's address.

    Returns
    -------
    dict
        As :class:`ExportGtOutputSchema` describes.
    """
    job = find_job(dbconn, job_name)
    manifests = job_manifests(dbconn, job["id"])
    destination = Path(output_manifest).absolute()
    if not destination.parent.is_dir():
        raise ExportException(f"the directory of --output_manifest, {destination.parent}, "
                              "does not exist")
    manifest_uri, n_uploaded = None, 0
    if s3_uri is None:
        lines = manifests
    else:
        import boto3  # only an upload needs it

        parsed = urlparse(s3_uri)
        bucket, prefix = parsed.netloc, parsed.path.strip("/")
        lines, uploads = s3_layout(manifests, bucket, prefix)
        missing = [path for path in uploads.values() if not Path(path).is_file()]
        if missing:
            raise ExportException(f"artifact {missing[0]} does not exist "
                                  f"({len(missing)} files missing)")
        from botocore.exceptions import BotoCoreError, ClientError

        manifest_key = f"{prefix}/{MANIFEST_NAME}" if prefix else MANIFEST_NAME
        try:
            client = boto3.client("s3", endpoint_url=endpoint_url)
            for key, path in uploads.items():
                upload(client, bucket, key, Path(path).read_bytes())
            upload(client, bucket, manifest_key, jsonl_bytes(lines))
        except (BotoCoreError, ClientError) as error:
            raise ExportException(f"upload to s3://{bucket} failed: {error}") from error
        manifest_uri, n_uploaded = f"s3://{bucket}/{manifest_key}", len(uploads) + 1
    write_bytes_atomically(destination, jsonl_bytes(lines))
    return {"labeling_job": job["name"], "n_rois": len(lines),
            "output_manifest": str(destination), "manifest_uri": manifest_uri,
            "n_uploaded": n_uploaded}


class ExportGt(ArgSchemaParser):
    """``python -m slapp.labeling.export_gt``: see the module docstring."""

    default_schema = ExportGtSchema
    default_output_schema = ExportGtOutputSchema

    def run(self, dbconn: DbConnection) -> dict:
        """Export, print one line and write ``--output_json``."""
        result = export_gt(dbconn, self.args["labeling_job"], self.args["output_manifest"],
                           self.args["s3_uri"], self.args["endpoint_url"])
        uploaded = (f"; {result['n_uploaded']} objects uploaded, manifest at "
                    f"{result['manifest_uri']}" if result["manifest_uri"] else "")
        print(f"labeling job {result['labeling_job']}: {result['n_rois']} ROIs in "
              f"{result['output_manifest']}{uploaded}")
        if self.args.get("output_json"):
            write_json_atomically(self.args["output_json"], self.get_output_json(result))
        return result


def main() -> None:
    """Parse the command line, connect to the labeling database and export."""
    command = ExportGt()
    with labeling_connection(interactive=True) as dbconn:
        command.run(dbconn)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_main(main, "export-gt"))
