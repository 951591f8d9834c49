"""The ``slapp`` command: one registry of every step, run as ``slapp <command> [options]``.

``slapp select ...`` runs exactly what ``python -m slapp.data_selection.select_data ...``
runs (the module's ``__main__`` block, with the same arguments); both spellings
print the same messages, prefixed ``slapp <command>:``. ``slapp --help`` lists
the commands; ``slapp <command> --help`` prints the options of one.

:data:`COMMANDS` is the only list of commands: the console script, the program
name in every message (:func:`slapp.utils.cli.run_main`) and the tests that
check every command's help and errors all read it. A command whose module is
not part of this installation (the labeling commands arrive in their own
package) is left out of ``slapp --help`` and refused by name.
"""
import importlib.util
import runpy
import sys
from typing import NamedTuple, Sequence


class Command(NamedTuple):
    """One ``slapp`` command: the module it runs and the line ``--help`` starts with."""
    module: str
    summary: str


COMMANDS: dict[str, Command] = {
    "select": Command("slapp.data_selection.select_data",
                      "Step 1: select a reproducible sample of experiments from LIMS."),
    "manifest": Command("slapp.data_selection.segmentation_manifest",
                        "Step 2: turn a stored experiment selection into the manifest "
                        "that the array job segments."),
    "plan": Command("slapp.segmentation.plan",
                    "Predict each manifest entry's peak memory and scratch, and the array "
                    "job's memory request that fits."),
    "segment": Command("slapp.segmentation.segment",
                       "Step 3: segment one manifest entry with Suite2P into the "
                       "labeling database."),
    "run-local": Command("slapp.segmentation.run_local",
                         "Segment every entry of a manifest on this machine, a few at a time."),
    "status": Command("slapp.segmentation.status",
                      "Which manifest entries are segmented, which failed and why, and the "
                      "array specs to resubmit."),
    "record-failure": Command("slapp.segmentation.failures",
                              "Record why a segment task failed (the job scripts run this)."),
    "report": Command("slapp.report",
                      "Write the batch report (one HTML page) of a manifest or a selection."),
    "export-nwb": Command("slapp.export.nwb",
                          "Export stored segmentation runs as NWB files, with how they "
                          "were made inside."),
    "compare": Command("slapp.evaluation.compare",
                       "Score a stored segmentation run against ground-truth cell masks, "
                       "or against another run."),
    "db-init": Command("slapp.db.init", "Create or upgrade the labeling tables."),
    "embedded": Command("slapp.embedded",
                        "Start, stop or query a local PostgreSQL server for laptops and tests."),
    "populate-lims": Command("slapp.demo.populate_lims",
                             "Fill the embedded server's lims database with a demo LIMS."),
    "demo": Command("slapp.demo.run_demo",
                    "Run the whole toolkit end to end on this machine, on synthetic movies."),
    "create-job": Command("slapp.labeling.create_job",
                          "Create a labeling job: draw the ROIs people will judge from "
                          "segmentation runs."),
    "artifacts": Command("slapp.labeling.artifacts",
                         "Write the files a labeler looks at for each ROI of a labeling job "
                         "(or of one run)."),
    "labelers": Command("slapp.labeling.labelers",
                        "Add, list and revoke the people who label ROIs on the labeling server."),
    "serve": Command("slapp.labeling.serve",
                     "Serve labeling jobs to labelers in their browsers, writing labels to "
                     "the labeling database."),
    "consolidate": Command("slapp.labeling.consolidate",
                           "Take the consensus of a labeling job's labels per ROI, re-queue "
                           "ties, measure agreement."),
    "train": Command("slapp.labeling.train",
                     "Train Suite2P's cell classifier on labeling jobs' consensus labels and "
                     "record it."),
    "predict": Command("slapp.labeling.predict",
                       "Store a trained classifier's cell probability for every ROI of "
                       "segmentation runs."),
    "export-gt": Command("slapp.labeling.export_gt",
                         "Write a labeling job as a SageMaker Ground Truth input manifest, "
                         "optionally uploaded to S3."),
    "import-gt": Command("slapp.labeling.import_gt",
                         "Read a SageMaker Ground Truth output manifest into labelers and "
                         "labels."),
}

# The name every message of a command starts with, whichever way it was started.
PROGRAM = "slapp"


def program_name(command: str) -> str:
    """The name a command's messages and usage line start with: ``slapp <command>``."""
    return f"{PROGRAM} {command}"


def is_available(command: str) -> bool:
    """Whether the module of a registered command is part of this installation."""
    try:
        return importlib.util.find_spec(COMMANDS[command].module) is not None
    except ModuleNotFoundError:  # its package is missing too
        return False


def available() -> list[str]:
    """The registered commands whose modules are installed, in registry order."""
    return [name for name in COMMANDS if is_available(name)]


def usage() -> str:
    """``slapp --help``: what slapp is and one line per available command."""
    width = max(map(len, COMMANDS))
    lines = [f"{PROGRAM}: select two-photon experiments from LIMS, segment them with Suite2P "
             "and label the ROIs.", "",
             f"usage: {PROGRAM} <command> [options]   ({PROGRAM} <command> --help for its "
             "options)", "", "commands:"]
    lines += [f"  {name:<{width}}  {COMMANDS[name].summary}" for name in available()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """The ``slapp`` console script: run ``slapp <command> [options]``.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments after ``slapp``; by default ``sys.argv[1:]``.

    Returns
    -------
    int
        The exit status: 0 after ``--help``, the command's own status
        otherwise, and 1 (one line on stderr) for a command slapp does not have.
    """
    arguments = list(sys.argv[1:] if argv is None else argv)
    if not arguments or arguments[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = arguments[0], arguments[1:]
    if name not in COMMANDS:
        print(f"{PROGRAM}: error: no command {name!r} ({PROGRAM} --help lists the commands)",
              file=sys.stderr)
        return 1
    if not is_available(name):
        print(f"{PROGRAM}: error: command {name!r} is not part of this installation "
              f"(module {COMMANDS[name].module} is missing)", file=sys.stderr)
        return 1
    sys.argv = [program_name(name), *rest]
    try:
        runpy.run_module(COMMANDS[name].module, run_name="__main__", alter_sys=True)
    except SystemExit as finished:  # every command's __main__ block exits with run_main's status
        return finished.code or 0
    return 0
