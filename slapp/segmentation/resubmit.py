"""The commands that resubmit manifest entries to SLURM, Torque and PBS Pro, complete.

A printed command must mean what it says when pasted: the script by its
absolute path, the array indices, the manifest, and every Suite2P option that
differs from segment's defaults, so that a sweep (``--threshold_scaling 0.9``)
resubmits the sweep and not the defaults. How the options reach the task:

* SLURM: after the script's path (``sbatch`` passes them to the script, which
  passes them to segment);
* Torque: ``qsub -F "<options>"`` (the script's arguments);
* PBS Pro (no ``-F``): the variable ``SEGMENT_OPTIONS``, which the scripts
  append to segment's command line (split on spaces).

The job's environment is not copied whole (``--export=ALL`` and ``#PBS -V`` put
every exported variable, a ``LABELING_PASSWORD`` included, into the scheduler's
job record): ``MANIFEST`` and ``SLAPP_PYTHON`` (``SLAPP_PYTHON`` where the
command is printed, else the Python printing it) are given with their values, and
the non-secret variables of :data:`PASSED_VARIABLES` that are set here are
passed by name. Passwords come from the password file on the node.

Array indices: SLURM's ``--array`` and Torque's ``-t`` take lists
(``1,3,7-9%10``); PBS Pro's ``-J`` takes one range of at least two indices, so
PBS Pro gets one ``qsub -J first-last`` per run of consecutive indices, and a
plain job with ``SLAPP_MANIFEST_INDEX`` for a lone index.
"""
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from slapp.db.runs import RunParameters
from slapp.errors import SlappError
from slapp.segmentation.array_spec import array_spec, index_ranges

# The example job scripts, as this checkout ships them.
SCRIPTS_DIR = Path(__file__).resolve().parents[2] / "scripts"
SLURM_SCRIPT = SCRIPTS_DIR / "suite2p_array_job_example.slurm"
PBS_SCRIPT = SCRIPTS_DIR / "suite2p_array_job_example.pbs"

SLURM, TORQUE, PBS_PRO = "SLURM", "Torque", "PBS Pro"

# Non-secret variables a task may need, passed by name (their value where the
# command is run) when set where the command is printed. PATH and PYTHONPATH, so
# that the task runs the Python and the slapp of the shell that submits.
PASSED_VARIABLES = ("PATH", "PYTHONPATH", "SLAPP_CREDENTIALS", "SLAPP_TMP_DIR", "PGPASSFILE",
                    "TRANSFORM_HASH", "LABELING_HOST", "LABELING_PORT", "LABELING_DATABASE",
                    "LABELING_USER")


class ResubmitException(SlappError):
    """A resubmission command cannot be built as asked."""


@dataclass(frozen=True)
class Resubmission:
    """The commands that resubmit one group of entries.

    Attributes
    ----------
    indices : list of int
        The manifest indices, ascending.
    array_spec : str
        The ``--array`` / ``-t`` value (with the ``%K`` throttle).
    commands : dict
        Scheduler name (:data:`SLURM`, :data:`TORQUE`, :data:`PBS_PRO`) ->
        list of shell command lines (for SLURM and Torque one per distinct
        memory request).
    """

    indices: list[int]
    array_spec: str
    commands: dict[str, list[str]]


def segment_options(parameters: RunParameters) -> list[str]:
    """Segment command-line arguments for every Suite2P option that is not the default.

    E.g. ``["--threshold_scaling", "0.9"]``; empty for the defaults.
    """
    return [word for name, value in parameters.changed_options()
            for word in (f"--{name}", str(value))]


def pbs_memory(memory: str) -> str:
    """``24G`` -> ``24gb``: a request as :mod:`slapp.segmentation.memory_model` writes
    it, in PBS's units (sizes end in b, kb, mb, gb or tb)."""
    number, unit = memory[:-1], memory[-1].upper()
    if not number.isdigit() or unit not in "KMGT":
        raise ResubmitException(f"memory {memory!r} is not a size such as 24G or 512M")
    return f"{number}{unit.lower()}b"


def _variables(manifest_path: Path, python: str | None, environment: Mapping[str, str],
               extra: Sequence[str] = ()) -> str:
    python = python or environment.get("SLAPP_PYTHON") or sys.executable
    named = [name for name in PASSED_VARIABLES if environment.get(name)]
    return ",".join([f"MANIFEST={manifest_path}", f"SLAPP_PYTHON={python}", *extra, *named])


def _join(words: Iterable[str]) -> str:
    return " ".join(shlex.quote(str(word)) for word in words)


def slurm_command(spec: str, manifest_path: Path, options: Sequence[str], *,
                  script: Path = SLURM_SCRIPT, memory: str | None = None,
                  python: str | None = None,
                  environment: Mapping[str, str] = os.environ) -> str:
    """``sbatch --array=<spec> [--mem=<memory>] --export=<variables> <script> <options>``.

    Parameters
    ----------
    spec : str
        The array specification (see :func:`slapp.segmentation.array_spec.array_spec`).
    manifest_path : Path
        The manifest (made absolute).
    options : sequence of str
        Segment arguments, passed after the script.
    script : Path
        The job script (made absolute).
    memory : str, optional
        Memory per task, e.g. ``"24G"``, as ``--mem``.
    python : str, optional
        ``SLAPP_PYTHON`` for the task; default: ``SLAPP_PYTHON`` in
        ``environment``, else this Python.
    environment : mapping
        Where :data:`PASSED_VARIABLES` are looked up.
    """
    words = ["sbatch", f"--array={spec}"]
    if memory:
        words.append(f"--mem={memory}")
    words += [f"--export={_variables(Path(manifest_path).absolute(), python, environment)}",
              Path(script).absolute(), *options]
    return _join(words)


