"""The labeling page in Debian's Chromium, driven by Playwright: what a labeler does.

One browser for the module; each test gets its own server and job. The page's
screenshot at the docs' size is written to ``docs/labeling_page.png`` when
``SLAPP_UPDATE_SCREENSHOTS=1`` (else under the test's temporary directory).
"""
import os
from pathlib import Path
from urllib.parse import urlsplit

import pytest

playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"  # Debian's; never a downloaded browser
REPO_ROOT = Path(__file__).resolve().parents[2]
DOCS_SIZE = {"width": 1216, "height": 1000}
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="no /usr/bin/chromium")]

# Canvas pixels that are not all one colour: something was drawn.
NOT_BLANK = """(id) => {
  const canvas = document.getElementById(id);
  const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  const seen = new Set();
  for (let i = 0; i < data.length; i += 4 * 97) seen.add(data.slice(i, i + 4).join());
  return seen.size;
}"""


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--autoplay-policy=no-user-gesture-required"])
        yield chromium
        chromium.close()


class Labeler:
    """One browser context signed in through the form; records every request and error."""

    def __init__(self, browser, url: str, token: str):
        self.context = browser.new_context(viewport=DOCS_SIZE)
        self.page = self.context.new_page()
        self.requests, self.problems = [], []
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.page.on("console", lambda message: message.type == "error" and
                     self.problems.append(message.text))
        self.page.on("pageerror", lambda error: self.problems.append(str(error)))
        self.page.goto(url + "/")
        self.page.get_by_label("Token").fill(token)
        self.page.get_by_role("button", name="Sign in").click()

    def wait_for_roi(self) -> None:
        self.page.wait_for_function(
            "() => !document.getElementById('cell').disabled || "
            "!document.getElementById('done').hidden")

    def done(self) -> bool:
        return self.page.get_by_text("Nothing left to label").is_visible()

    def close(self) -> None:
        self.context.close()


def _labels(dbconn) -> list[dict]:
    return dbconn.query(
        "SELECT labels.labeling_task_id, labelers.name, labels.label, labels.note, "
        "labels.seconds_shown, labels.view_settings FROM roi_labels AS labels "
        "JOIN labelers ON labelers.id = labels.labeler_id ORDER BY labels.id")


def _screenshot_path(tmp_path: Path) -> Path:
    if os.environ.get("SLAPP_UPDATE_SCREENSHOTS") == "1":
        return REPO_ROOT / "docs" / "labeling_page.png"
    return tmp_path / "labeling_page.png"


