"""slapp.export.nwb: real NWB files from runs in the embedded database, read back with pynwb."""
import json
import os

import numpy as np
import pytest
from stored_runs import (MODEL_DIGEST, SETTINGS, insert_model, insert_run, insert_selection,
                         random_masks)

from slapp.db.runs import RunParameters
from slapp.segmentation.settings import Suite2pOptions

pynwb = pytest.importorskip("pynwb")
nwbinspector = pytest.importorskip("nwbinspector")

from slapp.export.nwb import (PLANE_SEGMENTATION_NAME, PROVENANCE_NAME,  # noqa: E402
                              build_nwbfile, export_run)
from slapp.export.run_record import load_rois, load_run, provenance  # noqa: E402

EXPERIMENT = 850517344
QUERIES = ("SELECT oe.id AS exp_id FROM ophys_experiments oe WHERE oe.workflow_state = 'qc'",
           "SELECT id AS exp_id FROM ophys_experiments WHERE name LIKE '%é%'")
SHAPE = (32, 48)


# The runs a selection export counts: code version VERSION (TRANSFORM_HASH), segment's
# default options, Suite2P 1.1.0, nbinned 2 (insert_run's).
VERSION = "nwb-test-version"
PARAMETERS = RunParameters(VERSION, Suite2pOptions.defaults(), "1.1.0")
COUNTED = {"ophys_segmentation_commit_hash": VERSION, "parameters_digest": PARAMETERS.digest(2)}
PINNED = {"TRANSFORM_HASH": VERSION}


@pytest.fixture
def stored_run(labeling_db):
    """A selection and a run of 7 ROIs of 50 frames made from its manifest."""
    selection_id = insert_selection(labeling_db, [EXPERIMENT, 850517345], QUERIES, seed=7)
    masks = random_masks(np.random.default_rng(3), SHAPE, 7)
    run_id = insert_run(labeling_db, EXPERIMENT, masks, video_shape=SHAPE,
                        experiment_selection_id=selection_id,
                        manifest_path="/batches/one/manifest.json")
    return selection_id, run_id, masks


def _read(path):
    io = pynwb.NWBHDF5IO(str(path), mode="r")
    return io, io.read()


def _serious_findings(path):
    from nwbinspector import Importance, inspect_nwbfile
    return [f"{message.importance.name} {message.check_function_name}: {message.message}"
            for message in inspect_nwbfile(nwbfile_path=str(path))
            if message is not None and message.importance in (
                Importance.CRITICAL, Importance.BEST_PRACTICE_VIOLATION)]


def test_masks_traces_and_columns_match_the_database(labeling_db, stored_run, tmp_path):
    selection_id, run_id, masks = stored_run
    path = tmp_path / "run.nwb"
    exported = export_run(labeling_db, run_id, path)
    assert exported == {"experiment_id": EXPERIMENT, "segmentation_run_id": run_id,
                        "n_rois": 7, "nwb_path": str(path),
                        "experiment_selection_id": selection_id}
    rows = labeling_db.query("SELECT * FROM rois WHERE segmentation_run_id = %s "
                             "ORDER BY suite2p_roi_index", (run_id,))
    io, nwbfile = _read(path)
    with io:
        ophys = nwbfile.processing["ophys"]
        plane = ophys["ImageSegmentation"][PLANE_SEGMENTATION_NAME]
        assert len(plane) == 7
        for index, (row, (mask_rows, mask_cols, weights)) in enumerate(zip(rows, masks)):
            image = np.zeros(SHAPE, np.float32)
            for x, y, weight in plane["pixel_mask"][index]:
                image[y, x] = weight
            expected = np.zeros(SHAPE, np.float32)
            expected[mask_rows, mask_cols] = weights
            np.testing.assert_array_equal(image, expected)
            assert plane["labeling_roi_id"][index] == row["id"]
            assert plane["suite2p_roi_index"][index] == row["suite2p_roi_index"]
            assert bool(plane["is_cell"][index]) == row["is_cell"]
            assert plane["cell_probability"][index] == pytest.approx(row["cell_probability"])
            for name in ("npix", "centroid_row", "centroid_col", "radius", "aspect_ratio",
                         "compactness", "skew"):
                assert plane[name][index] == pytest.approx(row[name])
        fluorescence = ophys["Fluorescence"]
        raw, neuropil = fluorescence["raw"], fluorescence["neuropil"]
        assert raw.rate == neuropil.rate == SETTINGS["settings"]["fs"]
        assert raw.data.shape == (50, 7)
        for series, column in ((raw, "trace"), (neuropil, "neuropil_trace")):
            stored = np.array([row[column] for row in rows], np.float32).T
            np.testing.assert_array_equal(series.data[:], stored)
        assert list(raw.rois.data[:]) == list(range(7))


