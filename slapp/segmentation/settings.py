"""The Suite2P settings slapp exposes, declared once, and the digest that names them.

:class:`Suite2pSettingsSchema` holds every option with its default and the
reason for it; the commands reuse it (``segment`` and ``status`` inherit its
fields, ``run_local`` nests it), so that a new option is one edit here plus its
place in :func:`slapp.segmentation.suite2p_runner.build_suite2p_inputs`.

A run's parameters are these options, the number of binned frames and the
Suite2P version (which fixes every default slapp does not set).
:func:`parameters_digest` reduces them to one canonical digest, stored with
each run and part of its identity. It needs no Suite2P import, so a task that
finds its entry done stays cheap.
"""
import dataclasses
import hashlib
import json
import typing
from dataclasses import dataclass

import argschema
import marshmallow as mm

from slapp.errors import SlappError
from slapp.utils.schema import StrictInt


class SettingsException(SlappError):
    """Recorded Suite2P settings that do not hold slapp's options."""


class Suite2pSettingsSchema(argschema.schemas.DefaultSchema):
    """The Suite2P options of a segmentation run (defaults filled in when missing)."""

    fs = mm.fields.Float(
        dump_default=31.0, validate=mm.validate.Range(min=0, min_inclusive=False),
        metadata={"description": "frame rate in Hz: Allen two-photon movies are recorded "
                                 "at 31 Hz. With tau it sets Suite2P's smallest bin size"})
    tau = mm.fields.Float(
        dump_default=0.7, validate=mm.validate.Range(min=0, min_inclusive=False),
        metadata={"description": (
            "decay time of the calcium indicator in seconds: ~0.7 s for GCaMP6f, the "
            "indicator of the Allen lines (use 1.0-1.25 for GCaMP6s). Suite2P bins at least "
            "round(tau * fs) frames together for detection: 0.7 makes that 22 frames, so "
            "the manifest's bins are used as given, its default 115 and its finer choice "
            "22 alike; Suite2P's 1.0 would make it 31 frames and coarsen 22-frame bins")})
    diameter = mm.fields.Float(
        dump_default=12.0, validate=mm.validate.Range(min=1),
        metadata={"description": (
            "expected soma diameter in pixels: ~9 um somata at 0.78 um/px (a 512x512 Allen "
            "field of ~400 um). 12 is Suite2P's default and the original jobs' value. "
            "Sparsery detection does not need it; Suite2P scales each ROI's compactness, "
            "radius and aspect ratio (classifier features) by it, and 12 or 14 gave the same "
            "ROIs and the same cells on all six 256x256 x 5,000-frame synthetic movies "
            "(realistic and easy presets, 3 seeds each, 115-frame bins, "
            "bench/bench_quality.py)")})
    threshold_scaling = mm.fields.Float(
        dump_default=0.75, validate=mm.validate.Range(min=0, min_inclusive=False),
        metadata={"description": (
            "multiplies Suite2P's detection threshold; 0.75, the original jobs' value, finds "
            "more, dimmer ROIs than Suite2P's 1.0, and the labelers reject the extra ROIs "
            "that are not cells. On the realistic synthetic preset with 22-frame bins it "
            "raised recall over all ROIs from 0.78 to 0.89 (512x512 x 5,000 frames, seeds "
            "0-1, bench/bench_quality.py; F1 0.68 vs 0.72, over classified cells 0.79 vs "
            "0.78) and from 0.77 to 0.86 (256x256, 3 seeds; F1 0.68 vs 0.72)")})
    spatial_scale = StrictInt(
        dump_default=2, validate=mm.validate.Range(min=0, max=4),
        metadata={"description": (
            "sparsery's spatial scale: 1, 2, 3, 4 are 6, 12, 24, 48 px; 0 lets Suite2P "
            "estimate it (the original jobs' value). 2 (12 px) is the soma scale of a "
            "512x512 Allen field; the estimate sometimes picks 6 px, which halves the "
            "detection threshold and adds neuropil ROIs. On the realistic synthetic preset "
            "with 22-frame bins (512x512 x 5,000 frames, seeds 1-2, bench/bench_quality.py) "
            "2 vs 0 gave F1 over all ROIs 0.68 vs 0.52 and recall 0.90 vs 0.92: the estimate "
            "picked 6 px on one of the two movies, giving 1,420 ROIs at precision 0.22 "
            "(550 at 0.55 with 2). At 256x256 it picked 6 px on every movie (3 seeds: 371 "
            "ROIs at precision 0.21 vs 129 at 0.56)")})
    highpass_neuropil = StrictInt(
        dump_default=25, validate=mm.validate.Range(min=5),
        metadata={"description": "width in pixels of the spatial high-pass filter that "
                                 "removes neuropil before detection; Suite2P's default 25 "
                                 "is about twice the soma diameter of a 512x512 movie"})
    max_overlap = mm.fields.Float(
        dump_default=0.75, validate=mm.validate.Range(min=0, max=1),
        metadata={"description": "ROIs sharing more than this fraction of their pixels "
                                 "with others are dropped; Suite2P's default 0.75 keeps "
                                 "touching somata apart without keeping duplicates"})
    neuropil_coefficient = mm.fields.Float(
        dump_default=0.7, validate=mm.validate.Range(min=0),
        metadata={"description": "neuropil contamination factor (F - c * Fneu) Suite2P "
                                 "uses for the skew and SNR it gives the classifier; "
                                 "0.7 is the field's usual value and Suite2P's default. "
                                 "Raw traces are stored, so it does not change them"})
    do_registration = mm.fields.Bool(
        dump_default=False,
        metadata={"description": "motion-correct with Suite2P first. Off: the manifest's "
                                 "movies are already motion corrected, and registering "
                                 "again costs time and can shift the masks"})
    torch_device = mm.fields.Str(
        dump_default="cpu",
        metadata={"description": "PyTorch device for Suite2P ('cpu' or 'cuda'); cluster "
                                 "array tasks usually run on CPU nodes"})


