"""``python -m slapp.segmentation.status`` against the real labeling database.

Runs are inserted with SQL, as a finished segmentation task leaves them; the
code version is pinned with ``TRANSFORM_HASH`` so that edits other engineers
make to the package while the test runs do not change what counts as done.
"""
import dataclasses
import datetime
import json
import sys
from pathlib import Path

import h5py
import numpy as np
import psycopg2.extras
import pytest

from slapp.db.runs import EntryState, Failure, Run, RunParameters
from slapp.segmentation.memory_model import (JOB_SCRIPT_REQUEST, memory_request,
                                             out_of_memory_request, predicted_peak_rss_bytes,
                                             request_bytes)
from slapp.segmentation.resubmit import (PASSED_VARIABLES, PBS_SCRIPT, SLURM_SCRIPT,
                                         pbs_memory, resubmission)
from slapp.segmentation.settings import Suite2pOptions, parameters_digest
from slapp.segmentation.status import entry_statuses, out_of_memory_retry, report_lines
from slapp.segmentation.suite2p_runner import build_suite2p_inputs, jsonable, suite2p_version

VERSION = "status-test-version"
PINNED = {"TRANSFORM_HASH": VERSION}
DEFAULTS = Suite2pOptions.defaults()
NBINNED = 10


def write_manifest(directory, experiment_ids):
    path = directory / "manifest.json"
    path.write_text(json.dumps({"manifest": [
        {"experiment_id": experiment_id, "nbinned": NBINNED, "log_level": "ERROR",
         "input_video": str(directory / f"{experiment_id}.h5")}
        for experiment_id in experiment_ids]}))
    return path


def recorded_settings(options):
    """What a run stores as suite2p_settings for these options."""
    db, settings = build_suite2p_inputs(Path("/movies/m.h5"), NBINNED, options, Path("/tmp"))
    return jsonable({"db": db, "settings": settings})


def insert_run(dbconn, experiment_id, version, n_rois, options=DEFAULTS):
    digest = parameters_digest(options, NBINNED, suite2p_version())
    run_id = dbconn.insert(
        "INSERT INTO segmentation_runs (ophys_experiment_id, ophys_segmentation_commit_hash, "
        "parameters_digest, movie_fingerprint, source_video_path, video_shape, nframes, "
        "nbinned, suite2p_version, suite2p_settings, suite2p_seconds, total_seconds, hostname) "
        "VALUES (%s, %s, %s, '{}', '/movies/m.h5', '{8,8}', 100, %s, %s, %s, 1.0, 2.0, 'node1') "
        "RETURNING id", (experiment_id, version, digest, NBINNED, suite2p_version(),
                         psycopg2.extras.Json(recorded_settings(options))))[0]["id"]
    dbconn.bulk_insert([
        ("INSERT INTO rois (segmentation_run_id, suite2p_roi_index, coo_row, coo_col, coo_data, "
         "trace, neuropil_trace, is_cell, cell_probability, npix, centroid_row, centroid_col, "
         "radius, aspect_ratio, compactness, skew) VALUES (%s, %s, '{1}', '{2}', '{0.5}', "
         "'{1,2}', '{1,1}', true, 0.9, 1, 1, 2, 1, 1, 1, 0.1)", (run_id, index))
        for index in range(n_rois)])
    return run_id


