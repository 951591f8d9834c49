"""slapp.report: the entries, figures and flags of a batch, and the page's content."""
import dataclasses
import json
import re

import numpy as np
import pytest
from report_batch import (BATCH, COMMIT, DIGEST, FAILURE_MESSAGE, NBINNED, PARAMETERS, PINNED,
                          REPORT_PARAMETERS, SHAPE)
from stored_runs import insert_failure, insert_model, insert_run, random_masks

from slapp.db.runs import manifest_entry_states
from slapp.report.entries import report_entries


def fetch_entries(dbconn, manifest):
    return report_entries(manifest_entry_states(dbconn, manifest, PARAMETERS))
from slapp.report.statistics import OUTLIER_Z, add_derived_figures, flag_outliers, robust_z


def test_each_entry_gets_its_status_and_figures(labeling_db, batch):
    manifest, runs = batch
    entries = fetch_entries(labeling_db, manifest)
    assert [entry["experiment_id"] for entry in entries] == list(BATCH)
    assert [entry["manifest_index"] for entry in entries] == list(range(len(BATCH)))
    statuses = {entry["experiment_id"]: entry["status"] for entry in entries}
    assert statuses == {experiment_id: (n if isinstance(n, str) else "done")
                        for experiment_id, n in BATCH.items()}
    for entry in entries:
        if entry["status"] == "done":
            stored = labeling_db.query(
                "SELECT count(*) AS n, count(*) FILTER (WHERE is_cell) AS cells, "
                "percentile_cont(0.5) WITHIN GROUP (ORDER BY npix) AS size "
                "FROM rois WHERE segmentation_run_id = %s", (runs[entry["experiment_id"]],))[0]
            assert entry["segmentation_run_id"] == runs[entry["experiment_id"]]
            assert (entry["n_rois"], entry["n_cells"]) == (stored["n"], stored["cells"])
            assert entry["n_rois"] == BATCH[entry["experiment_id"]]
            assert entry["median_npix"] == stored["size"]
    failed = entries[list(BATCH).index(850000012)]
    assert (failed["failure_class"], failed["failure_message"]) == ("suite2p_error",
                                                                    FAILURE_MESSAGE)


def test_a_failure_without_experiment_id_is_matched_by_manifest_index(labeling_db, batch):
    manifest, _ = batch
    missing_index = list(BATCH).index(850000015)
    insert_failure(labeling_db, None, manifest, missing_index, "entry 5 is not an object",
                   failure_class="bad_input", code_version=COMMIT, parameters_digest=None)
    insert_failure(labeling_db, None, manifest.parent / "other.json", 1, "another manifest",
                   code_version=COMMIT, parameters_digest=None)
    entries = fetch_entries(labeling_db, manifest)
    assert entries[missing_index]["status"] == "failed"
    assert entries[missing_index]["failure_message"] == "entry 5 is not an object"
    assert entries[1]["status"] == "done"


def test_the_newest_failure_counts(labeling_db, batch):
    manifest, runs = batch
    failed_index = list(BATCH).index(850000012)
    insert_failure(labeling_db, 850000012, manifest, failed_index, "out of memory at 64 GB",
                   failure_class="out_of_memory", code_version=COMMIT, parameters_digest=DIGEST)
    entries = fetch_entries(labeling_db, manifest)
    assert entries[failed_index]["failure_message"] == "out of memory at 64 GB"


def test_outliers_and_zero_roi_runs_are_flagged(labeling_db, batch):
    manifest, _ = batch
    entries = fetch_entries(labeling_db, manifest)
    add_derived_figures(entries)
    counts = flag_outliers(entries)
    flags = {entry["experiment_id"]: entry["flags"] for entry in entries}
    assert "no ROIs" in flags[850000014]
    assert any(flag.startswith("ROI count high") for flag in flags[850000016])
    assert any(flag.startswith("ROI count low") for flag in flags[850000014])
    assert not any(flag.startswith("ROI count") for flag in flags[850000010])
    assert flags[850000012] == flags[850000015] == []
    assert counts["zero_roi_runs"] == 1 and counts["n_rois"] == 2
    done = [entry for entry in entries if entry["status"] == "done"]
    for entry in done:
        assert entry["ms_per_frame"] == pytest.approx(1000 * 6.0 / 50)
    assert done[0]["cell_fraction"] == done[0]["n_cells"] / done[0]["n_rois"]
    assert entries[list(BATCH).index(850000014)]["cell_fraction"] is None


