"""What the segment command leaves behind when things go wrong, with real processes and locks.

* killed (SIGKILL) in the middle of its database write: no run, no ROI;
* two identical tasks at once: the unique constraint decides, one reports skipped;
* terminated (SIGTERM, as ``scancel`` or a time limit does) while Suite2P runs:
  temporary files removed, nothing written;
* Suite2P failing on a movie: one error line, temporary files removed, nothing written;
* a movie without cells: a valid run with zero ROIs.

The write is caught in the act without any hook in the code: the test holds an
``ACCESS EXCLUSIVE`` lock on ``rois`` (taken once Suite2P is running, i.e. after
the command's "already done?" query), so the command's transaction blocks in
its COPY of the ROIs, after it inserted the run row.
"""
import json
import signal
import socket
import subprocess
import sys
import time
from contextlib import closing

import h5py
import numpy as np
import pytest

from slapp import embedded
from slapp.demo.synthetic_movie import MovieSpec, write_movie

VERSION = "segment-failure-test-version"
PINNED = {"TRANSFORM_HASH": VERSION}
SEGMENT = "slapp.segmentation.segment"
WAIT_SECONDS = 600
# What Suite2P's detection raises (from scipy's spline smoothing) on 4 x 4 frames; a
# movie of fewer than 50 frames, the old way to make Suite2P fail, is now refused
# before Suite2P (tests/segmentation/test_bad_movies.py).
SUITE2P_ERROR = "error: (1<=kx && kx<=5) failed for 5th keyword kx: regrid_smth:kx=0"

WAITING_BACKENDS = """
SELECT pid, query, wait_event FROM pg_stat_activity
WHERE datname = 'labeling' AND application_name = 'slapp' AND wait_event_type = 'Lock'
"""


@pytest.fixture(scope="module")
def movies(tmp_path_factory):
    """A small movie with six cells and one of pure shot noise, each in a manifest."""
    directory = tmp_path_factory.mktemp("failure_movies")
    cells = directory / "cells.h5"
    write_movie(cells, MovieSpec(nframes=1000, height=64, width=64, ncells=6, seed=5))
    noise = directory / "noise.h5"
    rng = np.random.default_rng(0)
    with h5py.File(noise, "w") as movie:
        movie.create_dataset("data", data=(100 + 20 * rng.poisson(5, (600, 64, 64)))
                             .astype(np.uint16))
    # Enough frames for slapp's checks, a frame too small for Suite2P's detection.
    too_small = directory / "too_small.h5"
    with h5py.File(too_small, "w") as movie:
        movie.create_dataset("data", data=rng.integers(0, 500, (60, 4, 4), dtype=np.uint16))
    manifest = directory / "manifest.json"
    manifest.write_text(json.dumps({"manifest": [
        {"experiment_id": 701, "nbinned": 45, "input_video": str(cells)},
        {"experiment_id": 702, "nbinned": 27, "input_video": str(noise)},
        {"experiment_id": 703, "nbinned": 1, "input_video": str(too_small)}]}))
    return manifest


def start_segment(cli_env, manifest, index, scratch, *args):
    return subprocess.Popen(
        [sys.executable, "-m", SEGMENT, "--manifest_json", str(manifest),
         "--manifest_index", str(index), "--tmp_dir", str(scratch), *map(str, args)],
        env={**cli_env, **PINNED}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition, process_list, what):
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        for process in process_list:
            if process.poll() is not None:
                raise AssertionError(f"segment exited ({process.returncode}) before {what}: "
                                     f"{process.stderr.read()}")
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def suite2p_started(scratch, count=1):
    """Suite2P's working directories exist inside the tasks' scratch directories."""
    return lambda: len(list(scratch.glob("slapp_local_*/slapp_suite2p_*"))) >= count


def table_counts(dbconn):
    return dbconn.query("SELECT (SELECT count(*) FROM segmentation_runs) AS runs, "
                        "(SELECT count(*) FROM rois) AS rois")[0]


@pytest.fixture
def rois_lock(embedded_server):
    """A connection that can hold ``LOCK TABLE rois`` until the test releases it."""
    with closing(embedded_server.admin_connection(embedded.LABELING_DATABASE)) as connection:
        connection.autocommit = False
        yield connection
        connection.rollback()


