"""The example array job scripts, unmodified, run by a real scheduler or as PBS runs them.

The SLURM script is submitted with ``sbatch`` to a real single-node SLURM that
the fixture starts on localhost (skipped without root or without Debian's
``slurm-wlm``: run ``scripts/install_slurm.sh``). There is no PBS server
package here, so the PBS script is run with bash, as a PBS task runs it
(``#PBS`` lines are comments to bash), with ``PBS_ARRAYID`` set, and is also
submitted with the Torque-style ``qsub`` of ``slurm-wlm-torque``. The scripts
take what a user would set in the environment: ``MANIFEST``, ``SLAPP_PYTHON``,
``SLAPP_CREDENTIALS``, ``SLAPP_TMP_DIR``; sbatch options on the command line
fit the script's resources to this 2-core machine, as a user would for theirs.
"""
import dataclasses
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from slapp.segmentation.settings import Suite2pOptions, parameters_digest
from slapp.segmentation.suite2p_runner import suite2p_version
from slurm_localhost import LocalSlurm, unavailable_reason

REPO = Path(__file__).resolve().parents[2]
SLURM_SCRIPT = REPO / "scripts" / "suite2p_array_job_example.slurm"
PBS_SCRIPT = REPO / "scripts" / "suite2p_array_job_example.pbs"
VERSION = "job-scripts-test-version"
FIRST_ID = 910000


