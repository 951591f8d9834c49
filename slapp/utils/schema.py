"""The argschema base classes and fields every slapp command uses.

argschema reads a command's options from ``--input_json`` and the command
line. These classes close the gaps through which input a user can get wrong
reached a command as a bug, or not at all:

- :class:`StrictInt` refuses ``1.7`` (and ``2.0``, ``true``) from an input JSON
  as the command line refuses it; marshmallow's ``Int`` truncates it to ``1``;
- :class:`OutputFile` checks that a file can really be written beside the
  output path (a read-only or full file system, a directory without write
  permission) before the command does any work, and says why not in one line;
- :class:`ArgSchemaParser` refuses an input JSON that is not an object, and a
  list option whose command-line value is not a list (``--query_strings
  'SELECT 1'``), in one line, before argschema reads them.
"""
import ast
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Sequence

import argschema
import marshmallow as mm


class StrictInt(mm.fields.Int):
    """An integer option that refuses a floating-point number and a boolean.

    ``2`` (JSON) and ``"2"`` (the command line's text) load as 2; ``2.9``,
    ``2.0`` and ``true`` from JSON are refused with marshmallow's "Not a valid
    integer.", as ``2.9`` and ``2.0`` are on the command line.
    """

    def _validated(self, value):
        if isinstance(value, (bool, float)):
            raise self.make_error("invalid")
        return super()._validated(value)


def check_writable_location(path: str | Path) -> None:
    """Check that a new file can be written, and its content stored, in ``path``'s directory.

    A small temporary file is written, synced and removed: that is what
    finds a read-only or full file system, which permissions do not show.

    Parameters
    ----------
    path : str or Path
        The file to be written later.

    Raises
    ------
    marshmallow.ValidationError
        Naming the directory and why it cannot take the file.
    """
    directory = Path(path).parent
    if not directory.is_dir():
        raise mm.ValidationError(f"directory {directory} does not exist")
    try:
        with tempfile.TemporaryFile(dir=directory, prefix=".slapp-write-check.") as probe:
            probe.write(b"0")
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as error:
        raise mm.ValidationError(
            f"cannot write in {directory}: {error.strerror or error}") from None


class OutputFile(mm.fields.Str):
    """A path the command will write, checked before the command does any work."""

    def _validate(self, value):
        super()._validate(value)
        check_writable_location(value)


class ArgSchema(argschema.ArgSchema):
    """argschema's base schema with :class:`OutputFile` as ``--output_json``."""

    output_json = OutputFile(
        metadata={"description": "file path to output json file; its directory is checked "
                                 "for a write before any work, so that a command never "
                                 "does its work only to fail writing this file"})


def _command_line_value(arguments: Sequence[str], option: str) -> str | None:
    """The value of ``--option`` in ``arguments`` (``--option value`` or ``--option=value``)."""
    value = None
    for position, argument in enumerate(arguments):
        if argument == option and position + 1 < len(arguments):
            value = arguments[position + 1]
        elif argument.startswith(option + "="):
            value = argument[len(option) + 1:]
    return value


def check_arguments(schema: mm.Schema, arguments: Sequence[str]) -> None:
    """Refuse, in one line, what argschema would read as something else or crash on.

    Parameters
    ----------
    schema : marshmallow.Schema
        The command's schema.
    arguments : sequence of str
        The command line, without the program name.

    Raises
    ------
    marshmallow.ValidationError
        When ``--input_json`` holds JSON that is not an object, or a list
        option's command-line value is not a list literal.
    """
    input_json = _command_line_value(arguments, "--input_json")
    if input_json is not None and Path(input_json).is_file():
        try:
            with open(input_json, encoding="utf-8") as stream:
                document = json.load(stream)
        except UnicodeDecodeError as error:
            raise mm.ValidationError(f"input_json {input_json} is not UTF-8 text: "
                                     f"{error.reason} at byte {error.start}") from None
        if not isinstance(document, dict):
            raise mm.ValidationError(
                f"input_json {input_json} holds a JSON {type(document).__name__}, not an "
                'object of options ({"option": value, ...})')
    for name, field in schema.fields.items():
        # argschema reads these as one Python literal (the others as one word per item)
        if not (isinstance(field, mm.fields.List)
                and field.metadata.get("cli_as_single_argument")):
            continue
        value = _command_line_value(arguments, f"--{name}")
        if value is None:
            continue
        try:
            ast.literal_eval(value)
        except (SyntaxError, ValueError):
            raise mm.ValidationError(
                f"--{name} {value!r} is not a list: give it in brackets, e.g. "
                f"--{name} '[...]' with each string quoted") from None


class ArgSchemaParser(argschema.ArgSchemaParser):
    """argschema's parser, refusing a non-object input JSON and a non-list list option."""

    def __init__(self, input_data=None, schema_type=None, output_schema_type=None, args=None,
                 logger_name=__name__):
        arguments = list(sys.argv[1:] if args is None else args)
        check_arguments((schema_type or self.default_schema)(), arguments)
        super().__init__(input_data=input_data, schema_type=schema_type,
                         output_schema_type=output_schema_type, args=arguments,
                         logger_name=logger_name)
