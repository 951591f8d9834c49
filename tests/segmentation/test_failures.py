"""Failure classes of exceptions and of processes that died, and the rows recorded for them."""
import dataclasses
import json
import signal
import socket

import marshmallow as mm
import psycopg2
import pytest

from slapp.segmentation import failures
from slapp.segmentation.segment import MovieChangedException, SegmentationException
from slapp.segmentation.settings import Suite2pOptions, parameters_digest
from slapp.segmentation.suite2p_runner import Suite2pRunException, suite2p_version


def raised_from(error, cause):
    try:
        try:
            raise cause
        except BaseException as inner:
            raise error from inner
    except BaseException as outer:
        return outer


@pytest.mark.parametrize("error, expected", [
    (MemoryError(), failures.OUT_OF_MEMORY),
    (raised_from(Suite2pRunException("Suite2P failed on m.h5: MemoryError"), MemoryError()),
     failures.OUT_OF_MEMORY),
    (KeyboardInterrupt(), failures.KILLED),
    (SystemExit(143), failures.KILLED),
    (psycopg2.OperationalError("connection to server failed: Connection refused"),
     failures.DATABASE_UNREACHABLE),
    (psycopg2.InterfaceError("connection already closed"), failures.DATABASE_UNREACHABLE),
    (psycopg2.OperationalError('password authentication failed for user "x"'),
     failures.BAD_INPUT),
    (Suite2pRunException("Suite2P failed on m.h5: number of frames should be at least 50"),
     failures.SUITE2P_ERROR),
    (SegmentationException("movie /m.h5 does not exist"), failures.BAD_INPUT),
    (MovieChangedException("movie /m.h5 changed since run 3 was made from it"),
     failures.BAD_INPUT),
    (mm.ValidationError({"diameter": ["Must be greater than or equal to 1."]}),
     failures.BAD_INPUT),
    (ZeroDivisionError("division by zero"), failures.OTHER),
])
def test_exceptions_are_classified(error, expected):
    assert failures.classify_exception(error) == expected


def test_a_store_timeout_is_database_unreachable():
    from slapp.segmentation.store import DatabaseUnreachable

    error = raised_from(DatabaseUnreachable("the labeling database stayed unreachable"),
                        psycopg2.OperationalError("server closed the connection"))

    assert failures.classify_exception(error) == failures.DATABASE_UNREACHABLE


@pytest.mark.parametrize("returncode, oom_kills, expected", [
    (-signal.SIGKILL, 1, (failures.OUT_OF_MEMORY,
                          "killed by SIGKILL: out of memory (the task's cgroup counted 1 OOM "
                          "kill)", "SIGKILL")),
    (137, 2, (failures.OUT_OF_MEMORY,
              "killed by SIGKILL: out of memory (the task's cgroup counted 2 OOM kills)",
              "SIGKILL")),
    (137, 0, (failures.KILLED, "killed by SIGKILL by the scheduler (scancel, qdel, time or "
                               "memory limit) or a user", "SIGKILL")),
    (143, 0, (failures.KILLED, "killed by SIGTERM (scancel, qdel, the job's time limit or "
                               "Ctrl-C)", "SIGTERM")),
    (-signal.SIGINT, 0, (failures.KILLED, "killed by SIGINT (scancel, qdel, the job's time "
                                          "limit or Ctrl-C)", "SIGINT")),
    (-signal.SIGSEGV, 0, (failures.OTHER, "crashed with SIGSEGV; see the task's log",
                          "SIGSEGV")),
    (2, 0, (failures.OTHER, "the task ended with exit status 2; see its log", None)),
])
def test_process_endings_are_classified(returncode, oom_kills, expected):
    assert failures.classify_exit(returncode, oom_kills) == expected


def test_the_oom_kill_count_of_this_cgroup_is_read():
    count = failures.oom_kill_count()

    assert count is None or count >= 0


def test_the_transient_classes_are_those_a_resubmission_may_cure():
    assert set(failures.TRANSIENT_CLASSES) == {"killed", "out_of_memory",
                                               "database_unreachable"}
    assert set(failures.FAILURE_CLASSES) >= set(failures.TRANSIENT_CLASSES)


