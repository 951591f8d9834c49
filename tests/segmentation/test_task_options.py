"""run-local hands every segment task option on unchanged, and creates a missing tmp_dir."""
import json

import pytest

from slapp.segmentation.run_local import RunLocal, RunLocalSchema
from slapp.segmentation.segment import Segment, SegmentSchema
from slapp.segmentation.task_options import SegmentTaskSchema, segment_arguments

TASK_OPTIONS = ["--plot_dir", "/plots", "--keep_suite2p_results", "True",
                "--write_retry_seconds", "5", "--overwrite", "True", "--diameter", "14",
                "--do_registration", "True", "--torch_device", "cuda"]


@pytest.fixture
def manifest(tmp_path):
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps([]))
    return path


def test_run_local_takes_every_option_of_a_segment_task():
    own = {"manifest_index", "input_json", "output_json", "log_level"}
    task_options = set(SegmentSchema().fields) - own
    assert task_options == set(SegmentTaskSchema().fields)
    assert task_options <= set(RunLocalSchema().fields)


def test_a_task_gets_the_options_run_local_was_given(manifest, tmp_path):
    given = RunLocal(args=["--manifest_json", str(manifest), "--tmp_dir", str(tmp_path),
                           "--log_level", "ERROR", *TASK_OPTIONS]).args
    arguments = segment_arguments(given)

    task = Segment(args=[*arguments, "--manifest_index", "0", "--log_level", "ERROR"]).args
    for name in SegmentTaskSchema().fields:
        assert task[name] == given[name], name
    assert (task["plot_dir"], task["keep_suite2p_results"], task["write_retry_seconds"],
            task["diameter"], task["torch_device"]) == ("/plots", True, 5.0, 14.0, "cuda")


def test_a_task_gets_the_classifier_file_run_local_was_given(manifest, tmp_path):
    classifier = tmp_path / "classifier.npy"  # the schema checks that it exists
    classifier.write_bytes(b"a file")
    given = RunLocal(args=["--manifest_json", str(manifest), "--log_level", "ERROR",
                           "--classifier_path", str(classifier)]).args
    arguments = segment_arguments(given)

    assert arguments[arguments.index("--classifier_path") + 1] == str(classifier)
    task = Segment(args=[*arguments, "--manifest_index", "0"]).args
    assert task["classifier_path"] == str(classifier)
    assert "--classifier_path" not in segment_arguments(
        RunLocal(args=["--manifest_json", str(manifest)]).args)


def test_options_without_a_value_are_left_to_the_task():
    assert segment_arguments({"manifest_json": "m.json", "tmp_dir": None,
                              "plot_dir": None, "overwrite": False}) == [
        "--manifest_json", "m.json", "--overwrite", "False"]


def test_run_local_creates_a_missing_tmp_dir_as_segment_does(manifest, tmp_path, monkeypatch):
    for name, value in {"HOST": "localhost", "DATABASE": "labeling", "PORT": "5432",
                        "USER": "someone", "PASSWORD": "secret"}.items():
        monkeypatch.setenv(f"LABELING_{name}", value)
    tmp_dir = tmp_path / "not" / "yet"
    runner = RunLocal(args=["--manifest_json", str(manifest), "--tmp_dir", str(tmp_dir),
                            "--log_level", "ERROR"])

    _, _, prepared = runner._checked_paths()

    assert prepared == tmp_dir and tmp_dir.is_dir()