def test_fewer_than_five_runs_have_no_outliers():
    entries = [{"segmentation_run_id": n, "n_rois": rois, "median_npix": 100.0,
                "cell_fraction": 0.5, "ms_per_frame": ms}
               for n, (rois, ms) in enumerate([(30, 4.3), (30, 6.5), (30, 4.2), (31, 4.3)])]
    counts = flag_outliers(entries)
    assert all(entry["flags"] == [] for entry in entries)
    assert counts["ms_per_frame"] == 0
    entries.append({**entries[0], "segmentation_run_id": 9})
    flag_outliers(entries)
    assert any(flag.startswith("runtime per frame high") for flag in entries[1]["flags"])


def test_a_small_difference_in_a_uniform_batch_is_no_outlier():
    entries = [{"segmentation_run_id": n, "n_rois": rois}
               for n, rois in enumerate([30, 30, 30, 30, 30, 29, 30, 12])]
    counts = flag_outliers(entries)
    assert entries[5]["flags"] == []  # z is large (no spread), the difference is not
    assert entries[7]["flags"] == ["ROI count low (z -6.0)"]
    assert counts["n_rois"] == 1


def test_robust_z_ignores_the_outlier_it_measures():
    values = np.array([10, 11, 12, 11, 10, 12, 11, 1000.0])
    scores = robust_z(values)
    assert scores[-1] > 100 * OUTLIER_Z
    assert np.all(np.abs(scores[:-1]) <= 0.6745 * 1 / 0.5 + 1e-9)
    # more than half equal: the MAD is 0 and the mean absolute deviation takes over
    assert robust_z(np.array([5, 5, 5, 5, 9.0]))[-1] > OUTLIER_Z
    assert np.all(robust_z(np.array([3.0, 3.0, 3.0])) == 0)


def test_cli_writes_one_self_contained_page(labeling_db, batch, run_cli, tmp_path):
    manifest, runs = batch
    output_dir = tmp_path / "report"
    result = run_cli("slapp.report", "--manifest_json", manifest, "--output_dir", output_dir,
                     "--output_json", tmp_path / "report.json", *REPORT_PARAMETERS, env=PINNED)
    assert result.returncode == 0, result.stderr
    index = output_dir / "index.html"
    assert result.stdout.strip() == (f"report: {index} (8 entries: 6 done, 1 missing, "
                                     "1 failed; 2 flagged)")
    assert json.loads((tmp_path / "report.json").read_text())["n_failed"] == 1
    page = index.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert "<script" not in page
    assert page.count('<tr id="entry-') == len(BATCH)
    assert FAILURE_MESSAGE.replace("'", "&#x27;") in page
    for experiment_id, run_id in runs.items():
        assert f'src="../batch/segmentation_plots/{experiment_id}_{run_id}.png"' in page
        assert f"run {run_id}<br>" in page
    # thumbnails load with the page, so a full-page screenshot shows every one
    assert 'loading="lazy"' not in page
    assert page.count("<svg") == 4


def test_cli_report_of_a_selection(labeling_db, batch, run_cli, tmp_path):
    from stored_runs import insert_selection
    selection_id = insert_selection(labeling_db, list(BATCH))
    result = run_cli("slapp.report", "--experiment_selection_id", selection_id,
                     "--output_dir", tmp_path / "report", *REPORT_PARAMETERS, env=PINNED)
    assert result.returncode == 0, result.stderr
    page = (tmp_path / "report" / "index.html").read_text()
    assert page.count('<tr id="entry-') == len(BATCH)
    assert "<img" not in page