def test_kill_during_the_database_write_leaves_no_run_and_no_roi(
        labeling_db, embedded_server, cli_env, movies, tmp_path, rois_lock):
    process = start_segment(cli_env, movies, 0, tmp_path)
    wait_for(suite2p_started(tmp_path), [process], "Suite2P started")
    rois_lock.cursor().execute("LOCK TABLE rois IN ACCESS EXCLUSIVE MODE")
    with closing(embedded_server.admin_connection(embedded.LABELING_DATABASE)) as monitor, \
            monitor.cursor() as cursor:
        def blocked_in_copy():
            cursor.execute(WAITING_BACKENDS)
            return [row for row in cursor.fetchall() if row[1].lstrip().startswith("COPY")]
        [(pid, query, _)] = wait_for(blocked_in_copy, [process], "the write blocked")
        # The run row is already inserted in the blocked transaction.
        cursor.execute("SELECT mode FROM pg_locks WHERE pid = %s AND granted "
                       "AND relation = 'segmentation_runs'::regclass", (pid,))
        assert ("RowExclusiveLock",) in cursor.fetchall()
        assert '"rois"' in query

        def backend_ended():
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,))
            return cursor.fetchone()[0] == 0

        process.kill()
        process.wait()
        rois_lock.rollback()
        wait_for(backend_ended, [], "the killed task's transaction to end")

    assert process.returncode == -signal.SIGKILL
    assert table_counts(labeling_db) == {"runs": 0, "rois": 0}
    assert not list((movies.parent / "segmentation_plots").glob("701_*.png"))


@pytest.mark.slow
def test_identical_tasks_at_once_store_one_run_and_the_other_reports_skipped(
        labeling_db, embedded_server, cli_env, movies, tmp_path, rois_lock):
    outputs = [tmp_path / "first.json", tmp_path / "second.json"]
    processes = [start_segment(cli_env, movies, 0, tmp_path, "--output_json", output)
                 for output in outputs]
    wait_for(suite2p_started(tmp_path, count=2), processes, "both Suite2P runs started")
    rois_lock.cursor().execute("LOCK TABLE rois IN ACCESS EXCLUSIVE MODE")
    with closing(embedded_server.admin_connection(embedded.LABELING_DATABASE)) as monitor, \
            monitor.cursor() as cursor:
        def both_blocked():
            cursor.execute(WAITING_BACKENDS)
            return len(cursor.fetchall()) == 2  # one in COPY, one on the unique key
        wait_for(both_blocked, processes, "both writes blocked")
    rois_lock.rollback()
    for process in processes:
        process.wait(timeout=WAIT_SECONDS)
        assert process.returncode == 0, process.stderr.read()

    results = [json.loads(output.read_text()) for output in outputs]
    assert sorted(result["status"] for result in results) == ["segmented", "skipped"]
    assert results[0]["segmentation_run_id"] == results[1]["segmentation_run_id"]
    assert results[0]["n_rois"] == results[1]["n_rois"] > 0
    assert table_counts(labeling_db) == {"runs": 1, "rois": results[0]["n_rois"]}
    assert sorted(path.name for path in tmp_path.iterdir()) == ["first.json", "second.json"]


def test_sigterm_while_suite2p_runs_removes_its_files_and_writes_nothing(
        labeling_db, cli_env, movies, tmp_path):
    process = start_segment(cli_env, movies, 0, tmp_path)
    wait_for(suite2p_started(tmp_path), [process], "Suite2P started")

    process.terminate()
    process.wait(timeout=WAIT_SECONDS)

    assert process.returncode == 128 + signal.SIGTERM
    assert list(tmp_path.iterdir()) == []
    assert table_counts(labeling_db) == {"runs": 0, "rois": 0}


@pytest.mark.slow
def test_suite2p_failure_ends_in_one_line_after_its_traceback_and_leaves_nothing(
        labeling_db, run_cli, movies, tmp_path):
    result = run_cli(SEGMENT, "--manifest_json", movies, "--manifest_index", 2,
                     "--tmp_dir", tmp_path, env=PINNED)

    assert result.returncode == 1
    too_small = json.loads(movies.read_text())["manifest"][2]["input_video"]
    message = f"Suite2P failed on {too_small}: {SUITE2P_ERROR}"
    lines = result.stderr.strip().splitlines()
    assert lines[-1] == f"slapp segment: error: {message}"
    # stderr is not a terminal (a job's log): the full traceback comes first
    assert lines[0] == "Traceback (most recent call last):"
    assert any(line.endswith(f"Suite2pRunException: {message}") for line in lines[:-1])
    [failure] = labeling_db.query("SELECT * FROM segmentation_failures")
    assert (failure["ophys_experiment_id"], failure["failure_class"], failure["message"]) == (
        703, "suite2p_error", message)
    assert f"_dfitpack.{SUITE2P_ERROR}" in failure["traceback"]
    assert list(tmp_path.iterdir()) == []
    assert table_counts(labeling_db) == {"runs": 0, "rois": 0}
    assert not list((movies.parent / "segmentation_plots").glob("703_*.png"))


