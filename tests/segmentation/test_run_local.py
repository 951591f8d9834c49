"""``python -m slapp.segmentation.run_local``: every entry through the real segment command.

Real tiny synthetic movies, real Suite2P, the real labeling database. The code
version is pinned with ``TRANSFORM_HASH`` so that what counts as "already done"
does not move while other engineers edit the package.
"""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from slapp.segmentation.run_local import (SegmentTask, last_error_line, new_attempt_files,
                                         stop_tasks, threads_per_worker)
from slapp.segmentation.suite2p_runner import suite2p_version

VERSION = "run-local-test-version"
RUN_LOCAL = "slapp.segmentation.run_local"
SYNTHETIC_CELLS = ("--diameter", "12")


@pytest.fixture
def movies(tiny_movies):
    """Two of the session's tiny synthetic movies."""
    return tiny_movies[:2]


def write_manifest(directory, videos, first_id=700000):
    path = directory / "manifest.json"
    path.write_text(json.dumps({"manifest": [
        {"experiment_id": first_id + index, "nbinned": 5, "log_level": "ERROR",
         "input_video": str(video)} for index, video in enumerate(videos)]}))
    return path


def runs(labeling_db):
    """Experiment -> its current run of VERSION."""
    return {row["ophys_experiment_id"]: row["id"] for row in labeling_db.query(
        "SELECT id, ophys_experiment_id FROM segmentation_runs WHERE superseded_by IS NULL AND "
        "ophys_segmentation_commit_hash = %s", (VERSION,))}


@pytest.mark.slow
def test_every_entry_is_segmented_failures_reported_a_rerun_skips_overwrite_replaces(
        labeling_db, run_cli, movies, tmp_path):
    missing_movie = tmp_path / "lost" / "movie.h5"
    manifest = write_manifest(tmp_path, [movies[0], missing_movie, movies[1]])
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    output = tmp_path / "run_local.json"

    first = run_cli(RUN_LOCAL, "--manifest_json", manifest, "--workers", 2,
                    "--tmp_dir", scratch, *SYNTHETIC_CELLS,
                    "--output_json", output, env={"TRANSFORM_HASH": VERSION})

    assert first.returncode == 1
    assert first.stderr.strip().splitlines()[-1] == (
        f"slapp run-local: error: 1 of 3 entries failed; their logs are in "
        f"{tmp_path / 'segmentation_logs'}")
    stdout = first.stdout.splitlines()
    logs = tmp_path / "segmentation_logs"
    assert stdout[0] == "done: 2, skipped: 0, failed: 1"
    assert stdout[1] == (
        f"failed: experiment 700001 (manifest index 1): slapp segment: error: movie "
        f"{missing_movie} does not exist (log: {logs / 'manifest_1_700001_try1.log'})")
    assert stdout[2] == (f"2 of 3 entries of {manifest} are done for code version {VERSION}, "
                         f"Suite2P {suite2p_version()}, default options")
    stored = runs(labeling_db)
    assert sorted(stored) == [700000, 700002]
    report = json.loads(output.read_text())
    assert (report["n_done"], report["n_skipped"], report["n_failed"]) == (2, 0, 1)
    assert [task["outcome"] for task in report["tasks"]] == ["done", "failed", "done"]
    assert report["tasks"][0]["segmentation_run_id"] == stored[700000]
    assert report["tasks"][2]["n_rois"] == labeling_db.query(
        "SELECT count(*) AS n FROM rois WHERE segmentation_run_id = %s", (stored[700002],))[0]["n"]
    for index, experiment_id in enumerate([700000, 700001, 700002]):
        assert (logs / f"manifest_{index}_{experiment_id}_try1.log").stat().st_size
    assert list(scratch.iterdir()) == []
    assert [(row["ophys_experiment_id"], row["failure_class"], row["message"],
             row["log_path"]) for row in
            labeling_db.query("SELECT * FROM segmentation_failures")] == [
        (700001, "bad_input", f"movie {missing_movie} does not exist",
         str(logs / "manifest_1_700001_try1.log"))]

    second = run_cli(RUN_LOCAL, "--manifest_json", manifest, "--workers", 2,
                     "--tmp_dir", scratch, *SYNTHETIC_CELLS, env={"TRANSFORM_HASH": VERSION})

    assert second.returncode == 1
    assert second.stdout.splitlines()[0] == "done: 0, skipped: 2, failed: 1"
    assert runs(labeling_db) == stored
    # a second attempt has its own logs: the first attempt's Suite2P logs are kept
    first_log = (logs / "manifest_0_700000_try1.log").read_text()
    assert "skipped" not in first_log
    assert "skipped, already segmented" in (logs / "manifest_0_700000_try2.log").read_text()

    third = run_cli(RUN_LOCAL, "--manifest_json", manifest, "--workers", 2, "--overwrite",
                    "--tmp_dir", scratch, *SYNTHETIC_CELLS, env={"TRANSFORM_HASH": VERSION})

    assert third.stdout.splitlines()[0] == "done: 2, skipped: 0, failed: 1"
    replaced = runs(labeling_db)
    assert sorted(replaced) == sorted(stored)
    assert all(replaced[experiment] != stored[experiment] for experiment in stored)
    # the replaced runs stay, superseded by the new ones
    assert {row["id"]: row["superseded_by"] for row in labeling_db.query(
        "SELECT id, superseded_by FROM segmentation_runs WHERE id = ANY(%s)",
        (list(stored.values()),))} == {stored[eid]: replaced[eid] for eid in stored}


