"""The report page in a real headless Chromium: no console errors, every row, every thumbnail.

Playwright for Python drives Debian's ``chromium`` package (installed by
``scripts/install_chromium.sh``, run by ``scripts/run_tests.sh``; Playwright's own
browser download is never used); without it this test is skipped. The full-page
screenshot is kept: under ``$SLAPP_TEST_ARTIFACTS`` when set, else in the test's
temporary directory (pytest keeps the last three sessions'); its path is printed.
"""
import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from report_batch import LONG_BATCH

playwright_api = pytest.importorskip("playwright.sync_api")
Image = pytest.importorskip("PIL.Image")

BROWSER = next(filter(None, map(shutil.which, ("chromium", "chromium-browser"))), None)
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(BROWSER is None, reason="no chromium: run "
                                 "scripts/install_chromium.sh (as root)")]

# A viewport shorter than the table, so that most thumbnails are off screen until
# the full-page screenshot: they must show there all the same.
VIEWPORT = {"width": 1200, "height": 400}


@pytest.fixture
def page():
    """A fresh Chromium page whose console errors, page errors and failed requests are kept."""
    with playwright_api.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=BROWSER)
        tab = browser.new_page(viewport=VIEWPORT)
        tab.problems = []
        tab.on("console", lambda message: message.type in ("error", "warning")
               and tab.problems.append(f"console.{message.type}: {message.text}"))
        tab.on("pageerror", lambda error: tab.problems.append(f"page error: {error}"))
        tab.on("requestfailed", lambda request: tab.problems.append(
            f"request failed: {request.url} ({request.failure})"))
        yield tab
        browser.close()


def _artifact_dir(tmp_path: Path) -> Path:
    directory = Path(os.environ.get("SLAPP_TEST_ARTIFACTS") or tmp_path)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def test_the_report_renders_without_errors(long_batch, run_cli, page, tmp_path):
    manifest, runs = long_batch
    output_dir = tmp_path / "report"
    result = run_cli("slapp.report", "--manifest_json", manifest, "--output_dir", output_dir)
    assert result.returncode == 0, result.stderr

    page.goto((output_dir / "index.html").as_uri(), wait_until="load")
    rows = page.locator("tbody tr")
    assert rows.count() == len(LONG_BATCH)
    assert rows.evaluate_all("rows => rows.map(r => r.dataset.status)") == [
        n if isinstance(n, str) else "done" for n in LONG_BATCH.values()]
    assert page.locator("figure svg rect").count() > 0

    # every thumbnail is loaded by the load event, on screen or not
    thumbs = page.locator("img.thumb")
    assert thumbs.count() == len(runs)
    assert thumbs.evaluate_all("images => images.filter(i => i.complete && "
                               "i.naturalWidth > 0).length") == len(runs)
    boxes = [thumbs.nth(index).bounding_box() for index in range(len(runs))]
    assert max(box["y"] + box["height"] for box in boxes) > VIEWPORT["height"], \
        "the test needs thumbnails below the first screen"

    screenshot = _artifact_dir(tmp_path) / "report_screenshot.png"
    page.screenshot(path=str(screenshot), full_page=True)
    print(f"report screenshot: {screenshot}")
    shot = np.asarray(Image.open(io.BytesIO(screenshot.read_bytes())).convert("RGB"))
    assert shot.shape[1] >= VIEWPORT["width"] and shot.shape[0] > VIEWPORT["height"]
    for experiment_id, box in zip(runs, boxes):
        # the middle of the thumbnail, a few pixels in from its edges
        top, left = round(box["y"]) + 4, round(box["x"]) + 4
        inside = shot[top:round(box["y"] + box["height"]) - 4,
                      left:round(box["x"] + box["width"]) - 4].reshape(-1, 3).astype(int)
        # an unpainted image is one flat colour (a black or white box); a plot is
        # a grey mean image with coloured outlines
        assert len(np.unique(inside, axis=0)) > 20 and inside.std() > 10, \
            f"the thumbnail of experiment {experiment_id} is a flat box in the screenshot"
    assert page.problems == []