@pytest.mark.slow
def test_movie_without_cells_is_a_run_with_zero_rois(labeling_db, run_cli, movies, tmp_path):
    output = tmp_path / "out.json"

    result = run_cli(SEGMENT, "--manifest_json", movies, "--manifest_index", 1,
                     "--tmp_dir", tmp_path, "--output_json", output, env=PINNED)

    assert result.returncode == 0, result.stderr
    reported = json.loads(output.read_text())
    plot = movies.parent / "segmentation_plots" / f"702_{reported['segmentation_run_id']}.png"
    assert reported == {"experiment_id": 702, "status": "segmented", "n_rois": 0,
                        "segmentation_run_id": reported["segmentation_run_id"],
                        "plot_path": str(plot)}
    assert plot.read_bytes().startswith(b"\x89PNG")
    run = labeling_db.query("SELECT * FROM segmentation_runs")
    assert [(row["id"], row["ophys_experiment_id"], row["nframes"], row["video_shape"])
            for row in run] == [(reported["segmentation_run_id"], 702, 600, [64, 64])]
    assert table_counts(labeling_db) == {"runs": 1, "rois": 0}
    assert [path.name for path in tmp_path.iterdir()] == ["out.json"]


@pytest.mark.slow
def test_kept_suite2p_files_are_named_in_the_error(labeling_db, run_cli, movies, tmp_path):
    result = run_cli(SEGMENT, "--manifest_json", movies, "--manifest_index", 2,
                     "--tmp_dir", tmp_path, "--keep_suite2p_results", env=PINNED)

    assert result.returncode == 1
    [kept] = list(tmp_path.iterdir())
    assert result.stderr.strip().splitlines()[-1].endswith(
        f"{SUITE2P_ERROR} (Suite2P's files kept in {kept})")
    # frames are streamed from the HDF5 file: Suite2P's plane folder, no binary copy
    assert (kept / "suite2p" / "plane0").is_dir()
    assert not list(kept.rglob("*.bin"))
    assert table_counts(labeling_db) == {"runs": 0, "rois": 0}


def block_in_copy(embedded_server, rois_lock, process):
    """Hold the ROI table until ``process`` waits in its COPY (run row inserted)."""
    rois_lock.cursor().execute("LOCK TABLE rois IN ACCESS EXCLUSIVE MODE")
    with closing(embedded_server.admin_connection(embedded.LABELING_DATABASE)) as monitor, \
            monitor.cursor() as cursor:
        def blocked_in_copy():
            cursor.execute(WAITING_BACKENDS)
            return [row for row in cursor.fetchall() if row[1].lstrip().startswith("COPY")]
        return wait_for(blocked_in_copy, [process], "the write blocked")


@pytest.mark.slow
@pytest.mark.parametrize("phase", ["suite2p", "write"])
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_a_signal_at_each_phase_leaves_no_run_and_the_next_task_clears_the_scratch(
        labeling_db, embedded_server, cli_env, movies, tmp_path, rois_lock, phase, signum):
    process = start_segment(cli_env, movies, 0, tmp_path)
    wait_for(suite2p_started(tmp_path), [process], "Suite2P started")
    if phase == "write":
        block_in_copy(embedded_server, rois_lock, process)

    process.send_signal(signum)
    # A SIGTERM'd task leaves libpq's wait for the lock only when the COPY returns; it
    # must then roll back instead of committing.
    rois_lock.rollback()
    process.wait(timeout=WAIT_SECONDS)

    assert process.returncode == (128 + signum if signum == signal.SIGTERM else -signum)
    left = list(tmp_path.iterdir())
    # SIGTERM: the task cleaned up itself; SIGKILL: its directory stays until the next task
    assert [path.name for path in left] == (
        [] if signum == signal.SIGTERM else [f"slapp_local_0_{socket.gethostname()}_"
                                             f"{process.pid}"])
    deadline = time.monotonic() + 60
    while table_counts(labeling_db) != {"runs": 0, "rois": 0}:  # the backend rolls back
        assert time.monotonic() < deadline, table_counts(labeling_db)
        time.sleep(0.1)

    next_task = start_segment(cli_env, movies, 2, tmp_path)  # the too-short movie: fails fast
    next_task.communicate(timeout=WAIT_SECONDS)

    assert next_task.returncode == 1
    assert list(tmp_path.iterdir()) == []
    assert table_counts(labeling_db) == {"runs": 0, "rois": 0}