def start_runner_until(cli_env, manifest, scratch, ready, seconds):
    """Start run_local (one worker) and wait until ``ready()``; return it and its tasks' pids."""
    scratch.mkdir()
    runner = subprocess.Popen(
        [sys.executable, "-m", RUN_LOCAL, "--manifest_json", str(manifest), "--workers", "1",
         "--tmp_dir", str(scratch), *SYNTHETIC_CELLS],
        env={**cli_env, "TRANSFORM_HASH": VERSION}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + seconds
    while not ready():
        assert runner.poll() is None, runner.communicate()
        assert time.monotonic() < deadline, "Suite2P never started"
        time.sleep(0.05)
    with open(f"/proc/{runner.pid}/task/{runner.pid}/children") as children:
        return runner, [int(pid) for pid in children.read().split()]


def test_ctrl_c_stops_the_running_task_and_leaves_nothing(
        labeling_db, cli_env, movies, tmp_path):
    scratch = tmp_path / "scratch"
    # the first task is inside Suite2P once anything is in the scratch directory
    runner, task_pids = start_runner_until(
        cli_env, write_manifest(tmp_path, movies), scratch,
        lambda: any(scratch.iterdir()), seconds=120)

    runner.send_signal(signal.SIGINT)
    stdout, stderr = runner.communicate(timeout=120)

    assert runner.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1] == "slapp run-local: interrupted"
    assert task_pids and not any(os.path.exists(f"/proc/{pid}") for pid in task_pids)
    assert list(scratch.iterdir()) == []
    assert runs(labeling_db) == {}
    assert "done:" not in stdout


@pytest.mark.parametrize("arguments, env, message", [
    (["--tmp_dir", "/dev/null"], {}, "tmp_dir /dev/null is not a directory"),
    ([], {"LABELING_USER": ""}, "environment variable LABELING_USER is not set"),
    (["--workers", 0], {}, "workers"),
    (["--diameter", 0], {}, "invalid input: diameter: Must be greater than or equal to 1"),
    (["--spatial_scale", "two"], {}, "spatial_scale: Not a valid integer"),
])
def test_bad_input_is_one_line_and_starts_nothing(
        labeling_db, run_cli, movies, tmp_path, arguments, env, message):
    manifest = write_manifest(tmp_path, movies)

    result = run_cli(RUN_LOCAL, "--manifest_json", manifest, *arguments, env=env)

    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("slapp run-local: error: ")
    assert message in result.stderr
    assert not (tmp_path / "segmentation_logs").exists()
    assert runs(labeling_db) == {}


