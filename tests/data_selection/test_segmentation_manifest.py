"""Step 2: the segmentation manifest, built from a stored selection against real
PostgreSQL and real HDF5 files, and read back by the segmentation step."""
import json
import os
import shutil
import subprocess
import sys

import h5py
import pytest

from slapp.data_selection.segmentation_manifest import (
    DECAY_BIN_SIZE, DEFAULT_BIN_SIZE, SegmentationManifest, SegmentationManifestException,
    SegmentationManifestOutputSchema, SegmentationManifestSchema, build_entries, load_manifest)
from slapp.demo.lims import add_experiment


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


# --- building the manifest from a stored selection -------------------------------

MODULE = "slapp.data_selection.segmentation_manifest"


def _movie_dir(storage, experiment_id):
    """A LIMS-like experiment directory: specimen_*/ophys_session_*/ophys_experiment_*."""
    return (storage / f"specimen_{experiment_id + 11}" / f"ophys_session_{experiment_id + 7}"
            / f"ophys_experiment_{experiment_id}")


def _write_movie(path, nframes, dataset="data"):
    """An HDF5 movie whose dataset has a shape but no frames written (cheap to make)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as movie:
        movie.create_dataset(dataset, shape=(nframes, 4, 4), dtype="uint16")
    return path


def _add_experiment(lims_admin, storage, experiment_id, nframes, *,
                    movie="processed/motion_corrected_video.h5", movie_frames=None):
    """LIMS rows for one experiment and, unless ``movie`` is None, its movie file."""
    directory = _movie_dir(storage, experiment_id)
    directory.mkdir(parents=True, exist_ok=True)
    if movie is not None:
        _write_movie(directory / movie, nframes if movie_frames is None else movie_frames)
    with lims_admin.cursor() as cursor:
        add_experiment(cursor, experiment_id, project="VisualBehaviorMultiscope",
                       genotype="Sst-IRES-Cre", depth=175, nframes=nframes,
                       storage_directory=str(directory))
    return directory


def _store_selection(labeling_db, sub_selected_ids):
    """An experiment_selection row as select_data writes it; returns its id."""
    return labeling_db.insert(
        "INSERT INTO experiment_selection (base64_query_strings, slapp_commit_hash, "
        "ophys_experiment_ids, sub_selection_counts, sub_selected_ids, random_seed, "
        "comment_string) VALUES (%s, %s, %s::bigint[], %s, %s::bigint[], %s, %s) RETURNING id",
        (["U0VMRUNU"], "test", [sorted(sub_selected_ids)], [len(sub_selected_ids)],
         sub_selected_ids, 42,
         "test selection"))[0]["id"]


@pytest.fixture
def storage(tmp_path):
    """The root of a LIMS-like storage tree."""
    root = tmp_path / "prod0"
    root.mkdir()
    return root


def test_default_bin_size_is_the_seeds_115_and_22_is_one_gcamp6f_decay_at_31_hz():
    assert DEFAULT_BIN_SIZE == 115
    assert SegmentationManifestSchema().fields["bin_size"].dump_default == DEFAULT_BIN_SIZE
    assert DECAY_BIN_SIZE == 22 == round(0.7 * 31)


def test_default_manifest_gives_the_seeds_nbinned(
        run_cli, labeling_db, lims_admin, storage, tmp_path):
    """The seed's example shows "nbinned": 420 for its sessions: int(nframes / 115),
    truncated, as the original manifest computed it."""
    frame_counts = {850517344: 48300, 850517352: 48414, 850517360: 48299,
                    850517368: 40000, 850517376: 100000, 850517384: 115}
    for experiment_id, nframes in frame_counts.items():
        _add_experiment(lims_admin, storage, experiment_id, nframes)
    selection_id = _store_selection(labeling_db, list(frame_counts))
    output = tmp_path / "manifest.json"

    result = run_cli(MODULE, "--experiment_selection_id", selection_id,
                     "--output_json", output)

    assert result.returncode == 0, result.stderr
    nbinned = {entry["experiment_id"]: entry["nbinned"]
               for entry in json.loads(output.read_text())["manifest"]}
    assert nbinned == {850517344: 420, 850517352: 420, 850517360: 419,
                       850517368: 347, 850517376: 869, 850517384: 1}
    assert nbinned == {experiment_id: int(nframes / 115)
                       for experiment_id, nframes in frame_counts.items()}


def test_manifest_of_20_experiments_in_selection_order(
        run_cli, labeling_db, lims_admin, storage, tmp_path):
    experiment_ids = [850517344 + 8 * k for k in range(20)]
    selected = experiment_ids[::-1][:10] + experiment_ids[:10]  # not sorted
    expected = {}
    for k, experiment_id in enumerate(experiment_ids):
        nframes = DEFAULT_BIN_SIZE * (k + 1) + k  # nbinned = k + 1 (k < DEFAULT_BIN_SIZE)
        movie = ("processed/motion_corrected_video.h5" if k % 3 else
                 "processed/concat/concat_31Hz_0.h5")
        directory = _add_experiment(lims_admin, storage, experiment_id, nframes, movie=movie)
        if k % 3 == 0:  # the concatenated movie wins over the motion-corrected one
            _write_movie(directory / "processed" / "motion_corrected_video.h5", 7)
        expected[experiment_id] = {"log_level": "ERROR", "experiment_id": experiment_id,
                                   "nbinned": k + 1,
                                   "input_video": str(directory / movie)}
    selection_id = _store_selection(labeling_db, selected)
    output = tmp_path / "example_output.json"

    result = run_cli(MODULE, "--experiment_selection_id", selection_id,
                     "--output_json", output, "--log_level", "INFO")

    assert result.returncode == 0, result.stderr
    assert json.loads(output.read_text()) == {
        "experiment_selection_id": selection_id,
        "manifest": [expected[experiment_id] for experiment_id in selected]}
    assert load_manifest(output) == [expected[experiment_id] for experiment_id in selected]
    assert result.stderr.splitlines() == [
        "INFO:SegmentationManifest:selected 20 experiments from table experiment_selection",
        f"INFO:SegmentationManifest:wrote {output}"]
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]


def test_input_video_is_resolved_through_symbolic_links(
        labeling_db, lims_db, lims_admin, storage, tmp_path):
    real = _add_experiment(lims_admin, storage, 1001, 230)
    link = tmp_path / "allen"
    link.symlink_to(storage)
    with lims_admin.cursor() as cursor:
        cursor.execute("UPDATE ophys_experiments SET storage_directory = %s WHERE id = 1001",
                       (str(link / real.relative_to(storage)),))
    output = tmp_path / "manifest.json"
    module = SegmentationManifest(input_data={
        "experiment_selection_id": _store_selection(labeling_db, [1001]),
        "output_json": str(output), "bin_size": 100}, args=[])

    manifest = module.run(lims_db, labeling_db)

    assert manifest["manifest"] == [{
        "log_level": "ERROR", "experiment_id": 1001, "nbinned": 2,
        "input_video": str(real.resolve() / "processed" / "motion_corrected_video.h5")}]
    assert json.loads(output.read_text()) == manifest


def test_sequential_and_concurrent_discovery_give_the_same_manifest(
        labeling_db, lims_db, lims_admin, storage, tmp_path):
    experiment_ids = list(range(500, 530))
    for experiment_id in experiment_ids:
        _add_experiment(lims_admin, storage, experiment_id, 2 * experiment_id)
    selection_id = _store_selection(labeling_db, experiment_ids[::-1])
    manifests = []
    for workers in (1, 8):
        output = tmp_path / f"manifest_{workers}.json"
        SegmentationManifest(input_data={
            "experiment_selection_id": selection_id, "output_json": str(output),
            "discovery_workers": workers}, args=[]).run(lims_db, labeling_db)
        manifests.append(load_manifest(output))

    assert manifests[0] == manifests[1]
    assert [entry["experiment_id"] for entry in manifests[0]] == experiment_ids[::-1]
    assert [entry["nbinned"] for entry in manifests[0]] == [
        int(2 * experiment_id / DEFAULT_BIN_SIZE) for experiment_id in experiment_ids[::-1]]


# --- every bad input: non-zero exit, a message naming the experiment, no file -----

def _bad_experiment(kind, lims_admin, storage, experiment_id):
    """Set up experiment ``experiment_id`` to be bad in the way ``kind`` says."""
    if kind == "not in LIMS":
        return "not in LIMS ophys_experiments"
    if kind == "no movie":
        directory = _add_experiment(lims_admin, storage, experiment_id, 500, movie=None)
        _write_movie(directory / "processed" / "other.h5", 500)
        return f"no movie (concat_31Hz_0.h5 or motion_corrected_video.h5) in {directory}"
    if kind == "two movies":
        directory = _add_experiment(lims_admin, storage, experiment_id, 500,
                                    movie="a/concat_31Hz_0.h5")
        _write_movie(directory / "b" / "concat_31Hz_0.h5", 500)
        return f"2 files named concat_31Hz_0.h5 in {directory}"
    if kind == "frame mismatch":
        directory = _add_experiment(lims_admin, storage, experiment_id, 1000, movie_frames=999)
        return (f"LIMS says 1000 frames, movie "
                f"{directory / 'processed' / 'motion_corrected_video.h5'} has 999")
    if kind == "not HDF5":
        directory = _add_experiment(lims_admin, storage, experiment_id, 500, movie=None)
        movie = directory / "processed" / "motion_corrected_video.h5"
        movie.parent.mkdir()
        movie.write_text("not an HDF5 file")
        return f"cannot read movie {movie} as HDF5"
    if kind == "no data dataset":
        directory = _add_experiment(lims_admin, storage, experiment_id, 500, movie=None)
        movie = _write_movie(directory / "processed" / "motion_corrected_video.h5", 500,
                             dataset="frames")
        return f"movie {movie} has no 'data' dataset"
    if kind == "shorter than a bin":
        short = DEFAULT_BIN_SIZE - 1
        directory = _add_experiment(lims_admin, storage, experiment_id, short)
        return (f"movie {directory / 'processed' / 'motion_corrected_video.h5'} has {short} "
                f"frames, fewer than one bin of {DEFAULT_BIN_SIZE} (nbinned would be 0)")
    if kind == "no storage directory":
        with lims_admin.cursor() as cursor:
            add_experiment(cursor, experiment_id, project="p", genotype="g", depth=1,
                           nframes=500, storage_directory=None)
        return "LIMS has no storage_directory"
    raise AssertionError(kind)


BAD_KINDS = ["not in LIMS", "no movie", "two movies", "frame mismatch", "not HDF5",
             "no data dataset", "shorter than a bin", "no storage directory"]


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_a_bad_experiment_fails_the_run_naming_it_and_writes_nothing(
        kind, run_cli, labeling_db, lims_admin, storage, tmp_path):
    _add_experiment(lims_admin, storage, 111, 500)
    _add_experiment(lims_admin, storage, 333, 500)
    problem = _bad_experiment(kind, lims_admin, storage, 222)
    output = tmp_path / "manifest.json"

    result = run_cli(MODULE, "--experiment_selection_id",
                     _store_selection(labeling_db, [111, 222, 333]), "--output_json", output)

    assert result.returncode == 1
    [line] = result.stderr.splitlines()  # one line at the default log level
    assert line.startswith(
        f"slapp manifest: error: 1 of 3 experiments have problems, "
        f"no manifest written: 222: {problem}")
    assert not output.exists()
    assert os.listdir(tmp_path) == [storage.name]


def test_every_bad_experiment_is_reported_in_one_run(
        run_cli, labeling_db, lims_admin, storage, tmp_path):
    _add_experiment(lims_admin, storage, 1, 500)
    bad = {10 + k: _bad_experiment(kind, lims_admin, storage, 10 + k)
           for k, kind in enumerate(BAD_KINDS)}
    selected = [17, 1, 16, 15, 14, 13, 12, 11, 10]
    output = tmp_path / "manifest.json"
    output.write_text("the previous manifest")

    result = run_cli(MODULE, "--experiment_selection_id", _store_selection(labeling_db, selected),
                     "--output_json", output, "--log_level", "WARNING")

    assert result.returncode == 1
    error_lines = [line for line in result.stderr.splitlines()
                   if line.startswith("WARNING:SegmentationManifest:")]
    assert [line.split(":")[2] for line in error_lines] == [
        str(experiment_id) for experiment_id in selected if experiment_id in bad]
    summary = result.stderr.splitlines()[-1]
    assert summary.startswith("slapp manifest: error: 8 of 9 experiments have problems, "
                              "no manifest written: 17: LIMS has no storage_directory; 16: ")
    for experiment_id, problem in bad.items():
        assert f"{experiment_id}: {problem}" in summary
    assert output.read_text() == "the previous manifest"


def test_duplicate_ids_in_the_selection_are_an_error(
        run_cli, labeling_db, lims_admin, storage, tmp_path):
    _add_experiment(lims_admin, storage, 5, 500)
    output = tmp_path / "manifest.json"

    result = run_cli(MODULE, "--experiment_selection_id", _store_selection(labeling_db, [5, 5]),
                     "--output_json", output)

    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        "slapp manifest: error: 1 of 1 experiments have problems, no manifest "
        "written: 5: listed 2 times in sub_selected_ids")
    assert not output.exists()


def test_unknown_selection_id_is_an_error(run_cli, labeling_db, tmp_path):
    output = tmp_path / "manifest.json"

    result = run_cli(MODULE, "--experiment_selection_id", 99, "--output_json", output)

    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "slapp manifest: error: no experiment_selection with id 99"]
    assert not output.exists()


def test_a_selection_with_no_sub_selected_ids_is_an_error(run_cli, labeling_db, tmp_path):
    output = tmp_path / "manifest.json"

    result = run_cli(MODULE, "--experiment_selection_id", _store_selection(labeling_db, []),
                     "--output_json", output)

    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "slapp manifest: error: experiment_selection 1 has no sub_selected_ids"]
    assert not output.exists()


@pytest.mark.parametrize("args, message", [
    (["--bin_size", "0"], "bin_size: Must be greater than or equal to 1."),
    (["--discovery_workers", "0"], "discovery_workers: Must be greater than or equal to 1."),
])
def test_bad_settings_are_refused_before_anything_is_read(run_cli, tmp_path, args, message):
    output = tmp_path / "manifest.json"

    result = run_cli(MODULE, "--experiment_selection_id", 1, "--output_json", output, *args)

    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        f"slapp manifest: error: invalid input: {message}")
    assert not output.exists()


@pytest.mark.parametrize("progress", [True, False])
def test_progress_bar_is_shown_only_when_asked(capsys, lims_admin, storage, progress):
    rows = [{"id": experiment_id, "nframes": 230,
             "storage_directory": str(_add_experiment(lims_admin, storage, experiment_id, 230))}
            for experiment_id in (1, 2)]

    entries, problems = build_entries(rows, bin_size=115, workers=2, progress=progress)

    assert sorted(entries) == [1, 2] and problems == {}
    assert ("finding movies" in capsys.readouterr().err) == progress


# --- permission errors and --excluded_json ---------------------------------------

SETPRIV = shutil.which("setpriv")


def run_unprivileged(cli_env, *args, cwd=None):
    """Run the command so that file permissions bind it, as they bind a cluster user.

    As root the command runs with the capabilities that bypass file permissions
    removed from its bounding set (setpriv), so a mode-000 directory refuses it.
    """
    prefix = []
    if os.geteuid() == 0:
        if SETPRIV is None:
            pytest.skip("running as root without setpriv: cannot make a file unreadable")
        prefix = [SETPRIV, "--bounding-set=-dac_override,-dac_read_search"]
    return subprocess.run([*prefix, sys.executable, "-m", MODULE, *map(str, args)],
                          env=cli_env, cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.fixture
def locked_paths():
    """Paths made unreadable by a test, made readable again afterwards."""
    paths = []
    yield paths
    for path in paths:
        path.chmod(0o755)


def _lock(path, locked_paths):
    path.chmod(0)
    locked_paths.append(path)


def _three_experiments_one_locked(lims_admin, storage, locked_paths, where):
    _add_experiment(lims_admin, storage, 111, 500)
    directory = _add_experiment(lims_admin, storage, 222, 500)
    _add_experiment(lims_admin, storage, 333, 500)
    movie = directory / "processed" / "motion_corrected_video.h5"
    if where == "storage directory":
        _lock(directory, locked_paths)
        return f"cannot list {directory}: Permission denied"
    if where == "parent directory":
        _lock(directory.parent, locked_paths)
        return f"cannot read storage directory {directory}: Permission denied"
    if where == "subdirectory":
        _lock(directory / "processed", locked_paths)
        return f"cannot list {directory / 'processed'}: Permission denied"
    _lock(movie, locked_paths)
    return f"cannot read movie {movie}: Permission denied"


LOCKED = ["storage directory", "parent directory", "subdirectory", "movie file"]


@pytest.mark.parametrize("where", LOCKED)
def test_a_permission_error_is_that_experiments_named_problem(
        where, cli_env, labeling_db, lims_admin, storage, tmp_path, locked_paths):
    problem = _three_experiments_one_locked(lims_admin, storage, locked_paths, where)
    output = tmp_path / "manifest.json"

    result = run_unprivileged(cli_env, "--experiment_selection_id",
                              _store_selection(labeling_db, [111, 222, 333]),
                              "--output_json", output)

    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("slapp manifest: error: 1 of 3 experiments have problems, "
                           f"no manifest written: 222: {problem}"), line
    assert "Errno" not in line
    assert not output.exists()


@pytest.mark.parametrize("where", LOCKED)
def test_excluded_json_writes_the_good_experiments_and_lists_the_rest(
        where, cli_env, labeling_db, lims_admin, storage, tmp_path, locked_paths):
    problem = _three_experiments_one_locked(lims_admin, storage, locked_paths, where)
    with lims_admin.cursor() as cursor:
        add_experiment(cursor, 444, project="p", genotype="g", depth=1, nframes=500,
                       storage_directory=None)
    output, excluded = tmp_path / "manifest.json", tmp_path / "excluded.json"
    selection_id = _store_selection(labeling_db, [444, 333, 222, 111, 999])

    result = run_unprivileged(cli_env, "--experiment_selection_id", selection_id,
                              "--output_json", output, "--excluded_json", excluded)

    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        f"segmentation_manifest: wrote 2 experiments; excluded 3, each with its problem, "
        f"in {excluded}"]
    assert [entry["experiment_id"] for entry in load_manifest(output)] == [333, 111]
    listed = json.loads(excluded.read_text())
    assert listed["experiment_selection_id"] == selection_id
    assert listed["manifest_json"] == str(output)
    assert [item["experiment_id"] for item in listed["excluded"]] == [444, 222, 999]
    assert listed["excluded"][0]["problem"] == "LIMS has no storage_directory"
    assert listed["excluded"][1]["problem"].startswith(problem)
    assert listed["excluded"][2]["problem"] == "not in LIMS ophys_experiments"


def test_excluded_json_with_no_good_experiment_writes_nothing(
        run_cli, labeling_db, lims_admin, storage, tmp_path):
    _bad_experiment("no movie", lims_admin, storage, 5)
    output, excluded = tmp_path / "manifest.json", tmp_path / "excluded.json"

    result = run_cli(MODULE, "--experiment_selection_id", _store_selection(labeling_db, [5]),
                     "--output_json", output, "--excluded_json", excluded)

    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("slapp manifest: error: 1 of 1 experiments have problems, "
                           "no experiment left, nothing written: 5: no movie")
    assert sorted(os.listdir(tmp_path)) == [storage.name]
