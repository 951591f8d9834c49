"""The catalogue of bad inputs is what the tools really do.

docs/bad_input_catalogue.rst keeps a table of bad inputs for every command and
the one line each prints. This test reads that table, runs every row in a sandbox holding the
files the rows name, and checks that each exits 1, prints exactly that one
line on stderr, and changes no table and no file. Commands run so that file
permissions bind them even when the tests run as root (see ``unprivileged``),
as they bind a user on a cluster.
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

from slapp.demo.lims import add_experiment

CATALOGUE = Path(__file__).resolve().parents[2] / "docs" / "bad_input_catalogue.rst"
MODULES = {
    "select_data": "slapp.data_selection.select_data",
    "segmentation_manifest": "slapp.data_selection.segmentation_manifest",
    "segment": "slapp.segmentation.segment",
    "status": "slapp.segmentation.status",
    "run_local": "slapp.segmentation.run_local",
    "compare": "slapp.evaluation.compare",
}
ROW = re.compile(r"^   \* - ``(?P<command>[^`]+)``\n     - ``(?P<line>[^`]+)``$", re.MULTILINE)


def catalogue() -> list[tuple[str, str]]:
    """The (command, printed line) rows between the catalogue markers of the catalogue page."""
    text = CATALOGUE.read_text(encoding="utf-8")
    start = text.index(".. bad-input-catalogue-start")
    end = text.index(".. bad-input-catalogue-end")
    return [(match["command"], match["line"]) for match in ROW.finditer(text[start:end])]


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


def build_sandbox(sandbox: Path) -> None:
    """The files the catalogue's commands name."""
    (sandbox / "malformed.json").write_text('{"query_strings": ["SELECT 1",\n')
    (sandbox / "wrong_types.json").write_text(json.dumps(
        {"query_strings": "SELECT 1 AS exp_id", "sub_selection_counts": ["three"]}))
    (sandbox / "quoted_query.json").write_text(json.dumps(
        {"query_strings": ["SELECT 'naïve \"quoted\"' AS exp_id"], "sub_selection_counts": [1],
         "comment_string": "l'expérience \"ü\" \\ n"}, ensure_ascii=False), encoding="utf-8")
    (sandbox / "a_directory").mkdir()
    (sandbox / "locked_storage").mkdir(mode=0)
    (sandbox / "not_hdf5.h5").write_text("this is not an HDF5 file\n")
    with h5py.File(sandbox / "no_data.h5", "w") as movie:
        movie.create_dataset("frames", data=np.zeros((4, 8, 8), dtype=np.uint16))
    with h5py.File(sandbox / "truth_4x4.h5", "w") as truth:
        truth.create_dataset("masks", data=np.ones((1, 4, 4), dtype=np.float32))
    for name, video in (("manifest.json", "no_data.h5"),
                        ("missing_movie.json", "missing.h5"),
                        ("directory_movie.json", "a_directory"),
                        ("not_hdf5_movie.json", "not_hdf5.h5"),
                        ("no_data_movie.json", "no_data.h5")):
        entry = {"experiment_id": 850517344, "nbinned": 20, "log_level": "ERROR",
                 "input_video": str(sandbox / video)}
        (sandbox / name).write_text(json.dumps({"manifest": [entry]}))


def prepare_databases(labeling_db, lims_cursor, sandbox: Path) -> None:
    """Selection 1 names an experiment LIMS lacks, selection 2 one whose storage directory
    cannot be read; run 1 is an 8x8 run."""
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


def test_the_catalogue_is_not_empty():
    rows = catalogue()
    assert len(rows) >= 20
    assert {command.split()[0] for command, _ in rows} == set(MODULES)


@pytest.mark.parametrize("command,expected", catalogue(), ids=[row[0] for row in catalogue()])
def test_bad_input_gives_one_line_and_changes_nothing(command, expected, tmp_path, labeling_db,
                                                     lims_admin, cli_env):
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    build_sandbox(sandbox)
    with lims_admin.cursor() as lims_cursor:
        prepare_databases(labeling_db, lims_cursor, sandbox)
    before = snapshot(sandbox, labeling_db)
    program, *args = shlex.split(command)
    try:
        result = subprocess.run([*unprivileged(), sys.executable, "-m", MODULES[program], *args],
                                env=cli_env, cwd=sandbox, capture_output=True, text=True,
                                timeout=600)
    finally:
        (sandbox / "locked_storage").chmod(0o755)
    printed = result.stderr.replace(str(sandbox) + "/", "").strip().splitlines()
    assert (result.returncode, printed) == (1, [expected]), result.stdout
    assert snapshot(sandbox, labeling_db) == before
