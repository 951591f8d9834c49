"""Every command in slapp's one registry behaves the same way on the command line.

Each test walks :data:`slapp.commands.COMMANDS` (the commands whose modules
are installed): ``--help`` starts with the command's summary, an unknown
option or a value of the wrong type is one line and exit 1, every boolean
option works bare and with true/false, and ``python -m <module>`` prints what
``slapp <command>`` prints.
"""
import re
import subprocess
import sys
from pathlib import Path

import pytest

from slapp import commands
from slapp.commands import COMMANDS

AVAILABLE = commands.available()
# What each command needs before its options (the embedded server's action).
POSITIONAL = {"embedded": ["status"]}
# Per command, arguments with a value not of its option's type, and the option's name.
BAD_VALUES = {
    "select": (["--random_seed", "x"], "random_seed"),
    "manifest": (["--experiment_selection_id", "x"], "experiment_selection_id"),
    "segment": (["--manifest_index", "x"], "manifest_index"),
    "run-local": (["--workers", "x"], "workers"),
    "status": (["--max_concurrent", "x"], "max_concurrent"),
    "record-failure": (["--manifest_index", "x"], "manifest_index"),
    "report": (["--experiment_selection_id", "x"], "experiment_selection_id"),
    "export-nwb": (["--segmentation_run_id", "x"], "segmentation_run_id"),
    "compare": (["--iou_threshold", "x"], "iou_threshold"),
    "db-init": (["--log_level", "LOUD"], "log_level"),
    "embedded": (["restart"], "command"),
    "populate-lims": (["--log_level", "LOUD"], "log_level"),
    "demo": (["--workers", "x"], "workers"),
    "labelers": (["--revoke", "alice", "--list", "maybe"], "list"),
    "serve": (["--port", "x"], "port"),
    "plan": (["--diameter", "x"], "diameter"),
    "create-job": (["--n_rois", "x"], "n_rois"),
    "artifacts": (["--workers", "x"], "workers"),
    "consolidate": (["--min_labels", "x"], "min_labels"),
    "train": (["--cv_folds", "x"], "cv_folds"),
    "predict": (["--classifier_model_id", "x"], "classifier_model_id"),
    "export-gt": (["--s3_uri", "x"], "s3_uri"),
    "import-gt": (["--labels_per_roi", "x"], "labels_per_roi"),
}
BOOLEAN = re.compile(r"(--[\w.]+) \[true\|false\]")


def slapp(*args, cwd: Path | None = None, module: str | None = None):
    """Run ``python -m slapp args...`` (or ``python -m module args...``)."""
    return subprocess.run([sys.executable, "-m", module or "slapp", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=300)


def one_error_line(result, command: str) -> str:
    lines = result.stderr.splitlines()
    assert (result.returncode, len(lines)) == (1, 1), result.stderr
    assert lines[0].startswith(f"slapp {command}: error: "), lines[0]
    assert "{" not in lines[0] and "bug" not in lines[0], lines[0]
    return lines[0]


def test_slapp_lists_the_installed_commands_and_refuses_others():
    result = slapp("--help")
    assert result.returncode == 0
    listed = [line.split()[0] for line in result.stdout.split("commands:\n")[1].splitlines()]
    assert listed == AVAILABLE
    for name in ("select", "manifest", "segment", "run-local", "status", "report",
                 "export-nwb", "compare", "db-init", "embedded", "demo"):
        assert name in AVAILABLE

    result = slapp("segmnet")
    assert (result.returncode, result.stderr) == (
        1, "slapp: error: no command 'segmnet' (slapp --help lists the commands)\n")


def test_a_registered_command_whose_module_is_missing_is_refused_by_name():
    missing = [name for name in COMMANDS if name not in AVAILABLE]
    for name in missing:
        assert not commands.is_available(name)
    if missing:
        result = slapp(missing[0])
        assert (result.returncode, result.stderr) == (
            1, f"slapp: error: command '{missing[0]}' is not part of this installation "
               f"(module {COMMANDS[missing[0]].module} is missing)\n")


def test_every_command_has_a_bad_value_to_try():
    assert sorted(BAD_VALUES) == sorted(AVAILABLE)


@pytest.mark.parametrize("command", AVAILABLE)
def test_help_starts_with_the_summary_in_plain_text(command, tmp_path):
    result = slapp(command, "--help", cwd=tmp_path)
    assert (result.returncode, result.stderr) == (0, "")
    first, blank, usage = result.stdout.splitlines()[:3]
    assert (first, blank) == (f"slapp {command}: {COMMANDS[command].summary}", "")
    assert usage.startswith(f"usage: slapp {command} ")
    assert result.stdout.count(COMMANDS[command].summary) == 1
    assert "``" not in result.stdout and not re.search(r":(func|class|mod):`", result.stdout)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", AVAILABLE)
def test_python_dash_m_prints_the_same(command):
    module = COMMANDS[command].module
    assert slapp(command, "--help").stdout == slapp("--help", module=module).stdout
    unknown = [*POSITIONAL.get(command, []), "--no_such_option", "1"]
    assert slapp(command, *unknown).stderr == slapp(*unknown, module=module).stderr


@pytest.mark.parametrize("command", AVAILABLE)
def test_an_unknown_option_is_one_line(command, tmp_path):
    result = slapp(command, *POSITIONAL.get(command, []), "--no_such_option", "1", cwd=tmp_path)
    assert one_error_line(result, command) == (
        f"slapp {command}: error: unrecognized arguments: --no_such_option 1 "
        "(--help lists the options)")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", AVAILABLE)
def test_a_value_of_the_wrong_type_is_one_line_naming_the_option(command, tmp_path):
    arguments, option = BAD_VALUES[command]
    line = one_error_line(slapp(command, *arguments, cwd=tmp_path), command)
    assert option in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", AVAILABLE)
def test_every_boolean_option_works_bare_and_with_true_or_false(command, tmp_path):
    flags = BOOLEAN.findall(slapp(command, "--help").stdout)
    if not flags:
        pytest.skip(f"slapp {command} has no boolean option")
    unknown = f"slapp {command}: error: unrecognized arguments: --no_such_option 1 " \
              "(--help lists the options)"
    bare = slapp(command, *flags, "--no_such_option", "1", cwd=tmp_path)
    assert one_error_line(bare, command) == unknown
    spelled = [word for flag, value in zip(flags, ("false", "TRUE", "no", "1") * len(flags))
               for word in (flag, value)]
    assert one_error_line(slapp(command, *spelled, "--no_such_option", "1", cwd=tmp_path),
                          command) == unknown
    assert one_error_line(slapp(command, flags[0], "maybe", cwd=tmp_path), command) == (
        f"slapp {command}: error: {flags[0]}: expected true or false, not 'maybe'")
    assert list(tmp_path.iterdir()) == []


def test_the_console_script_is_declared():
    setup = (Path(__file__).resolve().parents[1] / "setup.py").read_text()
    assert '"slapp=slapp.commands:main"' in setup
