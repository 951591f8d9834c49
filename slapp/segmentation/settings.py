"""The Suite2P settings slapp exposes, each declared once, and the digest that names them.

:data:`SUITE2P_OPTIONS` is the one table of them: per option its name, type,
default, why that default, how it is checked and where it goes in Suite2P's
``settings`` (or ``db``) dict. Everything else is derived from that table:

- :class:`Suite2pSettingsSchema`, the schema piece every command with the
  options inherits (``segment``, ``run-local``, ``status``), so they share
  names, defaults, checks and help texts;
- :class:`Suite2pOptions`, the frozen dataclass of the values a run uses;
- :func:`place_options`, which writes the values into Suite2P's dicts (used by
  :func:`slapp.segmentation.suite2p_runner.build_suite2p_inputs` and by the
  plain Suite2P baselines);
- :func:`options_from_recorded_settings`, which reads them back from what a
  run recorded (the schema upgrade and ``status`` rely on it).

A new option is one row of the table.

A run's parameters are these options (a classifier file by its content),
the number of binned frames and the Suite2P version (which fixes every
default slapp does not set).
:func:`parameters_digest` reduces them to one canonical digest, stored with
each run and part of its identity. It needs no Suite2P import, so a task that
finds its entry done stays cheap.
"""
import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import argschema
import marshmallow as mm

from slapp.errors import SlappError
from slapp.labeling.classifier_file import (classifier_parameters,
                                            suite2p_classification_settings)
from slapp.utils.schema import StrictInt


class SettingsException(SlappError):
    """Recorded Suite2P settings that do not hold slapp's options."""


