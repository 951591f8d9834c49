"""How commands report errors and read bare boolean flags."""
import argparse
import importlib
import json
import os
import stat
from pathlib import Path

import marshmallow as mm
import psycopg2
import pytest

from slapp.segmentation.segment import BARE_FLAGS
from slapp.errors import SlappError
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
        raise SlappError("the movie is missing")
    assert run_main(fail, "segment") == 1
    assert capsys.readouterr().err == "segment: error: the movie is missing\n"
    assert run_main(lambda: None, "segment") == 0


@pytest.mark.parametrize("error", [
    mm.ValidationError({"bin_size": ["Must be greater than or equal to 1."]}),
    psycopg2.OperationalError("could not connect to server\nIs it running?"),
    PermissionError(13, "Permission denied", "/lims/123"),
])
def test_expected_library_errors_are_errors_not_bugs(capsys, error):
    def fail():
        raise error
    assert run_main(fail, "status") == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("status: error: ")


def test_anything_else_is_a_bug_in_one_line_with_the_traceback_logged(capsys):
    def buggy():
        return {}["no such key"]
    assert run_main(buggy, "segment") == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("segment: bug: KeyError: 'no such key' (this is a bug in slapp, "
                           "please report it; traceback in ")
    log = Path(line.rsplit("traceback in ", 1)[1].rstrip(")"))
    try:
        assert "Traceback" in log.read_text() and 'return {}["no such key"]' in log.read_text()
        assert stat.S_IMODE(log.stat().st_mode) == 0o600
    finally:
        log.unlink()


def test_argparse_errors_become_one_line_and_are_restored_afterwards(capsys):
    def main():
        parser = argparse.ArgumentParser()
        parser.add_argument("--workers", type=int)
        parser.parse_args(["--wrokers", "2"])
    assert run_main(main, "run_local", summary="Segment every entry.") == 1
    assert capsys.readouterr().err == (
        "run_local: error: unrecognized arguments: --wrokers 2 (--help lists the options)\n")
    with pytest.raises(SystemExit):
        argparse.ArgumentParser().parse_args(["--x"])  # plain argparse again outside run_main


def test_help_starts_with_the_summary_and_exits_0(capsys):
    def main():
        argparse.ArgumentParser().parse_args(["--help"])
    assert run_main(main, "status", summary="Which entries are segmented.") == 0
    output = capsys.readouterr().out.splitlines()
    assert output[0] == "status: Which entries are segmented."
    assert output[2].startswith("usage: status ")


COMMANDS = {
    "select_data": "slapp.data_selection.select_data",
    "segmentation_manifest": "slapp.data_selection.segmentation_manifest",
    "segment": "slapp.segmentation.segment",
    "status": "slapp.segmentation.status",
    "run_local": "slapp.segmentation.run_local",
    "compare": "slapp.evaluation.compare",
    "populate_lims": "slapp.demo.populate_lims",
    "run_demo": "slapp.demo.run_demo",
    "slapp.embedded": "slapp.embedded",
}


@pytest.mark.parametrize("prog", COMMANDS)
def test_every_command_fails_the_same_way_on_an_unknown_option(prog, run_cli, tmp_path):
    positional = ["status"] if prog == "slapp.embedded" else []
    result = run_cli(COMMANDS[prog], *positional, "--no_such_option", "1", cwd=tmp_path)
    assert (result.returncode, result.stderr.splitlines()) == (1, [
        f"{prog}: error: unrecognized arguments: --no_such_option 1 "
        "(--help lists the options)"])
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("prog", COMMANDS)
def test_every_commands_help_starts_with_a_summary_line(prog, run_cli, tmp_path):
    result = run_cli(COMMANDS[prog], "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    first, blank, usage = result.stdout.splitlines()[:3]
    module_summary = importlib.import_module(COMMANDS[prog]).__doc__.strip().splitlines()[0]
    assert (first, blank) == (f"{prog}: {module_summary}", "")
    assert usage.startswith("usage: ")


def test_a_percent_sign_in_a_help_text_is_printed_as_written(capsys):
    def main():
        parser = argparse.ArgumentParser()
        parser.add_argument("--bins", default=22,
                            help="recall 0.89 (89 %%) vs 1.4%% scratch; default %(default)s")
        parser.add_argument("--rate", help="recall 89 % of the cells, 1.4% of the movie")
        parser.parse_args(["--help"])

    assert run_main(main, "demo", summary="a command") == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "recall 0.89 (89 %) vs 1.4% scratch; default 22" in help_text
    assert "recall 89 % of the cells, 1.4% of the movie" in help_text
