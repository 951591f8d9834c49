"""The catalogue of bad inputs (docs/bad_input.rst) is what the tools really do.

docs/bad_input.rst keeps a table of bad inputs for every command: the one line
each prints, its exit status, and whether ``segment`` records a
``segmentation_failures`` row. This test reads that table, runs every row in a
sandbox holding the files the rows name, and checks that each exits as the
row says, prints exactly that one line on stderr, writes exactly the failure
row the row names, and changes no other table and no file. Commands run so
that file permissions bind them even when the tests run as root (see
``unprivileged``), as they bind a user on a cluster; ``readonly/`` and
``full/`` are a read-only and a full tmpfs mounted for the one command (see
``mounted``); a row may start with environment variables (``LABELING_PORT=1``).
"""
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from stored_runs import insert_run

from slapp import embedded
from slapp.demo.lims import add_experiment

CATALOGUE = Path(__file__).resolve().parents[2] / "docs" / "bad_input.rst"
MODULES = {
    "select_data": "slapp.data_selection.select_data",
    "segmentation_manifest": "slapp.data_selection.segmentation_manifest",
    "segment": "slapp.segmentation.segment",
    "status": "slapp.segmentation.status",
    "run_local": "slapp.segmentation.run_local",
    "compare": "slapp.evaluation.compare",
    "report": "slapp.report",
    "export.nwb": "slapp.export.nwb",
}
ROW = re.compile(r"^   \* - ``(?P<command>[^`]+)``\n     - ``(?P<line>[^`]+)``\n"
                 r"     - (?P<exit>\d+)\n     - (?P<failure_row>no|bad_input)$", re.MULTILINE)
UNINITIALISED = "uninitialised"  # a database without slapp's tables (db.init never ran)


def catalogue() -> list[tuple[str, str, int, str]]:
    """The (command, printed line, exit status, failure row) rows of docs/bad_input.rst."""
    text = CATALOGUE.read_text(encoding="utf-8")
    start = text.index(".. bad-input-catalogue-start")
    end = text.index(".. bad-input-catalogue-end")
    return [(match["command"], match["line"], int(match["exit"]), match["failure_row"])
            for match in ROW.finditer(text[start:end])]


def unprivileged() -> list[str]:
    """A command prefix under which root, too, is refused by file permissions.

    As root, the capabilities that bypass file permissions are dropped from
    the command's bounding set with setpriv; another user needs nothing.
    """
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: a directory cannot be made unreadable")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search"]


def square_masks() -> list:
    """Run 2's ROIs: six disks on a 16 x 16 frame, placed off the diagonal."""
    return disk_masks([(3, 8), (4, 13), (8, 2), (12, 6), (13, 12), (7, 10)])


def disk_masks(centres) -> list:
    masks = []
    for row, col in centres:
        rows, cols = np.mgrid[-2:3, -2:3]
        inside = rows ** 2 + cols ** 2 <= 4
        masks.append((rows[inside] + row, cols[inside] + col,
                      np.ones(int(inside.sum()), np.float32)))
    return masks