def test_provenance_is_inside_the_file(labeling_db, stored_run, tmp_path):
    selection_id, run_id, _ = stored_run
    path = tmp_path / "run.nwb"
    export_run(labeling_db, run_id, path)
    run = labeling_db.query("SELECT * FROM segmentation_runs WHERE id = %s", (run_id,))[0]
    io, nwbfile = _read(path)
    with io:
        assert nwbfile.session_id == str(EXPERIMENT)
        assert run["ophys_segmentation_commit_hash"] in nwbfile.source_script
        record = json.loads(nwbfile.scratch[PROVENANCE_NAME].data)
    stored = record["segmentation_run"]
    assert stored["segmentation_run_id"] == run_id
    assert stored["ophys_experiment_id"] == EXPERIMENT
    for key in ("ophys_segmentation_commit_hash", "code_label", "parameters_digest",
                "suite2p_version", "suite2p_settings", "source_video_path",
                "movie_fingerprint", "hostname", "suite2p_seconds", "total_seconds",
                "stage_seconds", "peak_rss_bytes", "scratch_bytes", "frame_source",
                "scheduler_job_id", "scheduler_task_id", "nframes", "nbinned"):
        assert stored[key] == run[key], key
    assert stored["suite2p_settings"] == SETTINGS
    assert stored["video_shape"] == list(SHAPE)
    selection = record["experiment_selection"]
    assert selection["experiment_selection_id"] == selection_id
    assert selection["query_strings"] == list(QUERIES)
    assert selection["random_seed"] == 7
    assert record["exported_by"]["slapp_code_version"]


def test_nwbinspector_finds_nothing_serious(labeling_db, stored_run, tmp_path):
    _, run_id, _ = stored_run
    path = tmp_path / "run.nwb"
    export_run(labeling_db, run_id, path)
    assert _serious_findings(path) == []


def test_a_run_without_rois_exports_no_roi_table_and_no_traces(labeling_db, tmp_path):
    run_id = insert_run(labeling_db, EXPERIMENT, [], video_shape=SHAPE)
    path = tmp_path / "empty.nwb"
    assert export_run(labeling_db, run_id, path)["n_rois"] == 0
    io, nwbfile = _read(path)
    with io:
        ophys = nwbfile.processing["ophys"]
        assert len(ophys.data_interfaces) == 0
        assert "Fluorescence" not in ophys.data_interfaces
        assert json.loads(nwbfile.scratch[PROVENANCE_NAME].data)["experiment_selection"] is None
    assert _serious_findings(path) == []


def test_a_failed_write_leaves_the_old_file_and_no_temporary(labeling_db, stored_run,
                                                              tmp_path, monkeypatch):
    _, run_id, _ = stored_run
    path = tmp_path / "run.nwb"
    path.write_bytes(b"the previous export")

    def fail(self, *args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(pynwb.NWBHDF5IO, "write", fail)
    with pytest.raises(OSError, match="disk full"):
        export_run(labeling_db, run_id, path)
    assert path.read_bytes() == b"the previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.nwb"]


def test_an_existing_file_is_replaced_whole(labeling_db, stored_run, tmp_path):
    _, run_id, _ = stored_run
    path = tmp_path / "run.nwb"
    path.write_bytes(b"old")
    export_run(labeling_db, run_id, path)
    io, nwbfile = _read(path)
    with io:
        assert nwbfile.session_id == str(EXPERIMENT)
    assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_run_without_frame_rate_is_refused(labeling_db, tmp_path):
    run_id = insert_run(labeling_db, EXPERIMENT, [], suite2p_settings=json.dumps({"db": {}}))
    with pytest.raises(Exception, match="records no frame rate"):
        export_run(labeling_db, run_id, tmp_path / "x.nwb")
    assert list(tmp_path.iterdir()) == []


def test_cli_exports_one_run(labeling_db, stored_run, run_cli, tmp_path):
    selection_id, run_id, _ = stored_run
    path = tmp_path / "one.nwb"
    result = run_cli("slapp.export.nwb", "--segmentation_run_id", run_id, "--output_nwb", path,
                     "--output_json", tmp_path / "out.json")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (f"experiment {EXPERIMENT}: run {run_id} (7 ROIs, "
                                     f"selection {selection_id}) -> {path}")
    assert json.loads((tmp_path / "out.json").read_text())["files"][0]["nwb_path"] == str(path)
    io, nwbfile = _read(path)
    with io:
        assert len(nwbfile.processing["ophys"]["ImageSegmentation"][PLANE_SEGMENTATION_NAME]) == 7


