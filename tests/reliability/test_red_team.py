"""The red-team findings of issue 17, item 6, each driven through the commands.

Every command runs as a user runs it (``python -m ...``) against the embedded
PostgreSQL; read-only and full file systems are real tmpfs mounts made in a
private mount namespace (``unshare``), so nothing outside the test sees them.
"""
import json
import shutil
import socket
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from slapp import embedded
from slapp.demo.lims import add_experiment
from stored_runs import insert_run, random_masks

FAILURE_ROWS = "SELECT count(*) AS n FROM segmentation_failures"
SELECTIONS = "SELECT count(*) AS n FROM experiment_selection"
MODULES = {
    "select_data": "slapp.data_selection.select_data",
    "segmentation_manifest": "slapp.data_selection.segmentation_manifest",
    "segment": "slapp.segmentation.segment",
    "status": "slapp.segmentation.status",
    "compare": "slapp.evaluation.compare",
    "report": "slapp.report",
    "export.nwb": "slapp.export.nwb",
}
# The name a command prints before its messages, where it is not the command's.
# each command's name in its messages: ``slapp <registry name>``
PROGRAMS = {"select_data": "select", "segmentation_manifest": "manifest", "export.nwb": "export-nwb",
            "run_local": "run-local"}
QUERY = '["SELECT id AS exp_id FROM ophys_experiments"]'


@pytest.fixture
def sandbox(tmp_path):
    """A one-entry manifest, a 4 x 4 ground truth, and an empty mount point."""
    (tmp_path / "manifest.json").write_text(json.dumps({"manifest": [
        {"experiment_id": 850517344, "nbinned": 20, "input_video": str(tmp_path / "m.h5")}]}))
    with h5py.File(tmp_path / "truth.h5", "w") as truth:
        truth.create_dataset("masks", data=np.ones((1, 4, 4), np.float32))
    (tmp_path / "mount").mkdir()
    return tmp_path


def arguments(command: str, sandbox, output_json) -> list[str]:
    """A command line of ``command`` that is valid but for where ``output_json`` points."""
    return {
        "select_data": ["--query_strings", QUERY, "--sub_selection_counts", "[1]"],
        "segmentation_manifest": ["--experiment_selection_id", "1"],
        "segment": ["--manifest_json", sandbox / "manifest.json", "--manifest_index", "0"],
        "status": ["--manifest_json", sandbox / "manifest.json"],
        "compare": ["--segmentation_run_id", "1", "--ground_truth", sandbox / "truth.h5"],
        "report": ["--manifest_json", sandbox / "manifest.json",
                   "--output_dir", sandbox / "report"],
        "export.nwb": ["--segmentation_run_id", "1", "--output_nwb", sandbox / "run.nwb"],
    }[command] + ["--output_json", str(output_json)]


def in_mounted_tmpfs(mount_point, filesystem: str) -> list[str]:
    """A command prefix that mounts a read-only, or a full, tmpfs on ``mount_point`` first."""
    if shutil.which("unshare") is None or subprocess.run(
            ["unshare", "-rm", "true"], capture_output=True).returncode != 0:
        pytest.skip("no unprivileged mount namespaces here (unshare -rm)")
    mount = {"read-only": f"mount -t tmpfs -o ro tmpfs {mount_point}",
             "full": f"mount -t tmpfs -o size=8k tmpfs {mount_point} && "
                     f"cat /dev/zero > {mount_point}/filler 2>/dev/null; true"}[filesystem]
    return ["unshare", "-rm", "sh", "-c", f'{mount} && exec "$@"', "sh"]


def run(command, args, env, prefix=()):
    return subprocess.run([*prefix, sys.executable, "-m", MODULES[command], *map(str, args)],
                          env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("filesystem,reason", [("read-only", "Read-only file system"),
                                               ("full", "No space left on device")])
@pytest.mark.parametrize("command", list(MODULES))
def test_an_unwritable_output_json_is_one_line_and_writes_nothing(
        command, filesystem, reason, sandbox, labeling_db, cli_env):
    mount = sandbox / "mount"
    result = run(command, arguments(command, sandbox, mount / "out.json"), cli_env,
                 in_mounted_tmpfs(mount, filesystem))

    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"slapp {PROGRAMS.get(command, command)}: error: invalid input: output_json: cannot write "
        f"in {mount}: {reason}"]
    assert labeling_db.query(FAILURE_ROWS) == [{"n": 0}]
    assert labeling_db.query(SELECTIONS) == [{"n": 0}]
    assert not (sandbox / "report").exists() and not (sandbox / "run.nwb").exists()


