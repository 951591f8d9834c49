"""Outputs appear whole or not at all."""
import os
import stat

import pytest

from slapp.utils.files import stage_bytes, write_bytes_atomically, write_json_atomically


def test_json_replaces_the_file_with_lab_readable_permissions(tmp_path):
    target = tmp_path / "manifest.json"
    target.write_text("the old manifest")
    old_umask = os.umask(0o022)
    try:
        write_json_atomically(target, {"manifest": [{"experiment_id": 1}]})
    finally:
        os.umask(old_umask)
    assert target.read_text() == '{\n  "manifest": [\n    {\n      "experiment_id": 1\n    }\n  ]\n}\n'
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert sorted(path.name for path in tmp_path.iterdir()) == ["manifest.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(TypeError):
        write_json_atomically(target, {"not json": object()})
    assert target.read_text() == "old"
    assert [path.name for path in tmp_path.iterdir()] == ["out.json"]


def test_a_directory_is_never_replaced(tmp_path):
    (tmp_path / "plots").mkdir()
    with pytest.raises(OSError):
        write_bytes_atomically(tmp_path / "plots", b"png")
    assert (tmp_path / "plots").is_dir()
    assert [path.name for path in tmp_path.iterdir()] == ["plots"]


def test_staged_file_waits_beside_the_target(tmp_path):
    staged = stage_bytes(tmp_path / "selection.json", b"{}")
    assert staged.parent == tmp_path and staged.name.startswith(".selection.json.")
    assert not (tmp_path / "selection.json").exists()
    assert staged.read_bytes() == b"{}"
