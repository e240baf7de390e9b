"""Sphinx configuration of the skhyper documentation."""

import os
import sys
from datetime import date

sys.path.insert(0, os.path.abspath(".."))

import skhyper  # noqa: E402

project = "skhyper"
author = "the skhyper developers"
copyright = f"{date.today().year}, {author}"
version = release = skhyper.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.intersphinx",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "auto_examples/*.ipynb"]
autosummary_generate = True
autodoc_default_options = {"members": True, "inherited-members": False}
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
# The docs build offline: cross-references to other projects stay plain text.
intersphinx_mapping = {}
nitpicky = False
# The gallery's argv hook is a function, which Sphinx cannot pickle into its
# environment cache; that only disables caching of this one value.
suppress_warnings = ["config.cache"]

html_theme = "pydata_sphinx_theme"
html_title = "skhyper"
html_static_path = []
html_theme_options = {"show_toc_level": 2}


def _gallery_argv(gallery_conf, script_vars):
    """Run the examples that have a quick mode in it, so the build is fast."""
    source = open(script_vars["src_file"]).read()
    return ["--quick"] if "--quick" in source else []


sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/(plot_|quickstart)",
    "reset_argv": _gallery_argv,
    "download_all_examples": False,
    "remove_config_comments": True,
    "within_subsection_order": "FileNameSortKey",
}