@dataclass(frozen=True)
class Suite2pOptions:
    """The Suite2P settings that slapp exposes (see :class:`Suite2pSettingsSchema` for why)."""

    fs: float
    tau: float
    diameter: float
    threshold_scaling: float
    spatial_scale: int
    highpass_neuropil: int
    max_overlap: float
    neuropil_coefficient: float
    do_registration: bool
    torch_device: str

    @classmethod
    def from_args(cls, args: dict) -> "Suite2pOptions":
        """The options among a command's parsed arguments (other keys are ignored).

        Parameters
        ----------
        args : dict
            Holds every field of :class:`Suite2pSettingsSchema`, as the parsed
            arguments of a command whose schema includes it do.

        Returns
        -------
        Suite2pOptions
            Each value converted to its field's type (``31`` becomes ``31.0``),
            so that equal settings always give the same digest.
        """
        types = typing.get_type_hints(cls)
        return cls(**{field.name: types[field.name](args[field.name])
                      for field in dataclasses.fields(cls)})

    @classmethod
    def defaults(cls) -> "Suite2pOptions":
        """The options a user gets without giving any."""
        return cls.from_args({name: field.dump_default
                              for name, field in Suite2pSettingsSchema().fields.items()})


def parameters_digest(options: Suite2pOptions, nbinned: int, suite2p_version: str) -> str:
    """The digest that names a run's parameters: SHA-256 of their canonical JSON.

    Parameters
    ----------
    options : Suite2pOptions
        The Suite2P settings slapp sets (every other setting is Suite2P's default,
        fixed by its version).
    nbinned : int
        Binned frames for detection, from the manifest.
    suite2p_version : str
        The installed Suite2P version (see
        :func:`slapp.segmentation.suite2p_runner.suite2p_version`).

    Returns
    -------
    str
        64 hexadecimal digits; equal parameters give equal digests on any machine.
    """
    parameters = {"suite2p_options": dataclasses.asdict(options), "nbinned": int(nbinned),
                  "suite2p_version": str(suite2p_version)}
    canonical = json.dumps(parameters, sort_keys=True, separators=(",", ":"),
                           ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


# Where build_suite2p_inputs puts each option in Suite2P's ``settings`` dict.
_RECORDED_PATHS = {
    "fs": ("fs",),
    "tau": ("tau",),
    "diameter": ("diameter",),
    "threshold_scaling": ("detection", "threshold_scaling"),
    "spatial_scale": ("detection", "sparsery_settings", "spatial_scale"),
    "highpass_neuropil": ("detection", "sparsery_settings", "highpass_neuropil"),
    "max_overlap": ("detection", "max_overlap"),
    "neuropil_coefficient": ("extraction", "neuropil_coefficient"),
    "do_registration": ("run", "do_registration"),
    "torch_device": ("torch_device",),
}


def options_from_recorded_settings(recorded: dict) -> Suite2pOptions:
    """The options of a stored run, read back from its ``suite2p_settings``.

    The inverse of what a run records: used to give runs stored before
    parameters digests existed their digest.

    Parameters
    ----------
    recorded : dict
        A ``segmentation_runs.suite2p_settings`` value, ``{"db": ..., "settings": ...}``.

    Returns
    -------
    Suite2pOptions

    Raises
    ------
    SettingsException
        Naming the first setting that is missing.
    """
    values = {}
    for name, path in _RECORDED_PATHS.items():
        value = recorded.get("settings") if isinstance(recorded, dict) else None
        for key in path:
            if not isinstance(value, dict) or key not in value:
                raise SettingsException(
                    f"the recorded Suite2P settings have no {'.'.join(path)}")
            value = value[key]
        values[name] = value
    diameter = values["diameter"]
    if isinstance(diameter, list):  # recorded as [height, width], both the option
        diameter = diameter[0] if diameter else None
    values["diameter"] = diameter
    try:
        return Suite2pOptions.from_args(values)
    except (TypeError, ValueError) as error:
        raise SettingsException(f"the recorded Suite2P settings cannot be read: {error}"
                                ) from error