def test_cli_exports_every_experiment_of_a_selection(labeling_db, run_cli, tmp_path):
    experiments = [850000001, 850000002, 850000003]
    selection_id = insert_selection(labeling_db, experiments, QUERIES)
    rng = np.random.default_rng(5)
    counted = insert_run(labeling_db, experiments[0], random_masks(rng, SHAPE, 4), seed=2,
                         experiment_selection_id=selection_id, **COUNTED)
    # newer, but of other parameters (and of another code version): not counted
    insert_run(labeling_db, experiments[0], random_masks(rng, SHAPE, 2), seed=1,
               ophys_segmentation_commit_hash=VERSION)
    insert_run(labeling_db, experiments[1], random_masks(rng, SHAPE, 2), seed=4)
    other = insert_run(labeling_db, experiments[2], random_masks(rng, SHAPE, 3), seed=3,
                       experiment_selection_id=selection_id, **COUNTED)
    output_dir = tmp_path / "nwb"
    result = run_cli("slapp.export.nwb", "--experiment_selection_id", selection_id,
                     "--output_dir", output_dir, "--suite2p_version", "1.1.0", env=PINNED)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in output_dir.iterdir()) == ["850000001.nwb", "850000003.nwb"]
    assert result.stdout.splitlines()[-1] == (
        "no segmentation run of this code version and these parameters for experiment "
        "850000002")
    for experiment_id, run_id, n_rois in ((experiments[0], counted, 4),
                                          (experiments[2], other, 3)):
        io, nwbfile = _read(output_dir / f"{experiment_id}.nwb")
        with io:
            record = json.loads(nwbfile.scratch[PROVENANCE_NAME].data)
            assert record["segmentation_run"]["segmentation_run_id"] == run_id
            assert record["experiment_selection"]["experiment_selection_id"] == selection_id
            plane = nwbfile.processing["ophys"]["ImageSegmentation"][PLANE_SEGMENTATION_NAME]
            assert len(plane) == n_rois


@pytest.mark.parametrize("arguments, message", [
    (["--segmentation_run_id", "999", "--output_nwb", "{tmp}/x.nwb"],
     "there is no segmentation run with id 999"),
    (["--segmentation_run_id", "1", "--output_nwb", "{tmp}/x.h5"], "must end in .nwb"),
    (["--segmentation_run_id", "1", "--output_nwb", "{tmp}/no/such/x.nwb"], "does not exist"),
    (["--output_dir", "{tmp}/out"], "needs --experiment_selection_id"),
    (["--experiment_selection_id", "99", "--output_dir", "{tmp}/out"],
     "there is no experiment selection with id 99"),
    ([], "give --segmentation_run_id with --output_nwb"),
    (["--experiment_selection_id", "1", "--output_dir", "{tmp}/out", "--classifier_model_id",
      "99"], "export-nwb: error: there is no classifier model with id 99"),
])
def test_cli_bad_input_is_one_line_and_writes_nothing(labeling_db, run_cli, tmp_path,
                                                      arguments, message):
    result = run_cli("slapp.export.nwb",
                     *[argument.format(tmp=tmp_path) for argument in arguments])
    assert result.returncode == 1
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_the_runs_own_selection_is_recorded_never_a_newer_one(labeling_db, stored_run,
                                                              run_cli, tmp_path):
    selection_id, run_id, _ = stored_run
    unrelated = insert_selection(labeling_db, [EXPERIMENT], ("SELECT 'UNRELATED pilot'",),
                                 seed=99)
    path = tmp_path / "run.nwb"

    result = run_cli("slapp.export.nwb", "--segmentation_run_id", run_id, "--output_nwb", path)

    assert result.returncode == 0, result.stderr
    assert unrelated > selection_id
    io, nwbfile = _read(path)
    with io:
        record = json.loads(nwbfile.scratch[PROVENANCE_NAME].data)
    assert record["experiment_selection"]["experiment_selection_id"] == selection_id
    assert record["experiment_selection"]["query_strings"] == list(QUERIES)
    assert record["segmentation_run"]["experiment_selection_id"] == selection_id
    assert record["segmentation_run"]["manifest_path"] == "/batches/one/manifest.json"

    # an explicit selection that holds the experiment is recorded instead
    explicit = run_cli("slapp.export.nwb", "--segmentation_run_id", run_id, "--output_nwb",
                       path, "--experiment_selection_id", unrelated)
    assert explicit.returncode == 0, explicit.stderr
    assert f"selection {unrelated})" in explicit.stdout