def test_exit_0_and_1_record_nothing(tmp_path):
    for returncode in (0, 1):
        assert failures.record_ended_task(tmp_path / "m.json", 0, returncode, 1.0) is None


RECORD = "slapp.segmentation.failures"


def write_manifest(directory):
    path = directory / "manifest.json"
    path.write_text(json.dumps({"manifest": [
        {"experiment_id": 880001, "nbinned": 7, "input_video": str(directory / "m.h5")}]}))
    return path


def test_the_recording_cli_stores_a_signal_death_with_the_task_identity(
        labeling_db, run_cli, tmp_path):
    manifest = write_manifest(tmp_path)

    result = run_cli(RECORD, "--manifest_json", manifest, "--manifest_index", 0,
                     "--exit_status", 143, "--duration_seconds", 812, "--",
                     "--diameter", 14, "--tmp_dir", tmp_path,
                     env={"TRANSFORM_HASH": "record-test", "SLURM_JOB_ID": "77",
                          "SLURM_ARRAY_JOB_ID": "70", "SLURM_ARRAY_TASK_ID": "0"})

    assert result.returncode == 0, result.stderr
    message = "killed by SIGTERM (scancel, qdel, the job's time limit or Ctrl-C)"
    assert result.stderr.strip().splitlines() == [
        f"ERROR:slapp.segmentation.failures:experiment 880001 (manifest index 0): {message}"]
    [row] = labeling_db.query("SELECT * FROM segmentation_failures")
    options = dataclasses.replace(Suite2pOptions.defaults(), diameter=14.0)
    assert {key: row[key] for key in (
        "ophys_experiment_id", "ophys_segmentation_commit_hash", "parameters_digest",
        "manifest_path", "manifest_index", "scheduler_job_id", "scheduler_task_id",
        "failure_class", "message", "traceback", "exit_status", "signal_name",
        "duration_seconds")} == {
        "ophys_experiment_id": 880001, "ophys_segmentation_commit_hash": "record-test",
        "parameters_digest": parameters_digest(options, 7, suite2p_version()),
        "manifest_path": str(manifest), "manifest_index": 0, "scheduler_job_id": "70",
        "scheduler_task_id": "0", "failure_class": "killed", "message": message,
        "traceback": None, "exit_status": 143, "signal_name": "SIGTERM",
        "duration_seconds": 812.0}
    assert row["hostname"] == socket.gethostname()


def test_the_recording_cli_records_nothing_for_exit_0_and_1(labeling_db, run_cli, tmp_path):
    manifest = write_manifest(tmp_path)
    for status in (0, 1):
        result = run_cli(RECORD, "--manifest_json", manifest, "--manifest_index", 0,
                         "--exit_status", status)
        assert result.returncode == 0 and result.stderr == "", result.stderr
    assert labeling_db.query("SELECT count(*) AS n FROM segmentation_failures") == [{"n": 0}]


def test_an_unreadable_manifest_still_leaves_a_row(labeling_db, run_cli, tmp_path):
    result = run_cli(RECORD, "--manifest_json", tmp_path / "gone.json", "--manifest_index", 4,
                     "--exit_status", 139)

    assert result.returncode == 0, result.stderr
    [row] = labeling_db.query("SELECT * FROM segmentation_failures")
    assert (row["ophys_experiment_id"], row["parameters_digest"], row["manifest_index"],
            row["failure_class"], row["signal_name"]) == (None, None, 4, "other", "SIGSEGV")


def test_with_the_database_gone_the_failure_is_logged_and_the_cli_still_ends(
        run_cli, tmp_path):
    manifest = write_manifest(tmp_path)
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    result = run_cli(RECORD, "--manifest_json", manifest, "--manifest_index", 0,
                     "--exit_status", 137, env={"LABELING_PORT": str(port)}, timeout=120)

    assert result.returncode == 0
    assert "killed by SIGKILL" in result.stderr.strip().splitlines()[-1]