def test_status_reports_each_entry_and_resubmits_only_the_missing(
        labeling_db, run_cli, tmp_path):
    manifest = write_manifest(tmp_path, [850517344, 850517352, 850517360, 850517368])
    first = insert_run(labeling_db, 850517344, VERSION, n_rois=3)
    insert_run(labeling_db, 850517352, "an-older-version", n_rois=5)
    insert_run(labeling_db, 850517352, "a-newer-version", n_rois=4)
    insert_run(labeling_db, 850517368, "a-newer-version", n_rois=4)
    third = insert_run(labeling_db, 850517360, VERSION, n_rois=0)
    output = tmp_path / "status.json"

    result = run_cli("slapp.segmentation.status", "--manifest_json", manifest,
                     "--output_json", output, env=PINNED)

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"code version {VERSION}: 4 entries in {manifest}"
    assert lines[1] == f"parameters: Suite2P {suite2p_version()}, default options"
    assert lines[2].startswith(f"0  850517344  done     run {first}, 3 ROIs, ")
    assert lines[3] == ("1  850517352  missing  "
                        "(segmented only by 2 other code versions, latest: a-newer-version)")
    assert lines[4].startswith(f"2  850517360  done     run {third}, 0 ROIs, ")
    assert lines[5] == ("3  850517368  missing  "
                        "(segmented only by another code version: a-newer-version)")
    assert lines[6] == "2 done, 0 failed, 2 missing"
    assert lines[7] == "resubmit the 2 missing entries:"
    variables = f"MANIFEST={manifest},SLAPP_PYTHON={sys.executable}"
    assert lines[8].startswith(f"  SLURM:   sbatch --array=1,3 --export={variables},PATH,")
    assert lines[8].endswith(f" {SLURM_SCRIPT}")
    assert lines[9].startswith(f"  Torque:  qsub -t 1,3 -v {variables},PATH,")
    assert lines[9].endswith(f" {PBS_SCRIPT}")
    assert lines[10].startswith(f"  PBS Pro: qsub -v {variables},SLAPP_MANIFEST_INDEX=1,PATH,")
    assert lines[11].startswith(f"           qsub -v {variables},SLAPP_MANIFEST_INDEX=3,PATH,")
    assert "LABELING_PASSWORD" not in result.stdout and "ALL" not in result.stdout

    report = json.loads(output.read_text())
    assert report["code_version"] == VERSION
    assert (report["n_done"], report["n_missing"]) == (2, 2)
    assert report["missing_indices"] == [1, 3]
    assert report["array_spec"] == "1,3"
    assert [(entry["status"], entry["segmentation_run_id"], entry["n_rois"])
            for entry in report["entries"]] == [
        ("done", first, 3), ("missing", None, None), ("done", third, 0), ("missing", None, None)]
    assert report["entries"][1]["other_code_versions"] == ["an-older-version",
                                                           "a-newer-version"]


def test_everything_done_means_nothing_to_resubmit(labeling_db, run_cli, tmp_path):
    manifest = write_manifest(tmp_path, [1, 2])
    insert_run(labeling_db, 1, VERSION, n_rois=1)
    insert_run(labeling_db, 2, VERSION, n_rois=2)
    output = tmp_path / "status.json"

    result = run_cli("slapp.segmentation.status", "--manifest_json", manifest,
                     "--output_json", output, env=PINNED)

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-2:] == [
        "2 done, 0 failed, 0 missing", "nothing to resubmit: every entry is done"]
    assert "sbatch" not in result.stdout
    report = json.loads(output.read_text())
    assert report["array_spec"] is None and report["missing_indices"] == []


def test_the_resubmission_is_throttled(labeling_db, run_cli, tmp_path):
    manifest = write_manifest(tmp_path, range(100, 112))
    insert_run(labeling_db, 105, VERSION, n_rois=1)

    result = run_cli("slapp.segmentation.status", "--manifest_json", manifest,
                     "--max_concurrent", 4, env=PINNED)

    assert result.returncode == 0, result.stderr
    assert "11 missing" in result.stdout
    assert "resubmit the 11 missing entries:" in result.stdout
    assert "qsub -t 0-4,6-11%4 " in result.stdout
    assert "sbatch --array=0-4,6-11%4 " in result.stdout


@pytest.mark.parametrize("make_input, unset, message", [
    (lambda directory: directory / "absent.json", None, "absent.json"),
    (lambda directory: (directory / "m.json").write_text("{not json") and directory / "m.json",
     None, "is not valid"),
    (lambda directory: write_manifest(directory, [1]), "LABELING_PASSWORD",
     "environment variable LABELING_PASSWORD is not set, and there is no password file "
     "(PGPASSFILE or ~/.pgpass)"),
])
def test_bad_input_is_one_line_and_writes_nothing(
        labeling_db, run_cli, cli_env, tmp_path, make_input, unset, message):
    manifest = make_input(tmp_path)
    output = tmp_path / "status.json"
    env = dict(PINNED, **({unset: ""} if unset else {}))

    result = run_cli("slapp.segmentation.status", "--manifest_json", manifest,
                     "--output_json", output, env=env)

    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("slapp status: error: ")
    assert message in result.stderr
    assert cli_env["LABELING_PASSWORD"] not in result.stderr + result.stdout
    assert not output.exists()
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith(".status")] == []


def test_help_lists_every_option(run_cli):
    result = run_cli("slapp.segmentation.status", "--help")

    assert result.returncode == 0, result.stderr
    for option in ("--manifest_json", "--max_concurrent", "--output_json", "--log_level"):
        assert option in result.stdout


PARAMETERS = RunParameters(VERSION, DEFAULTS, "1.1.0")


