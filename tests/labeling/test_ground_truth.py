"""Ground Truth compatibility: export (local and to moto's S3 server), import, merged jobs."""
import json

import boto3
import pytest
from loop_rows import make_job, make_run

from slapp.labeling.consolidate import consolidate
from slapp.labeling.export_gt import ExportException, export_gt
from slapp.labeling.import_gt import ImportException, import_gt

ARTIFACT_KEYS = ("source-ref", "roi-mask-source-ref", "video-source-ref", "max-source-ref",
                 "avg-source-ref", "trace-source-ref")
X = None  # a worker gave no annotation for this record


def roi_ids_of(dbconn, run_id):
    return [row["id"] for row in dbconn.query(
        "SELECT id FROM rois WHERE segmentation_run_id = %s ORDER BY suite2p_roi_index",
        (run_id,))]


def write_output_manifest(path, records, attribute="roi-label-job", job_name="job1"):
    """A Ground Truth output manifest as the original's Lambda left it."""
    lines = []
    for roi_id, annotations in records:
        labels = [1 for _, label in annotations if label == "cell"]
        lines.append({
            "experiment-id": 850000003, "roi-id": roi_id,
            "source-ref": f"s3://bucket/roi_{roi_id}.png",
            attribute: {"sourceData": f"s3://bucket/roi_{roi_id}.png",
                        "majorityLabel": "cell" if len(labels) >= 2 else "not cell",
                        "workerAnnotations": [{"workerId": worker, "roiLabel": label}
                                              for worker, label in annotations]},
            f"{attribute}-metadata": {"job-name": job_name, "type": "groundtruth/custom",
                                      "human-annotated": "yes"}})
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


@pytest.fixture
def rois(labeling_db):
    run_id, _ = make_run(labeling_db, 850000003, 8, features=False)
    return roi_ids_of(labeling_db, run_id)


def test_an_output_manifest_imports_into_labelers_and_labels(labeling_db, rois, tmp_path):
    manifest = write_output_manifest(tmp_path / "output.manifest", [
        (rois[0], [("private.us-west-2.111", "cell"), ("private.us-west-2.222", "cell"),
                   ("private.us-west-2.333", None)]),
        (rois[1], [("private.us-west-2.111", "not cell"),
                   ("private.us-west-2.222", "not cell"),
                   ("private.us-west-2.333", "cell")])])
    result = import_gt(labeling_db, manifest, "gt job")
    assert result["created_job"] and result["attribute"] == "roi-label-job"
    assert (result["n_records"], result["n_workers"], result["n_labels_stored"],
            result["n_timeouts"]) == (2, 3, 6, 1)
    job = labeling_db.query("SELECT * FROM labeling_jobs")[0]
    assert (job["name"], job["sampling"], job["labels_per_roi"], job["n_rois"]) == \
        ("gt job", "ground_truth", 3, 2)
    assert job["inputs"]["output_manifest"] == str(manifest)
    assert [row["roi_id"] for row in labeling_db.query(
        "SELECT roi_id FROM labeling_tasks ORDER BY roi_id")] == rois[:2]
    labelers = labeling_db.query("SELECT name, token_hash FROM labelers ORDER BY name")
    assert labelers == [{"name": f"private.us-west-2.{n}", "token_hash": None}
                        for n in (111, 222, 333)]
    labels = labeling_db.query(
        "SELECT tasks.roi_id, labelers.name, labels.label, labels.source FROM roi_labels "
        "AS labels JOIN labeling_tasks AS tasks ON tasks.id = labels.labeling_task_id JOIN "
        "labelers ON labelers.id = labels.labeler_id ORDER BY tasks.roi_id, labelers.name")
    assert [(row["roi_id"], row["name"][-3:], row["label"]) for row in labels] == [
        (rois[0], "111", "cell"), (rois[0], "222", "cell"), (rois[0], "333", None),
        (rois[1], "111", "not cell"), (rois[1], "222", "not cell"), (rois[1], "333", "cell")]
    assert {row["source"] for row in labels} == {"ground_truth"}

    again = import_gt(labeling_db, manifest, "gt job")
    assert (again["created_job"], again["n_labels_stored"], again["n_labels_unchanged"]) == \
        (False, 0, 6)
    assert labeling_db.query("SELECT count(*) AS n FROM roi_labels")[0]["n"] == 6
    consolidated = consolidate(labeling_db, "gt job")
    # the timed-out ROI has two labels: short of three, re-queued for one more
    assert (consolidated["n_cell"], consolidated["n_not_cell"], consolidated["n_too_few"],
            consolidated["n_requeued"]) == (0, 1, 1, 1)


