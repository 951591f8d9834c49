"""How commands report errors and read bare boolean flags."""
import argparse
import json
import stat
from pathlib import Path

import marshmallow as mm
import psycopg2
import pytest

from slapp.errors import SlappError
from slapp.utils.cli import one_line, parse_boolean, plain_text, run_main


@pytest.mark.parametrize("text, expected", [
    ("true", True), ("True", True), ("YES", True), ("1", True), ("on", True),
    ("false", False), ("False", False), ("no", False), ("0", False), ("off", False),
])
def test_boolean_values_in_any_spelling(text, expected):
    assert parse_boolean(text) is expected


def test_a_boolean_value_that_is_neither_is_refused():
    with pytest.raises(ValueError, match="expected true or false, not 'maybe'"):
        parse_boolean("maybe")


def test_help_texts_lose_their_restructuredtext_markup():
    assert plain_text("see :func:`~slapp.utils.files.write_json_atomically` and "
                      ":class:`slapp.errors.SlappError`; ``--tmp_dir`` holds it::") == (
        "see write_json_atomically and slapp.errors.SlappError; --tmp_dir holds it:")
    assert plain_text("Run this::\n\n    slapp demo\n\n::\n\n    slapp status") == (
        "Run this:\n\n    slapp demo\n\n\n\n    slapp status")


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
    assert capsys.readouterr().err == "slapp segment: error: the movie is missing\n"
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
    assert line.startswith("slapp status: error: ")


def test_anything_else_is_a_bug_in_one_line_with_the_traceback_logged(capsys):
    def buggy():
        return {}["no such key"]
    assert run_main(buggy, "segment") == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("slapp segment: bug: KeyError: 'no such key' (this is a bug in slapp, "
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
    assert run_main(main, "run-local", summary="Segment every entry.") == 1
    assert capsys.readouterr().err == (
        "slapp run-local: error: unrecognized arguments: --wrokers 2 (--help lists the options)\n")
    with pytest.raises(SystemExit):
        argparse.ArgumentParser().parse_args(["--x"])  # plain argparse again outside run_main


def test_help_starts_with_the_summary_and_exits_0(capsys):
    def main():
        argparse.ArgumentParser().parse_args(["--help"])
    assert run_main(main, "status", summary="Which entries are segmented.") == 0
    output = capsys.readouterr().out.splitlines()
    assert output[0] == "slapp status: Which entries are segmented."
    assert output[2].startswith("usage: slapp status ")


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
