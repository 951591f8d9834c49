"""Many tasks writing at once, too few connection slots, and a server restarted mid-step.

These run against an embedded server of their own, started with a small
``max_connections``, so that the tests can exhaust and restart it without
disturbing the session's server.
"""
import json
import os
import socket
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest

from slapp import embedded
from slapp.demo.synthetic_movie import MovieSpec, write_movie
from slapp.utils.query_utils import DbConnection

WRITER = Path(__file__).with_name("concurrent_writer.py")
# Three slots are reserved for superusers, so five remain for the tasks' role.
MAX_CONNECTIONS = 8


@pytest.fixture(scope="module")
def small_server(server_home_factory):
    with closing(socket.socket()) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = embedded.EmbeddedServer(server_home_factory(), port=port,
                                     settings={"max_connections": MAX_CONNECTIONS})
    server.start()
    yield server
    server.stop()


@pytest.fixture
def small_db(small_server):
    with DbConnection(**small_server.credentials("labeling", "labeling")) as dbconn:
        dbconn.execute("TRUNCATE experiment_selection, segmentation_runs, rois "
                       "RESTART IDENTITY CASCADE")
        yield dbconn


def start_writer(server, experiment_id: int, n_rois: int = 10, nframes: int = 2000):
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("LIMS_", "LABELING_"))}
    env.update(server.environment())
    return subprocess.Popen([sys.executable, str(WRITER), str(experiment_id), str(n_rois),
                             str(nframes)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(process, timeout: float = 240):
    stdout, stderr = process.communicate(timeout=timeout)
    return process.returncode, stdout, stderr


@pytest.mark.slow
def test_32_concurrent_writes_with_too_few_connection_slots(small_server, small_db):
    # hold four of the five slots, so the 32 tasks queue for the last one
    holders = [DbConnection(**small_server.credentials("labeling", "labeling"))
               for _ in range(4)]
    for holder in holders:
        holder.connect()
    experiments = list(range(1000, 1024)) + list(range(1000, 1008))  # 8 written twice
    tasks = [start_writer(small_server, experiment_id) for experiment_id in experiments]
    time.sleep(1.0)
    for holder in holders:  # free the slots while the tasks are retrying
        holder.close()
    results = [finish(task) for task in tasks]

    failures = [stderr for code, _, stderr in results if code != 0]
    assert failures == []
    assert any("too many clients" in stderr or "reserved for" in stderr
               for _, _, stderr in results), "no task had to wait for a connection slot"
    outcomes = [json.loads(stdout) for _, stdout, _ in results]
    statuses = {}
    for outcome in outcomes:
        statuses.setdefault(outcome["experiment_id"], []).append(outcome["status"])
    # each experiment stored exactly once; of two identical tasks one wrote, one skipped
    assert all(sorted(found) == ["segmented", "skipped"]
               for experiment_id, found in statuses.items() if experiment_id < 1008)
    runs = small_db.query("SELECT ophys_experiment_id, count(*) AS n FROM segmentation_runs "
                          "GROUP BY ophys_experiment_id ORDER BY ophys_experiment_id")
    assert runs == [{"ophys_experiment_id": e, "n": 1} for e in range(1000, 1024)]
    rois = small_db.query("SELECT segmentation_run_id, count(*) AS n FROM rois "
                          "GROUP BY segmentation_run_id")
    assert len(rois) == 24 and all(row["n"] == 10 for row in rois)


def test_a_task_waits_for_a_server_that_is_restarting(small_server, small_db):
    small_server.stop()
    task = start_writer(small_server, 2000)
    time.sleep(2.0)
    small_server.start()
    code, stdout, stderr = finish(task)
    assert code == 0, stderr
    assert "retrying" in stderr
    assert json.loads(stdout)["status"] == "segmented"
    assert small_db.query("SELECT count(*) AS n FROM rois") == [{"n": 10}]


def wait_for_blocked_copy(small_db, process=None, timeout=300):
    """Wait until a task has inserted its run row and is blocked copying ROIs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        waiting = small_db.query(
            "SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = 'slapp' "
            "AND wait_event_type = 'Lock' AND query LIKE 'COPY%%'")[0]["n"]
        if waiting:
            return
        if process is not None and process.poll() is not None:
            pytest.fail(f"the task ended first: {process.communicate()}")
        time.sleep(0.1)
    pytest.fail("the writer never reached its COPY")


def lock_rois(small_server):
    blocker = small_server.admin_connection(embedded.LABELING_DATABASE)
    blocker.autocommit = False
    with blocker.cursor() as cursor:
        cursor.execute("LOCK TABLE rois IN ACCESS EXCLUSIVE MODE")
    return blocker


def test_a_restart_during_the_write_is_retried_and_stores_the_run_once(small_server,
                                                                       small_db):
    blocker = lock_rois(small_server)
    task = start_writer(small_server, 3000)
    wait_for_blocked_copy(small_db, task)
    small_server.stop()  # fast shutdown: every open transaction is rolled back
    small_server.start()
    blocker.close()
    code, stdout, stderr = finish(task)
    assert code == 0, stderr
    assert "retrying the write" in stderr
    assert json.loads(stdout)["status"] == "segmented"
    assert small_db.query("SELECT count(*) AS n FROM segmentation_runs") == [{"n": 1}]
    assert small_db.query("SELECT count(*) AS n FROM rois") == [{"n": 10}]


def wait_for_suite2p(scratch, task, timeout=300):
    """Wait until the task runs Suite2P (past its "already done?" query)."""
    deadline = time.monotonic() + timeout
    while not list(scratch.glob("slapp_*/slapp_suite2p_*")):
        assert task.poll() is None, task.communicate()
        assert time.monotonic() < deadline, "Suite2P never started"
        time.sleep(0.1)


def segment_task(small_server, tmp_path, *args):
    """A real segment task on a tiny synthetic movie, against the small server."""
    movie = tmp_path / "movie.h5"
    write_movie(movie, MovieSpec(nframes=600, height=64, width=64, ncells=6, seed=1))
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"manifest": [
        {"experiment_id": 4000, "nbinned": 5, "input_video": str(movie)}]}))
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("LIMS_", "LABELING_"))}
    env.update(small_server.environment(), TRANSFORM_HASH="reliability-segment")
    scratch = tmp_path / "scratch"
    return scratch, subprocess.Popen(
        [sys.executable, "-m", "slapp.segmentation.segment", "--manifest_json", str(manifest),
         "--manifest_index", "0", "--tmp_dir", str(scratch), "--diameter", "12",
         "--log_level", "INFO", *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_the_server_down_for_60_s_after_suite2p_the_run_is_stored_exactly_once(
        small_server, small_db, tmp_path):
    scratch, task = segment_task(small_server, tmp_path)
    wait_for_suite2p(scratch, task)
    blocker = lock_rois(small_server)
    wait_for_blocked_copy(small_db, task)  # Suite2P is done, its write under way
    small_server.stop()
    blocker.close()
    time.sleep(60)
    small_server.start()
    code, stdout, stderr = finish(task, timeout=600)

    assert code == 0, stderr
    assert "database unreachable" in stderr and "retrying the write in" in stderr
    assert "segmented as run" in stdout
    [run] = small_db.query("SELECT id, stage_seconds FROM segmentation_runs")
    assert run["stage_seconds"]["database_write"] > 0
    n_rois = small_db.query("SELECT count(*) AS n FROM rois WHERE segmentation_run_id = %s",
                            (run["id"],))[0]["n"]
    assert f"with {n_rois} ROIs" in stdout and n_rois > 0
    assert list(scratch.iterdir()) == []


@pytest.mark.slow
def test_sigterm_while_the_write_waits_for_the_server_leaves_nothing(
        small_server, small_db, tmp_path):
    scratch, task = segment_task(small_server, tmp_path)
    wait_for_suite2p(scratch, task)
    blocker = lock_rois(small_server)
    wait_for_blocked_copy(small_db, task)
    small_server.stop()
    blocker.close()
    deadline = time.monotonic() + 120
    while "retrying the write" not in (line := task.stderr.readline()):
        assert line and time.monotonic() < deadline, "the task never waited for the server"

    task.terminate()
    code, _, _ = finish(task)
    small_server.start()

    assert code == 128 + 15
    assert list(scratch.iterdir()) == []
    assert small_db.query("SELECT count(*) AS n FROM segmentation_runs") == [{"n": 0}]
    assert small_db.query("SELECT count(*) AS n FROM rois") == [{"n": 0}]
