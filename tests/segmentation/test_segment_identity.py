"""When a segment task skips, writes a new run, or refuses: the run identity through the CLI.

A run's identity is (experiment, code version, parameters digest); a skip also
needs the movie's fingerprint to match the stored run's. Real tiny movies,
real Suite2P, the real labeling database, the command as a user runs it.
"""
import json
import os
import shutil

import pytest
from stored_runs import insert_selection

from slapp.segmentation.settings import Suite2pOptions, parameters_digest
from slapp.segmentation.suite2p_runner import suite2p_version

VERSION = "identity-test-version"
SEGMENT = "slapp.segmentation.segment"
EXPERIMENT_ID = 930001
NBINNED = 5


@pytest.fixture
def entry(tmp_path, tiny_movies):
    """A manifest of one entry whose movie is a private copy (the test rewrites it)."""
    movie = tmp_path / "movie.h5"
    shutil.copy2(tiny_movies[0], movie)
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"manifest": [
        {"experiment_id": EXPERIMENT_ID, "nbinned": NBINNED, "input_video": str(movie)}]}))
    scratch = tmp_path / "scratch"
    return {"movie": movie, "manifest": manifest, "scratch": scratch}


def segment(run_cli, entry, *args):
    output = entry["manifest"].parent / "out.json"
    output.unlink(missing_ok=True)
    result = run_cli(SEGMENT, "--manifest_json", entry["manifest"], "--manifest_index", 0,
                     "--tmp_dir", entry["scratch"], "--diameter", 14, "--output_json", output,
                     *args, env={"TRANSFORM_HASH": VERSION})
    return result, (json.loads(output.read_text()) if output.exists() else None)


def stored_runs(dbconn):
    """The current runs (not superseded)."""
    return dbconn.query("SELECT id, parameters_digest, movie_fingerprint, code_label, "
                        "suite2p_settings->'settings'->'detection'->'threshold_scaling' AS ts "
                        "FROM segmentation_runs WHERE superseded_by IS NULL ORDER BY id")


def roi_ids(dbconn, run_id):
    return [row["id"] for row in dbconn.query(
        "SELECT id FROM rois WHERE segmentation_run_id = %s ORDER BY id", (run_id,))]


def digest(**changes):
    options = Suite2pOptions.from_args({**Suite2pOptions.defaults().__dict__, "diameter": 14,
                                        **changes})
    return parameters_digest(options, NBINNED, suite2p_version())


@pytest.mark.slow
def test_skip_new_run_per_parameters_refusal_of_a_changed_movie_and_overwrite(
        labeling_db, run_cli, entry, tiny_movies):
    first, first_output = segment(run_cli, entry)
    assert first.returncode == 0, first.stderr
    assert first_output["status"] == "segmented"
    [run] = stored_runs(labeling_db)
    assert run["parameters_digest"] == digest()
    assert run["movie_fingerprint"]["size_bytes"] == entry["movie"].stat().st_size
    assert run["code_label"].startswith("slapp ")
    assert list(entry["scratch"].iterdir()) == []  # --tmp_dir was created, and left empty

    # same settings: skipped
    again, again_output = segment(run_cli, entry)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == (
        f"experiment {EXPERIMENT_ID}: skipped, already segmented by code version {VERSION} "
        f"as run {run['id']} ({first_output['n_rois']} ROIs)")
    assert again_output["status"] == "skipped"

    # another threshold_scaling: a second run beside the first; its rerun is skipped
    swept, swept_output = segment(run_cli, entry, "--threshold_scaling", 0.9)
    assert swept.returncode == 0, swept.stderr
    assert swept_output["status"] == "segmented"
    runs = stored_runs(labeling_db)
    assert [(row["id"], row["parameters_digest"], row["ts"]) for row in runs] == [
        (run["id"], digest(), 0.75),
        (swept_output["segmentation_run_id"], digest(threshold_scaling=0.9), 0.9)]
    swept_again, swept_again_output = segment(run_cli, entry, "--threshold_scaling", 0.9)
    assert swept_again.returncode == 0, swept_again.stderr
    assert swept_again_output == {**swept_output, "status": "skipped"}
    assert len(stored_runs(labeling_db)) == 2

    # the movie rewritten with other frames: refused in one line, nothing new stored
    shutil.copyfile(tiny_movies[1], entry["movie"])
    refused, refused_output = segment(run_cli, entry)
    assert refused.returncode == 1
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1, refused.stderr
    assert lines[0].startswith(f"slapp segment: error: movie {entry['movie']} changed since run "
                               f"{run['id']} was made from it (")
    assert "sampled frames differ" in lines[0]
    assert lines[0].endswith("; rerun with --overwrite to replace that run")
    assert refused_output is None
    assert stored_runs(labeling_db) == runs
    [failure] = labeling_db.query("SELECT * FROM segmentation_failures")
    assert (failure["ophys_experiment_id"], failure["failure_class"], failure["message"],
            failure["parameters_digest"], failure["manifest_index"]) == (
        EXPERIMENT_ID, "bad_input", lines[0].removeprefix("slapp segment: error: "), digest(), 0)

    # --overwrite supersedes the run of that identity (and only that one): the old run
    # and its ROIs stay, with superseded_by naming the new run
    old_rois = roi_ids(labeling_db, run["id"])
    assert len(old_rois) == first_output["n_rois"]
    replaced, replaced_output = segment(run_cli, entry, "--overwrite")
    assert replaced.returncode == 0, replaced.stderr
    assert replaced_output["status"] == "segmented"
    new_id = replaced_output["segmentation_run_id"]
    after = stored_runs(labeling_db)
    assert [row["id"] for row in after] == [swept_output["segmentation_run_id"], new_id]
    assert after[1]["movie_fingerprint"]["sampled_sha256"] != run["movie_fingerprint"][
        "sampled_sha256"]
    [old] = labeling_db.query("SELECT superseded_by, superseded_at, parameters_digest "
                              "FROM segmentation_runs WHERE id = %s", (run["id"],))
    assert old["superseded_by"] == new_id and old["superseded_at"] is not None
    assert old["parameters_digest"] == digest()
    assert roi_ids(labeling_db, run["id"]) == old_rois
    assert (entry["manifest"].parent / "segmentation_plots"
            / f"{EXPERIMENT_ID}_{run['id']}.png").exists()
    assert replaced_output["plot_path"] == str(
        entry["manifest"].parent / "segmentation_plots" / f"{EXPERIMENT_ID}_{new_id}.png")
    final, final_output = segment(run_cli, entry)
    assert final.returncode == 0 and final_output["status"] == "skipped", final.stderr
    assert final_output["segmentation_run_id"] == new_id


