"""How every slapp command ends: success, or one clear line on stderr and exit 1.

Each step's ``__main__`` block calls :func:`run_main`, which gives every command
the same behaviour without the command doing anything:

- an expected error (a :class:`~slapp.errors.SlappError`, invalid input, a
  database or file-system error) is one line, ``<command>: error: <why>``, exit 1;
- a mistyped or unknown option, or an option without its value, is one such
  line too (argparse's own 15-line usage and exit 2 never reach the user);
- ``--help`` starts with a one-line summary of the command (the first line of
  its module's docstring), then the usage;
- anything else is a bug in slapp: one line that says so, exit 1, and the
  traceback in a log file the line names.

Setting ``SLAPP_TRACEBACK=1`` prints the traceback of any error, for bug reports.
"""
import argparse
import json
import logging
import os
import re
import sys
import tempfile
import traceback
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import marshmallow
import psycopg2

from slapp.errors import SlappError

logger = logging.getLogger(__name__)

# What a user can cause or fix; every other exception is a bug in slapp.
EXPECTED_ERRORS = (SlappError, marshmallow.ValidationError, json.JSONDecodeError,
                   psycopg2.Error, OSError)


class UsageError(SlappError):
    """A mistyped or unknown option, or an option without its value."""


def _flatten(messages, prefix: str = "") -> list[str]:
    if isinstance(messages, dict):
        lines = []
        for key, value in messages.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            lines.extend(_flatten(value, prefix if key == "_schema" else name))
        return lines
    if isinstance(messages, (list, tuple)):
        return [line for item in messages for line in _flatten(item, prefix)]
    return [f"{prefix}: {messages}" if prefix else str(messages)]


def one_line(error: BaseException) -> str:
    """Render an exception as a single line for a user.

    Parameters
    ----------
    error : BaseException
        Any exception; marshmallow errors list each bad field, database errors
        keep their first line, JSON errors name the position.

    Returns
    -------
    str
        The message without newlines.
    """
    if isinstance(error, marshmallow.ValidationError):
        text = "invalid input: " + "; ".join(_flatten(error.messages))
    elif isinstance(error, json.JSONDecodeError):
        text = f"invalid JSON: {error}"
    else:
        text = str(error).strip() or type(error).__name__
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if len(lines) == 1 else " ".join(lines)


def _summary(main: Callable) -> str:
    """The first line of the docstring of the module being run (or of ``main``'s module)."""
    module = sys.modules.get("__main__")
    doc = getattr(module, "__doc__", None) or getattr(
        sys.modules.get(getattr(main, "__module__", "")), "__doc__", None) or ""
    lines = [line.strip() for line in doc.strip().splitlines() if line.strip()]
    return lines[0] if lines else ""


# A percent sign that is not argparse's own "%(default)s" or an escaped "%%".
_LONE_PERCENT = re.compile(r"(?<!%)%(?![(%])")


@contextmanager
def _argparse_reports_one_line(prog: str, summary: str) -> Iterator[None]:
    """Make every argparse parser built meanwhile (argschema's too) behave as slapp's.

    Its errors raise :class:`UsageError` instead of printing usage and exiting
    with status 2, its usage names the command, and its help starts with the
    summary line.
    """
    original_error = argparse.ArgumentParser.error
    original_format_help = argparse.ArgumentParser.format_help
    original_argv0 = sys.argv[0] if sys.argv else None

    def error(parser, message):
        raise UsageError(f"{message} (--help lists the options)")

    def format_help(parser):
        # argparse %-formats every help text; a description may say "89 %"
        for action in parser._actions:
            if action.help:
                action.help = _LONE_PERCENT.sub("%%", action.help)
        text = original_format_help(parser)
        return f"{prog}: {summary}\n\n{text}" if summary else text

    argparse.ArgumentParser.error = error
    argparse.ArgumentParser.format_help = format_help
    if sys.argv:
        sys.argv[0] = prog
    try:
        yield
    finally:
        argparse.ArgumentParser.error = original_error
        argparse.ArgumentParser.format_help = original_format_help
        if sys.argv:
            sys.argv[0] = original_argv0


def _log_bug(prog: str) -> str:
    """Write the current exception's traceback to a new private file; return its path."""
    descriptor, path = tempfile.mkstemp(prefix=f"slapp-{prog}-bug-", suffix=".log")
    with os.fdopen(descriptor, "w") as log:
        traceback.print_exc(file=log)
    logger.debug("traceback written to %s", path)
    return path


def run_main(main: Callable[[], None], prog: str, summary: str | None = None) -> int:
    """Run a command's main function and turn any failure into one line and exit 1.

    Parameters
    ----------
    main : callable
        The command's body; it parses its own arguments (argschema or argparse).
    prog : str
        The command's name, printed before every message, e.g. ``"select_data"``.
    summary : str, optional
        The first line of ``--help``; by default the first line of the
        docstring of the module run with ``python -m``.

    Returns
    -------
    int
        The process exit code: 0 on success (and after ``--help``), 1 on any
        error, 130 on Ctrl-C.
    """
    try:
        with _argparse_reports_one_line(prog, summary if summary is not None
                                        else _summary(main)):
            main()
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except SystemExit as exit_request:  # --help, or a command's own exit code
        if exit_request.code is None or isinstance(exit_request.code, int):
            return exit_request.code or 0
        print(f"{prog}: error: {exit_request.code}", file=sys.stderr)
        return 1
    except EXPECTED_ERRORS as error:
        if os.environ.get("SLAPP_TRACEBACK"):
            traceback.print_exc()
        print(f"{prog}: error: {one_line(error)}", file=sys.stderr)
        return 1
    except Exception as error:  # noqa: BLE001 - a bug, reported as one
        if os.environ.get("SLAPP_TRACEBACK"):
            traceback.print_exc()
        print(f"{prog}: bug: {type(error).__name__}: {one_line(error)} (this is a bug in "
              f"slapp, please report it; traceback in {_log_bug(prog)})", file=sys.stderr)
        return 1
    return 0


def require_one_of(data: dict, first: str, second: str) -> None:
    """Check that a command got exactly one of two options that each name its input.

    Parameters
    ----------
    data : dict
        The arguments, as a marshmallow schema validator receives them.
    first, second : str
        The two option names, without dashes.

    Raises
    ------
    marshmallow.ValidationError
        ``give --first or --second`` when both or neither were given.
    """
    if (first in data) == (second in data):
        raise marshmallow.ValidationError(f"give --{first} or --{second}")


def expand_bare_flags(argv: Sequence[str], flags: Sequence[str]) -> list[str]:
    """Let boolean options be given as bare flags: ``--overwrite`` means ``--overwrite True``.

    argschema's boolean options otherwise insist on a value.

    Parameters
    ----------
    argv : sequence of str
        Command-line arguments without the program name.
    flags : sequence of str
        The options that may appear without a value.

    Returns
    -------
    list of str
        ``argv`` with ``True`` after each bare flag.
    """
    expanded = []
    for position, argument in enumerate(argv):
        expanded.append(argument)
        following = argv[position + 1] if position + 1 < len(argv) else None
        if argument in flags and (following is None or following.startswith("--")):
            expanded.append("True")
    return expanded