def test_a_selection_without_the_experiment_is_refused(labeling_db, stored_run, run_cli,
                                                       tmp_path):
    _, run_id, _ = stored_run
    other = insert_selection(labeling_db, [850000099])

    result = run_cli("slapp.export.nwb", "--segmentation_run_id", run_id, "--output_nwb",
                     tmp_path / "run.nwb", "--experiment_selection_id", other)

    assert result.returncode == 1
    assert result.stderr.strip() == (f"slapp export-nwb: error: experiment selection {other} does not "
                                     f"hold experiment {EXPERIMENT}")
    assert list(tmp_path.iterdir()) == []


def test_a_run_stored_before_runs_recorded_their_selection_says_unknown(
        labeling_db, run_cli, tmp_path):
    insert_selection(labeling_db, [EXPERIMENT])  # holds it, but the run does not name it
    run_id = insert_run(labeling_db, EXPERIMENT, random_masks(np.random.default_rng(1), SHAPE,
                                                              2), video_shape=SHAPE)
    path = tmp_path / "old.nwb"

    result = run_cli("slapp.export.nwb", "--segmentation_run_id", run_id, "--output_nwb", path)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (f"experiment {EXPERIMENT}: run {run_id} (2 ROIs, "
                                     f"selection unknown) -> {path}")
    io, nwbfile = _read(path)
    with io:
        record = json.loads(nwbfile.scratch[PROVENANCE_NAME].data)
    assert record["experiment_selection"] is None
    assert record["segmentation_run"]["experiment_selection_id"] is None


def test_rois_read_in_small_batches_are_all_read_in_order(labeling_db, stored_run):
    _, run_id, _ = stored_run
    run = load_run(labeling_db, run_id)
    nwbfile = build_nwbfile(run, load_rois(labeling_db, run, batch_size=2),
                            provenance(run, None, "v"))
    plane = nwbfile.processing["ophys"]["ImageSegmentation"][PLANE_SEGMENTATION_NAME]
    assert list(plane["suite2p_roi_index"].data) == list(range(7))


def test_cli_a_models_predictions_are_two_more_columns(labeling_db, stored_run, run_cli,
                                                       tmp_path):
    _, run_id, _ = stored_run
    roi_ids = [row["id"] for row in labeling_db.query(
        "SELECT id FROM rois WHERE segmentation_run_id = %s ORDER BY suite2p_roi_index",
        (run_id,))]
    # ROIs 5 and 6 have no prediction from this model (only from another one)
    probabilities = [0.9, 0.2, 0.75, 0.5, 0.05]
    model_id = insert_model(labeling_db, dict(zip(roi_ids, probabilities)))
    insert_model(labeling_db, {roi_id: 0.99 for roi_id in roi_ids})
    path = tmp_path / "model.nwb"

    result = run_cli("slapp.export.nwb", "--segmentation_run_id", run_id, "--output_nwb", path,
                     "--classifier_model_id", model_id)

    assert result.returncode == 0, result.stderr
    io, nwbfile = _read(path)
    with io:
        plane = nwbfile.processing["ophys"]["ImageSegmentation"][PLANE_SEGMENTATION_NAME]
        np.testing.assert_allclose(plane["model_cell_probability"][:],
                                   probabilities + [np.nan, np.nan], rtol=1e-6)
        assert [bool(value) for value in plane["model_is_cell"][:]] == [
            True, False, True, False, False, False, False]
        assert "NaN where the model has no stored prediction" in (
            plane["model_cell_probability"].description)
        assert f"classifier model {model_id}" in plane["model_is_cell"].description
        assert "False also where the model has no stored prediction" in (
            plane["model_is_cell"].description)
        # Suite2P's own classification is still there, unchanged
        assert [bool(value) for value in plane["is_cell"][:]] == [
            row["is_cell"] for row in labeling_db.query(
                "SELECT is_cell FROM rois WHERE segmentation_run_id = %s "
                "ORDER BY suite2p_roi_index", (run_id,))]
        model = json.loads(nwbfile.scratch[PROVENANCE_NAME].data)["classifier_model"]
    assert (model["classifier_model_id"], model["file_digest"], model["code_version"],
            model["labeling_job_ids"], model["n_predicted_rois"]) == (
        model_id, MODEL_DIGEST, "modelcommit", [4, 5], 5)
    assert _serious_findings(path) == []


def test_without_a_model_there_are_no_model_columns(labeling_db, stored_run, tmp_path):
    _, run_id, _ = stored_run
    path = tmp_path / "run.nwb"
    export_run(labeling_db, run_id, path)
    io, nwbfile = _read(path)
    with io:
        plane = nwbfile.processing["ophys"]["ImageSegmentation"][PLANE_SEGMENTATION_NAME]
        assert "model_is_cell" not in plane.colnames
        assert "classifier_model" not in json.loads(nwbfile.scratch[PROVENANCE_NAME].data)
