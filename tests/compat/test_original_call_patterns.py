"""The original toolkit's callers keep working: the call patterns its tests and scripts use.

The original handed its steps connection objects with two methods, ``query(sql)``
and ``insert(statement)``, each taking the SQL as its only argument, and its
tests substituted module-level names (``base64`` in select_data,
``find_full_movie`` and ``h5py`` in segmentation_manifest). These tests use
doubles that offer exactly that and nothing more, and then check that what slapp
hands them is real, safe SQL by running it against the real labeling database.
"""
import base64
from pathlib import Path

import numpy as np
import psycopg2.sql
import pytest

from slapp.data_selection import segmentation_manifest, select_data
from slapp.utils import query_utils
from slapp.utils.code_version import code_version


class OriginalConnection:
    """A connection as the original's callers had it: query(sql) and insert(sql), no more."""

    def __init__(self, answer):
        self.answer = answer
        self.queries, self.inserts = [], []

    def query(self, sql):
        self.queries.append(sql)
        return self.answer(sql)

    def insert(self, statement):
        self.inserts.append(statement)


def _ids_by_query(queries, ids):
    return lambda sql: [{"exp_id": experiment_id} for experiment_id in ids[queries.index(sql)]]


def test_select_data_calls_query_once_per_string_and_insert_once(monkeypatch, labeling_db):
    queries = ["SELECT stratum one", "SELECT stratum two; -- typed as is"]
    ids = [list(range(0, 40)), list(range(100, 150))]
    lims = OriginalConnection(_ids_by_query(queries, ids))
    label = OriginalConnection(lambda sql: [])
    encoded = []

    class CountingBase64:
        @staticmethod
        def b64encode(data):
            encoded.append(data)
            return base64.b64encode(data)

    monkeypatch.setattr(select_data, "base64", CountingBase64)
    selector = select_data.DataSelector(
        input_data={"query_strings": queries, "sub_selection_counts": [5, 7]}, args=[])
    result = selector.run(lims, label)

    assert lims.queries == queries  # once each, in order, exactly as typed
    assert len(label.inserts) == 1 and label.queries == []
    assert encoded == [query.encode("utf-8") for query in queries]
    statement = label.inserts[0]
    assert isinstance(statement, psycopg2.sql.Composed)
    values = [part for part in statement.seq if isinstance(part, psycopg2.sql.Literal)]
    assert [value.wrapped for value in values][-3:] == [result["sub_selected_ids"], 42, ""]
    assert result["experiment_selection_id"] is None  # the original's insert returns nothing

    labeling_db.insert(statement)  # the statement is real SQL with its values quoted
    [row] = labeling_db.query("SELECT * FROM experiment_selection")
    assert [base64.b64decode(text).decode() for text in row["base64_query_strings"]] == queries
    assert row["slapp_commit_hash"] == code_version()
    assert row["sub_selected_ids"] == result["sub_selected_ids"]


def test_slapp_refuses_an_experiment_drawn_by_two_queries():
    """The one deliberate difference: the original silently kept such an experiment twice."""
    queries = ["SELECT a", "SELECT b"]
    lims = OriginalConnection(lambda sql: [{"exp_id": i} for i in range(100)])
    selector = select_data.DataSelector(
        input_data={"query_strings": queries, "sub_selection_counts": [25, 30]}, args=[])
    with pytest.raises(select_data.DataSelectionException,
                       match="sub-selected by more than one query"):
        selector.run(lims, OriginalConnection(lambda sql: []))


def test_manifest_queries_each_connection_once_and_uses_module_level_names(
        monkeypatch, tmp_path):
    label = OriginalConnection(lambda sql: [{"sub_selected_ids": [11, 12, 13]}])
    lims = OriginalConnection(lambda sql: [
        {"id": experiment_id, "nframes": 230, "storage_directory": f"/lims/{experiment_id}"}
        for experiment_id in (13, 11, 12)])
    searched, opened, written = [], [], []

    def find_full_movie(directory):
        searched.append(directory)
        return Path(directory) / "motion_corrected_video.h5"

    class MovieFile:
        def __init__(self, path, mode):
            opened.append((path, mode))

        def __enter__(self):
            return {"data": np.zeros((230, 2))}  # only shape[0] is compared

        def __exit__(self, *exc_info):
            return False

    class FakeH5py:
        File = MovieFile

    monkeypatch.setattr(segmentation_manifest, "find_full_movie", find_full_movie)
    monkeypatch.setattr(segmentation_manifest, "h5py", FakeH5py)
    monkeypatch.setattr(segmentation_manifest.SegmentationManifest, "output",
                        lambda self, document, **kwargs: written.append(document))
    module = segmentation_manifest.SegmentationManifest(
        input_data={"experiment_selection_id": 3, "output_json": str(tmp_path / "m.json")},
        args=[])
    module.run(lims, label)

    assert len(label.queries) == 1 and len(lims.queries) == 1
    assert sorted(map(str, searched)) == ["/lims/11", "/lims/12", "/lims/13"]
    assert sorted(opened) == [(Path(f"/lims/{i}/motion_corrected_video.h5"), "r")
                              for i in (11, 12, 13)]
    assert written == [{"manifest": [
        {"experiment_id": i, "nbinned": 230 // segmentation_manifest.DEFAULT_BIN_SIZE,
         "input_video": f"/lims/{i}/motion_corrected_video.h5"}
        for i in (11, 12, 13)]}]


def test_manifest_sql_handed_to_the_connections_is_real_and_safe(labeling_db, lims_db,
                                                                 tmp_path):
    """The one-argument statements run as they are on slapp's own connections."""
    label = OriginalConnection(labeling_db.query)
    lims = OriginalConnection(lims_db.query)
    labeling_db.insert(
        "INSERT INTO experiment_selection (base64_query_strings, slapp_commit_hash, "
        "ophys_experiment_ids, sub_selection_counts, sub_selected_ids, random_seed) "
        "VALUES ('{U0VMRUNU}', 'x', '{{7}}', '{1}', '{7}', 42)")
    module = segmentation_manifest.SegmentationManifest(
        input_data={"experiment_selection_id": 1, "output_json": str(tmp_path / "m.json")},
        args=[])
    with pytest.raises(segmentation_manifest.SegmentationManifestException,
                       match="7: not in LIMS ophys_experiments"):
        module.run(lims, label)
    assert len(label.queries) == 1 and len(lims.queries) == 1


@pytest.mark.parametrize("missing", ["host", "port", "database"])
def test_credentials_exception_when_a_setting_is_nowhere(monkeypatch, missing):
    monkeypatch.setenv("COMPAT_USER", "u")
    monkeypatch.setenv("COMPAT_PASSWORD", "p")
    given = {"host": "h", "port": 1, "database": "d"}
    del given[missing]
    for name in given:
        monkeypatch.delenv("COMPAT_" + name.upper(), raising=False)
    monkeypatch.delenv("COMPAT_" + missing.upper(), raising=False)
    with pytest.raises(query_utils.CredentialsException):
        query_utils.get_db_credentials(env_prefix="COMPAT_", **given)
    monkeypatch.setenv("COMPAT_" + missing.upper(), "5432" if missing == "port" else "x")
    assert set(query_utils.get_db_credentials(env_prefix="COMPAT_", **given)) == {
        "user", "password", "host", "port", "database"}
