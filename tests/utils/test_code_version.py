"""The code version recorded with every result."""
import subprocess
import sys

from slapp.utils import code_version


def version_in_subprocess(env_overrides: dict) -> str:
    import os
    env = {key: value for key, value in os.environ.items() if key != "TRANSFORM_HASH"}
    env.update(env_overrides)
    return subprocess.run(
        [sys.executable, "-c", "from slapp.utils.code_version import code_version;"
                               "print(code_version())"],
        env=env, capture_output=True, text=True, check=True).stdout.strip()


def test_transform_hash_overrides():
    assert version_in_subprocess({"TRANSFORM_HASH": "deadbeef"}) == "deadbeef"


def test_derived_from_the_installed_code():
    version = version_in_subprocess({})
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=code_version.PACKAGE_DIR,
                          capture_output=True, text=True).stdout.strip()
    # a clean checkout gives the commit; edited sources add a digest of the code
    assert version == head or version.startswith(f"{head}+dirty.")
    if "+dirty." in version:
        assert version.endswith(code_version.source_digest()[:12])


def test_source_digest_changes_with_the_code(tmp_path, monkeypatch):
    package = tmp_path / "slapp"
    package.mkdir()
    (package / "a.py").write_text("x = 1\n")
    monkeypatch.setattr(code_version, "PACKAGE_DIR", package)
    before = code_version.source_digest()
    (package / "a.py").write_text("x = 2\n")
    assert code_version.source_digest() != before
