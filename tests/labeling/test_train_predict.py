"""train and predict: Suite2P's own classifier file, its model row, predictions once per ROI."""
import hashlib
import json

import numpy as np
import pytest
from loop_rows import labeled_job, make_run  # noqa: F401 (a fixture)

from slapp.labeling.classifier_file import (ClassifierFileException, classifier_bytes,
                                            classifier_parameters,
                                            suite2p_classification_settings)
from slapp.labeling.consolidate import consolidate
from slapp.labeling.predict import PredictException, predict, predictions_for_runs
from slapp.labeling.train import cross_validate, fold_assignment, train


@pytest.fixture
def trained(labeling_db, labeled_job, tmp_path):
    """The labeled job consolidated and trained (in this process: importing Suite2P
    takes long, so only the commands' own tests start them)."""
    consolidate(labeling_db, labeled_job["job"])
    result = train(labeling_db, [labeled_job["job"]], tmp_path / "classifier.npy")
    return {**labeled_job, "train": result, "file": tmp_path / "classifier.npy"}


def test_train_writes_suite2ps_file_and_a_model_row(labeling_db, trained):
    from suite2p.classification import Classifier

    result = trained["train"]
    model = labeling_db.query("SELECT * FROM classifier_models")[0]
    assert model["id"] == result["classifier_model_id"]
    content = trained["file"].read_bytes()
    assert model["file_digest"] == hashlib.sha256(content).hexdigest()
    assert model["file_path"] == str(trained["file"])
    assert model["feature_keys"] == ["skew", "compact", "npix_norm"]
    assert model["n_rois"] == 150 and model["n_labels"] == 450
    assert model["strategy"] == "majority"
    assert model["labeling_job_ids"] == [labeling_db.query(
        "SELECT id FROM labeling_jobs")[0]["id"]]
    assert len(model["code_version"]) == 64
    assert 0.6 < model["cv_accuracy"] <= 1 and 0.5 < model["cv_f1"] <= 1
    assert model["details"]["cv_folds"] == 5
    # the file is Suite2P's: the dictionary its GUI saves, which its Classifier loads
    document = np.load(trained["file"], allow_pickle=True).item()
    assert set(document) == {"stats", "iscell", "keys"}
    assert document["stats"].shape == (150, 3) and document["iscell"].dtype == np.float32
    consensus = {row["roi_id"]: row["label"] == "cell" for row in labeling_db.query(
        "SELECT roi_id, label FROM label_consensus")}
    assert document["iscell"].tolist() == [float(consensus[roi_id])
                                            for roi_id in sorted(consensus)]
    assert Classifier(str(trained["file"])).loaded


@pytest.mark.slow
def test_the_train_command(labeling_db, labeled_job, run_cli, tmp_path):
    consolidate(labeling_db, labeled_job["job"])
    output = tmp_path / "train.json"
    done = run_cli("slapp.labeling.train", "--labeling_jobs", labeled_job["job"],
                   "--output_classifier", tmp_path / "classifier.npy", "--feature_keys",
                   "skew", "compact", "npix_norm", "std", "--output_json", output)
    assert done.returncode == 0, done.stderr
    result = json.loads(output.read_text())
    assert f"classifier model {result['classifier_model_id']}: 150 ROIs" in done.stdout
    assert result["feature_keys"] == ["skew", "compact", "npix_norm", "std"]
    assert np.load(tmp_path / "classifier.npy", allow_pickle=True).item()["keys"] == [
        "skew", "compact", "npix_norm", "std"]


def test_the_stored_cross_validation_is_reproduced(labeling_db, trained):
    model = labeling_db.query("SELECT * FROM classifier_models")[0]
    document = np.load(trained["file"], allow_pickle=True).item()
    probabilities, _ = cross_validate(document["stats"], document["iscell"],
                                      document["keys"], model["details"]["cv_folds"],
                                      model["details"]["random_seed"])
    accuracy = ((probabilities > 0.5) == document["iscell"].astype(bool)).mean()
    assert accuracy == pytest.approx(model["cv_accuracy"], abs=1e-6)


