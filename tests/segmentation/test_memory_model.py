"""The memory model: predictions, requests with their margin, the request after an
out-of-memory kill, and the job scripts' defaults that come from it."""
import re
from pathlib import Path

import pytest

from slapp.data_selection.segmentation_manifest import DECAY_BIN_SIZE, DEFAULT_BIN_SIZE
from slapp.segmentation.memory_model import (
    BASE_BYTES, BYTES_PER_BINNED_BYTE, GIB, JOB_SCRIPT_REQUEST, MIN_REQUEST_GIB,
    MemoryRequestException,
    binned_movie_bytes, detection_bins, memory_request, out_of_memory_request,
    predicted_peak_rss_bytes, request_bytes)

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
# The job scripts' defaults are sized for an Allen session of 100,000 512x512 frames.
LONG_SESSION = {"nframes": 100_000, "height": 512, "width": 512}


def test_prediction_is_the_fitted_line_over_the_binned_movie_bytes():
    assert binned_movie_bytes(869, 512, 512) == 869 * 512 * 512 * 4
    predicted = predicted_peak_rss_bytes(100_000, 869, 512, 512)
    assert predicted == pytest.approx(BASE_BYTES + BYTES_PER_BINNED_BYTE * 869 * 2 ** 20,
                                      abs=1)


def test_finer_bins_and_larger_frames_predict_more_memory():
    coarse = predicted_peak_rss_bytes(100_000, 100_000 // DEFAULT_BIN_SIZE, 512, 512)
    fine = predicted_peak_rss_bytes(100_000, 100_000 // DECAY_BIN_SIZE, 512, 512)
    small = predicted_peak_rss_bytes(100_000, 100_000 // DEFAULT_BIN_SIZE, 256, 256)
    assert small < coarse < fine
    # the binned movie is 5x larger with 22-frame bins, the peak follows it
    assert fine - coarse == pytest.approx(
        BYTES_PER_BINNED_BYTE * (binned_movie_bytes(4545, 512, 512)
                                 - binned_movie_bytes(869, 512, 512)), abs=2)


def test_suite2p_never_bins_fewer_than_tau_times_fs_frames():
    assert detection_bins(100_000, 869) == 869
    assert detection_bins(100_000, 4545) == 4545
    # 2-frame bins asked of 8,000 frames: Suite2P bins 22 frames at tau 0.7 s, 31 Hz ...
    assert detection_bins(8_000, 4_000) == 8_000 // 22
    assert predicted_peak_rss_bytes(8_000, 4_000, 512, 512) == predicted_peak_rss_bytes(
        8_000, 363, 512, 512)
    # ... and 2 at tau 0.05 s, as bench_memory.py runs that point
    assert detection_bins(8_000, 4_000, tau=0.05) == 4_000
    assert predicted_peak_rss_bytes(8_000, 4_000, 512, 512, tau=0.05) > \
        predicted_peak_rss_bytes(8_000, 363, 512, 512)


@pytest.mark.parametrize("shape", [(0, 1, 4, 4), (10, 0, 4, 4), (10, 1, 0, 4)])
def test_a_movie_without_a_binned_frame_has_no_prediction(shape):
    with pytest.raises(ValueError, match="no binned movie"):
        predicted_peak_rss_bytes(*shape)


def test_request_is_the_prediction_plus_a_quarter_rounded_up_to_whole_gib():
    assert memory_request(8 * GIB) == "10G"
    assert memory_request(8 * GIB + 1) == "11G"  # 10.000...1 GiB rounds up
    assert memory_request(int(19.3 * GIB)) == "25G"
    assert memory_request(1) == f"{MIN_REQUEST_GIB}G"


@pytest.mark.parametrize("text, expected", [
    ("16G", 16 * GIB), ("16gb", 16 * GIB), ("16GB", 16 * GIB), ("16GiB", 16 * GIB),
    ("16000M", 16000 * 2 ** 20), ("16000mb", 16000 * 2 ** 20), ("16000", 16000 * 2 ** 20),
    ("1.5T", int(1.5 * 2 ** 40)), ("512K", 512 * 1024)])
def test_requests_are_read_as_slurm_and_pbs_write_them(text, expected):
    assert request_bytes(text) == expected


@pytest.mark.parametrize("text", ["", "lots", "16 X", "-4G", "G"])
def test_an_unreadable_request_is_refused_naming_it(text):
    with pytest.raises(MemoryRequestException, match="cannot read memory request"):
        request_bytes(text)


def test_an_entry_killed_for_memory_gets_more_than_it_died_under():
    predicted = predicted_peak_rss_bytes(100_000, 869, 512, 512)
    first = memory_request(predicted)
    # the model's own request was not enough: the retry asks for half as much again
    retry = out_of_memory_request(predicted, first)
    assert request_bytes(retry) >= 1.5 * request_bytes(first)
    # a request far below the prediction is replaced by the prediction's
    assert out_of_memory_request(predicted, "1G") == first
    # a request given in PBS or MB units is read as such
    assert request_bytes(out_of_memory_request(predicted, "16000mb")) >= 1.5 * 16000 * 2 ** 20
    # with no request known, the prediction's
    assert out_of_memory_request(predicted, None) == first
    # killed again under the retry: larger again
    assert request_bytes(out_of_memory_request(predicted, retry)) > request_bytes(retry)
    # a movie that cannot be read for a prediction: the failed request alone
    assert out_of_memory_request(None, "6G") == "9G"
    assert out_of_memory_request(None, None) == f"{MIN_REQUEST_GIB}G"


def test_an_unreadable_failed_request_is_refused():
    with pytest.raises(MemoryRequestException):
        out_of_memory_request(GIB, "plenty")


def test_job_scripts_request_what_the_model_predicts_for_a_long_session():
    nbinned = int(LONG_SESSION["nframes"] / DEFAULT_BIN_SIZE)
    request = memory_request(predicted_peak_rss_bytes(nbinned=nbinned, **LONG_SESSION))
    slurm = (SCRIPTS / "suite2p_array_job_example.slurm").read_text()
    pbs = (SCRIPTS / "suite2p_array_job_example.pbs").read_text()

    assert JOB_SCRIPT_REQUEST == request  # what status assumes an out-of-memory task asked
    assert re.findall(r"^#SBATCH --mem=(\S+)$", slurm, re.MULTILINE) == [request]
    assert re.findall(r"^#PBS -l mem=(\d+)gb$", pbs, re.MULTILINE) == [request[:-1]]
    for script in (slurm, pbs):  # the figure and its source are in the comment
        assert "slapp.segmentation.memory_model" in script
        assert f"{request}" in script.replace("gb", "G")