def build_sandbox(sandbox: Path) -> None:
    """The files the catalogue's commands name."""
    (sandbox / "malformed.json").write_text('{"query_strings": ["SELECT 1",\n')
    (sandbox / "wrong_types.json").write_text(json.dumps(
        {"query_strings": "SELECT 1 AS exp_id", "sub_selection_counts": ["three"]}))
    (sandbox / "quoted_query.json").write_text(json.dumps(
        {"query_strings": ["SELECT 'naïve \"quoted\"' AS exp_id"], "sub_selection_counts": [1],
         "comment_string": "l'expérience \"ü\" \\ n"}, ensure_ascii=False), encoding="utf-8")
    (sandbox / "list.json").write_text(json.dumps([{"manifest_index": 0}]))
    (sandbox / "fractional.json").write_text(json.dumps(
        {"query_strings": ["SELECT id AS exp_id FROM ophys_experiments"],
         "sub_selection_counts": [2.9], "random_seed": 1.7}))
    (sandbox / "fractional_id.json").write_text(json.dumps(
        {"experiment_selection_id": 1.5, "output_json": "out.json"}))
    (sandbox / "a_directory").mkdir()
    (sandbox / "locked_storage").mkdir(mode=0)
    (sandbox / "readonly").mkdir()
    (sandbox / "full").mkdir()
    (sandbox / "not_hdf5.h5").write_text("this is not an HDF5 file\n")
    with h5py.File(sandbox / "no_data.h5", "w") as movie:
        movie.create_dataset("frames", data=np.zeros((4, 8, 8), dtype=np.uint16))
    frames = np.random.default_rng(0).uniform(0, 1000, (60, 8, 8)).astype(np.float32)
    with h5py.File(sandbox / "short.h5", "w") as movie:
        movie.create_dataset("data", data=frames[:1])
    with h5py.File(sandbox / "good.h5", "w") as movie:
        movie.create_dataset("data", data=frames)
    frames[20:30] = np.nan
    frames[45, :2, :2] = np.inf
    with h5py.File(sandbox / "nan.h5", "w") as movie:
        movie.create_dataset("data", data=frames)
    with h5py.File(sandbox / "truth_4x4.h5", "w") as truth:
        truth.create_dataset("masks", data=np.ones((1, 4, 4), dtype=np.float32))
    dense = np.zeros((len(square_masks()), 16, 16), np.float32)
    for index, (rows, cols, weights) in enumerate(square_masks()):
        dense[index, rows, cols] = weights
    for name, masks, attributes in (("truth_transposed.h5", dense.transpose(0, 2, 1), {}),
                                    ("truth_for_16x24.h5", dense, {"height": 16, "width": 24}),
                                    ("truth_empty.h5", dense[:0], {})):
        with h5py.File(sandbox / name, "w") as truth:
            truth.create_dataset("masks", data=masks).attrs.update(attributes)
    for name, video, nbinned in (("manifest.json", "no_data.h5", 20),
                                 ("missing_movie.json", "missing.h5", 20),
                                 ("directory_movie.json", "a_directory", 20),
                                 ("not_hdf5_movie.json", "not_hdf5.h5", 20),
                                 ("no_data_movie.json", "no_data.h5", 20),
                                 ("short_movie.json", "short.h5", 5),
                                 ("nbinned_movie.json", "good.h5", 100),
                                 ("nan_movie.json", "nan.h5", 5)):
        entry = {"experiment_id": 850517344, "nbinned": nbinned, "log_level": "ERROR",
                 "input_video": str(sandbox / video)}
        (sandbox / name).write_text(json.dumps({"manifest": [entry]}))


def prepare_databases(labeling_db, lims_cursor, sandbox: Path) -> None:
    """Selection 1 names an experiment LIMS lacks, selection 2 one whose storage directory
    cannot be read; run 1 is an 8x8 run without ROIs, run 2 a 16x16 run of six ROIs."""
    for experiment_id in (999000001, 850517352):
        labeling_db.execute(
            "INSERT INTO experiment_selection (base64_query_strings, slapp_commit_hash, "
            "ophys_experiment_ids, sub_selection_counts, sub_selected_ids, random_seed) "
            "VALUES ('{U0VMRUNU}', 'abc', %s, '{1}', %s, 42)",
            ([[experiment_id]], [experiment_id]))
    labeling_db.execute(
        "INSERT INTO segmentation_runs (ophys_experiment_id, ophys_segmentation_commit_hash, "
        "parameters_digest, source_video_path, movie_fingerprint, video_shape, nframes, "
        "nbinned, suite2p_version, suite2p_settings, suite2p_seconds, total_seconds, hostname) "
        "VALUES (850517344, 'abc', 'digest', 'movie.h5', '{}', '{8,8}', 400, 3, '1.1.0', '{}', "
        "1, 1, 'node')")
    insert_run(labeling_db, 850517344, square_masks(), video_shape=(16, 16),
               is_cell=[True] * len(square_masks()))
    add_experiment(lims_cursor, 850517344, project="VisualBehaviorMultiscope",
                   genotype="Sst-IRES-Cre", depth=175, nframes=400)
    add_experiment(lims_cursor, 850517352, project="VisualBehaviorMultiscope",
                   genotype="Sst-IRES-Cre", depth=175, nframes=400,
                   storage_directory=str(sandbox / "locked_storage"))


