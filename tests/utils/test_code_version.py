"""The code version names the package's sources, not the checkout, the copy or the user.

Each case is a real tree in a temporary directory (a git repository, its
``git clone``, a ``cp -r`` copy without ``.git``, a ``pip install --target``),
and the version is computed by a fresh interpreter importing slapp from that
tree, as a job on a compute node would.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from slapp import __version__
from slapp.utils import code_version

REPO_ROOT = Path(__file__).resolve().parents[2]
PRINT_VERSION = ("from slapp.utils.code_version import code_version, code_label;"
                 "print(code_version()); print(code_label())")


def git(cwd: Path, *args: str) -> str:
    environment = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org",
                   "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org"}
    return subprocess.run(["git", *args], cwd=cwd, env=environment, capture_output=True,
                          text=True, check=True).stdout.strip()


def version_and_label(tree: Path, **env) -> tuple[str, str]:
    """``code_version()`` and ``code_label()`` as a new process importing slapp from ``tree``."""
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("TRANSFORM_HASH", "PYTHONPATH")}
    environment.update(PYTHONPATH=str(tree), PYTHONDONTWRITEBYTECODE="1", **env)
    result = subprocess.run([sys.executable, "-c", PRINT_VERSION], cwd=tree, env=environment,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    version, label = result.stdout.strip().splitlines()
    return version, label


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    """A repository holding this slapp package."""
    origin = tmp_path_factory.mktemp("origin")
    shutil.copytree(REPO_ROOT / "slapp", origin / "slapp",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("README.rst", "setup.py"):
        shutil.copy(REPO_ROOT / name, origin / name)
    git(origin, "init", "-q")
    git(origin, "add", ".")
    git(origin, "commit", "-q", "-m", "the package")
    return {"origin": origin}


@pytest.fixture
def clone(trees, tmp_path):
    """A fresh clone per test, so that edits stay in their test."""
    path = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(trees["origin"]), str(path))
    return path


def test_one_version_for_a_clone_a_copy_an_untracked_file_and_a_readme_commit(trees, clone,
                                                                              tmp_path):
    cloned, cloned_label = version_and_label(clone)
    copy = tmp_path / "copy"
    shutil.copytree(clone, copy, ignore=shutil.ignore_patterns(".git"))
    (clone / "slapp" / "NOTES.txt").write_text("to do: everything\n")
    (clone / "slapp" / "segmentation" / "__pycache__").mkdir()
    (clone / "slapp" / "segmentation" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    untracked, untracked_label = version_and_label(clone)
    (clone / "README.rst").write_text("A new README.\n")
    git(clone, "commit", "-q", "-am", "README only")
    after_readme, readme_label = version_and_label(clone)

    assert version_and_label(copy)[0] == cloned
    assert untracked == cloned and after_readme == cloned
    # the same sources as the package under test: the same version as this process
    assert cloned == code_version.code_version() or "TRANSFORM_HASH" in os.environ
    assert len(cloned) == 64 and int(cloned, 16) >= 0
    # the label, for people, does follow git
    commit = git(trees["origin"], "rev-parse", "--short=7", "HEAD")
    assert cloned_label == f"slapp {__version__} (git {commit})"
    assert untracked_label == cloned_label  # untracked files are not "dirty" for git
    assert readme_label != cloned_label and readme_label.startswith(f"slapp {__version__} (git ")
    assert version_and_label(copy)[1] == f"slapp {__version__}"


@pytest.mark.parametrize("edit", ["python", "sql", "new module"])
def test_a_change_to_a_source_file_changes_the_version(clone, edit):
    before, _ = version_and_label(clone)
    if edit == "python":
        store = clone / "slapp" / "segmentation" / "store.py"
        store.write_text(store.read_text() + "\n# a comment is a change of the source\n")
    elif edit == "sql":
        schema = clone / "slapp" / "db" / "schema.sql"
        schema.write_text(schema.read_text().replace("DEFAULT ''", "DEFAULT '-'", 1))
    else:
        (clone / "slapp" / "utils" / "extra.py").write_text("VALUE = 1\n")

    after, label = version_and_label(clone)

    assert after != before
    assert label.endswith("-dirty)") or edit == "new module"


def test_changes_outside_the_package_keep_the_version(clone):
    before, _ = version_and_label(clone)
    (clone / "tests").mkdir()
    (clone / "tests" / "test_new.py").write_text("def test(): pass\n")
    (clone / "bench.py").write_text("print(1)\n")
    (clone / "slapp" / ".hidden").mkdir()
    (clone / "slapp" / ".hidden" / "editor.py").write_text("backup = True\n")

    assert version_and_label(clone)[0] == before


def test_transform_hash_wins(clone):
    assert version_and_label(clone, TRANSFORM_HASH="deadbeef")[0] == "deadbeef"


def test_pip_install_gives_the_clones_version(clone, tmp_path):
    target = tmp_path / "site-packages"
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
         "--no-build-isolation", "--target", str(target), str(clone)],
        capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr

    version, label = version_and_label(target)

    assert version == version_and_label(clone)[0]
    assert label == f"slapp {__version__}"


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a checkout to another user needs root")
def test_a_checkout_of_another_user_gives_the_same_version(clone, tmp_path):
    """git refuses a checkout owned by someone else ("dubious ownership"): no matter."""
    owner_version, owner_label = version_and_label(clone)
    for path in [clone, *clone.rglob("*")]:
        os.lchown(path, 65534, 65534)  # nobody
    home = tmp_path / "home"  # no ~/.gitconfig that could mark the checkout safe
    home.mkdir()

    other_version, other_label = version_and_label(clone, HOME=str(home),
                                                   GIT_CONFIG_NOSYSTEM="1")

    assert other_version == owner_version
    assert owner_label.startswith(f"slapp {__version__} (git ")
    assert other_label == f"slapp {__version__}"
    refused = subprocess.run(["git", "status"], cwd=clone, capture_output=True, text=True,
                             env={**os.environ, "HOME": str(home), "GIT_CONFIG_NOSYSTEM": "1"})
    assert "dubious ownership" in refused.stderr


def test_source_digest_is_not_fooled_by_moving_bytes_between_files(tmp_path):
    first, second = tmp_path / "one" / "slapp", tmp_path / "two" / "slapp"
    for package, (a, b) in ((first, ("x = 1\n", "y = 2\n")), (second, ("x = 1\ny", " = 2\n"))):
        package.mkdir(parents=True)
        (package / "a.py").write_text(a)
        (package / "b.py").write_text(b)

    assert code_version.source_digest(first) != code_version.source_digest(second)
    assert [path.as_posix() for path in code_version.source_files(first)] == ["a.py", "b.py"]
