"""The segment step's pieces without Suite2P: ROI conversion, the one-transaction store, the plot.

The store is exercised against the real labeling database: rows are read back
and compared with what was written, element for element. Outages are real too:
a server of the tests' own is stopped and started around a write.
"""
import json
import logging
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import closing

import numpy as np
import pytest

from stored_runs import insert_selection

from slapp import embedded
from slapp.segmentation import store
from slapp.segmentation.plot import outline_overlay, render_roi_plot
from slapp.segmentation.rois import RoiException, roi_from_suite2p, rois_from_suite2p
from slapp.segmentation.suite2p_runner import jsonable
from slapp.utils.query_utils import DbConnection

VERSION = "store-test-version"
DIGEST = "a" * 64
SHAPE = (32, 40)
FINGERPRINT = {"size_bytes": 128000, "mtime_ns": 1_790_000_000_123_456_789,
               "shape": [50, *SHAPE], "dtype": "uint16", "sampled_frames": [0, 7, 49],
               "sampled_sha256": "b" * 64}


def run_values(experiment_id=850517344, version=VERSION, digest=DIGEST, **changes):
    return {"ophys_experiment_id": experiment_id, "ophys_segmentation_commit_hash": version,
            "parameters_digest": digest, "source_video_path": "/movies/m.h5",
            "movie_fingerprint": FINGERPRINT, "video_shape": list(SHAPE), "nframes": 50,
            "nbinned": 5, "suite2p_version": "1.1.0",
            "suite2p_settings": {"settings": {"detection": {"threshold_scaling": 0.75}}},
            "suite2p_seconds": 1.5, "total_seconds": 2.5, "hostname": "node7", **changes}


def skipped(stored, n_rois):
    return store.StoredRun(stored.segmentation_run_id, store.SKIPPED, n_rois, FINGERPRINT)


def suite2p_stat(top, left, size=4, nframes=50):
    rows, cols = np.meshgrid(np.arange(top, top + size), np.arange(left, left + size),
                             indexing="ij")
    return {"ypix": rows.ravel(), "xpix": cols.ravel(),
            "lam": np.linspace(0.1, 1.0, size * size).astype(np.float32),
            "radius": 2.5, "aspect_ratio": 1.1, "compact": 1.02, "skew": 0.8}


