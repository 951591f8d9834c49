"""How every slapp command ends: success, or one clear line on stderr and exit 1.

Each step's ``__main__`` block calls :func:`run_main`, which gives every command
the same behaviour without the command doing anything:

- an expected error (a :class:`~slapp.errors.SlappError`, invalid input, a
  database or file-system error) is one line, ``slapp <command>: error: <why>``,
  exit 1, whether the command was started as ``slapp <command>`` or as
  ``python -m slapp.<module>`` (the name comes from :data:`slapp.commands.COMMANDS`);
- a mistyped or unknown option, an option without its value, or a value that
  is not of the option's type is one such line too, naming the option
  (argparse's own 15-line usage and exit 2, and argschema's JSON blob of cast
  errors, never reach the user);
- every boolean option of an argschema schema works bare (``--overwrite``)
  and with a value (``--overwrite false``; true/false, yes/no, 1/0, any case);
- ``--help`` starts with a one-line summary of the command (its registry
  summary, or the first line of its module's docstring), then the usage;
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
from typing import Callable, Iterator

import argschema
import argschema.utils
import marshmallow
import psycopg2

from slapp.commands import COMMANDS, program_name
from slapp.errors import BadInputError, SlappError

logger = logging.getLogger(__name__)

# What a user can cause or fix; every other exception is a bug in slapp.
EXPECTED_ERRORS = (SlappError, marshmallow.ValidationError, json.JSONDecodeError,
                   psycopg2.Error, OSError)


# The --log_level values of every command: argschema's (its schemas check them),
# also for the commands built on argparse alone.
LOG_LEVELS = tuple(argschema.fields.LogLevel.options)


class UsageError(BadInputError):
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


_TRUE = ("true", "yes", "1", "on")
_FALSE = ("false", "no", "0", "off")


def parse_boolean(text: str) -> bool:
    """Read a boolean option's value: true/false, yes/no, 1/0 or on/off, in any case.

    Raises
    ------
    ValueError
        For any other text.
    """
    word = str(text).strip().lower()
    if word in _TRUE or word in _FALSE:
        return word in _TRUE
    raise ValueError(f"expected true or false, not {text!r}")


def _field_at(schema, dest: str):
    """The marshmallow field behind an argschema option (``a.b`` for nested schemas)."""
    field = None
    for part in dest.split("."):
        if schema is None or part not in schema.fields:
            return None
        field = schema.fields[part]
        schema = field.schema if isinstance(field, marshmallow.fields.Nested) else None
    return field


def _schema_argparser(original):
    """argschema's parser builder, with every boolean option's value made optional."""
    def build(schema):
        parser = original(schema)
        for action in parser._actions:
            if isinstance(_field_at(schema, action.dest), marshmallow.fields.Boolean):
                action.nargs, action.const, action.metavar = "?", "true", "true|false"
        return parser
    return build


def _args_to_dict(original):
    """argschema's reading of the parsed options, refusing a bad value in one line."""
    def read(namespace, schema=None):
        for dest, value in vars(namespace).items():
            field = _field_at(schema, dest)
            if value is None or field is None:
                continue
            try:
                argschema.utils.get_type_from_field(field)(value)
            except (ValueError, SyntaxError) as error:
                kind = ("true or false" if isinstance(field, marshmallow.fields.Boolean)
                        else f"a {type(field).__name__.lower()} such as [1, 2]")
                raise UsageError(f"--{dest}: expected {kind}, not {value!r}") from error
        return original(namespace, schema)
    return read


# reStructuredText markup in docstrings and field descriptions, shown as plain text
_ROLE = re.compile(r":[a-z]+:`(~?)([^`]+)`")
_LITERAL = re.compile(r"``([^`]+)``")
_LITERAL_BLOCK_LINE = re.compile(r"^[ \t]*::[ \t]*$", re.MULTILINE)  # a lone "::"
_LITERAL_BLOCK_END = re.compile(r"::$", re.MULTILINE)  # "Run this::"


