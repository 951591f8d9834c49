"""One table row per Suite2P option: schema, dataclass, placement and read-back follow from it."""
import dataclasses

import argschema
import marshmallow as mm
import pytest

from slapp.segmentation.settings import (SUITE2P_OPTIONS, Suite2pOption, Suite2pOptions,
                                         options_class, options_from_recorded_settings,
                                         parameters_digest, place_options, settings_schema)

# What parameters_digest gave for the default options before the options became
# a table: runs stored since must keep being found done.
DEFAULTS_DIGEST = "e876dea70f36face5a175918d56d01921e9e84a29bef1ef21c941329c19fe7e0"

NEW_ROWS = (
    Suite2pOption("max_rois", int, 3000, validate=mm.validate.Range(min=1),
                  path=("detection", "sparsery_settings", "max_ROIs"),
                  why="at most this many ROIs per movie; a test option, not slapp's"),
    Suite2pOption("batch_size", int, 250, path=("batch_size",), in_db=True,
                  why="frames Suite2P reads at once; a test option, not slapp's"),
)


def test_the_digest_of_the_defaults_is_the_one_runs_were_stored_with():
    assert parameters_digest(Suite2pOptions.defaults(), 136, "1.1.0") == DEFAULTS_DIGEST


@pytest.mark.parametrize("row", NEW_ROWS, ids=lambda row: row.name)
def test_a_new_row_reaches_schema_dataclass_placement_and_read_back(row, tmp_path):
    from slapp.segmentation.suite2p_runner import base_inputs

    table = (*SUITE2P_OPTIONS, row)
    schema, options = settings_schema(table), options_class(table)

    # the schema: a command-line option with its default, its check and its reason
    class Command(argschema.ArgSchema, schema):
        pass
    parsed = argschema.ArgSchemaParser(schema_type=Command, args=[f"--{row.name}", "7"]).args
    assert parsed[row.name] == 7
    assert Command().fields[row.name].metadata["description"] == row.why
    assert schema().load({})[row.name] == row.default
    if row.validate is not None:
        with pytest.raises(mm.ValidationError, match=row.name):
            argschema.ArgSchemaParser(schema_type=Command, args=[f"--{row.name}", "0"])

    # the dataclass, and with it the digest
    values = options.from_args(parsed)
    assert getattr(values, row.name) == 7
    assert options.defaults() != values
    digest = parameters_digest(values, 136, "1.1.0")
    assert digest != parameters_digest(options.defaults(), 136, "1.1.0")

    # the placement into Suite2P's real dicts, and the read-back of what a run records
    db, settings = base_inputs(tmp_path / "movie.h5", tmp_path)
    place_options(settings, db, dataclasses.asdict(values), table)
    target = db if row.in_db else settings
    for key in row.path:
        target = target[key]
    assert target == 7
    assert options_from_recorded_settings({"db": db, "settings": settings}, table,
                                          options) == values


def test_the_rows_are_the_schema_and_the_dataclass_in_order():
    names = [row.name for row in SUITE2P_OPTIONS]
    assert [field.name for field in dataclasses.fields(Suite2pOptions)] == names
    assert list(settings_schema(SUITE2P_OPTIONS)().fields) == names


def test_the_baselines_place_their_settings_as_segment_does(tmp_path):
    from slapp.evaluation.plain_suite2p import baseline_inputs

    db, settings = baseline_inputs("original_jobs", tmp_path / "movie.h5", 26, tmp_path)
    assert (settings["fs"], settings["torch_device"], settings["run"]["do_registration"],
            settings["detection"]["threshold_scaling"], settings["detection"]["nbins"]) == (
        31.0, "cpu", 0, 0.75, 26)
