"""A task's scratch directory: created, checked for room, named by job and task, cleaned up.

Real directories and real processes; stale directories of batch jobs are
tested against the real local SLURM in test_job_scripts.py.
"""
import os
import socket
import subprocess
import sys

import pytest

from slapp.segmentation import scratch
from slapp.segmentation.scheduler import SchedulerTask, current_task

LOCAL = SchedulerTask(None, None, None)
HOST = socket.gethostname().split(".")[0]


def dead_pid():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_tmp_dir_is_created_with_its_parents(tmp_path):
    wanted = tmp_path / "a" / "b"

    assert scratch.prepared_tmp_dir(wanted) == wanted.resolve()
    assert wanted.is_dir()


def test_a_file_as_tmp_dir_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")

    with pytest.raises(scratch.ScratchException, match="is not a directory"):
        scratch.prepared_tmp_dir(tmp_path / "file")


def test_too_little_room_names_needed_and_free_bytes(tmp_path):
    with pytest.raises(scratch.ScratchException) as error:
        scratch.check_free_space(tmp_path, 2**62)

    free = int(str(error.value).rsplit(", ", 1)[1].split()[0])
    assert str(error.value) == (f"tmp_dir {tmp_path} is too small: the run needs {2**62} "
                                f"bytes, {free} free")
    assert scratch.check_free_space(tmp_path, 1) > 0


@pytest.mark.parametrize("environ, expected", [
    ({}, SchedulerTask(None, None, None)),
    ({"SLURM_JOB_ID": "812", "SLURM_ARRAY_JOB_ID": "800", "SLURM_ARRAY_TASK_ID": "12"},
     SchedulerTask("slurm", "800", "12")),
    ({"SLURM_JOB_ID": "812"}, SchedulerTask("slurm", "812", None)),
    ({"PBS_JOBID": "4321[7].head.cluster", "PBS_ARRAYID": "7"},
     SchedulerTask("pbs", "4321", "7")),
    ({"PBS_JOBID": "4321[].pbs", "PBS_ARRAY_INDEX": "3"}, SchedulerTask("pbs", "4321", "3")),
])
def test_scheduler_ids_come_from_the_environment(environ, expected):
    assert current_task(environ) == expected


def test_directory_names_carry_job_task_host_and_process():
    assert scratch.directory_name(SchedulerTask("slurm", "800", "12"), 5, "node7.cluster",
                                  4242) == "slapp_800_12_node7_4242"
    assert scratch.directory_name(LOCAL, 5, "laptop", 99) == "slapp_local_5_laptop_99"


def test_the_task_directory_is_removed_on_leaving_also_on_failure(tmp_path):
    with pytest.raises(RuntimeError):
        with scratch.task_directory(tmp_path, LOCAL, 3) as work_dir:
            assert work_dir.name == f"slapp_local_3_{HOST}_{os.getpid()}"
            (work_dir / "data.bin").write_bytes(b"x" * 10)
            assert scratch.directory_bytes(work_dir) == 10
            raise RuntimeError("Suite2P failed")

    assert list(tmp_path.iterdir()) == []


def test_only_directories_of_local_tasks_that_ended_on_this_host_are_stale(tmp_path):
    gone = tmp_path / f"slapp_local_0_{HOST}_{dead_pid()}"
    alive = tmp_path / f"slapp_local_1_{HOST}_{os.getpid()}"
    other_host = tmp_path / f"slapp_local_2_otherhost_{dead_pid()}"
    batch_job = tmp_path / f"slapp_800_4_{HOST}_{dead_pid()}"  # no scheduler to ask here
    kept_suite2p_files = tmp_path / "slapp_suite2p_ab_cd_12"
    foreign = tmp_path / "unrelated"
    for path in (gone, alive, other_host, batch_job, kept_suite2p_files, foreign):
        path.mkdir()
        (path / "data.bin").write_bytes(b"x")

    removed = scratch.remove_stale_directories(tmp_path, LOCAL)

    assert removed == [gone]
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(
        path.name for path in (alive, other_host, batch_job, kept_suite2p_files, foreign))
