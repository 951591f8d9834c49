"""Failure classes of exceptions and of processes that died, and the rows recorded for them."""
import signal
import subprocess
import sys

import marshmallow as mm
import psycopg2
import pytest

from slapp.segmentation import failures
from slapp.segmentation.segment import MovieChangedException, SegmentationException
from slapp.segmentation.suite2p_runner import Suite2pRunException


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
