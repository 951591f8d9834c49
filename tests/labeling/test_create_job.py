"""python -m slapp.labeling.create_job: jobs and tasks in the embedded database."""
import json

import numpy as np
import pytest
from stored_runs import insert_run, random_masks

from slapp.labeling.jobs import LabelingJobException, create_job

SHAPE = (64, 64)


@pytest.fixture
def two_runs(labeling_db):
    """Two runs of two experiments, 30 and 20 ROIs."""
    rng = np.random.default_rng(0)
    return [insert_run(labeling_db, 850517344 + index, random_masks(rng, SHAPE, count),
                       video_shape=SHAPE, seed=index)
            for index, count in enumerate((30, 20))]


def _tasks(dbconn, job_id):
    return dbconn.query("SELECT roi_id, stratum, probability FROM labeling_tasks "
                        "WHERE labeling_job_id = %s ORDER BY id", (job_id,))


def test_cli_creates_a_job_and_prints_its_id(labeling_db, two_runs, run_cli, tmp_path):
    output = tmp_path / "job.json"
    result = run_cli("slapp.labeling.create_job", "--name", "pilot", "--segmentation_run_ids",
                     *two_runs, "--sampling", "random", "--n_rois", 12, "--random_seed", 5,
                     "--output_json", output)
    assert result.returncode == 0, result.stderr
    written = json.loads(output.read_text())
    assert written == {"labeling_job_id": 1, "n_tasks": 12}
    assert result.stdout.startswith("labeling job 1 'pilot': 12 ROIs")
    job = labeling_db.query("SELECT * FROM labeling_jobs")[0]
    assert (job["name"], job["labels_per_roi"], job["sampling"], job["random_seed"],
            job["n_rois"], job["segmentation_run_ids"]) == ("pilot", 3, "random", 5, 12,
                                                            two_runs)
    tasks = _tasks(labeling_db, 1)
    run_rois = {row["id"] for row in labeling_db.query(
        "SELECT id FROM rois WHERE segmentation_run_id = ANY(%s)", (two_runs,))}
    assert len({task["roi_id"] for task in tasks}) == 12 and {
        task["roi_id"] for task in tasks} <= run_rois


def test_the_same_name_and_inputs_find_the_job(labeling_db, two_runs, run_cli):
    args = ["--name", "pilot", "--segmentation_run_ids", *two_runs, "--sampling",
            "stratified", "--n_rois", 16, "--random_seed", 1]
    first = run_cli("slapp.labeling.create_job", *args)
    tasks = _tasks(labeling_db, 1)
    again = run_cli("slapp.labeling.create_job", *args)
    assert again.returncode == 0, again.stderr
    assert "labeling job 1 'pilot' already exists with these inputs (16 ROIs)" in again.stdout
    assert first.returncode == 0 and _tasks(labeling_db, 1) == tasks
    assert labeling_db.query("SELECT count(*) AS n FROM labeling_jobs")[0]["n"] == 1


def test_the_same_name_with_other_inputs_is_refused(labeling_db, two_runs, run_cli):
    assert run_cli("slapp.labeling.create_job", "--name", "pilot", "--segmentation_run_ids",
                   two_runs[0]).returncode == 0
    refused = run_cli("slapp.labeling.create_job", "--name", "pilot",
                      "--segmentation_run_ids", *two_runs)
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        "slapp create-job: error: labeling job 'pilot' exists (id 1) with other inputs: choose "
        "another name, or ask with the inputs it was created with"]
    assert len(_tasks(labeling_db, 1)) == 30


def test_a_missing_run_is_refused_and_nothing_written(labeling_db, two_runs, run_cli):
    refused = run_cli("slapp.labeling.create_job", "--name", "x", "--segmentation_run_ids",
                      two_runs[0], 99)
    assert refused.returncode == 1
    assert refused.stderr.strip() == ("slapp create-job: error: no segmentation run 99 in the "
                                      "labeling database")
    assert labeling_db.query("SELECT count(*) AS n FROM labeling_jobs")[0]["n"] == 0


def test_uncertain_needs_a_classifier(labeling_db, two_runs, run_cli):
    refused = run_cli("slapp.labeling.create_job", "--name", "x", "--segmentation_run_ids",
                      *two_runs, "--sampling", "uncertain")
    assert refused.returncode == 1 and len(refused.stderr.strip().splitlines()) == 1
    assert "needs a trained classifier" in refused.stderr


