"""Sphinx configuration of salt-ami's reference docs: the loader modules' docstrings (autodoc),
the flavour schema with pillar.example's words (_ext/flavour_schema.py) and the build
manifest's schema (_ext/manifest_schema.py).

    python -m sphinx -W -b html docs docs/_build/html
"""
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
REPO = DOCS.parent
# the loader folders (_modules, _states, ...) import as namespace packages from the checkout,
# each module under its own name (four of them are called ami.py)
sys.path[:0] = [str(REPO), str(DOCS / "_ext")]

project = "salt-ami"
author = "salt-ami contributors"
copyright = "salt-ami contributors, Apache License 2.0"
extensions = ["sphinx.ext.autodoc", "flavour_schema", "manifest_schema"]
exclude_patterns = ["_build", "benchmarks.md"]
root_doc = "index"
html_theme = "alabaster"
html_static_path = []
autodoc_default_options = {"members": True, "undoc-members": False}
# Salt calls the modules: their signatures, not the Python objects, are what users need
autodoc_typehints = "none"
add_module_names = False
nitpicky = False
# values and commands are copied from here: no curly quotes in them
smartquotes = False
