"""The guide's commands work in order, as printed, on the demo LIMS.

``docs/guide.rst`` marks the blocks a new user runs with ``:class: guide-walk``.
This test runs their ``$`` lines in order in one bash shell (so ``eval`` and
exports carry over), from a fresh directory whose ``.slapp`` is the test's
embedded server (emptied first, so the ids are the ones printed), and checks that
each command exits 0 and prints the lines the guide shows under it, in order
(``...`` stands for anything).
"""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
GUIDE = REPO_ROOT / "docs" / "guide.rst"
WALK_CLASS = ":class: guide-walk"

pytestmark = pytest.mark.slow


def guide_commands(text: str) -> list[tuple[str, list[str]]]:
    """The (command, expected output lines) of the guide's walk blocks, in order."""
    commands = []
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if line.strip() != ".. code-block:: console" or \
                lines[index + 1].strip() != WALK_CLASS:
            continue
        for body in lines[index + 2:]:
            if body.strip() and not body.startswith("   "):
                break
            body = body[3:].rstrip()
            if body.startswith("$ "):
                commands.append((body[2:], []))
            elif body:
                commands[-1][1].append(body)
    return commands


def _pattern(expected: str) -> re.Pattern:
    return re.compile(".*".join(map(re.escape, expected.split("..."))))


def test_the_guide_has_walk_blocks_for_every_step():
    commands = [command for command, _ in guide_commands(GUIDE.read_text(encoding="utf-8"))]
    for module in ("slapp.embedded start", "slapp.demo.populate_lims",
                   "slapp.data_selection.select_data",
                   "slapp.data_selection.segmentation_manifest", "slapp.segmentation.segment",
                   "slapp.segmentation.run_local", "slapp.segmentation.status", "slapp.report",
                   "slapp.export.nwb", "slapp.evaluation.compare"):
        assert any(f"python -m {module}" in command for command in commands), module


def test_the_guide_runs_in_order_as_printed(embedded_server, labeling_db, lims_admin,
                                            tmp_path):
    commands = guide_commands(GUIDE.read_text(encoding="utf-8"))
    workdir = tmp_path / "clone"
    workdir.mkdir()
    (workdir / "demo_selection_input.json").write_bytes(
        (REPO_ROOT / "demo_selection_input.json").read_bytes())
    (workdir / ".slapp").symlink_to(embedded_server.home)
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    script = ["set -u"]
    for number, (command, _) in enumerate(commands):
        script += [f"{{ {command}\n}} >{outputs}/{number}.out 2>&1",
                   f"status=$?; echo $status >{outputs}/{number}.rc",
                   '[ "$status" = 0 ] || exit 0']
    # the guide's own shell: no database variables (its eval sets them), no
    # SLAPP_HOME (./.slapp is the default), this interpreter as `python`
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("LIMS_", "LABELING_", "SLAPP_HOME"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    try:
        subprocess.run(["bash", "-c", "\n".join(script)], cwd=workdir, env=env, timeout=900,
                       check=True)
        for number, (command, expected) in enumerate(commands):
            output = (outputs / f"{number}.out").read_text() \
                if (outputs / f"{number}.out").exists() else ""
            rc_file = outputs / f"{number}.rc"
            assert rc_file.exists(), f"not run, an earlier command failed: {command}"
            assert rc_file.read_text().strip() == "0", f"{command} failed:\n{output}"
            printed = output.splitlines()
            position = 0
            for line in expected:
                pattern = _pattern(line)
                while position < len(printed) and not pattern.fullmatch(printed[position]):
                    position += 1
                assert position < len(printed), \
                    f"{command}: no line (in order) like\n{line}\nin its output:\n{output}"
                position += 1
    finally:
        # the demo's storage tree lives in the server's directory; the rows go with
        # the next test's TRUNCATE
        shutil.rmtree(Path(embedded_server.home) / "demo", ignore_errors=True)
