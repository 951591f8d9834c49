"""The version of the installed slapp code, recorded with every result it writes."""
import functools
import hashlib
import os
import subprocess
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]


def _git(*args: str) -> str | None:
    try:
        result = subprocess.run(["git", *args], cwd=PACKAGE_DIR, capture_output=True,
                                text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip()


def source_digest() -> str:
    """SHA-256 of every Python and SQL file of the installed package, in path order."""
    digest = hashlib.sha256()
    for path in sorted(PACKAGE_DIR.rglob("*")):
        if path.suffix in (".py", ".sql") and "__pycache__" not in path.parts:
            digest.update(path.relative_to(PACKAGE_DIR).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


@functools.lru_cache(maxsize=None)
def code_version() -> str:
    """Name the code that is running, so a stored result can be traced to it.

    ``TRANSFORM_HASH`` in the environment wins, as in the original toolkit.
    Otherwise, in a git checkout with no uncommitted change to the package, the
    commit hash; with uncommitted changes, the commit hash plus a digest of the
    package's sources (``<commit>+dirty.<digest>``), so that edited code never
    passes for the commit; outside git, ``src.<digest>``.

    Returns
    -------
    str
        The code version.
    """
    override = os.environ.get("TRANSFORM_HASH")
    if override:
        return override
    tracked = _git("ls-files", "--", "__init__.py")
    commit = _git("rev-parse", "HEAD") if tracked else None
    if commit:
        changes = _git("status", "--porcelain", "--", str(PACKAGE_DIR))
        if changes == "":
            return commit
        return f"{commit}+dirty.{source_digest()[:12]}"
    return f"src.{source_digest()[:12]}"