def snapshot(sandbox: Path, labeling_db) -> tuple:
    files = sorted((str(path.relative_to(sandbox)), path.stat().st_size)
                   for path in sandbox.rglob("*"))
    counts = labeling_db.query(
        "SELECT (SELECT count(*) FROM experiment_selection) AS selections, "
        "(SELECT count(*) FROM segmentation_runs) AS runs, (SELECT count(*) FROM rois) AS rois")
    return files, counts


def mounted(command: str, sandbox: Path) -> list[str]:
    """A prefix that mounts a read-only tmpfs on readonly/ and a full one on full/, if named."""
    mounts = []
    if "readonly/" in command:
        mounts.append(f"mount -t tmpfs -o ro tmpfs {sandbox / 'readonly'}")
    if "full/" in command:
        mounts.append(f"mount -t tmpfs -o size=8k tmpfs {sandbox / 'full'} && "
                      f"(cat /dev/zero > {sandbox / 'full' / 'filler'} 2>/dev/null; true)")
    if not mounts:
        return []
    if shutil.which("unshare") is None or subprocess.run(
            ["unshare", "-rm", "true"], capture_output=True).returncode != 0:
        pytest.skip("no unprivileged mount namespaces here (unshare -rm)")
    return ["unshare", "-rm", "sh", "-c", " && ".join(mounts) + ' && exec "$@"', "sh"]


@pytest.fixture
def uninitialised_database(embedded_server):
    """A database the labeling role owns, without slapp's tables."""
    connection = embedded_server.admin_connection()
    with connection.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {UNINITIALISED}")
        cursor.execute(f"CREATE DATABASE {UNINITIALISED} OWNER {embedded.LABELING_ROLE}")
    yield
    with connection.cursor() as cursor:
        cursor.execute(f"DROP DATABASE {UNINITIALISED}")
    connection.close()


def test_the_catalogue_is_not_empty():
    rows = catalogue()
    assert len(rows) >= 20
    assert {command.split()[0] for command, *_ in rows
            if "=" not in command.split()[0]} == set(MODULES)


@pytest.mark.parametrize("command,expected,exit_status,failure_row", catalogue(),
                         ids=[row[0] for row in catalogue()])
def test_bad_input_gives_one_line_and_changes_nothing(
        command, expected, exit_status, failure_row, tmp_path, labeling_db, lims_admin,
        cli_env, uninitialised_database):
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    build_sandbox(sandbox)
    with lims_admin.cursor() as lims_cursor:
        prepare_databases(labeling_db, lims_cursor, sandbox)
    before = snapshot(sandbox, labeling_db)
    words = shlex.split(command)
    settings = dict(word.split("=", 1) for word in words if re.match(r"^[A-Z_]+=", word))
    program, *args = [word for word in words if not re.match(r"^[A-Z_]+=", word)]
    try:
        result = subprocess.run([*mounted(command, sandbox), *unprivileged(), sys.executable,
                                 "-m", MODULES[program], *args],
                                env={**cli_env, **settings}, cwd=sandbox, capture_output=True,
                                text=True, timeout=600)
    finally:
        (sandbox / "locked_storage").chmod(0o755)
    printed = result.stderr.replace(str(sandbox) + "/", "").strip().splitlines()
    assert (result.returncode, printed) == (exit_status, [expected]), result.stdout
    assert snapshot(sandbox, labeling_db) == before
    failures = labeling_db.query("SELECT ophys_experiment_id, failure_class, message "
                                 "FROM segmentation_failures")
    printed_message = expected.split(": error: ", 1)[1]
    assert [(row["ophys_experiment_id"], row["failure_class"],
             row["message"].replace(str(sandbox) + "/", "")) for row in failures] == (
        [] if failure_row == "no" else [(850517344, failure_row, printed_message)])