def sweep_run(dbconn, experiment_id, threshold_scaling=0.9):
    """A run of ``experiment_id`` with another threshold_scaling (newer than the batch's)."""
    swept = dataclasses.replace(PARAMETERS, options=dataclasses.replace(
        PARAMETERS.options, threshold_scaling=threshold_scaling))
    return insert_run(dbconn, experiment_id, random_masks(np.random.default_rng(9), SHAPE, 40),
                      video_shape=SHAPE, seed=20, ophys_segmentation_commit_hash=COMMIT,
                      parameters_digest=swept.digest(NBINNED), nbinned=NBINNED)


def test_cli_names_the_run_of_the_parameters_asked_about(labeling_db, batch, run_cli,
                                                         tmp_path):
    manifest, runs = batch
    swept = sweep_run(labeling_db, 850000010)
    output = tmp_path / "report.json"

    default = run_cli("slapp.report", "--manifest_json", manifest, "--output_dir",
                      tmp_path / "default", "--output_json", output, *REPORT_PARAMETERS,
                      env=PINNED)

    assert default.returncode == 0, default.stderr
    entries = json.loads(output.read_text())["entries"]
    assert entries[0] == {"manifest_index": 0, "experiment_id": 850000010, "status": "done",
                          "segmentation_run_id": runs[850000010], "n_predicted_rois": None,
                          "n_model_cells": None}
    assert [(entry["status"], entry["segmentation_run_id"]) for entry in entries] == [
        ("done", runs[eid]) if eid in runs else (n, None) for eid, n in BATCH.items()]
    page = (tmp_path / "default" / "index.html").read_text()
    assert f"other parameters: run {swept} (not counted)" in page

    sweep = run_cli("slapp.report", "--manifest_json", manifest, "--output_dir",
                    tmp_path / "sweep", "--output_json", output, "--threshold_scaling", 0.9,
                    *REPORT_PARAMETERS, env=PINNED)

    assert sweep.returncode == 0, sweep.stderr
    report = json.loads(output.read_text())
    assert report["parameters"] == ("Suite2P 1.1.0, threshold_scaling 0.9 (other options "
                                    "default)")
    assert [(entry["status"], entry["segmentation_run_id"]) for entry in report["entries"]][
        :3] == [("done", swept), ("missing", None), ("missing", None)]


def test_cli_shows_an_explicit_set_of_runs(labeling_db, batch, run_cli, tmp_path):
    manifest, runs = batch
    swept = sweep_run(labeling_db, 850000010)
    output = tmp_path / "report.json"

    result = run_cli("slapp.report", "--manifest_json", manifest, "--output_dir",
                     tmp_path / "report", "--output_json", output, "--segmentation_run_ids",
                     f"{swept},{runs[850000011]}", *REPORT_PARAMETERS, env=PINNED)

    assert result.returncode == 0, result.stderr
    entries = json.loads(output.read_text())["entries"]
    assert [(entry["status"], entry["segmentation_run_id"]) for entry in entries] == [
        ("done", swept), ("done", runs[850000011])] + [("missing", None)] * 6

    refused = run_cli("slapp.report", "--manifest_json", manifest, "--output_dir",
                      tmp_path / "refused", "--segmentation_run_ids", f"{swept},{runs[850000010]}",
                      *REPORT_PARAMETERS, env=PINNED)

    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        f"slapp report: error: runs {swept} and {runs[850000010]} are both of experiment "
        "850000010: give one run per experiment")
    assert not (tmp_path / "refused").exists()


def test_a_failure_names_where_its_task_ran(labeling_db, batch, run_cli, tmp_path):
    manifest, _ = batch

    result = run_cli("slapp.report", "--manifest_json", manifest, "--output_dir",
                     tmp_path / "report", *REPORT_PARAMETERS, env=PINNED)

    assert result.returncode == 0, result.stderr
    page = (tmp_path / "report" / "index.html").read_text()
    assert (f"log: manifest {manifest} index 2, host node7, job 4242 task 3)") in page