def test_one_missing_entry_is_named_in_the_singular(tmp_path):
    state = EntryState(0, 5, "missing", "digest", None, None, [], [])
    statuses = entry_statuses([state], PARAMETERS, [NBINNED])

    lines = report_lines(statuses, {"missing": resubmission([0], tmp_path / "m.json",
                                                            PARAMETERS),
                                    "failed": None, "transient": None},
                         tmp_path / "m.json", VERSION)

    assert lines[1:4] == ["0  5  missing", "0 done, 0 failed, 1 missing",
                          "resubmit the 1 missing entry:"]


def insert_failure(dbconn, experiment_id, failure_class, message, options=DEFAULTS,
                   version=VERSION, digest=True):
    dbconn.execute(
        "INSERT INTO segmentation_failures (ophys_experiment_id, ophys_segmentation_commit_hash, "
        "parameters_digest, manifest_path, manifest_index, hostname, failure_class, message) "
        "VALUES (%s, %s, %s, '/m.json', 0, 'node1', %s, %s)",
        (experiment_id, version,
         parameters_digest(options, NBINNED, suite2p_version()) if digest else None,
         failure_class, message))


def test_failed_entries_show_class_and_message_and_get_their_own_array_specs(
        labeling_db, run_cli, tmp_path):
    ids = [101, 102, 103, 104, 105, 106]
    manifest = write_manifest(tmp_path, ids)
    done = insert_run(labeling_db, 101, VERSION, n_rois=2)
    insert_failure(labeling_db, 102, "killed", "killed by SIGTERM (scancel, qdel, the job's "
                                               "time limit or Ctrl-C)")
    insert_failure(labeling_db, 103, "bad_input", "movie /movies/103.h5 does not exist",
                   digest=False)
    insert_failure(labeling_db, 104, "out_of_memory", "killed by SIGKILL: out of memory")
    insert_failure(labeling_db, 104, "suite2p_error", "an older failure, other parameters",
                   options=dataclasses.replace(DEFAULTS, threshold_scaling=0.9))
    insert_failure(labeling_db, 105, "killed", "a failure of another code version",
                   version="another-version")
    other = insert_run(labeling_db, 106, VERSION, n_rois=1,
                       options=dataclasses.replace(DEFAULTS, threshold_scaling=0.9))
    output = tmp_path / "status.json"

    result = run_cli("slapp.segmentation.status", "--manifest_json", manifest,
                     "--output_json", output, env=PINNED)

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[2].startswith(f"0  101  done     run {done}, 2 ROIs, ")
    assert lines[3].startswith("1  102  failed   killed: killed by SIGTERM (scancel, qdel, "
                               "the job's time limit or Ctrl-C) (20")
    assert lines[4].startswith("2  103  failed   bad_input: movie /movies/103.h5 does not "
                               "exist (")
    assert lines[5].startswith("3  104  failed   out_of_memory: killed by SIGKILL: out of "
                               "memory (")
    assert lines[6] == "4  105  missing"
    assert lines[7] == ("5  106  missing  (segmented only with other parameters: "
                        f"run {other}: threshold_scaling 0.9)")
    assert lines[8] == "1 done, 3 failed (2 for a transient reason), 2 missing"
    text = result.stdout
    assert "resubmit the 2 missing entries:" in text and "sbatch --array=4-5 " in text
    # entry 3 was killed for memory: its own commands, with more memory (its movie is
    # not there, so the job scripts' default request alone sets it)
    assert "resubmit the 3 failed entries:" in text and "sbatch --array=1-2 " in text
    assert "sbatch --array=3 --mem=9G " in text
    assert ("resubmit the 2 entries that failed for a transient reason (killed, out of "
            "memory, database unreachable):") in text
    assert "qsub -t 1 -v " in text and "sbatch --array=1 --export" in text
    assert "qsub -t 3 -l mem=9gb " in text
    assert "qsub -J 1-2 " in text and "qsub -J 4-5 " in text
    report = json.loads(output.read_text())
    assert (report["n_done"], report["n_failed"], report["n_missing"]) == (1, 3, 2)
    assert (report["array_spec"], report["failed_array_spec"],
            report["transient_array_spec"]) == ("4-5", "1-3", "1,3")
    assert [entry["failure_class"] for entry in report["entries"]] == [
        None, "killed", "bad_input", "out_of_memory", None, None]


