"""The segmentation manifest: the file ``slapp manifest`` writes and every later step reads.

A manifest is ``{"experiment_selection_id": N, "manifest": [entry, ...]}``: the
selection it was built from (every run made from it records that id), and one
entry per experiment in the
order of its selection's ``sub_selected_ids``; entry ``i`` is task ``i`` of the
segmentation array job. An entry names the experiment, its movie (an absolute
path, see :mod:`slapp.contracts.movie`), the number of binned frames Suite2P
detects on and the task's log level. :func:`load_manifest` reads and checks
one; ``segment``, ``run-local``, ``status``, ``record-failure``, ``report`` and
the demo use it.
"""
import json
import os
from pathlib import Path

import argschema
import marshmallow as mm

from slapp.errors import SlappError
from slapp.utils.cli import one_line
from slapp.utils.schema import StrictInt

# Frames per detection bin when --bin_size is not given: the seed's and the
# original jobs' value (a 48,300-frame session gives the seed's "nbinned": 420).
DEFAULT_BIN_SIZE = 115
# The documented finer choice: round(tau * fs) for GCaMP6f at 31 Hz, one indicator
# decay per binned frame (docs/benchmarks_bins.rst gives its recall and its cost).
DECAY_BIN_SIZE = 22
# segment writes its ROI-outline PNGs here, beside the manifest; the report reads them
PLOT_DIRECTORY_NAME = "segmentation_plots"


class SegmentationManifestException(SlappError):
    """The manifest cannot be built or read: a bad selection, experiment or file."""


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
    experiment_id = StrictInt(
        required=True, metadata={"description": "LIMS ophys_experiments.id"})
    nbinned = StrictInt(
        required=True, validate=mm.validate.Range(min=1),
        metadata={"description": "binned frames Suite2P detects ROIs on "
                                 "(int(nframes / bin_size))"})
    input_video = mm.fields.Str(
        required=True,
        validate=_require_absolute_path,
        metadata={"description": "absolute, resolved path of the motion-corrected HDF5 "
                                 "movie (dataset 'data': frames x height x width)"})


class SegmentationManifestOutputSchema(mm.Schema):
    """The segmentation manifest: ``{"experiment_selection_id": N, "manifest": [entry, ...]}``."""

    experiment_selection_id = StrictInt(
        load_default=None, allow_none=True,
        metadata={"description": "the experiment_selection the manifest was built from, "
                                 "which every run made from it records; absent (null) in "
                                 "manifests written before it was recorded"})
    manifest = mm.fields.Nested(
        SegmentationManifestEntrySchema, many=True, required=True,
        validate=mm.validate.Length(min=1, error="lists no experiment"),
        metadata={"description": "one entry per experiment, in the order of the "
                                 "selection's sub_selected_ids"})


def load_manifest(path: str | Path) -> list[dict]:
    """Read and validate a segmentation manifest; return its entries.

    See :func:`load_manifest_document` (this is its ``"manifest"``).
    """
    return load_manifest_document(path)["manifest"]


def load_manifest_document(path: str | Path) -> dict:
    """Read and validate a segmentation manifest.

    Parameters
    ----------
    path : str or Path
        A JSON file written by ``slapp manifest``.

    Returns
    -------
    dict
        ``"experiment_selection_id"`` (None when the manifest does not record
        it) and ``"manifest"``: the entries in order, each with ``log_level``,
        ``experiment_id``, ``nbinned`` and ``input_video``.

    Raises
    ------
    SegmentationManifestException
        If the file cannot be read, is not JSON, or does not match
        :class:`SegmentationManifestOutputSchema`; the message names the file.
    """
    try:
        with open(path) as manifest_file:
            document = json.load(manifest_file)
        return SegmentationManifestOutputSchema().load(document)
    except OSError as error:
        raise SegmentationManifestException(
            f"cannot read manifest {path}: {error.strerror}") from error
    except (ValueError, mm.ValidationError) as error:  # JSONDecodeError is a ValueError
        raise SegmentationManifestException(
            f"manifest {path} is not valid: {one_line(error)}") from error