@pytest.mark.parametrize("workers, cores, expected", [(1, 2, 2), (2, 2, 1), (3, 2, 1),
                                                      (2, 16, 8), (3, 16, 5)])
def test_cores_are_shared_out_between_workers(workers, cores, expected):
    assert threads_per_worker(workers, cores) == expected


@pytest.mark.parametrize("log, returncode, expected", [
    ("INFO: reading\nslapp segment: error: movie /m.h5 does not exist\n", 1,
     "slapp segment: error: movie /m.h5 does not exist"),
    ("INFO: running Suite2P\n", -9, "INFO: running Suite2P (killed by signal SIGKILL)"),
    ("", 3, "exit status 3"),
])
def test_a_failed_task_is_summed_up_in_one_line(tmp_path, log, returncode, expected):
    log_path = tmp_path / "task.log"
    log_path.write_text(log)

    assert last_error_line(log_path, returncode) == expected


def test_each_attempt_gets_its_own_log_and_two_manifests_do_not_collide(tmp_path):
    first = new_attempt_files(tmp_path, "batch_a_3_42")
    second = new_attempt_files(tmp_path, "batch_a_3_42")
    other = new_attempt_files(tmp_path, "batch_b_3_42")

    assert [path.name for path in (*first, *second, *other)] == [
        "batch_a_3_42_try1.log", "batch_a_3_42_try1.json", "batch_a_3_42_try2.log",
        "batch_a_3_42_try2.json", "batch_b_3_42_try1.log", "batch_b_3_42_try1.json"]
    assert all(path.exists() for path in (first[0], second[0], other[0]))


def test_stopping_interrupts_each_task_and_kills_one_that_ignores_it(tmp_path):
    polite = ("import time\ntry:\n    print('ready', flush=True)\n    time.sleep(60)\n"
              "except KeyboardInterrupt:\n    print('cleaned up')")
    stubborn = ("import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                "print('ready', flush=True)\ntime.sleep(60)")
    tasks = []
    for index, code in enumerate([polite, stubborn]):
        task = SegmentTask(index, {"experiment_id": 10 + index}, tmp_path, "manifest")
        task.start([sys.executable, "-c", code], dict(os.environ))
        tasks.append(task)
    while not all("ready" in task.log_path.read_text() for task in tasks):
        time.sleep(0.05)

    stop_tasks(tasks, grace_seconds=2)

    assert tasks[0].process.returncode == 0
    assert "cleaned up" in tasks[0].log_path.read_text()
    assert tasks[1].process.returncode == -signal.SIGKILL


@pytest.mark.slow
def test_a_task_killed_by_a_signal_is_recorded_and_the_next_task_clears_its_scratch(
        labeling_db, cli_env, movies, tmp_path):
    scratch = tmp_path / "scratch"
    manifest = write_manifest(tmp_path, movies)
    runner, [task] = start_runner_until(
        cli_env, manifest, scratch,
        lambda: list(scratch.glob("slapp_local_0_*/slapp_suite2p_*")), seconds=300)

    os.kill(task, signal.SIGKILL)  # as the kernel's OOM killer would
    stdout, stderr = runner.communicate(timeout=300)

    assert runner.returncode == 1, stderr
    assert stdout.splitlines()[0] == "done: 1, skipped: 0, failed: 1"
    assert "(killed by signal SIGKILL)" in stdout.splitlines()[1]
    [failure] = labeling_db.query("SELECT * FROM segmentation_failures")
    assert failure["ophys_experiment_id"] == 700000 and failure["manifest_index"] == 0
    assert failure["ophys_segmentation_commit_hash"] == VERSION
    assert failure["failure_class"] in ("killed", "out_of_memory")
    assert (failure["exit_status"], failure["signal_name"]) == (137, "SIGKILL")
    assert failure["parameters_digest"] is not None and failure["duration_seconds"] > 0
    assert sorted(runs(labeling_db)) == [700001]
    assert list(scratch.iterdir()) == []  # the second task removed the killed one's directory