def test_a_changed_annotation_replaces_the_stored_one(labeling_db, rois, tmp_path):
    first = write_output_manifest(tmp_path / "first.manifest", [(rois[0], [("w1", "cell")])])
    import_gt(labeling_db, first, "gt job")
    second = write_output_manifest(tmp_path / "second.manifest",
                                   [(rois[0], [("w1", "not cell")])])
    assert import_gt(labeling_db, second, "gt job")["n_labels_stored"] == 1
    rows = labeling_db.query("SELECT label, superseded_by FROM roi_labels ORDER BY id")
    assert [row["label"] for row in rows] == ["cell", "not cell"]
    assert rows[0]["superseded_by"] is not None and rows[1]["superseded_by"] is None


def test_the_original_merge_utils_two_jobs_case(labeling_db, rois, tmp_path):
    """merge_utils' two jobs over 8 ROIs by 3 workers: job 2 fills job 1's gaps, and the
    majority of exactly three labels becomes the expected one (0 not cell, 1 cell)."""
    workers_job1 = [[0, 1, X, 0, 1, X, 0, 1],
                    [1, X, 0, 1, X, 0, 1, 1],
                    [0, 0, 1, X, 1, 1, 0, 1]]
    job1_majority = [0, X, X, X, X, X, 0, 1]
    workers_job2 = [[X, X, 0, X, X, 1, X, X],
                    [X, 1, X, X, 1, X, X, X],
                    [X, X, X, 0, X, X, X, X]]
    expected_majority = [0, 1, 0, 0, 1, 1, 0, 1]
    name = {1: "cell", 0: "not cell"}

    def records(workers):
        found = []
        for record in range(8):
            annotations = [(worker, name[workers[worker][record]]) for worker in range(3)
                           if workers[worker][record] is not X]
            if annotations:
                found.append((rois[record], annotations))
        return found

    import_gt(labeling_db, write_output_manifest(tmp_path / "job1.manifest",
                                                 records(workers_job1), "myproject", "job1"),
              "merged-job")
    consolidate(labeling_db, "merged-job", min_labels=3)
    assert consensus_by_roi(labeling_db, rois) == [name.get(value) for value in job1_majority]
    result = import_gt(labeling_db, write_output_manifest(
        tmp_path / "job2.manifest", records(workers_job2), "myproject", "job2"), "merged-job")
    assert (result["n_tasks_added"], result["n_labels_stored"]) == (0, 5)
    consolidate(labeling_db, "merged-job", min_labels=3)
    assert consensus_by_roi(labeling_db, rois) == [name[value] for value in expected_majority]
    counts = labeling_db.query("SELECT n_labels FROM label_consensus ORDER BY roi_id")
    assert [row["n_labels"] for row in counts] == [3] * 8


def consensus_by_roi(dbconn, rois):
    found = {row["roi_id"]: row["label"] for row in dbconn.query(
        "SELECT roi_id, label FROM label_consensus")}
    return [found[roi_id] for roi_id in rois]


@pytest.mark.parametrize("record, message", [
    ({"a": 1}, "line 1 has no 'roi-id'"),
    ({"roi-id": 1, "x-metadata": {}, "y-metadata": {}},
     "line 1 (roi-id 1) has 2 keys ending in '-metadata', expected one"),
    ({"roi-id": 1, "x-metadata": {}}, "has x-metadata but no 'x' object"),
    ({"roi-id": 1, "x": {"workerAnnotations": [{"workerId": "w", "roiLabel": "maybe"}]},
      "x-metadata": {}}, "roiLabel 'maybe' is not 'cell', 'not cell' or null"),
])
def test_bad_lines_are_refused_and_nothing_is_stored(labeling_db, rois, tmp_path, record,
                                                     message):
    path = tmp_path / "bad.manifest"
    good = {"roi-id": rois[0], "x": {"workerAnnotations": [{"workerId": "w",
                                                            "roiLabel": "cell"}]},
            "x-metadata": {}}
    path.write_text(json.dumps(record) + "\n" + json.dumps(good) + "\n")
    with pytest.raises(ImportException, match=message.replace("(", r"\(").replace(")", r"\)")):
        import_gt(labeling_db, path, "gt job")
    assert labeling_db.query("SELECT count(*) AS n FROM labeling_jobs")[0]["n"] == 0


def test_unknown_rois_are_refused(labeling_db, rois, tmp_path):
    path = write_output_manifest(tmp_path / "o.manifest", [(999999, [("w", "cell")])])
    with pytest.raises(ImportException, match="roi-id 999999 is not a stored ROI"):
        import_gt(labeling_db, path, "gt job")
    assert labeling_db.query("SELECT count(*) AS n FROM labelers")[0]["n"] == 0


def test_the_import_command(run_cli, labeling_db, rois, tmp_path):
    path = write_output_manifest(tmp_path / "o.manifest", [(rois[0], [("w1", "cell"),
                                                                      ("w2", None)])])
    done = run_cli("slapp.labeling.import_gt", "--output_manifest", path, "--labeling_job",
                   "gt", "--output_json", tmp_path / "out.json")
    assert done.returncode == 0, done.stderr
    assert "created labeling job gt" in done.stdout and "1 timeouts" in done.stdout
    assert json.loads((tmp_path / "out.json").read_text())["n_labels_stored"] == 2


