"""The one-command demo, end to end, in a temporary SLAPP_HOME: real server, Suite2P, files."""
import json
import os
import socket
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import h5py
import pytest

from slapp.embedded import EmbeddedServer
from slapp.utils.query_utils import DbConnection

REPO_ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


DEMO_PORT = _free_port()


def _run_demo(home: Path, *arguments) -> subprocess.CompletedProcess:
    # no LIMS_*/LABELING_* of the test server: the demo must find its own server
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("LIMS_", "LABELING_", "SLAPP_"))}
    env["SLAPP_EMBEDDED_PORT"] = str(DEMO_PORT)  # used when the demo creates its server
    # one code version for both runs, even while the package's files are being edited
    env["TRANSFORM_HASH"] = "test-run-demo"
    return subprocess.run([sys.executable, "-m", "slapp.demo.run_demo", "--slapp_home", home,
                           *map(str, arguments)], env=env, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def demo(server_home_factory):
    """The demo run twice in a fresh home; the embedded server is stopped afterwards."""
    home = server_home_factory()
    try:
        first = _run_demo(home, "--output_json", home / "first.json")
        second = _run_demo(home, "--output_json", home / "second.json")
        yield home, first, second
    finally:
        if (home / "server.json").exists():
            EmbeddedServer(home).stop()


def _labeling_db(home: Path) -> DbConnection:
    return DbConnection(**EmbeddedServer(home).credentials("labeling", "labeling"))


@pytest.mark.slow
def test_the_demo_segments_the_selected_movies_well(demo):
    home, first, _ = demo
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr
    summary = json.loads((home / "first.json").read_text())
    experiments = summary["experiments"]
    assert len(experiments) == 4  # one per query of demo_selection_input.json
    assert summary["mean_f1"] >= 0.85, experiments
    for experiment in experiments:
        assert experiment["n_rois"] > 0
        assert (Path(summary["plot_dir"]) / f"{experiment['experiment_id']}_"
                f"{experiment['segmentation_run_id']}.png").is_file()
    assert "Summary: Suite2P's cells against the ground truth" in first.stdout
    assert f"mean F1 {summary['mean_f1']:.2f} over 4 experiments" in first.stdout


def test_the_demo_ends_with_its_batch_report_and_one_nwb_file(demo):
    home, first, _ = demo
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr
    summary = json.loads((home / "first.json").read_text())
    report, nwb_file = Path(summary["report_html"]), Path(summary["nwb_file"])
    assert report == home / "demo" / "report" / "index.html"
    page = report.read_text()
    assert page.count('<tr id="entry-') == 4 and page.count('data-status="done"') == 4
    assert f"batch report (open in a browser): {report}" in first.stdout
    first_run = summary["experiments"][0]
    assert nwb_file.name == f"{first_run['experiment_id']}.nwb"
    assert f"NWB file of run {first_run['segmentation_run_id']}: {nwb_file}" in first.stdout
    pynwb = pytest.importorskip("pynwb")
    with pynwb.NWBHDF5IO(str(nwb_file), mode="r") as io:
        nwbfile = io.read()
        assert nwbfile.session_id == str(first_run["experiment_id"])
        plane = nwbfile.processing["ophys"]["ImageSegmentation"]["suite2p_rois"]
        assert len(plane) == first_run["n_rois"]


def test_movies_lie_in_a_lims_like_tree_with_ground_truth_beside_them(demo):
    home, first, _ = demo
    assert first.returncode == 0, first.stderr
    summary = json.loads((home / "first.json").read_text())
    storage = home / "demo" / "storage"
    names = set()
    for experiment in summary["experiments"]:
        movie = Path(experiment["movie"])
        experiment_id = experiment["experiment_id"]
        assert movie.parent.parent == (storage / f"specimen_{experiment_id}"
                                       / f"ophys_session_{experiment_id}"
                                       / f"ophys_experiment_{experiment_id}")
        assert Path(experiment["ground_truth"]).parent == movie.parent
        with h5py.File(movie, "r") as handle:
            assert handle["data"].shape == (3000, 128, 128)
        names.add(movie.name)
    assert names == {"concat_31Hz_0.h5", "motion_corrected_video.h5"}
    # movies exist only for the experiments the demo segments
    assert len(list(storage.rglob("*.h5"))) == 2 * len(summary["experiments"])
    manifest = json.loads((home / "demo" / "manifest.json").read_text())["manifest"]
    assert [entry["input_video"] for entry in manifest] == \
        [experiment["movie"] for experiment in summary["experiments"]]


def test_a_second_run_reuses_the_selection_the_movies_and_the_runs(demo):
    home, first, second = demo
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr
    before = json.loads((home / "first.json").read_text())
    after = json.loads((home / "second.json").read_text())
    assert after["experiment_selection_id"] == before["experiment_selection_id"]
    assert [row["segmentation_run_id"] for row in after["experiments"]] == \
        [row["segmentation_run_id"] for row in before["experiments"]]
    assert after["mean_f1"] == before["mean_f1"]
    assert f"reusing experiment_selection id {before['experiment_selection_id']}" in second.stdout
    assert "generated" not in second.stdout
    with _labeling_db(home) as labeling_db:
        counts = labeling_db.query(
            "SELECT (SELECT count(*) FROM experiment_selection) AS selections, "
            "(SELECT count(*) FROM segmentation_runs) AS runs")[0]
    assert counts == {"selections": 1, "runs": 4}


@pytest.mark.slow
def test_a_failing_step_stops_the_demo_with_one_line_and_writes_nothing(demo, tmp_path):
    home, first, _ = demo
    assert first.returncode == 0, first.stderr
    example = json.loads((REPO_ROOT / "example_selection_input.json").read_text())
    bad_input = tmp_path / "too_many.json"
    bad_input.write_text(json.dumps({**example, "sub_selection_counts": [500, 1, 1, 1]}))
    process = _run_demo(home, "--selection_input", bad_input, "--output_json",
                        tmp_path / "out.json")
    assert process.returncode == 1
    lines = process.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[-1].startswith("slapp demo: error: Step 1: select experiments failed: "
                                "slapp select: error: ")
    assert "500" in lines[-1]
    assert "slapp select: error:" in process.stdout  # the step's own output was shown
    assert not (tmp_path / "out.json").exists()
    with _labeling_db(home) as labeling_db:
        assert labeling_db.query("SELECT count(*) AS n FROM experiment_selection")[0]["n"] == 1