def test_status_asks_about_the_parameters_given(labeling_db, run_cli, tmp_path):
    manifest = write_manifest(tmp_path, [201, 202])
    swept = dataclasses.replace(DEFAULTS, threshold_scaling=0.9)
    run = insert_run(labeling_db, 201, VERSION, n_rois=4, options=swept)
    insert_run(labeling_db, 202, VERSION, n_rois=4)

    result = run_cli("slapp.segmentation.status", "--manifest_json", manifest,
                     "--threshold_scaling", 0.9, env=PINNED)

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[1] == (f"parameters: Suite2P {suite2p_version()}, threshold_scaling 0.9 "
                        "(other options default)")
    assert lines[2].startswith(f"0  201  done     run {run}, 4 ROIs, ")
    assert lines[3].startswith("1  202  missing  (segmented only with other parameters: run ")
    assert lines[3].endswith(": threshold_scaling 0.75)")


def test_a_failure_after_the_run_is_noted(tmp_path):
    def at(minute):
        return datetime.datetime(2026, 11, 30, 12, minute, tzinfo=datetime.timezone.utc)

    def run(run_id):
        return Run(run_id, run_id, VERSION, "digest", at(10), 3, 3, 4.0, None, None, None, {})
    failure = Failure(1, at(20), "bad_input", "movie /m.h5 changed since run 1 was made from it",
                      "/m.json", 0, "node1", None, None, "digest")
    states = [EntryState(0, 1, "done", "digest", run(1), failure, [], []),
              EntryState(1, 2, "done", "digest", run(2), None, [], [])]

    statuses = entry_statuses(states, PARAMETERS, [NBINNED, NBINNED])
    lines = report_lines(statuses, {"missing": None, "failed": None, "transient": None},
                         tmp_path / "m.json", VERSION)

    assert [status["status"] for status in statuses] == ["done", "done"]
    assert lines[1] == ("0  1  done     run 1, 3 ROIs, 2026-11-30T12:10:00+00:00; a later task "
                        "failed, bad_input: movie /m.h5 changed since run 1 was made from it "
                        "(2026-11-30T12:20:00+00:00)")
    assert lines[2] == "1  2  done     run 2, 3 ROIs, 2026-11-30T12:10:00+00:00"


def test_a_sweep_is_resubmitted_with_its_options(labeling_db, run_cli, cli_env, tmp_path):
    manifest = write_manifest(tmp_path, [301, 302, 303, 304])
    swept = dataclasses.replace(DEFAULTS, threshold_scaling=0.9)
    insert_run(labeling_db, 301, VERSION, n_rois=2, options=swept)
    insert_run(labeling_db, 302, VERSION, n_rois=2)  # the defaults: not the sweep's run
    output = tmp_path / "status.json"

    result = run_cli("slapp.segmentation.status", "--manifest_json", manifest,
                     "--threshold_scaling", 0.9, "--output_json", output, env=PINNED)

    assert result.returncode == 0, result.stderr
    commands = json.loads(output.read_text())["resubmit_commands"]["missing"]
    [slurm], [torque] = commands["SLURM"], commands["Torque"]
    assert slurm.startswith("sbatch --array=1-3 --export=MANIFEST=")
    assert slurm.endswith(f" {SLURM_SCRIPT} --threshold_scaling 0.9")
    assert torque.startswith("qsub -t 1-3 -v MANIFEST=")
    assert torque.endswith(f" -F '--threshold_scaling 0.9' {PBS_SCRIPT}")
    named = ",".join(name for name in PASSED_VARIABLES if {**cli_env, **PINNED}.get(name))
    assert "LABELING_USER" in named and "TRANSFORM_HASH" in named
    assert commands["PBS Pro"] == [
        f"qsub -J 1-3 -v 'MANIFEST={manifest},SLAPP_PYTHON={sys.executable},"
        f"SEGMENT_OPTIONS=--threshold_scaling 0.9,{named}' {PBS_SCRIPT}"]
    for command in (slurm, torque, *commands["PBS Pro"]):
        assert command in result.stdout
        assert "0.9" in command


def write_movie(path, shape, write_frames=True):
    """A real HDF5 movie; with ``write_frames`` False only its header is real (the
    frames are never written, so a 100,000-frame 512x512 movie takes no space)."""
    with h5py.File(path, "w") as movie:
        data = movie.create_dataset("data", shape=shape, dtype="uint16", chunks=(1, *shape[1:]))
        if write_frames:
            data[...] = np.arange(np.prod(shape), dtype="uint16").reshape(shape)
    return path