def test_a_failure_with_a_recorded_log_names_the_log(labeling_db, batch, run_cli, tmp_path):
    manifest, _ = batch
    log = "/cluster/logs/slapp_segment_4242_3.log"
    labeling_db.execute("UPDATE segmentation_failures SET log_path = %s", (log,))

    result = run_cli("slapp.report", "--manifest_json", manifest, "--output_dir",
                     tmp_path / "report", *REPORT_PARAMETERS, env=PINNED)

    assert result.returncode == 0, result.stderr
    page = (tmp_path / "report" / "index.html").read_text()
    assert f"log: {log})" in page


@pytest.mark.parametrize("arguments, message", [
    ([], "give --manifest_json or --experiment_selection_id"),
    (["--experiment_selection_id", "7"], "there is no experiment selection with id 7"),
    (["--manifest_json", "{tmp}/nothing.json"], "nothing.json"),
    (["--manifest_json", "{tmp}/bad.json"], "is not valid"),
    (["--experiment_selection_id", "7", "--classifier_model_id", "99"],
     "report: error: there is no classifier model with id 99"),
])
def test_cli_bad_input_is_one_line_and_writes_nothing(labeling_db, run_cli, tmp_path,
                                                      arguments, message):
    (tmp_path / "bad.json").write_text('{"manifest": [{"experiment_id": "x"}]}')
    result = run_cli("slapp.report", "--output_dir", tmp_path / "report", *REPORT_PARAMETERS,
                     *[argument.format(tmp=tmp_path) for argument in arguments], env=PINNED)
    assert result.returncode == 1
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "report").exists()


def test_cli_shows_a_models_cells_beside_suite2ps(labeling_db, batch, run_cli, tmp_path):
    manifest, runs = batch
    roi_ids = {experiment_id: [row["id"] for row in labeling_db.query(
        "SELECT id FROM rois WHERE segmentation_run_id = %s ORDER BY suite2p_roi_index",
        (run_id,))] for experiment_id, run_id in runs.items()}
    # 8 of the 10 ROIs of the first run predicted, 3 of them above 0.5; the second run's
    # ROIs only by another model
    probabilities = [0.9, 0.1, 0.7, 0.2, 0.3, 0.6, 0.4, 0.05]
    model_id = insert_model(labeling_db, dict(zip(roi_ids[850000010], probabilities)))
    insert_model(labeling_db, {roi_id: 0.9 for roi_id in roi_ids[850000011]})
    output = tmp_path / "report.json"

    result = run_cli("slapp.report", "--manifest_json", manifest, "--output_dir",
                     tmp_path / "report", "--output_json", output, "--classifier_model_id",
                     model_id, *REPORT_PARAMETERS, env=PINNED)

    assert result.returncode == 0, result.stderr
    report = json.loads(output.read_text())
    assert report["classifier_model_id"] == model_id
    counts = [(entry["n_predicted_rois"], entry["n_model_cells"]) for entry in report["entries"]]
    assert counts[:3] == [(8, 3), (0, None), (None, None)]
    assert counts[list(BATCH).index(850000015)] == (None, None)
    page = (tmp_path / "report" / "index.html").read_text()
    assert f"classifier model {model_id} (created " in page
    assert "trained on labeling jobs 4, 5" in page
    assert "<th>cells</th><th>model cells</th>" in page
    rows = {match[0]: match[1] for match in re.findall(r'<tr id="entry-(\d+)"(.*?)</tr>', page)}
    suite2p_cells = sum(index % 3 != 0 for index in range(10))  # insert_run's is_cell
    assert (f'<td class="n">{suite2p_cells}</td><td class="n">3 <span class="when">of 8 '
            "predicted</span></td>") in rows["0"]
    assert '<td class="missing">no predictions</td>' in rows["1"]
    assert 'colspan="11"' in rows[str(list(BATCH).index(850000012))]
