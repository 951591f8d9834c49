"""``python -m slapp.segmentation.plan``: each entry's predicted memory from its movie's
header, and the array request that fits the largest, on real HDF5 files."""
import json
import os
import subprocess
import sys

import h5py
import pytest

from slapp.segmentation.memory_model import memory_request, predicted_peak_rss_bytes
from slapp.segmentation.suite2p_runner import estimated_scratch_bytes

MODULE = "slapp.segmentation.plan"


def _movie(path, nframes, height, width):
    """An HDF5 movie with a shape and no frames written: plan must read only the header."""
    with h5py.File(path, "w") as movie:
        movie.create_dataset("data", shape=(nframes, height, width), dtype="uint16",
                             chunks=(8, height, width))
    return path


def _manifest(tmp_path, entries):
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"manifest": [
        {"experiment_id": experiment_id, "nbinned": nbinned, "input_video": str(movie)}
        for experiment_id, nbinned, movie in entries]}))
    return path


def _plan(*args):
    return subprocess.run([sys.executable, "-m", MODULE, *map(str, args)],
                          capture_output=True, text=True, timeout=120, env=os.environ.copy())


@pytest.fixture
def manifest(tmp_path):
    """Three sessions: 48,300 and 100,000 frames of 512x512 and 8,000 of 256x256."""
    return _manifest(tmp_path, [
        (850517344, 420, _movie(tmp_path / "a.h5", 48_300, 512, 512)),
        (850517352, 869, _movie(tmp_path / "b.h5", 100_000, 512, 512)),
        (850517360, 69, _movie(tmp_path / "c.h5", 8_000, 256, 256))])


def test_plan_prints_each_entry_and_the_request_of_the_largest(manifest, tmp_path):
    output = tmp_path / "plan.json"

    result = _plan("--manifest_json", manifest, "--output_json", output)

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    largest = predicted_peak_rss_bytes(100_000, 869, 512, 512)
    request = memory_request(largest)
    assert lines[0] == f"3 entries in {manifest}"
    assert lines[2].startswith("1  850517352  100000 frames of 512x512, nbinned 869 "
                               "(0.91 GB binned): peak ")
    assert f"request {request}" in lines[2]
    assert lines[-2] == (f"largest: entry 1 (experiment 850517352), predicted peak "
                         f"{largest / 1e9:.1f} GB")
    assert lines[-1].startswith(f"array request: SLURM #SBATCH --mem={request}   "
                                f"PBS #PBS -l mem={request[:-1]}gb")
    plan = json.loads(output.read_text())
    assert plan["memory_request"] == request and plan["largest_index"] == 1
    assert [entry["predicted_peak_rss_bytes"] for entry in plan["entries"]] == [
        predicted_peak_rss_bytes(48_300, 420, 512, 512), largest,
        predicted_peak_rss_bytes(8_000, 69, 256, 256)]
    assert [(entry["nframes"], entry["height"], entry["width"])
            for entry in plan["entries"]] == [(48_300, 512, 512), (100_000, 512, 512),
                                             (8_000, 256, 256)]
    assert plan["scratch_bytes"] == estimated_scratch_bytes((100_000, 512, 512), False)


def test_finer_bins_raise_the_request(tmp_path):
    movie = _movie(tmp_path / "a.h5", 100_000, 512, 512)
    coarse = _plan("--manifest_json", _manifest(tmp_path, [(1, 869, movie)]))
    fine = _plan("--manifest_json", _manifest(tmp_path, [(1, 4545, movie)]))

    assert coarse.returncode == fine.returncode == 0
    assert f"--mem={memory_request(predicted_peak_rss_bytes(100_000, 4545, 512, 512))}" \
        in fine.stdout.splitlines()[-1]
    assert coarse.stdout.splitlines()[-1] != fine.stdout.splitlines()[-1]


def test_an_nbinned_finer_than_suite2p_bins_is_predicted_as_suite2p_bins_it(tmp_path):
    movie = _movie(tmp_path / "a.h5", 8_000, 512, 512)
    output = tmp_path / "plan.json"

    result = _plan("--manifest_json", _manifest(tmp_path, [(1, 4_000, movie)]),
                   "--output_json", output)

    assert result.returncode == 0, result.stderr
    assert "nbinned 4000 (Suite2P bins it as 363: tau * fs frames at least)" in result.stdout
    [entry] = json.loads(output.read_text())["entries"]
    assert entry["detection_bins"] == 363
    assert entry["predicted_peak_rss_bytes"] == predicted_peak_rss_bytes(8_000, 363, 512, 512)


def test_registration_adds_the_binary_copy_to_the_scratch_and_says_so(manifest, tmp_path):
    output = tmp_path / "plan.json"

    result = _plan("--manifest_json", manifest, "--do_registration", "True",
                   "--output_json", output)

    assert result.returncode == 0, result.stderr
    assert json.loads(output.read_text())["scratch_bytes"] == estimated_scratch_bytes(
        (100_000, 512, 512), True)
    assert "with --do_registration the memory predicted is that of the streamed run" \
        in result.stdout


def test_a_missing_movie_is_one_line_naming_the_entry_and_nothing_written(tmp_path):
    manifest = _manifest(tmp_path, [(850517344, 420, _movie(tmp_path / "a.h5", 48_300, 64, 64)),
                                    (850517352, 420, tmp_path / "gone.h5")])
    output = tmp_path / "plan.json"

    result = _plan("--manifest_json", manifest, "--output_json", output)

    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"slapp plan: error: manifest entry 1 (experiment 850517352): movie {tmp_path / 'gone.h5'} "
        f"does not exist"]
    assert not output.exists()


def test_a_bad_option_is_refused_as_status_refuses_it(manifest):
    result = _plan("--manifest_json", manifest, "--threshold_scaling", "0")

    assert result.returncode == 1
    assert "threshold_scaling" in result.stderr and len(result.stderr.splitlines()) == 1