def _role_text(match: re.Match) -> str:
    shortened, target = match.groups()
    if "<" in target:  # :ref:`the text <target>`
        return target.split("<", 1)[0].strip()
    return target.rsplit(".", 1)[-1] if shortened else target


def plain_text(text: str | None) -> str | None:
    """A help text without reStructuredText markup.

    A role such as ``:func:`~slapp.a.b``` becomes ``b``, a double-backquoted
    literal loses its quotes, and a literal-block marker ``::`` becomes ``:``.
    """
    if not text:
        return text
    text = _LITERAL.sub(r"\1", _ROLE.sub(_role_text, text))
    text = _LITERAL_BLOCK_LINE.sub("", text)
    return _LITERAL_BLOCK_END.sub(":", text)


def _description_after_summary(description: str | None) -> str | None:
    """A parser's description without its first line, which the summary line replaces."""
    if not description:
        return description
    return description.strip().partition("\n")[2].strip("\n") or None


@contextmanager
def _argparse_reports_one_line(prog: str, summary: str) -> Iterator[None]:
    """Make every argparse parser built meanwhile (argschema's too) behave as slapp's.

    Its errors raise :class:`UsageError` instead of printing usage and exiting
    with status 2, its usage names the command, its help starts with the
    summary line (and does not repeat it), argschema's boolean options work
    bare and with true/false, and a value of the wrong type is one line.
    """
    original_error = argparse.ArgumentParser.error
    original_format_help = argparse.ArgumentParser.format_help
    original_argparser = argschema.utils.schema_argparser
    original_args_to_dict = argschema.utils.args_to_dict
    original_boolean = argschema.utils.FIELD_TYPE_MAP[marshmallow.fields.Boolean]
    original_argv0 = sys.argv[0] if sys.argv else None

    def error(parser, message):
        raise UsageError(f"{message} (--help lists the options)")

    def format_help(parser):
        # argparse %-formats every help text; a description may say "89 %"
        for action in parser._actions:
            if action.help:
                action.help = _LONE_PERCENT.sub("%%", plain_text(action.help))
        for group in parser._action_groups:
            group.description = plain_text(group.description)
        parser.description = plain_text(_description_after_summary(parser.description)
                                        if summary else parser.description)
        text = original_format_help(parser)
        return f"{prog}: {summary}\n\n{text}" if summary else text

    argparse.ArgumentParser.error = error
    argparse.ArgumentParser.format_help = format_help
    argschema.utils.schema_argparser = _schema_argparser(original_argparser)
    argschema.utils.args_to_dict = _args_to_dict(original_args_to_dict)
    argschema.utils.FIELD_TYPE_MAP[marshmallow.fields.Boolean] = parse_boolean
    if sys.argv:
        sys.argv[0] = prog
    try:
        yield
    finally:
        argparse.ArgumentParser.error = original_error
        argparse.ArgumentParser.format_help = original_format_help
        argschema.utils.schema_argparser = original_argparser
        argschema.utils.args_to_dict = original_args_to_dict
        argschema.utils.FIELD_TYPE_MAP[marshmallow.fields.Boolean] = original_boolean
        if sys.argv:
            sys.argv[0] = original_argv0


def _log_bug(prog: str) -> str:
    """Write the current exception's traceback to a new private file; return its path."""
    descriptor, path = tempfile.mkstemp(prefix=f"{prog.replace(' ', '-')}-bug-", suffix=".log")
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
        The command's name in :data:`slapp.commands.COMMANDS`, e.g. ``"select"``;
        its messages then start with ``slapp select:``. Another name is printed
        as it is.
    summary : str, optional
        The first line of ``--help``; by default the command's registry summary,
        or the first line of the docstring of the module run with ``python -m``.

    Returns
    -------
    int
        The process exit code: 0 on success (and after ``--help``), 1 on any
        error, 130 on Ctrl-C.
    """
    if summary is None:
        summary = COMMANDS[prog].summary if prog in COMMANDS else _summary(main)
    if prog in COMMANDS:
        prog = program_name(prog)
    try:
        with _argparse_reports_one_line(prog, summary):
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