# --- export ---------------------------------------------------------------------------


@pytest.fixture
def job_with_artifacts(labeling_db, rois, tmp_path):
    """A job of three ROIs, each with a roi_manifests row and its small files."""
    _, tasks = make_job(labeling_db, "export job", rois[:3])
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    movie = artifacts / "movie.h5"
    movie.write_bytes(b"the full movie")
    manifests = {}
    for roi_id in rois[:3]:
        manifest = {"experiment-id": 850000003, "roi-id": roi_id,
                    "full-video-source-ref": str(movie)}
        for key in ARTIFACT_KEYS:
            path = artifacts / f"roi_{roi_id}_{key}.bin"
            path.write_bytes(f"{key} of {roi_id}".encode())
            manifest[key] = str(path)
        for version, content in (("old", {**manifest, "source-ref": "/gone.png"}),
                                 ("new", manifest)):
            labeling_db.insert(
                "INSERT INTO roi_manifests (roi_id, manifest, artifact_dir, artifact_digest, "
                "code_version) VALUES (%s, %s, %s, %s, 'code')",
                (roi_id, json.dumps(content), str(artifacts), version))
        manifests[roi_id] = manifest
    return manifests


def test_export_writes_the_newest_manifest_of_each_roi(labeling_db, job_with_artifacts,
                                                       tmp_path):
    result = export_gt(labeling_db, "export job", tmp_path / "rois.jsonl")
    lines = [json.loads(line) for line in (tmp_path / "rois.jsonl").read_text().splitlines()]
    assert lines == [job_with_artifacts[roi_id] for roi_id in sorted(job_with_artifacts)]
    assert (result["n_rois"], result["manifest_uri"], result["n_uploaded"]) == (3, None, 0)


def test_export_refuses_rois_without_artifacts(labeling_db, rois, tmp_path):
    make_job(labeling_db, "bare job", rois[:2])
    with pytest.raises(ExportException, match="2 ROIs of the job have no artifacts"):
        export_gt(labeling_db, "bare job", tmp_path / "rois.jsonl")
    assert not (tmp_path / "rois.jsonl").exists()


@pytest.fixture
def s3_server(monkeypatch):
    """moto's S3 API as a real HTTP server on 127.0.0.1, with a bucket."""
    from moto.server import ThreadedMotoServer

    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                        ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(name, value)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="labels")
    yield endpoint
    server.stop()


def test_the_upload_uses_the_original_key_layout(run_cli, labeling_db, job_with_artifacts,
                                                 s3_server, tmp_path):
    done = run_cli("slapp.labeling.export_gt", "--labeling_job", "export job",
                   "--output_manifest", tmp_path / "rois.jsonl", "--s3_uri",
                   "s3://labels/gt/round1", "--endpoint_url", s3_server,
                   env={"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1"})
    assert done.returncode == 0, done.stderr
    assert "s3://labels/gt/round1/manifest.json" in done.stdout
    client = boto3.client("s3", endpoint_url=s3_server)
    keys = sorted(item["Key"] for item in client.list_objects_v2(Bucket="labels")["Contents"])
    expected = sorted(["gt/round1/manifest.json", "gt/round1/850000003_movie.h5"]
                      + [f"gt/round1/roi_{roi_id}_{key}.bin" for roi_id in job_with_artifacts
                         for key in ARTIFACT_KEYS])
    assert keys == expected
    body = client.get_object(Bucket="labels", Key="gt/round1/manifest.json")["Body"].read()
    uploaded = [json.loads(line) for line in body.decode().splitlines()]
    assert uploaded == [json.loads(line) for line in
                        (tmp_path / "rois.jsonl").read_text().splitlines()]
    for line in uploaded:
        local = job_with_artifacts[line["roi-id"]]
        assert line["experiment-id"] == 850000003
        assert line["full-video-source-ref"] == "s3://labels/gt/round1/850000003_movie.h5"
        for key in ARTIFACT_KEYS:
            bucket_key = line[key].removeprefix("s3://labels/")
            content = client.get_object(Bucket="labels", Key=bucket_key)["Body"].read()
            assert content == open(local[key], "rb").read()


def test_an_unreachable_store_is_one_line(run_cli, labeling_db, job_with_artifacts,
                                          tmp_path):
    done = run_cli("slapp.labeling.export_gt", "--labeling_job", "export job",
                   "--output_manifest", tmp_path / "rois.jsonl", "--s3_uri", "s3://labels/x",
                   "--endpoint_url", "http://127.0.0.1:9",
                   env={"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1", "AWS_MAX_ATTEMPTS": "1"})
    assert done.returncode == 1
    assert done.stderr.startswith("slapp export-gt: error: upload to s3://labels failed")
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "rois.jsonl").exists()