def test_a_query_string_that_is_not_a_list_is_one_line(run_cli, labeling_db):
    result = run_cli(MODULES["select_data"], "--query_strings", "SELECT id AS exp_id FROM x",
                     "--sub_selection_counts", "[1]")

    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "slapp select: error: invalid input: --query_strings 'SELECT id AS exp_id FROM x' is "
        "not a list: give it in brackets, e.g. --query_strings '[...]' with each string quoted"]
    assert labeling_db.query(SELECTIONS) == [{"n": 0}]


@pytest.mark.parametrize("command", ["select_data", "segment", "status", "compare"])
def test_an_input_json_that_is_not_an_object_is_one_line(command, run_cli, labeling_db,
                                                         tmp_path):
    listed = tmp_path / "listed.json"
    listed.write_text(json.dumps([{"manifest_index": 0}]))

    result = run_cli(MODULES[command], "--input_json", listed)

    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"slapp {PROGRAMS.get(command, command)}: error: invalid input: input_json {listed} holds a JSON list, not an "
        'object of options ({"option": value, ...})']
    assert labeling_db.query(FAILURE_ROWS) == [{"n": 0}]


@pytest.mark.parametrize("counts,seed", [([2.9], 42), ([1.5], 42), ([2.0], 42), ([1], 1.7),
                                        ([1], True)])
def test_non_integers_are_refused_from_json_as_from_the_command_line(
        counts, seed, run_cli, labeling_db, tmp_path):
    from_json = tmp_path / "input.json"
    from_json.write_text(json.dumps({"query_strings": json.loads(QUERY),
                                     "sub_selection_counts": counts, "random_seed": seed}))
    command_line = ["--query_strings", QUERY, "--sub_selection_counts", json.dumps(counts),
                    "--random_seed", json.dumps(seed)]
    bad = (["sub_selection_counts.0: Not a valid integer."] if counts != [1] else []) + (
        ["random_seed: Not a valid integer."] if seed != 42 else [])
    expected = [f"slapp select: error: invalid input: {'; '.join(bad)}"]

    for result in (run_cli(MODULES["select_data"], "--input_json", from_json),
                   run_cli(MODULES["select_data"], *command_line)):
        assert (result.returncode, result.stderr.splitlines()) == (1, expected)
    assert labeling_db.query(SELECTIONS) == [{"n": 0}]


def test_select_data_prints_its_id_and_names_an_identical_selection(
        run_cli, labeling_db, lims_admin):
    with lims_admin.cursor() as cursor:
        for experiment_id in (850517344, 850517352, 850517360):
            add_experiment(cursor, experiment_id, project="VisualBehaviorMultiscope",
                           genotype="Sst-IRES-Cre", depth=175, nframes=400)
    args = ("--query_strings", QUERY, "--sub_selection_counts", "[2]")

    first, second = run_cli(MODULES["select_data"], *args), run_cli(MODULES["select_data"], *args)
    other_seed = run_cli(MODULES["select_data"], *args, "--random_seed", "7")

    assert (first.returncode, first.stderr) == (0, "")
    assert first.stdout.splitlines() == ["experiment_selection id 1: 2 experiments from 1 query"]
    assert (second.returncode, second.stderr) == (0, "")
    assert second.stdout.splitlines() == [
        "experiment_selection id 2: 2 experiments from 1 query; identical to "
        "experiment_selection id 1 (same queries, counts, seed and experiments)"]
    assert other_seed.stdout.startswith("experiment_selection id 3: ")
    assert "identical" not in other_seed.stdout
    assert labeling_db.query(SELECTIONS) == [{"n": 3}]


@pytest.fixture
def empty_labeling_database(embedded_server):
    """A database the labeling role owns, without slapp's tables (db.init never ran)."""
    name = "redteam_uninitialised"
    connection = embedded_server.admin_connection()
    with connection.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {name}")
        cursor.execute(f"CREATE DATABASE {name} OWNER {embedded.LABELING_ROLE}")
    yield name
    with connection.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {name}")
    connection.close()


@pytest.mark.parametrize("command,args,table", [
    ("status", ["--manifest_json", "manifest.json"], "segmentation_runs"),
    ("compare", ["--segmentation_run_id", "1", "--ground_truth", "truth.h5"],
     "segmentation_runs"),
    ("select_data", ["--query_strings", QUERY, "--sub_selection_counts", "[1]"],
     "experiment_selection"),
])
def test_missing_tables_name_db_init(command, args, table, empty_labeling_database, run_cli,
                                     lims_admin, sandbox):
    with lims_admin.cursor() as cursor:
        add_experiment(cursor, 850517344, project="VisualBehaviorMultiscope",
                       genotype="Sst-IRES-Cre", depth=175, nframes=400)

    result = run_cli(MODULES[command], *args, cwd=sandbox,
                     env={"LABELING_DATABASE": empty_labeling_database})

    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f'slapp {PROGRAMS.get(command, command)}: error: relation "{table}" does not exist in the labeling database '
        f"{empty_labeling_database}: run python -m slapp.db.init to create or upgrade its "
        "tables"]


