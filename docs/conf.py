"""Sphinx configuration: offline build (no CDN, no intersphinx fetches), warnings are errors."""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "_ext"))
sys.path.insert(0, os.path.dirname(HERE))

# torch on one thread, JAX on CPU: importing both packages for autodoc stays cheap.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

project = "pyro-reparam-ext"
author = "pyro-reparam-ext developers"
copyright = "the pyro-reparam-ext developers"
release = version = "0.1.0"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # ships MathJax 3 in the wheel and copies it into _static
    "paired_api",
    "bench_tables",
]

# MathJax from the bundled copy (sphinx-mathjax-offline sets the same path).
mathjax_path = "mathjax/tex-chtml.js"

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
autodoc_inherit_docstrings = False  # torch's inherited docstrings are not valid reST

html_theme = "furo"
html_title = "pyro-reparam-ext"
html_static_path = ["_static"]
html_css_files = ["backend-pair.css"]
html_extra_path = []

exclude_patterns = ["_build"]
templates_path = []
nitpicky = False
toc_object_entries = False
