"""slapp.db.runs: which run counts and each entry's state, against the embedded server."""
import dataclasses
import datetime
import json

import numpy as np
import pytest
from stored_runs import insert_failure, insert_run, insert_selection, random_masks

from slapp.db.runs import (DONE, FAILED, MISSING, RunIdentity, RunParameters, RunsException,
                           UnknownRunException, counted_runs, counted_runs_of_selection,
                           find_current_run, load_run, manifest_entry_states)
from slapp.segmentation.settings import Suite2pOptions

VERSION = "runs-test-version"
SUITE2P = "1.1.0"
NBINNED = 10
DEFAULT = RunParameters(VERSION, Suite2pOptions.defaults(), SUITE2P)
SWEEP = dataclasses.replace(
    DEFAULT, options=dataclasses.replace(Suite2pOptions.defaults(), threshold_scaling=0.9))


def write_manifest(directory, experiment_ids):
    path = directory / "manifest.json"
    path.write_text(json.dumps({"manifest": [
        {"experiment_id": eid, "nbinned": NBINNED, "input_video": f"/movies/{eid}.h5"}
        for eid in experiment_ids]}))
    return path


def run_of(dbconn, experiment_id, parameters=DEFAULT, n_rois=2, seed=0, **columns):
    masks = random_masks(np.random.default_rng(seed), (32, 48), n_rois)
    columns = {"parameters_digest": parameters.digest(NBINNED), **columns}
    return insert_run(dbconn, experiment_id, masks, seed=seed, nbinned=NBINNED,
                      ophys_segmentation_commit_hash=parameters.code_version, **columns)


def superseding_run(dbconn, old, experiment_id, **kwargs):
    """A new run of ``old``'s identity that supersedes it, as segment --overwrite leaves them."""
    new = run_of(dbconn, experiment_id, parameters_digest="pending", **kwargs)
    dbconn.execute("UPDATE segmentation_runs SET superseded_by = %s, superseded_at = now() "
                   "WHERE id = %s", (new, old))
    dbconn.execute("UPDATE segmentation_runs SET parameters_digest = "
                   "(SELECT parameters_digest FROM segmentation_runs WHERE id = %s) "
                   "WHERE id = %s", (old, new))
    return new


def fail(dbconn, experiment_id, manifest, index, digest, when, failure_class="killed"):
    failure_id = insert_failure(dbconn, experiment_id, manifest, index, "it failed",
                                failure_class)
    dbconn.execute("UPDATE segmentation_failures SET ophys_segmentation_commit_hash = %s, "
                   "parameters_digest = %s, created_at = %s WHERE id = %s",
                   (VERSION, digest, when, failure_id))
    return failure_id


def test_each_entry_is_done_failed_or_missing_by_its_current_run(labeling_db, tmp_path):
    manifest = write_manifest(tmp_path, [1, 2, 3, 4, 5])
    old = run_of(labeling_db, 1, seed=1)
    new = superseding_run(labeling_db, old, 1, seed=2, n_rois=3)
    sweep = run_of(labeling_db, 1, SWEEP, seed=3)
    only_sweep = run_of(labeling_db, 2, SWEEP, seed=4)
    other_code = run_of(labeling_db, 3, dataclasses.replace(DEFAULT, code_version="older"))
    later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
    failure = fail(labeling_db, 4, manifest, 3, DEFAULT.digest(NBINNED), later)
    fail(labeling_db, 5, manifest, 4, SWEEP.digest(NBINNED), later)  # other parameters

    states = manifest_entry_states(labeling_db, manifest, DEFAULT)

    assert [(s.status, s.segmentation_run_id) for s in states] == [
        (DONE, new), (MISSING, None), (MISSING, None), (FAILED, None), (MISSING, None)]
    assert states[0].run.n_rois == 3 and states[0].run.superseded_by is None
    assert [run.segmentation_run_id for run in states[0].other_parameter_runs] == [sweep]
    assert [run.segmentation_run_id for run in states[1].other_parameter_runs] == [only_sweep]
    assert states[2].other_code_versions == ["older"] and other_code
    assert states[3].failure.failure_id == failure
    assert states[3].failure.failure_class == "killed"
    assert counted_runs(labeling_db, manifest, DEFAULT) == [new, None, None, None, None]
    assert counted_runs(labeling_db, manifest, SWEEP) == [sweep, only_sweep, None, None,
                                                          None]


