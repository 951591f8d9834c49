"""Sphinx configuration of slapp's documentation: the user guide and the API pages.

Build it with ``sphinx-build -W --keep-going -b html docs <output dir>``
(``scripts/run_tests.sh`` does, and fails on any warning). The API pages are
generated from the docstrings (numpydoc) of every module of the ``slapp`` package
into ``docs/api/`` at each build.
"""
import os
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the checkout being documented wins over an installed slapp
sys.path.insert(0, str(ROOT))
os.environ.setdefault("SLAPP_HOME", str(ROOT / ".slapp"))

project = "slapp"
author = "the slapp authors"
copyright = "2026, the slapp authors"  # noqa: A001 (Sphinx's name)

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.autosectionlabel",
    "numpydoc",
]
# every section title is a target: :ref:`page:Title`
autosectionlabel_prefix_document = True
autosummary_generate = True
autosummary_ignore_module_all = False
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
# the classes' own docstrings; their members are documented by autodoc itself
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
templates_path = ["_templates"]
exclude_patterns = ["_build", "_templates"]
html_theme = "alabaster"
html_static_path = []
html_title = "slapp"
# numpydoc reads the docstrings of names the modules import (tqdm's use "Example")
warnings.filterwarnings("ignore", message="Unknown section Example", category=UserWarning)