def make_rois(count, nframes=50):
    rng = np.random.default_rng(count)
    stat = [suite2p_stat(2 + 5 * (k % 5), 3 + 6 * (k // 5)) for k in range(count)]
    traces = rng.normal(400, 20, (count, nframes)).astype(np.float32)
    neuropil = rng.normal(200, 10, (count, nframes)).astype(np.float32)
    iscell = np.column_stack([np.arange(count) % 2, np.linspace(0.2, 0.9, count)])
    return list(rois_from_suite2p(stat, traces, neuropil, iscell, SHAPE)), traces, neuropil


def stored_rois(dbconn, run_id):
    return dbconn.query("SELECT * FROM rois WHERE segmentation_run_id = %s "
                        "ORDER BY suite2p_roi_index", (run_id,))


def table_counts(dbconn):
    return dbconn.query("SELECT (SELECT count(*) FROM segmentation_runs) AS runs, "
                        "(SELECT count(*) FROM rois) AS rois")[0]


def test_roi_from_suite2p_keeps_the_weighted_mask_in_the_movie_frame():
    stat = {"ypix": np.array([3, 3, 4]), "xpix": np.array([5, 6, 5]),
            "lam": np.array([1.0, 3.0, 0.0]), "radius": 1.5, "aspect_ratio": 1.2,
            "compact": 1.01, "skew": 2.0}

    roi = roi_from_suite2p(4, stat, np.arange(6), np.ones(6), (1.0, 0.75), SHAPE)

    assert roi.suite2p_roi_index == 4
    assert roi.coo_row.tolist() == [3, 3, 4] and roi.coo_col.tolist() == [5, 6, 5]
    assert roi.coo_data.tolist() == [1.0, 3.0, 0.0]
    assert (roi.centroid_row, roi.centroid_col) == (3.0, 5.75)  # weighted by lam
    assert roi.is_cell is True and roi.cell_probability == 0.75 and roi.npix == 3
    assert roi.trace.dtype == np.float32 and roi.trace.tolist() == [0, 1, 2, 3, 4, 5]
    assert (roi.radius, roi.aspect_ratio, roi.compactness, roi.skew) == (1.5, 1.2, 1.01, 2.0)


@pytest.mark.parametrize("ypix, xpix, message", [
    ([3, 32], [1, 1], "Suite2P ROI 0 has pixels outside the 32x40 movie"),
    ([3, 4], [-1, 1], "Suite2P ROI 0 has pixels outside the 32x40 movie"),
    ([], [], "Suite2P ROI 0 has an empty or inconsistent mask (0 rows, 0 columns, 0 weights)"),
])
def test_roi_outside_the_movie_is_refused(ypix, xpix, message):
    stat = {**suite2p_stat(0, 0), "ypix": np.array(ypix), "xpix": np.array(xpix),
            "lam": np.ones(len(ypix))}
    with pytest.raises(RoiException) as error:
        roi_from_suite2p(0, stat, np.zeros(3), np.zeros(3), (0, 0.1), SHAPE)
    assert str(error.value) == message


def test_write_run_stores_the_run_and_every_roi_exactly(labeling_db):
    rois, traces, neuropil = make_rois(7)

    stored = store.write_run(labeling_db, run_values(), lambda: iter(rois))

    assert stored.status == store.SEGMENTED and stored.n_rois == 7
    run = labeling_db.query("SELECT * FROM segmentation_runs WHERE id = %s",
                            (stored.segmentation_run_id,))[0]
    assert run["video_shape"] == list(SHAPE) and run["hostname"] == "node7"
    assert run["suite2p_settings"] == {"settings": {"detection": {"threshold_scaling": 0.75}}}
    rows = stored_rois(labeling_db, stored.segmentation_run_id)
    assert [row["suite2p_roi_index"] for row in rows] == list(range(7))
    for row, roi, trace, neuropil_trace in zip(rows, rois, traces, neuropil):
        assert row["coo_row"] == roi.coo_row.tolist()
        assert row["coo_col"] == roi.coo_col.tolist()
        assert np.array_equal(np.float32(row["coo_data"]), roi.coo_data)
        assert np.array_equal(np.float32(row["trace"]), trace)  # float32 round trip, exact
        assert np.array_equal(np.float32(row["neuropil_trace"]), neuropil_trace)
        assert row["is_cell"] == roi.is_cell and row["npix"] == 16
        assert math.isclose(row["cell_probability"], roi.cell_probability, rel_tol=1e-6)
        assert math.isclose(row["centroid_row"], roi.centroid_row, rel_tol=1e-6)


def test_a_run_without_rois_is_a_run(labeling_db):
    stored = store.write_run(labeling_db, run_values(), lambda: iter([]))

    assert stored.status == store.SEGMENTED and stored.n_rois == 0
    assert table_counts(labeling_db) == {"runs": 1, "rois": 0}
    assert store.find_run(labeling_db, 850517344, VERSION, DIGEST) == skipped(stored, 0)


def test_second_write_of_the_same_run_is_skipped_and_writes_nothing(labeling_db):
    first = store.write_run(labeling_db, run_values(), lambda: iter(make_rois(3)[0]))

    second = store.write_run(labeling_db, run_values(hostname="node8"),
                             lambda: iter(make_rois(5)[0]))

    assert second == skipped(first, 3)
    assert table_counts(labeling_db) == {"runs": 1, "rois": 3}
    assert labeling_db.query("SELECT hostname FROM segmentation_runs")[0]["hostname"] == "node7"


def test_other_code_versions_parameters_and_experiments_are_separate_runs(labeling_db):
    store.write_run(labeling_db, run_values(), lambda: iter(make_rois(2)[0]))
    store.write_run(labeling_db, run_values(version="another"), lambda: iter(make_rois(2)[0]))
    store.write_run(labeling_db, run_values(experiment_id=1), lambda: iter(make_rois(2)[0]))
    sweep = store.write_run(labeling_db, run_values(digest="c" * 64),
                            lambda: iter(make_rois(2)[0]))

    assert sweep.status == store.SEGMENTED
    assert table_counts(labeling_db) == {"runs": 4, "rois": 8}
    assert store.find_run(labeling_db, 850517344, "never-ran", DIGEST) is None
    assert store.find_run(labeling_db, 850517344, VERSION, "d" * 64) is None
    assert store.find_run(labeling_db, 850517344, VERSION, "c" * 64) == skipped(sweep, 2)


def test_overwrite_supersedes_the_run_and_keeps_its_rois(labeling_db):
    old = store.write_run(labeling_db, run_values(), lambda: iter(make_rois(4)[0]))
    other = store.write_run(labeling_db, run_values(version="another"),
                            lambda: iter(make_rois(2)[0]))
    swept = store.write_run(labeling_db, run_values(digest="c" * 64),
                            lambda: iter(make_rois(1)[0]))
    changed_movie = {**FINGERPRINT, "size_bytes": 1}

    new = store.write_run(labeling_db, run_values(hostname="node9",
                                                  movie_fingerprint=changed_movie),
                          lambda: iter(make_rois(3)[0]), overwrite=True)

    assert new.status == store.SEGMENTED and new.n_rois == 3
    assert new.movie_fingerprint == changed_movie
    assert new.segmentation_run_id not in (old.segmentation_run_id, other.segmentation_run_id)
    # the old run and its ROIs stay, superseded by the new run; only it was touched
    assert len(stored_rois(labeling_db, old.segmentation_run_id)) == 4
    assert len(stored_rois(labeling_db, other.segmentation_run_id)) == 2
    assert len(stored_rois(labeling_db, swept.segmentation_run_id)) == 1
    assert table_counts(labeling_db) == {"runs": 4, "rois": 10}
    assert {row["id"]: row["superseded_by"] for row in labeling_db.query(
        "SELECT id, superseded_by FROM segmentation_runs")} == {
        old.segmentation_run_id: new.segmentation_run_id, other.segmentation_run_id: None,
        swept.segmentation_run_id: None, new.segmentation_run_id: None}
    found = store.find_run(labeling_db, 850517344, VERSION, DIGEST)
    assert (found.segmentation_run_id, found.movie_fingerprint) == (new.segmentation_run_id,
                                                                    changed_movie)
    # a second overwrite supersedes the new run in turn
    newest = store.write_run(labeling_db, run_values(), lambda: iter(make_rois(1)[0]),
                             overwrite=True)
    assert labeling_db.query("SELECT superseded_by FROM segmentation_runs WHERE id = %s",
                             (new.segmentation_run_id,)) == [
        {"superseded_by": newest.segmentation_run_id}]


def test_a_bad_roi_midway_leaves_no_run_and_no_roi(labeling_db):
    rois, traces, neuropil = make_rois(6)
    stat = [suite2p_stat(2, 3) for _ in range(6)]
    stat[4] = {**stat[4], "ypix": stat[4]["ypix"] + 100}  # outside the movie
    streamed = rois_from_suite2p(stat, traces, neuropil, np.zeros((6, 2)), SHAPE)

    with pytest.raises(RoiException, match="Suite2P ROI 4 has pixels outside"):
        store.write_run(labeling_db, run_values(), lambda: streamed)

    assert table_counts(labeling_db) == {"runs": 0, "rois": 0}


def test_a_failed_overwrite_keeps_the_old_run(labeling_db):
    old = store.write_run(labeling_db, run_values(), lambda: iter(make_rois(4)[0]))

    def failing_rois():
        yield from make_rois(2)[0]
        raise RoiException("disk trouble")

    with pytest.raises(RoiException):
        store.write_run(labeling_db, run_values(), failing_rois, overwrite=True)

    assert store.find_run(labeling_db, 850517344, VERSION, DIGEST) == skipped(old, 4)


def test_every_column_of_a_run_is_stored_and_the_write_time_added(labeling_db):
    extra = {"code_label": "slapp 0.1.0 (git 56adc0c)", "frame_source": "hdf5_stream",
             "stage_seconds": {"read_and_bin": 1.25, "detection": 3.5},
             "peak_rss_bytes": 2 ** 33, "scratch_bytes": 12345, "scheduler_job_id": "4242",
             "scheduler_task_id": "7",
             "experiment_selection_id": insert_selection(labeling_db, [850517344]),
             "manifest_path": "/batches/one/manifest.json"}

    stored = store.write_run(labeling_db, run_values(**extra), lambda: iter(make_rois(2)[0]))

    row = labeling_db.query("SELECT * FROM segmentation_runs WHERE id = %s",
                            (stored.segmentation_run_id,))[0]
    assert stored.movie_fingerprint == FINGERPRINT
    assert row["movie_fingerprint"] == FINGERPRINT  # the nanosecond mtime exactly
    assert row["parameters_digest"] == DIGEST
    stage_seconds = row.pop("stage_seconds")
    assert stage_seconds.pop("database_write") > 0
    assert stage_seconds == extra.pop("stage_seconds")
    assert {name: row[name] for name in extra} == extra


def test_a_run_without_optional_columns_gets_their_defaults(labeling_db):
    stored = store.write_run(labeling_db, run_values(), lambda: iter([]))

    row = labeling_db.query("SELECT * FROM segmentation_runs WHERE id = %s",
                            (stored.segmentation_run_id,))[0]
    assert (row["code_label"], row["frame_source"]) == ("", "binary")
    assert set(row["stage_seconds"]) == {"database_write"}
    assert row["scheduler_job_id"] is None and row["peak_rss_bytes"] is None


@pytest.mark.parametrize("change, message", [
    ({"parameters_digest": None}, "missing ['parameters_digest'], unknown []"),
    ({"movie": "x"}, "missing [], unknown ['movie']"),
])
def test_a_run_with_missing_or_unknown_columns_is_refused(labeling_db, change, message):
    run = {key: value for key, value in {**run_values(), **change}.items() if value is not None}
    with pytest.raises(ValueError, match=re.escape(message)):
        store.write_run(labeling_db, run, lambda: iter([]))
    assert table_counts(labeling_db) == {"runs": 0, "rois": 0}


def failure_values(**changes):
    return {"ophys_experiment_id": 850517344, "ophys_segmentation_commit_hash": VERSION,
            "parameters_digest": DIGEST, "manifest_path": "/data/manifest.json",
            "manifest_index": 3, "hostname": "node7", "scheduler_job_id": "4242",
            "scheduler_task_id": "3", "failure_class": "suite2p_error",
            "message": "Suite2P failed on /movies/m.h5: boom",
            "traceback": "Traceback (most recent call last):\n  ...\nValueError: boom",
            "exit_status": 1, "signal_name": None, "duration_seconds": 812.5, **changes}


def test_a_failure_is_recorded(labeling_db, embedded_server):
    credentials = embedded_server.credentials(embedded.LABELING_ROLE,
                                              embedded.LABELING_DATABASE)

    assert store.record_failure(credentials, failure_values()) is True
    assert store.record_failure(credentials, {
        "ophys_segmentation_commit_hash": VERSION, "manifest_path": "/data/manifest.json",
        "manifest_index": 99, "hostname": "node8", "failure_class": "bad_input",
        "message": "manifest_index 99 is out of range: the manifest has 4 entries"}) is True

    rows = labeling_db.query("SELECT * FROM segmentation_failures ORDER BY id")
    assert len(rows) == 2
    assert {key: rows[0][key] for key in failure_values()} == failure_values()
    assert rows[1]["ophys_experiment_id"] is None and rows[1]["parameters_digest"] is None


def test_a_failure_that_cannot_be_recorded_is_logged_instead(labeling_db, embedded_server,
                                                             caplog, monkeypatch):
    monkeypatch.setattr(store, "FAILURE_RECORD_SECONDS", 1.5)
    credentials = embedded_server.credentials(embedded.LABELING_ROLE,
                                              embedded.LABELING_DATABASE)
    with closing(socket.socket()) as probe:  # a port where no server listens
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    cases = [({**credentials, "port": closed_port}, failure_values()),
             ({**credentials, "password": "wrong-password"}, failure_values()),
             (credentials, failure_values(failure_class="gremlins"))]

    for given, failure in cases:
        caplog.clear()
        started = time.monotonic()
        with caplog.at_level(logging.ERROR, logger="slapp.segmentation.store"):
            assert store.record_failure(given, failure) is False
        assert time.monotonic() - started < 15
        [record] = caplog.records
        assert record.levelname == "ERROR"
        assert record.getMessage().startswith(
            "could not record the failure of experiment 850517344 in the database (")
        assert record.getMessage().endswith(
            f"): {failure['failure_class']}: Suite2P failed on /movies/m.h5: boom")
        assert "wrong-password" not in record.getMessage()
        assert credentials["password"] not in record.getMessage()
    assert labeling_db.query("SELECT count(*) AS n FROM segmentation_failures") == [{"n": 0}]


def test_settings_become_plain_json_that_jsonb_accepts():
    settings = {"block_size": (128, 128), "diameter": np.array([12.0, 12.0]),
                "nbins": np.int64(26), "max": float("inf"), "flag": np.bool_(True),
                "nested": {"path": __import__("pathlib").Path("/tmp/x"), "none": None}}

    converted = jsonable(settings)

    assert converted == {"block_size": [128, 128], "diameter": [12.0, 12.0], "nbins": 26,
                         "max": "inf", "flag": True,
                         "nested": {"path": "/tmp/x", "none": None}}
    json.dumps(converted, allow_nan=False)


def test_outline_overlay_colours_only_the_edge_of_each_mask():
    rows, cols = np.meshgrid(np.arange(2, 7), np.arange(3, 8), indexing="ij")

    overlay = outline_overlay([(rows.ravel(), cols.ravel())], [True], (10, 10))

    painted = overlay[..., 3] > 0
    assert painted[2, 3:8].all() and painted[6, 3:8].all()  # top and bottom edges
    assert painted[2:7, 3].all() and painted[2:7, 7].all()  # left and right edges
    assert not painted[3:6, 4:7].any()                      # inside
    assert painted.sum() == 16 and not painted[0].any()


def test_plot_is_rendered_as_png_bytes():
    image = np.random.default_rng(0).normal(100, 10, SHAPE).astype(np.float32)

    png = render_roi_plot(image, [(np.array([4, 4, 5]), np.array([6, 7, 6]))], [False],
                          "experiment 1: 1 ROIs, 0 classified as cells")

    assert png.startswith(b"\x89PNG\r\n\x1a\n")


# --- the write against a database that goes away ---------------------------------------

WAIT_LINE = re.compile(r"database unreachable \(.+\); retrying the write in \d+ s, \d+ s left")


@pytest.fixture(scope="module")
def outage_server(server_home_factory):
    """A server of these tests' own, so that stopping it disturbs no other test."""
    with closing(socket.socket()) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = embedded.EmbeddedServer(server_home_factory(), port=port)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def outage_db(outage_server):
    """The outage server's labeling database, emptied; running again after the test."""
    credentials = outage_server.credentials(embedded.LABELING_ROLE, embedded.LABELING_DATABASE)
    with DbConnection(**credentials) as dbconn:
        dbconn.execute("TRUNCATE segmentation_runs, rois, segmentation_failures "
                       "RESTART IDENTITY CASCADE")
    yield credentials
    outage_server.start()  # a no-op when it runs


class CountedFactory:
    """A rois_factory that counts how often the write asked for the ROIs."""

    def __init__(self, count):
        self.rois = make_rois(count)[0]
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return iter(self.rois)


def counts(credentials):
    with DbConnection(**credentials) as dbconn:
        return table_counts(dbconn)


def test_a_write_waits_for_a_server_that_comes_back(outage_server, outage_db, caplog):
    factory = CountedFactory(10)
    outage_server.stop()  # Suite2P's outputs are ready, the server is not
    restart = threading.Timer(5.0, outage_server.start)
    restart.start()
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="slapp.segmentation.store"), \
            DbConnection(**outage_db, connect_attempts=1) as dbconn:
        stored = store.write_run(dbconn, run_values(), factory, retry_seconds=60)
    restart.join()

    assert stored.status == store.SEGMENTED and stored.n_rois == 10
    assert time.monotonic() - started >= 5
    waits = [record.getMessage() for record in caplog.records
             if record.name == "slapp.segmentation.store"]
    assert waits and all(WAIT_LINE.fullmatch(line) for line in waits), waits
    assert factory.calls == len(waits) + 1
    assert counts(outage_db) == {"runs": 1, "rois": 10}


def test_a_write_gives_up_when_the_retry_time_is_over(outage_server, outage_db):
    outage_server.stop()
    started = time.monotonic()
    with DbConnection(**outage_db, connect_attempts=1) as dbconn, \
            pytest.raises(store.DatabaseUnreachable) as error:
        store.write_run(dbconn, run_values(), CountedFactory(3), retry_seconds=2)

    assert 2 <= time.monotonic() - started < 10
    assert str(error.value).startswith(
        f"database labeling on 127.0.0.1:{outage_server.port} unreachable for 2 s; the run "
        "of experiment 850517344 was not stored (")
    assert outage_db["password"] not in str(error.value)
    outage_server.start()
    assert counts(outage_db) == {"runs": 0, "rois": 0}


def test_a_restart_during_the_copy_is_retried_and_stored_once(outage_server, outage_db):
    blocker = outage_server.admin_connection(embedded.LABELING_DATABASE)
    blocker.autocommit = False
    with blocker.cursor() as cursor:  # the write inserts its run row, then waits on COPY
        cursor.execute("LOCK TABLE rois IN ACCESS EXCLUSIVE MODE")
    factory, outcome = CountedFactory(10), {}

    def write():
        with DbConnection(**outage_db, connect_attempts=1) as dbconn:
            outcome["stored"] = store.write_run(dbconn, run_values(), factory,
                                                retry_seconds=60)
    writer = threading.Thread(target=write)
    writer.start()
    with DbConnection(**outage_db) as watcher:
        deadline = time.monotonic() + 60
        while not watcher.query(
                "SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = 'slapp' "
                "AND wait_event_type = 'Lock' AND query LIKE 'COPY%%'")[0]["n"]:
            assert time.monotonic() < deadline, "the write never reached its COPY"
            time.sleep(0.1)
    outage_server.stop()  # fast shutdown: the open transaction is rolled back
    blocker.close()
    time.sleep(2.0)
    outage_server.start()
    writer.join(timeout=120)

    assert not writer.is_alive()
    assert outcome["stored"].status == store.SEGMENTED and outcome["stored"].n_rois == 10
    assert factory.calls >= 2
    assert counts(outage_db) == {"runs": 1, "rois": 10}


SIGTERM_WRITER = """
import logging, os, signal, sys
from slapp.segmentation import store
from slapp.utils.query_utils import DbConnection
sys.path[:0] = [sys.argv[1], os.path.dirname(sys.argv[1])]  # the test module, stored_runs
from test_segment_store import run_values, make_rois

def leave(signum, frame):
    raise SystemExit(128 + signum)

signal.signal(signal.SIGTERM, leave)
logging.basicConfig(level=logging.WARNING, format="%(levelname)s:%(name)s:%(message)s")
credentials = dict(zip(("host", "port", "database", "user", "password"), sys.argv[2:7]))
with DbConnection(**credentials, connect_attempts=1) as dbconn:
    store.write_run(dbconn, run_values(), lambda: iter(make_rois(5)[0]), retry_seconds=300)
"""


def test_sigterm_while_waiting_for_the_database_leaves_nothing(outage_server, outage_db):
    outage_server.stop()
    task = subprocess.Popen(
        [sys.executable, "-c", SIGTERM_WRITER, os.path.dirname(__file__),
         *(str(outage_db[key]) for key in ("host", "port", "database", "user", "password"))],
        stderr=subprocess.PIPE, text=True)
    try:
        line = task.stderr.readline()
        assert "WARNING:slapp.segmentation.store:database unreachable (" in line, line
        task.send_signal(signal.SIGTERM)
        started = time.monotonic()
        assert task.wait(timeout=30) == 128 + signal.SIGTERM
        assert time.monotonic() - started < 5
    finally:
        task.kill()
        task.stderr.close()
    outage_server.start()
    assert counts(outage_db) == {"runs": 0, "rois": 0}


@pytest.mark.slow
def test_a_server_back_after_a_minute_gets_the_run_exactly_once(outage_server, outage_db):
    """As a task does it: the default connection retries, then the write's own."""
    outage_server.stop()
    restart = threading.Timer(60.0, outage_server.start)
    restart.start()
    with DbConnection(**outage_db) as dbconn:
        stored = store.write_run(dbconn, run_values(), CountedFactory(20).__call__)
    restart.join()

    assert stored.status == store.SEGMENTED and stored.n_rois == 20
    assert counts(outage_db) == {"runs": 1, "rois": 20}
