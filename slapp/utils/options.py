"""Options that several commands share, each declared once as a schema piece.

A command's argschema schema inherits the pieces it takes (marshmallow
collects the fields of every base class), so an option shared by two commands
has one name, one default, one check and one help text::

    class SegmentSchema(argschema.ArgSchema, ManifestJsonSchema, ...):
        ...

:class:`slapp.segmentation.task_options.SegmentTaskSchema` and
:class:`slapp.segmentation.settings.Suite2pSettingsSchema` are the
segmentation's pieces.
"""
import os
from pathlib import Path

import argschema
import marshmallow as mm


class ManifestJsonSchema(mm.Schema):
    """``--manifest_json``: the manifest a segmentation command works through."""

    manifest_json = argschema.fields.InputFile(
        required=True,
        metadata={"description": "the segmentation manifest, as written by slapp manifest"})


class SlappHomeSchema(mm.Schema):
    """``--slapp_home``: the directory of the embedded server and the demo's files."""

    slapp_home = mm.fields.Str(
        allow_none=True, dump_default=None,
        metadata={"description": "the directory of the embedded PostgreSQL server and of "
                                 "everything the demo makes. Default: $SLAPP_HOME, else "
                                 "./.slapp, the directory every slapp command uses, so "
                                 "they find the same server without being told"})


SLAPP_HOME_HELP = SlappHomeSchema().fields["slapp_home"].metadata["description"]


def default_home() -> Path:
    """``$SLAPP_HOME``, or ``.slapp`` in the current directory."""
    return Path(os.environ.get("SLAPP_HOME", ".slapp")).resolve()


def slapp_home(args: dict) -> Path:
    """The ``--slapp_home`` a command was given, else :func:`default_home`."""
    return Path(args["slapp_home"]).resolve() if args.get("slapp_home") else default_home()
