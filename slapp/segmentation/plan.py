"""Each manifest entry's predicted peak memory and scratch, and the array request that fits.

::

    python -m slapp.segmentation.plan --manifest_json ./example_output.json
    python -m slapp.segmentation.plan --manifest_json ./example_output.json --diameter 14

Run before submitting the array job. Each entry's movie shape is read from its
HDF5 file's header (no frame is read, so this costs the same for 100 or
100,000 frames); its ``nbinned`` is the manifest's. The peak resident memory
of its segment task is predicted by :mod:`slapp.segmentation.memory_model`
(fitted to measured runs; see docs/benchmarks_bins.rst), the scratch by the
bound segment checks before it runs. The command prints one line per entry
and the memory request that fits the largest entry, as the ``#SBATCH --mem``
and ``#PBS -l mem`` values of the job scripts. It takes the Suite2P options
``status`` and ``segment`` take: the model covers the streamed run
(registration off, the default); with ``--do_registration`` the scratch
includes Suite2P's binary copy of the movie and the memory prediction is a
lower bound, which the printout says.
"""
import sys
from pathlib import Path

import argschema
import marshmallow as mm

from slapp.data_selection.segmentation_manifest import load_manifest
from slapp.data_selection.utils import FindFileException, movie_shape
from slapp.errors import SlappError
from slapp.segmentation.memory_model import (binned_movie_bytes, detection_bins,
                                             memory_request, predicted_peak_rss_bytes)
from slapp.segmentation.resubmit import pbs_memory
from slapp.segmentation.settings import Suite2pOptions, Suite2pSettingsSchema
from slapp.segmentation.suite2p_runner import estimated_scratch_bytes
from slapp.utils.cli import run_main
from slapp.utils.files import write_json_atomically
from slapp.utils.schema import ArgSchema, ArgSchemaParser

GB = 1e9


class PlanException(SlappError):
    """A manifest entry whose movie cannot be sized."""


class SegmentationPlanSchema(ArgSchema, Suite2pSettingsSchema):
    """Predict each manifest entry's memory and scratch before the array job is submitted."""

    manifest_json = argschema.fields.InputFile(
        required=True,
        metadata={"description": "the segmentation manifest the array job will run over "
                                 "(written by slapp.data_selection.segmentation_manifest)"})


class EntryPlanSchema(mm.Schema):
    """What one entry's task is predicted to need."""

    manifest_index = mm.fields.Int(required=True)
    experiment_id = mm.fields.Int(required=True)
    nframes = mm.fields.Int(required=True)
    height = mm.fields.Int(required=True)
    width = mm.fields.Int(required=True)
    nbinned = mm.fields.Int(required=True)
    detection_bins = mm.fields.Int(
        required=True, metadata={"description": "the binned frames Suite2P allocates: "
                                                "nbinned, unless bins would be shorter "
                                                "than round(tau * fs) frames"})
    binned_movie_bytes = mm.fields.Int(
        required=True, metadata={"description": "detection_bins x height x width x 4 "
                                                "(float32)"})
    predicted_peak_rss_bytes = mm.fields.Int(required=True)
    memory_request = mm.fields.Str(
        required=True, metadata={"description": "the request that fits this entry, e.g. 8G"})
    scratch_bytes = mm.fields.Int(
        required=True, metadata={"description": "the free space segment checks for"})


class SegmentationPlanOutputSchema(mm.Schema):
    """What ``--output_json`` holds."""

    manifest_json = mm.fields.Str(required=True)
    entries = mm.fields.Nested(EntryPlanSchema, many=True, required=True)
    largest_index = mm.fields.Int(
        required=True, metadata={"description": "the entry of the largest predicted peak"})
    memory_request = mm.fields.Str(
        required=True, metadata={"description": "the array's request: fits every entry"})
    scratch_bytes = mm.fields.Int(
        required=True, metadata={"description": "the largest entry's scratch"})