@pytest.mark.slow
def test_a_touched_movie_is_the_same_movie(labeling_db, run_cli, entry):
    selection = insert_selection(labeling_db, [EXPERIMENT_ID])
    document = json.loads(entry["manifest"].read_text())
    entry["manifest"].write_text(json.dumps({"experiment_selection_id": selection, **document}))
    first, first_output = segment(run_cli, entry)
    assert first.returncode == 0, first.stderr
    # the run records where it came from
    [provenance] = labeling_db.query("SELECT experiment_selection_id, manifest_path "
                                     "FROM segmentation_runs")
    assert provenance == {"experiment_selection_id": selection,
                          "manifest_path": str(entry["manifest"].resolve())}
    before = entry["movie"].stat().st_mtime_ns
    os.utime(entry["movie"], ns=(before + 3 * 10**9, before + 3 * 10**9))  # touch

    again, again_output = segment(run_cli, entry, "--log_level", "INFO")

    assert again.returncode == 0, again.stderr
    assert again_output == {**first_output, "status": "skipped"}
    moved = [line for line in again.stderr.splitlines() if "modification time moved" in line]
    assert len(moved) == 1 and moved[0].startswith("INFO:"), again.stderr
    [run] = stored_runs(labeling_db)
    assert run["movie_fingerprint"]["mtime_ns"] == before + 3 * 10**9
    assert labeling_db.query("SELECT count(*) AS n FROM segmentation_failures") == [{"n": 0}]
    # the fingerprint followed the movie: the next task says nothing about it
    third, _ = segment(run_cli, entry, "--log_level", "INFO")
    assert third.returncode == 0 and "modification time" not in third.stderr


def test_a_task_on_a_missing_movie_leaves_a_failure_row_for_its_experiment(
        labeling_db, run_cli, entry):
    entry["movie"].unlink()

    result, output = segment(run_cli, entry)

    assert result.returncode == 1 and output is None
    assert result.stderr.strip() == f"slapp segment: error: movie {entry['movie']} does not exist"
    [failure] = labeling_db.query("SELECT * FROM segmentation_failures")
    assert failure["ophys_experiment_id"] == EXPERIMENT_ID
    assert failure["ophys_segmentation_commit_hash"] == VERSION
    assert failure["parameters_digest"] == digest()
    assert failure["failure_class"] == "bad_input"
    assert failure["message"] == f"movie {entry['movie']} does not exist"
    assert failure["manifest_path"] == str(entry["manifest"].resolve())
    assert failure["manifest_index"] == 0 and failure["hostname"]
    assert failure["exit_status"] == 1 and failure["signal_name"] is None
    assert "Traceback" in failure["traceback"] and failure["duration_seconds"] > 0
    assert labeling_db.query("SELECT count(*) AS n FROM segmentation_runs") == [{"n": 0}]


@pytest.mark.parametrize("option, message", [
    (("--threshold_scaling", -1), "invalid input: threshold_scaling: Must be greater than 0."),
    (("--threshhold_scaling", 0.9), "unrecognized arguments"),
])
def test_a_refused_option_is_printed_not_stored_as_the_entrys_failure(
        labeling_db, run_cli, entry, option, message):
    result, output = segment(run_cli, entry, *option)

    assert result.returncode == 1 and output is None
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("slapp segment: error: ") and message in lines[0]
    assert labeling_db.query("SELECT count(*) AS n FROM segmentation_failures") == [{"n": 0}]
    assert labeling_db.query("SELECT count(*) AS n FROM segmentation_runs") == [{"n": 0}]
