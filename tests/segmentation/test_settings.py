"""The Suite2P options, declared once; the parameters digest; reading options back from a run."""
import dataclasses
import json
import os
import subprocess
import sys

import argschema
import marshmallow as mm
import pytest

from slapp.segmentation.settings import (SettingsException, Suite2pOptions,
                                         Suite2pSettingsSchema, options_from_recorded_settings,
                                         parameters_digest)

DEFAULTS = {"fs": 31.0, "tau": 0.7, "diameter": 12.0, "threshold_scaling": 0.75,
            "spatial_scale": 2, "highpass_neuropil": 25, "max_overlap": 0.75,
            "neuropil_coefficient": 0.7, "do_registration": False, "torch_device": "cpu",
            "classifier_path": None}
# Another value for each option, all valid (classifier_path, which needs a file, is
# tested in test_settings_table.py).
CHANGED = {"fs": 30.0, "tau": 1.0, "diameter": 14.0, "threshold_scaling": 0.9,
           "spatial_scale": 3, "highpass_neuropil": 30, "max_overlap": 0.5,
           "neuropil_coefficient": 0.8, "do_registration": True, "torch_device": "cuda"}


class CommandSchema(argschema.ArgSchema, Suite2pSettingsSchema):
    """A command whose arguments include the Suite2P options, as segment's do."""

    manifest_index = mm.fields.Int(required=True)


def test_the_schema_and_the_options_hold_the_same_settings_with_reasons():
    fields = Suite2pSettingsSchema().fields
    assert list(fields) == [field.name for field in dataclasses.fields(Suite2pOptions)]
    assert {name: field.dump_default for name, field in fields.items()} == DEFAULTS
    assert all(len(field.metadata["description"]) > 40 for field in fields.values())
    assert dataclasses.asdict(Suite2pOptions.defaults()) == DEFAULTS


def test_a_command_inherits_the_options_with_defaults_and_checks():
    parsed = argschema.ArgSchemaParser(
        schema_type=CommandSchema,
        args=["--manifest_index", "3", "--threshold_scaling", "0.9", "--fs", "30"]).args

    options = Suite2pOptions.from_args(parsed)

    assert dataclasses.asdict(options) == {**DEFAULTS, "threshold_scaling": 0.9, "fs": 30.0}
    with pytest.raises(mm.ValidationError, match="threshold_scaling"):
        argschema.ArgSchemaParser(schema_type=CommandSchema,
                                  args=["--manifest_index", "3", "--threshold_scaling", "0"])


def test_a_nested_schema_fills_its_defaults():
    loaded = Suite2pSettingsSchema().load({"spatial_scale": 1})

    assert loaded == {**DEFAULTS, "spatial_scale": 1}
    with pytest.raises(mm.ValidationError, match="spatial_scale"):
        Suite2pSettingsSchema().load({"spatial_scale": 5})


def test_from_args_converts_types_and_ignores_other_arguments():
    options = Suite2pOptions.from_args({**DEFAULTS, "fs": 31, "diameter": 12,
                                        "manifest_index": 7, "overwrite": True})

    assert options == Suite2pOptions.defaults()
    assert isinstance(options.fs, float) and isinstance(options.spatial_scale, int)
    with pytest.raises(KeyError, match="torch_device"):
        Suite2pOptions.from_args({k: v for k, v in DEFAULTS.items() if k != "torch_device"})


def test_every_parameter_changes_the_digest():
    defaults = Suite2pOptions.defaults()
    base = parameters_digest(defaults, 26, "1.1.0")
    digests = {base}
    for name, value in CHANGED.items():
        digests.add(parameters_digest(dataclasses.replace(defaults, **{name: value}), 26,
                                      "1.1.0"))
    digests.add(parameters_digest(defaults, 27, "1.1.0"))
    digests.add(parameters_digest(defaults, 26, "1.1.1"))

    assert len(digests) == len(CHANGED) + 3
    assert len(base) == 64 and int(base, 16) >= 0
    assert parameters_digest(Suite2pOptions.from_args({**DEFAULTS, "fs": 31}), 26,
                             "1.1.0") == base


def test_the_digest_is_the_same_in_any_process_and_needs_no_suite2p():
    code = ("import json, sys;"
            "from slapp.segmentation.settings import Suite2pOptions, parameters_digest;"
            "print(json.dumps([parameters_digest(Suite2pOptions.defaults(), 26, '1.1.0'),"
            " [name for name in ('suite2p', 'torch') if name in sys.modules]]))")
    outputs = [json.loads(subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        env={**os.environ, "PYTHONHASHSEED": seed}).stdout)
        for seed in ("1", "2")]

    assert outputs[0] == outputs[1]
    digest, imported = outputs[0]
    assert imported == []
    assert digest == parameters_digest(Suite2pOptions.defaults(), 26, "1.1.0")


@pytest.mark.parametrize("changes", [{}, CHANGED])
def test_options_read_back_from_what_a_run_records(tmp_path, changes):
    from slapp.segmentation.suite2p_runner import build_suite2p_inputs, jsonable

    options = dataclasses.replace(Suite2pOptions.defaults(), **changes)
    db, settings = build_suite2p_inputs(tmp_path / "movie.h5", 26, options, tmp_path)
    recorded = json.loads(json.dumps(jsonable({"db": db, "settings": settings})))

    assert options_from_recorded_settings(recorded) == options


@pytest.mark.parametrize("recorded, message", [
    ({}, "the recorded Suite2P settings have no fs"),
    ({"settings": {"fs": 31.0, "tau": 0.7, "diameter": [14.0, 14.0], "detection": {}}},
     "the recorded Suite2P settings have no detection.threshold_scaling"),
    ({"detection": {"threshold_scaling": 0.75}}, "the recorded Suite2P settings have no fs"),
])
def test_settings_without_the_options_are_named(recorded, message):
    with pytest.raises(SettingsException) as error:
        options_from_recorded_settings(recorded)
    assert str(error.value) == message