def test_predictions_are_suite2ps_and_stored_once(labeling_db, trained):
    from suite2p.classification import Classifier

    model_id = trained["train"]["classifier_model_id"]
    other_run, _ = make_run(labeling_db, 850000009, 40, seed=5)
    result = predict(labeling_db, model_id, [other_run])
    assert (result["n_rois"], result["n_stored"]) == (40, 40)
    stored = predictions_for_runs(labeling_db, model_id, [other_run])
    assert [row["suite2p_roi_index"] for row in stored] == list(range(40))
    # Suite2P's Classifier, loading the file itself, gives the stored probabilities
    rois = labeling_db.query("SELECT id, skew, compact, npix_norm FROM rois WHERE "
                             "segmentation_run_id = %s ORDER BY suite2p_roi_index", (other_run,))
    stat = [{key: float(roi[key]) for key in ("skew", "compact", "npix_norm")} for roi in rois]
    expected = Classifier(str(trained["file"])).predict_proba(stat)
    assert np.allclose([row["probability"] for row in stored], expected, atol=1e-6)
    assert [row["is_cell"] for row in stored] == [p > 0.5 for p in
                                                 [row["probability"] for row in stored]]
    assert result["n_cells"] == sum(row["is_cell"] for row in stored)

    again = predict(labeling_db, model_id, [other_run], threshold=0.9)
    assert (again["n_rois"], again["n_stored"]) == (40, 0)
    assert predictions_for_runs(labeling_db, model_id, [other_run]) == stored
    assert labeling_db.query("SELECT count(*) AS n FROM roi_predictions")[0]["n"] == 40


@pytest.mark.slow
def test_the_predict_command_stores_nothing_new_on_a_rerun(labeling_db, trained, run_cli,
                                                           tmp_path):
    model_id = trained["train"]["classifier_model_id"]
    first = predict(labeling_db, model_id, [trained["run_id"]])
    output = tmp_path / "predict.json"
    again = run_cli("slapp.labeling.predict", "--classifier_model_id", model_id,
                    "--segmentation_run_id", trained["run_id"], "--output_json", output)
    assert again.returncode == 0, again.stderr
    assert "0 predictions stored now, 150 were stored before" in again.stdout
    assert json.loads(output.read_text())["n_cells"] == first["n_cells"]
    assert labeling_db.query("SELECT count(*) AS n FROM roi_predictions")[0]["n"] == 150


def test_a_threshold_decides_is_cell(labeling_db, trained):
    model_id = trained["train"]["classifier_model_id"]
    predict(labeling_db, model_id, [trained["run_id"]], threshold=0.8)
    stored = predictions_for_runs(labeling_db, model_id, [trained["run_id"]])
    assert all(row["is_cell"] == (row["probability"] > 0.8) for row in stored)
    assert all(row["threshold"] == pytest.approx(0.8) for row in stored)


def test_a_changed_classifier_file_is_refused(labeling_db, trained):
    trained["file"].write_bytes(trained["file"].read_bytes() + b"\0")
    with pytest.raises(PredictException, match="changed since it was trained"):
        predict(labeling_db, trained["train"]["classifier_model_id"], [trained["run_id"]])
    assert labeling_db.query("SELECT count(*) AS n FROM roi_predictions")[0]["n"] == 0


@pytest.mark.slow
def test_training_without_consensus_is_refused(labeling_db, labeled_job, run_cli, tmp_path):
    done = run_cli("slapp.labeling.train", "--labeling_jobs", labeled_job["job"],
                   "--output_classifier", tmp_path / "c.npy")
    assert done.returncode == 1
    assert "run slapp.labeling.consolidate first" in done.stderr
    assert list(tmp_path.iterdir()) == []
    assert labeling_db.query("SELECT count(*) AS n FROM classifier_models")[0]["n"] == 0


def test_too_few_or_one_class_is_refused():
    with pytest.raises(ClassifierFileException, match="too few"):
        classifier_bytes(np.ones((50, 3)), np.arange(50) % 2, ["skew", "compact", "npix_norm"])
    with pytest.raises(ClassifierFileException, match="one class"):
        classifier_bytes(np.ones((150, 3)), np.ones(150), ["skew", "compact", "npix_norm"])


def test_folds_are_stratified():
    iscell = np.array([1] * 30 + [0] * 70, dtype=np.float32)
    assignment = fold_assignment(iscell, 5, seed=3)
    for fold in range(5):
        assert (iscell[assignment == fold] == 1).sum() == 6
        assert (assignment == fold).sum() == 20


