"""The options of one segment task, declared once for ``segment``, ``run-local`` and
``record-failure``.

``run-local`` starts one ``segment`` process per manifest entry; it takes every
option of :class:`SegmentTaskSchema` (and every Suite2P option) and hands them
on unchanged with :func:`segment_arguments`, so that a task started by
``run-local`` behaves as one started by a job script with the same options.
:class:`SegmentSchema` is the whole command line of one task; the failure
recorder reads a task's options with it without importing the segment step.
"""
import marshmallow as mm

from slapp.segmentation.settings import Suite2pSettingsSchema
from slapp.utils.options import ManifestJsonSchema
from slapp.utils.schema import ArgSchema, StrictInt


class SegmentTaskSchema(ManifestJsonSchema, Suite2pSettingsSchema):
    """How a segment task runs: its scratch, its plots, its retries and the Suite2P options."""

    tmp_dir = mm.fields.Str(
        dump_default=None, allow_none=True,
        metadata={"description": "directory for Suite2P's working files, created when "
                                 "missing: its traces, and with --do_registration its "
                                 "int16 copy of the movie (2 bytes per pixel per frame). "
                                 "Each task works in its own subdirectory and removes those "
                                 "of its user's tasks that no longer run. Default: the "
                                 "system's temporary directory ($TMPDIR), which batch "
                                 "systems usually point at the node's fast local scratch"})
    overwrite = mm.fields.Bool(
        dump_default=False,
        metadata={"description": "replace the stored run of the same experiment, code "
                                 "version and parameters (in one transaction), also when "
                                 "its movie changed since. Off by default so that "
                                 "resubmitting an array only runs what is missing"})
    keep_suite2p_results = mm.fields.Bool(
        dump_default=False,
        metadata={"description": "keep Suite2P's intermediate files (their directory is "
                                 "logged) to inspect them. Off by default: everything "
                                 "needed is stored in the database"})
    plot_dir = mm.fields.Str(
        dump_default=None, allow_none=True,
        metadata={"description": "where <experiment_id>_<run id>.png (ROI outlines over "
                                 "the mean image) is written, one per run so that no run's "
                                 "plot replaces another's. Default: segmentation_plots "
                                 "beside the manifest, so the plots of one manifest stay "
                                 "together"})
    write_retry_seconds = mm.fields.Float(
        dump_default=600.0, validate=mm.validate.Range(min=0),
        metadata={"description": "how long the final write (connect, insert, copy of the "
                                 "ROIs) is retried while the labeling database cannot be "
                                 "reached; Suite2P's outputs are kept meanwhile. 600 s "
                                 "outlasts a server restart or failover and is short beside "
                                 "the Suite2P run a failed write would throw away; keep it "
                                 "well inside the job's time limit"})


class SegmentSchema(ArgSchema, SegmentTaskSchema):
    """Segment one entry of a segmentation manifest with Suite2P (options: see the base)."""

    manifest_index = StrictInt(
        required=True, validate=mm.validate.Range(min=0),
        metadata={"description": "which entry to segment, counted from 0: the job "
                                 "array's task id (PBS_ARRAYID, SLURM_ARRAY_TASK_ID)"})


def segment_arguments(args: dict) -> list[str]:
    """Every task option in ``args`` as ``segment`` command-line arguments.

    Parameters
    ----------
    args : dict
        Validated arguments of a schema that inherits :class:`SegmentTaskSchema`;
        options that are None (not given, no default) are left out.

    Returns
    -------
    list of str
        ``["--manifest_json", "m.json", "--tmp_dir", "/scratch", ...]`` in
        declaration order.
    """
    return [argument for name in SegmentTaskSchema().fields if args.get(name) is not None
            for argument in (f"--{name}", str(args[name]))]

