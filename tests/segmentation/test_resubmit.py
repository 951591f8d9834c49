"""The resubmission commands: script path, indices, variables by name, options, memory."""
import dataclasses
import shlex
from pathlib import Path

import pytest

from slapp.db.runs import RunParameters
from slapp.segmentation.resubmit import (PBS_PRO, SLURM, TORQUE, ResubmitException,
                                         resubmission, segment_options)
from slapp.segmentation.settings import Suite2pOptions

DEFAULTS = RunParameters("v", Suite2pOptions.defaults(), "1.1.0")
SWEEP = dataclasses.replace(DEFAULTS, options=dataclasses.replace(
    Suite2pOptions.defaults(), threshold_scaling=0.9, diameter=14.0))
MANIFEST = Path("/data/batch one/manifest.json")
ENVIRONMENT = {"PATH": "/venv/bin:/usr/bin", "LABELING_HOST": "db", "LABELING_PASSWORD": "x",
               "HOME": "/home/me"}
SHARED = {"python": "/venv/bin/python", "environment": ENVIRONMENT,
          "slurm_script": Path("/opt/job.slurm"), "pbs_script": Path("/opt/job.pbs")}


def test_only_options_that_differ_from_the_defaults_are_carried():
    assert segment_options(DEFAULTS) == []
    assert segment_options(SWEEP) == ["--diameter", "14.0", "--threshold_scaling", "0.9"]


def test_each_scheduler_gets_a_complete_command():
    group = resubmission([7, 3, 4, 5], MANIFEST, SWEEP, max_concurrent=2, **SHARED)

    assert (group.indices, group.array_spec) == ([3, 4, 5, 7], "3-5,7%2")
    variables = ("MANIFEST=/data/batch one/manifest.json,SLAPP_PYTHON=/venv/bin/python")
    assert shlex.split(group.commands[SLURM][0]) == [
        "sbatch", "--array=3-5,7%2", f"--export={variables},PATH,LABELING_HOST",
        "/opt/job.slurm", "--diameter", "14.0", "--threshold_scaling", "0.9"]
    assert shlex.split(group.commands[TORQUE][0]) == [
        "qsub", "-t", "3-5,7%2", "-v", f"{variables},PATH,LABELING_HOST",
        "-F", "--diameter 14.0 --threshold_scaling 0.9", "/opt/job.pbs"]
    options = "SEGMENT_OPTIONS=--diameter 14.0 --threshold_scaling 0.9"
    assert [shlex.split(command) for command in group.commands[PBS_PRO]] == [
        ["qsub", "-J", "3-5%2", "-v", f"{variables},{options},PATH,LABELING_HOST",
         "/opt/job.pbs"],
        ["qsub", "-v", f"{variables},SLAPP_MANIFEST_INDEX=7,{options},PATH,LABELING_HOST",
         "/opt/job.pbs"]]
    assert not any("PASSWORD" in command or "HOME" in command
                   for commands in group.commands.values() for command in commands)


def test_a_memory_request_is_rendered_for_each_scheduler():
    group = resubmission([0, 1], MANIFEST, DEFAULTS, memory="24G", **SHARED)

    assert "--mem=24G" in shlex.split(group.commands[SLURM][0])
    torque = shlex.split(group.commands[TORQUE][0])
    assert torque[torque.index("-l") + 1] == "mem=24gb"
    pbs_pro = shlex.split(group.commands[PBS_PRO][0])
    assert pbs_pro[pbs_pro.index("-l") + 1] == "select=1:mem=24gb"
    assert "-F" not in torque  # nothing to carry for the defaults
    assert not any(word.startswith("SEGMENT_OPTIONS") for word in pbs_pro)


def test_entries_with_their_own_request_get_their_own_commands():
    group = resubmission([0, 1, 2, 5], MANIFEST, DEFAULTS, memory_by_index={1: "9G", 5: "9G"},
                         **SHARED)

    assert (group.indices, group.array_spec) == ([0, 1, 2, 5], "0-2,5")
    specs = [(shlex.split(command)[1], "--mem=9G" in command)
             for command in group.commands[SLURM]]
    assert specs == [("--array=0,2", False), ("--array=1,5", True)]
    assert ["-l" in shlex.split(command) for command in group.commands[TORQUE]] == [False, True]
    assert [command.split(" -v ")[0] for command in group.commands[PBS_PRO]] == [
        "qsub", "qsub", "qsub -l select=1:mem=9gb", "qsub -l select=1:mem=9gb"]


def test_without_a_memory_request_the_scripts_request_stands():
    group = resubmission([0, 1], MANIFEST, DEFAULTS, **SHARED)

    assert not any("mem" in command for commands in group.commands.values()
                   for command in commands)


def test_a_memory_that_is_no_size_is_refused():
    with pytest.raises(ResubmitException, match="memory '24 gigs' is not a size"):
        resubmission([0], MANIFEST, DEFAULTS, memory="24 gigs", **SHARED)


def test_the_tasks_python_is_slapp_python_where_the_command_is_printed():
    environment = {**ENVIRONMENT, "SLAPP_PYTHON": "/cluster/venv/bin/python"}
    group = resubmission([0, 1], MANIFEST, DEFAULTS, environment=environment)

    assert "SLAPP_PYTHON=/cluster/venv/bin/python," in group.commands[SLURM][0]