def test_segment_settings_and_digest_parameters(trained, tmp_path):
    settings = suite2p_classification_settings(trained["file"])
    assert settings == {"classifier_path": str(trained["file"]),
                        "use_builtin_classifier": False}
    assert classifier_parameters(None) == {}
    assert classifier_parameters(trained["file"]) == {
        "classifier_sha256": trained["train"]["file_digest"]}
    broken = tmp_path / "broken.npy"
    broken.write_bytes(b"not numpy")
    with pytest.raises(ClassifierFileException, match="not a Suite2P classifier file"):
        suite2p_classification_settings(broken)
    with pytest.raises(ClassifierFileException, match="does not exist"):
        suite2p_classification_settings(tmp_path / "missing.npy")


@pytest.mark.slow
def test_predict_classifies_the_counted_runs_of_a_manifest(labeling_db, trained, run_cli,
                                                           tmp_path):
    from stored_runs import insert_run, random_masks

    from slapp.db.runs import RunParameters

    parameters = RunParameters.defaults(suite2p_version="1.1.0")
    rng = np.random.default_rng(4)
    counted = insert_run(labeling_db, 850000020, random_masks(rng, (32, 48), 12),
                         ophys_segmentation_commit_hash=parameters.code_version,
                         parameters_digest=parameters.digest(40), nbinned=40)
    other_parameters = insert_run(labeling_db, 850000020, random_masks(rng, (32, 48), 5),
                                  seed=1, ophys_segmentation_commit_hash=parameters.code_version)
    for run_id in (counted, other_parameters):
        labeling_db.execute("UPDATE rois SET npix_norm = 1.0 WHERE segmentation_run_id = %s",
                            (run_id,))
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"manifest": [
        {"experiment_id": 850000020, "nbinned": 40, "input_video": "/movies/a.h5"},
        {"experiment_id": 850000021, "nbinned": 40, "input_video": "/movies/b.h5"}]}))
    output = tmp_path / "predict.json"
    done = run_cli("slapp.labeling.predict", "--classifier_model_id",
                   trained["train"]["classifier_model_id"], "--manifest_json", manifest,
                   "--suite2p_version", "1.1.0", "--output_json", output)
    assert done.returncode == 0, done.stderr
    result = json.loads(output.read_text())
    assert result["segmentation_run_ids"] == [counted]
    assert (result["n_rois"], result["n_stored"], result["n_entries_not_done"]) == (12, 12, 1)
    assert "1 entries have no counted run" in done.stdout
    stored = predictions_for_runs(labeling_db, trained["train"]["classifier_model_id"],
                                  [counted, other_parameters])
    assert {row["segmentation_run_id"] for row in stored} == {counted}


def test_predict_needs_one_way_to_name_runs(run_cli, labeling_db, tmp_path):
    done = run_cli("slapp.labeling.predict", "--classifier_model_id", "1")
    assert done.returncode == 1
    assert done.stderr.strip() == ("slapp predict: error: invalid input: give one of "
                                   "--segmentation_run_id, --manifest_json, "
                                   "--experiment_selection_id")


def test_rois_without_stored_features_are_named(labeling_db, labeled_job, tmp_path):
    from slapp.labeling.train import TrainException

    consolidate(labeling_db, labeled_job["job"])
    labeling_db.execute("UPDATE rois SET npix_norm = NULL")
    with pytest.raises(TrainException, match="none of the 150 labeled ROIs has stored skew, "
                                             "compact, npix_norm"):
        train(labeling_db, [labeled_job["job"]], tmp_path / "c.npy")
    assert list(tmp_path.iterdir()) == []


def test_suite2ps_pipeline_classification_gives_the_stored_probabilities(labeling_db, trained):
    """What segment --classifier_path runs (suite2p.classification.classify, which reads
    only skew, npix_norm and compact of each ROI's stat) agrees with predict."""
    from suite2p.classification import classify

    model_id = trained["train"]["classifier_model_id"]
    predict(labeling_db, model_id, [trained["run_id"]])
    stored = predictions_for_runs(labeling_db, model_id, [trained["run_id"]])
    rois = labeling_db.query("SELECT * FROM rois WHERE segmentation_run_id = %s "
                             "ORDER BY suite2p_roi_index", (trained["run_id"],))
    stat = np.array([{key: float(roi[key]) for key in ("skew", "compact", "npix_norm", "std",
                                                       "footprint", "radius")}
                     for roi in rois])
    iscell = classify(stat=stat, classfile=suite2p_classification_settings(
        trained["file"])["classifier_path"])
    assert np.allclose(iscell[:, 1], [row["probability"] for row in stored], atol=1e-6)
    assert (iscell[:, 0] > 0.5).tolist() == [row["is_cell"] for row in stored]
