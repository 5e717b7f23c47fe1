"""Sphinx configuration: ``nox -s docs`` builds the HTML with warnings as errors."""

from __future__ import annotations

import rdzv

project = "rdzv"
author = "the rdzv authors"
copyright = "the rdzv authors"
release = rdzv.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",  # the docstrings use Google style (Args:, Raises:)
]
exclude_patterns = ["_build"]
html_theme = "alabaster"  # ships with Sphinx: no extra dependency

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
# create_backend and friends list their RendezvousParameters options under "Options:".
napoleon_custom_sections = [("Options", "params_style")]

# The public names are re-exported (rdzv.store.StoreError is rdzv.store.base.StoreError),
# so a short name in a "Raises:" section has several targets; any of them is right.
suppress_warnings = ["ref.python"]
