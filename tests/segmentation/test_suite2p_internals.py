"""The Suite2P names slapp relies on beyond its documented entry points exist in this Suite2P.

A Suite2P upgrade that removes or renames one fails here, naming it, rather
than in the middle of a segmentation task.
"""
import ast
import importlib
from pathlib import Path

import pytest

import slapp
from slapp.segmentation.suite2p_runner import SUITE2P_INTERNALS, suite2p_internal

pytest.importorskip("suite2p")


@pytest.mark.parametrize("module, name", SUITE2P_INTERNALS, ids=".".join)
def test_each_internal_exists_in_the_installed_suite2p(module, name):
    assert getattr(importlib.import_module(module), name, None) is not None, \
        f"Suite2P no longer has {module}.{name}"


def test_every_private_suite2p_name_slapp_imports_is_listed():
    listed = set(SUITE2P_INTERNALS)
    for path in Path(slapp.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("suite2p"):
                for alias in node.names:
                    if alias.name.startswith("_"):
                        assert (node.module, alias.name) in listed, (path, alias.name)
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "suite2p_internal":
                assert tuple(arg.value for arg in node.args) in listed, path


def test_an_unlisted_name_is_refused():
    assert callable(suite2p_internal("suite2p.run_s2p", "_assign_torch_device"))
    with pytest.raises(ValueError, match="not in SUITE2P_INTERNALS"):
        suite2p_internal("suite2p.run_s2p", "_something_else")