def test_a_labeler_labels_a_job_to_the_end(browser, server, tokens, job, labeling_db,
                                           tmp_path):
    ann = Labeler(browser, server.url, tokens["ann"])
    page = ann.page
    ann.wait_for_roi()
    # the views are drawn, the clip plays, a click on the trace moves it
    page.wait_for_function("() => document.getElementById('clip').readyState >= 2")
    for canvas in ("projection", "full-field", "trace"):
        assert page.evaluate(NOT_BLANK, canvas) > 2, canvas
    assert page.evaluate(NOT_BLANK, "clip-overlay") > 1  # the outline over the clip
    page.get_by_role("button", name="Play").click()
    page.wait_for_function("() => document.getElementById('clip').currentTime > 0.3")
    page.get_by_role("button", name="Pause").click()
    view = page.evaluate("state.view")
    assert view == pytest.approx([3.0, 11.0])  # the clip's 4 s from 5 s, with margins
    box = page.locator("#trace").bounding_box()
    page.mouse.click(box["x"] + box["width"] * 0.5, box["y"] + box["height"] / 2)
    page.wait_for_function("() => !document.getElementById('clip').seeking")
    assert page.evaluate("document.getElementById('clip').currentTime") == \
        pytest.approx(2.0, abs=0.15)  # 7 s on the trace is 2 s into the clip
    for background in ("Max", "Correlation"):
        page.get_by_label(background, exact=True).check()
        assert page.evaluate(NOT_BLANK, "projection") > 2, background
    page.get_by_label("Mask", exact=True).check()
    page.get_by_label("Brightness").fill("1.5")
    page.screenshot(path=_screenshot_path(tmp_path), full_page=True)

    # the buttons' names and shortcuts
    cell = page.get_by_role("button", name="Cell", exact=True)
    not_cell = page.get_by_role("button", name="Not a cell", exact=True)
    assert (cell.get_attribute("aria-keyshortcuts"),
            not_cell.get_attribute("aria-keyshortcuts")) == ("C", "N")
    # a click, with a note that holds markup
    note = "<script>window.__noted = 1</script><img src=x onerror=window.__noted=2>"
    page.get_by_label("Note (optional)").fill(note)
    cell.click()
    page.wait_for_function("() => document.querySelectorAll('#history li').length === 1")
    ann.wait_for_roi()
    assert page.locator("#history li").first.inner_text().startswith(
        f"ROI {job['roi_ids'][0]}: cell ({note})")
    assert page.evaluate("window.__noted") is None
    assert page.locator("#history img, #history script").count() == 0
    # a key press
    page.keyboard.press("n")
    page.wait_for_function("() => document.querySelectorAll('#history li').length === 2")
    ann.wait_for_roi()
    labels = _labels(labeling_db)
    assert [(row["labeling_task_id"], row["label"], row["note"]) for row in labels] == [
        (job["task_ids"][0], "cell", note), (job["task_ids"][1], "not cell", None)]
    assert labels[0]["view_settings"]["background"] == "correlation"
    assert labels[0]["view_settings"]["mask"] is True
    assert labels[0]["seconds_shown"] > 0
    # a labeler changes their own label: the earlier one stays as history
    page.get_by_role("button", name=f"Change your label of ROI {job['roi_ids'][0]}").click()
    page.get_by_text('You labelled this ROI "cell"').wait_for()
    ann.wait_for_roi()
    page.keyboard.press("n")
    page.wait_for_function("() => document.querySelector('#history li').textContent"
                           ".includes(': not cell')")
    ann.wait_for_roi()
    history = labeling_db.query(
        "SELECT label, superseded_by IS NULL AS current FROM roi_labels "
        "WHERE labeling_task_id = %s ORDER BY id", (job["task_ids"][0],))
    assert history == [{"label": "cell", "current": False},
                       {"label": "not cell", "current": True}]
    # on to the end
    for done in range(2, len(job["task_ids"])):
        page.keyboard.press("c")
        page.wait_for_function("(n) => document.querySelectorAll('#history li').length === n",
                               arg=done + 1)
        ann.wait_for_roi()
    page.get_by_text("Nothing left to label").wait_for()
    assert "You labelled 4; 0 left for you" in page.locator("#progress").inner_text()
    assert labeling_db.query("SELECT count(*) AS n FROM roi_labels "
                             "WHERE superseded_by IS NULL")[0]["n"] == len(job["task_ids"])

    origin = urlsplit(server.url)
    others = [url for url in ann.requests
              if urlsplit(url)[:2] != origin[:2] and not url.startswith(("data:", "blob:"))]
    assert others == []
    assert ann.problems == []
    ann.close()


def test_three_labelers_share_a_job_by_its_quota(browser, server, tokens, job, labeling_db):
    labelers = [Labeler(browser, server.url, tokens[name]) for name in ("ann", "ben", "cy")]
    for labeler in labelers:
        labeler.wait_for_roi()
    for _ in range(10):
        active = [labeler for labeler in labelers if not labeler.done()]
        if not active:
            break
        for labeler in active:
            before = len(_labels(labeling_db))
            labeler.page.get_by_role("button", name="Cell", exact=True).click()
            labeler.page.wait_for_function(
                "() => !document.getElementById('cell').disabled || "
                "!document.getElementById('done').hidden")
            assert len(_labels(labeling_db)) in (before, before + 1)
    assert all(labeler.done() for labeler in labelers)
    per_task = {}
    for row in _labels(labeling_db):
        per_task.setdefault(row["labeling_task_id"], []).append(row["name"])
    assert sorted(per_task) == job["task_ids"]
    assert all(len(names) == 2 and len(set(names)) == 2 for names in per_task.values())
    for labeler in labelers:
        # a ROI another labeler filled meanwhile is answered 409, which Chromium logs
        assert [problem for problem in labeler.problems if "(Conflict)" not in problem] == []
        labeler.close()
