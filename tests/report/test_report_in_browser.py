"""The report page in a real headless Chromium: no console errors, every row, every thumbnail.

Chromium comes from Debian's ``chromium`` package (``scripts/install_chromium.sh``,
run by ``scripts/run_tests.sh``); without it this test is skipped. The screenshot
is kept: under ``$SLAPP_TEST_ARTIFACTS`` when set, else in the test's temporary
directory (pytest keeps the last three sessions'); its path is printed.
"""
import os
import struct
from pathlib import Path

import pytest
from devtools import HeadlessChromium, find_browser
from report_batch import BATCH, PINNED, REPORT_PARAMETERS

BROWSER = find_browser()
pytestmark = pytest.mark.skipif(BROWSER is None, reason="no chromium: run "
                                "scripts/install_chromium.sh (as root)")


@pytest.fixture
def browser(tmp_path):
    chromium = HeadlessChromium(BROWSER, tmp_path / "profile")
    yield chromium
    chromium.close()


def _artifact_dir(tmp_path: Path) -> Path:
    directory = Path(os.environ.get("SLAPP_TEST_ARTIFACTS") or tmp_path)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def test_the_report_renders_without_errors(batch, run_cli, browser, tmp_path):
    manifest, runs = batch
    output_dir = tmp_path / "report"
    result = run_cli("slapp.report", "--manifest_json", manifest, "--output_dir", output_dir,
                     *REPORT_PARAMETERS, env=PINNED)
    assert result.returncode == 0, result.stderr

    browser.open((output_dir / "index.html").as_uri())
    # lazy images start loading once laid out in the viewport; wait for all of them
    images = browser.evaluate(
        "Promise.all(Array.from(document.images, i => i.decode().then(() => 'ok', e => "
        "'failed ' + i.src))).then(r => r)", await_promise=True)
    assert images == ["ok"] * len(runs)
    assert browser.evaluate("document.querySelectorAll('tbody tr').length") == len(BATCH)
    statuses = browser.evaluate(
        "Array.from(document.querySelectorAll('tbody tr'), r => r.dataset.status)")
    assert statuses == [n if isinstance(n, str) else "done" for n in BATCH.values()]
    loaded = browser.evaluate("Array.from(document.images).filter(i => i.complete && "
                              "i.naturalWidth > 0).length")
    assert loaded == len(runs)
    assert browser.evaluate("document.querySelectorAll('figure svg rect').length") > 0

    screenshot = _artifact_dir(tmp_path) / "report_screenshot.png"
    browser.screenshot(screenshot)
    print(f"report screenshot: {screenshot}")
    header = screenshot.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", header[16:24])
    assert width >= 1000 and height >= 600
    assert browser.problems() == []
