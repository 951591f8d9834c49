"""One table row per Suite2P option: schema, dataclass, placement and read-back follow from it."""
import dataclasses
from pathlib import Path

import argschema
import marshmallow as mm
import numpy as np
import pytest

from slapp.segmentation.settings import (SUITE2P_OPTIONS, Suite2pOption, Suite2pOptions,
                                         Suite2pSettingsSchema, options_class,
                                         options_from_recorded_settings, parameters_digest,
                                         place_options, settings_schema)

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


@pytest.fixture(scope="module")
def classifier_files(tmp_path_factory):
    """Suite2P's built-in classifier file at two paths (same bytes) and a file of other bytes."""
    from suite2p.classification import builtin_classfile

    from slapp.labeling.classifier_file import SUITE2P_KEYS, classifier_bytes

    directory = tmp_path_factory.mktemp("classifiers")
    content = Path(builtin_classfile).read_bytes()
    rng = np.random.default_rng(5)
    other = classifier_bytes(rng.normal(size=(200, 3)), np.tile([0, 1], 100), SUITE2P_KEYS)
    files = {"lab": directory / "lab.npy", "moved": directory / "moved" / "lab.npy",
             "other": directory / "other.npy"}
    files["moved"].parent.mkdir()
    for name, data in (("lab", content), ("moved", content), ("other", other)):
        files[name].write_bytes(data)
    return files


def test_the_classifier_row_reaches_schema_dataclass_placement_and_read_back(
        classifier_files, tmp_path):
    from slapp.segmentation.suite2p_runner import base_inputs

    class Command(argschema.ArgSchema, Suite2pSettingsSchema):
        pass
    path = classifier_files["lab"]
    parsed = argschema.ArgSchemaParser(schema_type=Command,
                                       args=["--classifier_path", str(path)]).args
    options = Suite2pOptions.from_args(parsed)
    assert options.classifier_path == str(path)
    assert Suite2pOptions.defaults().classifier_path is None
    assert Suite2pSettingsSchema().load({})["classifier_path"] is None
    with pytest.raises(mm.ValidationError, match="classifier file .* does not exist"):
        argschema.ArgSchemaParser(schema_type=Command,
                                  args=["--classifier_path", str(tmp_path / "none.npy")])

    # without the option: Suite2P's built-in classifier, as before the option existed
    db, settings = base_inputs(tmp_path / "movie.h5", tmp_path)
    place_options(settings, db, dataclasses.asdict(Suite2pOptions.defaults()))
    assert settings["classification"] == {"classifier_path": None,
                                          "use_builtin_classifier": True, "preclassify": 0.0}
    recorded = {"db": db, "settings": settings}
    assert options_from_recorded_settings(recorded) == Suite2pOptions.defaults()
    del settings["classification"]["classifier_path"]  # recorded without the key
    assert options_from_recorded_settings(recorded) == Suite2pOptions.defaults()

    # with it: the file, and the read-back of what such a run records
    db, settings = base_inputs(tmp_path / "movie.h5", tmp_path)
    place_options(settings, db, dataclasses.asdict(options))
    assert settings["classification"] == {"classifier_path": str(path),
                                          "use_builtin_classifier": False, "preclassify": 0.0}
    assert options_from_recorded_settings({"db": db, "settings": settings}) == options


def test_the_digest_covers_the_classifier_files_content_not_its_path(classifier_files,
                                                                     tmp_path):
    def digest(path):
        options = dataclasses.replace(Suite2pOptions.defaults(), classifier_path=str(path))
        return parameters_digest(options, 136, "1.1.0")

    lab = digest(classifier_files["lab"])
    assert lab not in (DEFAULTS_DIGEST, digest(classifier_files["other"]))
    assert digest(classifier_files["moved"]) == lab
    edited = tmp_path / "edited.npy"
    edited.write_bytes(classifier_files["lab"].read_bytes())
    assert digest(edited) == lab
    edited.write_bytes(classifier_files["other"].read_bytes())  # changed in place
    assert digest(edited) != lab
