"""How commands report errors and read bare boolean flags."""
import json

import marshmallow as mm
import psycopg2
import pytest

from slapp.segmentation.segment import BARE_FLAGS
from slapp.utils.cli import expand_bare_flags, one_line, run_main


@pytest.mark.parametrize("argv, expected", [
    (["--overwrite"], ["--overwrite", "True"]),
    (["--overwrite", "--manifest_index", "3"], ["--overwrite", "True", "--manifest_index", "3"]),
    (["--overwrite", "False"], ["--overwrite", "False"]),
    (["--keep_suite2p_results", "--overwrite"],
     ["--keep_suite2p_results", "True", "--overwrite", "True"]),
    (["--tmp_dir", "/scratch"], ["--tmp_dir", "/scratch"]),
])
def test_boolean_options_work_as_bare_flags(argv, expected):
    assert expand_bare_flags(argv, BARE_FLAGS) == expected


def test_validation_errors_name_each_field_on_one_line():
    error = mm.ValidationError({"counts": {0: ["Not a valid integer."]},
                                "manifest": {1: {"_schema": ["Invalid input type."]}}})
    assert one_line(error) == ("invalid input: counts.0: Not a valid integer.; "
                               "manifest.1: Invalid input type.")


def test_multi_line_messages_become_one_line():
    assert one_line(psycopg2.Error("ERROR:  boom\nDETAIL:  more")) == "ERROR:  boom DETAIL:  more"
    with pytest.raises(json.JSONDecodeError) as raised:
        json.loads("{")
    assert one_line(raised.value).startswith("invalid JSON: Expecting")


def test_run_main_prints_one_line_and_returns_1(capsys):
    def fail():
        raise ValueError("the movie is missing")
    assert run_main(fail, "segment") == 1
    assert capsys.readouterr().err == "segment: error: the movie is missing\n"
    assert run_main(lambda: None, "segment") == 0