def _same(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class Suite2pOption:
    """One row of :data:`SUITE2P_OPTIONS`.

    Attributes
    ----------
    name : str
        The option's name: command-line flag, schema field and dataclass field.
    type : type
        ``float``, ``int``, ``bool`` or ``str``; values are converted to it, so
        that equal settings always give the same digest.
    default
        The value a user gets without giving one; None (Suite2P's own choice)
        makes None a value the option takes.
    why : str
        What the option does and why the default was chosen: the help text.
    path : tuple of str
        Where the value goes in Suite2P's ``settings`` dict (in its ``db`` dict
        when ``in_db``), one key per level.
    validate : callable, optional
        A marshmallow validator.
    to_suite2p, from_suite2p : callable
        How the value is written into Suite2P's dict and read back from a
        recorded one, when Suite2P spells it differently.
    in_db : bool
        The value belongs in Suite2P's ``db`` dict rather than ``settings``.
    merge : bool
        ``to_suite2p`` gives a dict of entries that is merged into the dict at
        ``path`` (one option setting several of Suite2P's keys).
    digested : callable, optional
        What the parameters digest covers of the value, as a dict, when not
        ``{name: value}`` (a file's content rather than its path).
    """

    name: str
    type: type
    default: Any
    why: str
    path: tuple[str, ...]
    validate: Callable | None = None
    to_suite2p: Callable[[Any], Any] = _same
    from_suite2p: Callable[[Any], Any] = _same
    in_db: bool = False
    merge: bool = False
    digested: Callable[[Any], dict] | None = None

    def field(self) -> mm.fields.Field:
        """The marshmallow field of the option, with its default, check and help text."""
        field_class = {float: mm.fields.Float, int: StrictInt, bool: mm.fields.Bool,
                       str: mm.fields.Str}[self.type]
        return field_class(dump_default=self.default, validate=self.validate,
                           allow_none=self.default is None,
                           metadata={"description": self.why})

    def value(self, given: Any) -> Any:
        """``given`` converted to the option's type (None stays None)."""
        return None if given is None else self.type(given)


def _positive() -> mm.validate.Range:
    return mm.validate.Range(min=0, min_inclusive=False)


def _existing_file(value: str) -> None:
    if not Path(value).is_file():
        raise mm.ValidationError(f"classifier file {value} does not exist")


def _classification_entries(classifier_path: str | None) -> dict:
    """Suite2P's classification entries for the option: its built-in classifier for None."""
    if classifier_path is None:
        return {"classifier_path": None}
    return suite2p_classification_settings(classifier_path)


def _first_of_pair(value: Any) -> Any:
    """Suite2P records the diameter as [height, width]; slapp sets both to the option."""
    if isinstance(value, list):
        return value[0] if value else None
    return value


SUITE2P_OPTIONS: tuple[Suite2pOption, ...] = (
    Suite2pOption(
        "fs", float, 31.0, validate=_positive(), path=("fs",),
        why="frame rate in Hz: Allen two-photon movies are recorded at 31 Hz. With tau it "
            "sets Suite2P's smallest bin size"),
    Suite2pOption(
        "tau", float, 0.7, validate=_positive(), path=("tau",),
        why="decay time of the calcium indicator in seconds: ~0.7 s for GCaMP6f, the "
            "indicator of the Allen lines (use 1.0-1.25 for GCaMP6s). Suite2P bins at "
            "least round(tau * fs) frames together for detection: 0.7 makes that 22 "
            "frames, so the manifest's bins are used as given, its default 115 and its "
            "finer choice 22 alike; Suite2P's 1.0 would make it 31 frames and coarsen "
            "22-frame bins"),
    Suite2pOption(
        "diameter", float, 12.0, validate=mm.validate.Range(min=1), path=("diameter",),
        to_suite2p=lambda diameter: [diameter, diameter], from_suite2p=_first_of_pair,
        why="expected soma diameter in pixels: ~9 um somata at 0.78 um/px (a 512x512 "
            "Allen field of ~400 um). 12 is Suite2P's default and the original jobs' "
            "value. Sparsery detection does not need it; Suite2P scales each ROI's "
            "compactness, radius and aspect ratio (classifier features) by it"),
    Suite2pOption(
        "threshold_scaling", float, 0.75, validate=_positive(),
        path=("detection", "threshold_scaling"),
        why="multiplies Suite2P's detection threshold; 0.75, the original jobs' value, "
            "finds more, dimmer ROIs than Suite2P's 1.0 (more of the true cells in the "
            "quality benchmark), and the labelers reject the extra ROIs that are not cells"),
    Suite2pOption(
        "spatial_scale", int, 2, validate=mm.validate.Range(min=0, max=4),
        path=("detection", "sparsery_settings", "spatial_scale"),
        why="sparsery's spatial scale: 1, 2, 3, 4 are 6, 12, 24, 48 px; 0 lets Suite2P "
            "estimate it (the original jobs' value). 2 (12 px) is the soma scale of a "
            "512x512 Allen field; the estimate sometimes picks 6 px, which halves the "
            "detection threshold and adds many neuropil ROIs"),
    Suite2pOption(
        "highpass_neuropil", int, 25, validate=mm.validate.Range(min=5),
        path=("detection", "sparsery_settings", "highpass_neuropil"),
        why="width in pixels of the spatial high-pass filter that removes neuropil before "
            "detection; Suite2P's default 25 is about twice the soma diameter of a "
            "512x512 movie"),
    Suite2pOption(
        "max_overlap", float, 0.75, validate=mm.validate.Range(min=0, max=1),
        path=("detection", "max_overlap"),
        why="ROIs sharing more than this fraction of their pixels with others are "
            "dropped; Suite2P's default 0.75 keeps touching somata apart without keeping "
            "duplicates"),
    Suite2pOption(
        "neuropil_coefficient", float, 0.7, validate=mm.validate.Range(min=0),
        path=("extraction", "neuropil_coefficient"),
        why="neuropil contamination factor (F - c * Fneu) Suite2P uses for the skew and "
            "SNR it gives the classifier; 0.7 is the field's usual value and Suite2P's "
            "default. Raw traces are stored, so it does not change them"),
    Suite2pOption(
        "do_registration", bool, False, path=("run", "do_registration"), to_suite2p=int,
        why="motion-correct with Suite2P first. Off: the manifest's movies are already "
            "motion corrected, and registering again costs time and can shift the masks"),
    Suite2pOption(
        "torch_device", str, "cpu", path=("torch_device",),
        why="PyTorch device for Suite2P ('cpu' or 'cuda'); cluster array tasks usually "
            "run on CPU nodes"),
    Suite2pOption(
        "classifier_path", str, None, validate=_existing_file, path=("classification",),
        merge=True, to_suite2p=_classification_entries,
        from_suite2p=lambda entries: entries.get("classifier_path") or None,
        digested=classifier_parameters,
        why="a Suite2P classifier file (.npy, such as the labeling loop's train writes) "
            "that classifies the ROIs instead of Suite2P's built-in classifier. Default: "
            "the built-in one, the same for every user and node. The file's SHA-256, not "
            "its path, is part of the run's parameters: a moved file names the same runs, "
            "a changed one new runs"),
)


def settings_schema(table: Sequence[Suite2pOption]) -> type:
    """The schema piece holding every option of ``table`` (defaults filled in on load)."""
    schema = argschema.schemas.DefaultSchema.from_dict(
        {option.name: option.field() for option in table}, name="Suite2pSettingsSchema")
    schema.__doc__ = ("The Suite2P options of a segmentation run (defaults filled in "
                      "when missing).")
    return schema


def _from_args(cls, args: Mapping) -> "Suite2pOptions":
    """The options among a command's parsed arguments (other keys are ignored).

    Parameters
    ----------
    args : mapping
        Holds every option, as the parsed arguments of a command whose schema
        includes :class:`Suite2pSettingsSchema` do.

    Returns
    -------
    Suite2pOptions
        Each value converted to its option's type (``31`` becomes ``31.0``),
        so that equal settings always give the same digest.
    """
    return cls(**{option.name: option.value(args[option.name]) for option in cls.TABLE})


def _defaults(cls) -> "Suite2pOptions":
    """The options a user gets without giving any."""
    return cls.from_args({option.name: option.default for option in cls.TABLE})


def options_class(table: Sequence[Suite2pOption]) -> type:
    """The frozen dataclass of the values of ``table``'s options, one field per row."""
    options = dataclasses.make_dataclass(
        "Suite2pOptions", [(option.name, option.type) for option in table], frozen=True,
        namespace={"TABLE": tuple(table), "from_args": classmethod(_from_args),
                   "defaults": classmethod(_defaults),
                   "__doc__": "The Suite2P settings slapp exposes (see SUITE2P_OPTIONS "
                              "for why each default)."})
    options.__module__ = __name__
    return options


Suite2pSettingsSchema = settings_schema(SUITE2P_OPTIONS)
Suite2pOptions = options_class(SUITE2P_OPTIONS)


def parameters_digest(options: Suite2pOptions, nbinned: int, suite2p_version: str) -> str:
    """The digest that names a run's parameters: SHA-256 of their canonical JSON.

    Parameters
    ----------
    options : Suite2pOptions
        The Suite2P settings slapp sets (every other setting is Suite2P's default,
        fixed by its version); an option with ``digested`` counts by what that
        gives (a classifier file by its SHA-256, read here).
    nbinned : int
        Binned frames for detection, from the manifest.
    suite2p_version : str
        The installed Suite2P version (see
        :func:`slapp.segmentation.suite2p_runner.suite2p_version`).

    Returns
    -------
    str
        64 hexadecimal digits; equal parameters give equal digests on any machine.

    Raises
    ------
    ClassifierFileException
        When the classifier file cannot be read.
    """
    digested = {}
    for option in options.TABLE:
        value = getattr(options, option.name)
        digested.update(option.digested(value) if option.digested else {option.name: value})
    parameters = {"suite2p_options": digested, "nbinned": int(nbinned),
                  "suite2p_version": str(suite2p_version)}
    canonical = json.dumps(parameters, sort_keys=True, separators=(",", ":"),
                           ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def place_options(settings: dict, db: dict, values: Mapping[str, Any],
                  table: Sequence[Suite2pOption] = SUITE2P_OPTIONS) -> None:
    """Write option values into Suite2P's ``settings`` and ``db`` dicts, where each belongs.

    Parameters
    ----------
    settings, db : dict
        Suite2P's complete input dicts (every level of each path exists); changed
        in place.
    values : mapping
        Option name to value: every option (``dataclasses.asdict(options)``),
        or some of them, as the plain Suite2P baselines set.
    table : sequence of Suite2pOption
        The options; :data:`SUITE2P_OPTIONS` unless a test gives another.
    """
    for option in table:
        if option.name in values:
            target = db if option.in_db else settings
            for key in option.path[:-1]:
                target = target[key]
            value = option.to_suite2p(values[option.name])
            if option.merge:
                target[option.path[-1]].update(value)
            else:
                target[option.path[-1]] = value


def options_from_recorded_settings(recorded: dict,
                                   table: Sequence[Suite2pOption] = SUITE2P_OPTIONS,
                                   options: type | None = None):
    """The options of a stored run, read back from its ``suite2p_settings``.

    The inverse of what a run records (:func:`place_options`): used to give
    runs stored before parameters digests existed their digest.

    Parameters
    ----------
    recorded : dict
        A ``segmentation_runs.suite2p_settings`` value, ``{"db": ..., "settings": ...}``.
    table : sequence of Suite2pOption
        The options; :data:`SUITE2P_OPTIONS` unless a test gives another.
    options : type, optional
        The dataclass to build (:func:`options_class` of ``table``);
        :class:`Suite2pOptions` by default.

    Returns
    -------
    Suite2pOptions

    Raises
    ------
    SettingsException
        Naming the first setting that is missing.
    """
    values = {}
    for option in table:
        value = recorded.get("db" if option.in_db else "settings") \
            if isinstance(recorded, dict) else None
        for key in option.path:
            if not isinstance(value, dict) or key not in value:
                raise SettingsException(
                    f"the recorded Suite2P settings have no {'.'.join(option.path)}")
            value = value[key]
        values[option.name] = option.from_suite2p(value)
    try:
        return (options or Suite2pOptions).from_args(values)
    except (TypeError, ValueError) as error:
        raise SettingsException(f"the recorded Suite2P settings cannot be read: {error}"
                                ) from error