def test_an_entry_killed_for_memory_is_resubmitted_with_a_larger_request(
        labeling_db, run_cli, cli_env, tmp_path):
    manifest = write_manifest(tmp_path, [401, 402])
    write_movie(tmp_path / "401.h5", (100, 16, 16))
    write_movie(tmp_path / "402.h5", (100, 16, 16))
    insert_failure(labeling_db, 401, "killed", "killed by SIGTERM")
    insert_failure(labeling_db, 402, "out_of_memory", "killed by SIGKILL: out of memory")
    output = tmp_path / "status.json"

    result = run_cli("slapp.segmentation.status", "--manifest_json", manifest,
                     "--output_json", output, env=PINNED)

    assert result.returncode == 0, result.stderr
    # the small movie's prediction is below the scripts' default, so the retry asks
    # half as much again as the default it is assumed to have died under
    peak = predicted_peak_rss_bytes(100, NBINNED, 16, 16)
    request = out_of_memory_request(peak, JOB_SCRIPT_REQUEST)
    assert request_bytes(request) > request_bytes(JOB_SCRIPT_REQUEST)
    pbs = pbs_memory(request)
    assert (f"killed for memory (1): resubmitted below with {request} (largest predicted "
            f"peak {peak / 1e9:.1f} GB; the request they died under is assumed to be the job "
            f"scripts' default {JOB_SCRIPT_REQUEST}, since a task's request is not recorded)"
            in result.stdout.splitlines())
    report = json.loads(output.read_text())
    assert report["out_of_memory"] == {
        "indices": [1], "memory_request": request, "assumed_failed_request": JOB_SCRIPT_REQUEST,
        "predicted_peak_rss_bytes": peak, "unreadable": []}
    named = ",".join(name for name in PASSED_VARIABLES if {**cli_env, **PINNED}.get(name))
    variables = f"MANIFEST={manifest},SLAPP_PYTHON={sys.executable},{named}"

    def lone(index):  # PBS Pro: a lone index is a plain job
        return (f"MANIFEST={manifest},SLAPP_PYTHON={sys.executable},"
                f"SLAPP_MANIFEST_INDEX={index},{named}")
    for group in ("failed", "transient"):
        commands = report["resubmit_commands"][group]
        # the entry killed by SIGTERM keeps the scripts' request; the one killed for
        # memory gets its own command with the larger one
        assert commands == {
            "SLURM": [f"sbatch --array=0 --export={variables} {SLURM_SCRIPT}",
                      f"sbatch --array=1 --mem={request} --export={variables} {SLURM_SCRIPT}"],
            "Torque": [f"qsub -t 0 -v {variables} {PBS_SCRIPT}",
                       f"qsub -t 1 -l mem={pbs} -v {variables} {PBS_SCRIPT}"],
            "PBS Pro": [f"qsub -v {lone(0)} {PBS_SCRIPT}",
                        f"qsub -l select=1:mem={pbs} -v {lone(1)} {PBS_SCRIPT}"]}
        for command_list in commands.values():
            for command in command_list:
                assert command in result.stdout


def test_a_long_movie_killed_for_memory_asks_what_the_model_predicts(tmp_path):
    manifest = [{"experiment_id": 7, "nbinned": 4545,
                 "input_video": str(write_movie(tmp_path / "7.h5", (100_000, 512, 512),
                                                write_frames=False))},
                {"experiment_id": 8, "nbinned": NBINNED, "input_video": str(tmp_path / "8.h5")}]
    states = [EntryState(index, entry["experiment_id"], "failed", "digest", None,
                         Failure(1, datetime.datetime(2026, 12, 6, tzinfo=datetime.timezone.utc),
                                 "out_of_memory", "killed by SIGKILL: out of memory", "/m.json",
                                 index, "node1", None, None, "digest"),
                         [], [])
              for index, entry in enumerate(manifest)]
    statuses = entry_statuses(states, PARAMETERS, [4545, NBINNED])

    retry = out_of_memory_retry(statuses, manifest, DEFAULTS)

    peak = predicted_peak_rss_bytes(100_000, 4545, 512, 512)
    assert retry["memory_request"] == memory_request(peak)  # 22 GB predicted: above 1.5 x 6G
    assert retry["predicted_peak_rss_bytes"] == peak
    assert retry["unreadable"] == [f"manifest entry 1 (experiment 8): movie {tmp_path / '8.h5'} "
                                   f"does not exist"]
    # no movie readable: the default request alone sets the retry's
    assert out_of_memory_retry(statuses[1:], manifest, DEFAULTS)["memory_request"] == \
        out_of_memory_request(None, JOB_SCRIPT_REQUEST)