def entry_plan(index: int, entry: dict, options: Suite2pOptions) -> dict:
    """Size one manifest entry's task from its movie's header.

    Parameters
    ----------
    index : int
        The entry's array index.
    entry : dict
        The manifest entry (``experiment_id``, ``nbinned``, ``input_video``).
    options : Suite2pOptions
        The Suite2P options the tasks will run with.

    Returns
    -------
    dict
        As :class:`EntryPlanSchema` describes.

    Raises
    ------
    PlanException
        If the movie cannot be read as an HDF5 movie.
    """
    try:
        nframes, height, width = movie_shape(Path(entry["input_video"]))
    except FindFileException as error:
        raise PlanException(f"manifest entry {index} (experiment {entry['experiment_id']}): "
                            f"{error}") from error
    peak = predicted_peak_rss_bytes(nframes, entry["nbinned"], height, width,
                                    options.tau, options.fs)
    bins = detection_bins(nframes, entry["nbinned"], options.tau, options.fs)
    return {"manifest_index": index, "experiment_id": entry["experiment_id"],
            "nframes": nframes, "height": height, "width": width,
            "nbinned": entry["nbinned"], "detection_bins": bins,
            "binned_movie_bytes": binned_movie_bytes(bins, height, width),
            "predicted_peak_rss_bytes": peak, "memory_request": memory_request(peak),
            "scratch_bytes": estimated_scratch_bytes((nframes, height, width),
                                                     options.do_registration)}


def _capped(plan: dict) -> str:
    if plan["detection_bins"] == plan["nbinned"]:
        return ""
    return f" (Suite2P bins it as {plan['detection_bins']}: tau * fs frames at least)"


def report_lines(plans: list[dict], manifest_path: Path, do_registration: bool) -> list[str]:
    """The printout: one line per entry, then the array's request."""
    lines = [f"{len(plans)} entries in {manifest_path}"]
    width = len(str(max(len(plans) - 1, 0)))
    for plan in plans:
        lines.append(
            f"{plan['manifest_index']:>{width}}  {plan['experiment_id']}  "
            f"{plan['nframes']} frames of {plan['height']}x{plan['width']}, nbinned "
            f"{plan['nbinned']}{_capped(plan)} ({plan['binned_movie_bytes'] / GB:.2f} GB "
            f"binned): peak "
            f"{plan['predicted_peak_rss_bytes'] / GB:.1f} GB, request "
            f"{plan['memory_request']}, scratch {plan['scratch_bytes'] / GB:.1f} GB")
    largest = max(plans, key=lambda plan: plan["predicted_peak_rss_bytes"])
    request = largest["memory_request"]
    scratch = max(plan["scratch_bytes"] for plan in plans)
    lines.append(f"largest: entry {largest['manifest_index']} (experiment "
                 f"{largest['experiment_id']}), predicted peak "
                 f"{largest['predicted_peak_rss_bytes'] / GB:.1f} GB")
    lines.append(f"array request: SLURM #SBATCH --mem={request}   PBS #PBS -l "
                 f"mem={pbs_memory(request)}   (scratch: --tmp={-(-scratch // 2 ** 30)}G)")
    if do_registration:
        lines.append("with --do_registration the memory predicted is that of the streamed "
                      "run, a lower bound; the scratch includes Suite2P's binary copy")
    return lines


class SegmentationPlan(ArgSchemaParser):
    """``python -m slapp.segmentation.plan``: see the module docstring."""

    default_schema = SegmentationPlanSchema
    default_output_schema = SegmentationPlanOutputSchema

    def run(self) -> dict:
        """Size every entry, print the plan and write ``--output_json``.

        Returns
        -------
        dict
            As :class:`SegmentationPlanOutputSchema` describes.
        """
        manifest_path = Path(self.args["manifest_json"]).resolve()
        options = Suite2pOptions.from_args(self.args)
        plans = [entry_plan(index, entry, options)
                 for index, entry in enumerate(load_manifest(manifest_path))]
        print("\n".join(report_lines(plans, manifest_path, options.do_registration)))
        largest = max(plans, key=lambda plan: plan["predicted_peak_rss_bytes"])
        report = {"manifest_json": str(manifest_path), "entries": plans,
                  "largest_index": largest["manifest_index"],
                  "memory_request": largest["memory_request"],
                  "scratch_bytes": max(plan["scratch_bytes"] for plan in plans)}
        if self.args.get("output_json"):
            write_json_atomically(self.args["output_json"], self.get_output_json(report))
        return report


def main() -> None:
    """Parse the command line and print the plan."""
    SegmentationPlan().run()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_main(main, "plan"))