def closed_port() -> int:
    """A local TCP port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("command", ["status", "compare", "report", "export.nwb",
                                     "select_data", "segmentation_manifest"])
def test_interactive_commands_give_up_on_an_unreachable_server_within_ten_seconds(
        command, run_cli, sandbox):
    args = [str(arg) for arg in arguments(command, sandbox, sandbox / "out.json")]
    port = str(closed_port())

    started = time.monotonic()
    result = run_cli(MODULES[command], *args, env={"LABELING_PORT": port, "LIMS_PORT": port},
                     timeout=60)
    elapsed = time.monotonic() - started

    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(f"slapp {PROGRAMS.get(command, command)}: error: connection to server "
                           "at ") and port in line
    assert elapsed < 10, f"{command} took {elapsed:.1f} s to give up"


@pytest.mark.parametrize("typo", [["--manifest-index", "0"], ["--manifest_index", "0",
                                                              "--threshold-scaling", "0.9"]])
def test_an_option_typo_writes_no_failure_row(typo, run_cli, labeling_db, sandbox):
    result = run_cli(MODULES["segment"], "--manifest_json", sandbox / "manifest.json", *typo)

    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("slapp segment: error: unrecognized arguments: ")
    assert labeling_db.query(FAILURE_ROWS) == [{"n": 0}]


@pytest.fixture
def square_run(labeling_db):
    """Run 1: eight disk ROIs (all cells) on a 32 x 32 movie; their masks as ground truth."""
    masks = random_masks(np.random.default_rng(3), (32, 32), 8)
    run_id = insert_run(labeling_db, 850517344, masks, video_shape=(32, 32),
                        is_cell=[True] * len(masks))
    truth = np.zeros((len(masks), 32, 32), np.float32)
    for index, (rows, cols, weights) in enumerate(masks):
        truth[index, rows, cols] = weights
    return run_id, truth


def write_truth(path, masks, **attributes):
    with h5py.File(path, "w") as stream:
        stream.create_dataset("masks", data=masks).attrs.update(attributes)
    return path


def test_compare_refuses_transposed_masks_on_a_square_movie(square_run, run_cli, tmp_path):
    run_id, truth = square_run
    right = write_truth(tmp_path / "right.h5", truth, height=32, width=32)
    transposed = write_truth(tmp_path / "transposed.h5", truth.transpose(0, 2, 1),
                             height=32, width=32)

    scored = run_cli(MODULES["compare"], "--segmentation_run_id", run_id,
                     "--ground_truth", right)
    refused = run_cli(MODULES["compare"], "--segmentation_run_id", run_id,
                      "--ground_truth", transposed)

    assert scored.returncode == 0 and "F1 1.00" in scored.stdout
    assert (refused.returncode, refused.stdout) == (1, "")
    assert refused.stderr.splitlines() == [
        f"slapp compare: error: ground truth masks in {transposed} look transposed: F1 0.00 as "
        "stored, 1.00 with height and width swapped; store them as (cells, height, width)"]


def test_compare_refuses_masks_recorded_for_another_frame_shape(square_run, run_cli, tmp_path):
    run_id, truth = square_run
    other = write_truth(tmp_path / "other.h5", truth, height=32, width=48)

    result = run_cli(MODULES["compare"], "--segmentation_run_id", run_id, "--ground_truth", other)

    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"slapp compare: error: ground truth masks in {other} were made for 32 x 48 px frames (their "
        "height and width attributes) but the segmentation run's movie is 32 x 32 px"]


@pytest.mark.parametrize("masks", [np.zeros((0, 32, 32), np.float32),
                                   np.zeros((3, 32, 32), np.float32)],
                         ids=["no masks", "empty masks"])
def test_compare_refuses_a_ground_truth_without_cells(masks, square_run, run_cli, tmp_path):
    run_id, _ = square_run
    empty = write_truth(tmp_path / "empty.h5", masks)

    result = run_cli(MODULES["compare"], "--segmentation_run_id", run_id, "--ground_truth", empty)

    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"slapp compare: error: ground truth {empty} holds no cells ({len(masks)} masks, none with a "
        "pixel): there is nothing to score against"]
