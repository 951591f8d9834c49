"""Step 2: turn a stored experiment selection into the manifest that the array job segments.

::

    python -m slapp.data_selection.segmentation_manifest \\
        --experiment_selection_id 5 --output_json ./example_output.json --log_level INFO

The ``sub_selected_ids`` of one ``experiment_selection`` row are looked up in
LIMS with one query (frame count and storage directory). Each experiment's
movie is then found on disk and its ``data`` dataset's shape read (never its
frames); these look-ups run concurrently, because on a cluster they are
directory listings on a network file system. Every experiment is checked
before anything is written: if any is bad, all problems are reported together
and no manifest is written. The manifest lists the experiments in the order of
``sub_selected_ids``; entry ``i`` is array task ``i`` of the segmentation job.
"""
import json
import os
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import argschema
import h5py
import marshmallow as mm
from tqdm import tqdm

from slapp.data_selection.utils import FindFileException, find_full_movie
from slapp.utils.cli import one_line

# Messages of this many bad experiments go into the final error line; every
# one of them is also logged on its own line before it.
_PROBLEMS_IN_SUMMARY = 20


class SegmentationManifestException(Exception):
    """The manifest cannot be built or read: a bad selection, experiment or file."""


class SegmentationManifestSchema(argschema.ArgSchema):
    """Build the segmentation manifest of one stored experiment selection."""

    experiment_selection_id = mm.fields.Int(
        required=True, validate=mm.validate.Range(min=1),
        metadata={"description": "id of the experiment_selection row (written by select_data) "
                                 "whose sub_selected_ids are segmented"})
    bin_size = mm.fields.Int(
        dump_default=115, validate=mm.validate.Range(min=1),
        metadata={"description": "frames averaged into one binned frame for Suite2P's "
                                 "detection; nbinned = int(nframes / bin_size). 115 is "
                                 "what the original jobs used: a ~50,000-frame 31 Hz "
                                 "movie becomes ~420 binned frames, enough to find cells "
                                 "and small enough to fit in a task's memory"})
    discovery_workers = mm.fields.Int(
        dump_default=16, validate=mm.validate.Range(min=1),
        metadata={"description": "movie look-ups run at once. They wait on directory "
                                 "listings of a network file system, not on the CPU, so "
                                 "threads overlap the waits; 16 hides most latency "
                                 "without flooding the file server. 1 searches one "
                                 "directory after another"})
    output_json = argschema.fields.OutputFile(
        required=True,
        metadata={"description": "where the manifest is written (replaced atomically, "
                                 "and only when every experiment checks out)"})


def _require_absolute_path(path: str) -> None:
    if not os.path.isabs(path):
        raise mm.ValidationError(f"{path!r} is not an absolute path")


# The manifest schemas are plain marshmallow schemas: argschema's DefaultSchema
# fills defaults by writing into the document it loads and fails with a
# TypeError on an entry that is not an object, and argschema's LogLevel field
# sets the root logger's level whenever it is loaded, which a reader of the
# manifest must not suffer. The default "ERROR" is filled on load and on dump.
class SegmentationManifestEntrySchema(mm.Schema):
    """One experiment to segment: one task of the segmentation array job."""

    log_level = mm.fields.Str(
        load_default="ERROR", dump_default="ERROR",
        validate=mm.validate.OneOf(argschema.fields.LogLevel.options),
        metadata={"description": "log level of this entry's segmentation task; ERROR keeps "
                                 "the logs of hundreds of array tasks short"})
    experiment_id = mm.fields.Int(
        required=True, metadata={"description": "LIMS ophys_experiments.id"})
    nbinned = mm.fields.Int(
        required=True, validate=mm.validate.Range(min=1),
        metadata={"description": "binned frames Suite2P detects ROIs on "
                                 "(int(nframes / bin_size))"})
    input_video = mm.fields.Str(
        required=True,
        validate=_require_absolute_path,
        metadata={"description": "absolute, resolved path of the motion-corrected HDF5 "
                                 "movie (dataset 'data': frames x height x width)"})


class SegmentationManifestOutputSchema(mm.Schema):
    """The segmentation manifest: ``{"manifest": [entry, ...]}``."""

    manifest = mm.fields.Nested(
        SegmentationManifestEntrySchema, many=True, required=True,
        validate=mm.validate.Length(min=1, error="lists no experiment"),
        metadata={"description": "one entry per experiment, in the order of the "
                                 "selection's sub_selected_ids"})


def load_manifest(path: str | Path) -> list[dict]:
    """Read and validate a segmentation manifest.

    Parameters
    ----------
    path : str or Path
        A JSON file written by this module.

    Returns
    -------
    list of dict
        The entries in order, each with ``log_level``, ``experiment_id``,
        ``nbinned`` and ``input_video``.

    Raises
    ------
    SegmentationManifestException
        If the file cannot be read, is not JSON, or does not match
        :class:`SegmentationManifestOutputSchema`; the message names the file.
    """
    try:
        with open(path) as manifest_file:
            document = json.load(manifest_file)
        return SegmentationManifestOutputSchema().load(document)["manifest"]
    except OSError as error:
        raise SegmentationManifestException(
            f"cannot read manifest {path}: {error.strerror}") from error
    except (ValueError, mm.ValidationError) as error:  # JSONDecodeError is a ValueError
        raise SegmentationManifestException(
            f"manifest {path} is not valid: {one_line(error)}") from error
