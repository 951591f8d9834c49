"""The version of the running slapp code, recorded with every result it writes.

Two names for the same code:

* :func:`code_version` names the code itself: a SHA-256 over the package's
  source files (every ``*.py`` and ``*.sql`` under ``slapp/``, by relative path
  and content). It is the same for a git clone, a plain copy, ``pip install``
  and an editable install, for whoever runs it, with or without git, and
  whatever else lies in the tree; any change to a source file of the package
  gives a new version, a change outside it (README, tests, scripts) does not.
  Stored runs are keyed by it.
* :func:`code_label` is for people: the package version and, where git can
  tell, ``git describe`` of the checkout. It never decides anything.
"""
import functools
import hashlib
import os
import subprocess
from pathlib import Path

from slapp import __version__

PACKAGE_DIR = Path(__file__).resolve().parents[1]
SOURCE_SUFFIXES = (".py", ".sql")
# Set by the original toolkit's job scripts to name the code explicitly; it wins.
OVERRIDE_VARIABLE = "TRANSFORM_HASH"


def source_files(package_dir: Path = PACKAGE_DIR) -> list[Path]:
    """The package's source files, as sorted paths relative to ``package_dir``.

    Compiled files, ``__pycache__`` folders, hidden folders and any file that
    is not Python or SQL (notes, data, editor backups) are left out, since
    none of them changes what the code does.
    """
    found = []
    for path in package_dir.rglob("*"):
        relative = path.relative_to(package_dir)
        if (path.suffix in SOURCE_SUFFIXES and path.is_file()
                and not any(part == "__pycache__" or part.startswith(".")
                            for part in relative.parts)):
            found.append(relative)
    return sorted(found, key=lambda relative: relative.as_posix())


def source_digest(package_dir: Path = PACKAGE_DIR) -> str:
    """SHA-256 (hex) of the package's source files: each relative path, then its bytes.

    Each path and each content is preceded by its length, so that moving bytes
    from one file to the next cannot give the same digest.
    """
    digest = hashlib.sha256()
    for relative in source_files(package_dir):
        name = relative.as_posix().encode()
        content = (package_dir / relative).read_bytes()
        for part in (name, content):
            digest.update(len(part).to_bytes(8, "big"))
            digest.update(part)
    return digest.hexdigest()


@functools.lru_cache(maxsize=None)
def _installed_source_digest() -> str:
    return source_digest(PACKAGE_DIR)


def code_version() -> str:
    """Name the code that is running, so that a stored result can be traced to it.

    ``TRANSFORM_HASH`` in the environment wins, as in the original toolkit;
    otherwise the digest of the package's source files (see
    :func:`source_digest`).

    Returns
    -------
    str
        The code version: 64 hexadecimal digits, or the override.
    """
    override = os.environ.get(OVERRIDE_VARIABLE)
    if override:
        return override
    return _installed_source_digest()


def _git(*args: str) -> str | None:
    """Run git in the package directory; None when git is missing or refuses."""
    environment = {**os.environ, "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"}
    try:
        result = subprocess.run(["git", *args], cwd=PACKAGE_DIR, capture_output=True,
                                text=True, timeout=10, check=True, env=environment)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None


@functools.lru_cache(maxsize=None)
def code_label() -> str:
    """The running code for people: ``slapp 0.1.0 (git 56adc0c-dirty)``.

    The git part appears only when the package is a tracked part of a git
    checkout that git agrees to read (an installed copy inside some other
    repository, a machine without git, or a checkout owned by another user
    gives just ``slapp 0.1.0``). ``-dirty`` means tracked files differ from
    the commit.

    Returns
    -------
    str
        The label; never raises.
    """
    label = f"slapp {__version__}"
    if _git("ls-files", "--error-unmatch", "--", "__init__.py") is None:
        return label
    described = _git("describe", "--always", "--dirty", "--abbrev=7")
    return f"{label} (git {described})" if described else label