def test_a_failure_after_the_run_is_kept_one_before_it_is_history(labeling_db, tmp_path):
    manifest = write_manifest(tmp_path, [1, 2])
    before = datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)
    after = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
    first, second = run_of(labeling_db, 1, seed=1), run_of(labeling_db, 2, seed=2)
    fail(labeling_db, 1, manifest, 0, DEFAULT.digest(NBINNED), before)
    late = fail(labeling_db, 2, manifest, 1, None, after, "out_of_memory")

    states = manifest_entry_states(labeling_db, manifest, DEFAULT)

    assert [(s.status, s.segmentation_run_id) for s in states] == [(DONE, first),
                                                                    (DONE, second)]
    assert states[0].failure is None
    assert states[1].failure.failure_id == late


def test_a_failure_without_experiment_is_matched_by_manifest_path_and_index(labeling_db,
                                                                            tmp_path):
    manifest = write_manifest(tmp_path, [1, 2])
    failure = fail(labeling_db, None, manifest.resolve(), 1, None,
                   datetime.datetime.now(datetime.timezone.utc))

    states = manifest_entry_states(labeling_db, manifest, DEFAULT)

    assert [s.status for s in states] == [MISSING, FAILED]
    assert states[1].failure.failure_id == failure
    # the entries alone (no manifest path) cannot be matched to it
    entries = [{"experiment_id": 1, "nbinned": NBINNED}, {"experiment_id": 2,
                                                          "nbinned": NBINNED}]
    assert [s.status for s in manifest_entry_states(labeling_db, entries, DEFAULT)] == [
        MISSING, MISSING]


def test_a_selection_counts_the_current_run_of_these_parameters_at_its_nbinned(labeling_db):
    selection = insert_selection(labeling_db, [7, 8, 9])
    default = run_of(labeling_db, 7, seed=1)
    run_of(labeling_db, 7, SWEEP, seed=2)
    run_of(labeling_db, 8, SWEEP, seed=3)

    assert counted_runs_of_selection(labeling_db, selection, DEFAULT) == {
        7: default, 8: None, 9: None}
    with pytest.raises(RunsException, match="there is no experiment selection with id 99"):
        counted_runs_of_selection(labeling_db, 99, DEFAULT)


def test_find_and_load_runs(labeling_db):
    old = run_of(labeling_db, 1, seed=1)
    new = superseding_run(labeling_db, old, 1, seed=2)
    identity = DEFAULT.identity(1, NBINNED)

    assert identity == RunIdentity(1, VERSION, DEFAULT.digest(NBINNED))
    assert find_current_run(labeling_db, identity).segmentation_run_id == new
    assert find_current_run(labeling_db, SWEEP.identity(1, NBINNED)) is None
    loaded = load_run(labeling_db, old)
    assert (loaded.superseded_by, loaded.identity) == (new, identity)
    assert loaded.columns["hostname"] == "node7"
    with pytest.raises(UnknownRunException, match="^there is no segmentation run with id 42$"):
        load_run(labeling_db, 42)


def test_parameters_describe_what_differs_from_the_defaults():
    assert DEFAULT.changed_options() == []
    assert DEFAULT.description() == "Suite2P 1.1.0, default options"
    assert SWEEP.changed_options() == [("threshold_scaling", 0.9)]
    assert SWEEP.description() == ("Suite2P 1.1.0, threshold_scaling 0.9 "
                                   "(other options default)")