def torque_command(spec: str, manifest_path: Path, options: Sequence[str], *,
                   script: Path = PBS_SCRIPT, memory: str | None = None,
                   python: str | None = None,
                   environment: Mapping[str, str] = os.environ) -> str:
    """``qsub -t <spec> [-l mem=<memory>] -v <variables> [-F "<options>"] <script>``.

    Parameters as :func:`slurm_command`; ``memory`` ``"24G"`` is given as
    ``-l mem=24gb``.
    """
    words = ["qsub", "-t", spec]
    if memory:
        words += ["-l", f"mem={pbs_memory(memory)}"]
    words += ["-v", _variables(Path(manifest_path).absolute(), python, environment)]
    if options:
        words += ["-F", _join(options)]
    return _join(words + [Path(script).absolute()])


def pbs_pro_commands(indices: Iterable[int], manifest_path: Path, options: Sequence[str], *,
                     max_concurrent: int | None = None, script: Path = PBS_SCRIPT,
                     memory: str | None = None, python: str | None = None,
                     environment: Mapping[str, str] = os.environ) -> list[str]:
    """``qsub -J <first>-<last>[%K] [-l select=1:mem=<memory>] -v <variables> <script>``.

    One command per run of consecutive indices (PBS Pro's ``-J`` takes one
    range of at least two); a lone index is a plain job given
    ``SLAPP_MANIFEST_INDEX``. The options travel in ``SEGMENT_OPTIONS``.
    Other parameters as :func:`slurm_command`; ``memory`` ``"24G"`` is given
    as ``-l select=1:mem=24gb``.
    """
    extra = [f"SEGMENT_OPTIONS={' '.join(options)}"] if options else []
    commands = []
    for first, last in index_ranges(sorted(set(indices))):
        words = ["qsub"]
        if first != last:
            throttle = max_concurrent if max_concurrent and max_concurrent <= last - first \
                else None
            words += ["-J", f"{first}-{last}" + (f"%{throttle}" if throttle else "")]
        if memory:
            words += ["-l", f"select=1:mem={pbs_memory(memory)}"]
        index = [] if first != last else [f"SLAPP_MANIFEST_INDEX={first}"]
        words += ["-v", _variables(Path(manifest_path).absolute(), python, environment,
                                   index + extra), Path(script).absolute()]
        commands.append(_join(words))
    return commands


def resubmission(indices: Iterable[int], manifest_path: Path, parameters: RunParameters, *,
                 max_concurrent: int | None = None, memory: str | None = None,
                 memory_by_index: Mapping[int, str] | None = None,
                 slurm_script: Path = SLURM_SCRIPT, pbs_script: Path = PBS_SCRIPT,
                 python: str | None = None,
                 environment: Mapping[str, str] = os.environ) -> Resubmission:
    """The SLURM, Torque and PBS Pro commands that resubmit ``indices`` with ``parameters``.

    Parameters
    ----------
    indices : iterable of int
        Manifest indices to resubmit (at least one).
    manifest_path : Path
        The manifest.
    parameters : RunParameters
        The parameters the tasks must run with: every Suite2P option that is
        not segment's default is carried to the task.
    max_concurrent : int, optional
        At most this many tasks at once (``%K``); None or 0: no limit.
    memory : str, optional
        Memory per task, e.g. ``"24G"`` (SLURM ``--mem=24G``, Torque
        ``-l mem=24gb``, PBS Pro ``-l select=1:mem=24gb``); None keeps the
        script's request.
    memory_by_index : mapping, optional
        Index -> memory for the indices that need their own request (e.g. the
        entries killed for memory): they get their own commands, one per
        distinct request, after those of the other indices (which get
        ``memory``).
    slurm_script, pbs_script : Path
        The job scripts (default: the examples this checkout ships).
    python : str, optional
        ``SLAPP_PYTHON`` for the tasks; default: ``SLAPP_PYTHON`` in
        ``environment``, else this Python.
    environment : mapping
        Where the variables passed by name are looked up.

    Returns
    -------
    Resubmission
        ``array_spec`` covers all ``indices``; ``commands`` one list per
        scheduler, one command (a run of consecutive indices for PBS Pro)
        per distinct request.
    """
    indices = sorted(set(indices))
    memory_by_index = memory_by_index or {}
    parts: dict[str | None, list[int]] = {}
    for index in indices:
        parts.setdefault(memory_by_index.get(index, memory), []).append(index)
    options = segment_options(parameters)
    commands: dict[str, list[str]] = {SLURM: [], TORQUE: [], PBS_PRO: []}
    for part_memory, part in parts.items():
        spec = array_spec(part, max_concurrent)
        shared = {"memory": part_memory, "python": python, "environment": environment}
        commands[SLURM].append(slurm_command(spec, manifest_path, options,
                                             script=slurm_script, **shared))
        commands[TORQUE].append(torque_command(spec, manifest_path, options,
                                               script=pbs_script, **shared))
        commands[PBS_PRO] += pbs_pro_commands(part, manifest_path, options,
                                              max_concurrent=max_concurrent,
                                              script=pbs_script, **shared)
    return Resubmission(indices, array_spec(indices, max_concurrent), commands)