@pytest.fixture(scope="module")
def local_slurm(tmp_path_factory):
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    cluster = LocalSlurm(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def manifest(tmp_path_factory, tiny_movies):
    """The manifest of the four tiny synthetic movies."""
    entries = [{"experiment_id": FIRST_ID + index, "nbinned": 5, "log_level": "ERROR",
                "input_video": str(movie)} for index, movie in enumerate(tiny_movies)]
    path = tmp_path_factory.mktemp("job_script_manifest") / "manifest.json"
    path.write_text(json.dumps({"manifest": entries}))
    return path


@pytest.fixture
def job_env(cli_env, manifest, tmp_path):
    """What a user sets before submitting: manifest, python, scratch, the non-secret
    LABELING_* variables; the password is in a private credentials file, not exported."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    credentials = tmp_path / "slapp_credentials"
    credentials.write_text(
        f"export LABELING_PASSWORD={shlex.quote(cli_env['LABELING_PASSWORD'])}\n")
    credentials.chmod(0o600)
    env = {key: value for key, value in cli_env.items() if key != "LABELING_PASSWORD"}
    return {**env, "MANIFEST": str(manifest), "SLAPP_PYTHON": sys.executable,
            "SLAPP_TMP_DIR": str(scratch), "TRANSFORM_HASH": VERSION,
            "SLAPP_CREDENTIALS": str(credentials)}


def stored_runs(labeling_db):
    return {row["ophys_experiment_id"]: row["id"] for row in labeling_db.query(
        "SELECT id, ophys_experiment_id FROM segmentation_runs "
        "WHERE ophys_segmentation_commit_hash = %s", (VERSION,))}


def sbatch_array(env, local_slurm, log_dir, spec):
    return subprocess.run(
        ["sbatch", "--wait", f"--array={spec}", "--cpus-per-task=1", "--mem=3G", "--tmp=0",
         f"--output={log_dir}/slurm_%A_%a.log", str(SLURM_SCRIPT), "--diameter", "14"],
        env={**env, **local_slurm.environment}, cwd=log_dir, capture_output=True, text=True,
        timeout=900)


@pytest.mark.slow
def test_slurm_array_segments_each_entry_and_a_resubmission_skips(
        labeling_db, local_slurm, job_env, tmp_path):
    # left by a task of a job that no longer runs (killed before it could clean up)
    stale = Path(job_env["SLAPP_TMP_DIR"]) / "slapp_999999_3_othernode_4242"
    (stale / "slapp_suite2p_x").mkdir(parents=True)

    first = sbatch_array(job_env, local_slurm, tmp_path, "0-2")

    logs = "\n".join(path.read_text() for path in sorted(tmp_path.glob("slurm_*.log")))
    assert first.returncode == 0, first.stderr + logs
    runs = stored_runs(labeling_db)
    assert sorted(runs) == [FIRST_ID, FIRST_ID + 1, FIRST_ID + 2]
    assert logs.count("segmented as run") == 3
    assert list(Path(job_env["SLAPP_TMP_DIR"]).iterdir()) == []
    job_id = first.stdout.split()[-1]  # "Submitted batch job <id>"
    assert sorted((row["ophys_experiment_id"] - FIRST_ID, row["scheduler_job_id"],
                   row["scheduler_task_id"]) for row in labeling_db.query(
        "SELECT ophys_experiment_id, scheduler_job_id, scheduler_task_id "
        "FROM segmentation_runs")) == [(0, job_id, "0"), (1, job_id, "1"), (2, job_id, "2")]

    second = sbatch_array(job_env, local_slurm, tmp_path, "0-2")

    assert second.returncode == 0, second.stderr
    assert stored_runs(labeling_db) == runs
    logs = "\n".join(path.read_text() for path in sorted(tmp_path.glob("slurm_*.log")))
    assert logs.count("skipped, already segmented") == 3


@pytest.mark.slow
def test_a_resubmit_command_printed_by_status_carries_the_sweeps_options(
        labeling_db, local_slurm, job_env, cli_env, run_cli, tmp_path):
    status_json = tmp_path / "status.json"
    status = run_cli("slapp.segmentation.status", "--manifest_json", job_env["MANIFEST"],
                     "--threshold_scaling", 0.9, "--diameter", 14, "--output_json", status_json,
                     env={**job_env, "LABELING_PASSWORD": cli_env["LABELING_PASSWORD"]})
    assert status.returncode == 0, status.stderr
    [command] = json.loads(status_json.read_text())["resubmit_commands"]["missing"]["SLURM"]
    assert command in status.stdout
    assert command.endswith(f"{SLURM_SCRIPT} --diameter 14.0 --threshold_scaling 0.9")
    assert "PASSWORD" not in command and "ALL" not in command
    # as a user pastes it, with this 2-core machine's resources and logs here
    local = (f"sbatch --wait --cpus-per-task=1 --mem=3G --tmp=0 "
             f"--output={tmp_path}/slurm_%A_%a.log ")
    result = subprocess.run(["bash", "-c", local + command.removeprefix("sbatch ")
                             .replace("--array=0-3", "--array=1")],
                            env={**job_env, **local_slurm.environment}, cwd=tmp_path,
                            capture_output=True, text=True, timeout=900)

    logs = "\n".join(path.read_text() for path in tmp_path.glob("slurm_*.log"))
    assert result.returncode == 0, result.stderr + logs
    [run] = labeling_db.query(
        "SELECT ophys_experiment_id, parameters_digest, "
        "suite2p_settings->'settings'->'detection'->'threshold_scaling' AS ts "
        "FROM segmentation_runs")
    assert (run["ophys_experiment_id"], run["ts"]) == (FIRST_ID + 1, 0.9)
    assert run["parameters_digest"] == entry_digest(diameter=14.0, threshold_scaling=0.9)
    assert cli_env["LABELING_PASSWORD"] not in logs


def test_slurm_script_outside_an_array_says_so(job_env):
    result = subprocess.run(["bash", str(SLURM_SCRIPT)], env=job_env, capture_output=True,
                            text=True, timeout=60)

    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "slapp_segment: no array index (SLURM_ARRAY_TASK_ID): submit with sbatch --array=...; "
        "each array task segments one manifest entry"]


@pytest.mark.slow
def test_pbs_script_submitted_with_qsub_segments_its_entry(
        labeling_db, local_slurm, job_env, tmp_path):
    """Through slurm-wlm-torque's qsub, which sets SLURM_ARRAY_TASK_ID, not PBS_ARRAYID."""
    if shutil.which("qsub") is None:
        pytest.skip("no qsub: install slurm-wlm-torque (scripts/install_slurm.sh)")

    result = subprocess.run(
        ["qsub", "-t", "2", "-l", "nodes=1:ppn=1,mem=3gb", "-V", "-W", "block=true",
         str(PBS_SCRIPT)],
        env={**job_env, **local_slurm.environment}, cwd=tmp_path, capture_output=True,
        text=True, timeout=600)

    assert result.returncode == 0, result.stdout + result.stderr
    job_output = "".join(path.read_text() for path in tmp_path.glob("*.pbs.o*"))
    assert f"experiment {FIRST_ID + 2}: segmented as run" in job_output
    assert list(stored_runs(labeling_db)) == [FIRST_ID + 2]


def run_pbs_task(env, index):
    """Run the PBS script as a PBS array task runs it."""
    return subprocess.run(["bash", str(PBS_SCRIPT), "--diameter", "14"],
                          env={**env, "PBS_ARRAYID": str(index),
                               "PBS_O_WORKDIR": env["SLAPP_TMP_DIR"]},
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_pbs_task_segments_its_entry_with_credentials_from_a_private_file(
        labeling_db, job_env, cli_env, tmp_path):
    credentials = tmp_path / "slapp_credentials"
    credentials.write_text(f"export LABELING_USER={shlex.quote(job_env['LABELING_USER'])}\n"
                           "export LABELING_PASSWORD="
                           f"{shlex.quote(cli_env['LABELING_PASSWORD'])}\n")
    credentials.chmod(0o600)
    env = {key: value for key, value in job_env.items()
           if key not in ("LABELING_USER", "LABELING_PASSWORD")}
    env["SLAPP_CREDENTIALS"] = str(credentials)

    result = run_pbs_task(env, 3)

    assert result.returncode == 0, result.stderr
    assert f"experiment {FIRST_ID + 3}: segmented as run" in result.stdout
    assert list(stored_runs(labeling_db)) == [FIRST_ID + 3]
    assert cli_env["LABELING_PASSWORD"] not in result.stdout + result.stderr


@pytest.mark.parametrize("change, message", [
    ({"PBS_ARRAYID": ""}, "no array index (PBS_ARRAYID)"),
    ({"MANIFEST": "/no/such/manifest.json"}, "manifest /no/such/manifest.json not found"),
    ({"SLAPP_CREDENTIALS": "readable"}, "can be read by others: chmod 600 it"),
])
def test_pbs_task_refuses_a_bad_setup_and_writes_nothing(
        labeling_db, job_env, tmp_path, change, message):
    if change.get("SLAPP_CREDENTIALS") == "readable":
        readable = tmp_path / "readable"
        readable.write_text("export LABELING_USER=someone\n")
        readable.chmod(0o644)
        change = {"SLAPP_CREDENTIALS": str(readable)}
    env = {**job_env, **change}

    result = subprocess.run(["bash", str(PBS_SCRIPT)],
                            env={"PBS_ARRAYID": "0", **env}, capture_output=True, text=True,
                            timeout=60)

    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("slapp_segment: ") and message in lines[0]
    assert stored_runs(labeling_db) == {}
    assert os.listdir(job_env["SLAPP_TMP_DIR"]) == []


def children(pid):
    with open(f"/proc/{pid}/task/{pid}/children") as found:
        return [int(child) for child in found.read().split()]


@pytest.mark.slow
def test_a_task_killed_by_a_signal_is_recorded_by_the_script_and_its_scratch_cleared_next(
        labeling_db, job_env, tmp_path):
    """SIGKILL to the task alone, as the kernel's OOM killer sends it; the script survives."""
    scratch = Path(job_env["SLAPP_TMP_DIR"])
    script = subprocess.Popen(["bash", str(PBS_SCRIPT), "--diameter", "14"],
                              env={**job_env, "PBS_ARRAYID": "0",
                                   "PBS_O_WORKDIR": str(tmp_path)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not list(scratch.glob("slapp_local_0_*/slapp_suite2p_*")):
        assert script.poll() is None, script.communicate()
        assert time.monotonic() < deadline, "Suite2P never started"
        time.sleep(0.1)
    [task] = children(script.pid)

    os.kill(task, signal.SIGKILL)
    stdout, stderr = script.communicate(timeout=300)

    assert script.returncode == 128 + signal.SIGKILL, stderr
    [failure] = labeling_db.query("SELECT * FROM segmentation_failures")
    assert failure["ophys_experiment_id"] == FIRST_ID
    assert failure["ophys_segmentation_commit_hash"] == VERSION
    assert failure["failure_class"] in ("killed", "out_of_memory")
    assert failure["signal_name"] == "SIGKILL" and failure["exit_status"] == 137
    assert failure["message"].startswith("killed by SIGKILL")
    assert failure["message"] in stderr
    assert failure["parameters_digest"] == entry_digest(diameter=14.0)
    assert failure["manifest_path"] == job_env["MANIFEST"] and failure["manifest_index"] == 0
    assert failure["duration_seconds"] >= 0
    assert stored_runs(labeling_db) == {}
    assert [path.name for path in scratch.iterdir()] == [
        f"slapp_local_0_{socket.gethostname()}_{task}"]

    result = run_pbs_task(job_env, 1)  # the next task on this node

    assert result.returncode == 0, result.stderr
    assert list(stored_runs(labeling_db)) == [FIRST_ID + 1]
    assert list(scratch.iterdir()) == []
    assert labeling_db.query("SELECT count(*) AS n FROM segmentation_failures") == [{"n": 1}]


def entry_digest(**changes):
    options = Suite2pOptions.from_args({**dataclasses.asdict(Suite2pOptions.defaults()),
                                        **changes})
    return parameters_digest(options, 5, suite2p_version())


def test_scancel_while_suite2p_runs_is_recorded_as_killed_and_leaves_nothing(
        labeling_db, local_slurm, job_env, tmp_path):
    scratch = Path(job_env["SLAPP_TMP_DIR"])
    env = {**job_env, **local_slurm.environment}
    submitted = subprocess.run(
        ["sbatch", "--parsable", "--array=1", "--cpus-per-task=1", "--mem=3G", "--tmp=0",
         f"--output={tmp_path}/slurm_%A_%a.log", str(SLURM_SCRIPT), "--diameter", "14"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True)
    job_id = submitted.stdout.strip().split(";")[0]
    deadline = time.monotonic() + 300
    while not list(scratch.glob(f"slapp_{job_id}_1_*/slapp_suite2p_*")):
        assert time.monotonic() < deadline, local_slurm.log_tail()
        time.sleep(0.2)

    subprocess.run(["scancel", job_id], env=env, check=True, timeout=60)
    while subprocess.run(["squeue", "--noheader", "--jobs", job_id], env=env,
                         capture_output=True, text=True).stdout.strip():
        assert time.monotonic() < deadline + 120, "the cancelled job never ended"
        time.sleep(0.5)

    log = (tmp_path / f"slurm_{job_id}_1.log").read_text()
    [failure] = labeling_db.query("SELECT * FROM segmentation_failures")
    assert (failure["ophys_experiment_id"], failure["failure_class"], failure["signal_name"],
            failure["exit_status"], failure["scheduler_job_id"],
            failure["scheduler_task_id"]) == (FIRST_ID + 1, "killed", "SIGTERM", 143,
                                              job_id, "1"), log
    assert failure["message"] in log
    assert failure["log_path"] == str(tmp_path / f"slurm_{job_id}_1.log")
    assert stored_runs(labeling_db) == {}
    assert list(scratch.iterdir()) == []
