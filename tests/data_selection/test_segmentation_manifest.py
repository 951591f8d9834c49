"""Step 2: the segmentation manifest, built from a stored selection against real
PostgreSQL and real HDF5 files, and read back by the segmentation step."""
import json

import pytest

from slapp.data_selection.segmentation_manifest import (
    SegmentationManifestException, SegmentationManifestOutputSchema, load_manifest)


def _write(path, document):
    path.write_text(json.dumps(document))
    return path


def test_load_manifest_returns_entries_in_order_with_default_log_level(tmp_path):
    path = _write(tmp_path / "manifest.json", {"manifest": [
        {"experiment_id": 850517352, "nbinned": 420, "input_video": "/data/b.h5"},
        {"log_level": "INFO", "experiment_id": 850517344, "nbinned": 7,
         "input_video": "/data/a.h5"}]})

    assert load_manifest(path) == [
        {"log_level": "ERROR", "experiment_id": 850517352, "nbinned": 420,
         "input_video": "/data/b.h5"},
        {"log_level": "INFO", "experiment_id": 850517344, "nbinned": 7,
         "input_video": "/data/a.h5"}]


def test_output_schema_dumps_entries_in_the_seed_key_order():
    dumped = SegmentationManifestOutputSchema().dump({"manifest": [
        {"experiment_id": 1, "nbinned": 2, "input_video": "/m.h5"}]})

    assert json.dumps(dumped) == ('{"manifest": [{"log_level": "ERROR", "experiment_id": 1, '
                                  '"nbinned": 2, "input_video": "/m.h5"}]}')


@pytest.mark.parametrize("text, message", [
    ('{"manifest": [', "invalid JSON"),
    ('[1, 2]', "Invalid input type"),
    ('{"manifest": []}', "lists no experiment"),
    ('{"manifest": [{"experiment_id": 1, "nbinned": 0, "input_video": "/m.h5"}]}',
     "manifest.0.nbinned"),
    ('{"manifest": [{"experiment_id": 1, "nbinned": 3, "input_video": "m.h5"}]}',
     "'m.h5' is not an absolute path"),
    ('{"manifest": [{"experiment_id": 1, "nbinned": 3}]}', "manifest.0.input_video"),
])
def test_load_manifest_rejects_a_bad_document_naming_the_file(tmp_path, text, message):
    path = tmp_path / "bad.json"
    path.write_text(text)

    with pytest.raises(SegmentationManifestException) as raised:
        load_manifest(path)

    assert str(path) in str(raised.value)
    assert message in str(raised.value)


def test_load_manifest_of_a_missing_file_names_it(tmp_path):
    with pytest.raises(SegmentationManifestException, match="cannot read manifest .*nowhere.json"):
        load_manifest(tmp_path / "nowhere.json")
