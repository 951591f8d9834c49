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


def test_a_restart_during_the_write_leaves_nothing_then_a_rerun_succeeds(small_server,
                                                                          small_db):
    blocker = small_server.admin_connection(embedded.LABELING_DATABASE)
    blocker.autocommit = False
    with blocker.cursor() as cursor:
        cursor.execute("LOCK TABLE rois IN ACCESS EXCLUSIVE MODE")
    task = start_writer(small_server, 3000)
    # wait until the task has inserted its run row and is blocked copying ROIs
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        waiting = small_db.query(
            "SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = 'slapp' "
            "AND wait_event_type = 'Lock' AND query LIKE 'COPY%%'")[0]["n"]
        if waiting:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the writer never reached its COPY")
    small_server.stop()  # fast shutdown: every open transaction is rolled back
    small_server.start()
    blocker.close()
    code, _, stderr = finish(task)
    assert code == 1
    lines = stderr.strip().splitlines()
    assert lines[-1].startswith("concurrent_writer: error: ")
    assert small_db.query("SELECT count(*) AS n FROM segmentation_runs") == [{"n": 0}]
    assert small_db.query("SELECT count(*) AS n FROM rois") == [{"n": 0}]

    code, stdout, stderr = finish(start_writer(small_server, 3000))
    assert code == 0, stderr
    assert json.loads(stdout)["n_rois"] == 10