def test_uncertain_reads_the_newest_classifier(labeling_db, two_runs):
    roi_ids = [row["id"] for row in labeling_db.query("SELECT id FROM rois ORDER BY id")]
    models = []
    for _ in range(2):
        models.append(labeling_db.insert(
            "INSERT INTO classifier_models (labeling_job_ids, strategy, n_labels, n_rois, "
            "feature_keys, file_path, file_digest, code_version) VALUES "
            "('{}', 'majority', 9, 3, '{skew}', '/m.npy', 'ab', 'cd') RETURNING id")[0]["id"])
    rng = np.random.default_rng(4)
    statements = []
    for model in models:
        for roi_id, probability in zip(roi_ids, rng.uniform(0, 1, len(roi_ids))):
            statements.append(("INSERT INTO roi_predictions (roi_id, classifier_model_id, "
                               "probability, is_cell) VALUES (%s, %s, %s, %s)",
                               (roi_id, model, float(probability), bool(probability > 0.5))))
    labeling_db.bulk_insert(statements)
    outcome = create_job(labeling_db, "u", two_runs, "uncertain", 5, 3, 0, 4)
    newest = {row["roi_id"]: row["probability"] for row in labeling_db.query(
        "SELECT roi_id, probability FROM roi_predictions WHERE classifier_model_id = %s",
        (models[-1],))}
    expected = sorted(newest, key=lambda roi: (abs(newest[roi] - 0.5), roi))[:5]
    assert [task["roi_id"] for task in _tasks(labeling_db, outcome.labeling_job_id)] == expected
    job = labeling_db.query("SELECT classifier_model_id FROM labeling_jobs")[0]
    assert job["classifier_model_id"] == models[-1]


def test_stratified_tasks_record_their_bin_and_probability(labeling_db, two_runs):
    outcome = create_job(labeling_db, "s", two_runs, "stratified", None, 3, 0, 2)
    probabilities = {row["id"]: row["cell_probability"]
                     for row in labeling_db.query("SELECT id, cell_probability FROM rois")}
    tasks = _tasks(labeling_db, outcome.labeling_job_id)
    assert {task["stratum"] for task in tasks} == {0, 1}
    for task in tasks:
        assert task["probability"] == pytest.approx(probabilities[task["roi_id"]])
        assert task["stratum"] == int(task["probability"] >= 0.5)


def test_runs_without_rois_make_no_job(labeling_db):
    run_id = insert_run(labeling_db, 1, [], video_shape=SHAPE)
    with pytest.raises(LabelingJobException, match="no ROI"):
        create_job(labeling_db, "empty", [run_id], "all", None, 3, 0, 4)
    assert labeling_db.query("SELECT count(*) AS n FROM labeling_jobs")[0]["n"] == 0


def _counted_run(dbconn, experiment_id, nbinned, seed):
    from slapp.db.runs import RunParameters
    parameters = RunParameters.defaults()
    return insert_run(dbconn, experiment_id, random_masks(np.random.default_rng(seed), SHAPE, 5),
                      video_shape=SHAPE, seed=seed, nbinned=nbinned,
                      ophys_segmentation_commit_hash=parameters.code_version,
                      parameters_digest=parameters.digest(nbinned))


def test_a_manifest_gives_its_counted_runs(labeling_db, run_cli, tmp_path):
    counted = _counted_run(labeling_db, 111, 7, 1)
    insert_run(labeling_db, 111, random_masks(np.random.default_rng(2), SHAPE, 4),
               video_shape=SHAPE, seed=2)  # other code version and parameters: not counted
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"manifest": [
        {"experiment_id": 111, "nbinned": 7, "input_video": "/m/111.h5", "log_level": "INFO"},
        {"experiment_id": 222, "nbinned": 7, "input_video": "/m/222.h5", "log_level": "INFO"}]}))
    result = run_cli("slapp.labeling.create_job", "--name", "batch", "--manifest_json",
                     manifest, "--output_json", tmp_path / "out.json")
    assert result.returncode == 0, result.stderr
    assert "1 of 2 entries of manifest_json" in result.stdout
    assert json.loads((tmp_path / "out.json").read_text())["n_tasks"] == 5
    job = labeling_db.query("SELECT segmentation_run_ids, inputs FROM labeling_jobs")[0]
    assert job["segmentation_run_ids"] == [counted]
    assert job["inputs"]["source"]["manifest_json"] == str(manifest.resolve())
    other = run_cli("slapp.labeling.create_job", "--name", "batch2", "--manifest_json",
                    manifest, "--threshold_scaling", 0.9)
    assert other.returncode == 1 and "nothing to label" in other.stderr


def test_a_selection_gives_its_counted_runs(labeling_db, run_cli):
    from stored_runs import insert_selection
    selection = insert_selection(labeling_db, [111, 222])
    runs = [_counted_run(labeling_db, experiment, 9, seed)
            for seed, experiment in enumerate((111, 222), 3)]
    result = run_cli("slapp.labeling.create_job", "--name", "sel", "--experiment_selection_id",
                     selection, "--sampling", "all")
    assert result.returncode == 0, result.stderr
    job = labeling_db.query("SELECT segmentation_run_ids FROM labeling_jobs")[0]
    assert job["segmentation_run_ids"] == sorted(runs)
    assert len(_tasks(labeling_db, 1)) == 10


def test_exactly_one_source_of_runs(labeling_db, run_cli, tmp_path):
    result = run_cli("slapp.labeling.create_job", "--name", "x", "--segmentation_run_ids", 1,
                     "--experiment_selection_id", 1)
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert "give --segmentation_run_ids, --manifest_json or --experiment_selection_id" in (
        result.stderr)


def test_a_fractional_count_is_refused(labeling_db, two_runs, run_cli):
    result = run_cli("slapp.labeling.create_job", "--name", "x", "--segmentation_run_ids",
                     *two_runs, "--n_rois", 2.5)
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert "n_rois" in result.stderr
    assert labeling_db.query("SELECT count(*) AS n FROM labeling_jobs")[0]["n"] == 0
